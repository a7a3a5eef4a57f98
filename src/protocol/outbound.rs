//! Server -> client frames, built by splicing bytes (docs/protocol.md#framing).
//!
//! Every server event carries `data` as a JSON *string*, except `pusher:error` whose `data` is an object
//! (docs/protocol.md#data-typing: Swift and .NET clients depend on exactly this split). App events splice the
//! publisher's raw `data` token byte-for-byte; nothing is re-serialized per socket.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::json::push_json_string;
use crate::ws::frame;

/// `{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}`
pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> Bytes {
    frame::encode_text_with(128, |o| {
        o.extend_from_slice(
            br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\""#,
        );
        o.extend_from_slice(socket_id.as_bytes());
        o.extend_from_slice(br#"\",\"activity_timeout\":"#);
        o.extend_from_slice(activity_timeout_secs.to_string().as_bytes());
        o.extend_from_slice(br#"}"}"#);
    })
}

/// `pusher:error` with object data (docs/protocol.md#data-typing); `code` null for per-message protocol errors
/// (docs/protocol.md#pusher-error).
pub fn error(code: Option<u16>, message: &str) -> Bytes {
    frame::encode_text_with(64 + message.len(), |o| {
        o.extend_from_slice(br#"{"event":"pusher:error","data":{"code":"#);
        match code {
            Some(c) => o.extend_from_slice(c.to_string().as_bytes()),
            None => o.extend_from_slice(b"null"),
        }
        o.extend_from_slice(br#","message":"#);
        push_json_string(o, message);
        o.extend_from_slice(b"}}");
    })
}

fn cached(cell: &'static OnceLock<Bytes>, json: &'static [u8]) -> Bytes {
    cell.get_or_init(|| frame::encode_text(json)).clone()
}

pub fn pong() -> Bytes {
    static F: OnceLock<Bytes> = OnceLock::new();
    cached(&F, br#"{"event":"pusher:pong","data":"{}"}"#)
}

/// The server's own liveness probe as a protocol message (pusher-js answers it with `pusher:pong`).
pub fn ping() -> Bytes {
    static F: OnceLock<Bytes> = OnceLock::new();
    cached(&F, br#"{"event":"pusher:ping","data":"{}"}"#)
}

/// A channel-scoped internal event whose `data` is the JSON text `data_json`, sent as a string.
pub fn channel_event_json(event: &str, channel: &str, data_json: &str) -> Bytes {
    frame::encode_text_with(
        48 + event.len() + channel.len() + data_json.len() * 2,
        |o| {
            o.extend_from_slice(br#"{"event":"#);
            push_json_string(o, event);
            o.extend_from_slice(br#","channel":"#);
            push_json_string(o, channel);
            o.extend_from_slice(br#","data":"#);
            push_json_string(o, data_json);
            o.push(b'}');
        },
    )
}

pub fn subscription_succeeded(channel: &str) -> Bytes {
    channel_event_json("pusher_internal:subscription_succeeded", channel, "{}")
}

/// A channel event, the one shape every publication takes (app events, client events, member and count events):
/// `name_token` and `data_token` are complete JSON string tokens (quotes included), spliced as received so the
/// data reaches subscribers byte for byte; client events on presence channels add the sender's `user_id`
/// (docs/protocol.md#client-events); events of apps with history add their `id` (docs/protocol.md#history), and
/// without it the frame is exactly Pusher's.
pub fn channel_event(
    name_token: &[u8],
    channel: &str,
    data_token: &[u8],
    user_id: Option<&str>,
    id: Option<&str>,
) -> Bytes {
    let extra = user_id.map_or(0, |u| u.len() + 12) + id.map_or(0, |i| i.len() + 8);
    frame::encode_text_with(
        32 + name_token.len() + channel.len() + data_token.len() + extra,
        |o| {
            o.extend_from_slice(br#"{"event":"#);
            o.extend_from_slice(name_token);
            o.extend_from_slice(br#","channel":"#);
            push_json_string(o, channel);
            o.extend_from_slice(br#","data":"#);
            o.extend_from_slice(data_token);
            if let Some(u) = user_id {
                o.extend_from_slice(br#","user_id":"#);
                push_json_string(o, u);
            }
            if let Some(i) = id {
                o.extend_from_slice(br#","id":"#);
                push_json_string(o, i);
            }
            o.push(b'}');
        },
    )
}

/// `s` as a complete JSON string token.
pub fn string_token(s: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(s.len() + 2);
    push_json_string(&mut t, s);
    t
}

/// `{"event":"pusher:signin_success","data":{"user_data":"<as sent>"}}` (docs/protocol.md#sign-in: object data).
pub fn signin_success(user_data: &str) -> Bytes {
    frame::encode_text_with(64 + user_data.len() * 2, |o| {
        o.extend_from_slice(br#"{"event":"pusher:signin_success","data":{"user_data":"#);
        push_json_string(o, user_data);
        o.extend_from_slice(b"}}");
    })
}

/// `pusher_internal:watchlist_events` with an `online` and/or `offline` list; empty lists are omitted
/// (docs/protocol.md#watchlist).
pub fn watchlist_events(online: &[&str], offline: &[&str]) -> Bytes {
    frame::encode_text_with(96, |o| {
        o.extend_from_slice(br#"{"event":"pusher_internal:watchlist_events","data":{"events":["#);
        let mut first = true;
        for (name, ids) in [("online", online), ("offline", offline)] {
            if ids.is_empty() {
                continue;
            }
            if !first {
                o.push(b',');
            }
            first = false;
            o.extend_from_slice(br#"{"name":""#);
            o.extend_from_slice(name.as_bytes());
            o.extend_from_slice(br#"","user_ids":["#);
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                push_json_string(o, id);
            }
            o.extend_from_slice(b"]}");
        }
        o.extend_from_slice(b"]}}");
    })
}

/// `{"event":"pusher:cache_miss","channel":"cache-x","data":"{}"}` (docs/protocol.md#cache-channels).
pub fn cache_miss(channel: &str) -> Bytes {
    channel_event_json("pusher:cache_miss", channel, "{}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strips the (unmasked, short or 16-bit length) server frame header.
    fn payload(f: &Bytes) -> String {
        let len7 = f[1] & 0x7f;
        let start = if len7 == 126 { 4 } else { 2 };
        String::from_utf8(f[start..].to_vec()).unwrap()
    }

    #[test]
    fn server_events_carry_string_data_and_errors_object_data() {
        let f = payload(&connection_established("1.2", 120));
        assert_eq!(
            f,
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#
        );
        let v: sonic_rs::Value = sonic_rs::from_str(&f).unwrap();
        let data: sonic_rs::Value =
            sonic_rs::from_str(sonic_rs::JsonValueTrait::as_str(&v["data"]).unwrap()).unwrap();
        assert_eq!(
            sonic_rs::JsonValueTrait::as_str(&data["socket_id"]),
            Some("1.2")
        );

        assert_eq!(
            payload(&error(Some(4001), "bad \"key\"")),
            r#"{"event":"pusher:error","data":{"code":4001,"message":"bad \"key\""}}"#
        );
        assert_eq!(
            payload(&error(None, "x")),
            r#"{"event":"pusher:error","data":{"code":null,"message":"x"}}"#
        );
        assert_eq!(
            payload(&subscription_succeeded("my-channel")),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"my-channel","data":"{}"}"#
        );
        assert_eq!(payload(&pong()), r#"{"event":"pusher:pong","data":"{}"}"#);
    }

    #[test]
    fn watchlist_and_signin_frames() {
        assert_eq!(
            payload(&watchlist_events(&["9"], &["7"])),
            r#"{"event":"pusher_internal:watchlist_events","data":{"events":[{"name":"online","user_ids":["9"]},{"name":"offline","user_ids":["7"]}]}}"#
        );
        assert_eq!(
            payload(&watchlist_events(&[], &["7"])),
            r#"{"event":"pusher_internal:watchlist_events","data":{"events":[{"name":"offline","user_ids":["7"]}]}}"#
        );
        assert_eq!(
            payload(&signin_success(r#"{"id":"42"}"#)),
            r#"{"event":"pusher:signin_success","data":{"user_data":"{\"id\":\"42\"}"}}"#
        );
        assert_eq!(
            payload(&channel_event(
                br#""client-x""#,
                "presence-r",
                br#""{\"a\":1}""#,
                Some("42"),
                None
            )),
            r#"{"event":"client-x","channel":"presence-r","data":"{\"a\":1}","user_id":"42"}"#
        );
    }

    #[test]
    fn app_events_splice_tokens_untouched() {
        let f = payload(&channel_event(
            br#""my-event""#,
            "c",
            br#""{\"a\":1}""#,
            None,
            None,
        ));
        assert_eq!(
            f,
            r#"{"event":"my-event","channel":"c","data":"{\"a\":1}"}"#
        );
        let f = payload(&channel_event(br#""e""#, "c", br#""d""#, None, Some("5-9")));
        assert_eq!(f, r#"{"event":"e","channel":"c","data":"d","id":"5-9"}"#);
    }
}
