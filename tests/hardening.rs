//! Regression tests for the defects an attack run found (one test per defect): no input may crash the server,
//! pin its memory, or stall other clients.

mod common;

use common::*;
use sonic_rs::JsonValueTrait;

/// `[` repeated: the nesting that overflowed a core's stack inside sonic-rs.
fn brackets(n: usize) -> String {
    "[".repeat(n)
}

#[test]
fn deeply_nested_json_is_refused_and_never_aborts_the_server() {
    let server = Server::start();
    let mut c = server.client();
    let deep = brackets(20_000);
    // The whole message, then the same nesting inside subscribe data (object and string forms) and sign-in data.
    let messages = [
        format!(r#"{{"event":"x","data":{deep}"#),
        format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"a","x":{deep}}}}}"#),
        format!(r#"{{"event":"pusher:subscribe","data":"{{\"channel\":\"a\",\"x\":{deep}}}"}}"#),
        format!(r#"{{"event":"pusher:signin","data":{{"auth":"x","user_data":"1","x":{deep}}}}}"#),
        format!(r#"{{"event":"client-x","channel":"private-a","data":{deep}}}"#),
    ];
    for m in &messages {
        c.send_text(m);
        let e = c.expect_event("pusher:error");
        let data = &e.value["data"];
        assert_eq!(data["code"].as_u64(), Some(4007), "{}", e.raw);
        assert!(
            data["message"].as_str().unwrap().contains("nested deeper"),
            "{}",
            e.raw
        );
    }
    // The connection is still served, and so is everyone else.
    c.send_text(r#"{"event":"pusher:ping","data":{}}"#);
    c.expect_event("pusher:pong");
    let mut other = server.client();
    other.subscribe("still-here");

    // Signed REST bodies: 400 with a JSON error, never an abort.
    let rest_bodies = [
        (
            format!("/apps/{APP_ID}/events"),
            format!(r#"{{"name":"e","channel":"c","data":{deep}}}"#),
        ),
        (
            format!("/apps/{APP_ID}/batch_events"),
            format!(r#"{{"batch":[{{"x":{deep}}}]}}"#),
        ),
        (
            format!("/apps/{APP_ID}/events/batch"),
            format!(r#"{{"batch":{deep}}}"#),
        ),
        (
            format!("/apps/{APP_ID}/auth"),
            format!(r#"{{"socket_id":"1.1","x":{deep}}}"#),
        ),
    ];
    for (path, body) in &rest_bodies {
        let (status, text) = server.rest("POST", path, &[], body);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(
            json(&text)["error"]
                .as_str()
                .unwrap()
                .contains("nested deeper"),
            "{text}"
        );
    }
    let (status, text) = server.publish("still-here", "e", "after the attack");
    assert_eq!(status, 200, "{text}");
    assert_eq!(other.expect_event("e").data_str(), "after the attack");
}

#[test]
fn content_length_with_a_sign_or_unicode_space_is_refused() {
    let server = Server::start();
    for value in ["+4", "4\u{a0}", "\u{2003}4", "0x4"] {
        let req = format!(
            "POST /apps/{APP_ID}/events HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n{{}}{{}}"
        );
        let r = raw(server.port, req.as_bytes());
        assert_eq!(parse_response(&r).0, 400, "Content-Length {value:?}: {r}");
    }
    // Spaces and tabs around digits are allowed (RFC 9110 optional whitespace).
    let req =
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: \t0 \r\nConnection: close\r\n\r\n";
    assert_eq!(parse_response(&raw(server.port, req.as_bytes())).0, 200);
}

#[test]
fn the_app_secret_is_never_logged() {
    let server = Server::start_with(&["--debug"], &[("RELAY_APP_SECRET", "very-secret-value")]);
    let mut c = server.client();
    c.subscribe("x");
    let (status, _) = rest_signed(
        server.port,
        "POST",
        &format!("/apps/{APP_ID}/events"),
        &[],
        r#"{"name":"e","channel":"x","data":"d"}"#,
        APP_KEY,
        "very-secret-value",
        now(),
    );
    assert_eq!(status, 200);
    c.expect_event("e");
    let log = server.log();
    assert!(log.contains("app id=app-id key=app-key"), "{log}");
    assert!(!log.contains("very-secret-value"), "{log}");
}

#[test]
fn an_unsupported_websocket_version_gets_426_naming_version_13() {
    let server = Server::start();
    let req = "GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let r = raw(server.port, req.as_bytes());
    assert_eq!(parse_response(&r).0, 426, "{r}");
    assert!(r.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{r}");
}
