//! Signed-in users across cores (docs/protocol.md#sign-in, #watchlist, #terminate): sign-in on the connection's
//! core, each user's online state and watchers on the user's home core, watchlist events back to the watchers'
//! cores, and `terminate_connections` on every core. `#server-to-user-{id}` is an ordinary channel that only the
//! signed-in user may join (`protocol::subscribe`).

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::channels::lifecycle::LifecycleEvent;
use crate::cluster::{ClusterAnswer, ClusterQuery};
use crate::protocol::codes::close;
use crate::protocol::outbound;
use crate::protocol::session::{Session, SignedInUser};
use crate::protocol::signin::SignIn;
use crate::runtime::core::Core;
use crate::runtime::facts::Facts;
use crate::runtime::inbox::Lane;
use crate::runtime::message::{self, CoreMsg};
use crate::socket_id::SocketId;

pub enum UserMsg {
    /// Connection core -> user's home: one more signed-in connection.
    Online { app: AppIdx, user_id: Box<str> },
    /// Connection core -> user's home: one fewer.
    Offline { app: AppIdx, user_id: Box<str> },
    /// Watcher's core -> watched users' home: register; the reply says which are online now.
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
    /// User's home -> watcher's core: `user_id` came online or went offline.
    Changed {
        watcher: SocketId,
        user_id: Box<str>,
        online: bool,
    },
    /// REST -> every core: close the user's connections with 4009.
    Terminate { app: AppIdx, user_id: Arc<str> },
    /// Cluster bridge -> user's home: the user came online on another node (first in the cluster) or went
    /// offline there (last); tell this node's watchers.
    Remote {
        app: AppIdx,
        user_id: Box<str>,
        online: bool,
    },
    /// Cluster bridge -> user's home: this node removed a dead node's user, offline now; the webhook is ours.
    Gone { app: AppIdx, user_id: Box<str> },
}

impl UserMsg {
    pub fn lane(&self) -> Lane {
        match self {
            UserMsg::Online { .. } | UserMsg::Watch { .. } => Lane::Control,
            // Terminations are rare admin actions that must not be lost.
            UserMsg::Offline { .. }
            | UserMsg::Unwatch { .. }
            | UserMsg::Changed { .. }
            | UserMsg::Terminate { .. }
            | UserMsg::Remote { .. }
            | UserMsg::Gone { .. } => Lane::Cleanup,
        }
    }
}

// -- the connection's side -----------------------------------------------------------------------------------

/// Carries out a sign-in that passed `protocol::signin`: associate the user, answer, tell the user's home, then
/// register the watchlist and send one snapshot of who is online.
pub async fn sign_in(core: &Core, session: &Rc<Session>, signin: SignIn) {
    let (user_id, user_info, user_data, watchlist, warning) = match signin {
        SignIn::Again { user_data } => {
            session.send(outbound::signin_success(&user_data));
            return;
        }
        SignIn::New {
            user_id,
            user_info,
            user_data,
            watchlist,
            watchlist_warning,
        } => (user_id, user_info, user_data, watchlist, watchlist_warning),
    };
    let app = session.app;
    *session.user.borrow_mut() = Some(SignedInUser {
        id: Rc::from(user_id.as_str()),
        info: user_info.into_boxed_str(),
        watchlist: watchlist.clone(),
    });
    session.authorized.set(true);
    session.send(outbound::signin_success(&user_data));
    if let Some(w) = warning {
        session.send(w.frame());
    }
    core.user_signed_in(app, &user_id);
    if watchlist.is_empty() {
        return;
    }
    // Changes that arrive while the snapshot is gathered are newer than it: they wait until after it.
    session.watch_snapshot_pending.set(true);
    let online = core.watch(app, &watchlist, session.socket_id).await;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for (u, is_online) in watchlist.iter().zip(&online) {
        if *is_online {
            on.push(&**u)
        } else {
            off.push(&**u)
        }
    }
    session.send(outbound::watchlist_events(&on, &off));
    session.watch_snapshot_pending.set(false);
    let held = std::mem::take(&mut *session.deferred_watch_events.borrow_mut());
    for (u, now_online) in held {
        // A change the snapshot already shows (it was read after the change) is not news.
        let shown = watchlist
            .iter()
            .zip(&online)
            .any(|(w, o)| **w == *u && *o == now_online);
        if !shown {
            session.send(watch_event(&u, now_online));
        }
    }
}

