//! End-to-end runs of every scenario against the in-process mock server.

use std::sync::atomic::Ordering::Relaxed;

use crate::mock::{Mock, MockOpts};

/// Value text of the first `"key":` in a JSON string (numbers/bools/null).
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let i = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    let rest = &json[i..];
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    &rest[..end]
}

fn num(json: &str, key: &str) -> u64 {
    let v = field(json, key);
    v.parse::<f64>()
        .unwrap_or_else(|_| panic!("{key}={v} not a number in {json}")) as u64
}

fn run(args: &str) -> String {
    let v: Vec<String> = args.split_whitespace().map(String::from).collect();
    let out = crate::run(&v).expect("scenario ran").expect("json");
    assert!(out.starts_with('{') && out.ends_with('}'));
    out
}

#[test]
fn fanout_zero_loss_and_pings_answered() {
    let m = Mock::start(MockOpts::default());
    let pid = std::process::id();
    let out = run(&format!(
        "fanout --port {} --subscribers 200 --channels 10 --rate 500 --duration 3 \
         --threads 2 --quiet --server-pid {pid}",
        m.port
    ));
    eprintln!("{out}");
    assert_eq!(num(&out, "subscribers_ok"), 200);
    assert_eq!(num(&out, "sent"), 1500);
    assert_eq!(num(&out, "acked"), 1500);
    assert_eq!(num(&out, "deliveries_expected"), 1500 * 20);
    assert_eq!(num(&out, "deliveries_received"), 1500 * 20);
    assert_eq!(num(&out, "deliveries_lost"), 0);
    assert_eq!(num(&out, "deliveries_extra"), 0);
    assert!(num(&out, "per_delivery_us") < 1_000_000);
    assert_eq!(m.stats.bad_auth.load(Relaxed), 0);
    assert_eq!(m.stats.unmasked_frames.load(Relaxed), 0);
    assert_eq!(m.stats.ws_pongs.load(Relaxed), 200);
    assert_eq!(m.stats.pusher_pongs.load(Relaxed), 200);
}

#[test]
fn fanout_large_frames_64bit_length() {
    let m = Mock::start(MockOpts::default());
    let out = run(&format!(
        "fanout --port {} --subscribers 6 --channels 2 --rate 40 --duration 1 \
         --payload 70000 --read-buf 512 --publishers 2 --quiet",
        m.port
    ));
    assert_eq!(num(&out, "deliveries_expected"), 40 * 3);
    assert_eq!(num(&out, "deliveries_received"), 40 * 3);
    assert_eq!(num(&out, "deliveries_lost"), 0);
    assert_eq!(field(&out, "server_cpu"), "null");
}

#[test]
fn fanout_wrong_secret_counts_401() {
    let m = Mock::start(MockOpts::default());
    let out = run(&format!(
        "fanout --port {} --subscribers 4 --channels 2 --rate 50 --duration 1 \
         --secret wrong --quiet --drain 0.5",
        m.port
    ));
    assert_eq!(num(&out, "acked"), 0);
    assert_eq!(num(&out, "non_2xx"), 50);
    assert_eq!(num(&out, "401"), 50);
    assert_eq!(num(&out, "deliveries_expected"), 0);
    assert_eq!(m.stats.bad_auth.load(Relaxed), 50);
}

#[test]
fn idle_spreads_source_addresses() {
    let m = Mock::start(MockOpts::default());
    let pid = std::process::id();
    let out = run(&format!(
        "idle --port {} --connections 300 --channels 3 --rate 3000 --hold 1 --threads 2 \
         --conns-per-ip 100 --inflight 32 --quiet --server-pid {pid}",
        m.port
    ));
    eprintln!("{out}");
    assert_eq!(num(&out, "connections_ok"), 300);
    assert_eq!(num(&out, "connections_failed"), 0);
    assert_eq!(num(&out, "disconnected_during_hold"), 0);
    assert!(num(&out, "connect_rate_per_sec") > 0);
    assert!(num(&out, "server_rss_before_kib") > 0);
    assert_eq!(m.stats.subscribes.load(Relaxed), 300);
}

#[test]
fn idle_connection_refused() {
    // Grab a free port, then close it so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&format!(
        "idle --port {port} --connections 5 --hold 0 --quiet"
    ));
    assert_eq!(num(&out, "connections_ok"), 0);
    assert_eq!(num(&out, "connections_failed"), 5);
    assert_eq!(num(&out, "connect_refused"), 5);
}

