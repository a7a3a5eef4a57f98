//! `GET /apps/{id}/events/log?limit=`: the app's most recent server events, newest first, merged from every
//! core's ring (docs/protocol.md#event-log).

use crate::api::ApiRequest;
use crate::app::AppIdx;
use crate::http::response::Response;
use crate::runtime::core::Core;
use crate::runtime::event_log::{LogEntry, merge};
use crate::runtime::message::NoReply;
use crate::runtime::query::{Answer, Query};

/// Entries returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;

pub async fn log(req: &ApiRequest<'_>) -> Response {
    let max = req.core.shared.config.limits.event_log_max;
    if max == 0 {
        return Response::error(404, "The event log is off: set RELAY_EVENT_LOG_MAX above 0");
    }
    let limit = match req.query.get("limit") {
        None => DEFAULT_LIMIT.min(max),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Response::error(
                    400,
                    &format!("Invalid limit: a whole number from 1 to {max}"),
                );
            }
        },
    };
    let entries = match newest(req.core, req.app.idx, limit).await {
        Ok(e) => e,
        Err(_) => return Response::error(503, "Server busy: a core did not answer in time"),
    };
    let mut out = Vec::with_capacity(32 + entries.len() * 96);
    out.extend_from_slice(br#"{"events":["#);
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write_json(&mut out);
    }
    out.extend_from_slice(b"]}");
    Response::json(200, out)
}

/// The app's `limit` newest entries over every core, newest first (also the dashboard's event log tail).
pub(crate) async fn newest(
    core: &Core,
    app: AppIdx,
    limit: usize,
) -> Result<Vec<LogEntry>, NoReply> {
    let answers = core.query(Query::EventLog { app, limit }).await?;
    let parts = answers
        .into_iter()
        .filter_map(|a| match a {
            Answer::Log(entries) => Some(entries),
            _ => None,
        })
        .collect();
    Ok(merge(parts, limit))
}
