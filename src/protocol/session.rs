//! One Pusher connection's state on its core: identity, output queue, subscriptions, presence memberships,
//! sign-in, and the timestamps the liveness rules read. Shared on its core by the reader task, the writer task,
//! the channel index (which fans frames into its outbox) and the liveness scan. `!Send` by design: a session never
//! leaves the core that accepted it.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::app::AppIdx;
use crate::protocol::codes::close::OVER_CAPACITY;
use crate::protocol::outbound;
use crate::socket_id::SocketId;
use crate::ws::frame;
use crate::ws::outbox::{Outbox, Push};

/// A channel this session is subscribed to, and where it sits in that channel's subscriber list (so leaving is
/// O(1) however big the channel is). Kept here, written by the channel index.
pub struct Subscription {
    pub channel: Rc<str>,
    pub slot: Cell<u32>,
}

/// The user this connection signed in as (docs/protocol.md#sign-in).
pub struct SignedInUser {
    pub id: Rc<str>,
    /// `user_info` as raw JSON, for presence joins without channel_data.
    pub info: Box<str>,
    pub watchlist: Vec<Box<str>>,
}

/// A presence membership: the channel and the user id this connection joined it as.
pub struct Membership {
    pub channel: Rc<str>,
    pub user_id: Rc<str>,
}

/// What became of a frame handed to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued; the writer was idle, so it goes out on this loop turn.
    Queued,
    /// Queued behind a write still in flight.
    Backpressured,
    /// The queue went over its cap: the backlog was dropped and the connection is being closed (4100).
    CutOff,
    /// The connection is already closing; the frame was dropped.
    Dropped,
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
    /// Last time any frame arrived from the client (docs/protocol.md#heartbeats: any frame proves liveness).
    pub last_seen: Cell<Instant>,
    /// When the server sent its liveness ping, if one is outstanding.
    pub ping_sent: Cell<Option<Instant>>,
    /// When the server started closing this session.
    pub closing_since: Cell<Option<Instant>>,
    /// The close code the server sent (0: none, the client closed or went away first), for the metrics.
    pub close_code: Cell<u16>,
    pub subscriptions: RefCell<Vec<Subscription>>,
    /// Presence channels joined (or being joined) and as whom.
    pub memberships: RefCell<Vec<Membership>>,
    pub user: RefCell<Option<SignedInUser>>,
    pub connected_at: Instant,
    /// The watchlist snapshot is being gathered: online/offline changes that arrive meanwhile are newer than it,
    /// so they wait here (one entry per watched user, the latest state) and are sent after it.
    pub watch_snapshot_pending: Cell<bool>,
    pub deferred_watch_events: RefCell<Vec<(Box<str>, bool)>>,
    /// The writer task still holds the socket's write half.
    pub writer_alive: Cell<bool>,
    /// The reader task still holds the read half. While either half lives, `fd` is this connection's.
    pub reader_alive: Cell<bool>,
    /// Signed in or subscribed to an authorized channel (docs/protocol.md#authorized-connections).
    pub authorized: Cell<bool>,
    /// Negotiated permessage-deflate at the upgrade: the fan-out hands it a publication's compressed frame.
    /// Set once, before the session is registered; the only compression state a connection has.
    pub deflate: Cell<bool>,
    /// Client events in the current one-second window: (window start, count) (docs/protocol.md#client-events).
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
            close_code: Cell::new(0),
            closing_since: Cell::new(None),
            subscriptions: RefCell::new(Vec::new()),
            memberships: RefCell::new(Vec::new()),
            user: RefCell::new(None),
            connected_at: now,
            watch_snapshot_pending: Cell::new(false),
            deferred_watch_events: RefCell::new(Vec::new()),
            writer_alive: Cell::new(true),
            reader_alive: Cell::new(true),
            authorized: Cell::new(false),
            deflate: Cell::new(false),
            client_event_window: Cell::new((now, 0)),
        }
    }

    /// Counts a client event against the per-second limit; false when over it.
    pub fn allow_client_event(&self, per_second: u32) -> bool {
        let now = Instant::now();
        let (start, n) = self.client_event_window.get();
        if now.duration_since(start) >= Duration::from_secs(1) {
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

    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.subscriptions
            .borrow()
            .iter()
            .any(|s| &*s.channel == channel)
    }

    /// The user id this connection joined presence `channel` as (also while the join is in flight).
    pub fn membership(&self, channel: &str) -> Option<Rc<str>> {
        self.memberships
            .borrow()
            .iter()
            .find(|m| &*m.channel == channel)
            .map(|m| m.user_id.clone())
    }

    /// Forgets the membership of `channel`, returning whom it was for.
    pub fn take_membership(&self, channel: &str) -> Option<Membership> {
        let mut ms = self.memberships.borrow_mut();
        let i = ms.iter().position(|m| &*m.channel == channel)?;
        Some(ms.swap_remove(i))
    }

    /// Queues a frame; a reader that fell too far behind is cut off here.
    #[inline]
    pub fn send(&self, frame: Bytes) -> SendOutcome {
        match self.outbox.push(frame) {
            Push::Queued => SendOutcome::Queued,
            Push::Backpressured => SendOutcome::Backpressured,
            Push::Closed => SendOutcome::Dropped,
            Push::Overflow => {
                self.cut_off();
                SendOutcome::CutOff
            }
        }
    }

    /// Holds a watchlist change while the snapshot is gathered; one entry per user, the latest state wins, so
    /// this never holds more than the watchlist.
    pub fn defer_watch_event(&self, user_id: &str, online: bool) {
        let mut held = self.deferred_watch_events.borrow_mut();
        match held.iter_mut().find(|(u, _)| &**u == user_id) {
            Some(entry) => entry.1 = online,
            None => held.push((Box::from(user_id), online)),
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
        let reason = "Connection too slow: output buffer full";
        let error = outbound::error(Some(OVER_CAPACITY), reason);
        if self
            .outbox
            .replace_and_finish(&[error, frame::encode_close(OVER_CAPACITY, reason)])
        {
            self.closing_since.set(Some(Instant::now()));
            self.close_code.set(OVER_CAPACITY);
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
        self.close_code.set(code);
        let close = frame::encode_close(code, reason);
        match error_frame {
            Some(e) => self.outbox.finish(&[e, close]),
            None => self.outbox.finish(&[close]),
        };
    }

    /// Answers the client's Close (RFC 6455 §5.5.1: echoing its code); the client ended the connection.
    pub fn echo_close(&self, code: u16) {
        if self.is_closing() {
            return;
        }
        self.close(code, "", None);
        self.close_code.set(0);
    }

    /// `pusher:error` with `code` and `message`, then Close with the same code (refusals, terminations).
    pub fn close_with_error(&self, code: u16, message: &str) {
        self.close(code, message, Some(outbound::error(Some(code), message)));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(
            SocketId {
                random: 1,
                unique: 1,
            },
            0,
            -1,
            64 * 1024,
        )
    }

    #[test]
    fn deferred_watch_events_keep_one_entry_per_user() {
        let s = session();
        for i in 0..1000 {
            s.defer_watch_event("a", i % 2 == 0);
            s.defer_watch_event("b", true);
        }
        let held = s.deferred_watch_events.borrow();
        assert_eq!(*held, [(Box::from("a"), false), (Box::from("b"), true)]);
    }

    #[test]
    fn the_client_event_rate_is_per_second() {
        let s = session();
        assert!((0..10).all(|_| s.allow_client_event(10)));
        assert!(!s.allow_client_event(10));
        assert!(!session().allow_client_event(0));
    }
}
