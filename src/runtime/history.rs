//! Channel history across cores (docs/protocol.md#history): for apps that keep it, every REST and client event
//! goes to its channel's home core, which numbers it, keeps it, encodes it with its id and fans it out itself. The
//! home core is then the only source of a channel's events, in id order, which is what makes recovery exact: a
//! resubscribing client's replay is sent to its core on the same lane, behind every event the home core already
//! sent, so the client gets each event once, replayed or live, and none is missed.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::clock::unix_ms;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::channels::history::{CursorError, EventId, HistoryLimits, NewEvent, Page, StoredEvent};
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
    /// Bridge -> home: the channel's window in Redis, asked for by [`Core::wait_for_window`]; it travels the
    /// publish lane behind the live events that came through Redis before it.
    Window(Box<ClusterWindow>),
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
            HistoryMsg::Append(_) | HistoryMsg::Window(_) => Lane::Publish,
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

/// A channel's history window as Redis keeps it, for recovering clients on this node.
pub struct ClusterWindow {
    pub app: AppIdx,
    pub channel: Box<str>,
    pub token: u64,
    /// `None`: Redis keeps no window for the channel.
    pub epoch: Option<u64>,
    pub last_seq: u64,
    pub events: Vec<(EventId, NewEvent)>,
}

/// Recoveries waiting at the home core for a channel's window from Redis.
pub struct WindowWait {
    token: u64,
    waiting: Vec<Waiting>,
}

struct Waiting {
    after: Box<str>,
    socket: SocketId,
    joiner: usize,
    reply: oneshot::Sender<Recovery>,
}

/// How long a home core waits for a window from Redis before it answers from its own (the client is then told
/// whether that recovered it).
pub const WINDOW_WAIT: Duration = Duration::from_secs(2);

/// Where an event of an app with history is numbered.
#[derive(Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not kept (a server event, an app without history, or a cluster node cut off from Redis).
    None,
    /// The channel's home core numbers it (one node), or keeps it with the id Redis gave it (a cluster).
    Home,
    /// Redis numbers it and publishes it to every listening node, this one included (a cluster).
    Redis,
}

/// Where `p` is numbered: REST and client events of apps that keep history. In a cluster Redis numbers them, so
/// every node has the same ids; while Redis is away they are delivered without an id and not kept.
pub fn stage(core: &Core, p: &Publication) -> Stage {
    if !keeps(core, p) {
        return Stage::None;
    }
    match core.shared.cluster.get() {
        None => Stage::Home,
        Some(_) if p.numbered.is_some() => Stage::Home,
        Some(_) if p.remote => Stage::None,
        Some(c) if c.connected.load(std::sync::atomic::Ordering::Acquire) => Stage::Redis,
        Some(_) => Stage::None,
    }
}

/// Whether `p` is kept in history: REST and client events of apps that keep it.
pub fn keeps(core: &Core, p: &Publication) -> bool {
    p.source != Source::Server && core.with_app(p.app, |a| a.config.history_enabled)
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

/// Sends the joiner its replay (subscribing it there), on the publish lane behind the channel's events.
fn answer(core: &Core, channel: &str, w: Waiting, replay: Replay) {
    let msg = HistoryMsg::Recovered {
        socket: w.socket,
        channel: Box::from(channel),
        replay: Some(replay),
        reply: w.reply,
    };
    // The joiner's publish lane is full: subscribe it anyway, telling the client it did not recover.
    if let Err(CoreMsg::History(HistoryMsg::Recovered {
        socket,
        channel,
        reply,
        ..
    })) = core.offer_to(w.joiner, CoreMsg::History(msg))
    {
        let fallback = HistoryMsg::Recovered {
            socket,
            channel,
            replay: None,
            reply,
        };
        let _ = core.send_to(w.joiner, CoreMsg::History(fallback));
    }
}

/// Answers every recovery that waited for the channel's window, from this node's window as it is now.
pub fn answer_all(core: &Core, app: AppIdx, channel: &str, wait: WindowWait) {
    for w in wait.waiting {
        let r = replay(core, app, channel, &w.after);
        answer(core, channel, w, r);
    }
}

impl Core {
    /// Holds a recovery until the channel's window comes from Redis (one request per channel however many
    /// wait), at most [`WINDOW_WAIT`]. Hands it back when there is no cluster or Redis is away.
    fn wait_for_window(&self, app: AppIdx, channel: &str, w: Waiting) -> Result<(), Waiting> {
        let Some(cluster) = self.shared.cluster.get() else {
            return Err(w);
        };
        let Some(me) = self.rc() else {
            return Err(w);
        };
        if !cluster.connected.load(std::sync::atomic::Ordering::Acquire) {
            return Err(w);
        }
        let key = (app, Box::from(channel));
        let mut waits = self.window_waits.borrow_mut();
        if let Some(wait) = waits.get_mut(&key) {
            wait.waiting.push(w);
            return Ok(());
        }
        let token = self.next_token();
        waits.insert(
            key,
            WindowWait {
                token,
                waiting: vec![w],
            },
        );
        drop(waits);
        cluster.window(&self.app(app).config.id, channel, token);
        let channel = Box::<str>::from(channel);
        monoio::spawn(async move {
            monoio::time::sleep(WINDOW_WAIT).await;
            if let Some(wait) = me.take_window_wait(app, &channel, token) {
                answer_all(&me, app, &channel, wait);
            }
        });
        Ok(())
    }

    /// The recoveries waiting for a channel's window, if they wait for `token` (a window that comes after they
    /// gave up is no one's).
    fn take_window_wait(&self, app: AppIdx, channel: &str, token: u64) -> Option<WindowWait> {
        let mut waits = self.window_waits.borrow_mut();
        let key = (app, Box::from(channel));
        if waits.get(&key)?.token != token {
            return None;
        }
        waits.remove(&key)
    }
}

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
                let (limits, now) = (limits(cfg, core.shared.cores()), Instant::now());
                let channel = &p.frames[0].channel;
                let id = match p.numbered {
                    Some(n) => {
                        let event = NewEvent {
                            published_at_ms: n.published_at_ms,
                            ..event
                        };
                        if !store.append_numbered(p.app, channel, limits, n.id, event, now) {
                            // Already delivered here (a replayed publish after a lost reply).
                            return;
                        }
                        n.id
                    }
                    None => store.append(p.app, channel, limits, event, now),
                };
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
            let waiting = Waiting {
                after,
                socket,
                joiner,
                reply,
            };
            // Not in this node's window (the client comes from another node, or from before this node
            // listened): Redis may have it.
            if !replay.recovered && EventId::parse(&waiting.after).is_some() {
                if let Err(waiting) = core.wait_for_window(app, &channel, waiting) {
                    answer(core, &channel, waiting, replay);
                }
            } else {
                answer(core, &channel, waiting, replay);
            }
        }
        HistoryMsg::Window(w) => {
            let Some(wait) = core.take_window_wait(w.app, &w.channel, w.token) else {
                return;
            };
            if let Some(epoch) = w.epoch {
                let cfg = &core.app(w.app).config;
                core.history.borrow_mut().restore(
                    w.app,
                    &w.channel,
                    limits(cfg, core.shared.cores()),
                    (epoch, w.last_seq),
                    w.events,
                    (Instant::now(), unix_ms()),
                );
            }
            answer_all(core, w.app, &w.channel, wait);
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
