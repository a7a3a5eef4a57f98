//! Presence channels across cores (docs/protocol.md#presence): the joiner's side, the roster's home side, and
//! the teardown when a connection leaves.
//!
//! A join is recorded on the session first (so a disconnect meanwhile still sends the matching leave), then sent
//! to the channel's home core, which updates the roster and answers through the joiner's own inbox: the
//! joiner's `subscription_succeeded` therefore reaches the socket before any member event the home core sends
//! after it. Users count once across connections: `member_added` on a user's first connection, `member_removed`
//! on the last.

use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::channels::lifecycle::LifecycleEvent;
use crate::channels::presence::{self, Join};
use crate::channels::publication::Publication;
use crate::cluster::PresenceJoined;
use crate::protocol::inbound::Member;
use crate::protocol::outbound;
use crate::protocol::session::{Membership, Session};
use crate::runtime::core::Core;
use crate::runtime::history::{self, Replay};
use crate::runtime::inbox::Lane;
use crate::runtime::message::{self, CoreMsg, NoReply};
use crate::socket_id::SocketId;

/// How a presence join ended.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinReply {
    /// Subscribed, and `subscription_succeeded` (with the roster) sent; with a replay asked for, also the replay
    /// and `relay:recovery`, and whether it recovered.
    Joined { recovered: Option<bool> },
    /// The channel is at its member limit.
    Full,
    /// The joining session left (unsubscribed or closed) meanwhile; its leave was sent.
    Gone,
    /// The home core could not take the join or did not answer in time; nothing is left joined.
    Busy,
}

pub enum PresenceMsg {
    /// Joiner -> home: add a connection of `user_id` to the roster.
    Join(JoinRequest),
    /// Anyone -> home: one connection of `user_id` left.
    Leave {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
    },
    /// Home -> joiner's core: subscribe the socket and send `success` (None: the roster is full), then the
    /// replay, if one was asked for. A replay travels the publish lane behind the channel's events the home sent
    /// before (`ordered`); otherwise, and as the fallback when that lane is full, the cleanup lane.
    Joined {
        socket: SocketId,
        channel: Box<str>,
        success: Option<Bytes>,
        replay: Option<Replay>,
        ordered: bool,
        reply: oneshot::Sender<JoinReply>,
    },
    /// Home -> joiner's core: the cluster's roster is full; the home counted this connection, so the joiner's
    /// membership (if the session still has it) leaves like any other, exactly once.
    Refused {
        socket: SocketId,
        channel: Box<str>,
        reply: oneshot::Sender<JoinReply>,
    },
    /// Anyone -> home: the roster's user ids.
    Users {
        app: AppIdx,
        channel: Box<str>,
        reply: oneshot::Sender<Vec<Box<str>>>,
    },
    /// Cluster bridge -> home: a member joined (`user_info` set) or left on another node; tell the local
    /// subscribers.
    Remote {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
        user_info: Option<Box<str>>,
    },
    /// Cluster bridge -> home: this node removed a dead node's member; the webhook is this node's to send.
    Gone {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
    },
}

impl PresenceMsg {
    pub fn lane(&self) -> Lane {
        match self {
            PresenceMsg::Join(_) | PresenceMsg::Users { .. } => Lane::Control,
            PresenceMsg::Joined { ordered: true, .. } => Lane::Publish,
            PresenceMsg::Leave { .. }
            | PresenceMsg::Joined { .. }
            | PresenceMsg::Remote { .. }
            | PresenceMsg::Refused { .. }
            | PresenceMsg::Gone { .. } => Lane::Cleanup,
        }
    }
}

// -- the joiner's side ---------------------------------------------------------------------------------------

pub async fn join(
    core: &Core,
    session: &Rc<Session>,
    channel: &str,
    member: Member,
    after: Option<&str>,
) -> JoinReply {
    let app = session.app;
    let user_id: Rc<str> = Rc::from(member.user_id);
    session.memberships.borrow_mut().push(Membership {
        channel: Rc::from(channel),
        user_id: user_id.clone(),
    });
    let (tx, rx) = oneshot::channel();
    let msg = PresenceMsg::Join(JoinRequest {
        app,
        channel: Box::from(channel),
        user_id: Box::from(&*user_id),
        user_info: member.user_info.into_boxed_str(),
        socket: session.socket_id,
        joiner: core.id,
        after: after.map(Box::from),
        reply: tx,
    });
    if core
        .send_home(app, channel, CoreMsg::Presence(msg))
        .is_err()
    {
        // The home core never saw the join: nothing to undo there.
        session.take_membership(channel);
        return JoinReply::Busy;
    }
    match message::reply(rx).await {
        Ok(JoinReply::Full) => {
            session.take_membership(channel);
            JoinReply::Full
        }
        Ok(reply) => reply,
        Err(NoReply) => {
            // The home core may still count the join: undo it there (the leave queues behind the join).
            if session.take_membership(channel).is_some() {
                leave(core, app, channel, &user_id);
            }
            JoinReply::Busy
        }
    }
}

