//! The bridge between this node's cores and Redis: two threads with blocking connections of the `redis` crate,
//! never on a core (docs/protocol.md#cluster).
//!
//! - The publisher takes the cores' publications from a bounded queue and PUBLISHes them, pipelined, to their
//!   channels. While Redis is unreachable it keeps at most `outage_buffer` of them (the oldest go first, counted)
//!   and sends them when it is back.
//! - The subscriber listens to the Redis channels of the Pusher channels this node has subscribers for (interest:
//!   set by each channel's home core when the channel becomes occupied or vacant on this node), hands what other
//!   nodes publish to the cores, and re-subscribes everything after a reconnect. A core that takes the first
//!   subscriber of a channel first waits for [`Cluster::ensure`]: the Redis subscription is confirmed before the
//!   client hears `subscription_succeeded`, so no publish of another node falls in between.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use crossbeam_queue::ArrayQueue;
use futures_channel::oneshot;

use crate::cluster::commands::{
    ClusterAnswer, ClusterQuery, Command, Commands, PresenceJoined, heartbeat,
};
use crate::cluster::link::{self, IO_TIMEOUT, Subscriber, backoff};
use crate::cluster::wire::{
    HistoryWindow, MemberRecord, NumberedPublish, Record, RemotePublish, control_channel,
    redis_channel,
};
use crate::config::ClusterConfig;

/// How long the subscriber waits for a message before it looks at new interest.
const POLL: Duration = Duration::from_millis(2);
/// Channels subscribed per SUBSCRIBE command after a reconnect.
const SUBSCRIBE_CHUNK: usize = 1000;
/// A channel confirmed for a first subscriber that never came (the connection closed first) is left after this.
const ENSURE_GRACE: Duration = Duration::from_secs(10);
/// Running totals (for `/stats` and, later, the metrics exporter).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Publications sent to Redis.
    pub published: AtomicU64,
    /// Publications of other nodes handed to the cores.
    pub received: AtomicU64,
    /// Publications lost: the outage buffer overflowed.
    pub dropped: AtomicU64,
    /// Connections to Redis made again after one failed.
    pub reconnects: AtomicU64,
}

enum Op {
    /// This node has (or no longer has) subscribers of the channel.
    Interest { key: String, held: bool },
    /// Answer once the channel is subscribed in Redis (or at once while Redis is unreachable).
    Ensure {
        key: String,
        reply: oneshot::Sender<()>,
    },
}

/// What the bridge hands the cores (the server routes each to the channel's home core).
pub enum Delivery {
    /// Another node's publication.
    Publish(RemotePublish),
    /// A publication of an app with history, numbered by Redis (this node's own too).
    Numbered(NumberedPublish),
    /// The channel's history in Redis, which this node asked for to recover a client.
    Window(HistoryWindow),
    /// A member joined (first in the cluster) or left (last) on another node, or a dead node's member was
    /// removed: this node's subscribers are told.
    Member(MemberRecord),
    /// Another node's `terminate_connections`: close this node's connections of the user.
    Terminate { app_id: String, user_id: String },
    /// A user came online in the cluster or went offline (on another node, or a dead node's cleanup): this
    /// node's watchers are told.
    UserOnline {
        app_id: String,
        user_id: String,
        online: bool,
    },
    /// A channel's subscription count in the cluster changed: this node's subscribers get it; `report`: the
    /// change came through this node, so the `subscription_count` webhook is this node's to send.
    Count {
        app_id: String,
        channel: String,
        total: u64,
        report: bool,
    },
    /// This node removed a dead node's signed-in user, offline now: the `user_offline` webhook is this node's.
    UserGone { app_id: String, user_id: String },
    /// This node removed a dead node's member: the `member_removed` webhook is this node's to send.
    MemberGone {
        app_id: String,
        channel: String,
        user_id: String,
    },
    /// The cluster's occupancy of a channel changed through this node (or its cleanup of a dead node): the
    /// `channel_occupied` / `channel_vacated` webhook is this node's to send.
    Occupancy {
        app_id: String,
        channel: String,
        occupied: bool,
    },
}

/// A publication on its way to Redis.
pub(crate) struct Outgoing {
    /// The Redis channel.
    pub key: String,
    pub record: Vec<u8>,
    /// For an app with history: Redis numbers and keeps it before publishing it.
    pub keep: Option<Keep>,
}

/// How Redis keeps a channel's history (the app's `history_max` and `history_ttl`).
#[derive(Debug, Clone)]
pub struct Keep {
    pub app_id: String,
    pub channel: String,
    pub max_events: usize,
    pub ttl: Duration,
    pub published_at_ms: u64,
}

