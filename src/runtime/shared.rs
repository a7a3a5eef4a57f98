//! What every core can see: configuration, apps, every core's inbox, the metrics blocks, and a few process-wide
//! flags and quotas.
//!
//! Read-only after start except the atomics. Nothing here is on the per-delivery path.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use crate::app::{AppRegistry, ConnectionQuota};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::inbox::InboxSender;
use crate::runtime::message::CoreMsg;
use crate::webhooks::{HANDOFF_CAP, WebhookQueue};

pub struct Shared {
    /// The configuration at start (a reload changes the apps, in `apps`, not this).
    pub config: Config,
    /// The apps now, for threads off the cores (a core keeps its own copy, switched by `CoreMsg::Apps`).
    apps: RwLock<Arc<AppRegistry>>,
    pub inboxes: Vec<InboxSender<CoreMsg>>,
    pub metrics: Metrics,
    pub started: Instant,
    /// Open WebSocket connections, all apps, all cores (server capacity 4100, /stats).
    pub connections: ConnectionQuota,
    pub shutting_down: AtomicBool,
    /// Cores whose drain has not finished; listeners close when it reaches 0.
    pub cores_draining: AtomicUsize,
    /// When the drain began (set once, by the first to ask after `shutting_down`).
    drain_began: OnceLock<Instant>,
    /// The bridge to the other nodes (set once at start when `RELAY_REDIS_URL` is given).
    pub cluster: OnceLock<Arc<Cluster>>,
    /// Where cores hand webhook events to the sender thread (never waits, drops the oldest when full).
    pub webhooks: Arc<WebhookQueue>,
    /// Dashboard event streams open now, all cores (`RELAY_DASHBOARD_MAX_STREAMS`).
    pub dashboard_streams: AtomicUsize,
}

impl Shared {
    pub fn new(config: Config, inboxes: Vec<InboxSender<CoreMsg>>) -> Self {
        let cores = inboxes.len();
        let apps = RwLock::new(Arc::new(AppRegistry::new(&config.apps, cores)));
        let connections = ConnectionQuota::new(config.limits.max_connections);
        // The queue's slots are allocated up front: a server without webhooks keeps one.
        let slots = if config.has_webhooks() {
            config.webhooks.queue_cap.min(HANDOFF_CAP)
        } else {
            1
        };
        let webhooks = Arc::new(WebhookQueue::new(slots, config.webhooks.queue_max_bytes));
        Shared {
            config,
            apps,
            inboxes,
            metrics: Metrics::new(cores),
            started: Instant::now(),
            connections,
            shutting_down: AtomicBool::new(false),
            cores_draining: AtomicUsize::new(cores),
            drain_began: OnceLock::new(),
            webhooks,
            cluster: OnceLock::new(),
            dashboard_streams: AtomicUsize::new(0),
        }
    }

    /// The apps now (off the cores; a core reads its own copy, `Core::registry`).
    pub fn registry(&self) -> Arc<AppRegistry> {
        self.with_registry(Arc::clone)
    }

    /// Runs `f` on the apps now without cloning the registry's `Arc` (for a lookup per message off the cores).
    pub fn with_registry<T>(&self, f: impl FnOnce(&Arc<AppRegistry>) -> T) -> T {
        match self.apps.read() {
            Ok(r) => f(&r),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Publishes a reloaded registry for threads off the cores (the cores are told through their inboxes).
    pub fn set_registry(&self, registry: Arc<AppRegistry>) {
        match self.apps.write() {
            Ok(mut w) => *w = registry,
            Err(poisoned) => *poisoned.into_inner() = registry,
        }
    }

    /// The moment the drain began: every core spreads its closes from the same start.
    pub fn drain_began(&self) -> Instant {
        *self.drain_began.get_or_init(Instant::now)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn cores(&self) -> usize {
        self.inboxes.len()
    }
}
