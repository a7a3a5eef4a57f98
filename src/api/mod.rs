//! The REST API: routing, app lookup and request signing, then one file per resource.
//!
//! Every error is one status with a JSON `{"error": ...}` body (docs/protocol.md#http-rules).

use std::rc::Rc;

use crate::app::App;
use crate::http::query::Query;
use crate::http::request::{Method, RequestHead};
use crate::http::response::Response;
use crate::metrics::HttpRoute;
use crate::protocol::auth;
use crate::runtime::core::Core;

pub mod app_auth;
pub mod channels;
pub mod dashboard;
pub mod event_log;
pub mod events;
pub mod stats;
pub mod users;

/// What a handler gets: the app, the decoded query and the raw body.
pub struct ApiRequest<'a> {
    pub core: &'a Rc<Core>,
    pub app: &'a App,
    pub query: Query,
    pub body: &'a [u8],
}

fn method_name(m: &Method) -> &str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Head => "HEAD",
        Method::Other(s) => s,
    }
}

/// Answers one request, counted by route and status (`relay_http_requests_total`).
pub async fn route(core: &Rc<Core>, head: &RequestHead, body: &[u8]) -> Response {
    let mut counted = HttpRoute::Other;
    let response = answer(core, head, body, &mut counted).await;
    core.metrics().http(counted, response.status);
    response
}

async fn answer(
    core: &Rc<Core>,
    head: &RequestHead,
    body: &[u8],
    counted: &mut HttpRoute,
) -> Response {
    let get = matches!(head.method, Method::Get | Method::Head);
    if let Some(r) = dashboard::route(core, head).await {
        *counted = HttpRoute::Dashboard;
        return r;
    }
    match head.path.as_str() {
        "/health" | "/up" => {
            *counted = HttpRoute::Health;
            return if get {
                stats::health(core)
            } else {
                Response::method_not_allowed("GET, HEAD")
            };
        }
        "/ready" => {
            *counted = HttpRoute::Ready;
            return if get {
                stats::ready(core)
            } else {
                Response::method_not_allowed("GET, HEAD")
            };
        }
        "/stats" => {
            *counted = HttpRoute::Stats;
            return if get {
                stats::stats(core)
            } else {
                Response::method_not_allowed("GET, HEAD")
            };
        }
        _ => {}
    }
    if core.shared.is_shutting_down() {
        // Load balancers and publishers retry elsewhere; the process exits once its connections are drained.
        return Response::error(503, "Server is shutting down");
    }
    let Some(rest) = head.path.strip_prefix("/apps/") else {
        return Response::error(404, "Not found");
    };
    let (app_id, resource) = rest.split_once('/').unwrap_or((rest, ""));
    let registry = core.registry_with(|r| r.by_id(app_id).is_some());
    let Some(app) = registry.by_id(app_id) else {
        return Response::error(404, &format!("Unknown app id '{app_id}'"));
    };
    let segments: Vec<&str> = resource.split('/').collect();
    // Route first so unknown paths are 404 and wrong methods 405 whatever the signature says.
    let handler = match (segments.as_slice(), &head.method) {
        (["events"], Method::Post) => Route::Trigger,
        (["batch_events"] | ["events", "batch"], Method::Post) => Route::Batch,
        (["channels"], Method::Get | Method::Head) => Route::Channels,
        (["channels", name], Method::Get | Method::Head) if !name.is_empty() => {
            Route::Channel(name)
        }
        (["channels", name, "stats"], Method::Get | Method::Head) => Route::ChannelStats(name),
        (["channels", name, "events"], Method::Post) => Route::LegacyTrigger(name),
        (["channels", name, "events"], Method::Get | Method::Head) => Route::History(name),
        (["channels", name, "users"], Method::Get | Method::Head) => Route::Users(name),
        (["users", user, "terminate_connections"], Method::Post) => Route::Terminate(user),
        (["auth"], Method::Post) => Route::Auth,
        (["events", "log"], Method::Get | Method::Head) => Route::EventLog,
        (["events"] | ["batch_events"] | ["events", "batch"], _) => {
            return Response::method_not_allowed("POST");
        }
        (["channels", _, "events"], _) => return Response::method_not_allowed("GET, HEAD, POST"),
        (["events", "log"], _) => return Response::method_not_allowed("GET, HEAD"),
        (["users", _, "terminate_connections"] | ["auth"], _) => {
            return Response::method_not_allowed("POST");
        }
        (
            ["channels"] | ["channels", _] | ["channels", _, "stats"] | ["channels", _, "users"],
            _,
        ) => {
            return Response::method_not_allowed("GET, HEAD");
        }
        _ => return Response::error(404, &format!("Not found: {}", head.path)),
    };
    *counted = handler.counted();
    let query = match Query::parse(&head.query) {
        Ok(q) => q,
        Err(e) => return Response::error(401, &format!("Invalid query string: {e}")),
    };
    let app_cfg = &app.config;
    if let Err(e) = auth::verify_rest_request(
        method_name(&head.method),
        &head.path,
        &query,
        body,
        &app_cfg.key,
        &app_cfg.secret,
        crate::clock::unix_secs() as i64,
        core.shared.config.limits.auth_timestamp_window_secs,
    ) {
        return Response::error(401, &e.to_string());
    }
    if !app_cfg.enabled {
        return Response::error(403, "Application is disabled");
    }
    let req = ApiRequest {
        core,
        app,
        query,
        body,
    };
    match handler {
        Route::Trigger => events::trigger(&req).await,
        Route::Batch => events::batch(&req).await,
        Route::LegacyTrigger(name) => events::legacy_trigger(&req, name).await,
        Route::Channels => channels::list(&req).await,
        Route::Channel(name) => channels::one(&req, name).await,
        Route::ChannelStats(name) => channels::legacy_stats(&req, name).await,
        Route::Users(name) => channels::users(&req, name).await,
        Route::History(name) => channels::history(&req, name).await,
        Route::Terminate(user) => users::terminate_connections(&req, user),
        Route::Auth => app_auth::authorize(&req.app.config, req.body),
        Route::EventLog => event_log::log(&req).await,
    }
}

impl Route<'_> {
    fn counted(&self) -> HttpRoute {
        match self {
            Route::Trigger | Route::LegacyTrigger(_) => HttpRoute::Events,
            Route::Batch => HttpRoute::BatchEvents,
            Route::Channels => HttpRoute::Channels,
            Route::Channel(_) | Route::ChannelStats(_) => HttpRoute::Channel,
            Route::Users(_) => HttpRoute::ChannelUsers,
            Route::History(_) => HttpRoute::ChannelHistory,
            Route::Terminate(_) => HttpRoute::TerminateConnections,
            Route::Auth => HttpRoute::Auth,
            Route::EventLog => HttpRoute::EventLog,
        }
    }
}

enum Route<'a> {
    Trigger,
    Batch,
    LegacyTrigger(&'a str),
    Channels,
    Channel(&'a str),
    ChannelStats(&'a str),
    Users(&'a str),
    History(&'a str),
    Terminate(&'a str),
    Auth,
    EventLog,
}
