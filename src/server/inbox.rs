//! A core's inbox: how other cores (and later the cluster bridge) hand it work.
//!
//! A bounded crossbeam channel plus an `AtomicWaker`. Producers `try_send` then `wake`; the core's drain task
//! registers its waker *before* checking emptiness (no lost wake-ups) and drains everything per wake, so a burst
//! of publishes costs one cross-thread wake. A full inbox is reported to the producer, never grown.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::server::socket_id::SocketId;

/// One publish, already encoded: one frame per channel, shared by every core.
pub struct Publication {
    pub app: AppIdx,
    pub frames: Vec<(Box<str>, Bytes)>,
    pub except: Option<SocketId>,
}

/// Questions a REST request on one core asks every core about its local state.
#[derive(Debug, Clone)]
pub enum Query {
    /// Local subscriber count of one channel.
    Channel { app: AppIdx, name: Arc<str> },
    /// Local subscriber counts of every channel whose name starts with `prefix`.
    Channels { app: AppIdx, prefix: Arc<str> },
    /// Every channel name with local subscribers, all apps.
    AllChannels,
}

#[derive(Debug)]
pub enum Answer {
    Count(u64),
    Counts(Vec<(Box<str>, u64)>),
    Names(Vec<(AppIdx, Box<str>)>),
}

pub enum CoreMsg {
    Publish(Arc<Publication>),
    Query(Query, oneshot::Sender<Answer>),
    /// Stop accepting, close every connection with 4200, exit.
    Shutdown,
}

#[derive(Clone)]
pub struct InboxSender {
    tx: Sender<CoreMsg>,
    waker: Arc<AtomicWaker>,
    overflows: Arc<AtomicU64>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct InboxFull;

impl InboxSender {
    pub fn send(&self, msg: CoreMsg) -> Result<(), InboxFull> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.overflows.fetch_add(1, Ordering::Relaxed);
                // Still wake: the consumer may be asleep on a full queue only if a wake was lost.
                self.waker.wake();
                Err(InboxFull)
            }
            Err(TrySendError::Disconnected(_)) => Err(InboxFull),
        }
    }

    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }
}

pub struct InboxReceiver {
    rx: Receiver<CoreMsg>,
    waker: Arc<AtomicWaker>,
}

impl InboxReceiver {
    /// Waits until at least one message is queued, then moves every queued message into `out`.
    pub async fn recv_batch(&self, out: &mut Vec<CoreMsg>) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.rx.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        while let Ok(m) = self.rx.try_recv() {
            out.push(m);
        }
    }
}

pub fn inbox(capacity: usize) -> (InboxSender, InboxReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let waker = Arc::new(AtomicWaker::new());
    (
        InboxSender {
            tx,
            waker: waker.clone(),
            overflows: Arc::new(AtomicU64::new(0)),
        },
        InboxReceiver { rx, waker },
    )
}
