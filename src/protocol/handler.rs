//! Dispatch of client messages on an established connection (spec §2.4, §3, §6, §7).
//!
//! Errors here are per-message: the client gets `pusher:error` and the connection stays open (spec §1.3).

use std::rc::Rc;

use crate::auth;
use crate::channels::index::ChannelIndex;
use crate::channels::name::{self, ChannelKind};
use crate::protocol::inbound::{self, SubscribeData};
use crate::protocol::outbound;
use crate::server::core::Core;
use crate::ws::session::Session;

/// Handles one text message from the client.
pub fn handle_text(core: &Core, session: &Rc<Session>, text: &[u8]) {
    let Some(msg) = inbound::parse(text) else {
        // spec §1.3: malformed JSON gets an error, never a close.
        session.send(outbound::error(
            None,
            "Invalid message format: expected a JSON object with an \"event\" field",
        ));
        return;
    };
    match &*msg.event {
        "pusher:ping" => session.send(outbound::pong()),
        "pusher:pong" => {}
        "pusher:subscribe" => match inbound::subscribe_data(&msg.data) {
            Some(d) => subscribe(core, session, d),
            None => session.send(outbound::error(
                None,
                "Invalid subscribe message: data must hold a channel",
            )),
        },
        "pusher:unsubscribe" => {
            let channel = inbound::subscribe_data(&msg.data).and_then(|d| d.channel);
            if let Some(channel) = channel {
                unsubscribe(core, session, &channel);
            }
        }
        event if event.starts_with("client-") => {
            session.send(outbound::error(
                None,
                "Client events are not supported by this server yet",
            ));
        }
        // spec §1.3: unknown events are ignored.
        _ => {}
    }
}

fn subscribe(core: &Core, session: &Rc<Session>, d: SubscribeData) {
    let app = &core.app(session.app).config;
    let Some(channel) = d.channel else {
        session.send(outbound::error(
            None,
            "Invalid subscribe message: data.channel must be a string",
        ));
        return;
    };
    let ty = match name::validate(&channel, app.max_channel_name_length) {
        Ok(t) => t,
        Err(e) => {
            session.send(outbound::error(
                None,
                &e.message(&channel, app.max_channel_name_length),
            ));
            return;
        }
    };
    // spec §3.3 step 2: a repeated subscribe keeps the existing one and sends no second success.
    if ChannelIndex::is_subscribed(session, &channel) {
        session.send(outbound::error(
            None,
            &format!("Existing subscription to channel {channel}"),
        ));
        return;
    }
    match ty.kind {
        ChannelKind::Public => {}
        ChannelKind::Private | ChannelKind::Encrypted => {
            let given = d.auth.as_deref().unwrap_or("");
            if let Err(e) = auth::verify_channel_auth(
                &app.key,
                &app.secret,
                &session.socket_id_text,
                &channel,
                None,
                given,
            ) {
                session.send(outbound::error(None, &e.message(&channel)));
                return;
            }
        }
        ChannelKind::Presence | ChannelKind::ServerToUser => {
            session.send(outbound::error(
                None,
                &format!("Channel type of {channel} is not supported by this server yet"),
            ));
            return;
        }
    }
    core.channels.borrow_mut().subscribe(session, &channel);
    session.send(outbound::subscription_succeeded(&channel));
}

fn unsubscribe(core: &Core, session: &Rc<Session>, channel: &str) {
    // spec §3.4: no acknowledgement; unknown channels are ignored.
    core.channels.borrow_mut().unsubscribe(session, channel);
}
