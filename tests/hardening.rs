//! Regression tests for the defects an attack run found (one test per defect): no input may crash the server,
//! pin its memory, or stall other clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

#[test]
fn a_pipelining_client_that_never_reads_is_cut_at_the_write_deadline() {
    let server = Server::start_with(&["--http-write-timeout", "1"], &[]);
    let (rss_before, _) = server.memory_kib();
    let port = server.port;
    let request = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2_000);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut holders = Vec::new();
    for _ in 0..20 {
        let request = request.clone();
        let done = done_tx.clone();
        holders.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // Send until the server gives up on us; never read.
            let started = Instant::now();
            while s.write_all(&request).is_ok() && started.elapsed() < Duration::from_secs(60) {}
            let _ = done.send(started.elapsed());
        }));
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let took = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a client that never reads kept its connection");
        worst = worst.max(took);
    }
    assert!(worst < Duration::from_secs(60), "cut after {worst:?}");
    let (rss_after, _) = server.memory_kib();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Everyone else is still served.
    assert_eq!(http(server.port, "GET", "/health", "").0, 200);
}

#[test]
fn pipelined_requests_after_a_large_body_do_not_stall_the_core() {
    let server = Server::start_with(&["--workers", "1"], &[]);
    let port = server.port;
    let mut flood = format!(
        "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{}",
        "x".repeat(1_000_000)
    )
    .into_bytes();
    flood.extend(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(300_000));
    // The bystander is connected (and served once) before the flood starts.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 4096];
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(s.read(&mut buf).unwrap() > 0);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let flooder = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut sink = vec![0u8; 1 << 16];
            let mut total = 0usize;
            while let Ok(n) = r.read(&mut sink) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        s.write_all(&flood).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answered = reader.join().unwrap();
        stop2.store(true, Ordering::Release);
        answered
    });
    // The bystander on the same (only) core keeps asking for /health meanwhile.
    let mut worst = Duration::ZERO;
    while !stop.load(Ordering::Acquire) {
        let t = Instant::now();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0 && buf.starts_with(b"HTTP/1.1 200"));
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered = flooder.join().unwrap();
    eprintln!("worst bystander wait {worst:?}");
    assert!(answered > 300_000 * 80, "only {answered} response bytes");
    assert!(
        worst < Duration::from_millis(500),
        "a bystander waited {worst:?} for /health"
    );
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_pins_one_pong() {
    let server = Server::start();
    let mut c = server.client();
    c.subscribe("flood");
    let (rss_before, _) = server.memory_kib();
    // 200,000 pings with the largest payload a control frame may carry: 26 MB, more than the socket buffers of
    // both sides hold, written without reading anything. Only the latest pong may wait (RFC 6455 §5.5.3).
    let mut ping = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
    ping.extend(std::iter::repeat_n(b'p' ^ 1, 125));
    let flood = ping.repeat(200_000);
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&flood).is_ok());
    std::thread::sleep(Duration::from_secs(3));
    let (rss_during, _) = server.memory_kib();
    assert!(
        rss_during < rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB"
    );
    // Reading again: pongs, never a cut-off, and the connection still delivers.
    let mut pongs = 0;
    while let Some(f) = c.try_recv_frame(Duration::from_millis(500)) {
        assert_ne!(f.opcode, 8, "closed: {:?}", close_of(&f));
        if f.opcode == 0xA {
            pongs += 1;
        }
    }
    assert!(sender.join().unwrap(), "the server stopped reading");
    assert!(pongs > 0 && pongs < 200_000, "{pongs} pongs");
    let (status, _) = server.publish("flood", "after", "x");
    assert_eq!(status, 200);
    c.expect_event("after");
}

