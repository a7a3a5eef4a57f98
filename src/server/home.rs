//! The home-core side of shared facts: presence rosters, total subscription counts, cache channels and user
//! online state, each owned by exactly one core (`channels::facts::home_core`) and changed only through it.
//! Fan-out of the resulting events (member_added, subscription_count, watchlist) goes through `Core::publish`
//! like any other publish.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::channels::facts::home_core;
use crate::channels::name::{ChannelKind, ChannelType};
use crate::channels::presence::{self, Join, PresenceRoster};
use crate::protocol::outbound;
use crate::server::core::Core;
use crate::server::inbox::{Answer, CoreMsg, HomeMsg, InboxFull, Publication, Query};
use crate::server::socket_id::SocketId;

/// Channels above this size get `subscription_count` at most every `COUNT_THROTTLE` (spec §9).
pub const COUNT_THROTTLE_ABOVE: u64 = 100;
pub const COUNT_THROTTLE: Duration = Duration::from_secs(5);

/// A user's online state, kept by the user's home core (spec §7.5).
#[derive(Default)]
pub struct UserFacts {
    /// Signed-in connections, all cores.
    pub online: u32,
    /// Sockets watching this user, and their cores.
    pub watchers: Vec<(usize, SocketId)>,
}

/// The key users are homed by; distinct from channel names so both spread independently.
fn user_home_key(user_id: &str) -> String {
    format!("#user:{user_id}")
}

impl Core {
    pub fn home_of(&self, app: AppIdx, key: &str) -> usize {
        home_core(app, key, self.shared.inboxes.len())
    }

    pub fn user_home(&self, app: AppIdx, user_id: &str) -> usize {
        self.home_of(app, &user_home_key(user_id))
    }

    /// Sends `msg` to core `home`, handling it right here when that is this core. Fails only for a message that
    /// would add state while that core's control lane is over its cap (see `inbox::CONTROL_LANE_CAP`).
    pub fn send_to(&self, home: usize, msg: CoreMsg) -> Result<(), InboxFull> {
        if home == self.id {
            self.handle(msg);
            return Ok(());
        }
        let sent = self.shared.inboxes[home].send(msg);
        if sent.is_err() {
            crate::log::count_overflow();
        }
        sent
    }

    pub fn send_home(&self, app: AppIdx, channel: &str, msg: HomeMsg) -> Result<(), InboxFull> {
        self.send_to(self.home_of(app, channel), CoreMsg::Home(msg))
    }

    /// Asks the home core of `(app, channel)` alone.
    pub async fn ask_home(&self, app: AppIdx, channel: &str, q: Query) -> Option<Answer> {
        let home = self.home_of(app, channel);
        if home == self.id {
            return Some(self.answer(&q));
        }
        let (tx, rx) = oneshot::channel();
        self.shared.inboxes[home].send(CoreMsg::Query(q, tx)).ok()?;
        rx.await.ok()
    }

    pub fn answer_home(&self, q: &Query) -> Answer {
        match q {
            Query::PresenceUsers { app, name } => {
                let facts = self.facts.borrow();
                let users = facts
                    .get(*app, name)
                    .and_then(|f| f.roster.as_ref())
                    .map(|r| r.user_ids().map(Box::from).collect())
                    .unwrap_or_default();
                Answer::Users(users)
            }
            Query::Cache { app, name } => {
                let now = Instant::now();
                let mut facts = self.facts.borrow_mut();
                let cached = facts.cached(*app, name, now).map(|c| {
                    (
                        c.data_token.clone(),
                        c.expires.saturating_duration_since(now).as_secs().max(1),
                    )
                });
                Answer::Cache(cached)
            }
            _ => Answer::Count(0),
        }
    }

