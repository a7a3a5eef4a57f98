//! Counters and gauges for operators: per-core blocks, each written only by its own core, summed on read.
//!
//! A core bumps its own block with a plain load and store (no read-modify-write, no lock, no contended cache line:
//! blocks are cache-line aligned), so counting costs nothing measurable on the delivery path. Readers (the periodic
//! flood summary, `GET /metrics`, the dashboard) sum every block with relaxed loads; a sum may be a few events
//! behind, never torn. Per-app counters live with each app (`app::AppLive`), in the same per-core form.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Monotonic counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    ConnectionsOpened,
    ConnectionsClosed,
    /// Frames queued to a subscriber with its writer idle: they go out at once.
    Deliveries,
    /// Frames queued behind a write still in flight: the subscriber is not keeping up right now.
    DeliveriesBackpressured,
    /// Frames not queued because the connection was already closing.
    DeliveriesDropped,
    /// Subscribers cut off because their output queue went over its cap (close 4100).
    SlowReaderCutoffs,
    PublishesRest,
    PublishesClient,
    /// Events the server makes itself: member added/removed, subscription counts.
    PublishesServer,
    /// Events published on another node of the cluster, received through Redis.
    PublishesRemote,
    /// REST events refused by an app's rate limit (429).
    RateLimited,
    /// Channel histories dropped to keep an app within its history byte budget.
    HistoryEvictions,
    /// Messages a core's inbox refused because a lane was full.
    InboxOverflows,
    /// Bytes written to WebSocket clients (frames, TLS records not included).
    WsBytesSent,
    /// Bytes read from WebSocket clients (frames as they arrive).
    WsBytesReceived,
    /// Connections that failed before HTTP: accept errors, TLS handshakes that failed or timed out.
    ConnectionErrors,
}

const COUNTERS: usize = Counter::ConnectionErrors as usize + 1;

/// Values that go up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Channels this core is home to that have a subscriber on some core (occupied channels, summed over cores).
    OccupiedChannels,
}

const GAUGES: usize = Gauge::OccupiedChannels as usize + 1;

/// Why a WebSocket connection ended (`relay_connections_closed_total{reason}`), from the close code the server
/// sent, or `Client` when the client closed or went away first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Client,
    /// 1002, 1007, 1008, 1009: a frame or message the server could not accept.
    ProtocolError,
    /// 4000-4099: refused at the handshake or by the app's rules (unknown app, quota, unauthorized...).
    Refused,
    /// 4100: server over capacity, or a slow reader cut off.
    OverCapacity,
    /// 4200: the server drains or the app's settings moved; the client reconnects at once.
    Reconnect,
    /// 4201: no pong in time.
    PongTimeout,
    /// 4202 and any other 4200-4299 code.
    Inactive,
    Other,
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Client,
        CloseReason::ProtocolError,
        CloseReason::Refused,
        CloseReason::OverCapacity,
        CloseReason::Reconnect,
        CloseReason::PongTimeout,
        CloseReason::Inactive,
        CloseReason::Other,
    ];

    /// 0 means the server sent no close code.
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => CloseReason::Client,
            1002 | 1007 | 1008 | 1009 => CloseReason::ProtocolError,
            4000..=4099 => CloseReason::Refused,
            4100..=4199 => CloseReason::OverCapacity,
            4200 => CloseReason::Reconnect,
            4201 => CloseReason::PongTimeout,
            4202..=4299 => CloseReason::Inactive,
            _ => CloseReason::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::Refused => "refused",
            CloseReason::OverCapacity => "over_capacity",
            CloseReason::Reconnect => "reconnect",
            CloseReason::PongTimeout => "pong_timeout",
            CloseReason::Inactive => "inactive",
            CloseReason::Other => "other",
        }
    }
}

/// What an HTTP request asked for (`relay_http_requests_total{route}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRoute {
    Events,
    BatchEvents,
    Channels,
    Channel,
    ChannelUsers,
    ChannelHistory,
    TerminateConnections,
    Auth,
    EventLog,
    Health,
    Ready,
    Stats,
    Dashboard,
    /// Anything else: unknown paths and apps, wrong methods.
    Other,
}