/// Teardown: the user's home learns one connection fewer; the watched users' homes forget this watcher.
pub fn sign_out(core: &Core, session: &Session) {
    let Some(user) = session.user.borrow_mut().take() else {
        return;
    };
    core.user_signed_out(session.app, &user.id);
    if !user.watchlist.is_empty() {
        core.unwatch(session.app, user.watchlist, session.socket_id);
    }
}

pub fn online(core: &Core, app: AppIdx, user_id: &str) {
    let msg = UserMsg::Online {
        app,
        user_id: Box::from(user_id),
    };
    let _ = core.send_to(core.user_home(app, user_id), CoreMsg::Users(msg));
}

pub fn offline(core: &Core, app: AppIdx, user_id: &str) {
    let msg = UserMsg::Offline {
        app,
        user_id: Box::from(user_id),
    };
    let _ = core.send_to(core.user_home(app, user_id), CoreMsg::Users(msg));
}

/// Registers with every watched user's home; a home that cannot be asked, or does not answer, counts its users
/// as offline.
pub async fn watch(core: &Core, app: AppIdx, users: &[Box<str>], watcher: SocketId) -> Vec<bool> {
    let mut pending = Vec::new();
    for (home, group) in core.group_by_user_home(app, users) {
        let (tx, rx) = oneshot::channel();
        let msg = UserMsg::Watch {
            app,
            users: group.clone(),
            core: core.id,
            watcher,
            reply: tx,
        };
        let asked = core.send_to(home, CoreMsg::Users(msg)).is_ok();
        pending.push((group, asked.then_some(rx)));
    }
    let mut online: HashSet<Box<str>> = HashSet::new();
    for (group, rx) in pending {
        let states = match rx {
            Some(rx) => message::reply(rx).await.unwrap_or_default(),
            None => Vec::new(),
        };
        online.extend(
            group
                .into_iter()
                .zip(states)
                .filter(|(_, on)| *on)
                .map(|(u, _)| u),
        );
    }
    users.iter().map(|u| online.contains(u)).collect()
}

pub fn unwatch(core: &Core, app: AppIdx, users: Vec<Box<str>>, watcher: SocketId) {
    for (home, group) in core.group_by_user_home(app, &users) {
        let msg = UserMsg::Unwatch {
            app,
            users: group,
            watcher,
        };
        let _ = core.send_to(home, CoreMsg::Users(msg));
    }
}

/// `terminate_connections`: every core closes the user's connections (4009), on every node of a cluster.
pub fn terminate(core: &Core, app: AppIdx, user_id: &str) {
    if let Some(cluster) = core.shared.cluster.get() {
        cluster.terminate(&core.app(app).config.id, user_id);
    }
    let user_id: Arc<str> = Arc::from(user_id);
    for to in 0..core.shared.cores() {
        let msg = UserMsg::Terminate {
            app,
            user_id: user_id.clone(),
        };
        let _ = core.send_to(to, CoreMsg::Users(msg));
    }
}

fn watch_event(user_id: &str, online: bool) -> bytes::Bytes {
    let ids = [user_id];
    if online {
        outbound::watchlist_events(&ids, &[])
    } else {
        outbound::watchlist_events(&[], &ids)
    }
}

// -- the home side (and the watcher's core) ------------------------------------------------------------------

