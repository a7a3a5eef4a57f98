//! The facts that must be counted once across cores, and the pure rules that change them: presence rosters,
//! total subscription counts (with throttling), cache channels' last events, which cores have a channel
//! (occupied / vacated), and users' online state with their watchers.
//!
//! Each channel's facts live on its *home core* (`home_core`), and each user's on the user's home core; a home
//! core changes them only through its inbox, so nothing here is shared or locked. Every change returns what it
//! caused (a new member, a vacated channel, watchers to tell), and the runtime carries that out. This table is
//! the state behind `runtime::facts::Facts`, the one interface the rest of the server reaches facts through.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::AppIdx;
use crate::channels::presence::{Join, PresenceRoster};
use crate::socket_id::SocketId;

/// The core that owns `(app, key)`'s facts. FNV-1a: stable, cheap, and spreads channel names well.
pub fn home_core(app: AppIdx, key: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ app as u64;
    for b in key.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % cores.max(1) as u64) as usize
}

/// Channels above this size get `subscription_count` at most every `COUNT_THROTTLE`
/// (docs/protocol.md#subscription-count).
pub const COUNT_THROTTLE_ABOVE: u64 = 100;
pub const COUNT_THROTTLE: Duration = Duration::from_secs(5);

/// Watchers one user may have; watch registrations past it are not kept (and logged by the runtime).
pub const MAX_WATCHERS_PER_USER: usize = 65_536;

/// A cache channel's last event published over HTTP (docs/protocol.md#cache-channels).
#[derive(Clone)]
pub struct CachedEvent {
    /// The event frame exactly as subscribers got it, replayed to new subscribers.
    pub frame: Bytes,
    /// The raw JSON string token of `data`, for `GET /channels/{name}?info=cache`.
    pub data_token: Bytes,
    pub expires: Instant,
}

#[derive(Default)]
struct ChannelFacts {
    /// Subscriptions on every core (maintained only for apps with subscription counting).
    subscriptions: u64,
    roster: Option<PresenceRoster>,
    cache: Option<CachedEvent>,
    /// The last `subscription_count` value broadcast and when (throttling).
    count_sent: Option<(u64, Instant)>,
    /// Cores with at least one local subscriber.
    occupied_cores: u32,
}

impl ChannelFacts {
    fn is_empty(&self) -> bool {
        self.subscriptions == 0
            && self.occupied_cores == 0
            && self.roster.as_ref().is_none_or(|r| r.is_empty())
            && self.cache.is_none()
    }
}

/// A user's online state, kept by the user's home core (docs/protocol.md#watchlist).
#[derive(Default)]
struct UserFacts {
    /// Signed-in connections, all cores.
    online: u32,
    /// Sockets watching this user, and their cores.
    watchers: Vec<(usize, SocketId)>,
}

/// A join's result: how it went, and for a member the roster snapshot for `subscription_succeeded`.
#[derive(Debug, PartialEq, Eq)]
pub struct JoinResult {
    pub join: Join,
    pub snapshot: Option<String>,
}

/// Whether a channel changed state as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    Occupied,
    Vacated,
}

/// Facts by app, then by channel name: lookups by `&str` allocate nothing; only a new channel's name is copied.
#[derive(Default)]
pub struct FactsTable {
    channels: HashMap<AppIdx, HashMap<Box<str>, ChannelFacts>>,
    users: HashMap<AppIdx, HashMap<Box<str>, UserFacts>>,
}

impl FactsTable {
    fn get(&self, app: AppIdx, channel: &str) -> Option<&ChannelFacts> {
        self.channels.get(&app)?.get(channel)
    }

    fn entry(&mut self, app: AppIdx, channel: &str) -> &mut ChannelFacts {
        let map = self.channels.entry(app).or_default();
        if !map.contains_key(channel) {
            map.insert(Box::from(channel), ChannelFacts::default());
        }
        map.get_mut(channel).expect("inserted above")
    }

    /// Drops the entry if nothing is left in it.
    fn tidy(&mut self, app: AppIdx, channel: &str) {
        if let Some(map) = self.channels.get_mut(&app)
            && map.get(channel).is_some_and(ChannelFacts::is_empty)
        {
            map.remove(channel);
        }
    }

    // -- presence ------------------------------------------------------------------------------------------

