//! Subscriber pool: one monoio runtime per thread, connections divided among
//! threads (connection i runs on thread i % T and subscribes to channel
//! i % K). Each thread keeps its own latency histograms; the controller
//! (main thread) talks to threads through std mpsc commands polled every few
//! milliseconds and reads per-thread atomic counters.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::{Hist, Notify, build_runtime, merge, new_hist, ns_since, pin_thread};
use crate::ws::{ConnError, Recv, Target, WsConn};

/// Per-thread counters, read by the controller. Cache-line aligned so
/// threads never share a line.
#[repr(align(128))]
#[derive(Default)]
pub struct Counters {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub delivered: AtomicU64,
    pub disconnected: AtomicU64,
    pub pongs: AtomicU64,
}

/// Receive-side context shared by all connections of one thread.
pub struct RecvCtx {
    pub start: Instant,
    pub hist: RefCell<Hist>,
    pub counters: Arc<Counters>,
}

impl Recv for RecvCtx {
    #[inline]
    fn now_ns(&self) -> u64 {
        ns_since(self.start)
    }
    #[inline]
    fn delivery(&self, t_ns: u64, now_ns: u64) {
        self.hist
            .borrow_mut()
            .saturating_record(now_ns.saturating_sub(t_ns) / 1000);
    }
    #[inline]
    fn add_delivered(&self, n: u64) {
        self.counters.delivered.fetch_add(n, Relaxed);
    }
    fn add_pong(&self) {
        self.counters.pongs.fetch_add(1, Relaxed);
    }
}

pub struct PoolCfg {
    pub target: Target,
    pub total: usize,
    pub channels: usize,
    pub channel_prefix: String,
    pub threads: usize,
    /// Total new connections per second over all threads.
    pub rate: Option<f64>,
    /// Handshakes in flight over all threads.
    pub inflight: usize,
    pub hs_timeout: Duration,
    pub read_buf: usize,
    pub pin: Vec<usize>,
    /// Shared clock origin (publish timestamps are ns since this).
    pub start: Instant,
}

enum Cmd {
    TakeHist(mpsc::Sender<Hist>),
    Stop,
}

#[derive(Default)]
pub struct Totals {
    pub ok: u64,
    pub failed: u64,
    pub delivered: u64,
    pub disconnected: u64,
    pub pongs: u64,
}

pub struct PoolResult {
    pub handshake: Hist,
    pub errors: BTreeMap<String, u64>,
    /// ns since start of the first connect attempt / last successful subscribe.
    pub first_connect_ns: u64,
    pub last_subscribed_ns: u64,
}

struct WorkerResult {
    handshake: Hist,
    errors: BTreeMap<String, u64>,
    first_connect_ns: u64,
    last_subscribed_ns: u64,
}

pub struct Pool {
    handles: Vec<JoinHandle<WorkerResult>>,
    cmds: Vec<mpsc::Sender<Cmd>>,
    counters: Vec<Arc<Counters>>,
    /// Live subscriber count per channel (for exact expected deliveries).
    pub subs: Arc<Vec<AtomicU32>>,
    pub total: usize,
}

struct WorkerCtx {
    cfg: Arc<PoolCfg>,
    recv: RecvCtx,
    subs: Arc<Vec<AtomicU32>>,
    handshake: RefCell<Hist>,
    errors: RefCell<BTreeMap<String, u64>>,
    inflight: Cell<usize>,
    slot_free: Notify,
    first_connect_ns: Cell<u64>,
    last_subscribed_ns: Cell<u64>,
}

impl WorkerCtx {
    fn count_error(&self, label: String) {
        *self.errors.borrow_mut().entry(label).or_insert(0) += 1;
    }
}

