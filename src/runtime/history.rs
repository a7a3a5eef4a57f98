//! Channel history across cores (docs/protocol.md#history): for apps that keep it, every REST and client event
//! goes to its channel's home core, which numbers it, keeps it, encodes it with its id and fans it out itself. The
//! home core is then the only source of a channel's events, in id order, which is what makes recovery exact: a
//! resubscribing client's replay is sent to its core on the same lane, behind every event the home core already
//! sent, so the client gets each event once, replayed or live, and none is missed.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::channels::history::{CursorError, HistoryLimits, NewEvent, Page, StoredEvent};
use crate::channels::publication::{Publication, Source};
use crate::config::AppConfig;
use crate::metrics::Counter;
use crate::protocol::outbound;
use crate::protocol::session::Session;
use crate::runtime::core::Core;
use crate::runtime::inbox::{InboxFull, Lane};
use crate::runtime::message::{CoreMsg, NoReply};
use crate::socket_id::SocketId;

/// A replay for a resubscribing client: its missed events as frames (with their ids), and whether they are all
/// of them.
pub struct Replay {
    pub recovered: bool,
    pub frames: Vec<Bytes>,
}

/// How a recovering subscribe ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Subscribed; `subscription_succeeded`, the replay and `relay:recovery` were sent.
    Subscribed { recovered: bool },
    /// The session left (or subscribed otherwise) meanwhile.
    Gone,
}

pub enum HistoryMsg {
    /// Publisher's core -> home: number, keep and fan out this one-channel event.
    Append(Box<Publication>),
    /// Joiner -> home: subscribe `socket` to `channel` with everything after `after` replayed first.
    Recover {
        app: AppIdx,
        channel: Box<str>,
        after: Box<str>,
        socket: SocketId,
        core: usize,
        reply: oneshot::Sender<Recovery>,
    },
    /// Home -> joiner's core: subscribe the socket, then send its success, the replay and `relay:recovery`. With
    /// a replay it travels the publish lane, behind the channel's events the home core sent before; without one
    /// (that lane was full) the cleanup lane, and the client is told it did not recover.
    Recovered {
        socket: SocketId,
        channel: Box<str>,
        replay: Option<Replay>,
        reply: oneshot::Sender<Recovery>,
    },
    /// Anyone -> home: a page of the channel's history.
    Page {
        app: AppIdx,
        channel: Box<str>,
        cursor: Option<Box<str>>,
        limit: usize,
        reply: oneshot::Sender<Result<Page, CursorError>>,
    },
}

impl HistoryMsg {
    pub fn lane(&self) -> Lane {
        match self {
            HistoryMsg::Append(_) => Lane::Publish,
            HistoryMsg::Recovered {
                replay: Some(_), ..
            } => Lane::Publish,
            HistoryMsg::Recovered { replay: None, .. } => Lane::Cleanup,
            // Behind the appends sent before it: an event published before the client came back is in the
            // replay, not after the recovery marker (control messages are taken before publishes).
            // A page read after a publish lists it too, for the same reason.
            HistoryMsg::Recover { .. } | HistoryMsg::Page { .. } => Lane::Publish,
        }
    }
}

/// Whether `p` is kept in history: REST and client events of apps that keep it.
pub fn keeps(core: &Core, p: &Publication) -> bool {
    p.source != Source::Server && core.app(p.app).config.history_enabled
}

/// Publish stage for apps with history: each channel's event goes to that channel's home to be numbered, kept
/// and fanned out. Fails if a home core's inbox is full (homes that took theirs deliver them).
pub fn route(core: &Core, p: Publication) -> Result<(), InboxFull> {
    let mut result = Ok(());
    for part in p.split_per_channel() {
        let app = part.app;
        let home = core.home_of(app, &part.frames[0].channel);
        if core
            .send_to(home, CoreMsg::History(HistoryMsg::Append(Box::new(part))))
            .is_err()
        {
            result = Err(InboxFull);
        }
    }
    result
}

