//! WebSocket connection behaviour over real sockets (docs/protocol.md#connection, #channels; checklist 1–24).

mod common;

use std::time::Duration;

use common::*;
use sonic_rs::JsonValueTrait;

#[test]
fn connection_established_has_string_data_with_socket_id_and_timeout() {
    let server = Server::start();
    let mut ws = server.ws();
    let e = ws.expect_event("pusher:connection_established");
    assert!(
        e.value["data"].is_str(),
        "data must be a JSON string: {}",
        e.raw
    );
    let data = e.data_json();
    let id = data["socket_id"].as_str().unwrap();
    let (a, b) = id.split_once('.').unwrap();
    assert!(
        a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
            && !a.is_empty()
            && !b.is_empty()
    );
    assert_eq!(data["activity_timeout"].as_u64(), Some(120));
    let driver = if std::env::var("MONOIO_FORCE_LEGACY_DRIVER").is_ok() {
        "driver epoll"
    } else {
        "driver io_uring"
    };
    assert!(
        server.log().contains(driver),
        "expected {driver} in log:\n{}",
        server.log()
    );
}

#[test]
fn socket_ids_are_unique_across_workers() {
    let server = Server::start();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let c = server.client();
        assert!(ids.insert(c.socket_id.clone()), "duplicate {}", c.socket_id);
    }
}

#[test]
fn unknown_key_gets_error_4001_then_close_4001() {
    let server = Server::start();
    let mut ws = Ws::connect(server.port, "/app/nope?protocol=7");
    let (code, events) = ws.expect_close();
    assert_eq!(code, Some(4001));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name(), "pusher:error");
    assert_eq!(
        events[0].value["data"]["code"].as_u64(),
        Some(4001),
        "error data is an object: {}",
        events[0].raw
    );
}

#[test]
fn unsupported_protocol_is_closed_with_4007() {
    let server = Server::start();
    for q in ["protocol=3", "protocol=abc"] {
        let mut ws = Ws::connect(server.port, &format!("/app/{APP_KEY}?{q}"));
        assert_eq!(ws.expect_close().0, Some(4007), "{q}");
    }
}

#[test]
fn wrong_ws_path_is_404_without_upgrade() {
    let server = Server::start();
    let req = "GET /foo/bar HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (status, _) = parse_response(&raw(server.port, req.as_bytes()));
    assert_eq!(status, 404);
}

#[test]
fn app_over_quota_gets_4004_and_first_connection_is_unaffected() {
    let server = Server::start_with(&[], &[("RELAY_MAX_CONNECTIONS", "1")]);
    let mut first = server.client();
    let mut second = server.ws();
    assert_eq!(second.expect_close().0, Some(4004));
    first.send_text(r#"{"event":"pusher:ping","data":{}}"#);
    first.expect_event("pusher:pong");
    drop(first);
    // The slot is released when the first leaves.
    std::thread::sleep(Duration::from_millis(300));
    let _third = server.client();
}

#[test]
fn server_over_capacity_gets_4100() {
    let server = Server::start_with(&["--server-max-connections", "2"], &[]);
    let _a = server.client();
    let _b = server.client();
    let mut c = server.ws();
    assert_eq!(c.expect_close().0, Some(4100));
}

#[test]
fn disabled_app_gets_4003() {
    let dir = std::env::temp_dir().join(format!("relay-disabled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("apps.json");
    std::fs::write(
        &file,
        r#"{"apps":[{"id":"app-id","key":"app-key","secret":"app-secret","enabled":false}]}"#,
    )
    .unwrap();
    let server = Server::start_with(&["--apps-file", file.to_str().unwrap()], &[]);
    let mut ws = server.ws();
    assert_eq!(ws.expect_close().0, Some(4003));
    // Its REST API answers 403 to signed requests (docs/protocol.md#http-rules).
    let (status, body) = server.publish("c", "e", "d");
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        json(&body)["error"].as_str(),
        Some("Application is disabled")
    );
}

#[test]
fn pusher_ping_gets_pong_in_every_data_shape() {
    let server = Server::start();
    let mut c = server.client();
    for msg in [
        r#"{"event":"pusher:ping","data":{}}"#,
        r#"{"event":"pusher:ping"}"#,
        r#"{"event":"pusher:ping","data":"{}"}"#,
    ] {
        c.send_text(msg);
        let e = c.expect_event("pusher:pong");
        assert_eq!(e.raw, r#"{"event":"pusher:pong","data":"{}"}"#);
    }
}

#[test]
fn websocket_ping_gets_pong_with_same_payload() {
    let server = Server::start();
    let mut c = server.client();
    c.send_frame(9, b"hello", true, true);
    let f = c.recv_frame();
    assert_eq!(f.opcode, 10);
    assert_eq!(f.payload, b"hello");
}

#[test]
fn binary_frames_and_bad_json_do_not_close_the_connection() {
    let server = Server::start();
    let mut c = server.client();
    c.send_frame(2, b"\x00\x01binary", true, true);
    c.send_text("{not json");
    let e = c.expect_event("pusher:error");
    assert!(e.value["data"].is_object());
    c.send_text(r#"["an array"]"#);
    c.expect_event("pusher:error");
    c.send_text(r#"{"event":"pusher:ping","data":{}}"#);
    c.expect_event("pusher:pong");
}

#[test]
fn subscribe_public_channel_succeeds_with_string_data() {
    let server = Server::start();
    let mut c = server.client();
    let e = c.subscribe("my-channel");
    assert_eq!(
        e.raw,
        r#"{"event":"pusher_internal:subscription_succeeded","channel":"my-channel","data":"{}"}"#
    );
    // data as a JSON string (docs/protocol.md#client-input)
    c.send_text(r#"{"event":"pusher:subscribe","data":"{\"channel\":\"other\"}"}"#);
    let e = c.expect_event("pusher_internal:subscription_succeeded");
    assert_eq!(e.channel(), Some("other"));
}

#[test]
fn repeated_subscribe_errors_and_keeps_one_subscription() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("dup");
    c.send_text(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"dup"}}"#);
    let e = c.expect_event("pusher:error");
    assert!(e.value["data"]["code"].is_null());
    assert_eq!(server.publish("dup", "ev", "x").0, 200);
    let e = c.expect_event("ev");
    assert_eq!(e.data_str(), "x");
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn invalid_channel_names_are_refused() {
    let server = Server::start();
    let mut c = server.client();
    let long_ok = "a".repeat(200);
    let too_long = "a".repeat(201);
    for bad in ["has space", "a:b", "#foo", too_long.as_str(), ""] {
        c.send_text(&format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"{bad}"}}}}"#
        ));
        let e = c.expect_event("pusher:error");
        assert!(e.value["data"]["message"].is_str(), "{}", e.raw);
    }
    c.subscribe(&long_ok);
}

