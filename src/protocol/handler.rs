//! Dispatch of client messages on an established connection (spec §2.4, §3, §5, §6, §7, §8).
//!
//! Errors here are per-message: the client gets `pusher:error` and the connection stays open (spec §1.3).
//! Handling is awaited in the connection's read loop, so a client's messages take effect in the order sent
//! (a subscribe completes before the client event that follows it).

use std::rc::Rc;

use futures_channel::oneshot;
use serde::Deserialize;
use sonic_rs::{JsonValueTrait, LazyValue};

use crate::app::App;
use crate::auth;
use crate::channels::index::ChannelIndex;
use crate::channels::name::{self, ChannelKind, ChannelType, SERVER_TO_USER_PREFIX};
use crate::json::{self, JsonError};
use crate::protocol::codes::error;
use crate::protocol::inbound::{self, ClientMessage, SubscribeData};
use crate::protocol::outbound;
use crate::server::core::Core;
use crate::server::inbox::{CoreMsg, HomeMsg, JoinReply, Publication};
use crate::ws::session::{Membership, Session, SignedInUser};

/// Handles one text message from the client.
pub async fn handle_text(core: &Core, session: &Rc<Session>, text: &[u8]) {
    let msg = match inbound::parse(text) {
        Ok(m) => m,
        Err(JsonError::TooDeep) => return refuse_too_deep(session),
        // spec §1.3: malformed JSON gets an error, never a close.
        Err(JsonError::Invalid) => {
            return refuse(
                session,
                "Invalid message format: expected a JSON object with an \"event\" field",
            );
        }
    };
    match &*msg.event {
        "pusher:ping" => session.send(outbound::pong()),
        "pusher:pong" => {}
        "pusher:subscribe" => match inbound::subscribe_data(&msg.data) {
            Ok(d) => subscribe(core, session, d).await,
            Err(JsonError::TooDeep) => refuse_too_deep(session),
            Err(JsonError::Invalid) => refuse(
                session,
                "Invalid subscribe message: data must hold a channel",
            ),
        },
        "pusher:unsubscribe" => {
            if let Ok(SubscribeData {
                channel: Some(channel),
                ..
            }) = inbound::subscribe_data(&msg.data)
            {
                // spec §3.4: no acknowledgement; unknown channels are ignored.
                core.leave_channel(session, &channel);
            }
        }
        "pusher:signin" => signin(core, session, &msg).await,
        event if event.starts_with("client-") => client_event(core, session, &msg),
        // spec §1.3: unknown events are ignored.
        _ => {}
    }
}

fn refuse(session: &Session, message: &str) {
    session.send(outbound::error(None, message));
}

/// JSON nested past `json::MAX_JSON_DEPTH` is refused before it is parsed; the connection stays open.
fn refuse_too_deep(session: &Session) {
    let message = format!("Invalid message: {}", JsonError::TooDeep);
    session.send(outbound::error(Some(error::JSON_TOO_DEEP), &message));
}

async fn subscribe(core: &Core, session: &Rc<Session>, d: SubscribeData) {
    let app = core.app(session.app);
    let cfg = &app.config;
    let Some(channel) = d.channel else {
        return refuse(
            session,
            "Invalid subscribe message: data.channel must be a string",
        );
    };
    let ty = match name::validate(&channel, cfg.max_channel_name_length) {
        Ok(t) => t,
        Err(e) => return refuse(session, &e.message(&channel, cfg.max_channel_name_length)),
    };
    // spec §3.3 step 2: a repeated subscribe keeps the existing one and sends no second success.
    if ChannelIndex::is_subscribed(session, &channel) || session.membership(&channel).is_some() {
        return refuse(
            session,
            &format!("Existing subscription to channel {channel}"),
        );
    }
    let pending_joins = session
        .memberships
        .borrow()
        .iter()
        .filter(|m| !ChannelIndex::is_subscribed(session, &m.channel))
        .count();
    if session.subscriptions.borrow().len() + pending_joins >= cfg.max_channels_per_connection {
        return refuse(
            session,
            &format!(
                "Cannot subscribe to {channel}: over {} channels on this connection",
                cfg.max_channels_per_connection
            ),
        );
    }
    let auth = d.auth.as_deref().unwrap_or("");
    let success = match ty.kind {
        ChannelKind::Public => Some(outbound::subscription_succeeded(&channel)),
        ChannelKind::Private | ChannelKind::Encrypted => {
            if let Err(e) = auth::verify_channel_auth(
                &cfg.key,
                &cfg.secret,
                &session.socket_id_text,
                &channel,
                None,
                auth,
            ) {
                return refuse(session, &e.message(&channel));
            }
            session.authorized.set(true);
            Some(outbound::subscription_succeeded(&channel))
        }
        ChannelKind::ServerToUser => {
            // spec §7.3: only the connection signed in as that user.
            let user = session.user_id();
            if user.as_deref() != channel.strip_prefix(SERVER_TO_USER_PREFIX) {
                return refuse(
                    session,
                    &format!("Cannot subscribe to {channel}: not signed in as that user"),
                );
            }
            Some(outbound::subscription_succeeded(&channel))
        }
        // The home core's reply subscribes the socket and sends the success itself (ordering, see there).
        ChannelKind::Presence => {
            if !join_presence(
                core,
                session,
                app,
                &channel,
                auth,
                d.channel_data.as_deref(),
            )
            .await
            {
                return;
            }
            None
        }
    };
    if session.is_closing() {
        return;
    }
    if let Some(success) = success {
        core.channels.borrow_mut().subscribe(session, &channel);
        session.send(success);
    }
    if ty.cache {
        send_cached(core, session, &channel).await;
    }
    core.count_change(session.app, &channel, 1);
}

