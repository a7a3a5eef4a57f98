//! Channel history (docs/protocol.md#history): each channel's recent events, kept by the channel's home core in a
//! window bounded by count, age and the app's byte budget, each with an id that grows within the channel and names
//! the window's epoch. From it come the ids on live frames, the replay for a resubscribing client, and the pages of
//! `GET /channels/{name}/events`. Pure data: the runtime decides when to append and what to send.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::AppIdx;

/// What an event costs beyond its bytes: its slot, its `Bytes` handles and the allocator's rounding.
const EVENT_OVERHEAD: usize = 128;

/// An event id: the window's epoch and the event's place in it. Written `"{epoch}-{seq}"` (both decimal), opaque
/// to clients; a new window (after a restart, or once a window was evicted or expired) gets a new epoch, so an id
/// from before is recognised as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub epoch: u64,
    pub seq: u64,
}

impl EventId {
    /// Parses `"{epoch}-{seq}"`; anything else (signs, spaces, missing parts, overflow) is `None`.
    pub fn parse(text: &str) -> Option<EventId> {
        let (epoch, seq) = text.split_once('-')?;
        let num = |p: &str| -> Option<u64> {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        Some(EventId {
            epoch: num(epoch)?,
            seq: num(seq)?,
        })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

/// An event as kept: everything needed to send it again, byte for byte.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: EventId,
    /// The event name and data as the JSON string tokens that were published.
    pub name_token: Bytes,
    pub data_token: Bytes,
    /// The sender of a client event on a presence channel.
    pub user_id: Option<Box<str>>,
    /// Unix time of the publish, in milliseconds.
    pub published_at_ms: u64,
    expires: Instant,
}

impl StoredEvent {
    fn cost(&self) -> usize {
        self.name_token.len()
            + self.data_token.len()
            + self.user_id.as_ref().map_or(0, |u| u.len())
            + EVENT_OVERHEAD
    }
}

/// An app's history bounds.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Events per channel.
    pub max_events: usize,
    pub ttl: Duration,
    /// Bytes for all of the app's channels homed on this core.
    pub max_bytes: usize,
}

/// The event to keep.
pub struct NewEvent {
    pub name_token: Bytes,
    pub data_token: Bytes,
    pub user_id: Option<Box<str>>,
    pub published_at_ms: u64,
}

struct Window {
    epoch: u64,
    next_seq: u64,
    events: VecDeque<StoredEvent>,
    bytes: usize,
    /// When the window was last written, on this store's clock (for eviction order).
    touched: u64,
}

impl Window {
    /// The first id still kept, or the next one when nothing is.
    fn first_seq(&self) -> u64 {
        self.events.front().map_or(self.next_seq, |e| e.id.seq)
    }
}

/// A resubscribing client's replay.
#[derive(Debug)]
pub struct Replay {
    /// Every event after the client's last one is here (false: unknown id, another epoch, or events in between
    /// are gone; then `events` is empty and the client must reload its state).
    pub recovered: bool,
    pub events: Vec<StoredEvent>,
}

/// One page of `GET /channels/{name}/events`, oldest first.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<StoredEvent>,
    /// The id to pass as `cursor` for the next page, when there is more.
    pub next_cursor: Option<EventId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Not an id this server wrote.
    Malformed,
    /// An id of a window that no longer exists (evicted, expired, or before a restart).
    Stale,
}

#[derive(Default)]
struct AppHistory {
    channels: HashMap<Box<str>, Window>,
    bytes: usize,
    /// Channels by when they were last written, oldest first.
    by_age: BTreeMap<u64, Box<str>>,
}

/// The history windows of the channels one core is home to.
pub struct HistoryStore {
    apps: HashMap<AppIdx, AppHistory>,
    clock: u64,
    rng: u64,
    /// Windows dropped to stay within an app's byte budget.
    pub evicted_windows: u64,
}

impl HistoryStore {
    /// `seed` makes epochs differ between cores and runs (the runtime passes random bits).
    pub fn new(seed: u64) -> Self {
        HistoryStore {
            apps: HashMap::new(),
            clock: 0,
            rng: seed | 1,
            evicted_windows: 0,
        }
    }

    fn next_epoch(&mut self) -> u64 {
        // xorshift64*, cut to 48 bits so ids stay exact as JavaScript numbers if a client parses them.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 16).max(1)
    }

