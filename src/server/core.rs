//! One core: its sessions, its channel index, and the work other cores send it.
//!
//! A `Core` lives on one thread inside one monoio runtime and is shared by that core's tasks through `Rc`.
//! Its state is `RefCell`s, never locks; other cores reach it only through its inbox.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::app::{App, AppIdx};
use crate::channels::facts::FactsTable;
use crate::channels::index::ChannelIndex;
use crate::channels::name::{ChannelKind, ChannelType};
use crate::protocol::codes::close;
use crate::protocol::outbound;
use crate::server::home::UserTable;
use crate::server::inbox::{Answer, CoreMsg, HomeMsg, InboxFull, JoinReply, Publication, Query};
use crate::server::shared::Shared;
use crate::server::socket_id::{SocketId, SocketIdGen};
use crate::ws::frame;
use crate::ws::session::Session;

/// How long a closing session may wait for the client's Close reply before the socket is cut.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

pub struct Core {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub channels: RefCell<ChannelIndex>,
    /// Facts of the channels this core is home to (see `channels::facts`).
    pub facts: RefCell<FactsTable>,
    /// Online state of the users this core is home to.
    pub users: RefCell<UserTable>,
    sessions: RefCell<SessionTable>,
    ids: SocketIdGen,
    read_buffers: RefCell<Vec<Vec<u8>>>,
    /// The last `/stats` channel count and when it was taken (see `distinct_channels`).
    stats_channels: std::cell::Cell<Option<(Instant, usize)>>,
}

/// `/stats` is unauthenticated and its channel count asks every core for every name: reuse an answer this fresh.
const STATS_MAX_AGE: Duration = Duration::from_secs(1);

/// Read buffers kept for reuse per core; more are allocated on demand and freed on return.
const READ_BUFFER_POOL: usize = 64;

/// Sessions by slot, with a free list so slots are reused.
#[derive(Default)]
struct SessionTable {
    slots: Vec<Option<Rc<Session>>>,
    by_socket: HashMap<SocketId, usize>,
    free: Vec<usize>,
    len: usize,
}

