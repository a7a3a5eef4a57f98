//! The bridge's command thread: one Redis connection that sends this node's publications, keeps the cluster's
//! presence rosters, beats this node's heart and cleans up after dead nodes (docs/protocol.md#cluster).
//!
//! Presence in Redis, per app and channel: `…:p:{channel}:info` (user -> user_info, the first connection's) and
//! `…:p:{channel}:nodes` (user -> number of nodes with a connection of that user), plus each node's own set of
//! the (app, channel, user) it contributes (`{prefix}:node:{id}:members`). Joins and leaves are Lua scripts, so a
//! user's first node and last node are decided atomically, and they publish the member record that tells the
//! other nodes. The node set makes every step idempotent: after a reconnect the node replays what it has
//! (`mirror`), and when a node stops beating (`{prefix}:node:{id}:alive` expires) one survivor takes a lock,
//! removes that node's members and tells everyone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use futures_channel::oneshot;

use crate::cluster::bridge::{Cluster, Delivery, Outgoing};
use crate::cluster::link::{self, RECONNECT_MIN, backoff};
use crate::cluster::wire::{MemberRecord, Record, control_channel, redis_channel};
use crate::json::push_json_string_into;

/// Publications sent in one pipeline.
const PUBLISH_BATCH: usize = 512;
/// After an outage, publications held meanwhile wait this long before they are sent, so the other nodes (whose
/// reconnect backoff is at most [`link::RECONNECT_MAX`]) listen again when they arrive.
const RESUBSCRIBE_GRACE: Duration = Duration::from_millis(5500);
/// How often this node renews its heartbeat and looks for dead nodes.
const BEAT: Duration = Duration::from_secs(1);

/// What a presence join found in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceJoined {
    /// This user's first connection in the whole cluster: the joining node sends `member_added`.
    pub first: bool,
    /// The channel already has its maximum of distinct users in the cluster.
    pub full: bool,
    /// Every member in the cluster: (user id, user_info as raw JSON).
    pub roster: Vec<(String, String)>,
}

/// A question about the cluster's state, answered from Redis (`None` while it is unreachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterQuery {
    /// The channels of an app occupied on some node, whose names start with `prefix`.
    Channels { app_id: String, prefix: String },
    /// Whether a channel is occupied on some node.
    Occupied { app_id: String, channel: String },
    /// The distinct users of a presence channel, cluster-wide.
    Users { app_id: String, channel: String },
    /// Which of these users are online on some node.
    Online { app_id: String, users: Vec<String> },
    /// A channel's subscriptions on every node.
    SubscriptionCount { app_id: String, channel: String },
    /// Takes `events` from the app's publish rate of the current second (Unix time), if they fit under `max`.
    Rate {
        app_id: String,
        events: u32,
        max: u32,
    },
    /// A cache channel's last event (docs/protocol.md#cache-channels); on a miss, whether it is the first miss
    /// of the channel in the cluster within `miss_window` (for one `cache_miss` webhook).
    Cache {
        app_id: String,
        channel: String,
        miss_window: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAnswer {
    Names(Vec<String>),
    Yes(bool),
    Flags(Vec<bool>),
    Count(u64),
    /// The cached event (its [`RemotePublish`](crate::cluster::RemotePublish) record) and its time left.
    Cached(Vec<u8>, Duration),
    /// No cached event; `true` for the first miss within the window.
    Missed(bool),
}

pub enum Command {
    /// A connection of an app with a connection quota opens: `Some(false)` when the cluster is at `max`
    /// (`None`: Redis unreachable, this node's quota alone decides).
    ConnAdmit {
        app_id: String,
        max: u64,
        reply: oneshot::Sender<Option<bool>>,
    },
    /// A connection admitted by [`Command::ConnAdmit`] closed.
    ConnRelease { app_id: String },
    /// A REST event on a cache channel: keep it as the channel's last event for `ttl`, for every node.
    CacheStore {
        app_id: String,
        channel: String,
        record: Vec<u8>,
        ttl: Duration,
    },
    /// This node's count of a channel's subscriptions changed (from the channel's home core).
    Count {
        app_id: String,
        channel: String,
        count: u64,
    },
    /// A signed-in user's first connection on this node opened (`online`) or their last closed; the answer says
    /// whether that was the cluster's first or last (`None`: Redis unreachable).
    Online {
        app_id: String,
        user_id: String,
        online: bool,
        reply: oneshot::Sender<Option<bool>>,
    },
    /// Publish the channel's history window to its Redis channel, for this node (see [`Cluster::window`]).
    Window {
        app_id: String,
        channel: String,
        token: u64,
    },
    /// This node's first subscriber of a channel arrived (`held`) or its last left.
    Occupancy {
        app_id: String,
        channel: String,
        held: bool,
    },
    Query {
        query: ClusterQuery,
        reply: oneshot::Sender<Option<ClusterAnswer>>,
    },
    Join {
        app_id: String,
        channel: String,
        user_id: String,
        user_info: String,
        max: usize,
        /// `None` while Redis is unreachable: the node answers from its own roster.
        reply: oneshot::Sender<Option<PresenceJoined>>,
    },
    Leave {
        app_id: String,
        channel: String,
        user_id: String,
        /// `Some(true)`: the user's last connection in the cluster left.
        reply: oneshot::Sender<Option<bool>>,
    },
}

const JOIN: &str = r"
if redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 0 then
  if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then
    return {0, 1, {}}
  end
  redis.call('SADD', KEYS[3], ARGV[4])
  if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    redis.call('PUBLISH', ARGV[5], ARGV[6])
    return {1, 0, redis.call('HGETALL', KEYS[1])}
  end
end
return {0, 0, redis.call('HGETALL', KEYS[1])}
";

const LEAVE: &str = r"
if redis.call('SREM', KEYS[3], ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('PUBLISH', ARGV[3], ARGV[4])
    return 1
  end
end
return 0
";

/// Removes a dead node's members, occupied channels, users, counts and connections, and the node itself from the
/// node set (KEYS[7]); returns the members whose user is now gone from the cluster, the channels no node
/// occupies any more, the users now offline and the new counts.
const CLEANUP: &str = r"
if redis.call('EXISTS', KEYS[6]) == 1 then return {{}, {}, {}, {}} end
-- One node fewer for `field`; true when none is left (the field is then removed).
local function gone_from(hash, field)
  if redis.call('HINCRBY', hash, field, -1) <= 0 then
    redis.call('HDEL', hash, field)
    return true
  end
  return false
end
local gone = {}
for _, e in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local m = cjson.decode(e)
  local base = ARGV[1] .. ':' .. m[1] .. ':p:' .. m[2]
  if gone_from(base .. ':nodes', m[3]) then
    redis.call('HDEL', base .. ':info', m[3])
    table.insert(gone, e)
  end
end
local offline = {}
for _, e in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local m = cjson.decode(e)
  if gone_from(ARGV[1] .. ':' .. m[1] .. ':online', m[2]) then table.insert(offline, e) end
end
local counts = {}
for _, e in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local m = cjson.decode(e)
  local subs = ARGV[1] .. ':' .. m[1] .. ':subs:' .. m[2]
  redis.call('HDEL', subs, ARGV[2])
  local total = 0
  for _, v in ipairs(redis.call('HVALS', subs)) do total = total + tonumber(v) end
  table.insert(counts, e)
  table.insert(counts, tostring(total))
end
redis.call('HDEL', ARGV[1] .. ':connections', ARGV[2])
for _, app in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  redis.call('HDEL', ARGV[1] .. ':' .. app .. ':conns', ARGV[2])
end
local vacated = {}
for _, e in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local m = cjson.decode(e)
  if gone_from(ARGV[1] .. ':' .. m[1] .. ':occ', m[2]) then table.insert(vacated, e) end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SREM', KEYS[7], ARGV[2])
return {gone, vacated, offline, counts}
";

/// A node's signed-in user comes (+1) or goes (-1); on the cluster's first or last, publishes the record and
/// returns 1.
const ONLINE: &str = r"
if ARGV[3] == '1' then
  if redis.call('SADD', KEYS[2], ARGV[2]) == 1 and redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 then
    redis.call('PUBLISH', ARGV[4], ARGV[5])
    return 1
  end
elseif redis.call('SREM', KEYS[2], ARGV[2]) == 1 and redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return 1
end
return 0
";

/// Sets this node's count of a channel's subscriptions; returns the channel's total over every node.
const COUNT: &str = r"
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
return total
";

/// Admits one connection if the app's connections over every node are under ARGV[2].
const CONN_ADMIT: &str = r"
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], ARGV[3])
return 1
";

