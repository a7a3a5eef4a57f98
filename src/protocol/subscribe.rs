//! The rules of `pusher:subscribe` (docs/protocol.md#subscribe): channel name, no second subscription, the
//! per-connection channel limit, the auth signature for private, encrypted and presence channels, the signed-in
//! user for `#server-to-user-{id}`, and a valid presence member. What passes is a [`Subscribe`] for the runtime to
//! carry out; what fails is the `pusher:error` to send.

use crate::config::AppConfig;
use crate::protocol::auth;
use crate::protocol::channel_name::{self, ChannelKind, ChannelType, SERVER_TO_USER_PREFIX};
use crate::protocol::inbound::{self, IdField, Member, SubscribeData};
use crate::protocol::rejection::Rejection;
use crate::protocol::session::Session;

/// A subscription that passed every rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscribe {
    pub channel: String,
    pub ty: ChannelType,
    /// Presence channels: who joins.
    pub member: Option<Member>,
    /// A replay of the events after this id was asked for (at most [`MAX_EVENT_ID_LEN`] characters are kept;
    /// a longer one can only be unknown).
    pub last_event_id: Option<String>,
}

/// Longest `last_event_id` looked at: ids are two decimal numbers.
pub const MAX_EVENT_ID_LEN: usize = 64;

pub fn check(cfg: &AppConfig, session: &Session, d: SubscribeData) -> Result<Subscribe, Rejection> {
    let Some(channel) = d.channel else {
        return Err(Rejection::new(
            "Invalid subscribe message: data.channel must be a string",
        ));
    };
    let max_len = cfg.max_channel_name_length;
    let ty = channel_name::validate(&channel, max_len)
        .map_err(|e| Rejection::new(e.message(&channel, max_len)))?;
    // A repeated subscribe keeps the existing one and sends no second success (docs/protocol.md#subscribe).
    if session.is_subscribed(&channel) || session.membership(&channel).is_some() {
        return Err(Rejection::new(format!(
            "Existing subscription to channel {channel}"
        )));
    }
    let pending_joins = session
        .memberships
        .borrow()
        .iter()
        .filter(|m| !session.is_subscribed(&m.channel))
        .count();
    if session.subscriptions.borrow().len() + pending_joins >= cfg.max_channels_per_connection {
        return Err(Rejection::new(format!(
            "Cannot subscribe to {channel}: over {} channels on this connection",
            cfg.max_channels_per_connection
        )));
    }
    let auth = d.auth.as_deref().unwrap_or("");
    let channel_data = d.channel_data.as_deref();
    let member = match ty.kind {
        ChannelKind::Public => None,
        ChannelKind::Private | ChannelKind::Encrypted => {
            // `channel_data` is signed whenever it is sent (docs/protocol.md#channel-authorization).
            verify(cfg, session, &channel, channel_data, auth)?;
            None
        }
        ChannelKind::ServerToUser => {
            // Only the connection signed in as that user (docs/protocol.md#server-to-user).
            if session.user_id().as_deref() != channel.strip_prefix(SERVER_TO_USER_PREFIX) {
                return Err(Rejection::new(format!(
                    "Cannot subscribe to {channel}: not signed in as that user"
                )));
            }
            None
        }
        ChannelKind::Presence => {
            verify(cfg, session, &channel, channel_data, auth)?;
            Some(presence_member(cfg, session, channel_data)?)
        }
    };
    let last_event_id = d.last_event_id.map(|mut id| {
        if id.len() > MAX_EVENT_ID_LEN {
            id.clear();
        }
        id
    });
    Ok(Subscribe {
        channel,
        ty,
        member,
        last_event_id,
    })
}

