//! Channel queries: `GET /channels`, `GET /channels/{name}`, deprecated `GET /channels/{name}/stats`, and
//! `GET /channels/{name}/users` (docs/protocol.md#list-channels, #channel-info, #presence-users). Counts are
//! summed over every core's local index (one query message per core); presence users and cache come from the
//! facts. A core that does not answer in time makes the request a 503.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::api::ApiRequest;
use crate::channels::history::CursorError;
use crate::cluster::{ClusterAnswer, ClusterQuery};
use crate::http::response::Response;
use crate::json::{push_json_string, push_json_string_into};
use crate::protocol::channel_name::{self, ChannelKind, ChannelType, SERVER_TO_USER_PREFIX};
use crate::runtime;
use crate::runtime::facts::Facts;
use crate::runtime::message::NoReply;
use crate::runtime::query::{Answer, Query};

/// Attributes a request may ask for with `info=`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub user_count: bool,
    pub subscription_count: bool,
    pub cache: bool,
}

impl Info {
    pub fn parse(text: &str) -> Result<Info, String> {
        let mut info = Info::default();
        for attr in text.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match attr {
                "user_count" => info.user_count = true,
                "subscription_count" => info.subscription_count = true,
                "cache" => info.cache = true,
                other => return Err(format!("Unknown info attribute '{other}'")),
            }
        }
        Ok(info)
    }

    pub fn is_empty(&self) -> bool {
        *self == Info::default()
    }
}

fn busy(_: NoReply) -> Response {
    Response::error(503, "Server busy: a core did not answer in time")
}

/// A channel's subscriptions: over every node from Redis in a cluster (this node's if Redis is unreachable).
pub async fn subscription_count(req: &ApiRequest<'_>, channel: &str) -> Result<u64, Response> {
    // Presence channels keep no subscription count (their rosters are the cluster's): this node's.
    if ChannelType::of(channel).kind == ChannelKind::Presence {
        return local_subscription_count(req, channel).await;
    }
    let q = || ClusterQuery::SubscriptionCount {
        app_id: req.app.config.id.clone(),
        channel: channel.into(),
    };
    if let Some(ClusterAnswer::Count(n)) = req.core.ask_cluster(q).await {
        return Ok(n);
    }
    local_subscription_count(req, channel).await
}

async fn local_subscription_count(req: &ApiRequest<'_>, channel: &str) -> Result<u64, Response> {
    let q = Query::Channel {
        app: req.app.idx,
        name: Arc::from(channel),
    };
    let answers = req.core.query(q).await.map_err(busy)?;
    Ok(answers
        .into_iter()
        .map(|a| if let Answer::Count(n) = a { n } else { 0 })
        .sum())
}

/// Distinct users of a presence channel: the cluster's from Redis on a node of a cluster (this node's roster if
/// Redis is unreachable), else from the channel's home core.
pub async fn presence_users(
    req: &ApiRequest<'_>,
    channel: &str,
) -> Result<Vec<Box<str>>, Response> {
    let q = || ClusterQuery::Users {
        app_id: req.app.config.id.clone(),
        channel: channel.into(),
    };
    if let Some(ClusterAnswer::Names(users)) = req.core.ask_cluster(q).await {
        return Ok(users.into_iter().map(Into::into).collect());
    }
    req.core
        .presence_users(req.app.idx, channel)
        .await
        .map_err(busy)
}

