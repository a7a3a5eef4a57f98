//! Publishing: `POST /events`, `POST /batch_events` (and the seed's `/events/batch`), and the deprecated
//! `POST /channels/{name}/events` (spec §10.2, §10.3, §10.8).
//!
//! Each event is validated whole before anything is published (a batch is all or nothing), then encoded once per
//! channel by splicing the publisher's raw `name` and `data` tokens, and handed to every core.

use std::borrow::Cow;

use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};

use crate::api::ApiRequest;
use crate::api::channels::{self, Info};
use crate::channels::name::{self, ChannelKind, ChannelType};
use crate::http::response::Response;
use crate::json::{ArrayError, JsonError, array_items};
use crate::protocol::outbound;
use crate::server::inbox::{HomeMsg, Publication};
use crate::server::socket_id::SocketId;

#[derive(Deserialize)]
struct EventBody<'a> {
    #[serde(borrow, default)]
    name: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    data: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    channel: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    channels: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    socket_id: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    info: Option<LazyValue<'a>>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    /// Read item by item, so an oversized batch is refused after `max_batch_size + 1` items.
    #[serde(borrow, default)]
    batch: Option<LazyValue<'a>>,
}

/// A checked event, ready to encode.
struct Event<'a> {
    name_token: Cow<'a, [u8]>,
    data_token: Cow<'a, [u8]>,
    channels: Vec<String>,
    except: Option<SocketId>,
    info: Info,
}

/// Why an event was refused: one status each.
enum Refusal {
    BadRequest(String),
    TooLarge(String),
}

impl Refusal {
    fn response(&self) -> Response {
        match self {
            Refusal::BadRequest(m) => Response::error(400, m),
            Refusal::TooLarge(m) => Response::error(413, m),
        }
    }
}

fn bad(m: impl Into<String>) -> Refusal {
    Refusal::BadRequest(m.into())
}

/// A JSON string token for `s` (quotes and escapes included).
fn string_token(s: &str) -> Vec<u8> {
    let mut t = Vec::with_capacity(s.len() + 2);
    crate::json::push_json_string(&mut t, s);
    t
}

fn check_event_name(req: &ApiRequest<'_>, name: &str) -> Result<(), Refusal> {
    let max = req.app.config.max_event_name_length;
    if name.is_empty() {
        return Err(bad("Event name must not be empty"));
    }
    if name.chars().count() > max {
        return Err(bad(format!("Event name too long (over {max} characters)")));
    }
    // Only the server may use these prefixes (spec §10.2).
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(bad(format!(
            "Event name '{name}' is reserved: 'pusher:' and 'pusher_internal:' are for the server"
        )));
    }
    Ok(())
}

fn check_data_size(req: &ApiRequest<'_>, len: usize) -> Result<(), Refusal> {
    let max = req.app.config.max_event_payload_bytes;
    if len > max {
        return Err(Refusal::TooLarge(format!(
            "Event data too large ({len} bytes, limit {max})"
        )));
    }
    Ok(())
}

fn check_channel(req: &ApiRequest<'_>, channel: &str) -> Result<ChannelType, Refusal> {
    let max = req.app.config.max_channel_name_length;
    name::validate(channel, max).map_err(|e| bad(e.message(channel, max)))
}

