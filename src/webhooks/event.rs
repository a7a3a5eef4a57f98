//! One webhook event as a core hands it over, and its JSON in Pusher's format (docs/protocol.md#webhooks):
//! `{"name":"member_added","channel":"presence-room","user_id":"42"}`.

use crate::app::AppIdx;
use crate::config::WebhookKind;
use crate::json::push_json_string;
use crate::socket_id::SocketId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    pub app: AppIdx,
    pub kind: WebhookKind,
    /// Every kind but the user ones has a channel.
    pub channel: Option<Box<str>>,
    /// Member events, user online/offline, and client events on presence channels.
    pub user_id: Option<Box<str>>,
    pub detail: Detail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    None,
    /// `subscription_count`.
    Count(u64),
    /// `client_event`: the event name and data as the JSON string tokens the client event was relayed with.
    Client {
        event_token: Box<[u8]>,
        data_token: Box<[u8]>,
        socket_id: SocketId,
    },
}

impl WebhookEvent {
    pub fn channel(app: AppIdx, kind: WebhookKind, channel: &str) -> Self {
        WebhookEvent {
            app,
            kind,
            channel: Some(Box::from(channel)),
            user_id: None,
            detail: Detail::None,
        }
    }

    pub fn member(app: AppIdx, kind: WebhookKind, channel: &str, user_id: &str) -> Self {
        WebhookEvent {
            user_id: Some(Box::from(user_id)),
            ..WebhookEvent::channel(app, kind, channel)
        }
    }

    pub fn user(app: AppIdx, kind: WebhookKind, user_id: &str) -> Self {
        WebhookEvent {
            app,
            kind,
            channel: None,
            user_id: Some(Box::from(user_id)),
            detail: Detail::None,
        }
    }

    /// Bytes this event adds to a request body (an estimate, for the queue's accounting).
    pub fn size(&self) -> usize {
        let detail = match &self.detail {
            Detail::Client {
                event_token,
                data_token,
                ..
            } => event_token.len() + data_token.len() + 48,
            _ => 24,
        };
        32 + self.channel.as_ref().map_or(0, |c| c.len())
            + self.user_id.as_ref().map_or(0, |u| u.len())
            + detail
    }

    /// Appends the event's JSON object.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"name\":\"");
        out.extend_from_slice(self.kind.name().as_bytes());
        out.push(b'"');
        if let Some(channel) = &self.channel {
            out.extend_from_slice(b",\"channel\":");
            push_json_string(out, channel);
        }
        match &self.detail {
            Detail::None => {}
            Detail::Count(n) => {
                out.extend_from_slice(format!(",\"subscription_count\":{n}").as_bytes());
            }
            Detail::Client {
                event_token,
                data_token,
                socket_id,
            } => {
                out.extend_from_slice(b",\"event\":");
                out.extend_from_slice(event_token);
                out.extend_from_slice(b",\"data\":");
                out.extend_from_slice(data_token);
                out.extend_from_slice(format!(",\"socket_id\":\"{socket_id}\"").as_bytes());
            }
        }
        if let Some(user_id) = &self.user_id {
            out.extend_from_slice(b",\"user_id\":");
            push_json_string(out, user_id);
        }
        out.push(b'}');
    }
}

/// A request body: `{"time_ms":…,"events":[…]}`.
pub fn body<'a>(time_ms: u64, events: impl Iterator<Item = &'a WebhookEvent>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("{{\"time_ms\":{time_ms},\"events\":[").as_bytes());
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write_json(&mut out);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_pusher_shaped() {
        let occupied = WebhookEvent::channel(0, WebhookKind::ChannelOccupied, "a\"b");
        let member = WebhookEvent::member(0, WebhookKind::MemberAdded, "presence-r", "42");
        let count = WebhookEvent {
            detail: Detail::Count(7),
            ..WebhookEvent::channel(0, WebhookKind::SubscriptionCount, "c")
        };
        let client = WebhookEvent {
            user_id: Some("u\n1".into()),
            detail: Detail::Client {
                event_token: b"\"client-x\"".to_vec().into(),
                data_token: b"\"{\\\"x\\\":1}\"".to_vec().into(),
                socket_id: SocketId {
                    random: 12,
                    unique: 34,
                },
            },
            ..WebhookEvent::channel(0, WebhookKind::ClientEvent, "presence-r")
        };
        let online = WebhookEvent::user(0, WebhookKind::UserOnline, "7");
        let b = body(
            1327078148132,
            [&occupied, &member, &count, &client, &online].into_iter(),
        );
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            concat!(
                r#"{"time_ms":1327078148132,"events":["#,
                r#"{"name":"channel_occupied","channel":"a\"b"},"#,
                r#"{"name":"member_added","channel":"presence-r","user_id":"42"},"#,
                r#"{"name":"subscription_count","channel":"c","subscription_count":7},"#,
                r#"{"name":"client_event","channel":"presence-r","event":"client-x","data":"{\"x\":1}","socket_id":"12.34","user_id":"u\n1"},"#,
                r#"{"name":"user_online","user_id":"7"}]}"#
            )
        );
        let v: sonic_rs::Value = crate::json::parse(&b).unwrap();
        assert_eq!(
            sonic_rs::JsonValueTrait::as_u64(&v["time_ms"]),
            Some(1327078148132)
        );
    }
}
