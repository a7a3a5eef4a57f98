//! The WebSocket opening handshake (RFC 6455 §4.2) and the permessage-deflate negotiation (RFC 7692 §5). The
//! Pusher checks on the upgrade URL are `protocol::handshake`'s.

use crate::http::request::{Method, RequestHead};
use crate::http::response::Response;
use crate::ws::deflate;

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

/// Whether this connection uses permessage-deflate: compression is on (`RELAY_COMPRESSION`) and the client
/// offered it in a form relay can honour (`deflate::accepts_offer`). Otherwise it goes on uncompressed.
pub fn negotiate_deflate(head: &RequestHead, compression_on: bool) -> bool {
    compression_on
        && head
            .ws_extensions
            .as_deref()
            .is_some_and(deflate::accepts_offer)
}

/// The 101 answer, with no extension.
pub fn accept_response(key: &str) -> Vec<u8> {
    accept_response_with(key, false)
}

/// The 101 answer; with `deflate`, it accepts permessage-deflate with no context takeover either way.
pub fn accept_response_with(key: &str, deflate: bool) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let extensions = if deflate {
        format!("Sec-WebSocket-Extensions: {}\r\n", deflate::RESPONSE)
    } else {
        String::new()
    };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
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
        assert!(!r.contains("Sec-WebSocket-Extensions"));
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn deflate_is_accepted_with_no_context_takeover_only_when_on_and_offered() {
        let r = String::from_utf8(accept_response_with("dGhlIHNhbXBsZSBub25jZQ==", true)).unwrap();
        assert!(r.ends_with(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n"
        ));
        let head = |ext: Option<&str>| {
            let raw = format!(
                "GET /app/k HTTP/1.1\r\nHost: x\r\n{}\r\n",
                ext.map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
                    .unwrap_or_default()
            );
            crate::http::request::parse_head(raw.as_bytes(), 16384, 64)
                .unwrap()
                .unwrap()
        };
        let offer = head(Some("permessage-deflate; client_max_window_bits"));
        assert!(negotiate_deflate(&offer, true));
        assert!(!negotiate_deflate(&offer, false), "RELAY_COMPRESSION=off");
        assert!(!negotiate_deflate(&head(None), true));
        assert!(!negotiate_deflate(
            &head(Some("permessage-deflate; server_max_window_bits=9")),
            true
        ));
    }
}