impl HttpRoute {
    pub const ALL: [HttpRoute; 14] = [
        HttpRoute::Events,
        HttpRoute::BatchEvents,
        HttpRoute::Channels,
        HttpRoute::Channel,
        HttpRoute::ChannelUsers,
        HttpRoute::ChannelHistory,
        HttpRoute::TerminateConnections,
        HttpRoute::Auth,
        HttpRoute::EventLog,
        HttpRoute::Health,
        HttpRoute::Ready,
        HttpRoute::Stats,
        HttpRoute::Dashboard,
        HttpRoute::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HttpRoute::Events => "events",
            HttpRoute::BatchEvents => "batch_events",
            HttpRoute::Channels => "channels",
            HttpRoute::Channel => "channel",
            HttpRoute::ChannelUsers => "channel_users",
            HttpRoute::ChannelHistory => "channel_history",
            HttpRoute::TerminateConnections => "terminate_connections",
            HttpRoute::Auth => "auth",
            HttpRoute::EventLog => "events_log",
            HttpRoute::Health => "health",
            HttpRoute::Ready => "ready",
            HttpRoute::Stats => "stats",
            HttpRoute::Dashboard => "dashboard",
            HttpRoute::Other => "other",
        }
    }
}

/// The statuses relay answers with, each counted on its own; anything else is counted as `STATUS_OTHER`.
pub const HTTP_STATUSES: [u16; 15] = [
    200, 202, 400, 401, 403, 404, 405, 408, 411, 413, 426, 429, 431, 500, 503,
];
const STATUS_SLOTS: usize = HTTP_STATUSES.len() + 1;

fn status_slot(status: u16) -> usize {
    HTTP_STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(HTTP_STATUSES.len())
}

/// Upper bounds (seconds) of `relay_publish_fanout_seconds`'s buckets; the last bucket is `+Inf`.
pub const FANOUT_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];
const FANOUT_SLOTS: usize = FANOUT_BUCKETS.len() + 1;

/// One core's counters. Aligned so two cores never write the same cache line.
#[repr(align(128))]
pub struct CoreMetrics {
    counters: [AtomicU64; COUNTERS],
    gauges: [AtomicI64; GAUGES],
    closed: [AtomicU64; CloseReason::ALL.len()],
    http: [[AtomicU64; STATUS_SLOTS]; HttpRoute::ALL.len()],
    /// Fan-out histogram: per-bucket counts (not cumulative), and the sum in nanoseconds.
    fanout: [AtomicU64; FANOUT_SLOTS],
    fanout_sum_ns: AtomicU64,
}

/// Only the owning core writes: a load and a store, not an atomic add.
#[inline]
fn bump(v: &AtomicU64, n: u64) {
    v.store(v.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

impl CoreMetrics {
    fn new() -> Self {
        CoreMetrics {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            gauges: std::array::from_fn(|_| AtomicI64::new(0)),
            closed: std::array::from_fn(|_| AtomicU64::new(0)),
            http: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            fanout: std::array::from_fn(|_| AtomicU64::new(0)),
            fanout_sum_ns: AtomicU64::new(0),
        }
    }

    /// Only the owning core calls this: a load and a store, not an atomic add.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        bump(&self.counters[c as usize], n);
    }

    pub fn closed(&self, reason: CloseReason) {
        bump(&self.closed[reason as usize], 1);
    }

    pub fn http(&self, route: HttpRoute, status: u16) {
        bump(&self.http[route as usize][status_slot(status)], 1);
    }

    /// One publication's fan-out on this node took `elapsed`.
    pub fn fanout(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = FANOUT_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(FANOUT_BUCKETS.len());
        bump(&self.fanout[slot], 1);
        bump(&self.fanout_sum_ns, elapsed.as_nanos() as u64);
    }

    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Only the owning core calls this.
    #[inline]
    pub fn shift(&self, g: Gauge, delta: i64) {
        let v = &self.gauges[g as usize];
        let next = v.load(Ordering::Relaxed) + delta;
        debug_assert!(next >= 0, "gauge {g:?} went negative");
        v.store(next, Ordering::Relaxed);
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }

    pub fn gauge(&self, g: Gauge) -> i64 {
        self.gauges[g as usize].load(Ordering::Relaxed)
    }
}

/// Every core's block.
pub struct Metrics {
    cores: Box<[CoreMetrics]>,
}

impl Metrics {
    pub fn new(cores: usize) -> Self {
        Metrics {
            cores: (0..cores).map(|_| CoreMetrics::new()).collect(),
        }
    }

    /// Core `id`'s block, for that core to write.
    pub fn core(&self, id: usize) -> &CoreMetrics {
        &self.cores[id]
    }

    pub fn total(&self, c: Counter) -> u64 {
        self.cores.iter().map(|m| m.counter(c)).sum()
    }

    pub fn gauge(&self, g: Gauge) -> i64 {
        self.cores.iter().map(|m| m.gauge(g)).sum()
    }

    pub fn closed(&self, reason: CloseReason) -> u64 {
        let i = reason as usize;
        self.cores
            .iter()
            .map(|m| m.closed[i].load(Ordering::Relaxed))
            .sum()
    }

    /// Requests of `route` answered with the status in slot `slot` (of `HTTP_STATUSES`, or past it: other).
    pub fn http(&self, route: HttpRoute, slot: usize) -> u64 {
        self.cores
            .iter()
            .map(|m| m.http[route as usize][slot].load(Ordering::Relaxed))
            .sum()
    }

    pub const STATUS_SLOTS: usize = STATUS_SLOTS;

    /// Requests answered with `status`, every route (a status not in `HTTP_STATUSES`: all the others).
    pub fn http_status_total(&self, status: u16) -> u64 {
        let slot = status_slot(status);
        HttpRoute::ALL.iter().map(|&r| self.http(r, slot)).sum()
    }

    /// The fan-out histogram, all cores: per-bucket counts (not cumulative) and the sum in seconds.
    pub fn fanout(&self) -> ([u64; FANOUT_SLOTS], f64) {
        let mut buckets = [0u64; FANOUT_SLOTS];
        let mut sum_ns = 0u64;
        for m in self.cores.iter() {
            for (b, v) in buckets.iter_mut().zip(&m.fanout) {
                *b += v.load(Ordering::Relaxed);
            }
            sum_ns += m.fanout_sum_ns.load(Ordering::Relaxed);
        }
        (buckets, sum_ns as f64 / 1e9)
    }
}

/// Per-app counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppCounter {
    Deliveries,
    PublishesRest,
    PublishesClient,
}

