//! Starting and stopping the server: N pinned core threads, each with one monoio runtime, its own
//! SO_REUSEPORT listener on the shared port, its inbox and its periodic scan; the accept loop hands each
//! connection to `http_conn` (which upgrades WebSockets to `ws_conn`); plus graceful drain.

pub mod http_conn;
pub mod listener;
pub mod prometheus;
pub mod tls;
pub mod transport;
pub mod ws_conn;

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::app::{AppIdx, ReloadSummary};
use crate::channels::facts::home_core;
use crate::channels::history::{EventId, NewEvent};
use crate::channels::publication::{Numbered, Publication, Source};
use crate::cluster::{Cluster, Delivery, RemotePublish};
use crate::config::{CORE_STACK_BYTES, Config};
use crate::metrics::Counter;
use crate::protocol::codes::close;
use crate::runtime::core::Core;
use crate::runtime::counts::CountMsg;
use crate::runtime::facts::user_home_core;
use crate::runtime::history::{ClusterWindow, HistoryMsg};
use crate::runtime::inbox::{InboxReceiver, inbox};
use crate::runtime::liveness::SCAN_INTERVAL;
use crate::runtime::message::CoreMsg;
use crate::runtime::occupancy::OccupancyMsg;
use crate::runtime::presence::PresenceMsg;
use crate::runtime::shared::Shared;
use crate::runtime::users::UserMsg;
use crate::server::listener::{bind_reuseport, claim_port};
use crate::server::tls::TlsCell;
use crate::webhooks::{DeliveryReport, Webhooks};

pub struct Server {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served (None: turned off).
    pub metrics_addr: Option<SocketAddr>,
    pub driver: &'static str,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    webhooks: Webhooks,
    /// The certificate every core's accept loop reads, when TLS is on.
    tls: Option<Arc<TlsCell>>,
}

#[derive(Debug)]
pub enum StartError {
    /// The port is taken, by another process or another relay.
    AddressInUse(SocketAddr),
    Bind(SocketAddr, io::Error),
    Thread(io::Error),
    /// A core could not build its runtime or register its listener.
    Core(String),
    /// The TLS certificate or key cannot be used (the message names the setting).
    Tls(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::AddressInUse(a) => write!(
                f,
                "cannot listen on {a}: address already in use (is another server running?)"
            ),
            StartError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            StartError::Thread(e) => write!(f, "cannot start worker thread: {e}"),
            StartError::Core(e) => write!(f, "cannot start a core: {e}"),
            StartError::Tls(e) => write!(f, "cannot serve TLS: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Which I/O driver monoio picks on this machine (io_uring unless missing or forced off).
pub fn driver_name() -> &'static str {
    if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll"
    }
}

impl Server {
    pub fn start(config: Config) -> Result<Server, StartError> {
        crate::log::set_debug(config.debug);
        crate::log::set_json(config.ops.log_format == crate::config::LogFormat::Json);
        let tls = match &config.ops.tls {
            Some(t) => Some(Arc::new(TlsCell::load(t).map_err(StartError::Tls)?)),
            None => None,
        };
        let addr = claim_port(SocketAddr::new(config.host, config.port))?;
        let workers = config.workers;
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = inbox(config.limits.core_inbox_capacity);
            senders.push(tx);
            receivers.push(rx);
        }
        let shared = Arc::new(Shared::new(config, senders));
        let webhooks = start_webhooks(&shared)?;
        start_cluster(&shared)?;
        let metrics_addr = start_metrics(&shared)?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);

        // Bind every listener before serving, so a failure is reported at start and not half-way.
        let mut listeners = Vec::with_capacity(workers);
        for _ in 0..workers {
            // monoio needs a runtime only to register the socket; we bind as std and convert on the core thread.
            let std = bind_reuseport(addr).map_err(|e| StartError::Bind(addr, e))?;
            listeners.push(std);
        }