    pub fn handle_home(&self, msg: HomeMsg) {
        match msg {
            HomeMsg::PresenceJoin {
                app,
                channel,
                user_id,
                user_info,
                socket,
                core,
                reply,
            } => {
                let max = self.app(app).config.max_presence_members;
                let (outcome, snapshot) = {
                    let mut facts = self.facts.borrow_mut();
                    let roster = facts
                        .entry(app, &channel)
                        .roster
                        .get_or_insert_with(PresenceRoster::default);
                    let outcome = roster.join(&user_id, &user_info, max);
                    let snapshot = (outcome != Join::Full).then(|| roster.snapshot_json());
                    (outcome, snapshot)
                };
                if snapshot.is_none() {
                    self.facts.borrow_mut().tidy(app, &channel);
                }
                let success = snapshot.map(|snap| {
                    outbound::channel_event_json(
                        "pusher_internal:subscription_succeeded",
                        &channel,
                        &snap,
                    )
                });
                // First the joiner's success, then member_added: both leave this core in that order.
                let _ = self.send_to(
                    core,
                    CoreMsg::PresenceJoined {
                        socket,
                        channel: channel.clone(),
                        success,
                        reply,
                    },
                );
                if outcome == Join::NewMember {
                    let data = presence::member_added_json(&user_id, &user_info);
                    let frame = outbound::channel_event_json(
                        "pusher_internal:member_added",
                        &channel,
                        &data,
                    );
                    self.broadcast(app, &channel, frame, Some(socket));
                }
            }
            HomeMsg::PresenceLeave {
                app,
                channel,
                user_id,
            } => {
                let last = {
                    let mut facts = self.facts.borrow_mut();
                    let last = facts
                        .entry(app, &channel)
                        .roster
                        .as_mut()
                        .is_some_and(|r| r.leave(&user_id));
                    facts.tidy(app, &channel);
                    last
                };
                if last {
                    let data = presence::member_removed_json(&user_id);
                    let frame = outbound::channel_event_json(
                        "pusher_internal:member_removed",
                        &channel,
                        &data,
                    );
                    self.broadcast(app, &channel, frame, None);
                }
            }
            HomeMsg::CountDelta {
                app,
                channel,
                delta,
            } => self.count_delta(app, &channel, delta),
            HomeMsg::CacheStore {
                app,
                channel,
                frame,
                data_token,
            } => {
                let ttl = Duration::from_secs(self.app(app).config.cache_ttl_secs);
                self.facts
                    .borrow_mut()
                    .store_cache(app, &channel, frame, data_token, ttl);
            }
            HomeMsg::CacheGet {
                app,
                channel,
                reply,
            } => {
                let frame = self
                    .facts
                    .borrow_mut()
                    .cached(app, &channel, Instant::now())
                    .map(|c| c.frame.clone());
                let _ = reply.send(frame);
            }
            HomeMsg::UserOnline { app, user_id } => {
                let notify = {
                    let mut users = self.users.borrow_mut();
                    let u = users.entry((app, user_id.clone())).or_default();
                    u.online += 1;
                    (u.online == 1).then(|| u.watchers.clone())
                };
                if let Some(watchers) = notify {
                    self.notify_watchers(&watchers, "online", &user_id);
                }
            }
            HomeMsg::UserOffline { app, user_id } => {
                let notify = {
                    let mut users = self.users.borrow_mut();
                    let key = (app, user_id.clone());
                    let Some(u) = users.get_mut(&key) else { return };
                    u.online = u.online.saturating_sub(1);
                    let watchers = (u.online == 0).then(|| u.watchers.clone());
                    if u.online == 0 && u.watchers.is_empty() {
                        users.remove(&key);
                    }
                    watchers
                };
                if let Some(watchers) = notify {
                    self.notify_watchers(&watchers, "offline", &user_id);
                }
            }
            HomeMsg::Watch {
                app,
                users: watched,
                core,
                watcher,
                reply,
            } => {
                let mut users = self.users.borrow_mut();
                let online = watched
                    .into_iter()
                    .map(|u| {
                        let f = users.entry((app, u)).or_default();
                        f.watchers.push((core, watcher));
                        f.online > 0
                    })
                    .collect();
                let _ = reply.send(online);
            }
            HomeMsg::Unwatch {
                app,
                users: watched,
                watcher,
            } => {
                let mut users = self.users.borrow_mut();
                for u in watched {
                    let key = (app, u);
                    if let Some(f) = users.get_mut(&key) {
                        f.watchers.retain(|(_, s)| *s != watcher);
                        if f.online == 0 && f.watchers.is_empty() {
                            users.remove(&key);
                        }
                    }
                }
            }
        }
    }

    fn notify_watchers(&self, watchers: &[(usize, SocketId)], name: &str, user_id: &str) {
        if watchers.is_empty() {
            return;
        }
        let ids = [user_id];
        let frame = if name == "online" {
            outbound::watchlist_events(&ids, &[])
        } else {
            outbound::watchlist_events(&[], &ids)
        };
        for (core, socket) in watchers {
            let _ = self.send_to(
                *core,
                CoreMsg::ToSocket {
                    socket: *socket,
                    frame: frame.clone(),
                },
            );
        }
    }

    /// Publishes a server-generated channel frame to every core.
    fn broadcast(&self, app: AppIdx, channel: &str, frame: Bytes, except: Option<SocketId>) {
        let p = Publication {
            app,
            frames: vec![(Box::from(channel), frame)],
            except,
        };
        if self.publish(p).is_err() {
            crate::warn!("channel event for {channel} not delivered everywhere: inbox full");
        }
    }

    /// spec §9: total subscriptions changed; tell the channel, throttled for big channels. Not for presence.
    fn count_delta(&self, app: AppIdx, channel: &str, delta: i64) {
        let now = Instant::now();
        let send = {
            let mut facts = self.facts.borrow_mut();
            let f = facts.entry(app, channel);
            f.subscriptions = (f.subscriptions as i64 + delta).max(0) as u64;
            let n = f.subscriptions;
            let due = match f.count_sent {
                Some((_, at)) if n > COUNT_THROTTLE_ABOVE => {
                    now.duration_since(at) >= COUNT_THROTTLE
                }
                _ => true,
            };
            if due && n > 0 {
                f.count_sent = Some((n, now));
            }
            if n == 0 {
                f.count_sent = None;
            }
            facts.tidy(app, channel);
            (due && n > 0).then_some(n)
        };
        if let Some(n) = send {
            self.send_count(app, channel, n);
        }
    }

    fn send_count(&self, app: AppIdx, channel: &str, n: u64) {
        if ChannelType::of(channel).kind == ChannelKind::Presence {
            return;
        }
        let data = format!(r#"{{"subscription_count":{n}}}"#);
        let frame =
            outbound::channel_event_json("pusher_internal:subscription_count", channel, &data);
        self.broadcast(app, channel, frame, None);
    }

    /// Throttled channels whose count changed since the last broadcast get it now (run from the periodic scan).
    pub fn flush_throttled_counts(&self, now: Instant) {
        let due: Vec<(AppIdx, Box<str>, u64)> = {
            let mut facts = self.facts.borrow_mut();
            facts.throttled_due(now, COUNT_THROTTLE)
        };
        for (app, channel, n) in due {
            self.send_count(app, &channel, n);
        }
    }
}

/// Per-home-core map of users' online state.
pub type UserTable = HashMap<(AppIdx, Box<str>), UserFacts>;