/// The `{...}` object of requested attributes for one channel (publish responses, docs/protocol.md#publish).
pub async fn info_object(
    req: &ApiRequest<'_>,
    channel: &str,
    info: Info,
) -> Result<String, Response> {
    let presence = ChannelType::of(channel).kind == ChannelKind::Presence;
    let mut fields = Vec::new();
    if info.user_count && presence {
        let n = presence_users(req, channel).await?.len();
        fields.push(format!(r#""user_count":{n}"#));
    }
    if info.subscription_count {
        let n = subscription_count(req, channel).await?;
        fields.push(format!(r#""subscription_count":{n}"#));
    }
    Ok(format!("{{{}}}", fields.join(",")))
}

fn decode_name(raw: &str) -> Result<String, Response> {
    crate::http::query::percent_decode(raw)
        .map_err(|_| Response::error(400, "Invalid channel name encoding"))
}

fn info_param(req: &ApiRequest<'_>) -> Result<Info, Response> {
    Info::parse(req.query.get("info").unwrap_or("")).map_err(|m| Response::error(400, &m))
}

/// `GET /apps/{id}/channels?filter_by_prefix=&info=`: occupied channels only; `{"channels":{}}` when none.
pub async fn list(req: &ApiRequest<'_>) -> Response {
    let info = match info_param(req) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let prefix = req.query.get("filter_by_prefix").unwrap_or("");
    if info.user_count && !prefix.starts_with("presence-") {
        return Response::error(
            400,
            "user_count may only be requested for presence channels - please supply filter_by_prefix begining with presence-",
        );
    }
    if info.cache {
        return Response::error(400, "cache may only be requested for a single channel");
    }
    let channels = match occupied(req, prefix).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut out = String::from(r#"{"channels":{"#);
    let mut first = true;
    for (name, n) in &channels {
        if !first {
            out.push(',');
        }
        first = false;
        let mut fields = Vec::new();
        if info.user_count {
            match presence_users(req, name).await {
                Ok(users) => fields.push(format!(r#""user_count":{}"#, users.len())),
                Err(r) => return r,
            }
        }
        if info.subscription_count {
            let n = match req.core.shared.cluster.get() {
                Some(_) => match subscription_count(req, name).await {
                    Ok(n) => n,
                    Err(r) => return r,
                },
                None => *n,
            };
            fields.push(format!(r#""subscription_count":{n}"#));
        }
        push_json_string_into(&mut out, name);
        out.push_str(&format!(":{{{}}}", fields.join(",")));
    }
    out.push_str("}}");
    Response::json(200, out.into_bytes())
}

/// The app's occupied channels whose names start with `prefix`, by name, with this node's subscriber counts (the
/// listing of `GET /channels`; the dashboard's presence table). In a cluster a channel is listed when any node
/// has a subscriber (its count is this node's, maybe 0). `#server-to-user-` channels are never listed.
pub(crate) async fn occupied(
    req: &ApiRequest<'_>,
    prefix: &str,
) -> Result<Vec<(Box<str>, u64)>, Response> {
    let q = Query::Channels {
        app: req.app.idx,
        prefix: Arc::from(prefix),
    };
    let mut counts: BTreeMap<Box<str>, u64> = BTreeMap::new();
    for a in req.core.query(q).await.map_err(busy)? {
        if let Answer::Counts(list) = a {
            for (name, n) in list {
                *counts.entry(name).or_default() += n;
            }
        }
    }
    let q = || ClusterQuery::Channels {
        app_id: req.app.config.id.clone(),
        prefix: prefix.into(),
    };
    let mut elsewhere = std::collections::BTreeSet::new();
    if let Some(ClusterAnswer::Names(names)) = req.core.ask_cluster(q).await {
        for name in names {
            counts.entry(name.clone().into()).or_default();
            elsewhere.insert(name);
        }
    }
    Ok(counts
        .into_iter()
        .filter(|(name, n)| {
            (*n > 0 || elsewhere.contains(&**name)) && !name.starts_with(SERVER_TO_USER_PREFIX)
        })
        .collect())
}

/// `GET /apps/{id}/channels/{name}?info=`: always 200 with `occupied` (docs/protocol.md#channel-info).
pub async fn one(req: &ApiRequest<'_>, raw_name: &str) -> Response {
    let channel = match decode_name(raw_name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let max = req.app.config.max_channel_name_length;
    let ty = match channel_name::validate(&channel, max) {
        Ok(t) => t,
        Err(e) => return Response::error(400, &e.message(&channel, max)),
    };
    let info = match info_param(req) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if info.user_count && ty.kind != ChannelKind::Presence {
        return Response::error(
            400,
            "Cannot retrieve the user count unless the channel is a presence channel",
        );
    }
    if info.cache && !ty.cache {
        return Response::error(
            400,
            "Cache information is only available for cache channels",
        );
    }
    let count = match subscription_count(req, &channel).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let local = match local_subscription_count(req, &channel).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let q = || ClusterQuery::Occupied {
        app_id: req.app.config.id.clone(),
        channel: channel.clone(),
    };
    // Occupied anywhere: the cluster's occupancy when Redis answers (counts reach it on their own path, a moment
    // apart), else this node's subscribers.
    let occupied = match req.core.ask_cluster(q).await {
        Some(ClusterAnswer::Yes(anywhere)) => anywhere || local > 0,
        _ => count > 0 || local > 0,
    };
    let mut out = format!(r#"{{"occupied":{occupied}"#);
    if info.user_count {
        match presence_users(req, &channel).await {
            Ok(users) => out.push_str(&format!(r#","user_count":{}"#, users.len())),
            Err(r) => return r,
        }
    }
    if info.subscription_count {
        out.push_str(&format!(r#","subscription_count":{count}"#));
    }
    if info.cache {
        match runtime::cache::lookup(req.core, req.app.idx, &channel).await {
            Ok(Some(event)) => {
                let ttl = event
                    .expires
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1);
                out.push_str(r#","cache":{"data":"#);
                out.push_str(&String::from_utf8_lossy(&event.data_token));
                out.push_str(&format!(r#","ttl":{ttl}}}"#));
            }
            Ok(None) => out.push_str(r#","cache":null"#),
            Err(e) => return busy(e),
        }
    }
    out.push('}');
    Response::json(200, out.into_bytes())
}

/// Deprecated `GET /apps/{id}/channels/{name}/stats` (docs/protocol.md#deprecated-endpoints): occupied, user_count
/// (presence), connection_count.
pub async fn legacy_stats(req: &ApiRequest<'_>, raw_name: &str) -> Response {
    let channel = match decode_name(raw_name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let count = match subscription_count(req, &channel).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut out = format!(r#"{{"occupied":{}"#, count > 0);
    if ChannelType::of(&channel).kind == ChannelKind::Presence {
        match presence_users(req, &channel).await {
            Ok(users) => out.push_str(&format!(r#","user_count":{}"#, users.len())),
            Err(r) => return r,
        }
    }
    out.push_str(&format!(r#","connection_count":{count}}}"#));
    Response::json(200, out.into_bytes())
}

/// `GET /apps/{id}/channels/{name}/users`: presence channels only (docs/protocol.md#presence-users).
pub async fn users(req: &ApiRequest<'_>, raw_name: &str) -> Response {
    let channel = match decode_name(raw_name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if ChannelType::of(&channel).kind != ChannelKind::Presence {
        return Response::error(400, "Users can only be retrieved for presence channels");
    }
    let users = match presence_users(req, &channel).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let mut out = String::from(r#"{"users":["#);
    for (i, id) in users.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"id":"#);
        push_json_string_into(&mut out, id);
        out.push('}');
    }
    out.push_str("]}");
    Response::json(200, out.into_bytes())
}

/// `GET /apps/{id}/channels/{name}/events?limit=&cursor=`: the channel's kept events, oldest first, a page at a
/// time (docs/protocol.md#history). 404 when the app keeps no history.
pub async fn history(req: &ApiRequest<'_>, raw_name: &str) -> Response {
    let cfg = &req.app.config;
    if !cfg.history_enabled {
        return Response::error(
            404,
            "Channel history is off for this app: turn on history_enabled (RELAY_HISTORY_ENABLED)",
        );
    }
    let channel = match decode_name(raw_name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let max = cfg.max_channel_name_length;
    if let Err(e) = channel_name::validate(&channel, max) {
        return Response::error(400, &e.message(&channel, max));
    }
    let limit = match req.query.get("limit") {
        None => cfg.history_max,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=cfg.history_max).contains(&n) => n,
            _ => {
                return Response::error(
                    400,
                    &format!(
                        "Invalid limit: a whole number from 1 to {}",
                        cfg.history_max
                    ),
                );
            }
        },
    };
    let cursor = req.query.get("cursor");
    let page = match runtime::history::page(req.core, req.app.idx, &channel, cursor, limit).await {
        Ok(Ok(page)) => page,
        Ok(Err(CursorError::Malformed)) => return Response::error(400, "Invalid cursor"),
        Ok(Err(CursorError::Stale)) => {
            return Response::error(
                400,
                "Cursor no longer valid: the channel's history was reset; start again without a cursor",
            );
        }
        Err(e) => return busy(e),
    };
    let mut out = Vec::with_capacity(64 + page.events.len() * 128);
    out.extend_from_slice(br#"{"events":["#);
    for (i, e) in page.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"id":"#);
        push_json_string(&mut out, &e.id.to_string());
        out.extend_from_slice(br#","event":"#);
        out.extend_from_slice(&e.name_token);
        out.extend_from_slice(br#","channel":"#);
        push_json_string(&mut out, &channel);
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(&e.data_token);
        out.extend_from_slice(format!(r#","published_at":{}"#, e.published_at_ms).as_bytes());
        if let Some(u) = &e.user_id {
            out.extend_from_slice(br#","user_id":"#);
            push_json_string(&mut out, u);
        }
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"next_cursor":"#);
    match page.next_cursor {
        Some(c) => push_json_string(&mut out, &c.to_string()),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Response::json(200, out)
}