        let mut threads = Vec::with_capacity(workers);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        for (id, (rx, listener)) in receivers.into_iter().zip(listeners).enumerate() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let tls = tls.clone();
            let t = std::thread::Builder::new()
                .name(format!("relay-core-{id}"))
                .stack_size(CORE_STACK_BYTES)
                .spawn(move || run_core(id, id % cpus, shared, rx, listener, tls, ready))
                .map_err(StartError::Thread)?;
            threads.push(t);
        }
        drop(ready_tx);
        // Every core owns the facts homed on it: a core that cannot start fails the start, not quietly.
        for _ in 0..workers {
            let failure = match ready_rx.recv() {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => "a core exited during start".to_string(),
            };
            shared.shutting_down.store(true, Ordering::Release);
            for inbox in &shared.inboxes {
                inbox.wake();
            }
            for t in threads {
                let _ = t.join();
            }
            return Err(StartError::Core(failure));
        }
        Ok(Server {
            addr,
            metrics_addr,
            driver: driver_name(),
            shared,
            threads,
            webhooks,
            tls,
        })
    }

    /// Re-reads the TLS certificate and key (on SIGHUP): new connections get the new certificate, open ones keep
    /// theirs. On an error the current certificate stays and the error names the setting. Nothing to do without
    /// TLS.
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.tls {
            Some(cell) => cell.reload(),
            None => Ok(()),
        }
    }

    /// Serves the apps of a reloaded configuration (SIGHUP): every core switches to the new registry, and closes
    /// the connections of removed apps (4001) and disabled ones (4003). Returns what changed.
    pub fn reload_apps(&self, apps: &[crate::config::AppConfig]) -> ReloadSummary {
        let (next, summary) = self.shared.registry().reloaded(apps);
        if summary.is_empty() {
            return summary;
        }
        let next = Arc::new(next);
        self.shared.set_registry(next.clone());
        for inbox in &self.shared.inboxes {
            // The cleanup lane never refuses.
            let _ = inbox.send(CoreMsg::Apps(next.clone()));
        }
        summary
    }

    /// The configuration the server started with (a reload changes only the apps).
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Graceful drain: stop accepting, close every WebSocket with 4200 (clients reconnect elsewhere), wait for
    /// the cores to finish.
    pub fn shutdown(self) {
        let began = self.shared.drain_began();
        self.shared.shutting_down.store(true, Ordering::Release);
        for inbox in &self.shared.inboxes {
            // Cores also check the flag after every batch, so a wake is enough if the message cannot be queued.
            let _ = inbox.send(CoreMsg::Shutdown);
            inbox.wake();
        }
        for t in self.threads {
            let _ = t.join();
        }
        // The drain's vacated channels and removed members are queued by now; what is held goes out at once,
        // within what is left of the grace period.
        let end = began + self.shared.config.ops.shutdown_grace;
        let left = end.saturating_duration_since(Instant::now());
        self.webhooks.shutdown(left.min(WEBHOOK_FLUSH_GRACE));
    }
}

