//! Operations over real sockets: the Prometheus endpoint, SIGHUP reload of the apps file, the SIGTERM drain that
//! spreads its closes, `/ready`, `--check-config` and JSON logs.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use sonic_rs::JsonValueTrait;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let (status, body) = http(port, "GET", "/metrics", "");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the series `name{labels}` (exact label text), if present.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_are_served_in_the_prometheus_format_and_move_with_traffic() {
    let mport = free_port();
    let server = Server::start_with(&[], &[("RELAY_METRICS_PORT", &mport.to_string())]);
    wait_for("the metrics address logged", || {
        server
            .log()
            .contains(&format!("metrics: http://127.0.0.1:{mport}/metrics"))
    });
    let before = scrape(mport);
    for name in [
        "relay_connections",
        "relay_connections_opened_total",
        "relay_connections_closed_total",
        "relay_deliveries_total",
        "relay_publishes_total",
        "relay_ws_bytes_sent_total",
        "relay_ws_bytes_received_total",
        "relay_http_requests_total",
        "relay_channels",
        "relay_slow_reader_cutoffs_total",
        "relay_rate_limited_total",
        "relay_publish_fanout_seconds",
        "relay_webhook_queue_depth",
    ] {
        assert!(
            before.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            before.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    assert!(before.contains("# TYPE relay_publish_fanout_seconds histogram"));
    assert_eq!(
        series(&before, r#"relay_connections{app="app-id"}"#),
        Some(0.0)
    );

    let mut a = server.client();
    let mut b = server.client();
    a.subscribe("metered");
    b.subscribe("metered");
    let (status, _) = server.publish("metered", "e", "1");
    assert_eq!(status, 200);
    a.expect_event("e");
    b.expect_event("e");
    let after = scrape(mport);
    assert_eq!(
        series(&after, r#"relay_connections{app="app-id"}"#),
        Some(2.0)
    );
    assert_eq!(series(&after, "relay_connections_opened_total"), Some(2.0));
    assert_eq!(series(&after, "relay_channels"), Some(1.0));
    assert_eq!(
        series(&after, r#"relay_deliveries_total{app="app-id"}"#),
        Some(2.0)
    );
    assert_eq!(
        series(
            &after,
            r#"relay_publishes_total{app="app-id",source="rest"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &after,
            r#"relay_http_requests_total{route="events",status="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(&after, "relay_publish_fanout_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        series(&after, r#"relay_publish_fanout_seconds_bucket{le="+Inf"}"#),
        Some(1.0)
    );
    assert!(series(&after, "relay_ws_bytes_sent_total").unwrap() > 0.0);
    assert!(series(&after, "relay_ws_bytes_received_total").unwrap() > 0.0);

    // A client that closes is counted as such; one refused by an unknown key as refused.
    a.send_frame(8, &1000u16.to_be_bytes(), true, true);
    let mut refused = Ws::connect(server.port, "/app/nope?protocol=7");
    assert_eq!(refused.expect_close().0, Some(4001));
    wait_for("closes counted", || {
        let m = scrape(mport);
        series(&m, r#"relay_connections_closed_total{reason="client"}"#) == Some(1.0)
            && series(&m, r#"relay_connections{app="app-id"}"#) == Some(1.0)
    });
    let (status, _) = http(mport, "GET", "/nothing", "");
    assert_eq!(status, 404);
}

fn apps_file(dir: &std::path::Path, apps: &[(&str, &str)]) -> PathBuf {
    apps_file_max(dir, apps, 0)
}

/// Every app with `max_connections: max`.
fn apps_file_max(dir: &std::path::Path, apps: &[(&str, &str)], max: u64) -> PathBuf {
    let path = dir.join("apps.json");
    let list: Vec<String> = apps
        .iter()
        .map(|(id, key)| {
            format!(
                r#"{{"id":"{id}","key":"{key}","secret":"{id}-secret","max_connections":{max}}}"#
            )
        })
        .collect();
    std::fs::write(&path, format!(r#"{{"apps":[{}]}}"#, list.join(","))).unwrap();
    path
}

fn hup(server: &Server) {
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
}

fn connect(server: &Server, key: &str) -> Ws {
    let mut ws = Ws::connect(server.port, &format!("/app/{key}?protocol=7"));
    ws.expect_event("pusher:connection_established");
    ws
}

#[test]
fn sighup_reloads_the_apps_file_and_keeps_what_did_not_change() {
    let dir = tempdir("reload");
    let file = apps_file(&dir, &[("a", "key-a"), ("b", "key-b")]);
    let server = Server::start_with(&[], &[("RELAY_APPS_FILE", file.to_str().unwrap())]);
    let mut a = connect(&server, "key-a");
    let mut b = connect(&server, "key-b");
    a.send_text(r#"{"event":"pusher:subscribe","data":{"channel":"stay"}}"#);
    a.expect_event("pusher_internal:subscription_succeeded");
    let mut refused = Ws::connect(server.port, "/app/key-c?protocol=7");
    assert_eq!(refused.expect_close().0, Some(4001), "c is not served yet");

    // b removed, c added, a unchanged.
    apps_file(&dir, &[("a", "key-a"), ("c", "key-c")]);
    hup(&server);
    let (code, _) = b.expect_close();
    assert_eq!(
        code,
        Some(4001),
        "a removed app's connections are closed with 4001"
    );
    wait_for("reload logged", || {
        server
            .log()
            .contains("reload: 1 app(s) added, 0 changed, 1 removed")
    });
    let mut c = connect(&server, "key-c");
    c.send_text(r#"{"event":"pusher:ping"}"#);
    c.expect_event("pusher:pong");
    let (status, _) = rest_signed(
        server.port,
        "GET",
        "/apps/c/channels",
        &[],
        "",
        "key-c",
        "c-secret",
        now(),
    );
    assert_eq!(status, 200, "the new app's API works at once");
    let (status, _) = rest_signed(
        server.port,
        "GET",
        "/apps/b/channels",
        &[],
        "",
        "key-b",
        "b-secret",
        now(),
    );
    assert_eq!(status, 404, "the removed app's API is gone");
    // a's connection was untouched: still subscribed, still delivered to.
    let body = r#"{"name":"e","channel":"stay","data":"1"}"#;
    let (status, _) = rest_signed(
        server.port,
        "POST",
        "/apps/a/events",
        &[],
        body,
        "key-a",
        "a-secret",
        now(),
    );
    assert_eq!(status, 200);
    assert_eq!(a.expect_event("e").data_str(), "1");

    // A lowered quota applies to new connections; the ones open stay.
    apps_file_max(&dir, &[("a", "key-a"), ("c", "key-c")], 1);
    hup(&server);
    wait_for("second reload logged", || {
        server
            .log()
            .contains("reload: 0 app(s) added, 2 changed, 0 removed")
    });
    let mut over = Ws::connect(server.port, "/app/key-a?protocol=7");
    assert_eq!(over.expect_close().0, Some(4004));
    let (status, _) = rest_signed(
        server.port,
        "POST",
        "/apps/a/events",
        &[],
        body,
        "key-a",
        "a-secret",
        now(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        a.expect_event("e").data_str(),
        "1",
        "the open connection stays"
    );

    // An invalid file keeps the running apps and says which field is wrong, in one line.
    std::fs::write(
        &file,
        r#"{"apps":[{"id":"a","key":"key-a","secret":"s","max_connections":"many"}]}"#,
    )
    .unwrap();
    hup(&server);
    wait_for("refusal logged", || server.log().contains("reload refused"));
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap()
        .to_string();
    assert!(line.contains("apps[0].max_connections"), "{line}");
    c.send_text(r#"{"event":"pusher:ping"}"#);
    c.expect_event("pusher:pong");
    let (status, _) = rest_signed(
        server.port,
        "GET",
        "/apps/c/channels",
        &[],
        "",
        "key-c",
        "c-secret",
        now(),
    );
    assert_eq!(status, 200, "the running apps stay");
    a.expect_silence(Duration::from_millis(100));
}

#[test]
fn sigterm_spreads_the_closes_over_the_grace_period_and_exits_within_it() {
    let mut server = Server::start_with(&[], &[("RELAY_SHUTDOWN_GRACE", "3")]);
    let mut clients: Vec<Ws> = (0..16).map(|_| server.ws()).collect();
    for c in &mut clients {
        c.expect_event("pusher:connection_established");
    }
    let (status, body) = http(server.port, "GET", "/ready", "");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let began = Instant::now();
    server.begin_shutdown();
    std::thread::sleep(Duration::from_millis(100));
    let (status, body) = http(server.port, "GET", "/health", "");
    assert_eq!((status, body.as_str()), (503, r#"{"status":"draining"}"#));
    let (status, _) = http(server.port, "GET", "/ready", "");
    assert_eq!(status, 503);
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let (code, _) = c.expect_close();
                (code, began.elapsed())
            })
        })
        .collect();
    let mut at: Vec<Duration> = Vec::new();
    for h in handles {
        let (code, t) = h.join().unwrap();
        assert_eq!(code, Some(4200));
        at.push(t);
    }
    at.sort();
    let spread = at[at.len() - 1] - at[0];
    // 16 closes at uniform moments over 2.1 s: all within one second of each other is beyond chance.
    assert!(spread > Duration::from_secs(1), "closes not spread: {at:?}");
    assert!(at[at.len() - 1] < Duration::from_millis(2800), "{at:?}");
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "exit within the grace period"
    );
}

#[test]
fn check_config_prints_the_effective_settings_and_exits() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--check-config", "--port", "7123"])
        .env("RELAY_APP_SECRET", "very-secret")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("port: 7123") && text.contains("configuration OK"),
        "{text}"
    );
    assert!(!text.contains("very-secret"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--check-config"])
        .env("RELAY_SHUTDOWN_GRACE", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RELAY_SHUTDOWN_GRACE"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let server = Server::start_with(&[], &[("RELAY_LOG_FORMAT", "json")]);
    let _ = server.client();
    wait_for("the start logged", || {
        server.log().contains("WebSocket: ws://")
    });
    let log = server.log();
    let mut lines = 0;
    for line in log.lines() {
        let v = json(line);
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(v["level"].as_str().is_some(), "{line}");
        assert!(v["msg"].as_str().is_some(), "{line}");
        lines += 1;
    }
    assert!(lines >= 2, "{log}");
    assert!(log.contains("listening on"), "{log}");
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("relay-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
