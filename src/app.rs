//! The apps a process serves, looked up by id (REST) or key (WebSocket).
//!
//! Built once at start and shared read-only by every core; the only mutable part is each app's live connection
//! count, an atomic checked against its quota at handshake time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{AppConfig, KindSet};

/// Position of an app in the registry; per-core tables are indexed by it.
pub type AppIdx = u32;

pub struct App {
    pub idx: AppIdx,
    pub config: AppConfig,
    /// Live connections against `config.max_connections` (close 4004 when full).
    pub connections: ConnectionQuota,
    /// REST events published this second, against `config.rate_limit_max` (429 when over).
    pub publish_rate: RateLimiter,
    /// Kinds some webhook of the app receives: a core builds a webhook event only when its kind is here.
    pub webhook_kinds: KindSet,
}

/// Events per one-second window, shared by every core: one atomic word holding the window's second and its
/// count, updated by compare-and-swap on the REST path only (never per delivery).
#[derive(Default)]
pub struct RateLimiter {
    /// High 32 bits: the second (since an arbitrary start); low 32: events counted in it.
    state: AtomicU64,
}

impl RateLimiter {
    /// Takes `n` events from the window of second `now_sec` if they fit under `max`; all or nothing.
    pub fn try_take(&self, n: u32, max: u32, now_sec: u32) -> bool {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (sec, count) = ((current >> 32) as u32, current as u32);
            let used = if sec == now_sec { count } else { 0 };
            let Some(next) = used.checked_add(n).filter(|&t| t <= max) else {
                return false;
            };
            let new = (u64::from(now_sec) << 32) | u64::from(next);
            match self.state.compare_exchange_weak(
                current,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }
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
                publish_rate: RateLimiter::default(),
                webhook_kinds: c.webhook_kinds(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_window_is_all_or_nothing_and_resets_each_second() {
        let r = RateLimiter::default();
        assert!(r.try_take(60, 100, 7));
        assert!(
            !r.try_take(41, 100, 7),
            "a batch that does not fit is refused whole"
        );
        assert!(r.try_take(40, 100, 7));
        assert!(!r.try_take(1, 100, 7));
        assert!(r.try_take(100, 100, 8), "a new second");
        assert!(!r.try_take(101, 100, 9), "more than the rate never fits");
    }

    #[test]
    fn cores_racing_for_the_window_never_exceed_it() {
        let r = std::sync::Arc::new(RateLimiter::default());
        let taken: u32 = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| r.try_take(1, 1000, 1)).count() as u32
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(taken, 1000);
    }
}