/// Serves `GET /metrics` unless `RELAY_METRICS_PORT` is 0.
fn start_metrics(shared: &Arc<Shared>) -> Result<Option<SocketAddr>, StartError> {
    let m = &shared.config.ops.metrics;
    if m.port == 0 {
        return Ok(None);
    }
    let addr = SocketAddr::new(m.host, m.port);
    match prometheus::start(shared.clone(), addr) {
        Ok(a) => Ok(Some(a)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(StartError::AddressInUse(addr)),
        Err(e) => Err(StartError::Bind(addr, e)),
    }
}

/// How long a drain waits at most for webhooks still queued to be delivered (and never past the grace period).
pub const WEBHOOK_FLUSH_GRACE: Duration = Duration::from_secs(5);

/// Joins the cluster when `RELAY_REDIS_URL` is set: the bridge hands each publication of another node to its
/// channel's home core here, which publishes it to this node's subscribers.
fn start_cluster(shared: &Arc<Shared>) -> Result<(), StartError> {
    let Some(config) = &shared.config.cluster else {
        return Ok(());
    };
    let to_cores = shared.clone();
    let node_id = config.node_id.clone();
    let deliver = Box::new(move |d: Delivery| route_delivery(&to_cores, &node_id, d));
    // The apps now, not at start: the totals count apps a reload added.
    let served = shared.clone();
    let app_ids =
        Box::new(move || served.with_registry(|r| r.iter().map(|a| a.config.id.clone()).collect()));
    let counted = shared.clone();
    let local_connections = Box::new(move || counted.connections.count());
    let cluster =
        Cluster::start(config, app_ids, local_connections, deliver).map_err(StartError::Thread)?;
    crate::info!(
        "cluster: node {} joining through {}",
        config.node_id,
        redact(&config.redis_url)
    );
    let _ = shared.cluster.set(cluster);
    Ok(())
}

/// Hands what the bridge received to the core that owns it: a user's facts to the user's home core, a channel's
/// to the channel's home core, a terminate to every core. A full inbox is counted with the bridge's losses (a
/// core's counters are its own to write).
fn route_delivery(s: &Shared, node_id: &str, d: Delivery) {
    let Some(app) = s.with_registry(|r| r.by_id(d.app_id()).map(|a| a.idx)) else {
        return;
    };
    let cores = s.cores();
    let (home, msg) = match d {
        Delivery::Terminate { user_id, .. } => {
            let user_id: Arc<str> = Arc::from(user_id);
            for inbox in &s.inboxes {
                let user_id = user_id.clone();
                let _ = inbox.send(CoreMsg::Users(UserMsg::Terminate { app, user_id }));
            }
            return;
        }
        Delivery::UserOnline {
            user_id, online, ..
        } => (
            user_home_core(app, &user_id, cores),
            CoreMsg::Users(UserMsg::Remote {
                app,
                user_id: user_id.into(),
                online,
            }),
        ),
        Delivery::UserGone { user_id, .. } => (
            user_home_core(app, &user_id, cores),
            CoreMsg::Users(UserMsg::Gone {
                app,
                user_id: user_id.into(),
            }),
        ),
        Delivery::Publish(r) => (
            home_core(app, &r.channel, cores),
            CoreMsg::Remote(Box::new(remote_publication(app, &r))),
        ),
        Delivery::Numbered(n) => {
            let mut p = remote_publication(app, &n.publish);
            p.numbered = Some(Numbered {
                id: EventId {
                    epoch: n.epoch,
                    seq: n.seq,
                },
                published_at_ms: n.published_at_ms,
                own: n.publish.origin == node_id,
            });
            (
                home_core(app, &n.publish.channel, cores),
                CoreMsg::Remote(Box::new(p)),
            )
        }
        Delivery::Window(w) => {
            let events = w
                .events
                .into_iter()
                .map(|n| {
                    let id = EventId {
                        epoch: n.epoch,
                        seq: n.seq,
                    };
                    let p = n.publish;
                    let event = NewEvent {
                        name_token: p.name_token.into(),
                        data_token: p.data_token.into(),
                        user_id: p.user_id.map(Into::into),
                        published_at_ms: n.published_at_ms,
                    };
                    (id, event)
                })
                .collect();
            let window = ClusterWindow {
                app,
                channel: w.channel.as_str().into(),
                token: w.token,
                epoch: w.epoch,
                last_seq: w.last_seq,
                events,
            };
            (
                home_core(app, &w.channel, cores),
                CoreMsg::History(HistoryMsg::Window(Box::new(window))),
            )
        }
        Delivery::Member(m) => (
            home_core(app, &m.channel, cores),
            CoreMsg::Presence(PresenceMsg::Remote {
                app,
                channel: m.channel.into(),
                user_id: m.user_id.into(),
                user_info: m.user_info.map(Into::into),
            }),
        ),
        Delivery::MemberGone {
            channel, user_id, ..
        } => (
            home_core(app, &channel, cores),
            CoreMsg::Presence(PresenceMsg::Gone {
                app,
                channel: channel.into(),
                user_id: user_id.into(),
            }),
        ),
        Delivery::Count {
            channel,
            total,
            report,
            ..
        } => (
            home_core(app, &channel, cores),
            CoreMsg::Counts(CountMsg::Total {
                app,
                channel: channel.into(),
                total,
                report,
            }),
        ),
        Delivery::Occupancy {
            channel, occupied, ..
        } => (
            home_core(app, &channel, cores),
            CoreMsg::Occupancy(OccupancyMsg::Cluster {
                app,
                channel: channel.into(),
                occupied,
            }),
        ),
    };
    if s.inboxes[home].send(msg).is_err()
        && let Some(c) = s.cluster.get()
    {
        c.stats
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Another node's publication (or this node's, numbered by Redis) as a publication of this node's app.
fn remote_publication(app: AppIdx, r: &RemotePublish) -> Publication {
    let source = if r.client {
        Source::Client
    } else {
        Source::Rest
    };
    let mut p = Publication::new(
        app,
        source,
        &[&r.channel],
        &r.name_token,
        &r.data_token,
        r.user_id.as_deref(),
        r.except,
    );
    p.remote = true;
    p
}

/// A Redis URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Starts the webhook sender; each attempt's report goes to the event log on one core per app.
fn start_webhooks(shared: &Arc<Shared>) -> Result<Webhooks, StartError> {
    let reports = shared.clone();
    let report = Box::new(move |app: AppIdx, r: DeliveryReport| {
        if reports.config.limits.event_log_max == 0 {
            return;
        }
        let core = app as usize % reports.cores();
        let _ = reports.inboxes[core].offer(CoreMsg::WebhookReport(app, r));
    });
    Webhooks::start(&shared.config, shared.webhooks.clone(), report).map_err(StartError::Thread)
}

/// Lets every other ready task of the core run before this one goes on.
///
/// monoio puts a task that wakes itself while running at the *front* of the run queue, so the obvious
/// `wake_by_ref(); Pending` would run it again at once. The wake comes instead from a tiny task queued at the back:
/// everything ready before it runs first.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        let waker = cx.waker().clone();
        monoio::spawn(async move { waker.wake() });
        std::task::Poll::Pending
    })
    .await
}

