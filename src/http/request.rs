//! HTTP/1.1 request heads, parsed with httparse into the few facts the server acts on.
//!
//! The head is parsed from the connection's buffer each time more bytes arrive (heads are small), so a request
//! split across reads or pipelined behind another needs no extra state. Limits: head size and header count.

use crate::http::response::Response;

/// Upper bound on headers we look at; `Limits::max_http_headers` may lower it.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Head,
    Other(String),
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// Path exactly as sent, without the query (signatures are computed over it).
    pub path: String,
    /// Raw query string after the first `?` (empty if none).
    pub query: String,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub keep_alive: bool,
    /// `Upgrade: websocket` was requested.
    pub upgrade: bool,
    pub connection_upgrade: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    /// `Sec-WebSocket-Extensions`, several headers joined with ", " (RFC 6455 §9.1).
    pub ws_extensions: Option<String>,
    /// `Authorization`, kept for the dashboard's Basic authentication (REST requests sign their query instead).
    pub authorization: Option<String>,
    /// Bytes of request line plus headers, including the blank line.
    pub head_len: usize,
}

/// A request we refuse before routing; each maps to one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    Malformed(&'static str),
    HeadTooLarge,
    TooManyHeaders,
    BodyTooLarge { limit: usize },
    LengthRequired,
    Timeout,
}

impl HttpError {
    pub fn response(&self) -> Response {
        match self {
            HttpError::Malformed(why) => {
                Response::error(400, &format!("Malformed HTTP request: {why}"))
            }
            HttpError::HeadTooLarge => Response::error(431, "Request header too large"),
            HttpError::TooManyHeaders => Response::error(431, "Too many request headers"),
            HttpError::BodyTooLarge { limit } => Response::error(
                413,
                &format!("Request body too large (limit {limit} bytes)"),
            ),
            HttpError::LengthRequired => Response::error(
                411,
                "Chunked request bodies are not supported: send Content-Length",
            ),
            HttpError::Timeout => Response::error(408, "Request not received in time"),
        }
    }
}

fn header_is(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// RFC 9110 §8.6: `1*DIGIT`, optional whitespace (space or tab) around it. Nothing else: a `+4`, or a value a
/// proxy in front of us would read differently (Unicode spaces), is a request-smuggling risk.
fn content_length(value: &[u8]) -> Option<usize> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Strips spaces and tabs only.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses a head from the front of `buf`. `Ok(None)`: incomplete, read more.
pub fn parse_head(
    buf: &[u8],
    max_head_bytes: usize,
    max_headers: usize,
) -> Result<Option<RequestHead>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let max_headers = max_headers.clamp(1, MAX_HEADERS);
    let mut req = httparse::Request::new(&mut headers[..max_headers]);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => {
            return Err(HttpError::Malformed(match e {
                httparse::Error::HeaderName => "invalid header name",
                httparse::Error::HeaderValue => "invalid header value",
                httparse::Error::Version => "invalid HTTP version",
                httparse::Error::Token => "invalid token",
                httparse::Error::NewLine => "invalid line ending",
                _ => "invalid request",
            }));
        }
    };
    if head_len > max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "HEAD" => Method::Head,
        m => Method::Other(m.to_string()),
    };
    let target = req.path.unwrap_or("");
    if !target.starts_with('/') {
        return Err(HttpError::Malformed(
            "request target must be an absolute path",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let version = req.version.unwrap_or(1);
    let mut head = RequestHead {
        method,
        path,
        query,
        content_length: None,
        chunked: false,
        keep_alive: version >= 1,
        upgrade: false,
        connection_upgrade: false,
        ws_key: None,
        ws_version: None,
        ws_extensions: None,
        authorization: None,
        head_len,
    };
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(v) = content_length(h.value) else {
                return Err(HttpError::Malformed("invalid Content-Length"));
            };
            if head.content_length.is_some_and(|prev| prev != v) {
                return Err(HttpError::Malformed("conflicting Content-Length headers"));
            }
            head.content_length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if header_is(h.value, "close") {
                head.keep_alive = false;
            } else if header_is(h.value, "keep-alive") {
                head.keep_alive = true;
            }
            head.connection_upgrade |= header_is(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade = header_is(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = std::str::from_utf8(h.value)
                .ok()
                .map(|s| s.trim().to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = std::str::from_utf8(h.value)
                .ok()
                .map(|s| s.trim().to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            if let Ok(v) = std::str::from_utf8(h.value) {
                let all = head.ws_extensions.get_or_insert_with(String::new);
                if !all.is_empty() {
                    all.push_str(", ");
                }
                all.push_str(v.trim());
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = std::str::from_utf8(h.value)
                .ok()
                .map(|s| s.trim().to_string());
        }
    }
    if head.chunked && head.content_length.is_some() {
        // RFC 9112 §6.1: both present is a smuggling vector; refuse.
        return Err(HttpError::Malformed(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_post_with_query_and_body_length() {
        let raw = b"POST /apps/1/events?auth_key=k&x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n{\"a\":1}";
        let h = parse_head(raw, 8192, 64).unwrap().unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.path, "/apps/1/events");
        assert_eq!(h.query, "auth_key=k&x=1");
        assert_eq!(h.content_length, Some(12));
        assert!(h.keep_alive);
        assert_eq!(&raw[h.head_len..], b"{\"a\":1}");
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_fail() {
        assert!(
            parse_head(b"GET / HTTP/1.1\r\nHost:", 8192, 64)
                .unwrap()
                .is_none()
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(
            parse_head(big.as_bytes(), 8192, 64).unwrap_err(),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(matches!(
            parse_head(b"GARBAGE\r\n\r\n", 8192, 64),
            Err(HttpError::Malformed(_))
        ));
        let many: String = (0..70).map(|i| format!("X-{i}: 1\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(req.as_bytes(), 1 << 20, 64).unwrap_err(),
            HttpError::TooManyHeaders
        );
        let smuggle = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_head(smuggle, 8192, 64),
            Err(HttpError::Malformed(_))
        ));
        let cl = b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n";
        assert!(matches!(
            parse_head(cl, 8192, 64),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b" \t42 \t"), Some(42));
        for bad in [
            &b"+4"[..],
            b"-4",
            b"4 2",
            b"",
            b" ",
            b"0x10",
            "4\u{a0}".as_bytes(),
            "\u{2003}4".as_bytes(),
            b"4\r",
            b"99999999999999999999999",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn websocket_upgrade_headers_are_recognised() {
        let raw = b"GET /app/k?protocol=7 HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: abc==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let h = parse_head(raw, 8192, 64).unwrap().unwrap();
        assert!(h.upgrade && h.connection_upgrade);
        assert_eq!(h.ws_key.as_deref(), Some("abc=="));
        assert_eq!(h.ws_version.as_deref(), Some("13"));
    }

    #[test]
    fn http10_and_connection_close_disable_keep_alive() {
        let h = parse_head(b"GET / HTTP/1.0\r\n\r\n", 8192, 64)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 8192, 64)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }
}