/// Validates one event body. `batch_item`: a batch item must name exactly one `channel` (spec §10.3).
fn check_event<'a>(
    req: &ApiRequest<'_>,
    body: &'a EventBody<'a>,
    batch_item: bool,
) -> Result<Event<'a>, Refusal> {
    let name = match &body.name {
        Some(n) if n.is_str() => n,
        Some(_) => return Err(bad("Parameter 'name' must be a string")),
        None => return Err(bad("Missing required parameter: name")),
    };
    check_event_name(req, name.as_str().unwrap_or(""))?;
    let name_token = Cow::Borrowed(name.as_raw_str().as_bytes());

    let data_token: Cow<'a, [u8]> = match &body.data {
        Some(d) if d.is_str() => {
            check_data_size(req, d.as_str().map_or(0, str::len))?;
            Cow::Borrowed(d.as_raw_str().as_bytes())
        }
        // Lenient: non-string data is sent as its JSON text (spec §10.2 REC).
        Some(d) if !d.is_null() => {
            check_data_size(req, d.as_raw_str().len())?;
            Cow::Owned(string_token(d.as_raw_str()))
        }
        _ => return Err(bad("Missing required parameter: data")),
    };

    let mut channels: Vec<String> = Vec::new();
    match (&body.channel, &body.channels) {
        (Some(_), Some(_)) => return Err(bad("Provide either 'channel' or 'channels', not both")),
        (_, Some(_)) if batch_item => return Err(bad("Missing required parameter: channel")),
        (Some(c), None) => match c.as_str() {
            Some(c) => channels.push(c.to_owned()),
            None => return Err(bad("Parameter 'channel' must be a string")),
        },
        (None, Some(list)) => {
            let max = req.app.config.max_channels_per_publish;
            let not_strings = || bad("Parameter 'channels' must be an array of strings");
            let items = match array_items(list.as_raw_str(), max) {
                Ok(items) => items,
                Err(ArrayError::TooMany) => {
                    return Err(bad(format!("Too many channels (more than {max})")));
                }
                Err(ArrayError::Invalid) => return Err(not_strings()),
            };
            for item in items {
                let c = item.as_str().ok_or_else(not_strings)?;
                if !channels.iter().any(|x| x == c) {
                    channels.push(c.to_owned());
                }
            }
        }
        (None, None) => {
            return Err(bad(if batch_item {
                "Missing required parameter: channel"
            } else {
                "Missing required parameter: channels"
            }));
        }
    }
    let max = req.app.config.max_channels_per_publish;
    if channels.is_empty() {
        return Err(bad("'channels' must name at least one channel"));
    }
    if channels.len() > max {
        return Err(bad(format!(
            "Too many channels ({} > {max})",
            channels.len()
        )));
    }
    for c in &channels {
        let ty = check_channel(req, c)?;
        // spec §4.1: encrypted payloads are per-channel; a multi-channel publish cannot include one.
        if ty.kind == ChannelKind::Encrypted && channels.len() > 1 {
            return Err(bad(
                "Cannot publish to multiple channels when one of them is a private-encrypted channel",
            ));
        }
    }

    let except = match &body.socket_id {
        None => None,
        Some(s) if s.is_null() => None,
        Some(s) => match s.as_str().and_then(SocketId::parse) {
            Some(id) => Some(id),
            None => {
                return Err(bad(
                    "Invalid socket_id: expected two integers joined by '.'",
                ));
            }
        },
    };
    let info = match &body.info {
        None => Info::default(),
        Some(i) => match i.as_str() {
            Some(text) => Info::parse(text).map_err(bad)?,
            None => return Err(bad("Parameter 'info' must be a comma-separated string")),
        },
    };
    Ok(Event {
        name_token,
        data_token,
        channels,
        except,
        info,
    })
}

fn publication(req: &ApiRequest<'_>, e: &Event<'_>) -> Publication {
    let frames = e
        .channels
        .iter()
        .map(|c| {
            (
                Box::from(c.as_str()),
                outbound::app_event(&e.name_token, c, &e.data_token),
            )
        })
        .collect();
    Publication {
        app: req.app.idx,
        frames,
        except: e.except,
    }
}

fn publish(req: &ApiRequest<'_>, e: &Event<'_>) -> Result<(), Response> {
    let p = publication(req, e);
    // Cache channels keep the frame as their last event (spec §8). Stored before the fan-out starts, so a
    // subscriber who sees this event live cannot then be handed the previous one as the cache.
    let app = req.app.idx;
    for (channel, frame) in p.frames.iter().filter(|(c, _)| ChannelType::of(c).cache) {
        let msg = HomeMsg::CacheStore {
            app,
            channel: channel.clone(),
            frame: frame.clone(),
            data_token: bytes::Bytes::copy_from_slice(&e.data_token),
        };
        let _ = req.core.send_home(app, channel, msg);
    }
    req.core
        .publish(p)
        .map_err(|_| Response::error(503, "Server overloaded: try again"))
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    crate::json::parse(body).map_err(|e| match e {
        JsonError::TooDeep => Response::error(400, &format!("Request body: {e}")),
        JsonError::Invalid => Response::error(400, "Request body must be a JSON object"),
    })
}