    pub fn presence_join(
        &mut self,
        app: AppIdx,
        channel: &str,
        user_id: &str,
        user_info: &str,
        max_members: usize,
    ) -> JoinResult {
        let roster = self
            .entry(app, channel)
            .roster
            .get_or_insert_with(PresenceRoster::default);
        let join = roster.join(user_id, user_info, max_members);
        let snapshot = (join != Join::Full).then(|| roster.snapshot_json());
        if join == Join::Full {
            self.tidy(app, channel);
        }
        JoinResult { join, snapshot }
    }

    /// True when this was the user's last connection in the channel (send `member_removed`).
    pub fn presence_leave(&mut self, app: AppIdx, channel: &str, user_id: &str) -> bool {
        let last = self
            .channels
            .get_mut(&app)
            .and_then(|m| m.get_mut(channel))
            .and_then(|f| f.roster.as_mut())
            .map(|r| r.leave(user_id));
        debug_assert!(
            last.is_some(),
            "a presence leave for a channel with no roster"
        );
        self.tidy(app, channel);
        last.unwrap_or(false)
    }

    pub fn presence_users(&self, app: AppIdx, channel: &str) -> Vec<Box<str>> {
        self.get(app, channel)
            .and_then(|f| f.roster.as_ref())
            .map(|r| r.user_ids().map(Box::from).collect())
            .unwrap_or_default()
    }

    /// Whether `user_id` has a connection in the channel's roster here.
    pub fn presence_has(&self, app: AppIdx, channel: &str, user_id: &str) -> bool {
        self.get(app, channel)
            .and_then(|f| f.roster.as_ref())
            .is_some_and(|r| r.contains(user_id))
    }

    /// Whether `user_id` has a signed-in connection here.
    pub fn is_online(&self, app: AppIdx, user_id: &str) -> bool {
        self.users
            .get(&app)
            .and_then(|t| t.get(user_id))
            .is_some_and(|u| u.online > 0)
    }

    // -- subscription counts -------------------------------------------------------------------------------

    /// Applies a change of the channel's total subscriptions; returns the count to broadcast now, if any
    /// (big channels are throttled, see [`FactsTable::throttled_due`]).
    pub fn count_delta(
        &mut self,
        app: AppIdx,
        channel: &str,
        delta: i64,
        now: Instant,
    ) -> Option<u64> {
        let f = self.entry(app, channel);
        let next = f.subscriptions as i64 + delta;
        debug_assert!(next >= 0, "subscription count of {channel} went negative");
        f.subscriptions = next.max(0) as u64;
        let n = f.subscriptions;
        let due = match f.count_sent {
            Some((_, at)) if n > COUNT_THROTTLE_ABOVE => now.duration_since(at) >= COUNT_THROTTLE,
            _ => true,
        };
        if due && n > 0 {
            f.count_sent = Some((n, now));
        }
        if n == 0 {
            f.count_sent = None;
        }
        self.tidy(app, channel);
        (due && n > 0).then_some(n)
    }

    /// This core's count of the channel's subscriptions (this node's, on its home core).
    pub fn subscriptions(&self, app: AppIdx, channel: &str) -> u64 {
        self.channels
            .get(&app)
            .and_then(|m| m.get(channel))
            .map_or(0, |f| f.subscriptions)
    }

    /// Throttled channels whose count changed since the last broadcast and whose window has passed; marks them
    /// sent.
    pub fn throttled_due(&mut self, now: Instant) -> Vec<(AppIdx, Box<str>, u64)> {
        let mut due = Vec::new();
        for (app, map) in self.channels.iter_mut() {
            for (name, f) in map.iter_mut() {
                if let Some((sent, at)) = f.count_sent
                    && sent != f.subscriptions
                    && f.subscriptions > 0
                    && now.duration_since(at) >= COUNT_THROTTLE
                {
                    f.count_sent = Some((f.subscriptions, now));
                    due.push((*app, name.clone(), f.subscriptions));
                }
            }
        }
        due
    }

    // -- occupancy -----------------------------------------------------------------------------------------

