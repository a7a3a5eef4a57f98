//! `GET /health` and `GET /stats` (seed: unauthenticated, for load balancers and dashboards).

use std::rc::Rc;

use crate::http::response::Response;
use crate::server::core::Core;

pub fn health(core: &Rc<Core>) -> Response {
    if core.shared.is_shutting_down() {
        return Response::json(503, br#"{"status":"shutting_down"}"#.to_vec());
    }
    Response::json(200, br#"{"status":"ok"}"#.to_vec())
}

/// `{"connections":N,"channels":N}`: open WebSocket connections and occupied channels, all apps.
pub async fn stats(core: &Rc<Core>) -> Response {
    let connections = core.shared.connections.count();
    let channels = core.distinct_channels().await;
    Response::json(
        200,
        format!(r#"{{"connections":{connections},"channels":{channels}}}"#).into_bytes(),
    )
}
