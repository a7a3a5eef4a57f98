//! Channel facts that must be counted once across cores: presence rosters, total subscription counts and cache
//! channels' last events. Each channel's facts live on its *home core* (`home_core`), which receives every
//! change through its inbox; nothing here is shared or locked. This is also the seam where a cluster backend
//! later takes the home core's role across nodes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::AppIdx;
use crate::channels::presence::PresenceRoster;

/// The core that owns `(app, channel)`'s facts. FNV-1a: stable, cheap, and spreads channel names well.
pub fn home_core(app: AppIdx, channel: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ app as u64;
    for b in channel.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % cores.max(1) as u64) as usize
}

/// A cache channel's last HTTP-published event (spec §8).
pub struct CachedEvent {
    /// The event frame exactly as subscribers got it, replayed to new subscribers.
    pub frame: Bytes,
    /// The raw JSON string token of `data`, for `GET /channels/{name}?info=cache`.
    pub data_token: Bytes,
    pub expires: Instant,
}

#[derive(Default)]
pub struct Facts {
    /// Subscriptions on every core (maintained only for apps with subscription counting).
    pub subscriptions: u64,
    pub roster: Option<PresenceRoster>,
    pub cache: Option<CachedEvent>,
    /// The last `subscription_count` value broadcast and when (throttling, spec §9).
    pub count_sent: Option<(u64, Instant)>,
}

impl Facts {
    fn is_empty(&self) -> bool {
        self.subscriptions == 0
            && self.roster.as_ref().is_none_or(|r| r.is_empty())
            && self.cache.is_none()
    }
}

/// Facts by app, then by channel name: lookups by `&str` allocate nothing; only a new channel's name is copied.
#[derive(Default)]
pub struct FactsTable {
    apps: HashMap<AppIdx, HashMap<Box<str>, Facts>>,
}

impl FactsTable {
    pub fn get(&self, app: AppIdx, channel: &str) -> Option<&Facts> {
        self.apps.get(&app)?.get(channel)
    }

    pub fn entry(&mut self, app: AppIdx, channel: &str) -> &mut Facts {
        let map = self.apps.entry(app).or_default();
        if !map.contains_key(channel) {
            map.insert(Box::from(channel), Facts::default());
        }
        map.get_mut(channel).expect("inserted above")
    }

    /// Drops the entry if nothing is left in it.
    pub fn tidy(&mut self, app: AppIdx, channel: &str) {
        if let Some(map) = self.apps.get_mut(&app)
            && map.get(channel).is_some_and(Facts::is_empty)
        {
            map.remove(channel);
        }
    }

    pub fn cached(&mut self, app: AppIdx, channel: &str, now: Instant) -> Option<&CachedEvent> {
        let expired = self
            .get(app, channel)?
            .cache
            .as_ref()
            .is_some_and(|c| c.expires <= now);
        if expired {
            if let Some(f) = self.apps.get_mut(&app).and_then(|m| m.get_mut(channel)) {
                f.cache = None;
            }
            self.tidy(app, channel);
            return None;
        }
        self.get(app, channel)?.cache.as_ref()
    }

    pub fn store_cache(
        &mut self,
        app: AppIdx,
        channel: &str,
        frame: Bytes,
        data_token: Bytes,
        ttl: Duration,
    ) {
        self.entry(app, channel).cache = Some(CachedEvent {
            frame,
            data_token,
            expires: Instant::now() + ttl,
        });
    }

    /// Channels whose count changed while throttled and whose throttle window has passed; marks them sent.
    pub fn throttled_due(
        &mut self,
        now: Instant,
        window: Duration,
    ) -> Vec<(AppIdx, Box<str>, u64)> {
        let mut due = Vec::new();
        for (app, map) in self.apps.iter_mut() {
            for (name, f) in map.iter_mut() {
                if let Some((sent, at)) = f.count_sent
                    && sent != f.subscriptions
                    && f.subscriptions > 0
                    && now.duration_since(at) >= window
                {
                    f.count_sent = Some((f.subscriptions, now));
                    due.push((*app, name.clone(), f.subscriptions));
                }
            }
        }
        due
    }

    /// Forgets expired cache entries (run from the core's periodic scan).
    pub fn purge_expired(&mut self, now: Instant) {
        for map in self.apps.values_mut() {
            map.retain(|_, f| {
                if f.cache.as_ref().is_some_and(|c| c.expires <= now) {
                    f.cache = None;
                }
                !f.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_core_is_stable_and_in_range() {
        for n in 1..8 {
            let h = home_core(0, "presence-room", n);
            assert!(h < n);
            assert_eq!(h, home_core(0, "presence-room", n));
        }
        let spread: std::collections::HashSet<_> = (0..100)
            .map(|i| home_core(0, &format!("c{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }

    #[test]
    fn cache_expires() {
        let mut t = FactsTable::default();
        t.store_cache(
            0,
            "cache-x",
            Bytes::from_static(b"f"),
            Bytes::from_static(b"\"d\""),
            Duration::from_millis(0),
        );
        assert!(
            t.cached(0, "cache-x", Instant::now() + Duration::from_millis(1))
                .is_none()
        );
        assert!(t.get(0, "cache-x").is_none(), "empty entries are dropped");
        t.store_cache(
            0,
            "cache-y",
            Bytes::from_static(b"f"),
            Bytes::from_static(b"\"d\""),
            Duration::from_secs(60),
        );
        assert!(t.cached(0, "cache-y", Instant::now()).is_some());
    }
}
