//! `POST /apps/{id}/users/{user_id}/terminate_connections` (spec §7.4, §10.7): every core closes its
//! connections signed in as the user with 4009.

use std::sync::Arc;

use crate::api::ApiRequest;
use crate::http::response::Response;
use crate::server::inbox::CoreMsg;

pub fn terminate_connections(req: &ApiRequest<'_>, raw_user: &str) -> Response {
    let Ok(user_id) = crate::http::query::percent_decode(raw_user) else {
        return Response::error(400, "Invalid user id encoding");
    };
    if user_id.is_empty() {
        return Response::error(400, "Missing user id");
    }
    let user_id: Arc<str> = Arc::from(user_id);
    let app = req.app.idx;
    for core in 0..req.core.shared.inboxes.len() {
        let _ = req.core.send_to(
            core,
            CoreMsg::TerminateUser {
                app,
                user_id: user_id.clone(),
            },
        );
    }
    Response::ok_empty_object()
}
