//! The mixed clients of `soak`, all on one runtime thread ("lg-soak"):
//!
//! * **churn**: new connections at a fixed rate; each subscribes, stays a
//!   while, and goes in one of four ways (close handshake, unsubscribe + FIN,
//!   FIN, RST);
//! * **slow readers**: subscribe to a channel fed with large messages and stop
//!   reading, so the server must cut them off (close 4100). Odd cycles resume
//!   reading shortly after the learned cut-off time to see the close frame;
//! * **flooders**: bursts of WebSocket pings, `pusher:ping`s and client
//!   events on a private channel (client events above the server's rate get
//!   `pusher:error` 4301, which is expected);
//! * **presence members**: join a presence channel, stay, leave, rejoin.
//!
//! Counters are atomics read by the controller every interval. Anything the
//! server should not do (a refused connect, a dropped flooder or presence
//! member, a failed subscribe) is counted in `errors` under a label.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::args::SoakOpts;
use crate::net;
use crate::sign::sign_channel;
use crate::util::{Hist, build_runtime, json_escape, new_hist, ns_since};
use crate::ws::{
    ConnError, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, PUSHER_PING, PUSHER_PONG, Target, WsConn,
    close_code, contains, find_t, pusher_error_code,
};

/// Live counters of the mixed clients (monotonic except `live`).
#[derive(Default)]
pub struct MiscCounters {
    /// Open connections of the mixed clients.
    pub live: AtomicU64,
    pub errors: AtomicU64,
    pub churn_opened: AtomicU64,
    pub churn_failed: AtomicU64,
    pub churn_closed: AtomicU64,
    pub slow_connected: AtomicU64,
    pub slow_cut_4100: AtomicU64,
    pub slow_cut_no_frame: AtomicU64,
    pub slow_not_cut: AtomicU64,
    pub flood_frames: AtomicU64,
    pub flood_pongs: AtomicU64,
    pub flood_rate_limited: AtomicU64,
    pub flood_client_events: AtomicU64,
    pub flood_disconnects: AtomicU64,
    pub presence_joins: AtomicU64,
    pub presence_leaves: AtomicU64,
    pub presence_member_events: AtomicU64,
}

pub struct MiscCfg {
    pub target: Target,
    pub key: String,
    pub secret: String,
    pub prefix: String,
    pub opts: SoakOpts,
    pub hs_timeout: Duration,
    /// The server's grace between a cut-off and closing the socket.
    pub slow_grace: f64,
    pub start: Instant,
}

pub struct Misc {
    handle: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    pub counters: Arc<MiscCounters>,
    pub errors: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Slow readers: stall start to detected cut-off, ms (stall cycles only).
    pub time_to_cut: Arc<Mutex<Hist>>,
}

impl Misc {
    pub fn spawn(cfg: MiscCfg) -> std::io::Result<Misc> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(MiscCounters::default());
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let time_to_cut = Arc::new(Mutex::new(new_hist()));
        let ctx = Ctx {
            cfg,
            stop: stop.clone(),
            c: counters.clone(),
            errors: errors.clone(),
            time_to_cut: time_to_cut.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("lg-soak".into())
            .spawn(move || match build_runtime(1024) {
                Ok(mut rt) => rt.block_on(misc_main(Rc::new(ctx))),
                Err(e) => {
                    eprintln!("relay-loadgen: soak client thread: cannot build runtime: {e}");
                    ctx.error("runtime_build".into());
                }
            })?;
        Ok(Misc {
            handle,
            stop,
            counters,
            errors,
            time_to_cut,
        })
    }

    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        let _ = self.handle.join();
    }
}

struct Ctx {
    cfg: MiscCfg,
    stop: Arc<AtomicBool>,
    c: Arc<MiscCounters>,
    errors: Arc<Mutex<BTreeMap<String, u64>>>,
    time_to_cut: Arc<Mutex<Hist>>,
}