/// A fixed one-second window shared by every node: all or nothing.
const RATE: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2000)
if n > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1
";

const CACHE_GET: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return {1, v, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return {0, '', 1} end
return {0, '', 0}
";

/// Counts above this are broadcast at most every [`COUNT_THROTTLE`] (as a single node does).
const COUNT_THROTTLE_ABOVE: u64 = 100;
const COUNT_THROTTLE: Duration = Duration::from_secs(5);

/// Numbers a publication of an app with history, keeps it in the channel's window and publishes it.
/// KEYS: window hash (epoch, seq), events list. ARGV: an epoch for a new window, max events, ttl ms, Redis
/// channel, the publish record, its Unix ms. The numbered record is `wire::NumberedPublish`.
const NUMBER: &str = r"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local rec = 'H' .. epoch .. ':' .. seq .. ':' .. ARGV[6] .. '\n' .. ARGV[5]
redis.call('RPUSH', KEYS[2], rec)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], rec)
return seq
";

/// Publishes a channel's history window (`wire::HistoryWindow`) on its Redis channel. KEYS: window hash, events
/// list. ARGV: Redis channel, origin, app id, channel, token.
const WINDOW: &str = r"
local function ns(s) return #s .. ':' .. s end
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
local events = redis.call('LRANGE', KEYS[2], 0, -1)
local out = {'W', ns(ARGV[2]), ns(ARGV[3]), ns(ARGV[4]), ns(ARGV[5]), ns(epoch), ns(seq), ns(tostring(#events))}
for _, e in ipairs(events) do out[#out + 1] = ns(e) end
redis.call('PUBLISH', ARGV[1], table.concat(out))
return 1
";

/// EVAL of a script, with PUBLISH made SPUBLISH when the Redis is a Redis Cluster (see `link`).
fn eval(cluster: &Cluster, script: &'static str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    if cluster.sharded.load(Ordering::Acquire) {
        cmd.arg(script.replace("'PUBLISH'", "'SPUBLISH'"));
    } else {
        cmd.arg(script);
    }
    cmd
}

/// The publish command: SPUBLISH on a Redis Cluster.
fn publish(cluster: &Cluster) -> &'static str {
    if cluster.sharded.load(Ordering::Acquire) {
        "SPUBLISH"
    } else {
        "PUBLISH"
    }
}

/// Adds `e` to `set` (`on`) or takes it out.
fn toggle(set: &mut HashSet<String>, e: &str, on: bool) {
    if on {
        set.insert(e.to_string());
    } else {
        set.remove(e);
    }
}

/// A new window's epoch: random, 48 bits (exact as a JavaScript number), never 0.
fn new_epoch() -> u64 {
    (crate::socket_id::random_seed() >> 16).max(1)
}

/// A node's occupied channel comes (+1) or goes (-1); returns 1 when the cluster's occupancy changed.
const OCCUPANCY: &str = r"
if ARGV[3] == '1' then
  if redis.call('SADD', KEYS[2], ARGV[2]) == 1 and redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 then
    return 1
  end
elseif redis.call('SREM', KEYS[2], ARGV[2]) == 1 and redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
";

fn channel_entry(app_id: &str, channel: &str) -> String {
    let mut e = String::from("[");
    push_json_string_into(&mut e, app_id);
    e.push(',');
    push_json_string_into(&mut e, channel);
    e.push(']');
    e
}

fn parse_channel_entry(e: &str) -> Option<(String, String)> {
    let v: Vec<String> = crate::json::parse_str(e).ok()?;
    let [a, c]: [String; 2] = v.try_into().ok()?;
    Some((a, c))
}

/// The entries on one side only: `(entry, true)` for what this node has and Redis lacks, `(entry, false)` for
/// what Redis has and this node no longer does.
fn differences(in_redis: &HashSet<String>, here: &HashSet<String>) -> Vec<(String, bool)> {
    here.difference(in_redis)
        .map(|e| (e.clone(), true))
        .chain(in_redis.difference(here).map(|e| (e.clone(), false)))
        .collect()
}

/// A node's contribution: `["app","channel","user"]` (JSON, so any user id round-trips, and Lua can read it).
fn entry(app_id: &str, channel: &str, user_id: &str) -> String {
    let mut e = String::from("[");
    push_json_string_into(&mut e, app_id);
    e.push(',');
    push_json_string_into(&mut e, channel);
    e.push(',');
    push_json_string_into(&mut e, user_id);
    e.push(']');
    e
}

fn parse_entry(e: &str) -> Option<(String, String, String)> {
    let v: Vec<String> = crate::json::parse_str(e).ok()?;
    let [a, c, u]: [String; 3] = v.try_into().ok()?;
    Some((a, c, u))
}

pub struct Commands<'a> {
    cluster: &'a Cluster,
    client: redis::Client,
    commands: Receiver<Command>,
    /// This node's presence contributions: entry -> user_info.
    mirror: HashMap<String, String>,
    /// This node's occupied channels (entries of [`channel_entry`]).
    occupied: HashSet<String>,
    /// This node's signed-in users (entries of [`channel_entry`]: app and user id).
    online: HashSet<String>,
    /// This node's subscription counts (entries of [`channel_entry`]), and those not yet written to Redis.
    counts: HashMap<String, u64>,
    counts_dirty: HashSet<String>,
    /// Per channel: the total last broadcast and when, and a total held back by the throttle.
    counts_sent: HashMap<String, (u64, Instant)>,
    counts_held: HashMap<String, u64>,
    /// This node's admitted connections per app (apps with a connection quota).
    conns: HashMap<String, u64>,
    pending: VecDeque<Outgoing>,
    con: Option<redis::Connection>,
    failures: u32,
    next_try: Instant,
    hold_until: Option<Instant>,
    last_beat: Option<Instant>,
}

impl<'a> Commands<'a> {
    pub fn new(cluster: &'a Cluster, client: redis::Client, commands: Receiver<Command>) -> Self {
        Commands {
            cluster,
            client,
            commands,
            mirror: HashMap::new(),
            occupied: HashSet::new(),
            online: HashSet::new(),
            counts: HashMap::new(),
            counts_dirty: HashSet::new(),
            counts_sent: HashMap::new(),
            counts_held: HashMap::new(),
            conns: HashMap::new(),
            pending: VecDeque::new(),
            con: None,
            failures: 0,
            next_try: Instant::now(),
            hold_until: None,
            last_beat: None,
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.cluster.prefix)
    }

    fn node_key(&self, node: &str, what: &str) -> String {
        self.key(&format!("node:{node}:{what}"))
    }

    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            if self.con.is_none() && now >= self.next_try {
                self.connect(now);
            }
            let cmds: Vec<Command> = self.commands.try_iter().take(1024).collect();
            for cmd in cmds {
                self.run_command(cmd);
            }
            self.cluster.hold(&mut self.pending);
            self.send_publications(now);
            self.write_counts(now);
            if self.last_beat.is_none_or(|t| now.duration_since(t) >= BEAT) {
                self.beat(now);
            }
            let sending = !self.pending.is_empty() && self.hold_until.is_none_or(|t| now >= t);
            if self.cluster.resync.swap(false, Ordering::AcqRel) && self.con.is_some() {
                crate::warn!(
                    "cluster: this node's heartbeat lapsed; writing its state to Redis again"
                );
                self.reconcile();
            }
            let wait = if self.commands.is_empty() && !(sending && self.con.is_some()) {
                Duration::from_millis(100)
            } else {
                Duration::ZERO
            };
            std::thread::park_timeout(wait);
        }
    }

    fn connect(&mut self, now: Instant) {
        match link::connect(&self.client, &self.cluster.prefix, false) {
            Ok(l) => {
                self.cluster.sharded.store(l.sharded, Ordering::Release);
                self.con = Some(l.con);
                if self.failures > 0 {
                    self.cluster
                        .stats
                        .reconnects
                        .fetch_add(1, Ordering::Relaxed);
                    crate::info!(
                        "cluster: reconnected to Redis; re-registering {} presence entries",
                        self.mirror.len()
                    );
                    self.hold_until = Some(now + RESUBSCRIBE_GRACE);
                }
                self.failures = 0;
                self.reconcile();
            }
            Err(e) => {
                if self.failures == 0 {
                    crate::warn!(
                        "cluster: cannot reach Redis ({e}); serving local clients, holding up to {} publications",
                        self.cluster.buffer_cap()
                    );
                }
                self.failures += 1;
                self.next_try = now + backoff(self.failures);
            }
        }
    }

    /// A command failed: on a connection failure, drop the connection and reconnect with backoff; an error Redis
    /// answered (out of memory, a script error) leaves the connection as it is.
    fn lost(&mut self, e: &redis::RedisError) {
        if !link::is_connection_error(e) {
            crate::warn!("cluster: Redis refused a command: {e}");
            return;
        }
        if self.con.take().is_some() {
            crate::warn!("cluster: lost the Redis command connection ({e}); reconnecting");
        }
        self.failures = self.failures.max(1);
        self.next_try = Instant::now() + RECONNECT_MIN;
    }

    fn send_publications(&mut self, now: Instant) {
        if self.hold_until.is_some_and(|t| now < t) || self.pending.is_empty() {
            return;
        }
        self.hold_until = None;
        if self.con.is_none() {
            return;
        }
        let n = self.pending.len().min(PUBLISH_BATCH);
        // A new window's epoch, should a numbered publication of the batch start one.
        let numbered = self.pending.iter().take(n).any(|o| o.keep.is_some());
        let epoch = if numbered { new_epoch() } else { 0 };
        let mut pipe = redis::pipe();
        for o in self.pending.iter().take(n) {
            match &o.keep {
                None => {
                    pipe.cmd(publish(self.cluster))
                        .arg(&o.key)
                        .arg(&o.record)
                        .ignore();
                }
                Some(k) => {
                    let (window, events) = self.history_keys(&k.app_id, &k.channel);
                    pipe.add_command(eval(self.cluster, NUMBER))
                        .arg(2)
                        .arg(window)
                        .arg(events)
                        .arg(epoch)
                        .arg(k.max_events.max(1))
                        .arg(k.ttl.as_millis().max(1) as u64)
                        .arg(&o.key)
                        .arg(&o.record)
                        .arg(k.published_at_ms)
                        .ignore();
                }
            }
        }
        let Some(con) = self.con.as_mut() else {
            return;
        };
        match pipe.query::<()>(con) {
            Ok(()) => {
                self.pending.drain(..n);
                self.cluster
                    .stats
                    .published
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            // Redis refused a command of the batch (out of memory, say): sending it again would repeat the ones
            // it took (and number them again), so the batch is given up and counted with the losses.
            Err(e) if !link::is_connection_error(&e) => {
                crate::warn!("cluster: Redis refused publications ({e}); {n} given up");
                self.pending.drain(..n);
                self.cluster
                    .stats
                    .dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => self.lost(&e),
        }
    }

    fn run_command(&mut self, cmd: Command) {
        match cmd {
            Command::Window {
                app_id,
                channel,
                token,
            } => self.window(&app_id, &channel, token),
            Command::Occupancy {
                app_id,
                channel,
                held,
            } => {
                let e = channel_entry(&app_id, &channel);
                toggle(&mut self.occupied, &e, held);
                self.occupancy(&app_id, &channel, held, &e);
            }
            Command::Query { query, reply } => {
                let _ = reply.send(self.query(&query));
            }
            Command::ConnAdmit { app_id, max, reply } => {
                let admitted = self.conn_admit(&app_id, max);
                if admitted != Some(false) {
                    *self.conns.entry(app_id).or_default() += 1;
                }
                let _ = reply.send(admitted);
            }
            Command::ConnRelease { app_id } => {
                if let Some(n) = self.conns.get_mut(&app_id) {
                    *n = n.saturating_sub(1);
                    let n = *n;
                    if n == 0 {
                        self.conns.remove(&app_id);
                    }
                    let hash = self.key(&format!("{app_id}:conns"));
                    let me = self.cluster.node_id.clone();
                    if let Some(con) = self.con.as_mut() {
                        let r = if n == 0 {
                            redis::cmd("HDEL").arg(&hash).arg(&me).query::<()>(con)
                        } else {
                            redis::cmd("HSET")
                                .arg(&hash)
                                .arg(&me)
                                .arg(n)
                                .query::<()>(con)
                        };
                        if let Err(e) = r {
                            self.lost(&e);
                        }
                    }
                }
            }
            Command::CacheStore {
                app_id,
                channel,
                record,
                ttl,
            } => {
                let key = self.key(&format!("{app_id}:cache:{channel}"));
                if let Some(con) = self.con.as_mut() {
                    let ms = ttl.as_millis().max(1) as u64;
                    if let Err(e) = redis::cmd("SET")
                        .arg(&key)
                        .arg(record)
                        .arg("PX")
                        .arg(ms)
                        .query::<()>(con)
                    {
                        self.lost(&e);
                    }
                }
            }
            Command::Count {
                app_id,
                channel,
                count,
            } => {
                let e = channel_entry(&app_id, &channel);
                if count > 0 {
                    self.counts.insert(e.clone(), count);
                } else {
                    self.counts.remove(&e);
                }
                // Written on this turn, after every command of the batch: a burst of subscribes costs one write.
                self.counts_dirty.insert(e);
            }
            Command::Online {
                app_id,
                user_id,
                online,
                reply,
            } => {
                let e = channel_entry(&app_id, &user_id);
                toggle(&mut self.online, &e, online);
                let _ = reply.send(self.user_online(&app_id, &user_id, online, &e));
            }
            Command::Join {
                app_id,
                channel,
                user_id,
                user_info,
                max,
                reply,
            } => {
                let e = entry(&app_id, &channel, &user_id);
                self.mirror.insert(e.clone(), user_info.clone());
                let result = self.join(&app_id, &channel, &user_id, &user_info, max, &e);
                if result.as_ref().is_some_and(|j| j.full) {
                    self.mirror.remove(&e);
                }
                let _ = reply.send(result);
            }
            Command::Leave {
                app_id,
                channel,
                user_id,
                reply,
            } => {
                let e = entry(&app_id, &channel, &user_id);
                self.mirror.remove(&e);
                let _ = reply.send(self.leave(&app_id, &channel, &user_id, &e));
            }
        }
    }

    /// The keys of a channel's history: its epoch and last seq, and its events.
    fn history_keys(&self, app_id: &str, channel: &str) -> (String, String) {
        (
            self.key(&format!("{app_id}:h:{channel}")),
            self.key(&format!("{app_id}:hl:{channel}")),
        )
    }

    fn window(&mut self, app_id: &str, channel: &str, token: u64) {
        let (window, events) = self.history_keys(app_id, channel);
        let Some(con) = self.con.as_mut() else {
            return;
        };
        let r = eval(self.cluster, WINDOW)
            .arg(2)
            .arg(window)
            .arg(events)
            .arg(redis_channel(&self.cluster.prefix, app_id, channel))
            .arg(&self.cluster.node_id)
            .arg(app_id)
            .arg(channel)
            .arg(token)
            .query::<()>(con);
        if let Err(e) = r {
            self.lost(&e);
        }
    }

    fn join(
        &mut self,
        app_id: &str,
        channel: &str,
        user_id: &str,
        user_info: &str,
        max: usize,
        e: &str,
    ) -> Option<PresenceJoined> {
        let base = self.key(&format!("{app_id}:p:{channel}"));
        let record = MemberRecord {
            origin: self.cluster.node_id.clone(),
            app_id: app_id.into(),
            channel: channel.into(),
            user_id: user_id.into(),
            user_info: Some(user_info.into()),
        };
        let members = self.node_key(&self.cluster.node_id, "members");
        let pubsub = redis_channel(&self.cluster.prefix, app_id, channel);
        let con = self.con.as_mut()?;
        let result: redis::RedisResult<(i64, i64, Vec<String>)> = eval(self.cluster, JOIN)
            .arg(3)
            .arg(format!("{base}:info"))
            .arg(format!("{base}:nodes"))
            .arg(&members)
            .arg(user_id)
            .arg(user_info)
            .arg(max)
            .arg(e)
            .arg(&pubsub)
            .arg(record.encode())
            .query(con);
        match result {
            Ok((first, full, flat)) => {
                let roster = flat
                    .chunks_exact(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect();
                Some(PresenceJoined {
                    first: first == 1,
                    full: full == 1,
                    roster,
                })
            }
            Err(err) => {
                self.lost(&err);
                None
            }
        }
    }

    fn leave(&mut self, app_id: &str, channel: &str, user_id: &str, e: &str) -> Option<bool> {
        let base = self.key(&format!("{app_id}:p:{channel}"));
        let record = MemberRecord {
            origin: self.cluster.node_id.clone(),
            app_id: app_id.into(),
            channel: channel.into(),
            user_id: user_id.into(),
            user_info: None,
        };
        let members = self.node_key(&self.cluster.node_id, "members");
        let pubsub = redis_channel(&self.cluster.prefix, app_id, channel);
        let con = self.con.as_mut()?;
        let result: redis::RedisResult<i64> = eval(self.cluster, LEAVE)
            .arg(3)
            .arg(format!("{base}:info"))
            .arg(format!("{base}:nodes"))
            .arg(&members)
            .arg(user_id)
            .arg(e)
            .arg(&pubsub)
            .arg(record.encode())
            .query(con);
        match result {
            Ok(last) => Some(last == 1),
            Err(err) => {
                self.lost(&err);
                None
            }
        }
    }

    /// Counts a node's occupied channel in the cluster; a change of the cluster's occupancy is this node's
    /// `channel_occupied` / `channel_vacated` webhook to send.
    fn occupancy(&mut self, app_id: &str, channel: &str, held: bool, e: &str) {
        let occ = self.key(&format!("{app_id}:occ"));
        let set = self.node_key(&self.cluster.node_id, "occupied");
        let Some(con) = self.con.as_mut() else {
            return;
        };
        let changed: redis::RedisResult<i64> = eval(self.cluster, OCCUPANCY)
            .arg(2)
            .arg(&occ)
            .arg(&set)
            .arg(channel)
            .arg(e)
            .arg(if held { "1" } else { "-1" })
            .query(con);
        match changed {
            Ok(1) => (self.cluster.deliver)(Delivery::Occupancy {
                app_id: app_id.into(),
                channel: channel.into(),
                occupied: held,
            }),
            Ok(_) => {}
            Err(err) => self.lost(&err),
        }
    }

    fn conn_admit(&mut self, app_id: &str, max: u64) -> Option<bool> {
        let hash = self.key(&format!("{app_id}:conns"));
        let set = self.node_key(&self.cluster.node_id, "conns");
        let me = self.cluster.node_id.clone();
        let con = self.con.as_mut()?;
        let r: redis::RedisResult<i64> = eval(self.cluster, CONN_ADMIT)
            .arg(2)
            .arg(&hash)
            .arg(&set)
            .arg(&me)
            .arg(max)
            .arg(app_id)
            .query(con);
        match r {
            Ok(n) => Some(n == 1),
            Err(e) => {
                self.lost(&e);
                None
            }
        }
    }

    /// Writes this node's changed counts and broadcasts each channel's new total (throttled above 100).
    fn write_counts(&mut self, now: Instant) {
        if self.con.is_none() {
            return;
        }
        let dirty: Vec<String> = self.counts_dirty.drain().collect();
        for e in dirty {
            let Some((app_id, channel)) = parse_channel_entry(&e) else {
                continue;
            };
            let count = self.counts.get(&e).copied().unwrap_or(0);
            let subs = self.key(&format!("{app_id}:subs:{channel}"));
            let set = self.node_key(&self.cluster.node_id, "subs");
            let Some(con) = self.con.as_mut() else {
                self.counts_dirty.insert(e);
                continue;
            };
            let total: redis::RedisResult<u64> = eval(self.cluster, COUNT)
                .arg(2)
                .arg(&subs)
                .arg(&set)
                .arg(&self.cluster.node_id)
                .arg(count)
                .arg(&e)
                .query(con);
            match total {
                Ok(total) => {
                    self.counts_held.insert(e, total);
                }
                Err(err) => {
                    self.counts_dirty.insert(e);
                    return self.lost(&err);
                }
            }
        }
        let held: Vec<(String, u64)> = self
            .counts_held
            .iter()
            .map(|(e, t)| (e.clone(), *t))
            .collect();
        for (e, total) in held {
            let last = self.counts_sent.get(&e).copied();
            if last.is_some_and(|(sent, _)| sent == total) || total == 0 {
                self.counts_held.remove(&e);
                if total == 0 {
                    self.counts_sent.remove(&e);
                }
                continue;
            }
            let throttled = total > COUNT_THROTTLE_ABOVE
                && last.is_some_and(|(_, at)| now.duration_since(at) < COUNT_THROTTLE);
            if throttled {
                continue;
            }
            self.counts_held.remove(&e);
            self.counts_sent.insert(e.clone(), (total, now));
            // A channel this node has no subscriber of any more is the other nodes' to report.
            if !self.counts.contains_key(&e) {
                self.counts_sent.remove(&e);
            }
            if let Some((app_id, channel)) = parse_channel_entry(&e) {
                self.publish_count(&app_id, &channel, total, true);
            }
        }
    }

    /// Tells every node listening to the channel its total; this node's own subscribers through `deliver`.
    fn publish_count(&mut self, app_id: &str, channel: &str, total: u64, report: bool) {
        let record = Record::count(&self.cluster.node_id, app_id, channel, total);
        let key = redis_channel(&self.cluster.prefix, app_id, channel);
        if let Some(con) = self.con.as_mut()
            && let Err(err) = redis::cmd(publish(self.cluster))
                .arg(&key)
                .arg(record)
                .query::<()>(con)
        {
            self.lost(&err);
        }
        (self.cluster.deliver)(Delivery::Count {
            app_id: app_id.into(),
            channel: channel.into(),
            total,
            report,
        });
    }

    fn user_online(&mut self, app_id: &str, user_id: &str, online: bool, e: &str) -> Option<bool> {
        let hash = self.key(&format!("{app_id}:online"));
        let set = self.node_key(&self.cluster.node_id, "users");
        let control = control_channel(&self.cluster.prefix);
        let record = Record::online(&self.cluster.node_id, app_id, user_id, online);
        let con = self.con.as_mut()?;
        let changed: redis::RedisResult<i64> = eval(self.cluster, ONLINE)
            .arg(2)
            .arg(&hash)
            .arg(&set)
            .arg(user_id)
            .arg(e)
            .arg(if online { "1" } else { "-1" })
            .arg(&control)
            .arg(record)
            .query(con);
        match changed {
            Ok(n) => Some(n == 1),
            Err(err) => {
                self.lost(&err);
                None
            }
        }
    }

    fn query(&mut self, q: &ClusterQuery) -> Option<ClusterAnswer> {
        let prefix = self.cluster.prefix.clone();
        let con = self.con.as_mut()?;
        let answer = match q {
            ClusterQuery::Channels { app_id, prefix: p } => {
                let names: redis::RedisResult<Vec<String>> = redis::cmd("HKEYS")
                    .arg(format!("{prefix}:{app_id}:occ"))
                    .query(con);
                names.map(|mut n| {
                    n.retain(|c| c.starts_with(p.as_str()));
                    ClusterAnswer::Names(n)
                })
            }
            ClusterQuery::Occupied { app_id, channel } => redis::cmd("HEXISTS")
                .arg(format!("{prefix}:{app_id}:occ"))
                .arg(channel)
                .query(con)
                .map(ClusterAnswer::Yes),
            ClusterQuery::Users { app_id, channel } => redis::cmd("HKEYS")
                .arg(format!("{prefix}:{app_id}:p:{channel}:nodes"))
                .query(con)
                .map(ClusterAnswer::Names),
            ClusterQuery::Rate {
                app_id,
                events,
                max,
            } => {
                let second = crate::clock::unix_secs();
                eval(self.cluster, RATE)
                    .arg(1)
                    .arg(format!("{prefix}:{app_id}:rate:{second}"))
                    .arg(events)
                    .arg(max)
                    .query::<i64>(con)
                    .map(|ok| ClusterAnswer::Yes(ok == 1))
            }
            ClusterQuery::Cache {
                app_id,
                channel,
                miss_window,
            } => eval(self.cluster, CACHE_GET)
                .arg(2)
                .arg(format!("{prefix}:{app_id}:cache:{channel}"))
                .arg(format!("{prefix}:{app_id}:miss:{channel}"))
                .arg(miss_window.as_millis().max(1) as u64)
                .query::<(i64, Vec<u8>, i64)>(con)
                .map(|(found, record, n)| {
                    if found == 1 {
                        ClusterAnswer::Cached(record, Duration::from_millis(n.max(1) as u64))
                    } else {
                        ClusterAnswer::Missed(n == 1)
                    }
                }),
            ClusterQuery::SubscriptionCount { app_id, channel } => redis::cmd("HVALS")
                .arg(format!("{prefix}:{app_id}:subs:{channel}"))
                .query::<Vec<u64>>(con)
                .map(|v| ClusterAnswer::Count(v.iter().sum())),
            ClusterQuery::Online { app_id, users } if users.is_empty() => {
                let _ = app_id;
                Ok(ClusterAnswer::Flags(Vec::new()))
            }
            ClusterQuery::Online { app_id, users } => redis::cmd("HMGET")
                .arg(format!("{prefix}:{app_id}:online"))
                .arg(users)
                .query::<Vec<Option<i64>>>(con)
                .map(|v| {
                    ClusterAnswer::Flags(v.iter().map(|n| n.is_some_and(|n| n > 0)).collect())
                }),
        };
        match answer {
            Ok(a) => Some(a),
            Err(e) => {
                self.lost(&e);
                None
            }
        }
    }

    /// This node's contribution set `what` as Redis has it (`None`: the connection failed, and is dropped).
    fn own_set(&mut self, what: &str) -> Option<HashSet<String>> {
        let key = self.node_key(&self.cluster.node_id, what);
        let con = self.con.as_mut()?;
        match redis::cmd("SMEMBERS").arg(&key).query(con) {
            Ok(s) => Some(s),
            Err(e) => {
                self.lost(&e);
                None
            }
        }
    }

    /// After a (re)connect: Redis gets exactly this node's contribution again (what changed while it was away,
    /// or everything if Redis lost its data; leftovers of an earlier run with the same node id go). Each kind:
    /// entries Redis has that this node no longer has are undone, entries it lacks are done again.
    fn reconcile(&mut self) {
        let Some(members) = self.own_set("members") else {
            return;
        };
        let mine: HashSet<String> = self.mirror.keys().cloned().collect();
        for (e, here) in differences(&members, &mine) {
            let Some((a, c, u)) = parse_entry(&e) else {
                continue;
            };
            match self.mirror.get(&e).cloned() {
                Some(info) if here => {
                    self.join(&a, &c, &u, &info, usize::MAX >> 1, &e);
                }
                _ => {
                    self.leave(&a, &c, &u, &e);
                }
            }
        }
        let Some(users) = self.own_set("users") else {
            return;
        };
        for (e, here) in differences(&users, &self.online) {
            if let Some((a, u)) = parse_channel_entry(&e) {
                self.user_online(&a, &u, here, &e);
            }
        }
        // Connections: this node's count per app, as it is now.
        let Some(conn_apps) = self.own_set("conns") else {
            return;
        };
        let me = self.cluster.node_id.clone();
        let conn_set = self.node_key(&me, "conns");
        let apps: HashSet<String> = conn_apps
            .union(&self.conns.keys().cloned().collect())
            .cloned()
            .collect();
        for app_id in apps {
            let hash = self.key(&format!("{app_id}:conns"));
            let mut pipe = redis::pipe();
            match self.conns.get(&app_id) {
                Some(n) => pipe
                    .cmd("HSET")
                    .arg(&hash)
                    .arg(&me)
                    .arg(*n)
                    .ignore()
                    .cmd("SADD")
                    .arg(&conn_set)
                    .arg(&app_id)
                    .ignore(),
                None => pipe
                    .cmd("HDEL")
                    .arg(&hash)
                    .arg(&me)
                    .ignore()
                    .cmd("SREM")
                    .arg(&conn_set)
                    .arg(&app_id)
                    .ignore(),
            };
            let Some(con) = self.con.as_mut() else {
                return;
            };
            if let Err(e) = pipe.query::<()>(con) {
                return self.lost(&e);
            }
        }
        // Counts: every one this node has is written again; ones Redis has and this node no longer does go.
        let Some(subs) = self.own_set("subs") else {
            return;
        };
        self.counts_dirty.extend(self.counts.keys().cloned());
        self.counts_dirty.extend(subs);
        let Some(occupied) = self.own_set("occupied") else {
            return;
        };
        for (e, here) in differences(&occupied, &self.occupied) {
            if let Some((a, c)) = parse_channel_entry(&e) {
                self.occupancy(&a, &c, here, &e);
            }
        }
    }

    /// Cleans up after nodes whose heartbeat expired (this node's own beats come from [`heartbeat`]).
    fn beat(&mut self, now: Instant) {
        self.last_beat = Some(now);
        let me = self.cluster.node_id.clone();
        let nodes = self.key("nodes");
        let Some(con) = self.con.as_mut() else {
            return;
        };
        let others: Vec<String> = match redis::cmd("SMEMBERS").arg(&nodes).query(con) {
            Ok(v) => v,
            Err(e) => return self.lost(&e),
        };
        for node in others.into_iter().filter(|n| *n != me) {
            if let Err(e) = self.check_node(&node) {
                return self.lost(&e);
            }
        }
        self.totals();
    }

    /// The cluster's open connections (each node's, from its heartbeat) and occupied channels, for `/stats`.
    fn totals(&mut self) {
        let connections = self.key("connections");
        let occ: Vec<String> = (self.cluster.app_ids)()
            .iter()
            .map(|a| self.key(&format!("{a}:occ")))
            .collect();
        let Some(con) = self.con.as_mut() else {
            return;
        };
        let answer: redis::RedisResult<(Vec<u64>, Vec<u64>)> = redis::cmd("HVALS")
            .arg(&connections)
            .query::<Vec<u64>>(con)
            .and_then(|conns| {
                let mut pipe = redis::pipe();
                for key in &occ {
                    pipe.cmd("HLEN").arg(key);
                }
                let lens: Vec<u64> = if occ.is_empty() {
                    Vec::new()
                } else {
                    pipe.query(con)?
                };
                Ok((conns, lens))
            });
        match answer {
            Ok((conns, lens)) => {
                let c = &self.cluster;
                c.cluster_connections
                    .store(conns.iter().sum(), Ordering::Relaxed);
                c.cluster_channels
                    .store(lens.iter().sum(), Ordering::Relaxed);
                c.totals_at_ms
                    .store(crate::clock::unix_ms(), Ordering::Release);
            }
            Err(e) => self.lost(&e),
        }
    }

    fn check_node(&mut self, node: &str) -> redis::RedisResult<()> {
        let alive = self.node_key(node, "alive");
        let lock = self.node_key(node, "cleanup");
        let members = self.node_key(node, "members");
        let occupied = self.node_key(node, "occupied");
        let users = self.node_key(node, "users");
        let subs = self.node_key(node, "subs");
        let conns = self.node_key(node, "conns");
        let nodes = self.key("nodes");
        let prefix = self.cluster.prefix.clone();
        let Some(con) = self.con.as_mut() else {
            return Ok(());
        };
        let exists: bool = redis::cmd("EXISTS").arg(&alive).query(con)?;
        if exists {
            return Ok(());
        }
        // One survivor cleans up; the lock outlives the cleanup.
        let got: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg(&self.cluster.node_id)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query(con)?;
        if got.is_none() {
            return Ok(());
        }
        type Cleaned = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);
        let (gone, vacated, offline, counts): Cleaned = eval(self.cluster, CLEANUP)
            .arg(7)
            .arg(&members)
            .arg(&occupied)
            .arg(&users)
            .arg(&subs)
            .arg(&conns)
            .arg(&alive)
            .arg(&nodes)
            .arg(&prefix)
            .arg(node)
            .query(con)?;
        // The node's part is gone from Redis now: what follows must reach this node's cores even if telling the
        // other nodes fails (nothing could redo it).
        crate::warn!(
            "cluster: node {node} stopped beating; removed it ({} members gone from their channels)",
            gone.len()
        );
        let mut pipe = redis::pipe();
        let mut removed = Vec::new();
        for e in &gone {
            let Some((app_id, channel, user_id)) = parse_entry(e) else {
                continue;
            };
            let record = MemberRecord {
                origin: String::new(),
                app_id: app_id.clone(),
                channel: channel.clone(),
                user_id: user_id.clone(),
                user_info: None,
            };
            pipe.cmd(publish(self.cluster))
                .arg(redis_channel(&prefix, &app_id, &channel))
                .arg(record.encode())
                .ignore();
            removed.push((app_id, channel, user_id));
        }
        let mut went_offline = Vec::new();
        for (app_id, user_id) in offline.iter().filter_map(|e| parse_channel_entry(e)) {
            pipe.cmd(publish(self.cluster))
                .arg(control_channel(&prefix))
                .arg(Record::online("", &app_id, &user_id, false))
                .ignore();
            went_offline.push((app_id, user_id));
        }
        let told = pipe.query::<()>(con);
        for (app_id, user_id) in went_offline {
            (self.cluster.deliver)(Delivery::UserGone { app_id, user_id });
        }
        for pair in counts.chunks_exact(2) {
            if let (Some((app_id, channel)), Ok(total)) =
                (parse_channel_entry(&pair[0]), pair[1].parse::<u64>())
                && total > 0
            {
                self.publish_count(&app_id, &channel, total, true);
            }
        }
        for (app_id, channel, user_id) in removed {
            (self.cluster.deliver)(Delivery::MemberGone {
                app_id,
                channel,
                user_id,
            });
        }
        for (app_id, channel) in vacated.iter().filter_map(|e| parse_channel_entry(e)) {
            (self.cluster.deliver)(Delivery::Occupancy {
                app_id,
                channel,
                occupied: false,
            });
        }
        told
    }
}

/// Renews this node's heartbeat (`alive`, `RELAY_CLUSTER_NODE_TIMEOUT` to live) every [`BEAT`] on a connection of
/// its own, so a command thread busy with a slow Redis does not look dead. A beat that finds the key gone after
/// an earlier one succeeded means the others may have removed this node: the command thread writes its state
/// again.
const HEARTBEAT: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return existed
";

pub fn heartbeat(cluster: &Cluster, client: redis::Client, node_timeout: Duration) {
    let alive = format!("{}:node:{}:alive", cluster.prefix, cluster.node_id);
    let nodes = format!("{}:nodes", cluster.prefix);
    let connections = format!("{}:connections", cluster.prefix);
    let ttl = node_timeout.as_millis() as u64;
    let mut con: Option<redis::Connection> = None;
    let mut beaten = false;
    loop {
        if con.is_none() {
            con = link::connect(&client, &cluster.prefix, false)
                .ok()
                .map(|l| l.con);
        }
        if let Some(c) = con.as_mut() {
            let beat: redis::RedisResult<i64> = eval(cluster, HEARTBEAT)
                .arg(3)
                .arg(&alive)
                .arg(&nodes)
                .arg(&connections)
                .arg(ttl)
                .arg(&cluster.node_id)
                .arg((cluster.local_connections)())
                .query(c);
            match beat {
                Ok(existed) => {
                    if existed == 0 && beaten {
                        cluster.resync.store(true, Ordering::Release);
                        cluster.wake_commands();
                    }
                    beaten = true;
                }
                Err(_) => con = None,
            }
        }
        std::thread::sleep(BEAT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_any_user_id() {
        let e = entry("app", "presence-r", "u \"1\"\n");
        assert_eq!(
            parse_entry(&e),
            Some(("app".into(), "presence-r".into(), "u \"1\"\n".into()))
        );
        assert_eq!(parse_entry("[1,2]"), None);
        assert_eq!(parse_entry("nope"), None);
    }
}
