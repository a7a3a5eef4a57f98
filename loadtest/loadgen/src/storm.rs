//! `storm`: reconnect storms next to bystanders.
//!
//! N bystander connections subscribe to one channel and receive open-loop
//! REST publishes (publish-to-delivery latency). M storm connections each
//! subscribe to their own channel (or one of `--storm-channels`). K times, all
//! M storm sockets are dropped at once (no WebSocket close: `shutdown`, or a
//! RST with `--storm-rst`) and reconnected + resubscribed, spread evenly over
//! `--storm-secs`. The report splits the bystanders' delivery latency into
//! storm windows and calm time, per storm and overall.
//!
//! A delivery belongs to storm k when its flight (publish stamp to read)
//! overlaps storm k's window: from the drop to the moment the controller saw
//! all M connections re-established (or gave up).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::args::{Common, StormOpts};
use crate::fanout::pub_summary;
use crate::idle::{connect_deadline, errors_obj, target};
use crate::net;
use crate::publish::{self, PubCfg};
use crate::util::{
    CpuMark, Hist, Notify, Obj, Progress, build_runtime, hist_obj, merge, new_hist, ns_since,
    own_cpu_obj, p99, pin_thread, read_rss_kib, server_cpu_obj,
};
use crate::ws::{ConnError, Recv, Target, WsConn};

const UNSET: u64 = u64::MAX;

/// Storm windows in ns since the start instant; `UNSET` = not started (start)
/// or still open (end). Written by the controller, read by the bystanders.
pub struct Windows {
    start: Vec<AtomicU64>,
    end: Vec<AtomicU64>,
}

impl Windows {
    pub fn new(k: usize) -> Self {
        Windows {
            start: (0..k).map(|_| AtomicU64::new(UNSET)).collect(),
            end: (0..k).map(|_| AtomicU64::new(UNSET)).collect(),
        }
    }

    pub fn start_ns(&self, k: usize) -> u64 {
        self.start[k].load(Acquire)
    }

