//! One core: its sessions, its channel index, the facts it is home to, and the dispatch of the work other cores
//! send it.
//!
//! A `Core` lives on one thread inside one monoio runtime and is shared by that core's tasks through `Rc`. Its
//! state is `RefCell`s, never locks; other cores reach it only through its inbox. Features that span cores
//! (presence, users, cache, counts, occupancy) keep their logic in their own modules; this file ties them to the
//! session's lifetime and routes their messages.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::app::{App, AppIdx, AppRegistry};
use crate::channels::facts::FactsTable;
use crate::channels::history::HistoryStore;
use crate::channels::index::ChannelIndex;
use crate::metrics::{CloseReason, CoreMetrics, Counter, Gauge};
use crate::protocol::codes::close;
use crate::protocol::session::Session;
use crate::runtime::event_log::{EventLog, LogEvent};
use crate::runtime::history::WindowWait;
use crate::runtime::inbox::InboxReceiver;
use crate::runtime::liveness::FloodSummary;
use crate::runtime::message::CoreMsg;
use crate::runtime::shared::Shared;
use crate::runtime::{cache, counts, history, occupancy, presence, users};
use crate::socket_id::{SocketId, SocketIdGen, random_seed};

pub struct Core {
    pub id: usize,
    pub shared: Arc<Shared>,
    /// The apps as this core knows them: replaced by a reload (`CoreMsg::Apps`), read without a lock.
    apps: RefCell<Arc<AppRegistry>>,
    pub channels: RefCell<ChannelIndex>,
    /// Facts of the channels and users this core is home to.
    pub facts: RefCell<FactsTable>,
    /// History windows of the channels this core is home to (apps that keep history).
    pub history: RefCell<HistoryStore>,
    /// This core's share of each app's event log.
    pub event_log: RefCell<EventLog>,
    sessions: RefCell<SessionTable>,
    ids: SocketIdGen,
    read_buffers: RefCell<Vec<Vec<u8>>>,
    pub(crate) floods: FloodSummary,
    /// Sessions whose connection ended, waiting for their teardown (see [`Core::retire`]).
    retiring: RefCell<VecDeque<Rc<Session>>>,
    retire_waker: Cell<Option<Waker>>,
    /// The core's own `Rc`, for work that continues after an await (a cluster round trip) on this core.
    me: OnceCell<Weak<Core>>,
    /// Presence channels with a join waiting for Redis, and the other nodes' member records that arrived
    /// meanwhile (held so the joiner, not subscribed yet, hears them after its roster).
    pub(crate) presence_waits: RefCell<HashMap<(AppIdx, Box<str>), PresenceWait>>,
    /// Recoveries waiting for a channel's window from Redis (see `history`), and the last request's token.
    pub(crate) window_waits: RefCell<HashMap<(AppIdx, Box<str>), WindowWait>>,
    tokens: Cell<u64>,
    /// This core's inbox, also read by [`Core::catch_up`] outside the serve loop.
    inbox: OnceCell<Rc<InboxReceiver<CoreMsg>>>,
    /// Inbox messages are being handled now: a publish made meanwhile does not catch up (it would run a later
    /// message before the rest of the batch).
    draining: Cell<bool>,
}

