//! `GET /health`, `GET /ready` and `GET /stats` (seed: unauthenticated, for load balancers and dashboards).

use std::rc::Rc;

use crate::http::response::Response;
use crate::metrics::Gauge;
use crate::runtime::core::Core;
use crate::webhooks::WebhookStats;
use std::sync::atomic::Ordering;

/// Liveness: the process answers. 503 `draining` once a SIGTERM drain began, so load balancers stop routing.
pub fn health(core: &Rc<Core>) -> Response {
    if core.shared.is_shutting_down() {
        return Response::json(503, br#"{"status":"draining"}"#.to_vec());
    }
    Response::json(200, br#"{"status":"ok"}"#.to_vec())
}

/// Readiness: whether new clients should be sent here. Not while draining; on a cluster node, not while Redis is
/// unreachable (the node serves its own clients, but a new one would miss the other nodes' events).
pub fn ready(core: &Rc<Core>) -> Response {
    if core.shared.is_shutting_down() {
        return Response::json(503, br#"{"status":"draining"}"#.to_vec());
    }
    if let Some(c) = core.shared.cluster.get()
        && !c.connected.load(Ordering::Acquire)
    {
        return Response::json(503, br#"{"status":"redis_unreachable"}"#.to_vec());
    }
    Response::json(200, br#"{"status":"ready"}"#.to_vec())
}

/// `{"connections":N,"channels":N}` (the seed's shape): open WebSocket connections and occupied channels, all apps;
/// plus `"webhooks":{…}`, the sender's totals, when some app has a webhook, and `"cluster":{…}`, the bridge's,
/// on a node of a cluster, where `connections` and `channels` are the cluster's (refreshed every second by the
/// bridge; this node's alone in `cluster.node_connections`, and when Redis has not answered for 3 s). All are
/// running counts: unauthenticated polling costs no core any work.
pub fn stats(core: &Rc<Core>) -> Response {
    Response::json(200, stats_json(core).into_bytes())
}

/// The `/stats` object itself; the dashboard's snapshot carries it too.
pub(crate) fn stats_json(core: &Core) -> String {
    let node_connections = core.shared.connections.count();
    let node_channels = core.shared.metrics.gauge(Gauge::OccupiedChannels).max(0) as u64;
    let (connections, channels) = match core.shared.cluster.get() {
        Some(c) if fresh(c.totals_at_ms.load(Ordering::Acquire)) => (
            c.cluster_connections.load(Ordering::Relaxed),
            c.cluster_channels.load(Ordering::Relaxed),
        ),
        _ => (node_connections, node_channels),
    };
    let mut body = format!(r#"{{"connections":{connections},"channels":{channels}"#);
    if core.shared.config.has_webhooks() {
        let w = &core.shared.webhooks.stats;
        let get = WebhookStats::get;
        body.push_str(&format!(
            r#","webhooks":{{"held":{},"delivered":{},"retries":{},"dropped":{}}}"#,
            get(&w.held),
            get(&w.delivered),
            get(&w.retries),
            get(&w.dropped)
        ));
    }
    if let Some(c) = core.shared.cluster.get() {
        let s = &c.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        body.push_str(r#","cluster":{"node":"#);
        crate::json::push_json_string_into(&mut body, &c.node_id);
        body.push_str(&format!(
                        r#","node_connections":{node_connections},"redis_connected":{},"published":{},"received":{},"dropped":{},"reconnects":{}}}"#,
            c.connected.load(Ordering::Acquire),
            get(&s.published),
            get(&s.received),
            get(&s.dropped),
            get(&s.reconnects)
        ));
    }
    body.push('}');
    body
}

/// Cluster totals younger than 3 s (the bridge refreshes them every second).
fn fresh(at_ms: u64) -> bool {
    at_ms > 0 && crate::clock::unix_ms().saturating_sub(at_ms) < 3000
}