    /// A core gained its first (+1) or lost its last (-1) local subscriber of the channel. Returns the change of
    /// the channel as a whole, if any.
    pub fn occupancy_delta(&mut self, app: AppIdx, channel: &str, delta: i32) -> Option<Occupancy> {
        let f = self.entry(app, channel);
        let before = f.occupied_cores;
        let after = before as i64 + delta as i64;
        debug_assert!(after >= 0, "occupancy of {channel} went negative");
        f.occupied_cores = after.max(0) as u32;
        let change = match (before, f.occupied_cores) {
            (0, n) if n > 0 => Some(Occupancy::Occupied),
            (b, 0) if b > 0 => Some(Occupancy::Vacated),
            _ => None,
        };
        self.tidy(app, channel);
        change
    }

    // -- cache channels ------------------------------------------------------------------------------------

    pub fn store_cache(&mut self, app: AppIdx, channel: &str, event: CachedEvent) {
        self.entry(app, channel).cache = Some(event);
    }

    /// The channel's cached event, unless it has expired (an expired one is forgotten).
    pub fn cached(&mut self, app: AppIdx, channel: &str, now: Instant) -> Option<CachedEvent> {
        let f = self.channels.get_mut(&app)?.get_mut(channel)?;
        if f.cache.as_ref().is_some_and(|c| c.expires <= now) {
            f.cache = None;
            self.tidy(app, channel);
            return None;
        }
        f.cache.clone()
    }

    /// Forgets expired cache entries (run from the core's periodic scan).
    pub fn purge_expired(&mut self, now: Instant) {
        for map in self.channels.values_mut() {
            map.retain(|_, f| {
                if f.cache.as_ref().is_some_and(|c| c.expires <= now) {
                    f.cache = None;
                }
                !f.is_empty()
            });
        }
    }

    // -- users ---------------------------------------------------------------------------------------------

    /// One more signed-in connection of the user; on the first, the watchers to tell it came online.
    pub fn user_online(&mut self, app: AppIdx, user_id: &str) -> Option<Vec<(usize, SocketId)>> {
        let users = self.users.entry(app).or_default();
        if !users.contains_key(user_id) {
            users.insert(Box::from(user_id), UserFacts::default());
        }
        let u = users.get_mut(user_id).expect("inserted above");
        u.online += 1;
        (u.online == 1).then(|| u.watchers.clone())
    }

    /// Who watches a user (to tell them of a change seen elsewhere in the cluster).
    pub fn watchers(&self, app: AppIdx, user_id: &str) -> Vec<(usize, SocketId)> {
        self.users
            .get(&app)
            .and_then(|t| t.get(user_id))
            .map(|u| u.watchers.clone())
            .unwrap_or_default()
    }

    /// One signed-in connection fewer; on the last, the watchers to tell it went offline.
    pub fn user_offline(&mut self, app: AppIdx, user_id: &str) -> Option<Vec<(usize, SocketId)>> {
        let users = self.users.get_mut(&app)?;
        let Some(u) = users.get_mut(user_id) else {
            debug_assert!(false, "a sign-out without its sign-in");
            return None;
        };
        debug_assert!(u.online > 0, "a user offline twice");
        u.online = u.online.saturating_sub(1);
        let watchers = (u.online == 0).then(|| u.watchers.clone());
        if u.online == 0 && u.watchers.is_empty() {
            users.remove(user_id);
        }
        watchers
    }

    /// Registers `watcher` (a socket on core `core`) for each user; says which are online now. A user already at
    /// [`MAX_WATCHERS_PER_USER`] does not keep the registration (reported as `None`).
    pub fn watch(
        &mut self,
        app: AppIdx,
        users: &[Box<str>],
        core: usize,
        watcher: SocketId,
    ) -> Vec<Option<bool>> {
        let table = self.users.entry(app).or_default();
        users
            .iter()
            .map(|u| {
                if !table.contains_key(&**u) {
                    table.insert(u.clone(), UserFacts::default());
                }
                let f = table.get_mut(&**u).expect("inserted above");
                if f.watchers.len() >= MAX_WATCHERS_PER_USER {
                    return None;
                }
                f.watchers.push((core, watcher));
                Some(f.online > 0)
            })
            .collect()
    }

    pub fn unwatch(&mut self, app: AppIdx, users: &[Box<str>], watcher: SocketId) {
        let Some(table) = self.users.get_mut(&app) else {
            return;
        };
        for u in users {
            if let Some(f) = table.get_mut(&**u) {
                f.watchers.retain(|(_, s)| *s != watcher);
                if f.online == 0 && f.watchers.is_empty() {
                    table.remove(&**u);
                }
            }
        }
    }