/// `POST /apps/{id}/events`
pub async fn trigger(req: &ApiRequest<'_>) -> Response {
    let body: EventBody<'_> = match parse_body(req.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let event = match check_event(req, &body, false) {
        Ok(e) => e,
        Err(r) => return r.response(),
    };
    if let Err(r) = publish(req, &event) {
        return r;
    }
    if event.info.is_empty() {
        return Response::ok_empty_object();
    }
    let mut out = String::from(r#"{"channels":{"#);
    for (i, c) in event.channels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("\"{c}\":"));
        out.push_str(&channels::info_object(req, c, event.info).await);
    }
    out.push_str("}}");
    Response::json(200, out.into_bytes())
}

/// `POST /apps/{id}/batch_events` and `POST /apps/{id}/events/batch`
pub async fn batch(req: &ApiRequest<'_>) -> Response {
    let body: BatchBody<'_> = match parse_body(req.body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(list) = body.batch else {
        return Response::error(400, "Missing required parameter: batch");
    };
    let max = req.app.config.max_batch_size;
    let items = match array_items(list.as_raw_str(), max) {
        Ok(items) => items,
        Err(ArrayError::TooMany) => {
            return Response::error(400, &format!("Batch too large (more than {max} events)"));
        }
        Err(ArrayError::Invalid) => {
            return Response::error(400, "Parameter 'batch' must be an array of events");
        }
    };
    if items.is_empty() {
        return Response::error(400, "Batch must hold at least one event");
    }
    let mut bodies = Vec::with_capacity(items.len());
    for item in &items {
        match crate::json::parse_str::<EventBody<'_>>(item.as_raw_str()) {
            Ok(b) => bodies.push(b),
            Err(_) => return Response::error(400, "Each batch item must be a JSON object"),
        }
    }
    let mut events = Vec::with_capacity(bodies.len());
    for item in &bodies {
        match check_event(req, item, true) {
            Ok(e) => events.push(e),
            Err(r) => return r.response(),
        }
    }
    for e in &events {
        if let Err(r) = publish(req, e) {
            return r;
        }
    }
    if events.iter().all(|e| e.info.is_empty()) {
        return Response::ok_empty_object();
    }
    let mut out = String::from(r#"{"batch":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&channels::info_object(req, &e.channels[0], e.info).await);
    }
    out.push_str("]}");
    Response::json(200, out.into_bytes())
}

/// Deprecated `POST /apps/{id}/channels/{name}/events?name=..&socket_id=..` with the raw data as body; 202
/// (seed 004).
pub fn legacy_trigger(req: &ApiRequest<'_>, channel: &str) -> Response {
    let Some(event_name) = req.query.get("name") else {
        return Response::error(400, "Missing required parameter: name");
    };
    let Ok(data) = std::str::from_utf8(req.body) else {
        return Response::error(400, "Event data must be valid UTF-8");
    };
    let checks = check_event_name(req, event_name)
        .and_then(|_| check_data_size(req, data.len()))
        .and_then(|_| check_channel(req, channel).map(|_| ()));
    if let Err(r) = checks {
        return r.response();
    }
    let except = match req.query.get("socket_id") {
        None => None,
        Some(s) => match SocketId::parse(s) {
            Some(id) => Some(id),
            None => {
                return Response::error(
                    400,
                    "Invalid socket_id: expected two integers joined by '.'",
                );
            }
        },
    };
    let event = Event {
        name_token: Cow::Owned(string_token(event_name)),
        data_token: Cow::Owned(string_token(data)),
        channels: vec![channel.to_owned()],
        except,
        info: Info::default(),
    };
    match publish(req, &event) {
        Ok(()) => Response::json(202, Vec::new()),
        Err(r) => r,
    }
}