impl Ctx {
    fn error(&self, label: String) {
        self.c.errors.fetch_add(1, Relaxed);
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(label).or_insert(0) += 1;
        }
    }
    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }
    async fn connect(
        &self,
        idx: usize,
        rcvbuf: Option<usize>,
    ) -> Result<(WsConn, String), ConnError> {
        match monoio::time::timeout(
            self.cfg.hs_timeout,
            WsConn::connect(&self.cfg.target, idx, 1, 1024, rcvbuf),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout),
        }
    }
    async fn subscribe(
        &self,
        conn: &mut WsConn,
        channel: &str,
        auth: &str,
        data: Option<&str>,
    ) -> Result<(), ConnError> {
        match monoio::time::timeout(self.cfg.hs_timeout, conn.subscribe(channel, auth, data)).await
        {
            Ok(r) => r,
            Err(_) => Err(ConnError::Timeout),
        }
    }
}

/// Deterministic pseudo-random fraction in [0, 1) (splitmix64).
fn frac(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

async fn sleep_secs(s: f64) {
    monoio::time::sleep(Duration::from_secs_f64(s.max(0.0))).await;
}

async fn misc_main(ctx: Rc<Ctx>) {
    crate::util::note_driver();
    let o = &ctx.cfg.opts;
    if o.churn > 0.0 {
        monoio::spawn(churn_loop(ctx.clone()));
    }
    for i in 0..o.slow_readers {
        monoio::spawn(slow_reader(ctx.clone(), i));
    }
    for i in 0..o.flooders {
        monoio::spawn(flooder(ctx.clone(), i));
    }
    for i in 0..o.presence {
        monoio::spawn(presence_member(ctx.clone(), i));
    }
    while !ctx.stopped() {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until `deadline`, answering pings. Returns Err when the server
/// closed the connection (or sent a Close frame).
async fn idle_read(
    conn: &mut WsConn,
    deadline: Instant,
    on_text: impl Fn(&[u8]),
) -> Result<(), ConnError> {
    loop {
        match conn.next_frame(deadline).await? {
            None => return Ok(()),
            Some((OP_CLOSE, _, _)) => return Err(ConnError::Closed),
            Some((OP_TEXT, s, e)) => {
                let p = conn.payload(s, e);
                if contains(p, b"\"pusher:ping\"") {
                    conn.send_frame(OP_TEXT, PUSHER_PONG).await?;
                } else {
                    on_text(p);
                }
            }
            Some(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Churn

async fn churn_loop(ctx: Rc<Ctx>) {
    let every = Duration::from_secs_f64(1.0 / ctx.cfg.opts.churn);
    let t0 = Instant::now();
    let mut j: u64 = 0;
    while !ctx.stopped() {
        let due = t0 + every.mul_f64(j as f64);
        if due > Instant::now() {
            monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
        }
        monoio::spawn(churn_conn(ctx.clone(), j));
        j += 1;
    }
}

async fn churn_conn(ctx: Rc<Ctx>, j: u64) {
    let channel = format!("{}soak-churn-{}", ctx.cfg.prefix, j % 16);
    let mut conn = match ctx.connect(j as usize, None).await {
        Ok((c, _)) => c,
        Err(e) => {
            ctx.c.churn_failed.fetch_add(1, Relaxed);
            return ctx.error(format!("churn_{}", e.label()));
        }
    };
    if let Err(e) = ctx.subscribe(&mut conn, &channel, "", None).await {
        ctx.c.churn_failed.fetch_add(1, Relaxed);
        return ctx.error(format!("churn_subscribe_{}", e.label()));
    }
    ctx.c.churn_opened.fetch_add(1, Relaxed);
    ctx.c.live.fetch_add(1, Relaxed);
    let hold = ctx.cfg.opts.churn_hold * (0.5 + frac(j));
    let deadline = Instant::now() + Duration::from_secs_f64(hold);
    let res = idle_read(&mut conn, deadline, |_| {}).await;
    ctx.c.live.fetch_sub(1, Relaxed);
    ctx.c.churn_closed.fetch_add(1, Relaxed);
    if let Err(e) = res {
        if !ctx.stopped() {
            ctx.error(format!("churn_disconnect_{}", e.label()));
        }
        return;
    }
    match j % 4 {
        0 => {
            // Close handshake: 1000, then wait (briefly) for the server's Close.
            let _ = conn.send_frame(OP_CLOSE, &1000u16.to_be_bytes()).await;
            let until = Instant::now() + Duration::from_secs(1);
            while let Ok(Some((op, _, _))) = conn.next_frame(until).await {
                if op == OP_CLOSE {
                    break;
                }
            }
        }
        1 => {
            let unsub = format!(
                r#"{{"event":"pusher:unsubscribe","data":{{"channel":"{}"}}}}"#,
                json_escape(&channel)
            );
            let _ = conn.send_frame(OP_TEXT, unsub.as_bytes()).await;
        }
        2 => {}                                   // FIN on drop
        _ => net::set_linger_zero(conn.raw_fd()), // RST on drop
    }
}

// ---------------------------------------------------------------------------
// Slow readers

enum CutSeen {
    /// Close frame or `pusher:error` with code 4100.
    Code4100,
    /// Reset or EOF, no 4100 frame read.
    NoFrame,
    /// Caught up with the channel: the server did not cut (yet).
    NotCut,
}

/// Reads at full speed until the server's verdict shows.
async fn drain_slow(ctx: &Ctx, conn: &mut WsConn) -> CutSeen {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.next_frame(deadline).await {
            Ok(None) => return CutSeen::NotCut,
            Err(_) => return CutSeen::NoFrame,
            Ok(Some((OP_CLOSE, s, e))) => {
                return if close_code(conn.payload(s, e)) == Some(4100) {
                    CutSeen::Code4100
                } else {
                    CutSeen::NoFrame
                };
            }
            Ok(Some((OP_TEXT, s, e))) => {
                let p = conn.payload(s, e);
                if pusher_error_code(p) == Some(4100) {
                    return CutSeen::Code4100;
                }
                if let Some(t) = find_t(p) {
                    // Fresh delivery: the backlog is gone and no cut came.
                    if ns_since(ctx.cfg.start).saturating_sub(t) < 100_000_000 {
                        return CutSeen::NotCut;
                    }
                }
            }
            Ok(Some(_)) => {}
        }
    }
}

/// One slow reader: stall cycles (never read again; probe with `pusher:ping`
/// writes and `TCP_INFO` until the server closes the socket) alternate with
/// resume cycles (stall until shortly after the cut-off time learned from
/// the last stall cycle, then read everything: the close frame 4100 should
/// be there, if the server sends it within its grace).
async fn slow_reader(ctx: Rc<Ctx>, i: usize) {
    let channel = format!("{}soak-slow", ctx.cfg.prefix);
    let grace = ctx.cfg.slow_grace;
    let max_stall = ctx.cfg.opts.slow_max_stall;
    // Resume time: the last stall cycle's estimate plus a correction that
    // the resume cycles' outcomes move by 1 s.
    let mut learned: Option<f64> = None;
    let mut adjust = 0.0f64;
    let mut cycle: u64 = 0;
    while !ctx.stopped() {
        cycle += 1;
        let mut conn = match ctx.connect(1_000_000 + i, ctx.cfg.opts.slow_rcvbuf).await {
            Ok((c, _)) => c,
            Err(e) => {
                ctx.error(format!("slow_{}", e.label()));
                sleep_secs(1.0).await;
                continue;
            }
        };
        if let Err(e) = ctx.subscribe(&mut conn, &channel, "", None).await {
            ctx.error(format!("slow_subscribe_{}", e.label()));
            sleep_secs(1.0).await;
            continue;
        }
        ctx.c.slow_connected.fetch_add(1, Relaxed);
        ctx.c.live.fetch_add(1, Relaxed);
        let t0 = Instant::now();
        let fd = conn.raw_fd();
        let resume_at = if cycle.is_multiple_of(2) {
            learned.map(|l| (l + adjust).max(0.2))
        } else {
            None
        };
        let outcome = match resume_at {
            Some(at) => {
                // Resume cycle: stall, then read it all.
                while t0.elapsed().as_secs_f64() < at && !ctx.stopped() {
                    sleep_secs(0.05).await;
                }
                let seen = drain_slow(&ctx, &mut conn).await;
                match seen {
                    CutSeen::NotCut => adjust += 1.0,
                    CutSeen::NoFrame if at > 0.2 => adjust -= 1.0,
                    _ => {}
                }
                seen
            }
            None => {
                // Stall cycle: probe by writing; the server's close shows as
                // a failed write or a TCP state other than ESTABLISHED.
                let mut cut = false;
                while !ctx.stopped() && t0.elapsed().as_secs_f64() < max_stall {
                    sleep_secs(0.1).await;
                    if conn.send_frame(OP_TEXT, PUSHER_PING).await.is_err()
                        || net::tcp_state(fd) != Some(1)
                    {
                        cut = true;
                        break;
                    }
                }
                if cut {
                    let secs = t0.elapsed().as_secs_f64();
                    if let Ok(mut h) = ctx.time_to_cut.lock() {
                        h.saturating_record((secs * 1000.0) as u64);
                    }
                    // Resume next time shortly after the cut-off itself.
                    learned = Some((secs - grace + (grace / 3.0).min(1.0)).max(0.2));
                    drain_slow(&ctx, &mut conn).await
                } else {
                    CutSeen::NotCut
                }
            }
        };
        ctx.c.live.fetch_sub(1, Relaxed);
        if ctx.stopped() {
            break;
        }
        match outcome {
            CutSeen::Code4100 => ctx.c.slow_cut_4100.fetch_add(1, Relaxed),
            CutSeen::NoFrame => ctx.c.slow_cut_no_frame.fetch_add(1, Relaxed),
            CutSeen::NotCut => ctx.c.slow_not_cut.fetch_add(1, Relaxed),
        };
        drop(conn);
        sleep_secs(0.5).await;
    }
}

// ---------------------------------------------------------------------------
// Flooders

async fn flooder(ctx: Rc<Ctx>, i: usize) {
    let channel = format!("private-{}soak-flood", ctx.cfg.prefix);
    let o = &ctx.cfg.opts;
    let every = Duration::from_secs_f64(o.flood_every);
    while !ctx.stopped() {
        let (mut conn, sid) = match ctx.connect(2_000_000 + i, None).await {
            Ok(x) => x,
            Err(e) => {
                ctx.error(format!("flood_{}", e.label()));
                sleep_secs(1.0).await;
                continue;
            }
        };
        let auth = sign_channel(&ctx.cfg.key, &ctx.cfg.secret, &sid, &channel, None);
        if let Err(e) = ctx.subscribe(&mut conn, &channel, &auth, None).await {
            ctx.error(format!("flood_subscribe_{}", e.label()));
            sleep_secs(1.0).await;
            continue;
        }
        ctx.c.live.fetch_add(1, Relaxed);
        let ev = format!(
            r#"{{"event":"client-flood","channel":"{}","data":{{"from":{i}}}}}"#,
            json_escape(&channel)
        );
        let mut burst: Vec<u8> = Vec::new();
        let why: String = loop {
            burst.clear();
            for b in 0..o.flood_burst {
                match b % 3 {
                    0 => conn.encode_into(&mut burst, OP_PING, b"flood"),
                    1 => conn.encode_into(&mut burst, OP_TEXT, PUSHER_PING),
                    _ => conn.encode_into(&mut burst, OP_TEXT, ev.as_bytes()),
                }
            }
            let (res, b) = conn.send_raw(std::mem::take(&mut burst)).await;
            burst = b;
            if let Err(e) = res {
                break e.label();
            }
            ctx.c.flood_frames.fetch_add(o.flood_burst as u64, Relaxed);
            let deadline = Instant::now() + every;
            let r = loop {
                if ctx.stopped() {
                    break Ok(());
                }
                let f = match conn.next_frame(deadline).await {
                    Ok(None) => break Ok(()),
                    Ok(Some(f)) => f,
                    Err(e) => break Err(e.label()),
                };
                match f {
                    (OP_PONG, _, _) => {
                        ctx.c.flood_pongs.fetch_add(1, Relaxed);
                    }
                    (OP_CLOSE, s, e) => {
                        let code = close_code(conn.payload(s, e)).unwrap_or(0);
                        break Err(format!("close_{code}"));
                    }
                    (OP_TEXT, s, e) => {
                        let p = conn.payload(s, e);
                        if contains(p, b"\"pusher:pong\"") {
                            ctx.c.flood_pongs.fetch_add(1, Relaxed);
                        } else if contains(p, b"\"client-flood\"") {
                            ctx.c.flood_client_events.fetch_add(1, Relaxed);
                        } else if let Some(code) = pusher_error_code(p) {
                            if code == 4301 {
                                ctx.c.flood_rate_limited.fetch_add(1, Relaxed);
                            } else {
                                ctx.error(format!("flood_pusher_error_{code}"));
                            }
                        } else if contains(p, b"\"pusher:ping\"")
                            && let Err(e) = conn.send_frame(OP_TEXT, PUSHER_PONG).await
                        {
                            break Err(e.label());
                        }
                    }
                    _ => {}
                }
            };
            if let Err(e) = r {
                break e;
            }
            if ctx.stopped() {
                break String::new();
            }
        };
        ctx.c.live.fetch_sub(1, Relaxed);
        if ctx.stopped() {
            break;
        }
        ctx.c.flood_disconnects.fetch_add(1, Relaxed);
        ctx.error(format!("flood_disconnect_{why}"));
        sleep_secs(1.0).await;
    }
}

// ---------------------------------------------------------------------------
// Presence

async fn presence_member(ctx: Rc<Ctx>, i: usize) {
    let channel = format!("presence-{}soak", ctx.cfg.prefix);
    let data = format!(r#"{{"user_id":"u{i}","user_info":{{"n":{i}}}}}"#);
    let hold = ctx.cfg.opts.presence_hold;
    let mut cycle: u64 = 0;
    // Spread the first joins.
    sleep_secs(hold * frac(i as u64)).await;
    while !ctx.stopped() {
        cycle += 1;
        let (mut conn, sid) = match ctx.connect(3_000_000 + i, None).await {
            Ok(x) => x,
            Err(e) => {
                ctx.error(format!("presence_{}", e.label()));
                sleep_secs(1.0).await;
                continue;
            }
        };
        let auth = sign_channel(&ctx.cfg.key, &ctx.cfg.secret, &sid, &channel, Some(&data));
        if let Err(e) = ctx.subscribe(&mut conn, &channel, &auth, Some(&data)).await {
            ctx.error(format!("presence_subscribe_{}", e.label()));
            sleep_secs(1.0).await;
            continue;
        }
        ctx.c.presence_joins.fetch_add(1, Relaxed);
        ctx.c.live.fetch_add(1, Relaxed);
        let seed = (i as u64) << 32 | cycle;
        let deadline = Instant::now() + Duration::from_secs_f64(hold * (0.5 + frac(seed)));
        let c = ctx.c.clone();
        let res = idle_read(&mut conn, deadline, |p| {
            if contains(p, b"pusher_internal:member_") {
                c.presence_member_events.fetch_add(1, Relaxed);
            }
        })
        .await;
        ctx.c.live.fetch_sub(1, Relaxed);
        if let Err(e) = res {
            if !ctx.stopped() {
                ctx.error(format!("presence_disconnect_{}", e.label()));
            }
            continue;
        }
        if cycle.is_multiple_of(2) {
            let unsub = format!(
                r#"{{"event":"pusher:unsubscribe","data":{{"channel":"{}"}}}}"#,
                json_escape(&channel)
            );
            let _ = conn.send_frame(OP_TEXT, unsub.as_bytes()).await;
            // Stay connected a moment after leaving the channel.
            let _ = idle_read(
                &mut conn,
                Instant::now() + Duration::from_millis(200),
                |_| {},
            )
            .await;
        }
        ctx.c.presence_leaves.fetch_add(1, Relaxed);
        drop(conn);
        sleep_secs(0.2 * frac(seed + 1)).await;
    }
}
