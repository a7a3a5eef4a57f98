//! The per-core channel index: which of this core's subscribers are in which channel, and the local fan-out loop
//! over them.
//!
//! One map per app, channel name -> dense subscriber list. Subscribing appends; leaving swaps the last
//! subscriber into the hole and fixes its recorded slot, so both are O(1). Fan-out walks a contiguous
//! `Vec<Rc<S>>` and hands each subscriber a refcounted clone of one pre-encoded frame: the plain one, or the
//! compressed one to subscribers that negotiated permessage-deflate. The index knows subscribers only through
//! [`Subscriber`], so it is tested without sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::app::AppIdx;
use crate::protocol::session::{SendOutcome, Session, Subscription};
use crate::socket_id::SocketId;

/// What the index needs of a subscriber: who it is, where it records its subscriptions, and a way to queue a
/// frame that reports what became of it.
pub trait Subscriber {
    fn socket_id(&self) -> SocketId;
    fn app(&self) -> AppIdx;
    /// The subscriber's own record of its channels and slots (the index keeps it consistent).
    fn subscriptions(&self) -> &RefCell<Vec<Subscription>>;
    fn send(&self, frame: Bytes) -> SendOutcome;
    /// Takes compressed frames (negotiated permessage-deflate).
    fn deflate(&self) -> bool {
        false
    }
}

impl Subscriber for Session {
    #[inline]
    fn socket_id(&self) -> SocketId {
        self.socket_id
    }
    #[inline]
    fn app(&self) -> AppIdx {
        self.app
    }
    #[inline]
    fn subscriptions(&self) -> &RefCell<Vec<Subscription>> {
        &self.subscriptions
    }
    #[inline]
    fn send(&self, frame: Bytes) -> SendOutcome {
        Session::send(self, frame)
    }
    #[inline]
    fn deflate(&self) -> bool {
        self.deflate.get()
    }
}

/// One event's frames for one channel: `plain` for everyone, `deflated` (RSV1 set) for subscribers that
/// negotiated permessage-deflate, empty when the event goes out plain to all (compression off, nobody
/// negotiated it, too small, or not smaller compressed).
#[derive(Clone, Copy)]
pub struct Frames<'a> {
    pub plain: &'a Bytes,
    pub deflated: &'a Bytes,
}

impl<'a> Frames<'a> {
    pub fn plain(plain: &'a Bytes) -> Self {
        static NONE: Bytes = Bytes::new();
        Frames {
            plain,
            deflated: &NONE,
        }
    }
}

/// What a fan-out did, by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deliveries {
    pub queued: u64,
    pub backpressured: u64,
    pub cut_off: u64,
    pub dropped: u64,
}

impl Deliveries {
    #[inline]
    fn count(&mut self, outcome: SendOutcome) {
        match outcome {
            SendOutcome::Queued => self.queued += 1,
            SendOutcome::Backpressured => self.backpressured += 1,
            SendOutcome::CutOff => self.cut_off += 1,
            SendOutcome::Dropped => self.dropped += 1,
        }
    }

    pub fn add(&mut self, other: Deliveries) {
        self.queued += other.queued;
        self.backpressured += other.backpressured;
        self.cut_off += other.cut_off;
        self.dropped += other.dropped;
    }

    /// Frames that reached an output queue.
    pub fn delivered(&self) -> u64 {
        self.queued + self.backpressured
    }
}

pub struct Channel<S> {
    pub subscribers: Vec<Rc<S>>,
}

pub struct ChannelIndex<S = Session> {
    apps: Vec<HashMap<Rc<str>, Channel<S>>>,
}

impl<S: Subscriber> ChannelIndex<S> {
    pub fn new(app_count: usize) -> Self {
        ChannelIndex {
            apps: (0..app_count).map(|_| HashMap::new()).collect(),
        }
    }

    /// Room for apps added by a reload (indices never move).
    pub fn grow(&mut self, app_count: usize) {
        while self.apps.len() < app_count {
            self.apps.push(HashMap::new());
        }
    }

    pub fn is_subscribed(subscriber: &S, name: &str) -> bool {
        subscriber
            .subscriptions()
            .borrow()
            .iter()
            .any(|s| &*s.channel == name)
    }

