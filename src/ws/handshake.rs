//! The WebSocket opening handshake (RFC 6455 §4.2) and the Pusher checks made on the upgrade URL (spec §2.1).

use crate::http::request::{Method, RequestHead};
use crate::http::response::Response;

/// The app key from `/app/{key}`, if the path has that shape.
pub fn app_key_from_path(path: &str) -> Option<&str> {
    let key = path.strip_prefix("/app/")?;
    let key = key.strip_suffix('/').unwrap_or(key);
    (!key.is_empty() && !key.contains('/')).then_some(key)
}

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

/// spec §2.1: protocol 7 (5 and 6 behave the same); a missing `protocol` is taken as 7 (lenient).
pub fn protocol_supported(query: &str) -> bool {
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("protocol=") {
            return matches!(v.parse::<u32>(), Ok(5..=7));
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        let r = String::from_utf8(accept_response("dGhlIHNhbXBsZSBub25jZQ==")).unwrap();
        assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn app_paths_and_protocols() {
        assert_eq!(app_key_from_path("/app/abc"), Some("abc"));
        assert_eq!(app_key_from_path("/app/abc/"), Some("abc"));
        assert_eq!(app_key_from_path("/app/"), None);
        assert_eq!(app_key_from_path("/foo/bar"), None);
        assert!(protocol_supported("protocol=7&client=js"));
        assert!(protocol_supported("client=js"));
        assert!(!protocol_supported("protocol=3"));
        assert!(!protocol_supported("client=js&protocol=abc"));
    }
}
