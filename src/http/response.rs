//! HTTP responses: status, JSON body, and the few headers we send.

use crate::json::push_json_string;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// One extra header when a status calls for it: `Allow` for 405, `Sec-WebSocket-Version` for 426.
    pub header: Option<(&'static str, &'static str)>,
    /// A server-sent event stream follows this head instead of a body: no length, the connection ends with it
    /// (`http_conn` hands the socket to `api::dashboard::stream_events`).
    pub event_stream: bool,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

impl Response {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            body,
            content_type: "application/json",
            header: None,
            event_stream: false,
        }
    }

    /// A 200 with a body that is not JSON (the dashboard's page and assets).
    pub fn content(content_type: &'static str, body: Vec<u8>) -> Self {
        Response {
            status: 200,
            body,
            content_type,
            header: None,
            event_stream: false,
        }
    }

    pub fn ok_empty_object() -> Self {
        Self::json(200, b"{}".to_vec())
    }

    /// `{"error":"<message>"}` with the given status.
    pub fn error(status: u16, message: &str) -> Self {
        let mut body = Vec::with_capacity(message.len() + 12);
        body.extend_from_slice(b"{\"error\":");
        push_json_string(&mut body, message);
        body.push(b'}');
        Self::json(status, body)
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut r = Self::error(405, "Method not allowed");
        r.header = Some(("Allow", allow));
        r
    }

    /// The head of a server-sent event stream.
    pub fn event_stream() -> Self {
        Response {
            status: 200,
            body: Vec::new(),
            content_type: "text/event-stream",
            header: Some(("Cache-Control", "no-store")),
            event_stream: true,
        }
    }

    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        use std::io::Write;
        if self.event_stream {
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                self.content_type
            );
            return;
        }
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some((name, value)) = self.header {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_length() {
        let mut out = Vec::new();
        Response::error(404, "No \"app\"").write_to(&mut out, false, false);
        let text = String::from_utf8(out).unwrap();
        let body = "{\"error\":\"No \\\"app\\\"\"}";
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        assert!(text.starts_with(&head), "{text}");
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"error\":\"No \\\"app\\\"\"}"));
    }
}
