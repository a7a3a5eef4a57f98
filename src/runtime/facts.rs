//! The one interface through which the rest of the server reaches the facts counted once across cores: presence
//! rosters, subscription counts, channel occupancy, users' online state and watchers, cache channels.
//!
//! Today every fact lives on its home core (`channels::facts::home_core`) and changes only through that core's
//! inbox; the routing is here and each feature's home side is in its own module. A cluster backend (Redis) later
//! implements [`Facts`] across nodes, and nothing that calls it changes.

use std::rc::Rc;

use crate::app::AppIdx;
use crate::channels::facts::{CachedEvent, home_core};
use crate::cluster::{ClusterAnswer, ClusterQuery};
use crate::metrics::Counter;
use crate::protocol::inbound::Member;
use crate::protocol::session::Session;
use crate::runtime::core::Core;
use crate::runtime::inbox::InboxFull;
use futures_channel::oneshot;

use crate::runtime::message::{self, CoreMsg, NoReply};
use crate::runtime::presence::JoinReply;
use crate::runtime::{cache, counts, occupancy, presence, users};
use crate::socket_id::SocketId;

/// Shared facts, as the protocol handler and the REST API use them.
#[allow(async_fn_in_trait)] // single-core futures by design: nothing here is ever Send
pub trait Facts {
    /// Joins `session` to presence `channel` as `member`; on success it is subscribed and has its
    /// `subscription_succeeded` (with the roster) before any later member event.
    /// With `after`, the channel's events after that id are replayed first (apps with history).
    async fn join_presence(
        &self,
        session: &Rc<Session>,
        channel: &str,
        member: Member,
        after: Option<&str>,
    ) -> JoinReply;
    /// One connection of `user_id` left `channel`'s roster.
    fn leave_presence(&self, app: AppIdx, channel: &str, user_id: &str);
    /// The distinct users in presence `channel`, in join order.
    async fn presence_users(&self, app: AppIdx, channel: &str) -> Result<Vec<Box<str>>, NoReply>;
    /// A subscription to `channel` came (+1) or went (-1) (apps that count subscriptions).
    fn subscription_changed(&self, app: AppIdx, channel: &str, delta: i64);
    /// This core got its first (+1) or lost its last (-1) subscriber of `channel`.
    fn occupancy_changed(&self, app: AppIdx, channel: &str, delta: i32);
    /// A connection signed in as `user_id` (+) or went away (-).
    fn user_signed_in(&self, app: AppIdx, user_id: &str);
    fn user_signed_out(&self, app: AppIdx, user_id: &str);
    /// Registers `watcher` for `users`' online and offline events; says which are online now.
    async fn watch(&self, app: AppIdx, users: &[Box<str>], watcher: SocketId) -> Vec<bool>;
    fn unwatch(&self, app: AppIdx, users: Vec<Box<str>>, watcher: SocketId);
    /// Keeps `event` as cache channel `channel`'s last event.
    fn store_cached(&self, app: AppIdx, channel: &str, event: CachedEvent);
    /// Cache channel `channel`'s last event, if it has one that has not expired.
    async fn cached(&self, app: AppIdx, channel: &str) -> Result<Option<CachedEvent>, NoReply>;
}

impl Facts for Core {
    async fn join_presence(
        &self,
        session: &Rc<Session>,
        channel: &str,
        member: Member,
        after: Option<&str>,
    ) -> JoinReply {
        presence::join(self, session, channel, member, after).await
    }
    fn leave_presence(&self, app: AppIdx, channel: &str, user_id: &str) {
        presence::leave(self, app, channel, user_id)
    }
    async fn presence_users(&self, app: AppIdx, channel: &str) -> Result<Vec<Box<str>>, NoReply> {
        presence::users(self, app, channel).await
    }
    fn subscription_changed(&self, app: AppIdx, channel: &str, delta: i64) {
        counts::changed(self, app, channel, delta)
    }
    fn occupancy_changed(&self, app: AppIdx, channel: &str, delta: i32) {
        occupancy::changed(self, app, channel, delta)
    }
    fn user_signed_in(&self, app: AppIdx, user_id: &str) {
        users::online(self, app, user_id)
    }
    fn user_signed_out(&self, app: AppIdx, user_id: &str) {
        users::offline(self, app, user_id)
    }
    async fn watch(&self, app: AppIdx, users: &[Box<str>], watcher: SocketId) -> Vec<bool> {
        users::watch(self, app, users, watcher).await
    }
    fn unwatch(&self, app: AppIdx, users: Vec<Box<str>>, watcher: SocketId) {
        users::unwatch(self, app, users, watcher)
    }
    fn store_cached(&self, app: AppIdx, channel: &str, event: CachedEvent) {
        cache::store(self, app, channel, event)
    }
    async fn cached(&self, app: AppIdx, channel: &str) -> Result<Option<CachedEvent>, NoReply> {
        cache::get(self, app, channel).await
    }
}

