//! `POST /apps/{id}/users/{user_id}/terminate_connections` (docs/protocol.md#terminate, #terminate-endpoint): every
//! core closes its connections signed in as the user with 4009.

use crate::api::ApiRequest;
use crate::http::response::Response;
use crate::runtime::users;

pub fn terminate_connections(req: &ApiRequest<'_>, raw_user: &str) -> Response {
    let Ok(user_id) = crate::http::query::percent_decode(raw_user) else {
        return Response::error(400, "Invalid user id encoding");
    };
    if user_id.is_empty() {
        return Response::error(400, "Missing user id");
    }
    users::terminate(req.core, req.app.idx, &user_id);
    Response::ok_empty_object()
}
