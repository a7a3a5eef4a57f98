//! The dashboard over real sockets (README "Dashboard"): off by default, refuses to start without a password,
//! HTTP Basic authentication on everything under its path, the page and its assets, and the server-sent event
//! stream whose totals move when a publish is delivered.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

const PASSWORD: &str = "correct horse";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn admin() -> String {
    basic("admin", PASSWORD)
}

fn with_dashboard(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("RELAY_DASHBOARD_ENABLED", "true"),
        ("RELAY_DASHBOARD_PASSWORD", PASSWORD),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&[], &env)
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    /// The value of a response header (names compared case-insensitively).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request with Connection: close and an optional Authorization header.
fn request(port: u16, method: &str, target: &str, auth: Option<&str>) -> Reply {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let text = raw(port, req.as_bytes());
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: parse_response(&text).0,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A server-sent event stream of snapshots.
struct Stream {
    reader: BufReader<TcpStream>,
}

impl Stream {
    fn open(port: u16, path: &str) -> (Stream, String) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n\r\n",
            admin()
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("response head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        (Stream { reader }, head)
    }

    /// The next `data:` event, parsed; `None` when the stream ended.
    fn next(&mut self) -> Option<Value> {
        let mut data = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("stream read failed: {e}"),
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                return Some(json(&data));
            }
        }
    }

    fn expect(&mut self) -> Value {
        self.next().expect("the stream ended before an event")
    }
}

fn total(v: &Value, name: &str) -> u64 {
    v["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no totals.{name} in {v:?}"))
}

fn app<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["apps"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"].as_str() == Some(id)))
        .unwrap_or_else(|| panic!("no app {id} in {v:?}"))
}

#[test]
fn the_dashboard_is_off_by_default() {
    let server = Server::start();
    for path in ["/dashboard", "/dashboard/events", "/dashboard/app.js"] {
        let r = request(server.port, "GET", path, Some(&admin()));
        assert_eq!(r.status, 404, "{path}: {}", r.head);
    }
}

#[test]
fn enabled_without_a_password_relay_refuses_to_start() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--port", "0", "--host", "127.0.0.1", "--workers", "1"])
        .env("RELAY_DASHBOARD_ENABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("relay started with the dashboard on and no password");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("RELAY_DASHBOARD_PASSWORD"), "{err}");
}

#[test]
fn a_missing_or_wrong_password_is_a_401_with_a_basic_challenge() {
    let server = with_dashboard(&[]);
    let wrong = [
        None,
        Some(basic("admin", "wrong")),
        Some(basic("admin", &format!("{PASSWORD}x"))),
        Some(basic("root", PASSWORD)),
        Some("Basic not-base64!".to_string()),
        Some(format!("Bearer {PASSWORD}")),
    ];
    for path in [
        "/dashboard",
        "/dashboard/events",
        "/dashboard/api/snapshot",
        "/dashboard/app.js",
        "/dashboard/nothing-here",
    ] {
        for auth in &wrong {
            let r = request(server.port, "GET", path, auth.as_deref());
            assert_eq!(r.status, 401, "{path} with {auth:?}: {}", r.head);
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some(r#"Basic realm="relay dashboard", charset="UTF-8""#),
                "{}",
                r.head
            );
            assert!(json(&r.body)["error"].is_str(), "{}", r.body);
            assert!(!r.body.contains("data:"), "no figures without credentials");
        }
    }
}

#[test]
fn the_right_password_gets_the_page_and_its_assets() {
    let server = with_dashboard(&[]);
    let auth = Some(admin());
    let page = request(server.port, "GET", "/dashboard", auth.as_deref());
    assert_eq!(page.status, 200, "{}", page.head);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body.contains(r#"src="/dashboard/app.js""#),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let csp = page.header("Content-Security-Policy").unwrap_or("");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    for (path, ty, needle) in [
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            "EventSource",
        ),
        ("/dashboard/style.css", "text/css; charset=utf-8", ".card"),
    ] {
        let r = request(server.port, "GET", path, auth.as_deref());
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("Content-Type"), Some(ty), "{path}");
        assert!(r.body.contains(needle), "{path}");
    }
    let head = request(server.port, "HEAD", "/dashboard", auth.as_deref());
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let missing = request(server.port, "GET", "/dashboard/nope", auth.as_deref());
    assert_eq!(missing.status, 404);
    let post = request(server.port, "POST", "/dashboard", auth.as_deref());
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    let snapshot = request(
        server.port,
        "GET",
        "/dashboard/api/snapshot",
        auth.as_deref(),
    );
    assert_eq!(snapshot.status, 200);
    let v = json(&snapshot.body);
    assert_eq!(total(&v, "deliveries"), 0);
    assert_eq!(app(&v, APP_ID)["connections"].as_u64(), Some(0));
    // Not the dashboard's: a sibling path and the API stay as they were.
    assert_eq!(
        request(server.port, "GET", "/dashboardx", auth.as_deref()).status,
        404
    );
    assert_eq!(request(server.port, "GET", "/health", None).status, 200);
}

