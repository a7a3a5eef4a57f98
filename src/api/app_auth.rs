//! The seed's `POST /apps/{id}/auth`: a signed backend request with `socket_id`, `channel_name` and, for presence,
//! `channel_data`; answers the auth token the client sends with its subscribe, so a backend need not compute
//! signatures itself. Encrypted channels also get their `shared_secret` when the app has a master key.

use serde::Deserialize;

use crate::config::AppConfig;
use crate::http::response::Response;
use crate::json::push_json_string;
use crate::protocol::auth;
use crate::protocol::channel_name::{self, ChannelKind};
use crate::socket_id::SocketId;

#[derive(Deserialize)]
struct AuthBody {
    socket_id: Option<String>,
    channel_name: Option<String>,
    channel_data: Option<String>,
}

pub fn authorize(cfg: &AppConfig, body: &[u8]) -> Response {
    let body = match crate::json::parse::<AuthBody>(body) {
        Ok(b) => b,
        Err(e @ crate::json::JsonError::TooDeep) => {
            return Response::error(400, &format!("Request body: {e}"));
        }
        Err(crate::json::JsonError::Invalid) => {
            return Response::error(
                400,
                "Request body must be a JSON object with socket_id and channel_name",
            );
        }
    };
    let (Some(socket_id), Some(channel)) = (body.socket_id, body.channel_name) else {
        return Response::error(
            400,
            "Missing required parameter: socket_id and channel_name",
        );
    };
    if SocketId::parse(&socket_id).is_none() {
        return Response::error(
            400,
            "Invalid socket_id: expected two integers joined by '.'",
        );
    }
    let ty = match channel_name::validate(&channel, cfg.max_channel_name_length) {
        Ok(t) => t,
        Err(e) => return Response::error(400, &e.message(&channel, cfg.max_channel_name_length)),
    };
    let channel_data = match ty.kind {
        ChannelKind::Presence => match body.channel_data {
            Some(d) => Some(d),
            None => {
                return Response::error(
                    400,
                    "Missing required parameter: channel_data (presence channel)",
                );
            }
        },
        ChannelKind::Private | ChannelKind::Encrypted => None,
        _ => {
            return Response::error(
                400,
                "Only private, encrypted and presence channels need authorization",
            );
        }
    };
    let token = auth::sign_channel(
        &cfg.key,
        &cfg.secret,
        &socket_id,
        &channel,
        channel_data.as_deref(),
    );
    let mut out = Vec::new();
    out.extend_from_slice(br#"{"auth":"#);
    push_json_string(&mut out, &token);
    if let Some(d) = &channel_data {
        out.extend_from_slice(br#","channel_data":"#);
        push_json_string(&mut out, d);
    }
    if ty.kind == ChannelKind::Encrypted {
        let Some(key) = cfg.master_key() else {
            return Response::error(
                400,
                "This app has no encryption_master_key_base64 for encrypted channels",
            );
        };
        out.extend_from_slice(br#","shared_secret":"#);
        push_json_string(&mut out, &auth::encrypted_shared_secret(&channel, &key));
    }
    out.push(b'}');
    Response::json(200, out)
}