/// spec §5: verify, resolve the member, join the roster at the channel's home core. True once subscribed;
/// false after telling the client why not.
async fn join_presence(
    core: &Core,
    session: &Rc<Session>,
    app: &App,
    channel: &str,
    auth: &str,
    channel_data: Option<&str>,
) -> bool {
    let cfg = &app.config;
    if let Err(e) = auth::verify_channel_auth(
        &cfg.key,
        &cfg.secret,
        &session.socket_id_text,
        channel,
        channel_data,
        auth,
    ) {
        refuse(session, &e.message(channel));
        return false;
    }
    let member = match channel_data {
        Some(data) => parse_member(data, "user_id"),
        // Signed-in connections may join without channel_data (spec §5, §13.6): identity from sign-in.
        None => match &*session.user.borrow() {
            Some(u) => Ok((
                u.id.to_string(),
                session
                    .user_info
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| "null".into()),
            )),
            None => {
                Err("Presence channels need channel_data, or a signed-in connection".to_string())
            }
        },
    };
    let (user_id, user_info) = match member {
        Ok(m) => m,
        Err(e) => {
            refuse(session, &e);
            return false;
        }
    };
    if user_id.is_empty() || user_id.chars().count() > cfg.max_presence_user_id_length {
        refuse(
            session,
            &format!(
                "Presence user_id must be 1-{} characters",
                cfg.max_presence_user_id_length
            ),
        );
        return false;
    }
    if user_info.len() > cfg.max_presence_user_info_bytes {
        refuse(
            session,
            &format!(
                "Presence user_info over {} bytes",
                cfg.max_presence_user_info_bytes
            ),
        );
        return false;
    }
    session.authorized.set(true);
    let user_rc: Rc<str> = Rc::from(user_id.as_str());
    // Recorded before the join is sent, so a disconnect meanwhile still sends the matching leave.
    session.memberships.borrow_mut().push(Membership {
        channel: Rc::from(channel),
        user_id: user_rc,
    });
    let (tx, rx) = oneshot::channel();
    let a = session.app;
    let sent = core.send_home(
        a,
        channel,
        HomeMsg::PresenceJoin {
            app: a,
            channel: Box::from(channel),
            user_id: Box::from(user_id.as_str()),
            user_info: user_info.into_boxed_str(),
            socket: session.socket_id,
            core: core.id,
            reply: tx,
        },
    );
    if sent.is_err() {
        // The home core never saw the join: nothing to undo there.
        forget_membership(session, channel);
        refuse(session, "Server busy: try subscribing again");
        return false;
    }
    match rx.await {
        Ok(JoinReply::Joined) => true,
        // The session unsubscribed or closed while joining; its leave is already on the way.
        Ok(JoinReply::Gone) => false,
        Ok(JoinReply::Full) => {
            forget_membership(session, channel);
            refuse(
                session,
                &format!(
                    "Cannot join {channel}: over {} members",
                    cfg.max_presence_members
                ),
            );
            false
        }
        Err(_) => {
            // The home core counted the join but its answer was lost: undo it there.
            if session.membership(channel).is_some() {
                forget_membership(session, channel);
                core.presence_leave(a, channel, &user_id);
            }
            refuse(session, "Server busy: try subscribing again");
            false
        }
    }
}

fn forget_membership(session: &Session, channel: &str) {
    session
        .memberships
        .borrow_mut()
        .retain(|m| &*m.channel != channel);
}

