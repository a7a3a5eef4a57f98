//! A core's inbox: the queue through which other cores (and later the cluster bridge) hand a core work. The
//! mechanism only; what travels in it is `runtime::message`.
//!
//! A bounded crossbeam channel for publishes and an unbounded one for control messages, plus an `AtomicWaker`.
//! Producers `try_send` then `wake`; the core's drain task registers its waker *before* checking emptiness (no
//! lost wake-ups) and drains everything per wake, so a burst costs one cross-thread wake. A full lane is reported
//! to the producer, never grown.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Which lane a message takes, and whether it may be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Publishes: a bounded lane; when full the publisher is told (503).
    Publish,
    /// Messages that create state (joins, sign-ins, queries): refused when the control lane is over its cap.
    Control,
    /// Messages that undo or complete state already accepted (leaves, sign-outs, replies): never refused, since
    /// dropping one would corrupt shared facts for good. Each is owed by an earlier accepted message, so the
    /// control lane stays bounded by `CONTROL_LANE_CAP` plus the live state.
    Cleanup,
}

/// What an inbox needs to know of its messages.
pub trait Routed {
    fn lane(&self) -> Lane;
}

/// Control messages queued in one core's inbox beyond which [`Lane::Control`] messages are refused at their source.
pub const CONTROL_LANE_CAP: usize = 256 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct InboxFull;

/// The sending side of one core's inbox.
pub struct InboxSender<M> {
    publishes: Sender<M>,
    control: Sender<M>,
    control_depth: Arc<AtomicUsize>,
    waker: Arc<AtomicWaker>,
}

impl<M> Clone for InboxSender<M> {
    fn clone(&self) -> Self {
        InboxSender {
            publishes: self.publishes.clone(),
            control: self.control.clone(),
            control_depth: self.control_depth.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<M: Routed> InboxSender<M> {
    pub fn send(&self, msg: M) -> Result<(), InboxFull> {
        self.offer(msg).map_err(|_| InboxFull)
    }

    /// [`InboxSender::send`] that hands a refused message back, for senders with a fallback.
    pub fn offer(&self, msg: M) -> Result<(), M> {
        let sent = match msg.lane() {
            Lane::Publish => match self.publishes.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => Err(m),
            },
            Lane::Control if self.control_depth.load(Ordering::Relaxed) >= CONTROL_LANE_CAP => {
                Err(msg)
            }
            Lane::Control | Lane::Cleanup => {
                self.control_depth.fetch_add(1, Ordering::Relaxed);
                self.control.send(msg).map_err(|e| e.into_inner())
            }
        };
        // Wake even on failure: a consumer can only be asleep on a full lane if a wake was lost.
        self.waker.wake();
        sent
    }

    /// Wakes the core without a message (it then checks the shutdown flag).
    pub fn wake(&self) {
        self.waker.wake();
    }
}

pub struct InboxReceiver<M> {
    publishes: Receiver<M>,
    control: Receiver<M>,
    control_depth: Arc<AtomicUsize>,
    waker: Arc<AtomicWaker>,
}

impl<M> InboxReceiver<M> {
    /// Waits until a message is queued (or `wake_for` holds when a wake arrives), then moves every queued message
    /// into `out`.
    pub async fn recv_batch(&self, out: &mut Vec<M>, wake_for: impl Fn() -> bool) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.is_empty() && !wake_for() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        self.drain_into(out);
    }

    /// Moves every queued message into `out` without waiting: control messages first (replies and fact changes),
    /// then publishes.
    pub fn drain_into(&self, out: &mut Vec<M>) {
        let mut n = 0;
        while let Ok(m) = self.control.try_recv() {
            out.push(m);
            n += 1;
        }
        self.control_depth.fetch_sub(n, Ordering::Relaxed);
        while let Ok(m) = self.publishes.try_recv() {
            out.push(m);
        }
    }

    /// Moves the publishes queued now (not the control messages, nor publishes queued meanwhile) into `out`.
    pub fn take_publishes(&self, out: &mut Vec<M>) {
        for _ in 0..self.publishes.len() {
            match self.publishes.try_recv() {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
    }

    pub fn publishes_empty(&self) -> bool {
        self.publishes.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.publishes.is_empty() && self.control.is_empty()
    }
}

pub fn inbox<M>(publish_capacity: usize) -> (InboxSender<M>, InboxReceiver<M>) {
    let (ptx, prx) = crossbeam_channel::bounded(publish_capacity);
    let (ctx, crx) = crossbeam_channel::unbounded();
    let waker = Arc::new(AtomicWaker::new());
    let depth = Arc::new(AtomicUsize::new(0));
    (
        InboxSender {
            publishes: ptx,
            control: ctx,
            control_depth: depth.clone(),
            waker: waker.clone(),
        },
        InboxReceiver {
            publishes: prx,
            control: crx,
            control_depth: depth,
            waker,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct M(Lane);
    impl Routed for M {
        fn lane(&self) -> Lane {
            self.0
        }
    }

    #[test]
    fn a_full_publish_lane_refuses_and_cleanups_always_pass() {
        let (tx, rx) = inbox::<M>(2);
        assert!(tx.send(M(Lane::Publish)).is_ok());
        assert!(tx.send(M(Lane::Publish)).is_ok());
        assert_eq!(tx.send(M(Lane::Publish)), Err(InboxFull));
        for _ in 0..CONTROL_LANE_CAP {
            tx.send(M(Lane::Control)).unwrap();
        }
        assert_eq!(tx.send(M(Lane::Control)), Err(InboxFull));
        assert!(tx.send(M(Lane::Cleanup)).is_ok());
        let mut out = Vec::new();
        rx.drain_into(&mut out);
        assert_eq!(out.len(), CONTROL_LANE_CAP + 3);
        assert_eq!(
            out.last().map(|m| m.0),
            Some(Lane::Publish),
            "control first"
        );
        assert!(tx.send(M(Lane::Control)).is_ok(), "drained: room again");
    }
}
