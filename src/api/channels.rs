//! Channel queries: `GET /channels`, `GET /channels/{name}`, deprecated `GET /channels/{name}/stats`
//! (spec §10.4, §10.5). Counts are summed over every core's local index (one query message per core).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::ApiRequest;
use crate::channels::name::{self, ChannelKind, ChannelType, SERVER_TO_USER_PREFIX};
use crate::http::response::Response;
use crate::server::inbox::{Answer, Query};

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

pub async fn subscription_count(req: &ApiRequest<'_>, channel: &str) -> u64 {
    let q = Query::Channel {
        app: req.app.idx,
        name: Arc::from(channel),
    };
    req.core
        .query(q)
        .await
        .into_iter()
        .map(|a| if let Answer::Count(n) = a { n } else { 0 })
        .sum()
}

/// Distinct users of a presence channel, from its home core.
pub async fn presence_users(req: &ApiRequest<'_>, channel: &str) -> Vec<Box<str>> {
    let q = Query::PresenceUsers {
        app: req.app.idx,
        name: Arc::from(channel),
    };
    match req.core.ask_home(req.app.idx, channel, q).await {
        Some(Answer::Users(u)) => u,
        _ => Vec::new(),
    }
}

/// The `{...}` object of requested attributes for one channel (publish responses, spec §10.2).
pub async fn info_object(req: &ApiRequest<'_>, channel: &str, info: Info) -> String {
    let presence = ChannelType::of(channel).kind == ChannelKind::Presence;
    let mut fields = Vec::new();
    if info.user_count && presence {
        fields.push(format!(
            r#""user_count":{}"#,
            presence_users(req, channel).await.len()
        ));
    }
    if info.subscription_count {
        fields.push(format!(
            r#""subscription_count":{}"#,
            subscription_count(req, channel).await
        ));
    }
    format!("{{{}}}", fields.join(","))
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
    let q = Query::Channels {
        app: req.app.idx,
        prefix: Arc::from(prefix),
    };
    let mut counts: BTreeMap<Box<str>, u64> = BTreeMap::new();
    for a in req.core.query(q).await {
        if let Answer::Counts(list) = a {
            for (name, n) in list {
                *counts.entry(name).or_default() += n;
            }
        }
    }
    let mut out = String::from(r#"{"channels":{"#);
    let mut first = true;
    for (name, n) in counts
        .iter()
        .filter(|(name, n)| **n > 0 && !name.starts_with(SERVER_TO_USER_PREFIX))
    {
        if !first {
            out.push(',');
        }
        first = false;
        let mut fields = Vec::new();
        if info.user_count {
            fields.push(format!(
                r#""user_count":{}"#,
                presence_users(req, name).await.len()
            ));
        }
        if info.subscription_count {
            fields.push(format!(r#""subscription_count":{n}"#));
        }
        out.push_str(&format!("\"{name}\":{{{}}}", fields.join(",")));
    }
    out.push_str("}}");
    Response::json(200, out.into_bytes())
}

/// `GET /apps/{id}/channels/{name}?info=`: always 200 with `occupied` (spec §10.5).
pub async fn one(req: &ApiRequest<'_>, raw_name: &str) -> Response {
    let channel = match decode_name(raw_name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let max = req.app.config.max_channel_name_length;
    let ty = match name::validate(&channel, max) {
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
    let count = subscription_count(req, &channel).await;
    let mut out = format!(r#"{{"occupied":{}"#, count > 0);
    if info.user_count {
        out.push_str(&format!(
            r#","user_count":{}"#,
            presence_users(req, &channel).await.len()
        ));
    }
    if info.subscription_count {
        out.push_str(&format!(r#","subscription_count":{count}"#));
    }
    if info.cache {
        let q = Query::Cache {
            app: req.app.idx,
            name: Arc::from(channel.as_str()),
        };
        match req.core.ask_home(req.app.idx, &channel, q).await {
            Some(Answer::Cache(Some((data, ttl)))) => {
                out.push_str(r#","cache":{"data":"#);
                out.push_str(&String::from_utf8_lossy(&data));
                out.push_str(&format!(r#","ttl":{ttl}}}"#));
            }
            _ => out.push_str(r#","cache":null"#),
        }
    }
    out.push('}');
    Response::json(200, out.into_bytes())
}

/// Deprecated `GET /apps/{id}/channels/{name}/stats` (seed 004): occupied, user_count (presence),
/// connection_count.
pub async fn legacy_stats(req: &ApiRequest<'_>, raw_name: &str) -> Response {
    let channel = match decode_name(raw_name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let count = subscription_count(req, &channel).await;
    let mut out = format!(r#"{{"occupied":{}"#, count > 0);
    if ChannelType::of(&channel).kind == ChannelKind::Presence {
        out.push_str(&format!(
            r#","user_count":{}"#,
            presence_users(req, &channel).await.len()
        ));
    }
    out.push_str(&format!(r#","connection_count":{count}}}"#));
    Response::json(200, out.into_bytes())
}

/// `GET /apps/{id}/channels/{name}/users`: presence channels only (spec §10.6).
pub async fn users(req: &ApiRequest<'_>, raw_name: &str) -> Response {
    let channel = match decode_name(raw_name) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if ChannelType::of(&channel).kind != ChannelKind::Presence {
        return Response::error(400, "Users can only be retrieved for presence channels");
    }
    let mut out = String::from(r#"{"users":["#);
    for (i, id) in presence_users(req, &channel).await.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut tok = Vec::new();
        crate::json::push_json_string(&mut tok, id);
        out.push_str(r#"{"id":"#);
        out.push_str(&String::from_utf8_lossy(&tok));
        out.push('}');
    }
    out.push_str("]}");
    Response::json(200, out.into_bytes())
}