impl Pool {
    pub fn spawn(cfg: PoolCfg) -> std::io::Result<Pool> {
        let cfg = Arc::new(cfg);
        let subs: Arc<Vec<AtomicU32>> =
            Arc::new((0..cfg.channels).map(|_| AtomicU32::new(0)).collect());
        let mut handles = Vec::new();
        let mut cmds = Vec::new();
        let mut counters = Vec::new();
        for t in 0..cfg.threads {
            let (tx, rx) = mpsc::channel();
            let c = Arc::new(Counters::default());
            let (cfg2, c2, subs2) = (cfg.clone(), c.clone(), subs.clone());
            let h = std::thread::Builder::new()
                .name(format!("lg-sub-{t}"))
                .spawn(move || worker_thread(t, cfg2, c2, subs2, rx))?;
            handles.push(h);
            cmds.push(tx);
            counters.push(c);
        }
        Ok(Pool {
            handles,
            cmds,
            counters,
            subs,
            total: cfg.total,
        })
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            t.ok += c.ok.load(Relaxed);
            t.failed += c.failed.load(Relaxed);
            t.delivered += c.delivered.load(Relaxed);
            t.disconnected += c.disconnected.load(Relaxed);
            t.pongs += c.pongs.load(Relaxed);
        }
        t
    }

    /// Takes (and resets) every thread's delivery-latency histogram, merged.
    pub fn take_hist(&self) -> Hist {
        let mut merged = new_hist();
        let mut rxs = Vec::new();
        for c in &self.cmds {
            let (tx, rx) = mpsc::channel();
            if c.send(Cmd::TakeHist(tx)).is_ok() {
                rxs.push(rx);
            }
        }
        for rx in rxs {
            if let Ok(h) = rx.recv_timeout(Duration::from_secs(5)) {
                merge(&mut merged, &h);
            }
        }
        merged
    }

    /// Blocks until every connection attempt finished or `deadline` passed.
    /// `tick` is called about every 50 ms (for progress lines).
    pub fn wait_connected(&self, deadline: Instant, mut tick: impl FnMut(&Totals)) -> bool {
        loop {
            let t = self.totals();
            if (t.ok + t.failed) as usize >= self.total {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tick(&t);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops all threads (dropping their connections) and merges results.
    pub fn stop(self) -> PoolResult {
        for c in &self.cmds {
            let _ = c.send(Cmd::Stop);
        }
        let mut r = PoolResult {
            handshake: new_hist(),
            errors: BTreeMap::new(),
            first_connect_ns: u64::MAX,
            last_subscribed_ns: 0,
        };
        for h in self.handles {
            if let Ok(w) = h.join() {
                merge(&mut r.handshake, &w.handshake);
                for (k, v) in w.errors {
                    *r.errors.entry(k).or_insert(0) += v;
                }
                r.first_connect_ns = r.first_connect_ns.min(w.first_connect_ns);
                r.last_subscribed_ns = r.last_subscribed_ns.max(w.last_subscribed_ns);
            }
        }
        if r.first_connect_ns == u64::MAX {
            r.first_connect_ns = 0;
        }
        r
    }
}

fn worker_thread(
    t: usize,
    cfg: Arc<PoolCfg>,
    counters: Arc<Counters>,
    subs: Arc<Vec<AtomicU32>>,
    rx: mpsc::Receiver<Cmd>,
) -> WorkerResult {
    pin_thread(&cfg.pin, t);
    let mut rt = match build_runtime(4096) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay-loadgen: thread {t}: cannot build runtime: {e}");
            let mine = (t..cfg.total).step_by(cfg.threads).count() as u64;
            counters.failed.fetch_add(mine, Relaxed);
            let mut errors = BTreeMap::new();
            errors.insert("runtime_build".to_string(), mine);
            return WorkerResult {
                handshake: new_hist(),
                errors,
                first_connect_ns: u64::MAX,
                last_subscribed_ns: 0,
            };
        }
    };
    rt.block_on(worker_main(t, cfg, counters, subs, rx))
}

