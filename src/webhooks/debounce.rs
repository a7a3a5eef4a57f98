//! The debounce of "down" events (docs/protocol.md#webhooks): `channel_vacated`, `member_removed` and
//! `user_offline` wait [`WebhookSettings::debounce`](crate::config::WebhookSettings) and are dropped, together with
//! the `channel_occupied`, `member_added` or `user_online` that undoes them, when the channel or user comes back in
//! the meantime. A quick reconnect therefore sends nothing; the receiver's picture stays what it was.
//!
//! `cache_miss` is de-duplicated over the same delay: several clients hitting one empty cache give one webhook.
//!
//! The events of one channel or user come from its home core, in order, so an "up" that finds its "down" held is
//! exactly the return that cancels it. Pure and driven by the caller's clock.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::app::AppIdx;
use crate::config::WebhookKind;
use crate::webhooks::event::WebhookEvent;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    app: AppIdx,
    /// 0: occupancy, 1: membership, 2: online.
    family: u8,
    channel: Option<Box<str>>,
    user_id: Option<Box<str>>,
}

/// Whether a kind goes down, comes up, or neither, and its family.
fn role(kind: WebhookKind) -> Option<(u8, bool)> {
    match kind {
        WebhookKind::ChannelOccupied => Some((0, true)),
        WebhookKind::ChannelVacated => Some((0, false)),
        WebhookKind::MemberAdded => Some((1, true)),
        WebhookKind::MemberRemoved => Some((1, false)),
        WebhookKind::UserOnline => Some((2, true)),
        WebhookKind::UserOffline => Some((2, false)),
        _ => None,
    }
}

pub struct Debouncer {
    delay: Duration,
    /// Held "down" events by key, with the generation that its entry in `order` carries.
    held: HashMap<Key, (u64, WebhookEvent)>,
    /// Release times in order (one delay for all, so arrival order is deadline order). Entries whose event was
    /// cancelled stay until their time and are skipped then.
    order: VecDeque<(Instant, Key, u64)>,
    next_gen: u64,
    /// Channels whose `cache_miss` was sent within the delay, in the order sent.
    misses: HashMap<(AppIdx, Box<str>), Instant>,
    miss_order: VecDeque<(Instant, (AppIdx, Box<str>))>,
    /// Past this many held events the oldest is released early (nothing grows without a bound).
    cap: usize,
}