    /// The storm whose window overlaps the flight `t_pub..=now` (storms start
    /// in order, so the scan stops at the first one not started yet).
    pub fn classify(&self, t_pub: u64, now: u64) -> Option<usize> {
        for k in 0..self.start.len() {
            let s = self.start[k].load(Acquire);
            if s == UNSET {
                break;
            }
            if now >= s && t_pub <= self.end[k].load(Acquire) {
                return Some(k);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// Bystanders: one runtime thread, N connections on one channel.

#[derive(Default)]
struct ByCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    delivered: AtomicU64,
    disconnected: AtomicU64,
    pongs: AtomicU64,
}

struct ByRecv {
    start: Instant,
    windows: Arc<Windows>,
    overall: RefCell<Hist>,
    calm: RefCell<Hist>,
    storms: RefCell<Vec<Hist>>,
    /// Per storm: max latency (µs) by publish time after the drop, 100 ms buckets.
    timeline: RefCell<Vec<[u64; TIMELINE_BUCKETS]>>,
    counters: Arc<ByCounters>,
}

const TIMELINE_BUCKETS: usize = 50;
const BUCKET_NS: u64 = 100_000_000;

impl Recv for ByRecv {
    fn now_ns(&self) -> u64 {
        ns_since(self.start)
    }
    fn delivery(&self, t_ns: u64, now_ns: u64) {
        let us = now_ns.saturating_sub(t_ns) / 1000;
        self.overall.borrow_mut().saturating_record(us);
        match self.windows.classify(t_ns, now_ns) {
            Some(k) => {
                self.storms.borrow_mut()[k].saturating_record(us);
                let b = (t_ns.saturating_sub(self.windows.start_ns(k)) / BUCKET_NS) as usize;
                let slot = &mut self.timeline.borrow_mut()[k][b.min(TIMELINE_BUCKETS - 1)];
                *slot = (*slot).max(us);
            }
            None => self.calm.borrow_mut().saturating_record(us),
        }
    }
    fn add_delivered(&self, n: u64) {
        self.counters.delivered.fetch_add(n, Relaxed);
    }
    fn add_pong(&self) {
        self.counters.pongs.fetch_add(1, Relaxed);
    }
}

struct ByResult {
    overall: Hist,
    calm: Hist,
    storms: Vec<Hist>,
    timeline: Vec<[u64; TIMELINE_BUCKETS]>,
    handshake: Hist,
    errors: BTreeMap<String, u64>,
}

struct Bystanders {
    handle: JoinHandle<ByResult>,
    stop: Arc<AtomicBool>,
    counters: Arc<ByCounters>,
    /// Live bystanders (one channel), read by the publisher at ack time.
    subs: Arc<Vec<AtomicU32>>,
}

struct ByCfg {
    target: Target,
    n: usize,
    channel: String,
    inflight: usize,
    hs_timeout: Duration,
    read_buf: usize,
    start: Instant,
    windows: Arc<Windows>,
    storms: usize,
    pin: Vec<usize>,
}

fn spawn_bystanders(cfg: ByCfg) -> std::io::Result<Bystanders> {
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(ByCounters::default());
    let subs = Arc::new(vec![AtomicU32::new(0)]);
    let (stop2, c2, s2) = (stop.clone(), counters.clone(), subs.clone());
    let handle = std::thread::Builder::new()
        .name("lg-bystander".into())
        .spawn(move || {
            pin_thread(&cfg.pin, 0);
            let recv = Rc::new(ByRecv {
                start: cfg.start,
                windows: cfg.windows.clone(),
                overall: RefCell::new(new_hist()),
                calm: RefCell::new(new_hist()),
                storms: RefCell::new((0..cfg.storms).map(|_| new_hist()).collect()),
                timeline: RefCell::new(vec![[0; TIMELINE_BUCKETS]; cfg.storms]),
                counters: c2.clone(),
            });
            let hs = Rc::new(RefCell::new(new_hist()));
            let errors = Rc::new(RefCell::new(BTreeMap::new()));
            match build_runtime(1024) {
                Ok(mut rt) => rt.block_on(bystanders_main(
                    Rc::new(cfg),
                    recv.clone(),
                    s2,
                    stop2,
                    hs.clone(),
                    errors.clone(),
                )),
                Err(e) => {
                    eprintln!("relay-loadgen: bystander thread: cannot build runtime: {e}");
                    c2.failed.fetch_add(cfg.n as u64, Relaxed);
                    errors
                        .borrow_mut()
                        .insert("runtime_build".to_string(), cfg.n as u64);
                }
            }
            ByResult {
                overall: recv.overall.replace(new_hist()),
                calm: recv.calm.replace(new_hist()),
                storms: recv.storms.take(),
                timeline: recv.timeline.take(),
                handshake: hs.replace(new_hist()),
                errors: errors.take(),
            }
        })?;
    Ok(Bystanders {
        handle,
        stop,
        counters,
        subs,
    })
}

async fn bystanders_main(
    cfg: Rc<ByCfg>,
    recv: Rc<ByRecv>,
    subs: Arc<Vec<AtomicU32>>,
    stop: Arc<AtomicBool>,
    hs: Rc<RefCell<Hist>>,
    errors: Rc<RefCell<BTreeMap<String, u64>>>,
) {
    crate::util::note_driver();
    let inflight = Rc::new(Cell::new(0usize));
    let free = Rc::new(Notify::default());
    for i in 0..cfg.n {
        while inflight.get() >= cfg.inflight {
            free.notified().await;
        }
        inflight.set(inflight.get() + 1);
        let (cfg, recv, subs, hs, errors, inflight, free) = (
            cfg.clone(),
            recv.clone(),
            subs.clone(),
            hs.clone(),
            errors.clone(),
            inflight.clone(),
            free.clone(),
        );
        monoio::spawn(async move {
            let t0 = Instant::now();
            let r = monoio::time::timeout(
                cfg.hs_timeout,
                WsConn::open(&cfg.target, i, cfg.n, &cfg.channel, cfg.read_buf),
            )
            .await;
            inflight.set(inflight.get() - 1);
            free.notify();
            let mut conn = match r {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return fail(&recv.counters.failed, &errors, e.label()),
                Err(_) => return fail(&recv.counters.failed, &errors, "timeout".into()),
            };
            hs.borrow_mut()
                .saturating_record(t0.elapsed().as_micros() as u64);
            subs[0].fetch_add(1, Relaxed);
            recv.counters.ok.fetch_add(1, Relaxed);
            let why = conn.hold(&*recv).await;
            subs[0].fetch_sub(1, Relaxed);
            recv.counters.disconnected.fetch_add(1, Relaxed);
            count(&errors, format!("disconnect_{}", why.label()));
        });
    }
    while !stop.load(Relaxed) {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn count(errors: &RefCell<BTreeMap<String, u64>>, label: String) {
    *errors.borrow_mut().entry(label).or_insert(0) += 1;
}

fn fail(failed: &AtomicU64, errors: &RefCell<BTreeMap<String, u64>>, label: String) {
    failed.fetch_add(1, Relaxed);
    count(errors, label);
}

// ---------------------------------------------------------------------------
// Storm connections: T runtime threads; slot j of thread t is connection
// i = t + j*T. Phase 0 is the initial connect, phase k+1 is storm k.

/// Counters of one phase, summed over threads by the controller.
#[derive(Default)]
struct Phase {
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    first_ns: AtomicU64,
    last_ok_ns: AtomicU64,
}

struct StormShared {
    phases: Vec<Phase>,
    live: AtomicU64,
    unexpected: AtomicU64,
    pongs: AtomicU64,
}

struct StormCfg {
    target: Target,
    m: usize,
    threads: usize,
    channel_prefix: String,
    storm_channels: usize,
    storm_secs: f64,
    rst: bool,
    init_inflight: usize,
    storm_inflight: usize,
    hs_timeout: Duration,
    read_buf: usize,
    start: Instant,
    pin: Vec<usize>,
}

enum Cmd {
    Storm(usize),
    Stop,
}

struct Slot {
    fd: Cell<RawFd>,
    phase: Cell<usize>,
}

struct StormThread {
    cfg: Arc<StormCfg>,
    shared: Arc<StormShared>,
    t: usize,
    slots: Vec<Slot>,
    hs: RefCell<Vec<Hist>>,
    errors: RefCell<Vec<BTreeMap<String, u64>>>,
    inflight: Cell<usize>,
    slot_free: Notify,
}

/// Storm connections only answer pings; they get no deliveries.
struct PongOnly(Arc<StormShared>, Instant);

impl Recv for PongOnly {
    fn now_ns(&self) -> u64 {
        ns_since(self.1)
    }
    fn delivery(&self, _t_ns: u64, _now_ns: u64) {}
    fn add_delivered(&self, _n: u64) {}
    fn add_pong(&self) {
        self.0.pongs.fetch_add(1, Relaxed);
    }
}

struct StormThreadResult {
    hs: Vec<Hist>,
    errors: Vec<BTreeMap<String, u64>>,
}

struct StormPool {
    handles: Vec<JoinHandle<StormThreadResult>>,
    cmds: Vec<mpsc::Sender<Cmd>>,
    shared: Arc<StormShared>,
}

impl StormPool {
    fn spawn(cfg: StormCfg, phases: usize) -> std::io::Result<StormPool> {
        let cfg = Arc::new(cfg);
        let shared = Arc::new(StormShared {
            phases: (0..phases)
                .map(|_| Phase {
                    first_ns: AtomicU64::new(UNSET),
                    ..Phase::default()
                })
                .collect(),
            live: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
        });
        let mut handles = Vec::new();
        let mut cmds = Vec::new();
        for t in 0..cfg.threads {
            let (tx, rx) = mpsc::channel();
            let (cfg2, sh2) = (cfg.clone(), shared.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("lg-storm-{t}"))
                    .spawn(move || storm_thread(t, cfg2, sh2, rx, phases))?,
            );
            cmds.push(tx);
        }
        Ok(StormPool {
            handles,
            cmds,
            shared,
        })
    }

    fn phase(&self, p: usize) -> (u64, u64) {
        let ph = &self.shared.phases[p];
        (ph.ok.load(Relaxed), ph.failed.load(Relaxed))
    }

    fn storm(&self, p: usize) {
        for c in &self.cmds {
            let _ = c.send(Cmd::Storm(p));
        }
    }

    fn stop(self) -> Vec<StormThreadResult> {
        for c in &self.cmds {
            let _ = c.send(Cmd::Stop);
        }
        self.handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect()
    }
}

fn storm_thread(
    t: usize,
    cfg: Arc<StormCfg>,
    shared: Arc<StormShared>,
    rx: mpsc::Receiver<Cmd>,
    phases: usize,
) -> StormThreadResult {
    pin_thread(&cfg.pin, t + 1);
    let n = (t..cfg.m).step_by(cfg.threads).count();
    let ctx = Rc::new(StormThread {
        slots: (0..n)
            .map(|_| Slot {
                fd: Cell::new(-1),
                phase: Cell::new(0),
            })
            .collect(),
        hs: RefCell::new((0..phases).map(|_| new_hist()).collect()),
        errors: RefCell::new(vec![BTreeMap::new(); phases]),
        inflight: Cell::new(0),
        slot_free: Notify::default(),
        cfg,
        shared,
        t,
    });
    match build_runtime(4096) {
        Ok(mut rt) => rt.block_on(storm_main(ctx.clone(), rx)),
        Err(e) => {
            eprintln!("relay-loadgen: storm thread {t}: cannot build runtime: {e}");
            ctx.shared.phases[0].failed.fetch_add(n as u64, Relaxed);
            ctx.errors.borrow_mut()[0].insert("runtime_build".into(), n as u64);
        }
    }
    StormThreadResult {
        hs: ctx.hs.take(),
        errors: ctx.errors.take(),
    }
}

async fn storm_main(ctx: Rc<StormThread>, rx: mpsc::Receiver<Cmd>) {
    crate::util::note_driver();
    let limit = (ctx.cfg.init_inflight / ctx.cfg.threads).max(1);
    monoio::spawn(launch(ctx.clone(), 0, Instant::now(), None, limit));
    loop {
        match rx.try_recv() {
            Ok(Cmd::Storm(p)) => start_storm(&ctx, p),
            Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

/// Drops every open storm connection of this thread at once, then starts
/// the reconnects of phase `p`, spread over `--storm-secs`.
fn start_storm(ctx: &Rc<StormThread>, p: usize) {
    let t_drop = Instant::now();
    let mut dropped = 0u64;
    for slot in &ctx.slots {
        slot.phase.set(p);
        let fd = slot.fd.replace(-1);
        if fd >= 0 {
            if ctx.cfg.rst {
                // SHUT_RD wakes the reader without sending a FIN; the close
                // that follows sends a RST (SO_LINGER 0).
                net::set_linger_zero(fd);
                net::shutdown_read(fd);
            } else {
                net::shutdown_both(fd);
            }
            dropped += 1;
        }
    }
    ctx.shared.phases[p].dropped.fetch_add(dropped, Relaxed);
    let limit = match ctx.cfg.storm_inflight {
        0 => usize::MAX,
        n => (n / ctx.cfg.threads).max(1),
    };
    let spread = Duration::from_secs_f64(ctx.cfg.storm_secs);
    monoio::spawn(launch(ctx.clone(), p, t_drop, Some(spread), limit));
}

/// Starts the connections of phase `p` on this thread: evenly over `spread`
/// after `t0` (storms) or as fast as `limit` allows (initial connect).
async fn launch(
    ctx: Rc<StormThread>,
    p: usize,
    t0: Instant,
    spread: Option<Duration>,
    limit: usize,
) {
    let n = ctx.slots.len();
    for j in 0..n {
        if ctx.slots[j].phase.get() != p {
            return; // a newer storm took over
        }
        if let Some(sp) = spread {
            let due = t0 + sp.mul_f64(j as f64 / n as f64);
            if due > Instant::now() {
                monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
            }
        }
        while ctx.inflight.get() >= limit {
            // Bounded wait: two launchers may overlap when a storm runs late.
            let _ = monoio::time::timeout(Duration::from_millis(5), ctx.slot_free.notified()).await;
        }
        ctx.inflight.set(ctx.inflight.get() + 1);
        monoio::spawn(storm_conn(ctx.clone(), j, p));
    }
}

async fn storm_conn(ctx: Rc<StormThread>, j: usize, p: usize) {
    let cfg = ctx.cfg.clone();
    let i = ctx.t + j * cfg.threads;
    let ph = &ctx.shared.phases[p];
    ph.first_ns.fetch_min(ns_since(cfg.start), Relaxed);
    let channel = format!("{}storm-{}", cfg.channel_prefix, i % cfg.storm_channels);
    // A different source address per phase once p*M passes --conns-per-ip,
    // so TIME_WAIT from earlier phases never exhausts the ports.
    let phases = ctx.shared.phases.len();
    let t0 = Instant::now();
    let r = monoio::time::timeout(
        cfg.hs_timeout,
        WsConn::open(
            &cfg.target,
            p * cfg.m + i,
            phases * cfg.m,
            &channel,
            cfg.read_buf,
        ),
    )
    .await;
    ctx.inflight.set(ctx.inflight.get() - 1);
    ctx.slot_free.notify();
    let mut conn = match r {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return phase_fail(&ctx, p, e.label()),
        Err(_) => return phase_fail(&ctx, p, ConnError::Timeout.label()),
    };
    ph.ok.fetch_add(1, Relaxed);
    ph.last_ok_ns.fetch_max(ns_since(cfg.start), Relaxed);
    ctx.hs.borrow_mut()[p].saturating_record(t0.elapsed().as_micros() as u64);
    let slot = &ctx.slots[j];
    if slot.phase.get() != p {
        // Established after the next storm began: that storm drops it too.
        *ctx.errors.borrow_mut()[p]
            .entry("superseded".into())
            .or_insert(0) += 1;
        return;
    }
    let fd = conn.raw_fd();
    slot.fd.set(fd);
    ctx.shared.live.fetch_add(1, Relaxed);
    let why = conn.hold(&PongOnly(ctx.shared.clone(), cfg.start)).await;
    ctx.shared.live.fetch_sub(1, Relaxed);
    if slot.fd.get() == fd {
        // Not dropped by a storm: the server (or the network) ended it.
        slot.fd.set(-1);
        ctx.shared.unexpected.fetch_add(1, Relaxed);
        *ctx.errors.borrow_mut()[p]
            .entry(format!("disconnect_{}", why.label()))
            .or_insert(0) += 1;
    }
}

fn phase_fail(ctx: &StormThread, p: usize, label: String) {
    ctx.shared.phases[p].failed.fetch_add(1, Relaxed);
    *ctx.errors.borrow_mut()[p].entry(label).or_insert(0) += 1;
}

/// The storm's timeline up to the end of its window (plus one bucket).
fn timeline(t: &[u64; TIMELINE_BUCKETS], r: &StormRec) -> Vec<u64> {
    let n = ((r.end_ns - r.start_ns) / BUCKET_NS) as usize + 2;
    t[..n.min(TIMELINE_BUCKETS)].to_vec()
}

/// Storm threads' results merged per phase.
struct StormResults {
    shared: Arc<StormShared>,
    hs: Vec<Hist>,
    errors: Vec<BTreeMap<String, u64>>,
}

fn pool_results(pool: StormPool, phases: usize) -> StormResults {
    let shared = pool.shared.clone();
    let mut hs: Vec<Hist> = (0..phases).map(|_| new_hist()).collect();
    let mut errors = vec![BTreeMap::new(); phases];
    for r in pool.stop() {
        for (p, h) in r.hs.iter().enumerate() {
            merge(&mut hs[p], h);
        }
        for (p, e) in r.errors.into_iter().enumerate() {
            for (k, v) in e {
                *errors[p].entry(k).or_insert(0) += v;
            }
        }
    }
    StormResults { shared, hs, errors }
}

// ---------------------------------------------------------------------------
// Controller

struct StormRec {
    at_secs: f64,
    start_ns: u64,
    end_ns: u64,
    complete: bool,
    cpu0: CpuMark,
    cpu1: CpuMark,
    rss_before: Option<u64>,
    rss_peak: Option<u64>,
    rss_after: Option<u64>,
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn lat_obj(h: &Hist) -> Obj {
    hist_obj(h, true, false)
}

pub fn run(c: &Common, o: &StormOpts) -> Result<String, String> {
    let start = Instant::now();
    let mut prog = Progress::new(start, c.quiet);
    let rss_before = c.server_pid.and_then(read_rss_kib);
    let windows = Arc::new(Windows::new(o.storms));
    let by_channel = format!("{}bystanders", c.channel_prefix);

    // 1. Bystanders.
    let by = spawn_bystanders(ByCfg {
        target: target(c),
        n: o.bystanders,
        channel: by_channel.clone(),
        inflight: c.inflight,
        hs_timeout: Duration::from_secs_f64(c.hs_timeout),
        read_buf: c.read_buf.unwrap_or(4096),
        start,
        windows: windows.clone(),
        storms: o.storms,
        pin: c.pin.clone(),
    })
    .map_err(|e| format!("cannot start bystander thread: {e}"))?;
    let deadline = connect_deadline(c, o.bystanders, None);
    loop {
        let (ok, failed) = (
            by.counters.ok.load(Relaxed),
            by.counters.failed.load(Relaxed),
        );
        if (ok + failed) as usize >= o.bystanders || Instant::now() >= deadline {
            prog.line("storm", &format!("bystanders ok={ok} failed={failed}"));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    // 2. Storm connections, initial connect (phase 0).
    let phases = o.storms + 1;
    let pool = match StormPool::spawn(
        StormCfg {
            target: target(c),
            m: o.connections,
            threads: c.threads,
            channel_prefix: c.channel_prefix.clone(),
            storm_channels: o.storm_channels,
            storm_secs: o.storm_secs,
            rst: o.storm_rst,
            init_inflight: c.inflight,
            storm_inflight: o.storm_inflight,
            hs_timeout: Duration::from_secs_f64(c.hs_timeout),
            read_buf: c.read_buf.unwrap_or(1024),
            start,
            pin: c.pin.clone(),
        },
        phases,
    ) {
        Ok(p) => p,
        Err(e) => {
            by.stop.store(true, Relaxed);
            let _ = by.handle.join();
            return Err(format!("cannot start storm threads: {e}"));
        }
    };
    let m = o.connections as u64;
    let deadline = connect_deadline(c, o.connections, None);
    let init_complete = loop {
        let (ok, failed) = pool.phase(0);
        if ok + failed >= m {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        if prog.due() {
            prog.line(
                "storm",
                &format!("connecting ok={ok} failed={failed} of {m}"),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (init_ok, init_failed) = pool.phase(0);
    prog.line(
        "storm",
        &format!("storm connections ok={init_ok} failed={init_failed}"),
    );
    let rss_connected = c.server_pid.and_then(read_rss_kib);

    // 3. Publisher over the whole storm schedule.
    let period = o.storm_secs + o.pause;
    let duration = Duration::from_secs_f64(o.warmup + o.storms as f64 * period);
    let drain = Duration::from_secs_f64(c.drain);
    let m0 = CpuMark::now(c.server_pid);
    let ph = match publish::start(PubCfg {
        addr: SocketAddrV4::new(c.host, c.port),
        tls: c.tls.clone(),
        app_id: c.app_id.clone(),
        key: c.key.clone(),
        secret: c.secret.clone(),
        conns: o.publish.publishers,
        threads: o.publish.pub_threads,
        rate: Some(o.rate),
        duration,
        max_inflight: o.publish.pipeline,
        payload: o.publish.payload,
        channels: vec![by_channel.clone()],
        subs: Some(by.subs.clone()),
        start,
        drain,
        pin: Vec::new(),
    }) {
        Ok(ph) => ph,
        Err(e) => {
            let _ = pool.stop();
            by.stop.store(true, Relaxed);
            let _ = by.handle.join();
            return Err(format!("cannot start publisher threads: {e}"));
        }
    };
    let p0 = Instant::now();
    let mut rss_peak = rss_connected;
    let mut last_rss = Instant::now();
    let mut sample_rss = |peak: &mut Option<u64>| {
        if last_rss.elapsed() >= Duration::from_millis(50) {
            last_rss = Instant::now();
            *peak = max_opt(*peak, c.server_pid.and_then(read_rss_kib));
        }
    };

    // 4. Storms on a fixed schedule.
    let mut recs: Vec<StormRec> = Vec::new();
    for k in 0..o.storms {
        let due = p0 + Duration::from_secs_f64(o.warmup + k as f64 * period);
        while Instant::now() < due {
            std::thread::sleep(Duration::from_millis(2).min(due - Instant::now()));
            sample_rss(&mut rss_peak);
            if prog.due() {
                prog.line(
                    "storm",
                    &format!(
                        "calm: bystander deliveries={} publishes sent={} open storm conns={}",
                        by.counters.delivered.load(Relaxed),
                        ph.progress.sent.load(Relaxed),
                        pool.shared.live.load(Relaxed)
                    ),
                );
            }
        }
        let rss_b = c.server_pid.and_then(read_rss_kib);
        let cpu0 = CpuMark::now(c.server_pid);
        let start_ns = ns_since(start);
        windows.start[k].store(start_ns, Release);
        let p = k + 1;
        pool.storm(p);
        prog.line(
            "storm",
            &format!("storm {}/{}: dropped all, reconnecting", p, o.storms),
        );
        let give_up = if k + 1 < o.storms {
            p0 + Duration::from_secs_f64(o.warmup + (k + 1) as f64 * period)
        } else {
            Instant::now() + Duration::from_secs_f64(o.storm_secs + c.hs_timeout + 2.0)
        };
        let mut peak = rss_b;
        let complete = loop {
            let (ok, failed) = pool.phase(p);
            if ok + failed >= m {
                break true;
            }
            if Instant::now() >= give_up {
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
            sample_rss(&mut peak);
            if prog.due() {
                prog.line(
                    "storm",
                    &format!("storm {p}: reconnected={ok} failed={failed} of {m}"),
                );
            }
        };
        let end_ns = ns_since(start);
        windows.end[k].store(end_ns, Release);
        let cpu1 = CpuMark::now(c.server_pid);
        let rss_a = c.server_pid.and_then(read_rss_kib);
        peak = max_opt(peak, rss_a);
        rss_peak = max_opt(rss_peak, peak);
        let (ok, failed) = pool.phase(p);
        prog.line(
            "storm",
            &format!(
                "storm {p}: reconnected={ok} failed={failed} in {:.3}s{}",
                (end_ns - start_ns) as f64 / 1e9,
                if complete { "" } else { " (incomplete)" }
            ),
        );
        recs.push(StormRec {
            at_secs: due.duration_since(p0).as_secs_f64(),
            start_ns,
            end_ns,
            complete,
            cpu0,
            cpu1,
            rss_before: rss_b,
            rss_peak: peak,
            rss_after: rss_a,
        });
    }

    // 5. Finish publishing and drain.
    let hard = p0 + duration + Duration::from_secs(10);
    while !ph.sending_done() && Instant::now() < hard {
        std::thread::sleep(Duration::from_millis(10));
        sample_rss(&mut rss_peak);
    }
    let drain_end = Instant::now() + drain;
    loop {
        let sent = ph.progress.sent.load(Relaxed);
        let answered = ph.progress.answered.load(Acquire);
        let expected = ph.progress.expected.load(Relaxed);
        let got = by.counters.delivered.load(Relaxed);
        if (answered >= sent && got >= expected) || Instant::now() >= drain_end {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let m1 = CpuMark::now(c.server_pid);
    let rss_end = c.server_pid.and_then(read_rss_kib);
    rss_peak = max_opt(rss_peak, rss_end);
    let received = by.counters.delivered.load(Relaxed);
    let pr = ph.join();
    let storm_res = pool_results(pool, phases);
    let by_counters = by.counters.clone();
    by.stop.store(true, Relaxed);
    let byr = by
        .handle
        .join()
        .map_err(|_| "bystander thread panicked".to_string())?;

    // 6. Report.
    let expected = pr.expected;
    let publishes = pub_summary(&pr);

    let mut storm_all = new_hist();
    let mut per_storm = Vec::new();
    let mut worst_p99 = 0u64;
    let mut reconnect_max: Option<f64> = None;
    let mut connect_failures = 0u64;
    let mut complete_count = 0u64;
    let mut all_ok = true;
    for (k, r) in recs.iter().enumerate() {
        let p = k + 1;
        let shared = &storm_res.shared.phases[p];
        let ok = shared.ok.load(Relaxed);
        let failed = shared.failed.load(Relaxed);
        let first = shared.first_ns.load(Relaxed);
        let last = shared.last_ok_ns.load(Relaxed);
        connect_failures += failed;
        let h = &byr.storms[k];
        merge(&mut storm_all, h);
        let sp99 = p99(h);
        worst_p99 = worst_p99.max(sp99);
        let p99_ok = sp99 < o.p99_us;
        all_ok &= p99_ok;
        let reconnect_secs =
            (r.complete && ok > 0).then(|| last.saturating_sub(r.start_ns) as f64 / 1e9);
        if r.complete {
            complete_count += 1;
        }
        if let Some(s) = reconnect_secs {
            reconnect_max = Some(reconnect_max.map_or(s, |m: f64| m.max(s)));
        }
        let span = if first != UNSET && last > first {
            (last - first) as f64 / 1e9
        } else {
            0.0
        };
        per_storm.push(
            Obj::new()
                .u("storm", p as u64)
                .f("at_secs", r.at_secs)
                .u("dropped", shared.dropped.load(Relaxed))
                .u("reconnected", ok)
                .u("failed", failed)
                .b("complete", r.complete)
                .opt_f("reconnect_secs", reconnect_secs)
                .f(
                    "connect_rate_per_sec",
                    if span > 0.0 { ok as f64 / span } else { 0.0 },
                )
                .o("handshake_us", lat_obj(&storm_res.hs[p]))
                .o("errors", errors_obj(&storm_res.errors[p]))
                .f("window_secs", (r.end_ns - r.start_ns) as f64 / 1e9)
                .o("bystander_latency_us", lat_obj(h))
                .arr_u("bystander_max_us_by_100ms", &timeline(&byr.timeline[k], r))
                .b("p99_ok", p99_ok)
                .opt_o(
                    "server_cpu",
                    server_cpu_obj(&r.cpu0, &r.cpu1, ok, "per_connection"),
                )
                .o("loadgen_cpu", own_cpu_obj(&r.cpu0, &r.cpu1))
                .opt_u("server_rss_before_kib", r.rss_before)
                .opt_u("server_rss_peak_kib", r.rss_peak)
                .opt_u("server_rss_after_kib", r.rss_after),
        );
    }
    let init = &storm_res.shared.phases[0];
    let init_first = init.first_ns.load(Relaxed);
    let init_last = init.last_ok_ns.load(Relaxed);
    let init_secs = if init_first != UNSET && init_last > init_first {
        (init_last - init_first) as f64 / 1e9
    } else {
        0.0
    };
    let window = m1.at.duration_since(m0.at).as_secs_f64();
    let out = Obj::new()
        .s("scenario", "storm")
        .s("target", &format!("{}:{}", c.host, c.port))
        .u("threads", c.threads as u64)
        .s("driver", crate::util::driver_name())
        .u("bystanders", o.bystanders as u64)
        .u("bystanders_ok", by_counters.ok.load(Relaxed))
        .u("bystanders_failed", by_counters.failed.load(Relaxed))
        .s("bystander_channel", &by_channel)
        .u("connections", m)
        .u("storm_channels", o.storm_channels as u64)
        .u("storms", o.storms as u64)
        .f("storm_secs", o.storm_secs)
        .f("pause_secs", o.pause)
        .f("warmup_secs", o.warmup)
        .s("storm_close", if o.storm_rst { "rst" } else { "fin" })
        .u("storm_inflight", o.storm_inflight as u64)
        .f("rate", o.rate)
        .u("payload_bytes", o.publish.payload as u64)
        .u("publishers", o.publish.publishers as u64)
        .o(
            "initial_connect",
            Obj::new()
                .u("ok", init_ok)
                .u("failed", init_failed)
                .b("complete", init_complete)
                .f("secs", init_secs)
                .f(
                    "connect_rate_per_sec",
                    if init_secs > 0.0 {
                        init_ok as f64 / init_secs
                    } else {
                        0.0
                    },
                )
                .o("handshake_us", lat_obj(&storm_res.hs[0]))
                .o("errors", errors_obj(&storm_res.errors[0])),
        )
        .o("publishes", publishes)
        .f("window_secs", window)
        .u("deliveries_expected", expected)
        .u("deliveries_received", received)
        .u("deliveries_lost", expected.saturating_sub(received))
        .u("deliveries_extra", received.saturating_sub(expected))
        .o("latency_us", hist_obj(&byr.overall, true, true))
        .o("latency_calm_us", hist_obj(&byr.calm, true, true))
        .o("latency_storm_us", hist_obj(&storm_all, true, true))
        .u("p99_target_us", o.p99_us)
        .u("storm_p99_max_us", worst_p99)
        .b("storm_p99_ok", all_ok)
        .u("storms_complete", complete_count)
        .opt_f("reconnect_secs_max", reconnect_max)
        .u("connect_failures", connect_failures)
        .arr("per_storm", per_storm)
        .o("bystander_handshake_us", lat_obj(&byr.handshake))
        .o("bystander_errors", errors_obj(&byr.errors))
        .u(
            "bystander_disconnects",
            by_counters.disconnected.load(Relaxed),
        )
        .u(
            "storm_unexpected_disconnects",
            storm_res.shared.unexpected.load(Relaxed),
        )
        .u(
            "pongs_sent",
            storm_res.shared.pongs.load(Relaxed) + by_counters.pongs.load(Relaxed),
        )
        .opt_u("server_rss_before_kib", rss_before)
        .opt_u("server_rss_connected_kib", rss_connected)
        .opt_u("server_rss_peak_kib", rss_peak)
        .opt_u("server_rss_end_kib", rss_end)
        .opt_o(
            "server_cpu",
            server_cpu_obj(&m0, &m1, received, "per_delivery"),
        )
        .o("loadgen_cpu", own_cpu_obj(&m0, &m1));
    Ok(out.finish())
}
