//! Publishing: `POST /events`, `POST /batch_events` (and the seed's `/events/batch`), and the deprecated
//! `POST /channels/{name}/events` (docs/protocol.md#publish, #batch-publish, #deprecated-endpoints).
//!
//! Each body is checked whole before anything is published (a batch is all or nothing) by pure functions
//! (`parse_event`, `parse_batch`), then each event becomes one `Publication`, encoded once per channel by
//! splicing the publisher's raw `name` and `data` tokens, and enters the publish pipeline.

use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};

use crate::api::ApiRequest;
use crate::api::channels::{self, Info};
use crate::channels::publication::{Publication, Source};
use crate::cluster::{ClusterAnswer, ClusterQuery};
use crate::config::AppConfig;
use crate::http::response::Response;
use crate::json::{ArrayError, JsonError, array_items};
use crate::metrics::Counter;
use crate::protocol::channel_name::{self, ChannelKind, ChannelType};
use crate::protocol::outbound::string_token;
use crate::runtime::event_log::LogEvent;
use crate::socket_id::SocketId;

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

/// A checked event, ready to publish.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// The event name and data as complete JSON string tokens.
    pub name_token: Vec<u8>,
    pub data_token: Vec<u8>,
    pub channels: Vec<String>,
    pub except: Option<SocketId>,
    pub info: Info,
}

/// Why an event was refused: one status each.
#[derive(Debug)]
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

fn check_event_name(cfg: &AppConfig, name: &str) -> Result<(), Refusal> {
    let max = cfg.max_event_name_length;
    if name.is_empty() {
        return Err(bad("Event name must not be empty"));
    }
    if name.chars().count() > max {
        return Err(bad(format!("Event name too long (over {max} characters)")));
    }
    // Only the server may use these prefixes (docs/protocol.md#publish).
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err(bad(format!(
            "Event name '{name}' is reserved: 'pusher:' and 'pusher_internal:' are for the server"
        )));
    }
    Ok(())
}

fn check_data_size(cfg: &AppConfig, len: usize) -> Result<(), Refusal> {
    let max = cfg.max_event_payload_bytes;
    if len > max {
        return Err(Refusal::TooLarge(format!(
            "Event data too large ({len} bytes, limit {max})"
        )));
    }
    Ok(())
}

fn check_channel(cfg: &AppConfig, channel: &str) -> Result<ChannelType, Refusal> {
    let max = cfg.max_channel_name_length;
    channel_name::validate(channel, max).map_err(|e| bad(e.message(channel, max)))
}