const APP_COUNTERS: usize = AppCounter::PublishesClient as usize + 1;

#[repr(align(128))]
struct AppCoreBlock([AtomicU64; APP_COUNTERS]);

/// One app's counters, a block per core (each written by its core only).
pub struct AppMetrics {
    cores: Box<[AppCoreBlock]>,
}

impl AppMetrics {
    pub fn new(cores: usize) -> Self {
        AppMetrics {
            cores: (0..cores)
                .map(|_| AppCoreBlock(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// Only core `core` calls this.
    #[inline]
    pub fn add(&self, core: usize, c: AppCounter, n: u64) {
        if let Some(b) = self.cores.get(core) {
            bump(&b.0[c as usize], n);
        }
    }

    pub fn total(&self, c: AppCounter) -> u64 {
        self.cores
            .iter()
            .map(|b| b.0[c as usize].load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_sum_on_read() {
        let m = Metrics::new(3);
        m.core(0).add(Counter::Deliveries, 5);
        m.core(2).inc(Counter::Deliveries);
        m.core(1).shift(Gauge::OccupiedChannels, 2);
        m.core(1).shift(Gauge::OccupiedChannels, -1);
        assert_eq!(m.total(Counter::Deliveries), 6);
        assert_eq!(m.total(Counter::SlowReaderCutoffs), 0);
        assert_eq!(m.gauge(Gauge::OccupiedChannels), 1);
        assert_eq!(std::mem::align_of::<CoreMetrics>(), 128);
        m.core(0).http(HttpRoute::Events, 200);
        m.core(1).http(HttpRoute::Events, 200);
        m.core(1).http(HttpRoute::Events, 299);
        assert_eq!(m.http(HttpRoute::Events, 0), 2);
        assert_eq!(m.http(HttpRoute::Events, Metrics::STATUS_SLOTS - 1), 1);
        m.core(0).fanout(std::time::Duration::from_micros(70));
        m.core(1).fanout(std::time::Duration::from_secs(3));
        let (buckets, sum) = m.fanout();
        assert_eq!(buckets[1], 1, "70 us falls in the 100 us bucket");
        assert_eq!(buckets[FANOUT_BUCKETS.len()], 1, "3 s in +Inf");
        assert!((sum - 3.00007).abs() < 1e-9);
        m.core(0).closed(CloseReason::from_code(4201));
        assert_eq!(m.closed(CloseReason::PongTimeout), 1);
        let a = AppMetrics::new(2);
        a.add(0, AppCounter::Deliveries, 3);
        a.add(1, AppCounter::Deliveries, 4);
        a.add(7, AppCounter::Deliveries, 100);
        assert_eq!(a.total(AppCounter::Deliveries), 7);
    }
}