fn limits(cfg: &AppConfig, cores: usize) -> HistoryLimits {
    HistoryLimits {
        max_events: cfg.history_max,
        ttl: Duration::from_secs(cfg.history_ttl_secs),
        // The app's budget is shared by the cores its channels are homed on.
        max_bytes: cfg.history_max_bytes / cores.max(1),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `{"event":"relay:recovery","channel":..,"data":"{\"recovered\":..,\"replayed\":N}"}`.
pub fn recovery_frame(channel: &str, recovered: bool, replayed: usize) -> Bytes {
    let data = format!(r#"{{"recovered":{recovered},"replayed":{replayed}}}"#);
    outbound::channel_event(
        &outbound::string_token("relay:recovery"),
        channel,
        &outbound::string_token(&data),
        None,
        None,
    )
}

/// A stored event as it went out live.
pub fn frame_of(channel: &str, e: &StoredEvent) -> Bytes {
    outbound::channel_event(
        &e.name_token,
        channel,
        &e.data_token,
        e.user_id.as_deref(),
        Some(&e.id.to_string()),
    )
}

/// Home side: the replay after `after` for a client resubscribing to `channel`.
pub fn replay(core: &Core, app: AppIdx, channel: &str, after: &str) -> Replay {
    let r = core
        .history
        .borrow_mut()
        .replay(app, channel, after, Instant::now());
    Replay {
        recovered: r.recovered,
        frames: r.events.iter().map(|e| frame_of(channel, e)).collect(),
    }
}

// -- the joiner's side ---------------------------------------------------------------------------------------

/// Subscribes `session` to `channel` with the events after `after` replayed first (non-presence channels; a
/// presence join carries its recovery in the join).
pub async fn recover(
    core: &Core,
    session: &Rc<Session>,
    channel: &str,
    after: &str,
) -> Result<Recovery, NoReply> {
    let app = session.app;
    let (channel_name, after) = (Box::from(channel), Box::from(after));
    let socket = session.socket_id;
    core.ask(core.home_of(app, channel), |reply| {
        CoreMsg::History(HistoryMsg::Recover {
            app,
            channel: channel_name,
            after,
            socket,
            core: core.id,
            reply,
        })
    })
    .await
}

/// `GET /channels/{name}/events`: a page from the channel's home.
pub async fn page(
    core: &Core,
    app: AppIdx,
    channel: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Result<Page, CursorError>, NoReply> {
    let (channel_name, cursor) = (Box::from(channel), cursor.map(Box::from));
    core.ask(core.home_of(app, channel), |reply| {
        CoreMsg::History(HistoryMsg::Page {
            app,
            channel: channel_name,
            cursor,
            limit,
            reply,
        })
    })
    .await
}

// -- the home side (and the joiner's core) -------------------------------------------------------------------

pub fn on_message(core: &Core, msg: HistoryMsg) {
    match msg {
        HistoryMsg::Append(p) => {
            let mut p = *p;
            let cfg = &core.app(p.app).config;
            let event = NewEvent {
                name_token: p.name_token.clone(),
                data_token: p.data_token.clone(),
                user_id: p.user_id.clone(),
                published_at_ms: unix_ms(),
            };
            let id = {
                let mut store = core.history.borrow_mut();
                let evicted = store.evicted_windows;
                let id = store.append(
                    p.app,
                    &p.frames[0].channel,
                    limits(cfg, core.shared.cores()),
                    event,
                    Instant::now(),
                );
                let dropped = store.evicted_windows - evicted;
                if dropped > 0 {
                    core.metrics().add(Counter::HistoryEvictions, dropped);
                }
                id
            };
            p.encode(Some(&id.to_string()));
            // A full inbox elsewhere is counted with the overflows; the event is kept either way.
            let _ = core.fan_out(p);
        }
        HistoryMsg::Recover {
            app,
            channel,
            after,
            socket,
            core: joiner,
            reply,
        } => {
            let replay = replay(core, app, &channel, &after);
            let msg = HistoryMsg::Recovered {
                socket,
                channel,
                replay: Some(replay),
                reply,
            };
            // The joiner's publish lane is full: subscribe it anyway, telling the client it did not recover.
            if let Err(CoreMsg::History(HistoryMsg::Recovered {
                socket,
                channel,
                reply,
                ..
            })) = core.offer_to(joiner, CoreMsg::History(msg))
            {
                let fallback = HistoryMsg::Recovered {
                    socket,
                    channel,
                    replay: None,
                    reply,
                };
                let _ = core.send_to(joiner, CoreMsg::History(fallback));
            }
        }
        HistoryMsg::Recovered {
            socket,
            channel,
            replay,
            reply,
        } => {
            let outcome = match core.session_by_socket(socket) {
                Some(s) if !s.is_closing() && !s.is_subscribed(&channel) => {
                    core.subscribe_locally(&s, &channel);
                    s.send(outbound::subscription_succeeded(&channel));
                    let (recovered, frames) = match replay {
                        Some(r) => (r.recovered, r.frames),
                        None => (false, Vec::new()),
                    };
                    let replayed = frames.len();
                    for f in frames {
                        s.send(f);
                    }
                    s.send(recovery_frame(&channel, recovered, replayed));
                    Recovery::Subscribed { recovered }
                }
                _ => Recovery::Gone,
            };
            let _ = reply.send(outcome);
        }
        HistoryMsg::Page {
            app,
            channel,
            cursor,
            limit,
            reply,
        } => {
            let page = core.history.borrow_mut().page(
                app,
                &channel,
                cursor.as_deref(),
                limit,
                Instant::now(),
            );
            let _ = reply.send(page);
        }
    }
}