    /// Nothing is kept for anyone (tests: every join, count and sign-in was undone).
    pub fn is_empty(&self) -> bool {
        self.channels.values().all(HashMap::is_empty) && self.users.values().all(HashMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCK: SocketId = SocketId {
        random: 1,
        unique: 1,
    };

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
    fn presence_joins_and_leaves_are_per_user() {
        let mut t = FactsTable::default();
        let r = t.presence_join(0, "presence-r", "7", "null", 2);
        assert_eq!(r.join, Join::NewMember);
        assert!(r.snapshot.unwrap().contains(r#""ids":["7"]"#));
        assert_eq!(
            t.presence_join(0, "presence-r", "7", "null", 2).join,
            Join::AnotherConnection
        );
        assert_eq!(
            t.presence_join(0, "presence-r", "8", "null", 2).join,
            Join::NewMember
        );
        assert_eq!(
            t.presence_join(0, "presence-r", "9", "null", 2),
            JoinResult {
                join: Join::Full,
                snapshot: None
            }
        );
        assert_eq!(
            t.presence_users(0, "presence-r"),
            [Box::from("7"), Box::from("8")]
        );
        assert!(!t.presence_leave(0, "presence-r", "7"));
        assert!(t.presence_leave(0, "presence-r", "7"));
        assert!(t.presence_leave(0, "presence-r", "8"));
        assert!(t.is_empty());
    }

    #[test]
    fn occupancy_changes_on_the_first_and_last_core_only() {
        let mut t = FactsTable::default();
        assert_eq!(t.occupancy_delta(0, "c", 1), Some(Occupancy::Occupied));
        assert_eq!(t.occupancy_delta(0, "c", 1), None);
        assert_eq!(t.occupancy_delta(0, "c", -1), None);
        assert_eq!(t.occupancy_delta(0, "c", -1), Some(Occupancy::Vacated));
        assert!(t.is_empty());
    }

    #[test]
    fn big_channels_get_throttled_counts() {
        let mut t = FactsTable::default();
        let t0 = Instant::now();
        assert_eq!(t.count_delta(0, "c", 1, t0), Some(1));
        for _ in 0..COUNT_THROTTLE_ABOVE {
            t.count_delta(0, "c", 1, t0);
        }
        assert_eq!(
            t.count_delta(0, "c", 1, t0),
            None,
            "throttled above the threshold"
        );
        assert!(t.throttled_due(t0).is_empty());
        let due = t.throttled_due(t0 + COUNT_THROTTLE);
        assert_eq!(due, [(0, Box::from("c"), COUNT_THROTTLE_ABOVE + 2)]);
        for _ in 0..COUNT_THROTTLE_ABOVE + 2 {
            t.count_delta(0, "c", -1, t0 + COUNT_THROTTLE);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn cache_expires() {
        let mut t = FactsTable::default();
        let now = Instant::now();
        let event = |expires| CachedEvent {
            frame: Bytes::from_static(b"f"),
            data_token: Bytes::from_static(b"\"d\""),
            expires,
        };
        t.store_cache(0, "cache-x", event(now));
        assert!(t.cached(0, "cache-x", now).is_none());
        assert!(t.is_empty(), "empty entries are dropped");
        t.store_cache(0, "cache-y", event(now + Duration::from_secs(60)));
        assert!(t.cached(0, "cache-y", now).is_some());
        t.purge_expired(now + Duration::from_secs(61));
        assert!(t.is_empty());
    }

    #[test]
    fn users_come_online_once_and_watchers_are_told() {
        let mut t = FactsTable::default();
        assert_eq!(t.watch(0, &[Box::from("7")], 1, SOCK), [Some(false)]);
        assert_eq!(t.user_online(0, "7"), Some(vec![(1, SOCK)]));
        assert_eq!(t.user_online(0, "7"), None, "second connection");
        assert_eq!(t.user_offline(0, "7"), None);
        assert_eq!(t.user_offline(0, "7"), Some(vec![(1, SOCK)]));
        t.unwatch(0, &[Box::from("7")], SOCK);
        assert!(t.is_empty());
    }
}