/// One connection of `user_id` left `channel` (a leave is never refused).
pub fn leave(core: &Core, app: AppIdx, channel: &str, user_id: &str) {
    let msg = PresenceMsg::Leave {
        app,
        channel: Box::from(channel),
        user_id: Box::from(user_id),
    };
    let _ = core.send_home(app, channel, CoreMsg::Presence(msg));
}

/// Teardown: the session leaves every roster it joined or was joining.
pub fn leave_all(core: &Core, session: &Session) {
    let memberships = std::mem::take(&mut *session.memberships.borrow_mut());
    for m in memberships {
        leave(core, session.app, &m.channel, &m.user_id);
    }
}

/// The distinct users of presence `channel`, from its home core.
pub async fn users(core: &Core, app: AppIdx, channel: &str) -> Result<Vec<Box<str>>, NoReply> {
    let channel_name = Box::from(channel);
    core.ask(core.home_of(app, channel), |reply| {
        CoreMsg::Presence(PresenceMsg::Users {
            app,
            channel: channel_name,
            reply,
        })
    })
    .await
}

// -- the home side -------------------------------------------------------------------------------------------

pub fn on_message(core: &Core, msg: PresenceMsg) {
    match msg {
        PresenceMsg::Join(pending) => {
            let app = pending.app;
            let max = core.app(app).config.max_presence_members;
            let result = core.facts.borrow_mut().presence_join(
                app,
                &pending.channel,
                &pending.user_id,
                &pending.user_info,
                max,
            );
            let new_member = result.join == Join::NewMember;
            match (core.shared.cluster.get(), core.rc(), result.snapshot) {
                // In a cluster the roster and the first join are the cluster's: ask Redis, go on when it answers
                // (the bridge keeps this core's joins and leaves in order).
                (Some(cluster), Some(me), Some(local)) => {
                    let key = (app, pending.channel.clone());
                    core.presence_waits.borrow_mut().entry(key).or_default().0 += 1;
                    let rx = cluster.presence_join(
                        &core.app(app).config.id,
                        &pending.channel,
                        &pending.user_id,
                        &pending.user_info,
                        max,
                    );
                    monoio::spawn(async move {
                        let answer = message::reply(rx).await.ok().flatten();
                        let key = (pending.app, pending.channel.clone());
                        joined_in_cluster(&me, pending, local, new_member, answer);
                        join_settled(&me, key);
                    });
                }
                (_, _, snapshot) => complete_join(core, pending, snapshot, new_member),
            }
        }
        PresenceMsg::Leave {
            app,
            channel,
            user_id,
        } => {
            let last = core
                .facts
                .borrow_mut()
                .presence_leave(app, &channel, &user_id);
            if !last {
                return;
            }
            match (core.shared.cluster.get(), core.rc()) {
                (Some(cluster), Some(me)) => {
                    let rx = cluster.presence_leave(&core.app(app).config.id, &channel, &user_id);
                    monoio::spawn(async move {
                        // Unanswered (Redis unreachable): this node's view, its last connection left.
                        let cluster_last = message::reply(rx).await.ok().flatten().unwrap_or(true);
                        if cluster_last {
                            member_removed(&me, app, channel, user_id, true);
                        }
                    });
                }
                _ => member_removed(core, app, channel, user_id, true),
            }
        }
        PresenceMsg::Remote {
            app,
            channel,
            user_id,
            user_info,
        } => {
            if let Some((_, held)) = core
                .presence_waits
                .borrow_mut()
                .get_mut(&(app, channel.clone()))
            {
                held.push((user_id, user_info));
                return;
            }
            remote_member(core, app, channel, user_id, user_info);
        }
        PresenceMsg::Gone {
            app,
            channel,
            user_id,
        } => core.lifecycle(LifecycleEvent::MemberRemoved {
            app,
            channel,
            user_id,
        }),
        PresenceMsg::Joined {
            socket,
            channel,
            success,
            replay,
            reply,
            ..
        } => {
            let joined = match (success, core.session_by_socket(socket)) {
                (None, _) => JoinReply::Full,
                (Some(frame), Some(s)) if s.membership(&channel).is_some() => {
                    core.subscribe_locally(&s, &channel);
                    s.send(frame);
                    let recovered = replay.map(|r| {
                        let replayed = r.frames.len();
                        for f in r.frames {
                            s.send(f);
                        }
                        s.send(history::recovery_frame(&channel, r.recovered, replayed));
                        r.recovered
                    });
                    JoinReply::Joined { recovered }
                }
                (Some(_), _) => JoinReply::Gone,
            };
            let _ = reply.send(joined);
        }
        PresenceMsg::Users {
            app,
            channel,
            reply,
        } => {
            let _ = reply.send(core.facts.borrow().presence_users(app, &channel));
        }
        PresenceMsg::Refused {
            socket,
            channel,
            reply,
        } => {
            if let Some(s) = core.session_by_socket(socket)
                && let Some(m) = s.take_membership(&channel)
            {
                leave(core, s.app, &channel, &m.user_id);
            }
            let _ = reply.send(JoinReply::Full);
        }
    }
}

