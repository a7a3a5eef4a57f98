//! The rules of `pusher:signin` (docs/protocol.md#sign-in): a `user_data` signed with `socket_id::user::user_data`,
//! holding an object with a non-empty `id`; one identity per connection; a watchlist of at most
//! `max_watchlist_size` ids (4302 past it, the rest are dropped).

use std::borrow::Cow;

use sonic_rs::JsonValueTrait;

use crate::config::AppConfig;
use crate::protocol::auth;
use crate::protocol::codes::error;
use crate::protocol::inbound::{self, ClientMessage, IdField};
use crate::protocol::rejection::Rejection;
use crate::protocol::session::Session;

/// A sign-in that passed every rule.
#[derive(Debug, PartialEq, Eq)]
pub enum SignIn {
    /// A first sign-in: associate the user, answer, then register the watchlist.
    New {
        user_id: String,
        user_info: String,
        /// Echoed in `pusher:signin_success` exactly as received.
        user_data: String,
        watchlist: Vec<Box<str>>,
        /// The watchlist was longer than allowed: also send this (4302) after the success.
        watchlist_warning: Option<Rejection>,
    },
    /// The same user again: success again, nothing else changes.
    Again { user_data: String },
}

pub fn check(
    cfg: &AppConfig,
    session: &Session,
    msg: &ClientMessage<'_>,
) -> Result<SignIn, Rejection> {
    let invalid = "Invalid signin message: data must be an object";
    let text: Cow<'_, str> =
        inbound::object_text(&msg.data).ok_or_else(|| Rejection::new(invalid))?;
    let d = inbound::signin_data(&text).map_err(|e| Rejection::from_json(e, invalid))?;
    let auth_token = d.auth.as_ref().and_then(|a| a.as_str()).unwrap_or("");
    let Some(user_data) = d.user_data.as_ref().and_then(|u| u.as_str()) else {
        return Err(Rejection::new(
            "Invalid signin message: user_data must be a JSON string",
        ));
    };
    auth::verify_user_auth(
        &cfg.key,
        &cfg.secret,
        &session.socket_id_text,
        user_data,
        auth_token,
    )
    .map_err(|e| Rejection::new(e.to_string()))?;
    let member = match inbound::parse_member(user_data, IdField::Id) {
        Ok(m) if m.user_id.is_empty() => {
            return Err(Rejection::new("user_data.id must be a non-empty string"));
        }
        Ok(m) => m,
        Err(e) => {
            return Err(Rejection::from_json(
                e,
                "user_data must be a JSON object with a string id",
            ));
        }
    };
    if let Some(current) = session.user_id() {
        if *current != *member.user_id {
            return Err(Rejection::new(format!(
                "Already signed in as {current}: cannot sign in as {}",
                member.user_id
            )));
        }
        return Ok(SignIn::Again {
            user_data: user_data.to_string(),
        });
    }
    let max = cfg.max_watchlist_size;
    let (watchlist, over) = inbound::watchlist(user_data, max);
    let watchlist_warning = over.then(|| {
        Rejection::with_code(
            error::WATCHLIST_LIMIT,
            format!("Watchlist limit exceeded. Only the first {max} user IDs are accepted."),
        )
    });
    Ok(SignIn::New {
        user_id: member.user_id,
        user_info: member.user_info,
        user_data: user_data.to_string(),
        watchlist,
        watchlist_warning,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::session::SignedInUser;
    use crate::socket_id::SocketId;
    use std::rc::Rc;

    fn signin(cfg: &AppConfig, s: &Session, user_data: &str) -> Result<SignIn, Rejection> {
        let auth = auth::sign_user(&cfg.key, &cfg.secret, &s.socket_id_text, user_data);
        let text = sonic_rs::to_string(&sonic_rs::json!({
            "event": "pusher:signin",
            "data": {"auth": auth, "user_data": user_data}
        }))
        .unwrap();
        check(cfg, s, &inbound::parse(text.as_bytes()).unwrap())
    }

    #[test]
    fn a_signed_user_with_a_long_watchlist_gets_in_with_a_warning() {
        let cfg = AppConfig {
            max_watchlist_size: 2,
            ..AppConfig::default()
        };
        let s = Session::new(
            SocketId {
                random: 3,
                unique: 4,
            },
            0,
            -1,
            1 << 16,
        );
        match signin(
            &cfg,
            &s,
            r#"{"id":"7","user_info":{"n":1},"watchlist":["a","b","c"]}"#,
        )
        .unwrap()
        {
            SignIn::New {
                user_id,
                user_info,
                watchlist,
                watchlist_warning,
                ..
            } => {
                assert_eq!(user_id, "7");
                assert_eq!(user_info, r#"{"n":1}"#);
                assert_eq!(watchlist, [Box::from("a"), Box::from("b")]);
                assert_eq!(
                    watchlist_warning.unwrap().code,
                    Some(error::WATCHLIST_LIMIT)
                );
            }
            other => panic!("{other:?}"),
        }
        *s.user.borrow_mut() = Some(SignedInUser {
            id: Rc::from("7"),
            info: Box::from("null"),
            watchlist: Vec::new(),
        });
        assert!(matches!(
            signin(&cfg, &s, r#"{"id":"7"}"#),
            Ok(SignIn::Again { .. })
        ));
        let e = signin(&cfg, &s, r#"{"id":"8"}"#).unwrap_err();
        assert!(e.message.starts_with("Already signed in as 7"), "{e:?}");
    }

    #[test]
    fn bad_signatures_and_ids_are_refused() {
        let cfg = AppConfig::default();
        let s = Session::new(
            SocketId {
                random: 3,
                unique: 4,
            },
            0,
            -1,
            1 << 16,
        );
        let text = r#"{"event":"pusher:signin","data":{"auth":"app-key:00","user_data":"{\"id\":\"1\"}"}}"#;
        assert!(check(&cfg, &s, &inbound::parse(text.as_bytes()).unwrap()).is_err());
        let e = signin(&cfg, &s, r#"{"id":""}"#).unwrap_err();
        assert_eq!(e.message, "user_data.id must be a non-empty string");
    }
}
