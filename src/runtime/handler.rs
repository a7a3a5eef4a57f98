//! Carries out a connection's messages (docs/protocol.md#framing): ping, subscribe, unsubscribe, sign-in and
//! client events. The rules are `protocol`'s; this is where a message that passed them reaches the channel index,
//! the facts and the publish pipeline.
//!
//! Errors are per message: the client gets `pusher:error` and the connection stays open. Handling is awaited in
//! the connection's read loop, so a client's messages take effect in the order sent (a subscribe completes
//! before the client event that follows it).

use std::rc::Rc;

use crate::app::AppIdx;
use crate::channels::publication::{Publication, Source};
use crate::config::WebhookKind;
use crate::json::JsonError;
use crate::protocol::codes::close;
use crate::protocol::inbound::{self, ClientMessage, SubscribeData};
use crate::protocol::rejection::Rejection;
use crate::protocol::session::Session;
use crate::protocol::{client_event, outbound, signin, subscribe};
use crate::runtime::core::Core;
use crate::runtime::facts::Facts;
use crate::runtime::history::{self, Recovery};
use crate::runtime::message::{NoReply, reply};
use crate::runtime::presence::JoinReply;
use crate::runtime::{cache, users};
use crate::webhooks::{Detail, WebhookEvent};

/// Handles one text message from the client.
pub async fn handle_text(core: &Core, session: &Rc<Session>, text: &[u8]) {
    let msg = match inbound::parse(text) {
        Ok(m) => m,
        Err(e) => {
            // Malformed JSON gets an error, never a close (docs/protocol.md#framing).
            let what = "Invalid message format: expected a JSON object with an \"event\" field";
            return reject(session, Rejection::from_json(e, what));
        }
    };
    match &*msg.event {
        "pusher:ping" => {
            session.send(outbound::pong());
        }
        "pusher:pong" => {}
        "pusher:subscribe" => match inbound::subscribe_data(&msg.data) {
            Ok(d) => subscribe(core, session, d).await,
            Err(e) => reject(
                session,
                Rejection::from_json(e, "Invalid subscribe message: data must hold a channel"),
            ),
        },
        "pusher:unsubscribe" => match inbound::subscribe_data(&msg.data) {
            // No acknowledgement; unknown channels are ignored (docs/protocol.md#unsubscribe).
            Ok(SubscribeData {
                channel: Some(channel),
                ..
            }) => core.leave_channel(session, &channel),
            Err(JsonError::TooDeep) => reject(session, Rejection::too_deep()),
            _ => {}
        },
        "pusher:signin" => {
            let cfg = &core.app(session.app).config;
            match signin::check(cfg, session, &msg) {
                Ok(s) => users::sign_in(core, session, s).await,
                Err(r) => reject(session, r),
            }
        }
        event if event.starts_with("client-") => client_event(core, session, &msg),
        // Unknown events are ignored (docs/protocol.md#framing).
        _ => {}
    }
}

fn reject(session: &Session, r: Rejection) {
    session.send(r.frame());
}

async fn subscribe(core: &Core, session: &Rc<Session>, d: SubscribeData) {
    let app = core.app(session.app);
    let req = match subscribe::check(&app.config, session, d) {
        Ok(r) => r,
        Err(r) => return reject(session, r),
    };
    let channel = req.channel.as_str();
    if !core.has_room_for(session.app, channel) {
        let max = core.shared.config.limits.max_channels;
        return reject(
            session,
            Rejection::with_code(
                close::OVER_CAPACITY,
                format!(
                    "Server channel limit reached ({max} channels): cannot subscribe to {channel}"
                ),
            ),
        );
    }
    if req.ty.needs_auth() {
        session.authorized.set(true);
    }
    listen_in_cluster(core, session.app, channel).await;
    // A replay is asked for with the channel's last event id; apps without history ignore it.
    let after = req
        .last_event_id
        .as_deref()
        .filter(|_| app.config.history_enabled);
    let busy = || Rejection::new("Server busy: try subscribing again");
    // Whether a replay brought the client up to date (then the cache channel's last event is not sent again).
    let recovered = match (req.member, after) {
        // The home core's answer subscribes the socket and sends the success itself (ordering, see presence).
        (Some(member), after) => match core.join_presence(session, channel, member, after).await {
            JoinReply::Joined { recovered } => recovered == Some(true),
            JoinReply::Gone => return,
            JoinReply::Full => {
                let max = app.config.max_presence_members;
                return reject(
                    session,
                    Rejection::new(format!("Cannot join {channel}: over {max} members")),
                );
            }
            JoinReply::Busy => return reject(session, busy()),
        },
        // The replay comes from the channel's home, in order with its live events (see history).
        (None, Some(after)) => match history::recover(core, session, channel, after).await {
            Ok(Recovery::Subscribed { recovered }) => recovered,
            Ok(Recovery::Gone) => return,
            Err(NoReply) => return reject(session, busy()),
        },
        (None, None) => {
            if session.is_closing() {
                return;
            }
            core.subscribe_locally(session, channel);
            session.send(outbound::subscription_succeeded(channel));
            false
        }
    };
    if session.is_closing() {
        return;
    }
    if req.ty.cache && !recovered {
        cache::replay(core, session, channel).await;
    }
    core.subscription_changed(session.app, channel, 1);
}

/// The first subscriber of a channel on this core waits until this node listens to the channel in Redis, so no
/// publication of another node falls between its `subscription_succeeded` and the subscription (at most
/// `REPLY_TIMEOUT`; the bridge answers at once while Redis is unreachable).
async fn listen_in_cluster(core: &Core, app: AppIdx, channel: &str) {
    let Some(cluster) = core.shared.cluster.get() else {
        return;
    };
    if core.channels.borrow().local_count(app, channel) > 0 {
        return;
    }
    let ready = cluster.ensure(&core.app(app).config.id, channel);
    if reply(ready).await.is_err() {
        crate::debug!("core {}: Redis did not confirm {channel} in time", core.id);
    }
}

fn client_event(core: &Core, session: &Rc<Session>, msg: &ClientMessage<'_>) {
    let kind = WebhookKind::ClientEvent;
    let checked = core.with_app(session.app, |a| {
        client_event::check(&a.config, session, msg).map(|e| (e, a.webhook_kinds.contains(kind)))
    });
    let (e, hooked) = match checked {
        Ok(checked) => checked,
        Err(r) => return reject(session, r),
    };
    let hook = hooked.then(|| WebhookEvent {
        user_id: e.user_id.as_deref().map(Box::from),
        detail: Detail::Client {
            event_token: Box::from(&e.name_token[..]),
            data_token: Box::from(&e.data_token[..]),
            socket_id: session.socket_id,
        },
        ..WebhookEvent::channel(session.app, kind, &e.channel)
    });
    // Never echoed to the sender (docs/protocol.md#client-events).
    let p = Publication::new(
        session.app,
        Source::Client,
        &[e.channel],
        &e.name_token,
        &e.data_token,
        e.user_id.as_deref(),
        Some(session.socket_id),
    );
    if core.publish(p).is_err() {
        return reject(
            session,
            Rejection::new("Server busy: client event not delivered everywhere"),
        );
    }
    if let Some(event) = hook {
        core.shared.webhooks.emit(event);
    }
}
