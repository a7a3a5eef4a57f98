//! The WebSocket opening handshake (RFC 6455 §4.2). The Pusher checks on the upgrade URL are
//! `protocol::handshake`'s.

use crate::http::request::{Method, RequestHead};
use crate::http::response::Response;

/// Checks the upgrade request; returns the `Sec-WebSocket-Key` or the HTTP answer to send instead.
pub fn validate(head: &RequestHead) -> Result<&str, Response> {
    if head.method != Method::Get {
        return Err(Response::error(400, "WebSocket upgrade must use GET"));
    }
    if !head.connection_upgrade {
        return Err(Response::error(
            400,
            "WebSocket upgrade needs 'Connection: Upgrade'",
        ));
    }
    if head.ws_version.as_deref() != Some("13") {
        // RFC 6455 §4.4: the refusal names the versions we speak.
        let mut r = Response::error(426, "Unsupported WebSocket version: use 13");
        r.header = Some(("Sec-WebSocket-Version", "13"));
        return Err(r);
    }
    match head.ws_key.as_deref() {
        // RFC 6455 §4.1: a base64-encoded 16-byte nonce is 24 characters.
        Some(k) if k.len() == 24 => Ok(k),
        _ => Err(Response::error(400, "Missing or invalid Sec-WebSocket-Key")),
    }
}

pub fn accept_response(key: &str) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        let r = String::from_utf8(accept_response("dGhlIHNhbXBsZSBub25jZQ==")).unwrap();
        assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }
}