#[derive(Deserialize)]
struct MemberData<'a> {
    #[serde(borrow, default)]
    user_id: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    id: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    user_info: Option<LazyValue<'a>>,
}

/// `user_id` (or `id` for sign-in data) as a string (numbers are stringified, spec §5) and `user_info` raw.
fn parse_member(json: &str, id_field: &str) -> Result<(String, String), String> {
    if json.trim_start().as_bytes().first() != Some(&b'{') {
        return Err("channel_data must be a JSON object".into());
    }
    let m: MemberData<'_> = json::parse_str(json).map_err(|e| match e {
        JsonError::TooDeep => format!("channel_data: {e}"),
        JsonError::Invalid => "channel_data must be a JSON object".to_string(),
    })?;
    let id = if id_field == "id" { &m.id } else { &m.user_id };
    let id = match id {
        Some(v) if v.is_str() => v.as_str().unwrap_or("").to_string(),
        Some(v) if v.is_number() => v.as_raw_str().to_string(),
        _ => return Err(format!("channel_data must have a string {id_field}")),
    };
    let info = match &m.user_info {
        Some(v) => v.as_raw_str().to_string(),
        None => "null".to_string(),
    };
    Ok((id, info))
}

/// spec §8: after `subscription_succeeded`, the last event or `pusher:cache_miss`, to this subscriber only.
async fn send_cached(core: &Core, session: &Rc<Session>, channel: &str) {
    let (tx, rx) = oneshot::channel();
    let a = session.app;
    let _ = core.send_home(
        a,
        channel,
        HomeMsg::CacheGet {
            app: a,
            channel: Box::from(channel),
            reply: tx,
        },
    );
    match rx.await {
        Ok(Some(frame)) => session.send(frame),
        _ => session.send(outbound::cache_miss(channel)),
    }
}

/// spec §6, checks in order: name, app switch, channel type, subscription, rate, size.
fn client_event(core: &Core, session: &Rc<Session>, msg: &ClientMessage<'_>) {
    let cfg = &core.app(session.app).config;
    if msg.event.chars().count() > cfg.max_event_name_length {
        return refuse(
            session,
            &format!(
                "Client event name too long (over {} characters)",
                cfg.max_event_name_length
            ),
        );
    }
    if !cfg.client_events {
        return refuse(
            session,
            "To send client events, you must enable this feature in the Settings page of your dashboard.",
        );
    }
    let Some(channel) = msg.channel.as_deref() else {
        return refuse(session, "Client events need a channel");
    };
    let ty = ChannelType::of(channel);
    if !matches!(
        ty.kind,
        ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence
    ) {
        return refuse(
            session,
            "Client event rejected - only supported on private and presence channels",
        );
    }
    if !ChannelIndex::is_subscribed(session, channel) {
        return refuse(
            session,
            &format!(
                "Cannot broadcast client event (connection not subscribed to channel {channel})"
            ),
        );
    }
    if !session.allow_client_event(cfg.max_client_events_per_second) {
        session.send(outbound::error(
            Some(error::CLIENT_EVENT_RATE_LIMIT),
            "Client event rejected due to rate limit",
        ));
        return;
    }
    // Data is relayed as a string: string data byte-for-byte, anything else as its JSON text (spec §6).
    let data_token: Vec<u8> = match &msg.data {
        Some(d) if d.is_str() => d.as_raw_str().as_bytes().to_vec(),
        Some(d) => {
            let mut t = Vec::new();
            crate::json::push_json_string(&mut t, d.as_raw_str());
            t
        }
        None => b"\"{}\"".to_vec(),
    };
    let data_len = match &msg.data {
        Some(d) if d.is_str() => d.as_str().map_or(0, str::len),
        Some(d) => d.as_raw_str().len(),
        None => 2,
    };
    if data_len > cfg.max_event_payload_bytes {
        return refuse(
            session,
            &format!(
                "Client event data too large (limit {} bytes)",
                cfg.max_event_payload_bytes
            ),
        );
    }
    let user_id = if ty.kind == ChannelKind::Presence {
        session.membership(channel)
    } else {
        None
    };
    let frame = outbound::client_event(&msg.event, channel, &data_token, user_id.as_deref());
    // Never echoed to the sender (spec §6); never cached (spec §8).
    let p = Publication {
        app: session.app,
        frames: vec![(Box::from(channel), frame)],
        except: Some(session.socket_id),
    };
    if core.publish(p).is_err() {
        refuse(
            session,
            "Server busy: client event not delivered everywhere",
        );
    }
}

#[derive(Deserialize)]
struct SigninData<'a> {
    #[serde(borrow, default)]
    auth: Option<LazyValue<'a>>,
    #[serde(borrow, default)]
    user_data: Option<LazyValue<'a>>,
}