#[test]
fn rest_closed_loop() {
    let m = Mock::start(MockOpts::default());
    let out = run(&format!(
        "rest --port {} --concurrency 4 --duration 1 --threads 2 --quiet",
        m.port
    ));
    eprintln!("{out}");
    let n = num(&out, "requests");
    assert!(n > 100, "{out}");
    assert_eq!(num(&out, "requests_2xx"), n);
    assert_eq!(num(&out, "non_2xx"), 0);
    assert_eq!(num(&out, "unanswered"), 0);
    assert_eq!(m.stats.publishes.load(Relaxed), n);
}

#[test]
fn ramp_steps() {
    let m = Mock::start(MockOpts::default());
    let out = run(&format!(
        "ramp --port {} --subscribers 50 --channels 5 --start 200 --step 200 --max 600 \
         --p99-us 2000000 --step-secs 1 --quiet",
        m.port
    ));
    eprintln!("{out}");
    assert_eq!(out.matches("\"pass\":true").count(), 3, "{out}");
    assert_eq!(num(&out, "best_rate"), 600);
    // Impossible bound: the first step fails and the ramp stops.
    let out = run(&format!(
        "ramp --port {} --subscribers 10 --channels 5 --start 100 --step 100 --max 300 \
         --p99-us 1 --step-secs 1 --quiet",
        m.port
    ));
    assert_eq!(out.matches("\"pass\":false").count(), 1, "{out}");
    assert_eq!(field(&out, "best_rate"), "null");
}

#[test]
fn storm_reconnects_all_and_splits_latency() {
    let m = Mock::start(MockOpts::default());
    let pid = std::process::id();
    let out = run(&format!(
        "storm --port {} --bystanders 3 --connections 150 --storms 2 --storm-secs 0.3 \
         --pause 0.4 --warmup 0.4 --rate 200 --threads 2 --quiet --drain 1 --server-pid {pid}",
        m.port
    ));
    eprintln!("{out}");
    assert_eq!(num(&out, "bystanders_ok"), 3);
    assert_eq!(num(&out, "deliveries_lost"), 0);
    assert_eq!(num(&out, "storms_complete"), 2);
    assert_eq!(num(&out, "connect_failures"), 0);
    assert_eq!(num(&out, "storm_unexpected_disconnects"), 0);
    assert_eq!(out.matches("\"dropped\":150").count(), 2, "{out}");
    assert_eq!(out.matches("\"reconnected\":150").count(), 2, "{out}");
    // 0.4 s warm-up + 2 x 0.7 s at 200/s, to 3 bystanders.
    assert_eq!(num(&out, "deliveries_expected"), 360 * 3);
    let storm = &out[out.find("\"latency_storm_us\"").unwrap()..];
    assert!(num(storm, "count") > 0, "{out}");
    assert!(num(&out, "reconnect_secs_max") < 5);
    // Initial connect + two storms, each subscribing every storm connection.
    assert_eq!(m.stats.subscribes.load(Relaxed), 3 + 150 * 3);
    assert_eq!(m.stats.bad_auth.load(Relaxed), 0);
}

#[test]
fn storm_rst_mode() {
    let m = Mock::start(MockOpts::default());
    let out = run(&format!(
        "storm --port {} --connections 40 --storms 1 --storm-secs 0.2 --pause 0.2 \
         --warmup 0.2 --rate 50 --storm-rst --storm-inflight 8 --quiet --drain 1",
        m.port
    ));
    assert_eq!(field(&out, "storm_close"), "\"rst\"");
    assert_eq!(num(&out, "storms_complete"), 1);
    assert_eq!(num(&out, "reconnected"), 40);
    assert_eq!(num(&out, "deliveries_lost"), 0);
    assert_eq!(field(&out, "server_cpu"), "null");
}

