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
    Join {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
        user_info: Box<str>,
        socket: SocketId,
        /// The joining socket's core.
        core: usize,
        /// A replay of the channel's events after this id was asked for (apps with history).
        after: Option<Box<str>>,
        reply: oneshot::Sender<JoinReply>,
    },
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
    /// Anyone -> home: the roster's user ids.
    Users {
        app: AppIdx,
        channel: Box<str>,
        reply: oneshot::Sender<Vec<Box<str>>>,
    },
}

impl PresenceMsg {
    pub fn lane(&self) -> Lane {
        match self {
            PresenceMsg::Join { .. } | PresenceMsg::Users { .. } => Lane::Control,
            PresenceMsg::Joined { ordered: true, .. } => Lane::Publish,
            PresenceMsg::Leave { .. } | PresenceMsg::Joined { .. } => Lane::Cleanup,
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
    let msg = PresenceMsg::Join {
        app,
        channel: Box::from(channel),
        user_id: Box::from(&*user_id),
        user_info: member.user_info.into_boxed_str(),
        socket: session.socket_id,
        core: core.id,
        after: after.map(Box::from),
        reply: tx,
    };
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
        PresenceMsg::Join {
            app,
            channel,
            user_id,
            user_info,
            socket,
            core: joiner,
            after,
            reply,
        } => {
            let max = core.app(app).config.max_presence_members;
            let result = core
                .facts
                .borrow_mut()
                .presence_join(app, &channel, &user_id, &user_info, max);
            let success = result.snapshot.map(|snapshot| {
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
                // The joiner's publish lane is full: join without the replay, telling the client it did not
                // recover.
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
            if result.join == Join::NewMember {
                let data = presence::member_added_json(&user_id, &user_info);
                let mut p =
                    Publication::server_event(app, &channel, "pusher_internal:member_added", &data);
                p.except = Some(socket);
                core.broadcast(p);
                core.lifecycle(LifecycleEvent::MemberAdded {
                    app,
                    channel,
                    user_id,
                });
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
            if last {
                let data = presence::member_removed_json(&user_id);
                let p = Publication::server_event(
                    app,
                    &channel,
                    "pusher_internal:member_removed",
                    &data,
                );
                core.broadcast(p);
                core.lifecycle(LifecycleEvent::MemberRemoved {
                    app,
                    channel,
                    user_id,
                });
            }
        }
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
    }
}