impl Core {
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let apps = shared.apps.len();
        Core {
            id,
            shared,
            channels: RefCell::new(ChannelIndex::new(apps)),
            facts: RefCell::new(FactsTable::default()),
            users: RefCell::new(UserTable::default()),
            sessions: RefCell::new(SessionTable::default()),
            ids: SocketIdGen::new(id),
            read_buffers: RefCell::new(Vec::new()),
            stats_channels: std::cell::Cell::new(None),
        }
    }

    pub fn app(&self, idx: AppIdx) -> &App {
        self.shared.apps.get(idx)
    }

    pub fn next_socket_id(&self) -> SocketId {
        self.ids.next()
    }

    /// Borrows an empty buffer of `size` capacity for one read.
    pub fn take_read_buffer(&self, size: usize) -> Vec<u8> {
        self.read_buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(size))
    }

    pub fn return_read_buffer(&self, mut buf: Vec<u8>) {
        let mut pool = self.read_buffers.borrow_mut();
        if pool.len() < READ_BUFFER_POOL {
            buf.clear();
            pool.push(buf);
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.borrow().len
    }

    pub fn register(&self, session: &Rc<Session>) {
        let mut t = self.sessions.borrow_mut();
        let slot = match t.free.pop() {
            Some(s) => s,
            None => {
                t.slots.push(None);
                t.slots.len() - 1
            }
        };
        t.slots[slot] = Some(session.clone());
        t.by_socket.insert(session.socket_id, slot);
        t.len += 1;
        session.slot.set(slot);
    }

    /// Removes a session and everything it took part in: subscriptions, presence memberships, counts, sign-in
    /// and watchlist. Idempotent.
    pub fn unregister(&self, session: &Rc<Session>) {
        let left = self.channels.borrow_mut().unsubscribe_all(session);
        let app = session.app;
        for channel in &left {
            self.count_change(app, channel, -1);
        }
        let memberships = std::mem::take(&mut *session.memberships.borrow_mut());
        for m in memberships {
            self.presence_leave(app, &m.channel, &m.user_id);
        }
        let user = session.user.borrow_mut().take();
        if let Some(user) = user {
            self.sign_out(session, &user.id, user.watchlist);
        }
        let mut t = self.sessions.borrow_mut();
        let slot = session.slot.replace(usize::MAX);
        if slot != usize::MAX && t.slots.get(slot).is_some_and(|s| s.is_some()) {
            t.slots[slot] = None;
            t.by_socket.remove(&session.socket_id);
            t.free.push(slot);
            t.len -= 1;
        }
    }

    /// Leaves one channel: local index, presence roster, subscription count.
    pub fn leave_channel(&self, session: &Rc<Session>, channel: &str) {
        let app = session.app;
        let was_subscribed = self
            .channels
            .borrow_mut()
            .unsubscribe(session, channel)
            .is_some();
        if was_subscribed {
            self.count_change(app, channel, -1);
        }
        let membership = {
            let mut ms = session.memberships.borrow_mut();
            ms.iter()
                .position(|m| &*m.channel == channel)
                .map(|i| ms.swap_remove(i))
        };
        if let Some(m) = membership {
            self.presence_leave(app, channel, &m.user_id);
        }
    }

    /// Tells the channel's home a subscription came (+1) or went (-1), for apps that count subscriptions.
    /// spec §9: presence channels have no subscription_count, so no count is kept for them.
    pub fn count_change(&self, app: AppIdx, channel: &str, delta: i64) {
        if self.app(app).config.subscription_count
            && ChannelType::of(channel).kind != ChannelKind::Presence
        {
            let _ = self.send_home(
                app,
                channel,
                HomeMsg::CountDelta {
                    app,
                    channel: Box::from(channel),
                    delta,
                },
            );
        }
    }

    /// Tells the channel's home one connection of `user_id` left its roster. A leave is never refused.
    pub fn presence_leave(&self, app: AppIdx, channel: &str, user_id: &str) {
        let msg = HomeMsg::PresenceLeave {
            app,
            channel: Box::from(channel),
            user_id: Box::from(user_id),
        };
        let _ = self.send_home(app, channel, msg);
    }

    /// The user's home learns one connection fewer; the watched users' homes forget this watcher.
    fn sign_out(&self, session: &Session, user_id: &str, watchlist: Vec<Box<str>>) {
        let app = session.app;
        let _ = self.send_to(
            self.user_home(app, user_id),
            CoreMsg::Home(HomeMsg::UserOffline {
                app,
                user_id: Box::from(user_id),
            }),
        );
        for (home, users) in self.group_by_user_home(app, watchlist) {
            let msg = HomeMsg::Unwatch {
                app,
                users,
                watcher: session.socket_id,
            };
            let _ = self.send_to(home, CoreMsg::Home(msg));
        }
    }

    /// Splits user ids by their home core.
    pub fn group_by_user_home(
        &self,
        app: AppIdx,
        users: Vec<Box<str>>,
    ) -> Vec<(usize, Vec<Box<str>>)> {
        let mut groups: Vec<(usize, Vec<Box<str>>)> = Vec::new();
        for u in users {
            let home = self.user_home(app, &u);
            match groups.iter_mut().find(|(h, _)| *h == home) {
                Some((_, list)) => list.push(u),
                None => groups.push((home, vec![u])),
            }
        }
        groups
    }

    pub fn session_by_socket(&self, socket: SocketId) -> Option<Rc<Session>> {
        let t = self.sessions.borrow();
        let slot = *t.by_socket.get(&socket)?;
        t.slots.get(slot)?.clone()
    }

    /// Publishes on every core: other cores first (they run in parallel with our local loop), then locally.
    /// Fails if a core's inbox is full; cores that took it deliver it.
    pub fn publish(&self, publication: Publication) -> Result<(), InboxFull> {
        let p = Arc::new(publication);
        let mut result = Ok(());
        for (i, inbox) in self.shared.inboxes.iter().enumerate() {
            if i != self.id && inbox.send(CoreMsg::Publish(p.clone())).is_err() {
                crate::log::count_overflow();
                result = Err(InboxFull);
            }
        }
        self.deliver(&p);
        result
    }

    fn deliver(&self, p: &Publication) {
        let channels = self.channels.borrow();
        for (name, frame) in &p.frames {
            channels.deliver(p.app, name, frame, p.except);
        }
    }

    /// Asks every core (this one directly) and returns their answers.
    pub async fn query(&self, q: Query) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(self.shared.inboxes.len());
        let mut pending = Vec::new();
        for (i, inbox) in self.shared.inboxes.iter().enumerate() {
            if i == self.id {
                answers.push(self.answer(&q));
            } else {
                let (tx, rx) = oneshot::channel();
                if inbox.send(CoreMsg::Query(q.clone(), tx)).is_ok() {
                    pending.push(rx);
                }
            }
        }
        for rx in pending {
            if let Ok(a) = rx.await {
                answers.push(a);
            }
        }
        answers
    }

    pub fn answer(&self, q: &Query) -> Answer {
        let channels = self.channels.borrow();
        match q {
            Query::Channel { app, name } => Answer::Count(channels.local_count(*app, name) as u64),
            Query::Channels { app, prefix } => Answer::Counts(
                channels
                    .channels(*app)
                    .filter(|(n, _)| n.starts_with(&**prefix))
                    .map(|(n, c)| (Box::from(&**n), c.subscribers.len() as u64))
                    .collect(),
            ),
            Query::PresenceUsers { .. } | Query::Cache { .. } => {
                drop(channels);
                self.answer_home(q)
            }
            Query::AllChannels => {
                let mut names = Vec::new();
                for app in self.shared.apps.iter() {
                    names.extend(
                        channels
                            .channels(app.idx)
                            .map(|(n, _)| (app.idx, Box::from(&**n))),
                    );
                }
                Answer::Names(names)
            }
        }
    }

    /// Handles one inbox message. Returns false on Shutdown.
    pub fn handle(&self, msg: CoreMsg) -> bool {
        match msg {
            CoreMsg::Publish(p) => self.deliver(&p),
            CoreMsg::Query(q, reply) => {
                let _ = reply.send(self.answer(&q));
            }
            CoreMsg::Home(h) => self.handle_home(h),
            CoreMsg::TerminateUser { app, user_id } => self.terminate_user(app, &user_id),
            CoreMsg::PresenceJoined {
                socket,
                channel,
                success,
                reply,
            } => {
                let joined = match (success, self.session_by_socket(socket)) {
                    (None, _) => JoinReply::Full,
                    (Some(frame), Some(s)) if s.membership(&channel).is_some() => {
                        self.channels.borrow_mut().subscribe(&s, &channel);
                        s.send(frame);
                        JoinReply::Joined
                    }
                    (Some(_), _) => JoinReply::Gone,
                };
                let _ = reply.send(joined);
            }
            CoreMsg::ToSocket { socket, frame } => {
                if let Some(s) = self.session_by_socket(socket) {
                    if s.watch_snapshot_pending.get() {
                        s.deferred_watch_events.borrow_mut().push(frame);
                    } else {
                        s.send(frame);
                    }
                }
            }
            CoreMsg::Shutdown => return false,
        }
        true
    }

    /// spec §7.4: every local connection signed in as the user gets `pusher:error` 4009 and Close 4009.
    fn terminate_user(&self, app: AppIdx, user_id: &str) {
        for s in self.all_sessions() {
            if s.app == app && s.user_id().is_some_and(|u| &*u == user_id) {
                let msg = "Connection terminated by the server (terminate_connections)";
                s.close(
                    close::UNAUTHORIZED,
                    msg,
                    Some(outbound::error(Some(close::UNAUTHORIZED), msg)),
                );
            }
        }
    }

    fn all_sessions(&self) -> Vec<Rc<Session>> {
        self.sessions
            .borrow()
            .slots
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The per-core liveness scan (one timer per core, not per socket; spec §2.4): ping sessions silent for
    /// `activity_timeout`, close with 4201 those that stay silent `pong_timeout` more, and cut sessions whose
    /// close handshake is overdue.
    pub fn scan_liveness(&self, now: Instant) {
        let activity = Duration::from_secs(self.shared.config.activity_timeout_secs);
        let pong = Duration::from_secs(self.shared.config.pong_timeout_secs);
        let auth_window =
            Duration::from_secs(self.shared.config.authorized_connection_timeout_secs);
        if self.id == 0 {
            crate::log::report_counts();
        }
        self.facts.borrow_mut().purge_expired(now);
        self.flush_throttled_counts(now);
        // In place, no per-scan allocation: nothing below touches the session table.
        let sessions = self.sessions.borrow();
        for s in sessions.slots.iter().flatten() {
            if let Some(since) = s.closing_since.get() {
                if now.duration_since(since) > CLOSE_GRACE {
                    s.abort();
                }
                continue;
            }
            // spec §7.2: in authorized-connections mode a connection must sign in or subscribe to an
            // authorized channel in time.
            if !s.authorized.get()
                && self.app(s.app).config.authorized_connections
                && now.duration_since(s.connected_at) >= auth_window
            {
                let msg =
                    "Connection not authorized in time: sign in or subscribe to a private channel";
                s.close(
                    close::UNAUTHORIZED,
                    msg,
                    Some(outbound::error(Some(close::UNAUTHORIZED), msg)),
                );
                continue;
            }
            match s.ping_sent.get() {
                Some(sent) if now.duration_since(sent) >= pong => {
                    crate::debug!("socket {} closed: no pong", s.socket_id);
                    s.close(close::PONG_NOT_RECEIVED, "Pong reply not received", None);
                }
                Some(_) => {}
                None if now.duration_since(s.last_seen.get()) >= activity => {
                    // A WebSocket ping works for every client; the protocol ping reaches pusher-js too.
                    s.send(frame::encode_ping(b""));
                    s.send(outbound::ping());
                    s.ping_sent.set(Some(now));
                }
                None => {}
            }
        }
    }

    /// Graceful drain: every session gets Close `code` (4200 lets pusher-js reconnect at once).
    pub fn close_all(&self, code: u16, reason: &str) {
        for s in self.all_sessions() {
            s.close(code, reason, None);
        }
    }
}

impl Core {
    /// Distinct channel names across all cores (for /stats).
    pub async fn distinct_channels(&self) -> usize {
        if let Some((at, n)) = self.stats_channels.get()
            && at.elapsed() < STATS_MAX_AGE
        {
            return n;
        }
        let mut set: HashSet<(AppIdx, Box<str>)> = HashSet::new();
        for a in self.query(Query::AllChannels).await {
            if let Answer::Names(names) = a {
                set.extend(names);
            }
        }
        self.stats_channels.set(Some((Instant::now(), set.len())));
        set.len()
    }
}