/// Validates one event body. `batch_item`: a batch item must name exactly one `channel`
/// (docs/protocol.md#batch-publish).
fn check_event(cfg: &AppConfig, body: &EventBody<'_>, batch_item: bool) -> Result<Event, Refusal> {
    let name = match &body.name {
        Some(n) if n.is_str() => n,
        Some(_) => return Err(bad("Parameter 'name' must be a string")),
        None => return Err(bad("Missing required parameter: name")),
    };
    check_event_name(cfg, name.as_str().unwrap_or(""))?;
    let name_token = name.as_raw_str().as_bytes().to_vec();

    let data_token = match &body.data {
        Some(d) if d.is_str() => {
            check_data_size(cfg, d.as_str().map_or(0, str::len))?;
            d.as_raw_str().as_bytes().to_vec()
        }
        // Lenient: non-string data is sent as its JSON text (docs/protocol.md#publish).
        Some(d) if !d.is_null() => {
            check_data_size(cfg, d.as_raw_str().len())?;
            string_token(d.as_raw_str())
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
            let max = cfg.max_channels_per_publish;
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
    let max = cfg.max_channels_per_publish;
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
        let ty = check_channel(cfg, c)?;
        // Encrypted payloads are per channel: a multi-channel publish cannot include one
        // (docs/protocol.md#encrypted-channels).
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

/// With rate limiting on, a request whose `events` do not fit in the app's rate this second is refused whole:
/// 429 with `Retry-After`, nothing delivered, noted in the event log. In a cluster the window is the cluster's
/// (Redis; this node's own window while Redis is unreachable).
async fn over_rate(req: &ApiRequest<'_>, events: usize) -> Option<Response> {
    let cfg = &req.app.config;
    if !cfg.rate_limit_enabled {
        return None;
    }
    let events = u32::try_from(events).unwrap_or(u32::MAX);
    let q = || ClusterQuery::Rate {
        app_id: cfg.id.clone(),
        events,
        max: cfg.rate_limit_max,
    };
    let fits = match req.core.ask_cluster(q).await {
        Some(ClusterAnswer::Yes(fits)) => fits,
        _ => {
            let second = req.core.shared.started.elapsed().as_secs() as u32;
            req.app
                .live
                .publish_rate
                .try_take(events, cfg.rate_limit_max, second)
        }
    };
    if fits {
        return None;
    }
    req.core
        .metrics()
        .add(Counter::RateLimited, u64::from(events));
    req.core
        .log_event(req.app.idx, LogEvent::RateLimited { events });
    let mut r = Response::error(
        429,
        &format!(
            "Rate limit exceeded: this app may publish {} events per second",
            cfg.rate_limit_max
        ),
    );
    r.header = Some(("Retry-After", "1"));
    Some(r)
}

fn publish(req: &ApiRequest<'_>, e: &Event) -> Result<(), Response> {
    let p = Publication::new(
        req.app.idx,
        Source::Rest,
        &e.channels,
        &e.name_token,
        &e.data_token,
        None,
        e.except,
    );
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

/// The body of `POST /events`, checked.
pub fn parse_event(cfg: &AppConfig, body: &[u8]) -> Result<Event, Response> {
    let body: EventBody<'_> = parse_body(body)?;
    check_event(cfg, &body, false).map_err(|r| r.response())
}

/// The body of `POST /batch_events`, checked whole: every event, or the first refusal.
pub fn parse_batch(cfg: &AppConfig, body: &[u8]) -> Result<Vec<Event>, Response> {
    let body: BatchBody<'_> = parse_body(body)?;
    let Some(list) = body.batch else {
        return Err(Response::error(400, "Missing required parameter: batch"));
    };
    let max = cfg.max_batch_size;
    let items = match array_items(list.as_raw_str(), max) {
        Ok(items) => items,
        Err(ArrayError::TooMany) => {
            return Err(Response::error(
                400,
                &format!("Batch too large (more than {max} events)"),
            ));
        }
        Err(ArrayError::Invalid) => {
            return Err(Response::error(
                400,
                "Parameter 'batch' must be an array of events",
            ));
        }
    };
    if items.is_empty() {
        return Err(Response::error(400, "Batch must hold at least one event"));
    }
    let mut events = Vec::with_capacity(items.len());
    for item in &items {
        let body = crate::json::parse_str::<EventBody<'_>>(item.as_raw_str())
            .map_err(|_| Response::error(400, "Each batch item must be a JSON object"))?;
        events.push(check_event(cfg, &body, true).map_err(|r| r.response())?);
    }
    Ok(events)
}

/// The deprecated `POST /channels/{name}/events?name=..&socket_id=..` with the raw data as body, checked.
pub fn parse_legacy(
    cfg: &AppConfig,
    channel: &str,
    event_name: Option<&str>,
    socket_id: Option<&str>,
    body: &[u8],
) -> Result<Event, Response> {
    let Some(event_name) = event_name else {
        return Err(Response::error(400, "Missing required parameter: name"));
    };
    let Ok(data) = std::str::from_utf8(body) else {
        return Err(Response::error(400, "Event data must be valid UTF-8"));
    };
    check_event_name(cfg, event_name)
        .and_then(|_| check_data_size(cfg, data.len()))
        .and_then(|_| check_channel(cfg, channel).map(|_| ()))
        .map_err(|r| r.response())?;
    let except = match socket_id {
        None => None,
        Some(s) => Some(SocketId::parse(s).ok_or_else(|| {
            Response::error(
                400,
                "Invalid socket_id: expected two integers joined by '.'",
            )
        })?),
    };
    Ok(Event {
        name_token: string_token(event_name),
        data_token: string_token(data),
        channels: vec![channel.to_owned()],
        except,
        info: Info::default(),
    })
}

/// `POST /apps/{id}/events`
pub async fn trigger(req: &ApiRequest<'_>) -> Response {
    let event = match parse_event(&req.app.config, req.body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Some(r) = over_rate(req, 1).await {
        return r;
    }
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
        crate::json::push_json_string_into(&mut out, c);
        out.push(':');
        match channels::info_object(req, c, event.info).await {
            Ok(info) => out.push_str(&info),
            Err(r) => return r,
        }
    }
    out.push_str("}}");
    Response::json(200, out.into_bytes())
}

/// `POST /apps/{id}/batch_events` and `POST /apps/{id}/events/batch`
pub async fn batch(req: &ApiRequest<'_>) -> Response {
    let events = match parse_batch(&req.app.config, req.body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Some(r) = over_rate(req, events.len()).await {
        return r;
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
        match channels::info_object(req, &e.channels[0], e.info).await {
            Ok(info) => out.push_str(&info),
            Err(r) => return r,
        }
    }
    out.push_str("]}");
    Response::json(200, out.into_bytes())
}

/// Deprecated `POST /apps/{id}/channels/{name}/events?name=..&socket_id=..` with the raw data as body; 202
/// (seed 004).
pub async fn legacy_trigger(req: &ApiRequest<'_>, channel: &str) -> Response {
    let event = parse_legacy(
        &req.app.config,
        channel,
        req.query.get("name"),
        req.query.get("socket_id"),
        req.body,
    );
    let event = match event {
        Ok(e) => match over_rate(req, 1).await {
            Some(r) => Err(r),
            None => Ok(e),
        },
        Err(r) => Err(r),
    };
    match event.and_then(|e| publish(req, &e)) {
        Ok(()) => Response::json(202, Vec::new()),
        Err(r) => r,
    }
}
