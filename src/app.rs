//! The apps a process serves, looked up by id (REST) or key (WebSocket).
//!
//! A registry is read-only; a reload (SIGHUP) builds the next one from the old ([`AppRegistry::reloaded`]) and
//! every core switches to it through its inbox. An app keeps its index for the life of the process (a removed app
//! stays as a tombstone no lookup finds), so per-core tables indexed by it never move, and what must outlive a
//! reload (live connection count, rate window, counters) sits in [`AppLive`], shared by both registries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{AppConfig, KindSet};
use crate::metrics::AppMetrics;

/// Position of an app in the registry; per-core tables are indexed by it.
pub type AppIdx = u32;

pub struct App {
    pub idx: AppIdx,
    pub config: AppConfig,
    /// Kinds some webhook of the app receives: a core builds a webhook event only when its kind is here.
    pub webhook_kinds: KindSet,
    pub live: Arc<AppLive>,
    /// Removed by a reload: kept so indices stay stable; by_id and by_key never find it.
    pub removed: bool,
}

/// The part of an app that a reload keeps.
pub struct AppLive {
    /// Live connections against `config.max_connections` (close 4004 when full).
    pub connections: ConnectionQuota,
    /// REST events published this second, against `config.rate_limit_max` (429 when over).
    pub publish_rate: RateLimiter,
    /// Deliveries and publishes, per core.
    pub metrics: AppMetrics,
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
    /// Changed by a reload; connections over a lowered cap stay, new ones wait for room.
    max: AtomicU64,
}

impl ConnectionQuota {
    pub fn new(max: u64) -> Self {
        ConnectionQuota {
            count: AtomicU64::new(0),
            max: AtomicU64::new(max),
        }
    }

    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Release);
    }

    /// Reserves a slot; false when at the cap.
    pub fn try_add(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        if max != 0 && prev >= max {
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
    apps: Vec<Arc<App>>,
    cores: usize,
    /// Counts reloads: a core never switches back to an older registry.
    pub generation: u64,
}

/// What a reload changed, by app index.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadSummary {
    pub added: Vec<AppIdx>,
    pub changed: Vec<AppIdx>,
    pub removed: Vec<AppIdx>,
}

impl ReloadSummary {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

fn app(idx: usize, config: &AppConfig, live: Arc<AppLive>, webhook_kinds: KindSet) -> Arc<App> {
    live.connections.set_max(config.max_connections);
    Arc::new(App {
        idx: idx as AppIdx,
        config: config.clone(),
        webhook_kinds,
        live,
        removed: false,
    })
}

fn fresh_live(config: &AppConfig, cores: usize) -> Arc<AppLive> {
    Arc::new(AppLive {
        connections: ConnectionQuota::new(config.max_connections),
        publish_rate: RateLimiter::default(),
        metrics: AppMetrics::new(cores),
    })
}

impl AppRegistry {
    /// `cores`: how many per-core counter blocks each app keeps.
    pub fn new(configs: &[AppConfig], cores: usize) -> Self {
        let apps = configs
            .iter()
            .enumerate()
            .map(|(i, c)| app(i, c, fresh_live(c, cores), c.webhook_kinds()))
            .collect();
        AppRegistry {
            apps,
            cores,
            generation: 0,
        }
    }