fn run_core(
    id: usize,
    cpu: usize,
    shared: Arc<Shared>,
    rx: InboxReceiver<CoreMsg>,
    listener: StdListener,
    tls: Option<Arc<TlsCell>>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
        crate::warn!("core {id}: cannot pin to cpu {cpu}: {e:?}");
    }
    let runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build();
    let mut runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("core {id}: cannot build runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("core {id}: cannot register listener: {e}")));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let core = Core::new_rc(id, shared);
        let rx = Rc::new(rx);
        core.attach_inbox(rx.clone());
        let accept = monoio::spawn(accept_loop(core.clone(), listener, tls));
        let scan = monoio::spawn(scan_loop(core.clone()));
        let retire = monoio::spawn(retire_loop(core.clone()));
        let mut batch = Vec::new();
        // Set by this core's drain once its clients are gone: the serve loop (which kept delivering meanwhile)
        // ends.
        let stop = Rc::new(AtomicBool::new(false));
        let mut drain_task = None;
        loop {
            // Woken by a message, by the drain's start (the Shutdown message may not fit a full inbox, the wake
            // does) and by its end.
            let wake_for = || {
                stop.load(Ordering::Acquire)
                    || (drain_task.is_none() && core.shared.is_shutting_down())
            };
            rx.recv_batch(&mut batch, wake_for).await;
            core.handle_batch(batch.drain(..));
            if core.shared.is_shutting_down() && drain_task.is_none() {
                drain_task = Some(monoio::spawn(drain(core.clone(), stop.clone())));
            }
            if stop.load(Ordering::Acquire) {
                break;
            }
        }
        // What other cores queued before they stopped is delivered (to whoever is still connected).
        rx.drain_into(&mut batch);
        core.handle_batch(batch.drain(..));
        drop(accept);
        drop(scan);
        drop(retire);
    });
}