#[test]
fn soak_mixed_load_rows_and_cut_offs() {
    let m = Mock::start(MockOpts {
        max_queue_bytes: Some(32 * 1024),
        close_grace: std::time::Duration::from_millis(800),
        sndbuf: Some(4096),
        ..MockOpts::default()
    });
    let pid = std::process::id();
    let out = run(&format!(
        "soak --port {} --minutes 0.06 --interval 1 --subscribers 20 --channels 4 --rate 100 \
         --churn 20 --churn-hold 0.3 --slow-readers 1 --slow-rate 100 --slow-payload 4000 \
         --slow-rcvbuf 4096 --slow-grace 0.8 --flooders 2 --flood-burst 30 --flood-every 0.5 \
         --presence 4 --presence-hold 0.4 --quiet --drain 1 --server-pid {pid}",
        m.port
    ));
    eprintln!("{out}");
    assert_eq!(num(&out, "subscribers_ok"), 20);
    // 3.6 s in 1 s intervals: 4 rows (the last one is short).
    assert_eq!(out.matches("\"conns_open\"").count(), 4, "{out}");
    assert_eq!(num(&out, "deliveries_lost"), 0, "{out}");
    assert_eq!(num(&out, "errors_total"), 0, "{out}");
    assert!(num(&out, "plateau_kib") > 0, "{out}");
    let churn = &out[out.find("\"churn\":{").unwrap()..];
    assert!(num(churn, "opened") >= 40, "{out}");
    assert_eq!(num(churn, "failed"), 0, "{out}");
    // The stall cycle sees a reset, the resume cycle the close frame 4100.
    assert!(num(&out, "cut_4100_seen") >= 1, "{out}");
    assert!(num(&out, "cut_without_4100_frame") >= 1, "{out}");
    assert!(num(&out, "rate_limited_4301") > 0, "{out}");
    assert!(num(&out, "client_events_received") > 0, "{out}");
    let flood = &out[out.find("\"flood\":{").unwrap()..];
    assert!(num(flood, "pongs") > 0, "{out}");
    assert_eq!(num(flood, "disconnects"), 0, "{out}");
    let presence = &out[out.find("\"presence\":{").unwrap()..];
    assert!(num(presence, "joins") >= 6, "{out}");
    assert!(num(presence, "member_events") > 0, "{out}");
    assert_eq!(m.stats.bad_auth.load(Relaxed), 0);
    assert_eq!(m.stats.unmasked_frames.load(Relaxed), 0);
    assert!(m.stats.cut_offs.load(Relaxed) >= 2);
    assert!(m.stats.client_pings.load(Relaxed) > 0);
}

#[test]
fn soak_rss_plateau() {
    use crate::soak::plateau;
    let rows: Vec<(f64, u64)> = (1..=10).map(|i| (i as f64 * 10.0, 1000 + i)).collect();
    // First 20% of 100 s = rows at t <= 20 left out: median of 1003..1010.
    let (median, dev, n) = plateau(&rows, 100.0, 0.2).unwrap();
    assert_eq!((median, n), (1006, 8));
    assert!((dev - 4.0 / 1006.0 * 100.0).abs() < 1e-9);
    let grow = [(30.0, 1000), (60.0, 1000), (90.0, 1200)];
    let (median, dev, _) = plateau(&grow, 90.0, 0.2).unwrap();
    assert_eq!(median, 1000);
    assert!((dev - 20.0).abs() < 1e-9);
    assert!(plateau(&[(1.0, 5)], 100.0, 0.2).is_none());
}

/// Not a test: keeps a mock server up for manual CLI runs, e.g.
/// `MOCK_SECS=60 cargo test --release mock_server_for_cli -- --ignored --nocapture`
/// then `relay-loadgen fanout --port <printed port> ...`.
#[test]
#[ignore]
fn mock_server_for_cli() {
    let secs: u64 = std::env::var("MOCK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
        .min(280);
    let m = Mock::start(MockOpts::default());
    eprintln!("MOCK_PORT={} MOCK_PID={}", m.port, std::process::id());
    std::thread::sleep(std::time::Duration::from_secs(secs));
    eprintln!(
        "mock stats: ws_conns={} subscribes={} publishes={} bad_auth={} ws_pongs={} pusher_pongs={} frames={}",
        m.stats.ws_conns.load(Relaxed),
        m.stats.subscribes.load(Relaxed),
        m.stats.publishes.load(Relaxed),
        m.stats.bad_auth.load(Relaxed),
        m.stats.ws_pongs.load(Relaxed),
        m.stats.pusher_pongs.load(Relaxed),
        m.stats.frames_broadcast.load(Relaxed),
    );
}

/// Counts heap allocations per thread (test builds only).
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        pub static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    pub fn get() -> u64 {
        COUNT.with(|c| c.get())
    }

    struct Counting;

    // SAFETY: delegates to System; only adds a thread-local counter.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(p, l, n) }
        }
    }

    #[global_allocator]
    static A: Counting = Counting;
}

