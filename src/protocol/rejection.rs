//! Why a client message was refused, and the `pusher:error` it gets. Per-message errors never close the
//! connection (docs/protocol.md#pusher-error).

use bytes::Bytes;

use crate::json::JsonError;
use crate::protocol::codes::error;
use crate::protocol::outbound;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `null` for most protocol errors; a code where Pusher defines one (4301 rate limit, 4302 watchlist...).
    pub code: Option<u16>,
    pub message: String,
}

impl Rejection {
    pub fn new(message: impl Into<String>) -> Self {
        Rejection {
            code: None,
            message: message.into(),
        }
    }

    pub fn with_code(code: u16, message: impl Into<String>) -> Self {
        Rejection {
            code: Some(code),
            message: message.into(),
        }
    }

    /// JSON nested past `json::MAX_JSON_DEPTH`: refused unparsed, with its own code.
    pub fn too_deep() -> Self {
        Self::with_code(
            error::JSON_TOO_DEEP,
            format!("Invalid message: {}", JsonError::TooDeep),
        )
    }

    /// `what` for malformed JSON, the depth refusal for deep JSON.
    pub fn from_json(e: JsonError, what: &str) -> Self {
        match e {
            JsonError::TooDeep => Self::too_deep(),
            JsonError::Invalid => Self::new(what),
        }
    }

    pub fn frame(&self) -> Bytes {
        outbound::error(self.code, &self.message)
    }
}
