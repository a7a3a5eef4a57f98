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
/// offered it in a form relay can honour: the answer for the 101 (`deflate::accept_offer`). Otherwise (`None`) it
/// goes on uncompressed.
pub fn negotiate_deflate(head: &RequestHead, compression_on: bool) -> Option<&'static str> {
    if !compression_on {
        return None;
    }
    head.ws_extensions
        .as_deref()
        .and_then(deflate::accept_offer)
}

/// The 101 answer, with no extension.
pub fn accept_response(key: &str) -> Vec<u8> {
    accept_response_with(key, None)
}

/// The 101 answer; with `deflate` (the extension's answer from [`negotiate_deflate`]), it accepts
/// permessage-deflate.
pub fn accept_response_with(key: &str, deflate: Option<&str>) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let extensions = deflate
        .map(|answer| format!("Sec-WebSocket-Extensions: {answer}\r\n"))
        .unwrap_or_default();
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
        let r = String::from_utf8(accept_response_with(
            "dGhlIHNhbXBsZSBub25jZQ==",
            Some(deflate::RESPONSE),
        ))
        .unwrap();
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
        assert_eq!(negotiate_deflate(&offer, true), Some(deflate::RESPONSE));
        assert_eq!(
            negotiate_deflate(&offer, false),
            None,
            "RELAY_COMPRESSION=off"
        );
        assert_eq!(negotiate_deflate(&head(None), true), None);
        assert_eq!(
            negotiate_deflate(
                &head(Some("permessage-deflate; server_max_window_bits=9")),
                true
            ),
            None
        );
        assert_eq!(
            negotiate_deflate(
                &head(Some("permessage-deflate; server_max_window_bits=15")),
                true
            ),
            Some(deflate::RESPONSE_WITH_WINDOW)
        );
    }
}