    /// Keeps `event` as the channel's newest and returns its id.
    pub fn append(
        &mut self,
        app: AppIdx,
        channel: &str,
        limits: HistoryLimits,
        event: NewEvent,
        now: Instant,
    ) -> EventId {
        let (epoch, seq) = match self.window(app, channel) {
            Some(w) => (w.epoch, w.next_seq),
            None => (self.next_epoch(), 1),
        };
        let id = EventId { epoch, seq };
        self.keep(app, channel, limits, id, event, now + limits.ttl);
        id
    }

    /// Keeps an event numbered elsewhere (by Redis, in a cluster) as the channel's newest. An id of another
    /// epoch, or past a gap, starts the window again from it (older ids then do not recover here); an id already
    /// kept or older is a duplicate: `false`, nothing kept.
    pub fn append_numbered(
        &mut self,
        app: AppIdx,
        channel: &str,
        limits: HistoryLimits,
        id: EventId,
        event: NewEvent,
        now: Instant,
    ) -> bool {
        if self
            .window(app, channel)
            .is_some_and(|w| w.epoch == id.epoch && id.seq < w.next_seq)
        {
            return false;
        }
        self.keep(app, channel, limits, id, event, now + limits.ttl);
        true
    }

    /// Replaces the channel's window with the one kept elsewhere (Redis): `events` oldest first, the last id
    /// given `last_seq`; events older than `limits.ttl` (by their publish time, `now_ms`) are left out.
    pub fn restore(
        &mut self,
        app: AppIdx,
        channel: &str,
        limits: HistoryLimits,
        (epoch, last_seq): (u64, u64),
        events: Vec<(EventId, NewEvent)>,
        (now, now_ms): (Instant, u64),
    ) {
        self.remove(app, channel);
        let ttl_ms = limits.ttl.as_millis() as u64;
        for (id, event) in events {
            let age = now_ms.saturating_sub(event.published_at_ms);
            if id.epoch != epoch || id.seq > last_seq || age >= ttl_ms {
                continue;
            }
            let expires = now + Duration::from_millis(ttl_ms - age);
            self.keep(app, channel, limits, id, event, expires);
        }
        // Nothing left: an empty window still says which id is the last, so that id recovers with nothing.
        if self.window(app, channel).is_none() {
            self.clock += 1;
            let touched = self.clock;
            let h = self.apps.entry(app).or_default();
            h.channels.insert(
                Box::from(channel),
                Window {
                    epoch,
                    next_seq: last_seq + 1,
                    events: VecDeque::new(),
                    bytes: 0,
                    touched,
                },
            );
            h.by_age.insert(touched, Box::from(channel));
        }
        if let Some(w) = self
            .apps
            .get_mut(&app)
            .and_then(|h| h.channels.get_mut(channel))
        {
            w.next_seq = last_seq + 1;
        }
    }

    fn window(&self, app: AppIdx, channel: &str) -> Option<&Window> {
        self.apps.get(&app)?.channels.get(channel)
    }

    /// Drops the channel's window (a cluster node that stops listening to the channel).
    pub fn forget(&mut self, app: AppIdx, channel: &str) {
        self.remove(app, channel);
    }

    fn remove(&mut self, app: AppIdx, channel: &str) {
        if let Some(h) = self.apps.get_mut(&app)
            && let Some(w) = h.channels.remove(channel)
        {
            h.by_age.remove(&w.touched);
            h.bytes -= w.bytes;
        }
    }

    /// Keeps `event` with `id` as the channel's newest; a window of another epoch, or one `id` does not follow,
    /// starts again at `id`.
    fn keep(
        &mut self,
        app: AppIdx,
        channel: &str,
        limits: HistoryLimits,
        id: EventId,
        event: NewEvent,
        expires: Instant,
    ) {
        self.clock += 1;
        let touched = self.clock;
        if self
            .window(app, channel)
            .is_some_and(|w| w.epoch != id.epoch || w.next_seq != id.seq)
        {
            self.remove(app, channel);
        }
        let h = self.apps.entry(app).or_default();
        let w = h.channels.entry(Box::from(channel)).or_insert(Window {
            epoch: id.epoch,
            next_seq: id.seq,
            events: VecDeque::new(),
            bytes: 0,
            touched,
        });
        h.by_age.remove(&w.touched);
        w.touched = touched;
        h.by_age.insert(touched, Box::from(channel));
        w.next_seq = id.seq + 1;
        let stored = StoredEvent {
            id,
            name_token: event.name_token,
            data_token: event.data_token,
            user_id: event.user_id,
            published_at_ms: event.published_at_ms,
            expires,
        };
        let cost = stored.cost();
        w.events.push_back(stored);
        w.bytes += cost;
        h.bytes += cost;
        while w.events.len() > limits.max_events {
            let old = w.events.pop_front().expect("longer than the limit");
            w.bytes -= old.cost();
            h.bytes -= old.cost();
        }
        self.enforce_budget(app, channel, limits.max_bytes);
    }