#[test]
fn unsubscribe_stops_delivery_without_reply() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("u");
    c.send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"u"}}"#);
    c.send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"never"}}"#);
    c.send_text(r#"{"event":"pusher:ping"}"#);
    c.expect_event("pusher:pong");
    server.publish("u", "ev", "x");
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn private_channels_need_a_valid_signature() {
    let server = Server::start();
    let mut c = server.client();
    let good = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        &c.socket_id,
        "private-orders",
        None,
    );
    let mut bad = good.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    for auth in ["", "nocolon", "wrong-key:abcdef", bad.as_str()] {
        c.send_text(&format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"private-orders","auth":"{auth}"}}}}"#));
        let e = c.expect_event("pusher:error");
        assert!(e.value["data"]["code"].is_null(), "{}", e.raw);
    }
    server.publish("private-orders", "secret", "x");
    c.expect_silence(Duration::from_millis(200));
    c.send_text(&format!(
        r#"{{"event":"pusher:subscribe","data":{{"channel":"private-orders","auth":"{good}"}}}}"#
    ));
    c.expect_event("pusher_internal:subscription_succeeded");
    let enc = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        &c.socket_id,
        "private-encrypted-x",
        None,
    );
    c.send_text(&format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"private-encrypted-x","auth":"{enc}"}}}}"#));
    c.expect_event("pusher_internal:subscription_succeeded");
    // Prefixes are anchored: `notprivate-x` is public.
    c.subscribe("notprivate-x");
}

#[test]
fn silent_client_is_pinged_then_closed_with_4201() {
    let server = Server::start_with(&["--activity-timeout", "1", "--pong-timeout", "1"], &[]);
    let mut c = server.client();
    // Do not answer: first a WS ping, then pusher:ping, then Close 4201.
    let mut saw_ping = false;
    let code = loop {
        let f = c
            .try_recv_frame(Duration::from_secs(6))
            .expect("server closed without a Close frame");
        match f.opcode {
            9 => saw_ping = true,
            8 => break close_of(&f),
            _ => {}
        }
    };
    assert!(saw_ping, "a WebSocket ping precedes the close");
    assert_eq!(code, Some(4201));
}

#[test]
fn client_answering_pings_stays_connected() {
    let server = Server::start_with(&["--activity-timeout", "1", "--pong-timeout", "1"], &[]);
    let mut c = server.client();
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        if let Some(f) = c.try_recv_frame(Duration::from_millis(200)) {
            assert_ne!(f.opcode, 8, "closed although pings were answered");
            if f.opcode == 9 {
                c.send_frame(10, &f.payload, true, true);
            }
        }
    }
    c.send_text(r#"{"event":"pusher:ping"}"#);
    loop {
        let f = c.recv_frame();
        if f.opcode == 1 && f.payload.starts_with(br#"{"event":"pusher:pong""#) {
            break;
        }
        assert_ne!(f.opcode, 8);
    }
}

#[test]
fn graceful_shutdown_closes_clients_with_4200() {
    // A short grace: the closes are spread over most of it (tests/ops.rs checks the spread).
    let mut server = Server::start_with(&[], &[("RELAY_SHUTDOWN_GRACE", "2")]);
    let mut clients: Vec<_> = (0..6).map(|_| server.client()).collect();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    for c in &mut clients {
        assert_eq!(c.expect_close().0, Some(4200));
    }
}

#[test]
fn client_close_is_answered_and_cleans_up() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("bye");
    c.send_frame(8, &1000u16.to_be_bytes(), true, true);
    let f = c.recv_frame();
    assert_eq!(f.opcode, 8);
    assert_eq!(close_of(&f), Some(1000));
    std::thread::sleep(Duration::from_millis(200));
    let (_, body) = server.rest("GET", &format!("/apps/{APP_ID}/channels/bye"), &[], "");
    assert_eq!(body, r#"{"occupied":false}"#);
}

#[test]
fn second_server_on_the_same_port_fails_clearly() {
    let server = Server::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--port", &server.port.to_string(), "--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("address already in use"), "{err}");
}

#[test]
fn invalid_config_exits_nonzero_naming_the_field() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .env("RELAY_PORT", "http")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_PORT"));
}
