//! A core's inbox: how other cores (and later the cluster bridge) hand it work.
//!
//! A bounded crossbeam channel plus an `AtomicWaker`. Producers `try_send` then `wake`; the core's drain task
//! registers its waker *before* checking emptiness (no lost wake-ups) and drains everything per wake, so a burst
//! of publishes costs one cross-thread wake. A full inbox is reported to the producer, never grown.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// The joining session left (unsubscribed or closed) meanwhile; its leave was sent.
    Gone,
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

/// Control messages (fact changes, queries, replies) queued in one core's inbox beyond which messages that
/// create new state (joins, sign-ins, queries) are refused at their source. Cleanup messages (leaves, sign-outs,
/// replies to accepted joins) are never refused: dropping one would corrupt shared facts for good, and each is
/// owed by an earlier accepted message, so the lane stays bounded by this cap plus the live state.
pub const CONTROL_LANE_CAP: usize = 256 * 1024;

impl CoreMsg {
    /// True for messages that undo or complete state already accepted (never refused).
    fn is_cleanup(&self) -> bool {
        match self {
            CoreMsg::Publish(_) | CoreMsg::Query(..) => false,
            CoreMsg::Home(h) => match h {
                HomeMsg::PresenceLeave { .. }
                | HomeMsg::UserOffline { .. }
                | HomeMsg::Unwatch { .. } => true,
                HomeMsg::CountDelta { delta, .. } => *delta < 0,
                _ => false,
            },
            // Terminations are rare admin actions that must not be lost.
            CoreMsg::PresenceJoined { .. }
            | CoreMsg::ToSocket { .. }
            | CoreMsg::TerminateUser { .. }
            | CoreMsg::Shutdown => true,
        }
    }
}

/// The sending side of one core's inbox: a bounded lane for publishes (full: the publisher is told, 503) and a
/// control lane for everything else (see `CONTROL_LANE_CAP`).
#[derive(Clone)]
pub struct InboxSender {
    publishes: Sender<CoreMsg>,
    control: Sender<CoreMsg>,
    control_depth: Arc<AtomicUsize>,
    waker: Arc<AtomicWaker>,
    overflows: Arc<AtomicU64>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct InboxFull;

impl InboxSender {
    pub fn send(&self, msg: CoreMsg) -> Result<(), InboxFull> {
        let sent = match msg {
            CoreMsg::Publish(_) => match self.publishes.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(InboxFull),
            },
            msg => {
                if !msg.is_cleanup()
                    && self.control_depth.load(Ordering::Relaxed) >= CONTROL_LANE_CAP
                {
                    Err(InboxFull)
                } else {
                    self.control_depth.fetch_add(1, Ordering::Relaxed);
                    self.control.send(msg).map_err(|_| InboxFull)
                }
            }
        };
        if sent.is_err() {
            self.overflows.fetch_add(1, Ordering::Relaxed);
        }
        // Wake even on failure: a consumer can only be asleep on a full lane if a wake was lost.
        self.waker.wake();
        sent
    }

    /// Wakes the core without a message (it then checks the shutdown flag).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Messages refused so far because a lane was full.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }
}

pub struct InboxReceiver {
    publishes: Receiver<CoreMsg>,
    control: Receiver<CoreMsg>,
    control_depth: Arc<AtomicUsize>,
    waker: Arc<AtomicWaker>,
}

impl InboxReceiver {
    /// Waits until a message is queued (or `wake` was called), then moves every queued message into `out`:
    /// control messages first (replies and fact changes), then publishes.
    pub async fn recv_batch(&self, out: &mut Vec<CoreMsg>, stop: &AtomicBool) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.publishes.is_empty() && self.control.is_empty() && !stop.load(Ordering::Acquire)
            {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
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
}

pub fn inbox(capacity: usize) -> (InboxSender, InboxReceiver) {
    let (ptx, prx) = crossbeam_channel::bounded(capacity);
    let (ctx, crx) = crossbeam_channel::unbounded();
    let waker = Arc::new(AtomicWaker::new());
    let depth = Arc::new(AtomicUsize::new(0));
    (
        InboxSender {
            publishes: ptx,
            control: ctx,
            control_depth: depth.clone(),
            waker: waker.clone(),
            overflows: Arc::new(AtomicU64::new(0)),
        },
        InboxReceiver {
            publishes: prx,
            control: crx,
            control_depth: depth,
            waker,
        },
    )
}