/// Connections a core accepts before it lets its other tasks run: a reconnect storm is admitted at the connect
/// rate without starving delivery (the epoll driver would otherwise accept from a full backlog without pause).
pub const MAX_ACCEPTS_PER_TURN: usize = 32;

/// With TLS, each connection takes the current certificate here, once, and is served by its own compiled copy of
/// the connection code (`tls::serve`); a plain connection's code is untouched by TLS.
async fn accept_loop(core: Rc<Core>, listener: TcpListener, tls: Option<Arc<TlsCell>>) {
    let mut accepted = 0;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                match &tls {
                    None => monoio::spawn(http_conn::serve(core.clone(), stream)),
                    Some(cell) => monoio::spawn(tls::serve(core.clone(), stream, cell.current())),
                };
                accepted += 1;
                if accepted == MAX_ACCEPTS_PER_TURN {
                    accepted = 0;
                    yield_now().await;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; counted and summarised, not one line each.
                crate::debug!("core {}: accept failed: {e}", core.id);
                core.metrics().inc(Counter::ConnectionErrors);
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connection teardowns a core does before it lets its other tasks run: dropping thousands of connections at once
/// costs the other clients at most one batch of latency per turn.
pub const MAX_TEARDOWNS_PER_TURN: usize = 32;

async fn retire_loop(core: Rc<Core>) {
    let mut batch = Vec::with_capacity(MAX_TEARDOWNS_PER_TURN);
    loop {
        std::future::poll_fn(|cx| core.poll_retiring(cx, &mut batch, MAX_TEARDOWNS_PER_TURN)).await;
        for session in batch.drain(..) {
            ws_conn::finish(&core, &session);
        }
        yield_now().await;
    }
}

async fn scan_loop(core: Rc<Core>) {
    let mut tick = monoio::time::interval(SCAN_INTERVAL);
    loop {
        tick.tick().await;
        core.scan(Instant::now());
    }
}

/// A SIGTERM drain on one core. Clients are closed with 4200 (pusher-js reconnects at once, to another node
/// behind the load balancer) at random moments spread over the first `DRAIN_SPREAD` of the grace period, so they
/// do not all reconnect in the same instant; the serve loop goes on delivering meanwhile. Then the core waits for
/// the close handshakes until `DRAIN_TAIL` before the end of the grace period, and for every other core (a
/// listener that closed early would reset the connections hashed to it while other cores still drain).
async fn drain(core: Rc<Core>, stop: Rc<AtomicBool>) {
    let grace = core.shared.config.ops.shutdown_grace;
    let began = core.shared.drain_began();
    let deadline = began + grace.mul_f64(1.0 - DRAIN_TAIL);
    let spread = grace.mul_f64(DRAIN_SPREAD);
    let mut rng = crate::socket_id::random_seed() | 1;
    let mut due: Vec<(Duration, Rc<crate::protocol::session::Session>)> = core
        .all_sessions()
        .into_iter()
        .map(|s| {
            // xorshift64: uniform offsets are the jitter.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (spread.mul_f64((rng >> 11) as f64 / (1u64 << 53) as f64), s)
        })
        .collect();
    due.sort_by_key(|(at, _)| *at);
    for (at, session) in due {
        let when = began + at;
        let now = Instant::now();
        if when > now {
            monoio::time::sleep(when - now).await;
        }
        session.close(close::RECONNECT, "Server is shutting down", None);
    }
    // Anyone who connected during the spread was refused at the handshake; close what is left all the same.
    core.close_all(close::RECONNECT, "Server is shutting down");
    while core.session_count() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    core.shared.cores_draining.fetch_sub(1, Ordering::AcqRel);
    while core.shared.cores_draining.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    core.shared.inboxes[core.id].wake();
}

/// Share of the grace period over which a drain spreads its closes.
pub const DRAIN_SPREAD: f64 = 0.7;
/// Share of the grace period kept at its end for the process to finish (webhooks flush, threads join).
pub const DRAIN_TAIL: f64 = 0.1;