#[test]
fn the_event_stream_sends_snapshots_whose_deliveries_move_after_a_publish() {
    let server = with_dashboard(&[]);
    let mut sub = server.client();
    sub.subscribe("news");
    let mut member = server.client();
    join(&mut member, "presence-room", "alice", None);

    let (mut stream, head) = Stream::open(server.port, "/dashboard/events");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    let first = stream.expect();
    assert_eq!(first["connections"].as_u64(), Some(2), "{first:?}");
    assert_eq!(app(&first, APP_ID)["connections"].as_u64(), Some(2));
    let presence = app(&first, APP_ID)["presence"].as_array().unwrap();
    assert_eq!(presence.len(), 1, "{first:?}");
    assert_eq!(presence[0]["channel"].as_str(), Some("presence-room"));
    assert_eq!(presence[0]["users"].as_u64(), Some(1));
    assert_eq!(first["partial"].as_bool(), Some(false));
    let before = total(&first, "deliveries");

    let (status, body) = server.publish("news", "headline", "{\"n\":1}");
    assert_eq!(status, 200, "{body}");
    sub.expect_event("headline");

    let start = Instant::now();
    let mut events = 1;
    let after = loop {
        let s = stream.expect();
        events += 1;
        assert!(s["time_ms"].as_u64() >= first["time_ms"].as_u64());
        if total(&s, "deliveries") > before {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "deliveries never moved: {s:?}"
        );
    };
    assert!(events >= 2);
    assert_eq!(total(&after, "publishes_rest"), 1);
    let a = app(&after, APP_ID);
    assert!(a["deliveries"].as_u64().unwrap() > 0, "{a:?}");
    assert_eq!(a["publishes_rest"].as_u64(), Some(1));
    let log = a["log"].as_array().unwrap();
    assert!(
        log.iter().any(|e| e["type"].as_str() == Some("publish")
            && e["channel"].as_str() == Some("news")),
        "{log:?}"
    );
    // One a second, not faster.
    assert!(
        after["time_ms"].as_u64().unwrap() - first["time_ms"].as_u64().unwrap() >= 900,
        "{first:?} {after:?}"
    );
}

#[test]
fn a_draining_server_ends_the_stream() {
    let server = with_dashboard(&[("RELAY_SHUTDOWN_GRACE", "10")]);
    // A WebSocket client that never answers the drain's close keeps the process draining for most of the grace
    // period: the stream must end on its own well before that.
    let _lingering = server.client();
    let (mut stream, _) = Stream::open(server.port, "/dashboard/events");
    stream.expect();
    server.begin_shutdown();
    let start = Instant::now();
    while stream.next().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the stream outlived the drain's start"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    // Still draining (not a zombie waiting to be reaped): the stream ended on its own, not with the process.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
    assert_ne!(state, Some("Z"), "relay had already exited");
}

#[test]
fn a_custom_path_and_user_are_used() {
    let server = with_dashboard(&[
        ("RELAY_DASHBOARD_PATH", "/ops/board"),
        ("RELAY_DASHBOARD_USER", "ops"),
    ]);
    let auth = basic("ops", PASSWORD);
    let page = request(server.port, "GET", "/ops/board", Some(&auth));
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.body.contains(r#"src="/ops/board/app.js""#));
    assert_eq!(
        request(server.port, "GET", "/ops/board", Some(&admin())).status,
        401,
        "the default user is not the configured one"
    );
    assert_eq!(
        request(server.port, "GET", "/dashboard", Some(&auth)).status,
        404
    );
    let (mut stream, head) = {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(
            s,
            "GET /ops/board/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        reader.read_line(&mut head).unwrap();
        (Stream { reader }, head)
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v = stream.expect();
    assert!(v["totals"]["deliveries"].is_u64(), "{v:?}");
}

#[test]
fn streams_beyond_the_cap_are_refused_with_503_until_one_closes() {
    let server = with_dashboard(&[("RELAY_DASHBOARD_MAX_STREAMS", "2")]);
    let (mut first, head) = Stream::open(server.port, "/dashboard/events");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    first.expect();
    let (mut second, head) = Stream::open(server.port, "/dashboard/events");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    second.expect();
    let third = request(server.port, "GET", "/dashboard/events", Some(&admin()));
    assert_eq!(third.status, 503, "{} {}", third.head, third.body);
    assert_eq!(third.body, r#"{"error":"Too many dashboard streams open"}"#);
    // The page and the snapshot are not streams: still served.
    assert_eq!(
        request(
            server.port,
            "GET",
            "/dashboard/api/snapshot",
            Some(&admin())
        )
        .status,
        200
    );
    // A closed stream gives its slot back once the server notices (its next write fails).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (mut again, head) = Stream::open(server.port, "/dashboard/events");
        if head.starts_with("HTTP/1.1 200") && again.next().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot never came back: {head}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    second.expect();
}