pub fn on_message(core: &Core, msg: UserMsg) {
    match msg {
        UserMsg::Online { app, user_id } => {
            let first = core.facts.borrow_mut().user_online(app, &user_id);
            if first.is_some() {
                went(core, app, user_id, true);
            }
        }
        UserMsg::Offline { app, user_id } => {
            let last = core.facts.borrow_mut().user_offline(app, &user_id);
            if last.is_some() {
                went(core, app, user_id, false);
            }
        }
        UserMsg::Remote {
            app,
            user_id,
            online,
        } => {
            // A user signed in here is online for this node's watchers whatever a record says (see presence).
            if !online && core.facts.borrow().is_online(app, &user_id) {
                return;
            }
            let watchers = core.facts.borrow().watchers(app, &user_id);
            notify(core, &watchers, &user_id, online);
        }
        UserMsg::Gone { app, user_id } => {
            core.lifecycle(LifecycleEvent::UserOffline { app, user_id })
        }
        UserMsg::Watch {
            app,
            users,
            core: watcher_core,
            watcher,
            reply,
        } => {
            let states = core
                .facts
                .borrow_mut()
                .watch(app, &users, watcher_core, watcher);
            if states.iter().any(Option::is_none) {
                crate::warn!("watchlist registration dropped: a user has too many watchers");
            }
            let here: Vec<bool> = states.into_iter().map(|s| s.unwrap_or(false)).collect();
            // In a cluster a user online on another node is online too.
            let Some(cluster) = core.shared.cluster.get() else {
                let _ = reply.send(here);
                return;
            };
            let q = ClusterQuery::Online {
                app_id: core.app(app).config.id.clone(),
                users: users.iter().map(|u| u.to_string()).collect(),
            };
            let rx = cluster.query(q);
            monoio::spawn(async move {
                let answer = message::reply(rx).await.ok().flatten();
                let states = match answer {
                    Some(ClusterAnswer::Flags(flags)) if flags.len() == here.len() => {
                        here.iter().zip(flags).map(|(h, c)| *h || c).collect()
                    }
                    _ => here,
                };
                let _ = reply.send(states);
            });
        }
        UserMsg::Unwatch {
            app,
            users,
            watcher,
        } => core.facts.borrow_mut().unwatch(app, &users, watcher),
        UserMsg::Changed {
            watcher,
            user_id,
            online,
        } => {
            if let Some(s) = core.session_by_socket(watcher) {
                if s.watch_snapshot_pending.get() {
                    s.defer_watch_event(&user_id, online);
                } else {
                    s.send(watch_event(&user_id, online));
                }
            }
        }
        UserMsg::Terminate { app, user_id } => {
            let message = "Connection terminated by the server (terminate_connections)";
            for s in core.all_sessions() {
                if s.app == app && s.user_id().is_some_and(|u| *u == *user_id) {
                    s.close_with_error(close::UNAUTHORIZED, message);
                }
            }
        }
    }
}

/// This node's first signed-in connection of the user opened (`online`) or its last closed. In a cluster Redis
/// says whether that was the cluster's first or last (the other nodes hear it from Redis); only then are the
/// watchers told and the webhook sent, once per cluster.
fn went(core: &Core, app: AppIdx, user_id: Box<str>, online: bool) {
    let (Some(cluster), Some(me)) = (core.shared.cluster.get(), core.rc()) else {
        return announce(core, app, user_id, online);
    };
    let rx = cluster.online(&core.app(app).config.id, &user_id, online);
    monoio::spawn(async move {
        // Unanswered (Redis unreachable): this node's view.
        if message::reply(rx).await.ok().flatten().unwrap_or(true) {
            announce(&me, app, user_id, online);
        }
    });
}

fn announce(core: &Core, app: AppIdx, user_id: Box<str>, online: bool) {
    let watchers = core.facts.borrow().watchers(app, &user_id);
    notify(core, &watchers, &user_id, online);
    core.lifecycle(if online {
        LifecycleEvent::UserOnline { app, user_id }
    } else {
        LifecycleEvent::UserOffline { app, user_id }
    });
}

fn notify(core: &Core, watchers: &[(usize, SocketId)], user_id: &str, online: bool) {
    for (to, watcher) in watchers {
        let msg = UserMsg::Changed {
            watcher: *watcher,
            user_id: Box::from(user_id),
            online,
        };
        let _ = core.send_to(*to, CoreMsg::Users(msg));
    }
}
