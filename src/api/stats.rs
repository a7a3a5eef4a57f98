//! `GET /health` and `GET /stats` (seed: unauthenticated, for load balancers and dashboards).

use std::rc::Rc;

use crate::http::response::Response;
use crate::metrics::Gauge;
use crate::runtime::core::Core;
use crate::webhooks::WebhookStats;
use std::sync::atomic::Ordering;

pub fn health(core: &Rc<Core>) -> Response {
    if core.shared.is_shutting_down() {
        return Response::json(503, br#"{"status":"shutting_down"}"#.to_vec());
    }
    Response::json(200, br#"{"status":"ok"}"#.to_vec())
}

/// `{"connections":N,"channels":N}` (the seed's shape): open WebSocket connections and occupied channels, all apps;
/// plus `"webhooks":{…}`, the sender's totals, when some app has a webhook, and `"cluster":{…}`, the bridge's,
/// on a node of a cluster. All are running counts:
/// unauthenticated polling costs no core any work.
pub fn stats(core: &Rc<Core>) -> Response {
    let connections = core.shared.connections.count();
    let channels = core.shared.metrics.gauge(Gauge::OccupiedChannels).max(0);
    let mut body = format!(r#"{{"connections":{connections},"channels":{channels}"#);
    if core
        .shared
        .config
        .apps
        .iter()
        .any(|a| !a.webhooks.is_empty())
    {
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
            r#","redis_connected":{},"published":{},"received":{},"dropped":{},"reconnects":{}}}"#,
            c.connected.load(Ordering::Acquire),
            get(&s.published),
            get(&s.received),
            get(&s.dropped),
            get(&s.reconnects)
        ));
    }
    body.push('}');
    Response::json(200, body.into_bytes())
}
