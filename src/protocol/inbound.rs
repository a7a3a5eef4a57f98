//! Client -> server messages (docs/protocol.md#framing), read lazily with sonic-rs: the envelope, subscribe data,
//! presence members and sign-in data.
//!
//! Tolerant by design: `data` may be an object, a JSON string holding an object, or absent; unknown keys are
//! ignored. Nothing here allocates for the common ping/pong path. Every parse goes through `json::parse`, so
//! nesting is bounded before sonic-rs sees the bytes.

use std::borrow::Cow;

use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};

use crate::json::{self, JsonError};

#[derive(Deserialize)]
pub struct ClientMessage<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(borrow, default)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<LazyValue<'a>>,
}

pub fn parse(text: &[u8]) -> Result<ClientMessage<'_>, JsonError> {
    // serde would also accept a JSON array as a struct; the protocol only has objects.
    if text.trim_ascii_start().first() != Some(&b'{') {
        return Err(JsonError::Invalid);
    }
    json::parse(text)
}

/// `pusher:subscribe` / `pusher:unsubscribe` data.
#[derive(Debug, Default, PartialEq)]
pub struct SubscribeData {
    pub channel: Option<String>,
    pub auth: Option<String>,
    /// Exactly as received (it is signed byte-for-byte, docs/protocol.md#channel-authorization).
    pub channel_data: Option<String>,
    /// The id of the last event the client got on this channel, asking for a replay (docs/protocol.md#history);
    /// any JSON value is kept as its text, so a malformed one is answered, not refused.
    pub last_event_id: Option<String>,
}

#[derive(Deserialize)]
struct RawSubscribe<'a> {
    #[serde(borrow, default)]
    channel: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    auth: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    channel_data: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    last_event_id: Option<LazyValue<'a>>,
}

/// String fields must be strings; `channel_data` sent as an object is taken as its raw JSON text.
fn as_string(v: &Option<LazyValue<'_>>) -> Option<String> {
    let v = v.as_ref()?;
    if v.is_str() {
        v.as_str().map(str::to_owned)
    } else if v.is_null() {
        None
    } else {
        Some(v.as_raw_str().to_owned())
    }
}

/// The object inside `data`, whether sent as an object or as a JSON string holding one.
pub fn object_text<'a>(data: &'a Option<LazyValue<'_>>) -> Option<Cow<'a, str>> {
    let d = data.as_ref()?;
    if d.is_str() {
        d.as_str().map(|s| Cow::Owned(s.to_owned()))
    } else if d.is_object() {
        Some(Cow::Borrowed(d.as_raw_str()))
    } else {
        None
    }
}

/// The data of a subscribe or unsubscribe; `Invalid` when it holds no object.
pub fn subscribe_data(data: &Option<LazyValue<'_>>) -> Result<SubscribeData, JsonError> {
    let text = object_text(data).ok_or(JsonError::Invalid)?;
    let raw: RawSubscribe<'_> = json::parse_str(&text)?;
    let channel = match &raw.channel {
        Some(c) if c.is_str() => c.as_str().map(str::to_owned),
        _ => None,
    };
    let auth = match &raw.auth {
        Some(a) if a.is_str() => a.as_str().map(str::to_owned),
        _ => None,
    };
    Ok(SubscribeData {
        channel,
        auth,
        channel_data: as_string(&raw.channel_data),
        last_event_id: as_string(&raw.last_event_id),
    })
}

#[derive(Deserialize)]
struct MemberData<'a> {
    #[serde(borrow, default)]
    user_id: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    id: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    user_info: Option<LazyValue<'a>>,
}

/// Which field names the user in a member object: presence `channel_data` says `user_id`, sign-in `user_data`
/// says `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdField {
    UserId,
    Id,
}

/// A user as presence and sign-in see it: the id as a string (numbers are stringified,
/// docs/protocol.md#presence) and `user_info` as raw JSON (`null` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub user_info: String,
}

pub fn parse_member(text: &str, id_field: IdField) -> Result<Member, JsonError> {
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(JsonError::Invalid);
    }
    let m: MemberData<'_> = json::parse_str(text)?;
    let id = match id_field {
        IdField::Id => &m.id,
        IdField::UserId => &m.user_id,
    };
    let user_id = match id {
        Some(v) if v.is_str() => v.as_str().unwrap_or("").to_string(),
        Some(v) if v.is_number() => v.as_raw_str().to_string(),
        _ => return Err(JsonError::Invalid),
    };
    let user_info = match &m.user_info {
        Some(v) => v.as_raw_str().to_string(),
        None => "null".to_string(),
    };
    Ok(Member { user_id, user_info })
}

/// `pusher:signin` data: `auth` and `user_data` (a JSON string holding the user object).
#[derive(Deserialize)]
pub struct SigninData<'a> {
    #[serde(borrow, default)]
    pub auth: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    pub user_data: Option<LazyValue<'a>>,
}