impl Delivery {
    /// The app it concerns (app indices differ between nodes; ids do not).
    pub fn app_id(&self) -> &str {
        match self {
            Delivery::Publish(p) => &p.app_id,
            Delivery::Numbered(n) => &n.publish.app_id,
            Delivery::Window(w) => &w.app_id,
            Delivery::Member(m) => &m.app_id,
            Delivery::Terminate { app_id, .. }
            | Delivery::UserOnline { app_id, .. }
            | Delivery::Count { app_id, .. }
            | Delivery::UserGone { app_id, .. }
            | Delivery::MemberGone { app_id, .. }
            | Delivery::Occupancy { app_id, .. } => app_id,
        }
    }
}

pub type DeliverFn = Box<dyn Fn(Delivery) + Send + Sync>;

/// The cores' side of the bridge.
pub struct Cluster {
    pub node_id: String,
    /// The prefix of keys and Redis channels, as a hash tag (see `link`).
    pub(crate) prefix: String,
    /// The Redis is a Redis Cluster: pub/sub is sharded (SPUBLISH, SSUBSCRIBE).
    pub(crate) sharded: AtomicBool,
    outgoing: ArrayQueue<Outgoing>,
    publisher: OnceLock<Thread>,
    ops: Sender<Op>,
    commands: Sender<Command>,
    pub(crate) deliver: DeliverFn,
    /// Whether the subscriber's connection is up.
    pub connected: AtomicBool,
    /// Set by the heartbeat when this node's key had lapsed: the command thread writes its state again.
    pub(crate) resync: AtomicBool,
    /// This node's open connections, read by the heartbeat (set by the server).
    pub(crate) local_connections: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The ids of the apps served now (a reload adds and removes apps), for the cluster's totals; read once a
    /// second by the command thread.
    pub(crate) app_ids: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// The cluster's open connections and occupied channels, refreshed every second by the command thread, and
    /// when (ms since the Unix epoch; 0: never).
    pub cluster_connections: AtomicU64,
    pub cluster_channels: AtomicU64,
    pub totals_at_ms: AtomicU64,
    pub stats: ClusterStats,
}

impl Cluster {
    /// Publications queued for Redis and not sent yet: how far the bridge lags behind the cores.
    pub fn backlog(&self) -> usize {
        self.outgoing.len()
    }