    /// Adds the subscriber; `None` if it was already subscribed. Returns the channel's local subscriber count
    /// (1: the channel just became occupied on this core).
    pub fn subscribe(&mut self, subscriber: &Rc<S>, name: &str) -> Option<usize> {
        if Self::is_subscribed(subscriber, name) {
            return None;
        }
        // An app a reload added after this core's tables were sized: room for it now (indices never move).
        self.grow(subscriber.app() as usize + 1);
        let map = &mut self.apps[subscriber.app() as usize];
        let key = match map.get_key_value(name) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Rc<str> = Rc::from(name);
                map.insert(
                    k.clone(),
                    Channel {
                        subscribers: Vec::new(),
                    },
                );
                k
            }
        };
        let channel = map.get_mut(&key).expect("present: found or inserted above");
        let slot =
            u32::try_from(channel.subscribers.len()).expect("fewer than 2^32 subscribers per core");
        channel.subscribers.push(subscriber.clone());
        subscriber.subscriptions().borrow_mut().push(Subscription {
            channel: key,
            slot: slot.into(),
        });
        Some(channel.subscribers.len())
    }

    /// Removes the subscriber; `None` if it was not subscribed. Returns the channel's remaining local count
    /// (0: the channel just became empty on this core).
    pub fn unsubscribe(&mut self, subscriber: &S, name: &str) -> Option<usize> {
        let sub = {
            let mut subs = subscriber.subscriptions().borrow_mut();
            let i = subs.iter().position(|s| &*s.channel == name)?;
            subs.swap_remove(i)
        };
        Some(self.remove_slot(subscriber.app(), &sub))
    }

    /// Leaves every channel (disconnect). Returns each channel left with its remaining local count.
    pub fn unsubscribe_all(&mut self, subscriber: &S) -> Vec<(Rc<str>, usize)> {
        let subs = std::mem::take(&mut *subscriber.subscriptions().borrow_mut());
        subs.into_iter()
            .map(|sub| {
                let left = self.remove_slot(subscriber.app(), &sub);
                (sub.channel, left)
            })
            .collect()
    }

    fn remove_slot(&mut self, app: AppIdx, sub: &Subscription) -> usize {
        let Some(map) = self.apps.get_mut(app as usize) else {
            debug_assert!(false, "a subscription of an app without a table");
            return 0;
        };
        let Some(channel) = map.get_mut(&*sub.channel) else {
            debug_assert!(false, "a subscription without its channel entry");
            return 0;
        };
        let slot = sub.slot.get() as usize;
        debug_assert!(
            slot < channel.subscribers.len(),
            "a recorded slot past the list"
        );
        channel.subscribers.swap_remove(slot);
        if let Some(moved) = channel.subscribers.get(slot) {
            let subs = moved.subscriptions().borrow();
            // Every subscriber's record holds this channel's one key `Rc`, so identity finds it.
            let record = subs.iter().find(|s| Rc::ptr_eq(&s.channel, &sub.channel));
            debug_assert!(record.is_some(), "a subscriber without its own record");
            if let Some(s) = record {
                s.slot.set(slot as u32);
            }
        }
        let left = channel.subscribers.len();
        if left == 0 {
            map.remove(&*sub.channel);
        }
        left
    }

    /// An app this core has no table for yet (added by a reload it has not seen) has no subscribers here.
    pub fn get(&self, app: AppIdx, name: &str) -> Option<&Channel<S>> {
        self.apps.get(app as usize)?.get(name)
    }

    pub fn local_count(&self, app: AppIdx, name: &str) -> usize {
        self.get(app, name).map_or(0, |c| c.subscribers.len())
    }

    pub fn channels(&self, app: AppIdx) -> impl Iterator<Item = (&Rc<str>, &Channel<S>)> {
        self.apps.get(app as usize).into_iter().flatten()
    }

    pub fn channel_count(&self) -> usize {
        self.apps.iter().map(|m| m.len()).sum()
    }

    /// The fan-out loop: one refcounted clone of `frame` per subscriber of `name`, except `except`.
    #[inline]
    pub fn deliver(
        &self,
        app: AppIdx,
        name: &str,
        frame: &Bytes,
        except: Option<SocketId>,
    ) -> Deliveries {
        self.deliver_frames(app, name, Frames::plain(frame), except)
    }

    /// The fan-out loop with a compressed frame beside the plain one: each subscriber gets a refcounted clone of
    /// the one it negotiated.
    #[inline]
    pub fn deliver_frames(
        &self,
        app: AppIdx,
        name: &str,
        frames: Frames<'_>,
        except: Option<SocketId>,
    ) -> Deliveries {
        match self.get(app, name) {
            Some(channel) => deliver_to(&channel.subscribers, frames, except),
            None => Deliveries::default(),
        }
    }
}

