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
    /// Home core only: a presence channel's distinct user ids.
    PresenceUsers { app: AppIdx, name: Arc<str> },
    /// Home core only: a cache channel's last event (data token and seconds left).
    Cache { app: AppIdx, name: Arc<str> },
}

#[derive(Debug)]
pub enum Answer {
    Count(u64),
    Counts(Vec<(Box<str>, u64)>),
    Names(Vec<(AppIdx, Box<str>)>),
    Users(Vec<Box<str>>),
    Cache(Option<(Bytes, u64)>),
}

/// How a presence join ended, as told to the joining connection's handler.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinReply {
    /// Subscribed, and `subscription_succeeded` (with the roster) sent.
    Joined,
    /// The channel is at its member limit.
    Full,
}

/// Changes to facts owned by a channel's (or user's) home core (see `channels::facts`).
pub enum HomeMsg {
    PresenceJoin {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
        user_info: Box<str>,
        socket: SocketId,
        /// The joining socket's core.
        core: usize,
        reply: oneshot::Sender<JoinReply>,
    },
    PresenceLeave {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
    },
    /// A subscription was added (+1) or removed (-1) somewhere (subscription counting apps only).
    CountDelta {
        app: AppIdx,
        channel: Box<str>,
        delta: i64,
    },
    CacheStore {
        app: AppIdx,
        channel: Box<str>,
        frame: Bytes,
        data_token: Bytes,
    },
    CacheGet {
        app: AppIdx,
        channel: Box<str>,
        reply: oneshot::Sender<Option<Bytes>>,
    },
    /// A connection signed in as / signed out from `user_id` (watchlist online state, spec §7.5).
    UserOnline {
        app: AppIdx,
        user_id: Box<str>,
    },
    UserOffline {
        app: AppIdx,
        user_id: Box<str>,
    },
    /// `watcher` (a socket on core `core`) watches `users`; the reply says which are online now.
    Watch {
        app: AppIdx,
        users: Vec<Box<str>>,
        core: usize,
        watcher: SocketId,
        reply: oneshot::Sender<Vec<bool>>,
    },
    Unwatch {
        app: AppIdx,
        users: Vec<Box<str>>,
        watcher: SocketId,
    },
}

pub enum CoreMsg {
    Publish(Arc<Publication>),
    Query(Query, oneshot::Sender<Answer>),
    Home(HomeMsg),
    /// Close local sessions signed in as `user_id` with 4009 (terminate_connections, spec §7.4).
    TerminateUser {
        app: AppIdx,
        user_id: Arc<str>,
    },
    /// The home core's answer to a presence join, through the joiner's inbox so it is ordered before any
    /// member event the home core sends after it: subscribe the socket and send `success` (None: full).
    PresenceJoined {
        socket: SocketId,
        channel: Box<str>,
        success: Option<Bytes>,
        reply: oneshot::Sender<JoinReply>,
    },
    /// A frame for one local socket, if it is still here (watchlist events).
    ToSocket {
        socket: SocketId,
        frame: Bytes,
    },
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