    /// Starts the bridge threads; `deliver` gets every publication of another node this node listens to.
    pub fn start(
        config: &ClusterConfig,
        app_ids: Box<dyn Fn() -> Vec<String> + Send + Sync>,
        local_connections: Box<dyn Fn() -> u64 + Send + Sync>,
        deliver: DeliverFn,
    ) -> std::io::Result<Arc<Cluster>> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let (ops_tx, ops_rx) = unbounded();
        let (commands_tx, commands_rx) = unbounded();
        let cluster = Arc::new(Cluster {
            node_id: config.node_id.clone(),
            prefix: link::tagged(&config.prefix),
            sharded: AtomicBool::new(false),
            outgoing: ArrayQueue::new(config.outage_buffer.max(1)),
            publisher: OnceLock::new(),
            ops: ops_tx,
            commands: commands_tx,
            deliver,
            connected: AtomicBool::new(false),
            resync: AtomicBool::new(false),
            local_connections,
            app_ids,
            cluster_connections: AtomicU64::new(0),
            cluster_channels: AtomicU64::new(0),
            totals_at_ms: AtomicU64::new(0),
            stats: ClusterStats::default(),
        });
        let c = cluster.clone();
        let pc = client.clone();
        let timeout = config.node_timeout;
        let publisher = std::thread::Builder::new()
            .name("relay-cluster-cmd".into())
            .spawn(move || Commands::new(&c, pc, commands_rx).run())?;
        let _ = cluster.publisher.set(publisher.thread().clone());
        let c = cluster.clone();
        let hc = client.clone();
        std::thread::Builder::new()
            .name("relay-cluster-beat".into())
            .spawn(move || heartbeat(&c, hc, timeout))?;
        let c = cluster.clone();
        std::thread::Builder::new()
            .name("relay-cluster-sub".into())
            .spawn(move || subscribe_loop(&c, &client, ops_rx))?;
        Ok(cluster)
    }

    /// Sends a publication to the nodes listening to its channel; never waits (a full buffer drops the oldest).
    /// With `cache_ttl` (a REST event on a cache channel) the record is also kept in Redis for that long, for
    /// nodes that had no subscriber when it was published. With `keep` (an app with history) Redis numbers it,
    /// keeps it in the channel's window and publishes it to every listening node, this one included.
    pub fn publish(&self, p: &RemotePublish, cache_ttl: Option<Duration>, keep: Option<Keep>) {
        let record = p.encode();
        if let Some(ttl) = cache_ttl {
            self.command(Command::CacheStore {
                app_id: p.app_id.clone(),
                channel: p.channel.clone(),
                record: record.clone(),
                ttl,
            });
        }
        let key = redis_channel(&self.prefix, &p.app_id, &p.channel);
        self.enqueue(Outgoing { key, record, keep });
    }

    /// Queues a publication for the command thread; never waits (a full buffer drops the oldest, counted).
    fn enqueue(&self, o: Outgoing) {
        if self.outgoing.force_push(o).is_some() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.wake_commands();
    }

    /// This node's first signed-in connection of a user opened (`online`) or its last closed; resolves to
    /// whether it was the cluster's first or last (`None`: Redis unreachable).
    pub fn online(
        &self,
        app_id: &str,
        user_id: &str,
        online: bool,
    ) -> oneshot::Receiver<Option<bool>> {
        self.ask(|reply| Command::Online {
            app_id: app_id.into(),
            user_id: user_id.into(),
            online,
            reply,
        })
    }

    /// A connection of an app with a connection quota opens; resolves to whether the cluster has room
    /// (`None`: Redis unreachable).
    pub fn conn_admit(&self, app_id: &str, max: u64) -> oneshot::Receiver<Option<bool>> {
        self.ask(|reply| Command::ConnAdmit {
            app_id: app_id.into(),
            max,
            reply,
        })
    }

    /// A connection [`Cluster::conn_admit`] let in closed.
    pub fn conn_release(&self, app_id: &str) {
        self.command(Command::ConnRelease {
            app_id: app_id.into(),
        });
    }

    /// This node's count of a channel's subscriptions is now `count` (sent on from its home core).
    pub fn count(&self, app_id: &str, channel: &str, count: u64) {
        self.command(Command::Count {
            app_id: app_id.into(),
            channel: channel.into(),
            count,
        });
    }

    /// Tells every other node to close a user's connections (`terminate_connections`).
    pub fn terminate(&self, app_id: &str, user_id: &str) {
        let record = Record::terminate(&self.node_id, app_id, user_id);
        self.enqueue(Outgoing {
            key: control_channel(&self.prefix),
            record,
            keep: None,
        });
    }

    /// Adds a connection of a user to a presence roster in Redis (see `commands.rs`).
    pub fn presence_join(
        &self,
        app_id: &str,
        channel: &str,
        user_id: &str,
        user_info: &str,
        max: usize,
    ) -> oneshot::Receiver<Option<PresenceJoined>> {
        self.ask(|reply| Command::Join {
            app_id: app_id.into(),
            channel: channel.into(),
            user_id: user_id.into(),
            user_info: user_info.into(),
            max,
            reply,
        })
    }

    /// This node's last connection of a user left a presence channel; `Some(true)`: the cluster's last.
    pub fn presence_leave(
        &self,
        app_id: &str,
        channel: &str,
        user_id: &str,
    ) -> oneshot::Receiver<Option<bool>> {
        self.ask(|reply| Command::Leave {
            app_id: app_id.into(),
            channel: channel.into(),
            user_id: user_id.into(),
            reply,
        })
    }

    /// Asks Redis to send this node the channel's history window (as a [`Delivery::Window`] with `token`), on the
    /// channel's Redis channel so it comes in order with the live events; nothing comes while Redis is away.
    pub fn window(&self, app_id: &str, channel: &str, token: u64) {
        self.command(Command::Window {
            app_id: app_id.into(),
            channel: channel.into(),
            token,
        });
    }

    /// Asks Redis about the cluster's state; `None` when it is unreachable.
    pub fn query(&self, query: ClusterQuery) -> oneshot::Receiver<Option<ClusterAnswer>> {
        self.ask(|reply| Command::Query { query, reply })
    }

    fn command(&self, c: Command) {
        let _ = self.commands.send(c);
        self.wake_commands();
    }

    /// A command whose answer comes back on a oneshot.
    fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> oneshot::Receiver<T> {
        let (reply, rx) = oneshot::channel();
        self.command(make(reply));
        rx
    }

    pub(crate) fn wake_commands(&self) {
        if let Some(t) = self.publisher.get() {
            t.unpark();
        }
    }

    pub(crate) fn buffer_cap(&self) -> usize {
        self.outgoing.capacity()
    }

    /// Moves queued publications behind the unsent ones, keeping at most the buffer's capacity (the oldest are
    /// dropped and counted).
    pub(crate) fn hold(&self, pending: &mut VecDeque<Outgoing>) {
        while let Some(p) = self.outgoing.pop() {
            pending.push_back(p);
        }
        while pending.len() > self.outgoing.capacity() {
            pending.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// This node got its first subscriber of the channel (`held`), or lost its last.
    pub fn interest(&self, app_id: &str, channel: &str, held: bool) {
        let key = redis_channel(&self.prefix, app_id, channel);
        let _ = self.ops.send(Op::Interest { key, held });
        self.command(Command::Occupancy {
            app_id: app_id.into(),
            channel: channel.into(),
            held,
        });
    }

    /// Resolves once this node listens to the channel in Redis.
    pub fn ensure(&self, app_id: &str, channel: &str) -> oneshot::Receiver<()> {
        let (reply, rx) = oneshot::channel();
        let key = redis_channel(&self.prefix, app_id, channel);
        let _ = self.ops.send(Op::Ensure { key, reply });
        rx
    }
}

/// What the subscriber knows of one Redis channel.
#[derive(Default)]
struct Interest {
    /// The channel's home core says this node has subscribers.
    held: bool,
    /// Confirmed for a first subscriber at this time, whose `held` may still be on its way.
    ensured: Option<Instant>,
}

impl Interest {
    fn wanted(&self, now: Instant) -> bool {
        self.held
            || self
                .ensured
                .is_some_and(|t| now.duration_since(t) < ENSURE_GRACE)
    }
}

fn subscribe_loop(cluster: &Cluster, client: &redis::Client, ops: Receiver<Op>) {
    let mut wanted: HashMap<String, Interest> = HashMap::new();
    let mut failures = 0u32;
    loop {
        let link = match link::connect(client, &cluster.prefix, true) {
            Ok(l) => l,
            Err(e) => {
                if failures == 0 {
                    crate::warn!(
                        "cluster: cannot reach Redis ({e}); serving local clients, retrying with backoff"
                    );
                }
                failures += 1;
                // Interest keeps changing while Redis is away; first subscribers are not held up.
                apply_offline(&ops, &mut wanted);
                std::thread::sleep(backoff(failures));
                continue;
            }
        };
        cluster.sharded.store(link.sharded, Ordering::Release);
        let mut pubsub = Subscriber::new(link);
        let resubscribed = resubscribe(&mut pubsub, &wanted, &control_channel(&cluster.prefix));
        if let Err(e) = resubscribed.and_then(|()| pubsub.set_read_timeout(Some(POLL))) {
            crate::warn!("cluster: cannot subscribe in Redis ({e}); reconnecting");
            failures += 1;
            drop(pubsub);
            apply_offline(&ops, &mut wanted);
            std::thread::sleep(backoff(failures));
            continue;
        }
        if failures > 0 {
            crate::info!(
                "cluster: reconnected to Redis, listening to {} channels again",
                wanted.len()
            );
            cluster.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        failures = 0;
        cluster.connected.store(true, Ordering::Release);
        let mut last_sweep = Instant::now();
        let result: redis::RedisResult<()> = loop {
            if let Err(e) = apply(&ops, &mut wanted, &mut pubsub) {
                break Err(e);
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= Duration::from_secs(1) {
                last_sweep = now;
                if let Err(e) = sweep(&mut wanted, &mut pubsub, now) {
                    break Err(e);
                }
            }
            match pubsub.next_message() {
                Ok(msg) => {
                    let Some(record) = Record::decode(&msg) else {
                        crate::debug!("cluster: a record that does not decode was dropped");
                        continue;
                    };
                    // A node ignores its own records, except numbered ones (delivered here only once numbered)
                    // and windows (only for the node that asked).
                    let own = record.origin() == cluster.node_id;
                    let deliverable = match record {
                        Record::Numbered(_) => true,
                        Record::Window(_) => own,
                        _ => !own,
                    };
                    if !deliverable {
                        continue;
                    }
                    cluster.stats.received.fetch_add(1, Ordering::Relaxed);
                    (cluster.deliver)(match record {
                        Record::Publish(p) => Delivery::Publish(p),
                        Record::Numbered(n) => Delivery::Numbered(n),
                        Record::Window(w) => Delivery::Window(w),
                        Record::Member(m) => Delivery::Member(m),
                        Record::Terminate {
                            app_id, user_id, ..
                        } => Delivery::Terminate { app_id, user_id },
                        Record::Count {
                            app_id,
                            channel,
                            total,
                            ..
                        } => Delivery::Count {
                            app_id,
                            channel,
                            total,
                            report: false,
                        },
                        Record::Online {
                            app_id,
                            user_id,
                            online,
                            ..
                        } => Delivery::UserOnline {
                            app_id,
                            user_id,
                            online,
                        },
                    });
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => break Err(e),
            }
        };
        cluster.connected.store(false, Ordering::Release);
        if let Err(e) = result {
            crate::warn!("cluster: lost the Redis subscription connection ({e}); reconnecting");
        }
        failures += 1;
    }
}

fn resubscribe(
    pubsub: &mut Subscriber,
    wanted: &HashMap<String, Interest>,
    control: &str,
) -> redis::RedisResult<()> {
    pubsub.subscribe(&[control])?;
    let keys: Vec<&String> = wanted.keys().collect();
    for chunk in keys.chunks(SUBSCRIBE_CHUNK) {
        pubsub.subscribe(chunk)?;
    }
    Ok(())
}

/// Takes the pending interest changes: subscribes what became wanted, unsubscribes what no longer is, answers
/// the ensures once their SUBSCRIBE is confirmed.
fn apply(
    ops: &Receiver<Op>,
    wanted: &mut HashMap<String, Interest>,
    pubsub: &mut Subscriber,
) -> redis::RedisResult<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let now = Instant::now();
    let mut replies = Vec::new();
    // Each key's state before the batch; what Redis is told is the difference to its state after the batch.
    let mut before: HashMap<String, bool> = HashMap::new();
    for op in ops.try_iter().take(10_000) {
        let key = match &op {
            Op::Interest { key, .. } | Op::Ensure { key, .. } => key.clone(),
        };
        let entry = wanted.entry(key.clone()).or_default();
        before.entry(key).or_insert(entry.wanted(now));
        match op {
            Op::Interest { held, .. } => {
                entry.held = held;
                // The hold the ensure was waiting for has come: the channel now lives as long as the hold. A
                // vacated hold does not clear it: it may be an older one, still on its way.
                if held {
                    entry.ensured = None;
                }
            }
            Op::Ensure { reply, .. } => {
                replies.push(reply);
                entry.ensured = Some(now);
            }
        }
    }
    let mut subscribe = Vec::new();
    let mut unsubscribe = Vec::new();
    for (key, was) in before {
        let is = wanted.get(&key).is_some_and(|e| e.wanted(now));
        if !is {
            wanted.remove(&key);
        }
        match (was, is) {
            (false, true) => subscribe.push(key),
            (true, false) => unsubscribe.push(key),
            _ => {}
        }
    }
    confirm(pubsub, &subscribe, &unsubscribe)?;
    for r in replies {
        let _ = r.send(());
    }
    Ok(())
}

/// SUBSCRIBE and UNSUBSCRIBE wait for Redis's confirmation with the connection's full deadline, not the short
/// poll of `get_message`.
fn confirm(
    pubsub: &mut Subscriber,
    subscribe: &[String],
    unsubscribe: &[String],
) -> redis::RedisResult<()> {
    if subscribe.is_empty() && unsubscribe.is_empty() {
        return Ok(());
    }
    pubsub.set_read_timeout(Some(IO_TIMEOUT))?;
    if !subscribe.is_empty() {
        pubsub.subscribe(subscribe)?;
    }
    if !unsubscribe.is_empty() {
        pubsub.unsubscribe(unsubscribe)?;
    }
    pubsub.set_read_timeout(Some(POLL))
}

/// [`apply`] while Redis is unreachable: the interest is remembered for the resubscribe, ensures are answered.
fn apply_offline(ops: &Receiver<Op>, wanted: &mut HashMap<String, Interest>) {
    let now = Instant::now();
    for op in ops.try_iter() {
        match op {
            Op::Interest { key, held } => {
                let entry = wanted.entry(key.clone()).or_default();
                entry.held = held;
                if !entry.wanted(now) {
                    wanted.remove(&key);
                }
            }
            Op::Ensure { reply, .. } => {
                let _ = reply.send(());
            }
        }
    }
}

/// Leaves the channels confirmed for a first subscriber that never arrived.
fn sweep(
    wanted: &mut HashMap<String, Interest>,
    pubsub: &mut Subscriber,
    now: Instant,
) -> redis::RedisResult<()> {
    let stale: Vec<String> = wanted
        .iter()
        .filter(|(_, i)| !i.wanted(now))
        .map(|(k, _)| k.clone())
        .collect();
    for k in &stale {
        wanted.remove(k);
    }
    confirm(pubsub, &[], &stale)
}