async fn worker_main(
    t: usize,
    cfg: Arc<PoolCfg>,
    counters: Arc<Counters>,
    subs: Arc<Vec<AtomicU32>>,
    rx: mpsc::Receiver<Cmd>,
) -> WorkerResult {
    crate::util::note_driver();
    let ctx = Rc::new(WorkerCtx {
        recv: RecvCtx {
            start: cfg.start,
            hist: RefCell::new(new_hist()),
            counters,
        },
        cfg,
        subs,
        handshake: RefCell::new(new_hist()),
        errors: RefCell::new(BTreeMap::new()),
        inflight: Cell::new(0),
        slot_free: Notify::default(),
        first_connect_ns: Cell::new(u64::MAX),
        last_subscribed_ns: Cell::new(0),
    });
    monoio::spawn(launcher(ctx.clone(), t));
    loop {
        match rx.try_recv() {
            Ok(Cmd::TakeHist(tx)) => {
                let h = std::mem::replace(&mut *ctx.recv.hist.borrow_mut(), new_hist());
                let _ = tx.send(h);
            }
            Ok(Cmd::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    WorkerResult {
        handshake: std::mem::replace(&mut *ctx.handshake.borrow_mut(), new_hist()),
        errors: std::mem::take(&mut *ctx.errors.borrow_mut()),
        first_connect_ns: ctx.first_connect_ns.get(),
        last_subscribed_ns: ctx.last_subscribed_ns.get(),
    }
}

/// Starts this thread's connections: rate-limited and with a bounded number
/// of handshakes in flight.
async fn launcher(ctx: Rc<WorkerCtx>, t: usize) {
    let cfg = ctx.cfg.clone();
    let limit = (cfg.inflight / cfg.threads).max(1);
    let rate = cfg.rate.map(|r| r / cfg.threads as f64);
    let t0 = Instant::now();
    let mut k: u64 = 0;
    let mut i = t;
    while i < cfg.total {
        if let Some(r) = rate {
            let due = t0 + Duration::from_secs_f64(k as f64 / r);
            if due > Instant::now() {
                monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
            }
        }
        while ctx.inflight.get() >= limit {
            ctx.slot_free.notified().await;
        }
        ctx.inflight.set(ctx.inflight.get() + 1);
        monoio::spawn(conn_task(ctx.clone(), i));
        i += cfg.threads;
        k += 1;
    }
}

async fn conn_task(ctx: Rc<WorkerCtx>, i: usize) {
    let cfg = &ctx.cfg;
    let ch = i % cfg.channels;
    let name = format!("{}{}", cfg.channel_prefix, ch);
    let t0 = Instant::now();
    let now_ns = ns_since(cfg.start);
    if now_ns < ctx.first_connect_ns.get() {
        ctx.first_connect_ns.set(now_ns);
    }
    let r = monoio::time::timeout(
        cfg.hs_timeout,
        WsConn::open(&cfg.target, i, cfg.total, &name, cfg.read_buf),
    )
    .await;
    ctx.inflight.set(ctx.inflight.get() - 1);
    ctx.slot_free.notify();
    let mut conn = match r {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            ctx.count_error(e.label());
            ctx.recv.counters.failed.fetch_add(1, Relaxed);
            return;
        }
        Err(_) => {
            ctx.count_error(ConnError::Timeout.label());
            ctx.recv.counters.failed.fetch_add(1, Relaxed);
            return;
        }
    };
    drop(name);
    ctx.handshake
        .borrow_mut()
        .saturating_record(t0.elapsed().as_micros() as u64);
    ctx.subs[ch].fetch_add(1, Relaxed);
    ctx.recv.counters.ok.fetch_add(1, Relaxed);
    ctx.last_subscribed_ns.set(ns_since(cfg.start));
    let why = conn.hold(&ctx.recv).await;
    ctx.subs[ch].fetch_sub(1, Relaxed);
    ctx.recv.counters.disconnected.fetch_add(1, Relaxed);
    ctx.count_error(format!("disconnect_{}", why.label()));
}