#[derive(Deserialize)]
struct UserDataFields<'a> {
    #[serde(borrow, default)]
    watchlist: Option<LazyValue<'a>>,
}

/// spec §7.1: verify `socket_id::user::user_data`, associate the user, answer, then watchlist (§7.5).
async fn signin(core: &Core, session: &Rc<Session>, msg: &ClientMessage<'_>) {
    let cfg = &core.app(session.app).config;
    let Some(text) = inbound::object_text(&msg.data) else {
        return refuse(session, "Invalid signin message: data must be an object");
    };
    let d = match json::parse_str::<SigninData<'_>>(&text) {
        Ok(d) => d,
        Err(JsonError::TooDeep) => return refuse_too_deep(session),
        Err(JsonError::Invalid) => {
            return refuse(session, "Invalid signin message: data must be an object");
        }
    };
    let auth = d.auth.as_ref().and_then(|a| a.as_str()).unwrap_or("");
    let Some(user_data) = d.user_data.as_ref().and_then(|u| u.as_str()) else {
        return refuse(
            session,
            "Invalid signin message: user_data must be a JSON string",
        );
    };
    if let Err(e) = auth::verify_user_auth(
        &cfg.key,
        &cfg.secret,
        &session.socket_id_text,
        user_data,
        auth,
    ) {
        return refuse(session, &e.to_string());
    }
    let (id, info) = match parse_member(user_data, "id") {
        Ok((id, _)) if id.is_empty() => {
            return refuse(session, "user_data.id must be a non-empty string");
        }
        Ok(m) => m,
        Err(_) => return refuse(session, "user_data must be a JSON object with a string id"),
    };
    if let Some(current) = session.user_id() {
        if *current != *id {
            return refuse(
                session,
                &format!("Already signed in as {current}: cannot sign in as {id}"),
            );
        }
        // Same id again: success again, nothing else changes.
        session.send(outbound::signin_success(user_data));
        return;
    }
    let mut watchlist: Vec<Box<str>> = json::parse_str::<UserDataFields<'_>>(user_data)
        .ok()
        .and_then(|f| f.watchlist)
        .and_then(|w| json::parse_str::<Vec<String>>(w.as_raw_str()).ok())
        .unwrap_or_default()
        .into_iter()
        .map(String::into_boxed_str)
        .collect();
    let over_limit = watchlist.len() > cfg.max_watchlist_size;
    watchlist.truncate(cfg.max_watchlist_size);

    let id: Rc<str> = Rc::from(id);
    *session.user.borrow_mut() = Some(SignedInUser {
        id: id.clone(),
        watchlist: watchlist.clone(),
    });
    *session.user_info.borrow_mut() = Some(info);
    session.authorized.set(true);
    session.send(outbound::signin_success(user_data));
    if over_limit {
        let m = format!(
            "Watchlist limit exceeded. Only the first {} user IDs are accepted.",
            cfg.max_watchlist_size
        );
        session.send(outbound::error(Some(error::WATCHLIST_LIMIT), &m));
    }
    let app = session.app;
    let _ = core.send_to(
        core.user_home(app, &id),
        CoreMsg::Home(HomeMsg::UserOnline {
            app,
            user_id: Box::from(&*id),
        }),
    );
    if watchlist.is_empty() {
        return;
    }
    // Register with every watched user's home, then send one snapshot of who is online now.
    session.watch_snapshot_pending.set(true);
    let mut pending = Vec::new();
    for (home, users) in core.group_by_user_home(app, watchlist) {
        let (tx, rx) = oneshot::channel();
        let msg = HomeMsg::Watch {
            app,
            users: users.clone(),
            core: core.id,
            watcher: session.socket_id,
            reply: tx,
        };
        let _ = core.send_to(home, CoreMsg::Home(msg));
        pending.push((users, rx));
    }
    let (mut online, mut offline) = (Vec::new(), Vec::new());
    for (users, rx) in pending {
        let states = rx.await.unwrap_or_default();
        for (u, on) in users
            .into_iter()
            .zip(states.into_iter().chain(std::iter::repeat(false)))
        {
            if on { online.push(u) } else { offline.push(u) }
        }
    }
    let on: Vec<&str> = online.iter().map(|u| &**u).collect();
    let off: Vec<&str> = offline.iter().map(|u| &**u).collect();
    session.send(outbound::watchlist_events(&on, &off));
    session.watch_snapshot_pending.set(false);
    let deferred = std::mem::take(&mut *session.deferred_watch_events.borrow_mut());
    for frame in deferred {
        session.send(frame);
    }
}