    /// The registry after a reload to `configs`, matched by app id: an app that stays keeps its index and live
    /// state (with its new settings), a new one takes the next index, a missing one becomes a tombstone.
    /// Webhooks are the sender's, set up at start: an app keeps the kinds it had, a new one gets none.
    pub fn reloaded(&self, configs: &[AppConfig]) -> (AppRegistry, ReloadSummary) {
        let mut summary = ReloadSummary::default();
        let mut apps: Vec<Arc<App>> = Vec::with_capacity(self.apps.len() + configs.len());
        for old in &self.apps {
            match configs.iter().find(|c| c.id == old.config.id) {
                Some(c) if !old.removed && *c == old.config => apps.push(old.clone()),
                Some(c) => {
                    if old.removed {
                        summary.added.push(old.idx);
                    } else {
                        summary.changed.push(old.idx);
                    }
                    apps.push(app(
                        old.idx as usize,
                        c,
                        old.live.clone(),
                        old.webhook_kinds,
                    ));
                }
                None if old.removed => apps.push(old.clone()),
                None => {
                    summary.removed.push(old.idx);
                    apps.push(Arc::new(App {
                        idx: old.idx,
                        config: old.config.clone(),
                        // No session or request reaches a removed app; kept for a return.
                        webhook_kinds: old.webhook_kinds,
                        live: old.live.clone(),
                        removed: true,
                    }));
                }
            }
        }
        for c in configs {
            if !self.apps.iter().any(|a| a.config.id == c.id) {
                summary.added.push(apps.len() as AppIdx);
                let live = fresh_live(c, self.cores);
                apps.push(app(apps.len(), c, live, KindSet::default()));
            }
        }
        (
            AppRegistry {
                apps,
                cores: self.cores,
                generation: self.generation + 1,
            },
            summary,
        )
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| !a.removed && a.config.id == id)
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| !a.removed && a.config.key == key)
    }

    /// The app at `idx`, removed or not (an index came from this registry or an earlier one).
    pub fn get(&self, idx: AppIdx) -> &Arc<App> {
        &self.apps[idx as usize]
    }

    /// The app at `idx` if this registry has it (an index from a newer registry may be past its end).
    pub fn try_get(&self, idx: AppIdx) -> Option<&Arc<App>> {
        self.apps.get(idx as usize)
    }

    /// Slots, tombstones included: per-core tables are this long.
    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// The apps being served (not the removed ones).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.apps.iter().filter(|a| !a.removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str, key: &str, max: u64) -> AppConfig {
        AppConfig {
            id: id.into(),
            key: key.into(),
            max_connections: max,
            ..AppConfig::default()
        }
    }

    #[test]
    fn a_reload_keeps_indices_and_live_state_and_leaves_tombstones() {
        let r = AppRegistry::new(&[cfg("1", "k1", 0), cfg("2", "k2", 0)], 2);
        assert!(r.get(0).live.connections.try_add());
        let (r2, sum) = r.reloaded(&[cfg("3", "k3", 0), cfg("1", "k1", 5)]);
        assert_eq!(
            sum,
            ReloadSummary {
                added: vec![2],
                changed: vec![0],
                removed: vec![1],
            }
        );
        assert_eq!(r2.len(), 3);
        let one = r2.by_id("1").unwrap();
        assert_eq!((one.idx, one.config.max_connections), (0, 5));
        assert_eq!(one.live.connections.count(), 1, "live count kept");
        assert!(r2.by_key("k2").is_none() && r2.by_id("2").is_none());
        assert!(r2.get(1).removed, "tombstone keeps the index");
        assert_eq!(r2.by_key("k3").unwrap().idx, 2);
        assert_eq!(r2.iter().count(), 2);
        // Unchanged apps are the same object; a removed app that returns takes its old index.
        let (r3, sum) = r2.reloaded(&[cfg("3", "k3", 0), cfg("1", "k1", 5), cfg("2", "k2", 0)]);
        assert_eq!(sum.added, vec![1]);
        assert!(sum.changed.is_empty() && sum.removed.is_empty());
        assert!(Arc::ptr_eq(r3.get(0), r2.get(0)));
        assert_eq!(r3.by_id("2").unwrap().idx, 1);
        assert_eq!(r3.len(), 3);
    }

    #[test]
    fn a_lowered_quota_admits_nothing_until_there_is_room() {
        let q = ConnectionQuota::new(0);
        assert!(q.try_add() && q.try_add());
        q.set_max(1);
        assert!(!q.try_add());
        q.remove();
        assert!(!q.try_add(), "one open, max one");
        q.remove();
        assert!(q.try_add());
    }

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
