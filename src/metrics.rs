//! Counters and gauges for operators: per-core blocks, each written only by its own core, summed on read.
//!
//! A core bumps its own block with a plain load and store (no read-modify-write, no lock, no contended cache line:
//! blocks are cache-line aligned), so counting costs nothing measurable on the delivery path. Readers (the periodic
//! flood summary today, a Prometheus endpoint later) sum every block with relaxed loads; a sum may be a few events
//! behind, never torn.

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
}

const COUNTERS: usize = Counter::WsBytesReceived as usize + 1;

/// Values that go up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Channels this core is home to that have a subscriber on some core (occupied channels, summed over cores).
    OccupiedChannels,
}

const GAUGES: usize = Gauge::OccupiedChannels as usize + 1;

/// One core's counters. Aligned so two cores never write the same cache line.
#[repr(align(128))]
pub struct CoreMetrics {
    counters: [AtomicU64; COUNTERS],
    gauges: [AtomicI64; GAUGES],
}

impl CoreMetrics {
    fn new() -> Self {
        CoreMetrics {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            gauges: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }

    /// Only the owning core calls this: a load and a store, not an atomic add.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let v = &self.counters[c as usize];
        v.store(v.load(Ordering::Relaxed) + n, Ordering::Relaxed);
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
    }
}