#[test]
fn hold_loop_does_not_allocate_per_message() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::Instant;

    use crate::pool::{Counters, RecvCtx};
    use crate::util::{build_runtime, new_hist};
    use crate::ws::WsConn;

    const N: usize = 20_000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let mut all = Vec::new();
        for i in 0..N {
            if i % 5000 == 0 {
                all.extend_from_slice(&[0x89, 2, b'h', b'b']); // WS ping
            }
            let msg = format!(
                r#"{{"event":"lg","channel":"channel-1","data":"t=1;s={i};{}"}}"#,
                "x".repeat(i % 300)
            );
            let n = msg.len();
            if n < 126 {
                all.extend_from_slice(&[0x81, n as u8]);
            } else {
                all.extend_from_slice(&[0x81, 126, (n >> 8) as u8, n as u8]);
            }
            all.extend_from_slice(msg.as_bytes());
        }
        s.write_all(&all).unwrap();
        // Collect the pongs, then close.
        let mut pongs = Vec::new();
        let mut tmp = [0u8; 4096];
        while let Ok(n) = s.read(&mut tmp) {
            if n == 0 {
                break;
            }
            pongs.extend_from_slice(&tmp[..n]);
        }
        pongs.len()
    });
    let mut rt = build_runtime(256).unwrap();
    let (delivered, allocs) = rt.block_on(async move {
        let stream = crate::net::connect(addr, None).await.unwrap();
        let mut conn = WsConn::from_stream(stream, 4096);
        let ctx = RecvCtx {
            start: Instant::now(),
            hist: std::cell::RefCell::new(new_hist()),
            counters: Arc::new(Counters::default()),
        };
        let before = alloc_count::get();
        let _why = conn.hold(&ctx).await;
        let allocs = alloc_count::get() - before;
        (ctx.counters.delivered.load(Relaxed), allocs)
    });
    let pong_bytes = server.join().unwrap();
    eprintln!("delivered={delivered} allocations_in_hold={allocs} pong_bytes={pong_bytes}");
    assert_eq!(delivered, N as u64);
    assert_eq!(pong_bytes, 4 * (2 + 4 + 2)); // 4 masked pongs with "hb"
    assert!(allocs < 100, "{allocs} allocations for {N} messages");
}

/// relay itself, in-process, serving TLS with a fresh certificate (written to `dir`).
fn relay_with_tls(dir: &std::path::Path) -> (relay::server::Server, String) {
    std::fs::create_dir_all(dir).unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut config = relay::config::Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        workers: 1,
        ..Default::default()
    };
    config.ops.metrics.port = 0;
    config.ops.tls = Some(relay::config::TlsSettings {
        cert: cert.clone(),
        key,
    });
    let server = relay::server::Server::start(config).expect("relay with TLS");
    (server, cert.to_str().unwrap().to_string())
}

#[test]
fn tls_fanout_and_idle_against_relay() {
    let dir = std::env::temp_dir().join(format!("relay-loadgen-tls-{}", std::process::id()));
    let (server, ca) = relay_with_tls(&dir);
    let port = server.addr.port();
    // Publishes of 9 KB pipelined over TLS, subscribers verifying nothing (--insecure).
    let out = run(&format!(
        "fanout --port {port} --subscribers 40 --channels 4 --rate 200 --duration 1 --payload 9000 \
         --publishers 2 --tls --insecure --quiet"
    ));
    assert_eq!(num(&out, "subscribers_ok"), 40, "{out}");
    assert_eq!(num(&out, "acked"), 200, "{out}");
    assert_eq!(num(&out, "deliveries_expected"), 200 * 10, "{out}");
    assert_eq!(num(&out, "deliveries_lost"), 0, "{out}");
    // The certificate as the CA.
    let out = run(&format!(
        "idle --port {port} --connections 30 --hold 0 --tls --tls-ca {ca} --quiet"
    ));
    assert_eq!(num(&out, "connections_ok"), 30, "{out}");
    // Plain connections to a TLS port fail (the server answers 400), they do not hang.
    let out = run(&format!(
        "idle --port {port} --connections 3 --hold 0 --handshake-timeout 3 --quiet"
    ));
    assert_eq!(num(&out, "connections_failed"), 3, "{out}");
    assert!(out.contains("http_400"), "{out}");
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