/// Joins of a presence channel waiting for Redis, and the member records (user, `user_info` when added) held
/// until they are answered.
pub(crate) type PresenceWait = (u32, Vec<(Box<str>, Option<Box<str>>)>);

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
        let registry = shared.registry();
        let apps = registry.len();
        let event_log = EventLog::new(apps, shared.config.limits.event_log_max);
        Core {
            id,
            shared,
            apps: RefCell::new(registry),
            channels: RefCell::new(ChannelIndex::new(apps)),
            facts: RefCell::new(FactsTable::default()),
            history: RefCell::new(HistoryStore::new(random_seed() ^ id as u64)),
            event_log: RefCell::new(event_log),
            sessions: RefCell::new(SessionTable::default()),
            ids: SocketIdGen::new(id),
            read_buffers: RefCell::new(Vec::new()),
            floods: FloodSummary::default(),
            retiring: RefCell::new(VecDeque::new()),
            retire_waker: Cell::new(None),
            me: OnceCell::new(),
            presence_waits: RefCell::new(HashMap::new()),
            window_waits: RefCell::new(HashMap::new()),
            tokens: Cell::new(0),
            inbox: OnceCell::new(),
            draining: Cell::new(false),
        }
    }

    /// Builds a core that knows its own `Rc` ([`Core::rc`]).
    pub fn new_rc(id: usize, shared: Arc<Shared>) -> Rc<Core> {
        let core = Rc::new(Core::new(id, shared));
        let _ = core.me.set(Rc::downgrade(&core));
        core
    }

    /// This core's `Rc` (for a task spawned on it); `None` for a core not built by [`Core::new_rc`].
    pub fn rc(&self) -> Option<Rc<Core>> {
        self.me.get()?.upgrade()
    }

    /// The app at `idx` (an index from this core's registry stays valid in every later one). An index from a
    /// registry this core has not switched to yet (a reload's `CoreMsg::Apps` still queued behind the work that
    /// carries it) makes the core adopt the shared registry, which is always at least as new as any index in
    /// flight: it is published before any core can hand out an index of it.
    pub fn app(&self, idx: AppIdx) -> Arc<App> {
        if let Some(a) = self.apps.borrow().try_get(idx) {
            return a.clone();
        }
        self.adopt(self.shared.registry());
        self.apps.borrow().get(idx).clone()
    }

    /// Runs `f` on the app at `idx` without cloning its `Arc` (no shared refcount touched: for per-publication
    /// work on every core).
    pub fn with_app<T>(&self, idx: AppIdx, f: impl FnOnce(&App) -> T) -> T {
        if self.apps.borrow().try_get(idx).is_none() {
            self.adopt(self.shared.registry());
        }
        f(self.apps.borrow().get(idx))
    }

    /// The apps this core serves now.
    pub fn registry(&self) -> Arc<AppRegistry> {
        self.apps.borrow().clone()
    }

    /// This core's registry if it knows what `found` looks for, else the shared one when that does (a reload
    /// this core has not switched to yet: new apps are served at once on every core).
    pub fn registry_with(&self, found: impl Fn(&AppRegistry) -> bool) -> Arc<AppRegistry> {
        let mine = self.registry();
        if found(&mine) {
            return mine;
        }
        let shared = self.shared.registry();
        if shared.generation > mine.generation && found(&shared) {
            self.adopt(shared.clone());
            return shared;
        }
        mine
    }

    /// Switches to `registry` if it is newer than this core's (per-app tables grow on a new app's first use).
    fn adopt(&self, registry: Arc<AppRegistry>) {
        let mut mine = self.apps.borrow_mut();
        if registry.generation > mine.generation {
            *mine = registry;
        }
    }

    /// This core's counters (written only from this thread).
    #[inline]
    pub fn metrics(&self) -> &CoreMetrics {
        self.shared.metrics.core(self.id)
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
        drop(t);
        self.metrics().inc(Counter::ConnectionsOpened);
        let socket = session.socket_id;
        self.log_event(session.app, LogEvent::ConnectionOpened { socket });
    }

    /// Removes a session and everything it took part in: subscriptions, presence memberships, counts, sign-in
    /// and watchlist. Idempotent.
    pub fn unregister(&self, session: &Rc<Session>) {
        let left = self.channels.borrow_mut().unsubscribe_all(&**session);
        for (channel, remaining) in &left {
            self.left_locally(session.app, channel, *remaining);
        }
        presence::leave_all(self, session);
        users::sign_out(self, session);
        let mut t = self.sessions.borrow_mut();
        let slot = session.slot.replace(usize::MAX);
        if slot != usize::MAX && t.slots.get(slot).is_some_and(|s| s.is_some()) {
            t.slots[slot] = None;
            t.by_socket.remove(&session.socket_id);
            t.free.push(slot);
            t.len -= 1;
            drop(t);
            let m = self.metrics();
            m.inc(Counter::ConnectionsClosed);
            m.closed(CloseReason::from_code(session.close_code.get()));
            let socket = session.socket_id;
            self.log_event(session.app, LogEvent::ConnectionClosed { socket });
        }
    }

    /// Whether a subscription to `channel` keeps the server within `max_channels`: a channel this core already
    /// has costs nothing new; another one must fit under the limit both on this core and server-wide (the
    /// server-wide count trails by the messages in flight, the per-core one does not).
    pub fn has_room_for(&self, app: AppIdx, channel: &str) -> bool {
        let channels = self.channels.borrow();
        if channels.local_count(app, channel) > 0 {
            return true;
        }
        let max = self.shared.config.limits.max_channels;
        channels.channel_count() < max
            && self.shared.metrics.gauge(Gauge::OccupiedChannels) < max as i64
    }

    /// Queues an ended connection's session for teardown. Teardowns run a bounded batch per turn of the core's
    /// loop ([`Core::poll_retiring`]), so thousands of connections dropped at once cannot hold the core away from
    /// delivering to everyone else.
    pub fn retire(&self, session: Rc<Session>) {
        self.retiring.borrow_mut().push_back(session);
        if let Some(w) = self.retire_waker.take() {
            w.wake();
        }
    }

    /// Moves up to `max` sessions awaiting teardown into `out`; pending while there are none.
    pub fn poll_retiring(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<Rc<Session>>,
        max: usize,
    ) -> Poll<()> {
        let mut queue = self.retiring.borrow_mut();
        if queue.is_empty() {
            self.retire_waker.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        let n = queue.len().min(max);
        out.extend(queue.drain(..n));
        Poll::Ready(())
    }

    /// Adds the session to the channel's local subscribers; false if it already was one.
    pub fn subscribe_locally(&self, session: &Rc<Session>, channel: &str) -> bool {
        let added = self.channels.borrow_mut().subscribe(session, channel);
        if added == Some(1) {
            occupancy::changed(self, session.app, channel, 1);
        }
        if added.is_some() {
            let event = LogEvent::Subscribe {
                channel: Box::from(channel),
                socket: session.socket_id,
            };
            self.log_event(session.app, event);
        }
        added.is_some()
    }

    /// Leaves one channel: local index, subscription count, presence roster.
    pub fn leave_channel(&self, session: &Rc<Session>, channel: &str) {
        let remaining = self.channels.borrow_mut().unsubscribe(&**session, channel);
        if let Some(remaining) = remaining {
            self.left_locally(session.app, channel, remaining);
            let event = LogEvent::Unsubscribe {
                channel: Box::from(channel),
                socket: session.socket_id,
            };
            self.log_event(session.app, event);
        }
        if let Some(m) = session.take_membership(channel) {
            presence::leave(self, session.app, channel, &m.user_id);
        }
    }

    /// A subscription left this core's index: the count goes down, and the channel's home learns when this core
    /// has no subscriber left.
    fn left_locally(&self, app: AppIdx, channel: &str, remaining: usize) {
        counts::changed(self, app, channel, -1);
        if remaining == 0 {
            occupancy::changed(self, app, channel, -1);
        }
    }

    pub fn session_by_socket(&self, socket: SocketId) -> Option<Rc<Session>> {
        let t = self.sessions.borrow();
        let slot = *t.by_socket.get(&socket)?;
        t.slots.get(slot)?.clone()
    }

    /// Every live session, for the per-core scan (walked in place: the visitor must not touch the session
    /// table).
    pub fn for_each_session(&self, mut visit: impl FnMut(&Rc<Session>)) {
        for s in self.sessions.borrow().slots.iter().flatten() {
            visit(s);
        }
    }

    /// A copy of the live sessions, for work that may change the table.
    pub fn all_sessions(&self) -> Vec<Rc<Session>> {
        self.sessions
            .borrow()
            .slots
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// A number no earlier call on this core returned.
    pub fn next_token(&self) -> u64 {
        let t = self.tokens.get() + 1;
        self.tokens.set(t);
        t
    }

    /// Gives the core its inbox, for [`Core::catch_up`] (the serve loop keeps reading it too).
    pub fn attach_inbox(&self, inbox: Rc<InboxReceiver<CoreMsg>>) {
        let _ = self.inbox.set(inbox);
    }

    /// Handles a batch of inbox messages in order.
    pub fn handle_batch(&self, batch: impl IntoIterator<Item = CoreMsg>) {
        let was = self.draining.replace(true);
        for msg in batch {
            self.handle(msg);
        }
        self.draining.set(was);
    }

    /// Delivers the publishes other cores queued here before a publication of this core goes out, so a
    /// publisher that waits for each answer before the next sees its events in order on every core, whichever
    /// core each request landed on. Only the publish lane (control messages keep their turn in the serve loop),
    /// and only from publishes whose caller holds no borrow of the core's state (a REST request, a client
    /// event). Not while a batch is being handled: it would overtake the rest of that batch.
    pub fn catch_up(&self) {
        let Some(inbox) = self.inbox.get() else {
            return;
        };
        if self.draining.get() || inbox.publishes_empty() {
            return;
        }
        let mut batch = Vec::new();
        inbox.take_publishes(&mut batch);
        self.handle_batch(batch);
    }

    /// Handles one inbox message (or one this core sends itself).
    pub fn handle(&self, msg: CoreMsg) {
        match msg {
            CoreMsg::Publish(p) => self.deliver(p),
            CoreMsg::Remote(p) => {
                let _ = self.publish(*p);
            }
            CoreMsg::Query(q, reply) => {
                let _ = reply.send(self.answer(&q));
            }
            CoreMsg::Presence(m) => presence::on_message(self, m),
            CoreMsg::Users(m) => users::on_message(self, m),
            CoreMsg::Cache(m) => cache::on_message(self, m),
            CoreMsg::Counts(m) => counts::on_message(self, m),
            CoreMsg::Occupancy(m) => occupancy::on_message(self, m),
            CoreMsg::History(m) => history::on_message(self, m),
            CoreMsg::WebhookReport(app, report) => self.log_event(app, LogEvent::Webhook(report)),
            CoreMsg::Apps(registry) => self.reload_apps(registry),
            // Only wakes the serve loop, which then starts the drain.
            CoreMsg::Shutdown => {}
        }
    }

    /// Serves a reloaded registry: connections of a removed app are closed with 4001 (application does not
    /// exist), those of a disabled one with 4003; every other connection is untouched (new limits apply to new
    /// work).
    fn reload_apps(&self, registry: Arc<AppRegistry>) {
        self.adopt(registry);
        // The newest this core knows (an earlier adoption may have gone past this message's registry).
        let registry = self.registry();
        for s in self.all_sessions() {
            let Some(app) = registry.try_get(s.app) else {
                continue;
            };
            if app.removed {
                s.close_with_error(close::UNKNOWN_APP, "Application does not exist");
            } else if !app.config.enabled {
                s.close_with_error(close::APP_DISABLED, "Application is disabled");
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