/// The prefix users are homed by, so channel names and user ids spread independently.
const USER_HOME_PREFIX: &str = "#user:";

/// The core of `cores` that keeps a user's online state and watchers.
pub fn user_home_core(app: AppIdx, user_id: &str, cores: usize) -> usize {
    let mut key = String::with_capacity(USER_HOME_PREFIX.len() + user_id.len());
    key.push_str(USER_HOME_PREFIX);
    key.push_str(user_id);
    home_core(app, &key, cores)
}

impl Core {
    /// The core that keeps `(app, channel)`'s facts.
    pub fn home_of(&self, app: AppIdx, channel: &str) -> usize {
        home_core(app, channel, self.shared.cores())
    }

    /// The core that keeps user `user_id`'s online state and watchers.
    pub fn user_home(&self, app: AppIdx, user_id: &str) -> usize {
        user_home_core(app, user_id, self.shared.cores())
    }

    /// Sends `msg` to core `to`, handling it right here when that is this core. Fails only for a message that
    /// would add state while that core's control lane is full, or a publish while its publish lane is.
    pub fn send_to(&self, to: usize, msg: CoreMsg) -> Result<(), InboxFull> {
        self.offer_to(to, msg).map_err(|_| InboxFull)
    }

    /// [`Core::send_to`] that hands a refused message back, for senders with a fallback.
    pub fn offer_to(&self, to: usize, msg: CoreMsg) -> Result<(), CoreMsg> {
        if to == self.id {
            self.handle(msg);
            return Ok(());
        }
        let offered = self.shared.inboxes[to].offer(msg);
        if offered.is_err() {
            self.metrics().inc(Counter::InboxOverflows);
        }
        offered
    }

    /// [`Core::send_to`] the home core of `(app, channel)`.
    pub fn send_home(&self, app: AppIdx, channel: &str, msg: CoreMsg) -> Result<(), InboxFull> {
        self.send_to(self.home_of(app, channel), msg)
    }

    /// Sends core `to` the question `ask` builds around a reply channel, and waits for the answer (at most
    /// `message::REPLY_TIMEOUT`).
    pub async fn ask<T>(
        &self,
        to: usize,
        ask: impl FnOnce(oneshot::Sender<T>) -> CoreMsg,
    ) -> Result<T, NoReply> {
        let (tx, rx) = oneshot::channel();
        self.send_to(to, ask(tx)).map_err(|_| NoReply)?;
        message::reply(rx).await
    }

    /// Asks Redis about the cluster (the question built only on a node of a cluster); `None` on a single node,
    /// while Redis is unreachable, or after `message::REPLY_TIMEOUT`.
    pub async fn ask_cluster(
        &self,
        question: impl FnOnce() -> ClusterQuery,
    ) -> Option<ClusterAnswer> {
        let cluster = self.shared.cluster.get()?;
        message::reply(cluster.query(question()))
            .await
            .ok()
            .flatten()
    }

    /// Splits user ids by their home core.
    pub fn group_by_user_home(
        &self,
        app: AppIdx,
        users: &[Box<str>],
    ) -> Vec<(usize, Vec<Box<str>>)> {
        let mut groups: Vec<(usize, Vec<Box<str>>)> = Vec::new();
        for u in users {
            let home = self.user_home(app, u);
            match groups.iter_mut().find(|(h, _)| *h == home) {
                Some((_, list)) => list.push(u.clone()),
                None => groups.push((home, vec![u.clone()])),
            }
        }
        groups
    }
}