fn verify(
    cfg: &AppConfig,
    session: &Session,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> Result<(), Rejection> {
    auth::verify_channel_auth(
        &cfg.key,
        &cfg.secret,
        &session.socket_id_text,
        channel,
        channel_data,
        auth,
    )
    .map_err(|e| Rejection::new(e.message(channel)))
}

/// The member from `channel_data`, or, without it, the signed-in user (docs/protocol.md#presence).
fn presence_member(
    cfg: &AppConfig,
    session: &Session,
    channel_data: Option<&str>,
) -> Result<Member, Rejection> {
    let member = match channel_data {
        Some(data) => inbound::parse_member(data, IdField::UserId).map_err(|e| {
            Rejection::from_json(
                e,
                "channel_data must be a JSON object with a string user_id",
            )
        })?,
        None => match &*session.user.borrow() {
            Some(u) => Member {
                user_id: u.id.to_string(),
                user_info: u.info.to_string(),
            },
            None => {
                return Err(Rejection::new(
                    "Presence channels need channel_data, or a signed-in connection",
                ));
            }
        },
    };
    let max_id = cfg.max_presence_user_id_length;
    if member.user_id.is_empty() || member.user_id.chars().count() > max_id {
        return Err(Rejection::new(format!(
            "Presence user_id must be 1-{max_id} characters"
        )));
    }
    if member.user_info.len() > cfg.max_presence_user_info_bytes {
        return Err(Rejection::new(format!(
            "Presence user_info over {} bytes",
            cfg.max_presence_user_info_bytes
        )));
    }
    Ok(member)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::session::Subscription;
    use crate::socket_id::SocketId;
    use std::cell::Cell;
    use std::rc::Rc;

    fn session() -> Session {
        Session::new(
            SocketId {
                random: 1,
                unique: 2,
            },
            0,
            -1,
            1 << 16,
        )
    }

    fn data(channel: &str, auth: Option<String>, channel_data: Option<&str>) -> SubscribeData {
        SubscribeData {
            channel: Some(channel.to_string()),
            auth,
            channel_data: channel_data.map(str::to_string),
            last_event_id: None,
        }
    }

    fn sign(
        cfg: &AppConfig,
        s: &Session,
        channel: &str,
        channel_data: Option<&str>,
    ) -> Option<String> {
        Some(auth::sign_channel(
            &cfg.key,
            &cfg.secret,
            &s.socket_id_text,
            channel,
            channel_data,
        ))
    }

    #[test]
    fn public_private_and_presence_rules() {
        let cfg = AppConfig::default();
        let s = session();
        assert_eq!(
            check(&cfg, &s, data("news", None, None)).unwrap().member,
            None
        );
        let e = check(&cfg, &s, data("private-x", None, None)).unwrap_err();
        assert_eq!(e.message, "Auth info required to subscribe to private-x");
        assert!(
            check(
                &cfg,
                &s,
                data("private-x", sign(&cfg, &s, "private-x", None), None)
            )
            .is_ok()
        );
        // channel_data sent on a private channel is part of the signed string.
        let extra = Some(r#"{"x":1}"#);
        let unsigned = data("private-x", sign(&cfg, &s, "private-x", None), extra);
        assert!(check(&cfg, &s, unsigned).is_err());
        let signed = data("private-x", sign(&cfg, &s, "private-x", extra), extra);
        assert!(check(&cfg, &s, signed).is_ok());
        let cd = r#"{"user_id":"7","user_info":{"a":1}}"#;
        let ok = check(
            &cfg,
            &s,
            data(
                "presence-r",
                sign(&cfg, &s, "presence-r", Some(cd)),
                Some(cd),
            ),
        )
        .unwrap();
        assert_eq!(ok.member.unwrap().user_id, "7");
        // channel_data is signed byte for byte.
        let other = r#"{"user_id":"8"}"#;
        assert!(
            check(
                &cfg,
                &s,
                data(
                    "presence-r",
                    sign(&cfg, &s, "presence-r", Some(cd)),
                    Some(other)
                )
            )
            .is_err()
        );
        let e = check(&cfg, &s, data("#server-to-user-7", None, None)).unwrap_err();
        assert!(e.message.contains("not signed in"), "{e:?}");
        let e = check(&cfg, &s, data("bad name", None, None)).unwrap_err();
        assert!(e.message.starts_with("Invalid channel name"), "{e:?}");
    }

    #[test]
    fn repeats_and_the_channel_limit_are_refused() {
        let cfg = AppConfig {
            max_channels_per_connection: 1,
            ..AppConfig::default()
        };
        let s = session();
        s.subscriptions.borrow_mut().push(Subscription {
            channel: Rc::from("a"),
            slot: Cell::new(0),
        });
        let e = check(&cfg, &s, data("a", None, None)).unwrap_err();
        assert_eq!(e.message, "Existing subscription to channel a");
        let e = check(&cfg, &s, data("b", None, None)).unwrap_err();
        assert!(e.message.contains("over 1 channels"), "{e:?}");
    }
}
