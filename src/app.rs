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
    connections: AtomicU64,
}

impl App {
    /// Reserves a connection slot; false when the app is at its quota (close 4004).
    pub fn try_add_connection(&self) -> bool {
        let max = self.config.max_connections;
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
                connections: AtomicU64::new(0),
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