#[test]
fn an_oversized_batch_is_refused_after_one_item_too_many() {
    let server = Server::start();
    // 1 MB of empty batch items: refused once item 11 is seen, without building the other 200,000.
    let items = vec!["{}"; 200_000].join(",");
    let body = format!(r#"{{"batch":[{items}]}}"#);
    assert!(body.len() < 1024 * 1024);
    let (_, peak_before) = server.memory_kib();
    for _ in 0..3 {
        let (status, text) =
            server.rest("POST", &format!("/apps/{APP_ID}/batch_events"), &[], &body);
        assert_eq!(status, 400, "{text}");
        assert!(
            text.contains("Batch too large (more than 10 events)"),
            "{text}"
        );
    }
    // The same for a publish's channel list.
    let channels = vec![r#""c""#; 200_000].join(",");
    let body = format!(r#"{{"name":"e","data":"d","channels":[{channels}]}}"#);
    let (status, text) = server.rest("POST", &format!("/apps/{APP_ID}/events"), &[], &body);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Too many channels (more than 100)"), "{text}");
    let (_, peak_after) = server.memory_kib();
    assert!(
        peak_after < peak_before + 32 * 1024,
        "peak RSS grew from {peak_before} KiB to {peak_after} KiB"
    );
}

#[test]
fn an_unfinished_fragmented_message_is_closed_at_its_deadline() {
    let server = Server::start_with(&["--ws-fragment-timeout", "1"], &[]);
    let mut c = server.client();
    c.send_frame(1, br#"{"event":"pusher:pi"#, false, true);
    // Pings keep the connection alive but do not extend the fragment's deadline.
    let started = Instant::now();
    let mut code = None;
    while started.elapsed() < Duration::from_secs(8) {
        c.send_frame(9, b"", true, true);
        if let Some(f) = c.try_recv_frame(Duration::from_millis(200))
            && f.opcode == 8
        {
            code = close_of(&f);
            break;
        }
    }
    assert_eq!(code, Some(1008), "no close after {:?}", started.elapsed());
    // A fragmented message that completes in time is fine.
    let mut c = server.client();
    c.send_frame(1, br#"{"event":"pusher:pi"#, false, true);
    c.send_frame(0, br#"ng","data":{}}"#, true, true);
    c.expect_event("pusher:pong");
}

#[test]
fn connections_that_arrive_while_draining_get_503_not_a_reset() {
    let server = Server::start();
    // A client that never answers the Close keeps the drain going for its full grace period.
    let _holder = server.client();
    server.begin_shutdown();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http(server.port, "GET", &format!("/apps/{APP_ID}/channels"), "");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        json(&body)["error"].as_str(),
        Some("Server is shutting down")
    );
    let (status, body) = http(server.port, "GET", "/health", "");
    assert_eq!(status, 503, "{body}");
    // A WebSocket that arrives now is told to reconnect elsewhere (4200).
    let mut ws = server.ws();
    let (code, _) = ws.expect_close();
    assert_eq!(code, Some(4200));
}

#[test]
fn the_deepest_accepted_json_parses_with_half_a_core_stack() {
    use relay::json::{MAX_JSON_DEPTH, parse};
    #[derive(serde::Deserialize)]
    struct Msg<'a> {
        #[serde(borrow, default)]
        #[allow(dead_code)]
        data: Option<sonic_rs::LazyValue<'a>>,
    }
    // sonic-rs recurses per level while skipping a lazy value: ~60 KiB a level in a debug build, ~100 bytes in
    // release. Half of a core's stack must be enough in both.
    let worker = std::thread::Builder::new()
        .stack_size(relay::config::CORE_STACK_BYTES / 2)
        .spawn(|| {
            let depth = MAX_JSON_DEPTH - 1;
            let doc = format!(r#"{{"data":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
            parse::<Msg<'_>>(doc.as_bytes()).is_ok()
        })
        .unwrap();
    assert!(worker.join().unwrap());
}

#[test]
fn stats_counts_occupied_channels_as_they_change_without_asking_the_cores() {
    let server = Server::start();
    let channels = || json(&http(server.port, "GET", "/stats", "").1)["channels"].as_u64();
    assert_eq!(channels(), Some(0));
    // The same channel on both cores (connections spread over them) counts once; each change shows at once.
    let mut clients: Vec<_> = (0..6).map(|_| server.client()).collect();
    for c in &mut clients {
        c.subscribe("shared");
    }
    let soon = |want: u64| {
        let deadline = Instant::now() + Duration::from_millis(300);
        while channels() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "/stats says {:?}, not {want}",
                channels()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    soon(1);
    clients[0].subscribe("second");
    soon(2);
    clients[0].send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"second"}}"#);
    soon(1);
    drop(clients);
    soon(0);
}

#[test]
fn the_server_wide_channel_limit_refuses_one_channel_more() {
    // One core: at the limit a core takes subscribers only for channels it has (see Limits::max_channels).
    let server = Server::start_with(&["--max-channels", "3", "--workers", "1"], &[]);
    let mut a = server.client();
    for ch in ["c1", "c2", "c3"] {
        a.subscribe(ch);
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut b = server.client();
    b.send_text(r#"{"event":"pusher:subscribe","data":{"channel":"c4"}}"#);
    let e = b.expect_event("pusher:error");
    assert_eq!(e.value["data"]["code"].as_u64(), Some(4100), "{}", e.raw);
    assert!(
        e.value["data"]["message"]
            .as_str()
            .unwrap()
            .contains("channel limit"),
        "{}",
        e.raw
    );
    // Existing channels still take subscribers, and a freed slot can be used again.
    b.subscribe("c2");
    a.send_text(r#"{"event":"pusher:unsubscribe","data":{"channel":"c1"}}"#);
    std::thread::sleep(Duration::from_millis(100));
    b.subscribe("c4");
}

#[test]
fn a_rest_body_that_is_not_utf8_is_refused_with_400() {
    let server = Server::start();
    let body = b"{\"name\":\"e\",\"channel\":\"c\",\"data\":\"\xff\"}";
    let path = format!("/apps/{APP_ID}/events");
    let query = relay::protocol::auth::sign_rest_query(
        "POST",
        &path,
        &[],
        body,
        APP_KEY,
        APP_SECRET,
        now(),
    );
    let mut req = format!(
        "POST {path}?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let r = raw(server.port, &req);
    assert_eq!(parse_response(&r).0, 400, "{r}");
    assert_eq!(http(server.port, "GET", "/health", "").0, 200);
}