    /// Drops whole windows, least recently written first, until the app is within `max_bytes`; the channel just
    /// written keeps at least its newest event.
    fn enforce_budget(&mut self, app: AppIdx, keep: &str, max_bytes: usize) {
        let Some(h) = self.apps.get_mut(&app) else {
            return;
        };
        while h.bytes > max_bytes {
            let Some((&age, name)) = h.by_age.iter().next() else {
                break;
            };
            if &**name == keep {
                // Only the current channel is left: trim its oldest events instead.
                let w = h.channels.get_mut(keep).expect("indexed by age");
                if w.events.len() <= 1 {
                    break;
                }
                let old = w.events.pop_front().expect("more than one");
                w.bytes -= old.cost();
                h.bytes -= old.cost();
                continue;
            }
            let name = name.clone();
            h.by_age.remove(&age);
            if let Some(w) = h.channels.remove(&name) {
                h.bytes -= w.bytes;
                self.evicted_windows += 1;
            }
        }
    }

    /// Drops expired events of `channel` (events are kept in time order, so from the front).
    fn expire(&mut self, app: AppIdx, channel: &str, now: Instant) {
        let Some(h) = self.apps.get_mut(&app) else {
            return;
        };
        if let Some(w) = h.channels.get_mut(channel) {
            while w.events.front().is_some_and(|e| e.expires <= now) {
                let old = w.events.pop_front().expect("checked");
                w.bytes -= old.cost();
                h.bytes -= old.cost();
            }
        }
    }

    /// Forgets expired events everywhere; a window with nothing left is dropped (its epoch with it).
    pub fn purge_expired(&mut self, now: Instant) {
        for h in self.apps.values_mut() {
            let mut emptied = Vec::new();
            for (name, w) in h.channels.iter_mut() {
                while w.events.front().is_some_and(|e| e.expires <= now) {
                    let old = w.events.pop_front().expect("checked");
                    w.bytes -= old.cost();
                    h.bytes -= old.cost();
                }
                if w.events.is_empty() {
                    emptied.push((w.touched, name.clone()));
                }
            }
            for (touched, name) in emptied {
                h.by_age.remove(&touched);
                h.channels.remove(&name);
            }
        }
    }

    /// The events after `last_event_id`, if every one of them is still kept.
    pub fn replay(
        &mut self,
        app: AppIdx,
        channel: &str,
        last_event_id: &str,
        now: Instant,
    ) -> Replay {
        self.expire(app, channel, now);
        let lost = Replay {
            recovered: false,
            events: Vec::new(),
        };
        let Some(last) = EventId::parse(last_event_id) else {
            return lost;
        };
        let Some(w) = self.apps.get(&app).and_then(|h| h.channels.get(channel)) else {
            return lost;
        };
        // Another epoch, a future id, or events between the client's last and the oldest kept are gone.
        if last.epoch != w.epoch || last.seq >= w.next_seq || last.seq + 1 < w.first_seq() {
            return lost;
        }
        Replay {
            recovered: true,
            events: w
                .events
                .iter()
                .filter(|e| e.id.seq > last.seq)
                .cloned()
                .collect(),
        }
    }

