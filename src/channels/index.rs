//! The per-core channel index: which of this core's sessions are subscribed to which channel, and the local
//! fan-out loop over them.
//!
//! One map per app, channel name -> dense subscriber list. Subscribing appends; leaving swaps the last
//! subscriber into the hole and fixes its recorded slot, so both are O(1). Fan-out walks a contiguous
//! `Vec<Rc<Session>>` and pushes a refcounted clone of one pre-encoded frame.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::app::AppIdx;
use crate::server::socket_id::SocketId;
use crate::ws::session::{Session, Subscription};

#[derive(Default)]
pub struct Channel {
    pub subscribers: Vec<Rc<Session>>,
}

pub struct ChannelIndex {
    apps: Vec<HashMap<Rc<str>, Channel>>,
}

impl ChannelIndex {
    pub fn new(app_count: usize) -> Self {
        ChannelIndex {
            apps: (0..app_count).map(|_| HashMap::new()).collect(),
        }
    }

    pub fn is_subscribed(session: &Session, name: &str) -> bool {
        session
            .subscriptions
            .borrow()
            .iter()
            .any(|s| &*s.channel == name)
    }

    /// Adds the session; false if it was already subscribed. Returns the channel's local subscriber count.
    pub fn subscribe(&mut self, session: &Rc<Session>, name: &str) -> Option<usize> {
        if Self::is_subscribed(session, name) {
            return None;
        }
        let map = &mut self.apps[session.app as usize];
        let (key, channel) = match map.get_key_value(name) {
            Some((k, _)) => {
                let k = k.clone();
                let c = map.get_mut(name).expect("key just found");
                (k, c)
            }
            None => {
                let k: Rc<str> = Rc::from(name);
                (k.clone(), map.entry(k).or_default())
            }
        };
        let slot = channel.subscribers.len() as u32;
        channel.subscribers.push(session.clone());
        session.subscriptions.borrow_mut().push(Subscription {
            channel: key,
            slot: slot.into(),
        });
        Some(channel.subscribers.len())
    }

    /// Removes the session; false if it was not subscribed. Returns the remaining local subscriber count.
    pub fn unsubscribe(&mut self, session: &Session, name: &str) -> Option<usize> {
        let sub = {
            let mut subs = session.subscriptions.borrow_mut();
            let i = subs.iter().position(|s| &*s.channel == name)?;
            subs.swap_remove(i)
        };
        Some(self.remove_slot(session.app, &sub))
    }

    /// Leaves every channel (disconnect). Returns the names left, for shared-fact updates.
    pub fn unsubscribe_all(&mut self, session: &Session) -> Vec<Rc<str>> {
        let subs = std::mem::take(&mut *session.subscriptions.borrow_mut());
        subs.into_iter()
            .map(|sub| {
                self.remove_slot(session.app, &sub);
                sub.channel
            })
            .collect()
    }

    fn remove_slot(&mut self, app: AppIdx, sub: &Subscription) -> usize {
        let map = &mut self.apps[app as usize];
        let Some(channel) = map.get_mut(&*sub.channel) else {
            debug_assert!(false, "subscription without channel entry");
            return 0;
        };
        let slot = sub.slot.get() as usize;
        channel.subscribers.swap_remove(slot);
        if let Some(moved) = channel.subscribers.get(slot) {
            let subs = moved.subscriptions.borrow();
            // Every subscriber's record holds this channel's one key `Rc`, so identity finds it.
            if let Some(s) = subs.iter().find(|s| Rc::ptr_eq(&s.channel, &sub.channel)) {
                s.slot.set(slot as u32);
            }
        }
        let left = channel.subscribers.len();
        if left == 0 {
            map.remove(&*sub.channel);
        }
        left
    }

    pub fn get(&self, app: AppIdx, name: &str) -> Option<&Channel> {
        self.apps[app as usize].get(name)
    }

    pub fn local_count(&self, app: AppIdx, name: &str) -> usize {
        self.get(app, name).map_or(0, |c| c.subscribers.len())
    }

    pub fn channels(&self, app: AppIdx) -> impl Iterator<Item = (&Rc<str>, &Channel)> {
        self.apps[app as usize].iter()
    }

    pub fn channel_count(&self) -> usize {
        self.apps.iter().map(|m| m.len()).sum()
    }

    /// The fan-out loop: one refcounted clone of `frame` per subscriber, except `except`. Returns deliveries.
    #[inline]
    pub fn deliver(
        &self,
        app: AppIdx,
        name: &str,
        frame: &Bytes,
        except: Option<SocketId>,
    ) -> usize {
        let Some(channel) = self.apps[app as usize].get(name) else {
            return 0;
        };
        deliver_to(&channel.subscribers, frame, except)
    }
}

#[inline]
pub fn deliver_to(subscribers: &[Rc<Session>], frame: &Bytes, except: Option<SocketId>) -> usize {
    let mut n = 0;
    match except {
        None => {
            for s in subscribers {
                s.send(frame.clone());
            }
            n = subscribers.len();
        }
        Some(skip) => {
            for s in subscribers {
                if s.socket_id != skip {
                    s.send(frame.clone());
                    n += 1;
                }
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u64) -> Rc<Session> {
        Rc::new(Session::new(
            SocketId {
                random: 1,
                unique: n,
            },
            0,
            -1,
            1 << 20,
        ))
    }

    #[test]
    fn subscribe_unsubscribe_keeps_slots_consistent() {
        let mut idx = ChannelIndex::new(1);
        let sessions: Vec<_> = (0..10).map(session).collect();
        for s in &sessions {
            assert!(idx.subscribe(s, "a").is_some());
            assert!(idx.subscribe(s, "b").is_some());
        }
        assert!(
            idx.subscribe(&sessions[0], "a").is_none(),
            "repeated subscribe is refused"
        );
        for i in [3usize, 0, 9, 5] {
            assert!(idx.unsubscribe(&sessions[i], "a").is_some());
            assert!(idx.unsubscribe(&sessions[i], "a").is_none());
        }
        assert_eq!(idx.local_count(0, "a"), 6);
        // Every remaining subscriber's recorded slot points at itself.
        let ch = idx.get(0, "a").unwrap();
        for (slot, s) in ch.subscribers.iter().enumerate() {
            let subs = s.subscriptions.borrow();
            let rec = subs.iter().find(|r| &*r.channel == "a").unwrap();
            assert_eq!(rec.slot.get() as usize, slot);
        }
        for s in &sessions {
            idx.unsubscribe_all(s);
        }
        assert_eq!(idx.channel_count(), 0);
    }

    #[test]
    fn deliver_skips_the_excluded_socket() {
        let mut idx = ChannelIndex::new(1);
        let sessions: Vec<_> = (0..3).map(session).collect();
        for s in &sessions {
            idx.subscribe(s, "c");
        }
        let frame = Bytes::from_static(b"f");
        assert_eq!(idx.deliver(0, "c", &frame, Some(sessions[1].socket_id)), 2);
        assert_eq!(sessions[1].outbox.queued_bytes(), 0);
        assert!(sessions[0].outbox.queued_bytes() > 0);
        assert_eq!(idx.deliver(0, "nope", &frame, None), 0);
    }
}