#[inline]
pub fn deliver_to<S: Subscriber>(
    subscribers: &[Rc<S>],
    frames: Frames<'_>,
    except: Option<SocketId>,
) -> Deliveries {
    let mut out = Deliveries::default();
    if frames.deflated.is_empty() {
        // Everyone gets the plain frame: the loop does not read each subscriber's deflate flag.
        match except {
            None => {
                for s in subscribers {
                    out.count(s.send(frames.plain.clone()));
                }
            }
            Some(skip) => {
                for s in subscribers {
                    if s.socket_id() != skip {
                        out.count(s.send(frames.plain.clone()));
                    }
                }
            }
        }
        return out;
    }
    // Here there is a compressed frame: those who negotiated the extension get it.
    let (plain, deflated) = (frames.plain, frames.deflated);
    // A branch and a refcount increment per subscriber, no allocation: both frames are already built.
    let pick = |s: &S| if s.deflate() { deflated } else { plain };
    match except {
        None => {
            for s in subscribers {
                out.count(s.send(pick(s).clone()));
            }
        }
        Some(skip) => {
            for s in subscribers {
                if s.socket_id() != skip {
                    out.count(s.send(pick(s).clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A subscriber with no socket: it records what it was sent and can be told to refuse.
    struct Fake {
        id: SocketId,
        subs: RefCell<Vec<Subscription>>,
        got: RefCell<Vec<Bytes>>,
        outcome: Cell<SendOutcome>,
        deflate: bool,
    }

    impl Subscriber for Fake {
        fn socket_id(&self) -> SocketId {
            self.id
        }
        fn app(&self) -> AppIdx {
            0
        }
        fn subscriptions(&self) -> &RefCell<Vec<Subscription>> {
            &self.subs
        }
        fn deflate(&self) -> bool {
            self.deflate
        }
        fn send(&self, frame: Bytes) -> SendOutcome {
            if matches!(
                self.outcome.get(),
                SendOutcome::Queued | SendOutcome::Backpressured
            ) {
                self.got.borrow_mut().push(frame);
            }
            self.outcome.get()
        }
    }

    fn fake(n: u64) -> Rc<Fake> {
        Rc::new(Fake {
            id: SocketId {
                random: 1,
                unique: n,
            },
            subs: RefCell::new(Vec::new()),
            got: RefCell::new(Vec::new()),
            outcome: Cell::new(SendOutcome::Queued),
            deflate: n % 2 == 1,
        })
    }

    fn assert_consistent(idx: &ChannelIndex<Fake>, name: &str) {
        if let Some(ch) = idx.get(0, name) {
            for (slot, s) in ch.subscribers.iter().enumerate() {
                let subs = s.subs.borrow();
                let rec = subs.iter().find(|r| &*r.channel == name).unwrap();
                assert_eq!(rec.slot.get() as usize, slot);
            }
        }
    }

    #[test]
    fn subscribe_unsubscribe_keeps_slots_consistent() {
        let mut idx = ChannelIndex::new(1);
        let subs: Vec<_> = (0..10).map(fake).collect();
        for s in &subs {
            assert!(idx.subscribe(s, "a").is_some());
            assert!(idx.subscribe(s, "b").is_some());
        }
        assert_eq!(
            idx.subscribe(&subs[0], "a"),
            None,
            "repeated subscribe is refused"
        );
        for i in [3usize, 0, 9, 5] {
            assert!(idx.unsubscribe(&subs[i], "a").is_some());
            assert!(idx.unsubscribe(&subs[i], "a").is_none());
            assert_consistent(&idx, "a");
        }
        assert_eq!(idx.local_count(0, "a"), 6);
        for s in &subs {
            idx.unsubscribe_all(s);
        }
        assert_eq!(idx.channel_count(), 0);
    }

    #[test]
    fn counts_report_first_and_last_local_subscriber() {
        let mut idx = ChannelIndex::new(1);
        let (a, b) = (fake(1), fake(2));
        assert_eq!(idx.subscribe(&a, "c"), Some(1));
        assert_eq!(idx.subscribe(&b, "c"), Some(2));
        assert_eq!(idx.unsubscribe(&a, "c"), Some(1));
        assert_eq!(idx.unsubscribe_all(&b), vec![(Rc::from("c"), 0)]);
        assert!(idx.get(0, "c").is_none());
    }

    #[test]
    fn fan_out_skips_the_excluded_and_reports_outcomes() {
        let mut idx = ChannelIndex::new(1);
        let subs: Vec<_> = (0..4).map(fake).collect();
        for s in &subs {
            idx.subscribe(s, "c");
        }
        subs[2].outcome.set(SendOutcome::CutOff);
        subs[3].outcome.set(SendOutcome::Backpressured);
        let frame = Bytes::from_static(b"f");
        let d = idx.deliver(0, "c", &frame, Some(subs[1].id));
        assert_eq!(
            d,
            Deliveries {
                queued: 1,
                backpressured: 1,
                cut_off: 1,
                dropped: 0
            }
        );
        assert_eq!(d.delivered(), 2);
        assert!(subs[1].got.borrow().is_empty());
        assert_eq!(
            subs[0].got.borrow().as_slice(),
            std::slice::from_ref(&frame)
        );
        assert_eq!(idx.deliver(0, "nope", &frame, None), Deliveries::default());
    }

    #[test]
    fn compressed_subscribers_get_the_compressed_frame_when_there_is_one() {
        let mut idx = ChannelIndex::new(1);
        let subs: Vec<_> = (0..4).map(fake).collect();
        for s in &subs {
            idx.subscribe(s, "c");
        }
        let (plain, deflated) = (Bytes::from_static(b"plain"), Bytes::from_static(b"z"));
        let frames = Frames {
            plain: &plain,
            deflated: &deflated,
        };
        assert_eq!(idx.deliver_frames(0, "c", frames, None).queued, 4);
        for s in &subs {
            let want = if s.deflate { &deflated } else { &plain };
            assert_eq!(s.got.borrow().as_slice(), std::slice::from_ref(want));
            // The same allocation: a refcounted clone, not a copy.
            assert_eq!(s.got.borrow()[0].as_ptr(), want.as_ptr());
        }
        // No compressed frame: everyone gets the plain one.
        idx.deliver(0, "c", &plain, None);
        for s in &subs {
            assert_eq!(s.got.borrow()[1], plain);
        }
    }
}