    /// Up to `limit` events after `cursor` (from the oldest when `None`), oldest first.
    pub fn page(
        &mut self,
        app: AppIdx,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> Result<Page, CursorError> {
        self.expire(app, channel, now);
        let after = match cursor {
            None => None,
            Some(c) => Some(EventId::parse(c).ok_or(CursorError::Malformed)?),
        };
        let Some(w) = self.apps.get(&app).and_then(|h| h.channels.get(channel)) else {
            return match after {
                None => Ok(Page {
                    events: Vec::new(),
                    next_cursor: None,
                }),
                Some(_) => Err(CursorError::Stale),
            };
        };
        if let Some(c) = after
            && (c.epoch != w.epoch || c.seq >= w.next_seq)
        {
            return Err(CursorError::Stale);
        }
        let start = after.map_or(0, |c| c.seq);
        let mut rest = w.events.iter().filter(|e| e.id.seq > start);
        let events: Vec<StoredEvent> = rest.by_ref().take(limit).cloned().collect();
        let next_cursor = match (rest.next(), events.last()) {
            (Some(_), Some(last)) => Some(last.id),
            _ => None,
        };
        Ok(Page {
            events,
            next_cursor,
        })
    }

    /// Bytes kept for `app` on this core.
    pub fn app_bytes(&self, app: AppIdx) -> usize {
        self.apps.get(&app).map_or(0, |h| h.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.apps.values().all(|h| h.channels.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits {
        max_events: 3,
        ttl: Duration::from_secs(60),
        max_bytes: 1 << 20,
    };

    fn event(data: &str) -> NewEvent {
        NewEvent {
            name_token: Bytes::from_static(b"\"e\""),
            data_token: Bytes::from(format!("\"{data}\"")),
            user_id: None,
            published_at_ms: 1,
        }
    }

    fn data(events: &[StoredEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.data_token.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn numbered_events_keep_their_ids_and_a_gap_or_new_epoch_starts_again() {
        let mut h = HistoryStore::new(7);
        let now = Instant::now();
        let id = |epoch, seq| EventId { epoch, seq };
        assert!(h.append_numbered(0, "c", LIMITS, id(9, 4), event("4"), now));
        assert!(h.append_numbered(0, "c", LIMITS, id(9, 5), event("5"), now));
        assert!(
            !h.append_numbered(0, "c", LIMITS, id(9, 5), event("dup"), now),
            "a duplicate"
        );
        let r = h.replay(0, "c", "9-3", now);
        assert!(r.recovered);
        assert_eq!(data(&r.events), ["\"4\"", "\"5\""]);
        assert!(
            !h.replay(0, "c", "9-2", now).recovered,
            "before the first kept"
        );
        // A gap: only ids from it on recover here.
        assert!(h.append_numbered(0, "c", LIMITS, id(9, 8), event("8"), now));
        assert!(!h.replay(0, "c", "9-5", now).recovered);
        assert!(h.replay(0, "c", "9-7", now).recovered);
        // Another epoch (the window expired in Redis) starts again.
        assert!(h.append_numbered(0, "c", LIMITS, id(10, 1), event("a"), now));
        assert!(!h.replay(0, "c", "9-8", now).recovered);
        assert_eq!(data(&h.replay(0, "c", "10-0", now).events), ["\"a\""]);
        h.forget(0, "c");
        assert!(h.is_empty() && h.app_bytes(0) == 0);
    }

    #[test]
    fn a_restored_window_replaces_this_ones_and_leaves_out_expired_events() {
        let mut h = HistoryStore::new(7);
        let now = Instant::now();
        let id = |seq| EventId { epoch: 3, seq };
        h.append(0, "c", LIMITS, event("old"), now);
        let at = |ms, d: &str| NewEvent {
            published_at_ms: ms,
            ..event(d)
        };
        let now_ms = 1_000_000;
        let events = vec![
            (id(5), at(now_ms - 61_000, "5")),
            (id(6), at(now_ms - 1_000, "6")),
            (id(7), at(now_ms, "7")),
        ];
        h.restore(0, "c", LIMITS, (3, 7), events, (now, now_ms));
        let r = h.replay(0, "c", "3-5", now);
        assert!(r.recovered, "6 and 7 are kept");
        assert_eq!(data(&r.events), ["\"6\"", "\"7\""]);
        assert!(!h.replay(0, "c", "3-4", now).recovered, "5 expired");
        assert!(h.append_numbered(0, "c", LIMITS, id(8), event("8"), now));
        assert_eq!(h.replay(0, "c", "3-7", now).events.len(), 1);
        // Nothing left in Redis but the last id: that id recovers, with nothing to replay.
        h.restore(0, "d", LIMITS, (3, 9), Vec::new(), (now, now_ms));
        let r = h.replay(0, "d", "3-9", now);
        assert!(r.recovered && r.events.is_empty());
    }

    #[test]
    fn ids_grow_within_a_channel_and_round_trip() {
        let mut h = HistoryStore::new(7);
        let now = Instant::now();
        let a = h.append(0, "c", LIMITS, event("1"), now);
        let b = h.append(0, "c", LIMITS, event("2"), now);
        assert_eq!((a.epoch, a.seq + 1), (b.epoch, b.seq));
        assert_eq!(EventId::parse(&b.to_string()), Some(b));
        for bad in [
            "",
            "1",
            "1-",
            "-1",
            "a-1",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999999-1",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
        let other = h.append(0, "d", LIMITS, event("x"), now);
        assert_ne!(other.epoch, a.epoch, "each window has its own epoch");
    }

    #[test]
    fn replay_gives_everything_after_the_last_id_or_nothing() {
        let mut h = HistoryStore::new(7);
        let now = Instant::now();
        let ids: Vec<EventId> = (1..=5)
            .map(|i| h.append(0, "c", LIMITS, event(&i.to_string()), now))
            .collect();
        // Keeps 3, 4, 5.
        let r = h.replay(0, "c", &ids[2].to_string(), now);
        assert!(r.recovered);
        assert_eq!(data(&r.events), [r#""4""#, r#""5""#]);
        let r = h.replay(0, "c", &ids[1].to_string(), now);
        assert!(
            r.recovered,
            "2 is just before the oldest kept: nothing missing"
        );
        assert_eq!(r.events.len(), 3);
        assert!(
            !h.replay(0, "c", &ids[0].to_string(), now).recovered,
            "2 is gone"
        );
        assert!(h.replay(0, "c", &ids[4].to_string(), now).recovered);
        let future = EventId { seq: 99, ..ids[0] };
        for bad in [
            future.to_string(),
            "x".into(),
            EventId { epoch: 1, seq: 1 }.to_string(),
        ] {
            let r = h.replay(0, "c", &bad, now);
            assert!(!r.recovered && r.events.is_empty(), "{bad}");
        }
        assert!(!h.replay(0, "none", &ids[4].to_string(), now).recovered);
    }

    #[test]
    fn expiry_drops_events_and_then_the_window() {
        let mut h = HistoryStore::new(7);
        let now = Instant::now();
        let id = h.append(0, "c", LIMITS, event("1"), now);
        let later = now + LIMITS.ttl;
        assert!(
            h.replay(0, "c", &EventId { seq: 0, ..id }.to_string(), later)
                .events
                .is_empty()
        );
        h.purge_expired(later);
        assert!(h.is_empty());
        assert!(
            !h.replay(0, "c", &id.to_string(), later).recovered,
            "a new window has a new epoch"
        );
    }

    #[test]
    fn the_byte_budget_evicts_the_channels_written_longest_ago() {
        let mut h = HistoryStore::new(7);
        let now = Instant::now();
        let one = event("x").data_token.len() + 3 + EVENT_OVERHEAD;
        let limits = HistoryLimits {
            max_events: 100,
            max_bytes: 3 * one,
            ..LIMITS
        };
        h.append(0, "old", limits, event("x"), now);
        h.append(0, "mid", limits, event("x"), now);
        h.append(0, "new", limits, event("x"), now);
        assert_eq!(h.app_bytes(0), 3 * one);
        h.append(0, "new", limits, event("x"), now);
        assert_eq!(h.evicted_windows, 1);
        assert!(h.page(0, "old", None, 10, now).unwrap().events.is_empty());
        assert_eq!(h.page(0, "mid", None, 10, now).unwrap().events.len(), 1);
        // A single channel over the budget keeps its newest events.
        for _ in 0..10 {
            h.append(0, "new", limits, event("x"), now);
        }
        assert!(h.app_bytes(0) <= 3 * one);
        assert!(!h.page(0, "new", None, 10, now).unwrap().events.is_empty());
    }

    #[test]
    fn pages_cover_every_kept_event_once_oldest_first() {
        let mut h = HistoryStore::new(7);
        let now = Instant::now();
        let limits = HistoryLimits {
            max_events: 10,
            ..LIMITS
        };
        for i in 1..=7 {
            h.append(0, "c", limits, event(&i.to_string()), now);
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = h.page(0, "c", cursor.as_deref(), 3, now).unwrap();
            seen.extend(data(&page.events));
            match page.next_cursor {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(
            seen,
            (1..=7).map(|i| format!("\"{i}\"")).collect::<Vec<_>>()
        );
        assert_eq!(
            h.page(0, "c", Some("nonsense"), 3, now).err(),
            Some(CursorError::Malformed)
        );
        assert_eq!(
            h.page(0, "c", Some("1-1"), 3, now).err(),
            Some(CursorError::Stale)
        );
        assert_eq!(h.page(0, "empty", None, 3, now).unwrap().events.len(), 0);
    }
}
