//! One WebSocket connection's state, shared on its core by the reader task, the writer task, the channel index
//! (which fans frames into its outbox) and the core's liveness scan. `!Send` by design: a session never leaves
//! the core that accepted it.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use crate::app::AppIdx;
use crate::protocol::codes::close::OVER_CAPACITY;
use crate::server::socket_id::SocketId;
use crate::ws::frame;
use crate::ws::outbox::{Outbox, Push};

/// A channel this session is subscribed to, and where it sits in that channel's subscriber list (so leaving is
/// O(1) however big the channel is).
pub struct Subscription {
    pub channel: Rc<str>,
    pub slot: Cell<u32>,
}

/// The user this connection signed in as (spec §7.1).
pub struct SignedInUser {
    pub id: Rc<str>,
    pub watchlist: Vec<Box<str>>,
}

/// A presence membership: the channel and the user id this connection joined it as.
pub struct Membership {
    pub channel: Rc<str>,
    pub user_id: Rc<str>,
}

pub struct Session {
    pub socket_id: SocketId,
    /// `socket_id` as text, for auth signatures and logs.
    pub socket_id_text: Box<str>,
    pub app: AppIdx,
    /// Position in the core's session table.
    pub slot: Cell<usize>,
    fd: RawFd,
    pub outbox: Outbox,
    /// Last time any frame arrived from the client (spec §2.4: any frame proves liveness).
    pub last_seen: Cell<Instant>,
    /// When the server sent its liveness ping, if one is outstanding.
    pub ping_sent: Cell<Option<Instant>>,
    /// When the server started closing this session.
    pub closing_since: Cell<Option<Instant>>,
    pub subscriptions: RefCell<Vec<Subscription>>,
    /// Presence channels joined (or being joined) and as whom.
    pub memberships: RefCell<Vec<Membership>>,
    pub user: RefCell<Option<SignedInUser>>,
    /// The signed-in user's `user_info` as raw JSON, for presence joins without channel_data.
    pub user_info: RefCell<Option<String>>,
    pub connected_at: Instant,
    /// The watchlist snapshot is being gathered: online/offline events that arrive meanwhile are newer than
    /// it, so they are held and sent after it.
    pub watch_snapshot_pending: Cell<bool>,
    pub deferred_watch_events: RefCell<Vec<Bytes>>,
    /// The writer task still holds the socket's write half.
    pub writer_alive: Cell<bool>,
    /// The reader task still holds the read half. While either half lives, `fd` is this connection's.
    pub reader_alive: Cell<bool>,
    /// Signed in or subscribed to an authorized channel (authorized-connections mode, spec §7.2).
    pub authorized: Cell<bool>,
    /// Client events in the current one-second window: (window start, count) (spec §6: 10/s).
    client_event_window: Cell<(Instant, u32)>,
}

impl Session {
    pub fn new(socket_id: SocketId, app: AppIdx, fd: RawFd, outbox_cap: usize) -> Self {
        let now = Instant::now();
        Session {
            socket_id,
            socket_id_text: socket_id.to_string().into_boxed_str(),
            app,
            slot: Cell::new(usize::MAX),
            fd,
            outbox: Outbox::new(outbox_cap),
            last_seen: Cell::new(now),
            ping_sent: Cell::new(None),
            closing_since: Cell::new(None),
            subscriptions: RefCell::new(Vec::new()),
            memberships: RefCell::new(Vec::new()),
            user: RefCell::new(None),
            user_info: RefCell::new(None),
            connected_at: now,
            watch_snapshot_pending: Cell::new(false),
            deferred_watch_events: RefCell::new(Vec::new()),
            writer_alive: Cell::new(true),
            reader_alive: Cell::new(true),
            authorized: Cell::new(false),
            client_event_window: Cell::new((now, 0)),
        }
    }

    /// Counts a client event against the per-second limit; false when over it.
    pub fn allow_client_event(&self, per_second: u32) -> bool {
        let now = Instant::now();
        let (start, n) = self.client_event_window.get();
        if now.duration_since(start) >= std::time::Duration::from_secs(1) {
            self.client_event_window.set((now, 1));
            return per_second > 0;
        }
        if n >= per_second {
            return false;
        }
        self.client_event_window.set((start, n + 1));
        true
    }

    pub fn user_id(&self) -> Option<Rc<str>> {
        self.user.borrow().as_ref().map(|u| u.id.clone())
    }

    pub fn membership(&self, channel: &str) -> Option<Rc<str>> {
        self.memberships
            .borrow()
            .iter()
            .find(|m| &*m.channel == channel)
            .map(|m| m.user_id.clone())
    }

    /// Queues a frame; a reader that fell too far behind is cut off here.
    #[inline]
    pub fn send(&self, frame: Bytes) {
        if self.outbox.push(frame) == Push::Overflow {
            self.cut_off();
        }
    }

    /// A reader that fell too far behind: its backlog is dropped at once (memory stays bounded) and only
    /// `pusher:error` + Close 4100 stay queued, so a client that is merely slow learns why and backs off before
    /// reconnecting. One that never reads is cut when the close grace runs out.
    fn cut_off(&self) {
        crate::debug!(
            "socket {} cut off: over {} queued bytes",
            self.socket_id,
            self.outbox.queued_bytes()
        );
        crate::log::count_slow_reader();
        let reason = "Connection too slow: output buffer full";
        let error = crate::protocol::outbound::error(Some(OVER_CAPACITY), reason);
        if self
            .outbox
            .replace_and_finish(&[error, frame::encode_close(OVER_CAPACITY, reason)])
        {
            self.closing_since.set(Some(Instant::now()));
        }
    }

    pub fn touch(&self) {
        self.last_seen.set(Instant::now());
        self.ping_sent.set(None);
    }

    pub fn is_closing(&self) -> bool {
        self.closing_since.get().is_some()
    }

    /// Starts a clean close: optional `pusher:error` frame, then a Close frame with `code`. The writer sends them
    /// and half-closes; the reader ends when the client answers (or the liveness scan forces it).
    pub fn close(&self, code: u16, reason: &str, error_frame: Option<Bytes>) {
        if self.is_closing() {
            return;
        }
        self.closing_since.set(Some(Instant::now()));
        let close = frame::encode_close(code, reason);
        match error_frame {
            Some(e) => self.outbox.finish(&[e, close]),
            None => self.outbox.finish(&[close]),
        };
    }

    /// Cuts the connection at once: both directions shut, queued frames dropped. Wakes the reader (EOF) and the
    /// writer (dead outbox or EPIPE), which then tear the session down. Never touches the channel index, so it is
    /// safe in the middle of a fan-out loop.
    pub fn abort(&self) {
        if self.closing_since.get().is_none() {
            self.closing_since.set(Some(Instant::now()));
        }
        self.outbox.kill();
        self.shutdown_socket();
    }

    /// Shuts the socket down in both directions so pending reads return EOF and writes fail. Only while a task
    /// holds a half of the socket: after that the descriptor may already belong to another connection.
    pub fn shutdown_socket(&self) {
        if !self.writer_alive.get() && !self.reader_alive.get() {
            return;
        }
        // SAFETY: `fd` belongs to this session's TcpStream, which outlives the session's tasks; shutdown on a
        // closed or reused descriptor at worst fails with EBADF/ENOTCONN, which we ignore.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }
}
