//! One snapshot of the dashboard's figures, as hand-built JSON: the node, its running totals, the `/stats` object
//! (webhooks, cluster), and per app its counters, presence channels with member counts and the event log tail.
//!
//! Totals only, never rates: the page divides the difference of two snapshots by their `time_ms` difference, so
//! nothing is kept per viewer. Presence and the event log ask every core (the same questions the REST API asks);
//! a core that does not answer in time leaves them out and marks the snapshot `partial`.

use std::cmp::Reverse;
use std::rc::Rc;
use std::sync::Arc;

use crate::api::{ApiRequest, channels, event_log, stats};
use crate::app::App;
use crate::http::query::Query;
use crate::json::push_json_string;
use crate::metrics::{AppCounter, Counter, Gauge};
use crate::runtime::core::Core;

/// Apps in a snapshot, the most connected first: each costs the cores two questions per second per viewer.
pub const MAX_APPS: usize = 50;
/// Presence channels listed per app (in name order); `presence_total` says how many there are.
pub const MAX_PRESENCE_CHANNELS: usize = 20;
/// Newest event-log entries per app.
pub const LOG_TAIL: usize = 15;

/// The full snapshot (what each server-sent event carries), appended to `out`.
pub async fn write(core: &Rc<Core>, out: &mut Vec<u8>) {
    let apps = head(core, out);
    let log_limit = LOG_TAIL.min(core.shared.config.limits.event_log_max);
    let mut partial = false;
    for (i, app) in apps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        app_figures(app, out);
        let req = ApiRequest {
            core,
            app,
            query: Query::default(),
            body: &[],
        };
        out.extend_from_slice(br#","presence":["#);
        let mut total = 0;
        match channels::occupied(&req, "presence-").await {
            Ok(list) => {
                total = list.len();
                let mut first = true;
                for (name, _) in list.iter().take(MAX_PRESENCE_CHANNELS) {
                    let Ok(users) = channels::presence_users(&req, name).await else {
                        partial = true;
                        continue;
                    };
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(br#"{"channel":"#);
                    push_json_string(out, name);
                    out.extend_from_slice(format!(r#","users":{}}}"#, users.len()).as_bytes());
                }
            }
            Err(_) => partial = true,
        }
        out.extend_from_slice(format!(r#"],"presence_total":{total},"log":["#).as_bytes());
        if log_limit > 0 {
            match event_log::newest(core, app.idx, log_limit).await {
                Ok(entries) => {
                    for (i, e) in entries.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        e.write_json(out);
                    }
                }
                Err(_) => partial = true,
            }
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(format!(r#"],"partial":{partial}}}"#).as_bytes());
}

/// Writes everything up to the apps array's opening bracket; returns the apps to list.
fn head(core: &Core, out: &mut Vec<u8>) -> Vec<Arc<App>> {
    let shared = &core.shared;
    let m = &shared.metrics;
    // A node has a name in a cluster only; alone it is this process.
    out.extend_from_slice(br#"{"node":"#);
    match &shared.config.cluster {
        Some(c) => push_json_string(out, &c.node_id),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(
        format!(
            r#","pid":{},"time_ms":{},"uptime_secs":{},"cores":{},"draining":{},"clustered":{},"connections":{},"channels":{}"#,
            std::process::id(),
            crate::clock::unix_ms(),
            shared.started.elapsed().as_secs(),
            shared.cores(),
            shared.is_shutting_down(),
            shared.cluster.get().is_some(),
            shared.connections.count(),
            m.gauge(Gauge::OccupiedChannels).max(0),
        )
        .as_bytes(),
    );
    out.extend_from_slice(br#","totals":{"#);
    let totals = [
        ("connections_opened", Counter::ConnectionsOpened),
        ("connections_closed", Counter::ConnectionsClosed),
        ("deliveries", Counter::Deliveries),
        ("publishes_rest", Counter::PublishesRest),
        ("publishes_client", Counter::PublishesClient),
        ("publishes_server", Counter::PublishesServer),
        ("publishes_remote", Counter::PublishesRemote),
        ("ws_bytes_sent", Counter::WsBytesSent),
        ("ws_bytes_received", Counter::WsBytesReceived),
        ("rate_limited", Counter::RateLimited),
        ("slow_reader_cutoffs", Counter::SlowReaderCutoffs),
    ];
    for (i, (name, counter)) in totals.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!(r#""{name}":{}"#, m.total(counter)).as_bytes());
    }
    out.extend_from_slice(br#"},"stats":"#);
    out.extend_from_slice(stats::stats_json(core).as_bytes());
    let registry = core.registry();
    let mut apps: Vec<Arc<App>> = registry.iter().cloned().collect();
    let apps_total = apps.len();
    // Each count is read once: other cores move them during the sort, and a comparator that changes its mind
    // may make `sort_by` panic.
    apps.sort_by_cached_key(|a| (Reverse(a.live.connections.count()), a.config.id.clone()));
    apps.truncate(MAX_APPS);
    out.extend_from_slice(format!(r#","apps_total":{apps_total},"apps":["#).as_bytes());
    apps
}

/// `"id":..,"connections":..,...` of one app, without braces.
fn app_figures(app: &App, out: &mut Vec<u8>) {
    let m = &app.live.metrics;
    out.extend_from_slice(br#""id":"#);
    push_json_string(out, &app.config.id);
    out.extend_from_slice(
        format!(
            r#","enabled":{},"connections":{},"deliveries":{},"publishes_rest":{},"publishes_client":{}"#,
            app.config.enabled,
            app.live.connections.count(),
            m.total(AppCounter::Deliveries),
            m.total(AppCounter::PublishesRest),
            m.total(AppCounter::PublishesClient),
        )
        .as_bytes(),
    );
}
