//! What every core can see: configuration, apps, every core's inbox, and a few process-wide counters.
//!
//! Read-only after start except the atomics. Nothing here is on the per-delivery path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::app::AppRegistry;
use crate::config::Config;
use crate::server::inbox::InboxSender;

pub struct Shared {
    pub config: Config,
    pub apps: AppRegistry,
    pub inboxes: Vec<InboxSender>,
    pub started: Instant,
    /// Open WebSocket connections, all apps, all cores (server capacity, /stats).
    connections: AtomicU64,
    pub shutting_down: AtomicBool,
}

impl Shared {
    pub fn new(config: Config, inboxes: Vec<InboxSender>) -> Self {
        let apps = AppRegistry::new(&config.apps);
        Shared {
            config,
            apps,
            inboxes,
            started: Instant::now(),
            connections: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Reserves a server-wide connection slot; false when at capacity (close 4100).
    pub fn try_add_connection(&self) -> bool {
        let max = self.config.limits.max_connections;
        let prev = self.connections.fetch_add(1, Ordering::AcqRel);
        if max != 0 && prev >= max {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn remove_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::Acquire)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}