/// A connection of `user_id` joining: what the home core needs to answer it (kept while Redis decides).
pub struct JoinRequest {
    app: AppIdx,
    channel: Box<str>,
    user_id: Box<str>,
    user_info: Box<str>,
    socket: SocketId,
    /// The joining socket's core.
    joiner: usize,
    /// A replay of the channel's events after this id was asked for (apps with history).
    after: Option<Box<str>>,
    reply: oneshot::Sender<JoinReply>,
}

/// The cluster answered a join (or did not: then this node's roster stands).
fn joined_in_cluster(
    core: &Core,
    j: JoinRequest,
    local: String,
    new_member: bool,
    answer: Option<PresenceJoined>,
) {
    match answer {
        None => complete_join(core, j, Some(local), new_member),
        Some(c) if c.full => {
            // The local roster counted this connection: it leaves through the joiner's membership, once, whether
            // the session is still there or its teardown already sent the leave.
            let refused = PresenceMsg::Refused {
                socket: j.socket,
                channel: j.channel,
                reply: j.reply,
            };
            let _ = core.send_to(j.joiner, CoreMsg::Presence(refused));
        }
        Some(c) => {
            let snapshot =
                presence::snapshot_json_of(c.roster.iter().map(|(u, i)| (u.as_str(), i.as_str())));
            complete_join(core, j, Some(snapshot), c.first);
        }
    }
}

/// Answers the joiner with `snapshot` (None: the channel is full), then tells the others of a new member.
fn complete_join(core: &Core, j: JoinRequest, snapshot: Option<String>, new_member: bool) {
    let JoinRequest {
        app,
        channel,
        user_id,
        user_info,
        socket,
        joiner,
        after,
        reply,
    } = j;
    let success = snapshot.map(|snapshot| {
        outbound::channel_event_json(
            "pusher_internal:subscription_succeeded",
            &channel,
            &snapshot,
        )
    });
    let replay = match after {
        Some(after) if success.is_some() && core.app(app).config.history_enabled => {
            Some(history::replay(core, app, &channel, &after))
        }
        _ => None,
    };
    // First the joiner's success, then member_added: both leave this core in that order.
    let joined = PresenceMsg::Joined {
        socket,
        channel: channel.clone(),
        success,
        ordered: replay.is_some(),
        replay,
        reply,
    };
    if let Err(CoreMsg::Presence(PresenceMsg::Joined {
        socket,
        channel,
        success,
        reply,
        ..
    })) = core.offer_to(joiner, CoreMsg::Presence(joined))
    {
        // The joiner's publish lane is full: join without the replay, telling the client it did not recover.
        let fallback = PresenceMsg::Joined {
            socket,
            channel,
            success,
            replay: Some(Replay {
                recovered: false,
                frames: Vec::new(),
            }),
            ordered: false,
            reply,
        };
        let _ = core.send_to(joiner, CoreMsg::Presence(fallback));
    }
    if new_member {
        let data = presence::member_added_json(&user_id, &user_info);
        let mut p = Publication::server_event(app, &channel, "pusher_internal:member_added", &data);
        p.except = Some(socket);
        core.broadcast(p);
        core.lifecycle(LifecycleEvent::MemberAdded {
            app,
            channel,
            user_id,
        });
    }
}

/// Tells the local subscribers a member left; `webhook`: this node's to report (not a remote node's leave).
fn member_removed(core: &Core, app: AppIdx, channel: Box<str>, user_id: Box<str>, webhook: bool) {
    let data = presence::member_removed_json(&user_id);
    let p = Publication::server_event(app, &channel, "pusher_internal:member_removed", &data);
    core.broadcast(p);
    if webhook {
        core.lifecycle(LifecycleEvent::MemberRemoved {
            app,
            channel,
            user_id,
        });
    }
}

/// Another node's member record: this node's subscribers are told.
fn remote_member(
    core: &Core,
    app: AppIdx,
    channel: Box<str>,
    user_id: Box<str>,
    user_info: Option<Box<str>>,
) {
    match user_info {
        // A user with a connection here has not left, whatever a record says (it can only come from a cleanup
        // that mistook this node for dead, which this node repairs): its subscribers are not told.
        None if core.facts.borrow().presence_has(app, &channel, &user_id) => {}
        Some(info) => {
            let data = presence::member_added_json(&user_id, &info);
            let p = Publication::server_event(app, &channel, "pusher_internal:member_added", &data);
            core.broadcast(p);
        }
        None => member_removed(core, app, channel, user_id, false),
    }
}

/// A join of the channel got its answer; with none left waiting, the records held meanwhile go out, after the
/// joiners' rosters (pusher-js takes a member it already has, or a removal of one it has not, in its stride).
fn join_settled(core: &Core, key: (AppIdx, Box<str>)) {
    let held = {
        let mut waits = core.presence_waits.borrow_mut();
        let Some(w) = waits.get_mut(&key) else {
            return;
        };
        w.0 -= 1;
        if w.0 > 0 {
            return;
        }
        waits.remove(&key).map(|(_, held)| held).unwrap_or_default()
    };
    for (user_id, user_info) in held {
        remote_member(core, key.0, key.1.clone(), user_id, user_info);
    }
}