pub fn signin_data<'a>(text: &'a str) -> Result<SigninData<'a>, JsonError> {
    json::parse_str(text)
}

#[derive(Deserialize)]
struct UserDataFields<'a> {
    #[serde(borrow, default)]
    watchlist: Option<LazyValue<'a>>,
}

/// The `watchlist` in sign-in `user_data`: its first `max` ids, and whether there were more. Anything that is
/// not an array of strings counts as no watchlist.
pub fn watchlist(user_data: &str, max: usize) -> (Vec<Box<str>>, bool) {
    let Some(list) = json::parse_str::<UserDataFields<'_>>(user_data)
        .ok()
        .and_then(|f| f.watchlist)
    else {
        return (Vec::new(), false);
    };
    // The message size limit bounds the list; only its first `max` ids are kept.
    let Ok(items) = json::array_items(list.as_raw_str(), usize::MAX) else {
        return (Vec::new(), false);
    };
    let ids: Option<Vec<Box<str>>> = items.iter().map(|i| i.as_str().map(Box::from)).collect();
    match ids {
        Some(mut ids) => {
            let over = ids.len() > max;
            ids.truncate(max);
            (ids, over)
        }
        None => (Vec::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_data_as_object_or_string() {
        let m = parse(br#"{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}"#)
            .unwrap();
        assert_eq!(m.event, "pusher:subscribe");
        let d = subscribe_data(&m.data).unwrap();
        assert_eq!(d.channel.as_deref(), Some("my-channel"));
        assert_eq!(d.auth.as_deref(), Some(""));

        let m = parse(br#"{"event":"pusher:subscribe","data":"{\"channel\":\"x\",\"channel_data\":\"{\\\"user_id\\\": \\\"1\\\"}\"}"}"#).unwrap();
        let d = subscribe_data(&m.data).unwrap();
        assert_eq!(d.channel.as_deref(), Some("x"));
        assert_eq!(d.channel_data.as_deref(), Some(r#"{"user_id": "1"}"#));
    }

    #[test]
    fn nesting_is_bounded_in_the_message_and_in_data_sent_as_a_string() {
        let mut deep = br#"{"event":"x","data":"#.to_vec();
        deep.extend(std::iter::repeat_n(b'[', 20_000));
        assert_eq!(parse(&deep).err(), Some(JsonError::TooDeep));
        // The subscribe data as a JSON string is parsed again after unescaping: its depth is checked too.
        let inner = format!(r#"{{\"channel\":\"x\",\"y\":{}}}"#, "[".repeat(20_000));
        let msg = format!(r#"{{"event":"pusher:subscribe","data":"{inner}"}}"#);
        let m = parse(msg.as_bytes()).unwrap();
        assert_eq!(subscribe_data(&m.data).err(), Some(JsonError::TooDeep));
    }

    #[test]
    fn members_take_string_or_number_ids_and_raw_info() {
        let m = parse_member(r#"{"user_id":42,"user_info":{"n":"Ada"}}"#, IdField::UserId).unwrap();
        assert_eq!(
            (m.user_id.as_str(), m.user_info.as_str()),
            ("42", r#"{"n":"Ada"}"#)
        );
        let m = parse_member(r#"{"id":"7"}"#, IdField::Id).unwrap();
        assert_eq!((m.user_id.as_str(), m.user_info.as_str()), ("7", "null"));
        assert!(parse_member(r#"{"id":"7"}"#, IdField::UserId).is_err());
        assert!(parse_member("[1]", IdField::Id).is_err());
        assert!(parse_member(r#"{"id":true}"#, IdField::Id).is_err());
    }

    #[test]
    fn watchlists_are_cut_at_the_limit() {
        assert_eq!(
            watchlist(r#"{"id":"1","watchlist":["a","b"]}"#, 5),
            (vec![Box::from("a"), Box::from("b")], false)
        );
        assert_eq!(
            watchlist(r#"{"id":"1","watchlist":["a","b","c"]}"#, 2),
            (vec![Box::from("a"), Box::from("b")], true)
        );
        assert_eq!(
            watchlist(r#"{"id":"1","watchlist":[1]}"#, 5),
            (vec![], false)
        );
        assert_eq!(watchlist(r#"{"id":"1"}"#, 5), (vec![], false));
    }

    #[test]
    fn odd_messages_do_not_panic() {
        assert!(parse(b"not json").is_err());
        assert!(parse(b"[1,2]").is_err());
        assert!(parse(br#"["pusher:ping"]"#).is_err());
        assert!(parse(br#"{"data":{}}"#).is_err(), "event is required");
        let m = parse(br#"{"event":"pusher:ping"}"#).unwrap();
        assert!(m.data.is_none());
        let m = parse(br#"{"event":"pusher:subscribe","data":5}"#).unwrap();
        assert!(subscribe_data(&m.data).is_err());
        let m = parse(br#"{"event":"pusher:subscribe","data":{"channel":7}}"#).unwrap();
        assert_eq!(subscribe_data(&m.data).unwrap().channel, None);
    }
}
