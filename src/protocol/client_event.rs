//! The rules of client events (docs/protocol.md#client-events), checked in Pusher's order: event name, the app's
//! switch, channel type, subscription, rate (4301), size. What passes is the event's name and data as JSON string
//! tokens, ready to splice into a frame.

use crate::config::AppConfig;
use crate::json::push_json_string;
use crate::protocol::channel_name::{ChannelKind, ChannelType};
use crate::protocol::codes::error;
use crate::protocol::inbound::ClientMessage;
use crate::protocol::rejection::Rejection;
use crate::protocol::session::Session;
use sonic_rs::JsonValueTrait;

/// A client event that passed every rule.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientEvent {
    pub channel: String,
    /// The event name and data as complete JSON string tokens.
    pub name_token: Vec<u8>,
    pub data_token: Vec<u8>,
    /// The sender's user id on presence channels.
    pub user_id: Option<String>,
}

/// Counts against the sender's rate (only events that pass the earlier checks do).
pub fn check(
    cfg: &AppConfig,
    session: &Session,
    msg: &ClientMessage<'_>,
) -> Result<ClientEvent, Rejection> {
    if msg.event.chars().count() > cfg.max_event_name_length {
        return Err(Rejection::new(format!(
            "Client event name too long (over {} characters)",
            cfg.max_event_name_length
        )));
    }
    if !cfg.client_events {
        return Err(Rejection::new(
            "To send client events, you must enable this feature in the Settings page of your dashboard.",
        ));
    }
    let Some(channel) = msg.channel.as_deref() else {
        return Err(Rejection::new("Client events need a channel"));
    };
    let ty = ChannelType::of(channel);
    if !matches!(
        ty.kind,
        ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence
    ) {
        return Err(Rejection::new(
            "Client event rejected - only supported on private and presence channels",
        ));
    }
    if !session.is_subscribed(channel) {
        return Err(Rejection::new(format!(
            "Cannot broadcast client event (connection not subscribed to channel {channel})"
        )));
    }
    if !session.allow_client_event(cfg.max_client_events_per_second) {
        return Err(Rejection::with_code(
            error::CLIENT_EVENT_RATE_LIMIT,
            "Client event rejected due to rate limit",
        ));
    }
    // Data is relayed as a string: string data byte for byte, anything else as its JSON text.
    let (data_token, data_len) = match &msg.data {
        Some(d) if d.is_str() => (
            d.as_raw_str().as_bytes().to_vec(),
            d.as_str().map_or(0, str::len),
        ),
        Some(d) => {
            let mut t = Vec::with_capacity(d.as_raw_str().len() + 2);
            push_json_string(&mut t, d.as_raw_str());
            (t, d.as_raw_str().len())
        }
        None => (b"\"{}\"".to_vec(), 2),
    };
    if data_len > cfg.max_event_payload_bytes {
        return Err(Rejection::new(format!(
            "Client event data too large (limit {} bytes)",
            cfg.max_event_payload_bytes
        )));
    }
    let mut name_token = Vec::with_capacity(msg.event.len() + 2);
    push_json_string(&mut name_token, &msg.event);
    let user_id = match ty.kind {
        ChannelKind::Presence => session.membership(channel).map(|u| u.to_string()),
        _ => None,
    };
    Ok(ClientEvent {
        channel: channel.to_string(),
        name_token,
        data_token,
        user_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::inbound;
    use crate::protocol::session::{Membership, Subscription};
    use crate::socket_id::SocketId;
    use std::cell::Cell;
    use std::rc::Rc;

    fn subscribed(channel: &str) -> Session {
        let s = Session::new(
            SocketId {
                random: 1,
                unique: 2,
            },
            0,
            -1,
            1 << 16,
        );
        s.subscriptions.borrow_mut().push(Subscription {
            channel: Rc::from(channel),
            slot: Cell::new(0),
        });
        s
    }

    fn event(cfg: &AppConfig, s: &Session, text: &str) -> Result<ClientEvent, Rejection> {
        check(cfg, s, &inbound::parse(text.as_bytes()).unwrap())
    }

    #[test]
    fn object_data_is_relayed_as_its_json_text_and_presence_adds_the_user() {
        let cfg = AppConfig::default();
        let s = subscribed("presence-r");
        s.memberships.borrow_mut().push(Membership {
            channel: Rc::from("presence-r"),
            user_id: Rc::from("42"),
        });
        let e = event(
            &cfg,
            &s,
            r#"{"event":"client-x","channel":"presence-r","data":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(e.data_token, br#""{\"a\":1}""#);
        assert_eq!(e.name_token, br#""client-x""#);
        assert_eq!(e.user_id.as_deref(), Some("42"));
    }

    #[test]
    fn rules_apply_in_order() {
        let s = subscribed("private-a");
        let off = AppConfig {
            client_events: false,
            ..AppConfig::default()
        };
        let e = event(&off, &s, r#"{"event":"client-x","channel":"public"}"#).unwrap_err();
        assert!(e.message.starts_with("To send client events"), "{e:?}");
        let cfg = AppConfig::default();
        let e = event(&cfg, &s, r#"{"event":"client-x","channel":"public"}"#).unwrap_err();
        assert!(e.message.contains("only supported on private"), "{e:?}");
        let e = event(&cfg, &s, r#"{"event":"client-x","channel":"private-b"}"#).unwrap_err();
        assert!(e.message.contains("not subscribed"), "{e:?}");
        for _ in 0..10 {
            event(
                &cfg,
                &s,
                r#"{"event":"client-x","channel":"private-a","data":"x"}"#,
            )
            .unwrap();
        }
        let e = event(
            &cfg,
            &s,
            r#"{"event":"client-x","channel":"private-a","data":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, Some(error::CLIENT_EVENT_RATE_LIMIT));
        let small = AppConfig {
            max_event_payload_bytes: 3,
            ..AppConfig::default()
        };
        let s = subscribed("private-a");
        let e = event(
            &small,
            &s,
            r#"{"event":"client-x","channel":"private-a","data":"abcd"}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("too large"), "{e:?}");
    }
}