impl Debouncer {
    pub fn new(delay: Duration, cap: usize) -> Self {
        Debouncer {
            delay,
            held: HashMap::new(),
            order: VecDeque::new(),
            next_gen: 0,
            misses: HashMap::new(),
            miss_order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Takes an event; returns the events to send now (none when it is held or cancels a held one, two at most
    /// when the cap forces the oldest held event out).
    pub fn offer(&mut self, event: WebhookEvent, now: Instant, out: &mut Vec<WebhookEvent>) {
        if event.kind == WebhookKind::CacheMiss && !self.delay.is_zero() {
            return self.offer_miss(event, now, out);
        }
        let Some((family, up)) = role(event.kind).filter(|_| !self.delay.is_zero()) else {
            out.push(event);
            return;
        };
        let key = Key {
            app: event.app,
            family,
            channel: event.channel.clone(),
            user_id: event.user_id.clone(),
        };
        if up {
            if self.held.remove(&key).is_none() {
                out.push(event);
            }
            return;
        }
        let generation = self.next_gen;
        self.next_gen += 1;
        self.held.insert(key.clone(), (generation, event));
        self.order.push_back((now + self.delay, key, generation));
        while self.held.len() > self.cap {
            self.release_front(out);
        }
        // Entries of cancelled events wait in `order` for their time; a flapping channel could pile them up.
        if self.order.len() > 4 * self.cap {
            let held = &self.held;
            self.order
                .retain(|(_, k, g)| held.get(k).is_some_and(|(hg, _)| hg == g));
        }
    }

    fn offer_miss(&mut self, event: WebhookEvent, now: Instant, out: &mut Vec<WebhookEvent>) {
        let key = (event.app, event.channel.clone().unwrap_or_default());
        self.forget_misses(now);
        if self.misses.contains_key(&key) {
            return;
        }
        self.misses.insert(key.clone(), now);
        self.miss_order.push_back((now, key));
        while self.miss_order.len() > self.cap {
            if let Some((_, k)) = self.miss_order.pop_front() {
                self.misses.remove(&k);
            }
        }
        out.push(event);
    }

    fn forget_misses(&mut self, now: Instant) {
        while let Some((at, _)) = self.miss_order.front() {
            if now.duration_since(*at) < self.delay {
                break;
            }
            if let Some((at, key)) = self.miss_order.pop_front()
                && self.misses.get(&key) == Some(&at)
            {
                self.misses.remove(&key);
            }
        }
    }

    /// Moves the events whose wait is over to `out`.
    pub fn due(&mut self, now: Instant, out: &mut Vec<WebhookEvent>) {
        self.forget_misses(now);
        while self.order.front().is_some_and(|(at, _, _)| *at <= now) {
            self.release_front(out);
        }
    }

    /// Every held event, now (at shutdown).
    pub fn release_all(&mut self, out: &mut Vec<WebhookEvent>) {
        while !self.order.is_empty() {
            self.release_front(out);
        }
    }

    fn release_front(&mut self, out: &mut Vec<WebhookEvent>) {
        let Some((_, key, generation)) = self.order.pop_front() else {
            return;
        };
        if self.held.get(&key).is_some_and(|(g, _)| *g == generation)
            && let Some((_, event)) = self.held.remove(&key)
        {
            out.push(event);
        }
    }

    /// When the next held event is due (maybe a cancelled one: waking for nothing is harmless).
    pub fn next_due(&self) -> Option<Instant> {
        self.order.front().map(|(at, _, _)| *at)
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WebhookKind::*;

    fn names(v: &[WebhookEvent]) -> Vec<&'static str> {
        v.iter().map(|e| e.kind.name()).collect()
    }

    #[test]
    fn a_quick_return_sends_nothing() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(3), 100);
        let mut out = Vec::new();
        d.offer(WebhookEvent::channel(0, ChannelOccupied, "c"), t0, &mut out);
        assert_eq!(
            names(&out),
            ["channel_occupied"],
            "an up with nothing held goes at once"
        );
        out.clear();
        d.offer(
            WebhookEvent::member(0, MemberRemoved, "p", "u"),
            t0,
            &mut out,
        );
        d.offer(WebhookEvent::channel(0, ChannelVacated, "c"), t0, &mut out);
        assert!(out.is_empty(), "downs wait");
        let t1 = t0 + Duration::from_secs(1);
        d.offer(WebhookEvent::channel(0, ChannelOccupied, "c"), t1, &mut out);
        d.offer(WebhookEvent::member(0, MemberAdded, "p", "u"), t1, &mut out);
        assert!(out.is_empty(), "a return cancels both");
        d.due(t0 + Duration::from_secs(10), &mut out);
        assert!(out.is_empty() && d.is_empty());
    }

    #[test]
    fn a_down_that_stays_is_sent_after_the_delay() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(3), 100);
        let mut out = Vec::new();
        d.offer(WebhookEvent::user(0, UserOffline, "u"), t0, &mut out);
        d.offer(
            WebhookEvent::member(0, MemberRemoved, "p", "u"),
            t0,
            &mut out,
        );
        d.offer(WebhookEvent::member(0, MemberAdded, "p", "v"), t0, &mut out);
        assert_eq!(
            names(&out),
            ["member_added"],
            "another user's join is not held"
        );
        out.clear();
        d.due(t0 + Duration::from_millis(2999), &mut out);
        assert!(out.is_empty());
        assert_eq!(d.next_due(), Some(t0 + Duration::from_secs(3)));
        d.due(t0 + Duration::from_secs(3), &mut out);
        assert_eq!(names(&out), ["user_offline", "member_removed"]);
    }

    #[test]
    fn down_up_down_sends_the_last_down_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(3), 100);
        let mut out = Vec::new();
        d.offer(WebhookEvent::channel(0, ChannelVacated, "c"), t0, &mut out);
        let t1 = t0 + Duration::from_secs(1);
        d.offer(WebhookEvent::channel(0, ChannelOccupied, "c"), t1, &mut out);
        let t2 = t0 + Duration::from_secs(2);
        d.offer(WebhookEvent::channel(0, ChannelVacated, "c"), t2, &mut out);
        d.due(t0 + Duration::from_secs(3), &mut out);
        assert!(out.is_empty(), "the first vacated was cancelled");
        d.due(t2 + Duration::from_secs(3), &mut out);
        assert_eq!(names(&out), ["channel_vacated"]);
    }

    #[test]
    fn apps_and_channels_are_kept_apart_and_the_cap_releases_early() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(3), 2);
        let mut out = Vec::new();
        d.offer(WebhookEvent::channel(0, ChannelVacated, "c"), t0, &mut out);
        d.offer(WebhookEvent::channel(1, ChannelOccupied, "c"), t0, &mut out);
        assert_eq!(names(&out), ["channel_occupied"], "another app's channel");
        out.clear();
        d.offer(WebhookEvent::channel(0, ChannelVacated, "d"), t0, &mut out);
        d.offer(WebhookEvent::channel(0, ChannelVacated, "e"), t0, &mut out);
        assert_eq!(out.len(), 1, "over the cap the oldest goes early");
        assert_eq!(out[0].channel.as_deref(), Some("c"));
        assert_eq!(d.len(), 2);
        out.clear();
        d.release_all(&mut out);
        assert_eq!(out.len(), 2);
        let mut none = Debouncer::new(Duration::ZERO, 2);
        none.offer(WebhookEvent::channel(0, ChannelVacated, "c"), t0, &mut out);
        assert_eq!(out.len(), 3, "no debounce: at once");
    }

    #[test]
    fn one_cache_miss_per_channel_within_the_delay() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::from_secs(3), 100);
        let mut out = Vec::new();
        d.offer(WebhookEvent::channel(0, CacheMiss, "cache-a"), t0, &mut out);
        d.offer(WebhookEvent::channel(0, CacheMiss, "cache-a"), t0, &mut out);
        d.offer(WebhookEvent::channel(0, CacheMiss, "cache-b"), t0, &mut out);
        d.offer(WebhookEvent::channel(1, CacheMiss, "cache-a"), t0, &mut out);
        assert_eq!(out.len(), 3, "back-to-back misses of one channel give one");
        d.due(t0 + Duration::from_secs(3), &mut out);
        d.offer(
            WebhookEvent::channel(0, CacheMiss, "cache-a"),
            t0 + Duration::from_secs(3),
            &mut out,
        );
        assert_eq!(out.len(), 4, "a miss after the delay is sent again");
    }
}
