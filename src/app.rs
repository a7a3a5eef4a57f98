//! The apps a process serves, looked up by id (REST) or key (WebSocket).
//!
//! Built once at start and shared read-only by every core; the only mutable part is each app's live connection
//! count, an atomic checked against its quota at handshake time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::AppConfig;

/// Position of an app in the registry; per-core tables are indexed by it.
pub type AppIdx = u32;

pub struct App {
    pub idx: AppIdx,
    pub config: AppConfig,
    /// Live connections against `config.max_connections` (close 4004 when full).
    pub connections: ConnectionQuota,
}

/// A live-connection counter with a cap (0 = unlimited), shared by every core.
pub struct ConnectionQuota {
    count: AtomicU64,
    max: u64,
}

impl ConnectionQuota {
    pub fn new(max: u64) -> Self {
        ConnectionQuota {
            count: AtomicU64::new(0),
            max,
        }
    }

    /// Reserves a slot; false when at the cap.
    pub fn try_add(&self) -> bool {
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        if self.max != 0 && prev >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn remove(&self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

pub struct AppRegistry {
    apps: Vec<App>,
}

impl AppRegistry {
    pub fn new(configs: &[AppConfig]) -> Self {
        let apps = configs
            .iter()
            .enumerate()
            .map(|(i, c)| App {
                idx: i as AppIdx,
                config: c.clone(),
                connections: ConnectionQuota::new(c.max_connections),
            })
            .collect();
        AppRegistry { apps }
    }

    pub fn by_id(&self, id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.config.id == id)
    }

    pub fn by_key(&self, key: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.config.key == key)
    }

    pub fn get(&self, idx: AppIdx) -> &App {
        &self.apps[idx as usize]
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &App> {
        self.apps.iter()
    }
}
