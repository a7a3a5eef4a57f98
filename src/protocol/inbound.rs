//! Client -> server messages (spec §0, §1.3), read lazily with sonic-rs.
//!
//! Tolerant by design: `data` may be an object, a JSON string holding an object, or absent; unknown keys are
//! ignored. Nothing here allocates for the common ping/pong path.

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
    /// Exactly as received (it is signed byte-for-byte, spec §4).
    pub channel_data: Option<String>,
}

#[derive(Deserialize)]
struct RawSubscribe<'a> {
    #[serde(borrow, default)]
    channel: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    auth: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    channel_data: Option<LazyValue<'a>>,
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
    })
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
