//! Webhooks (docs/protocol.md#webhooks): channel and member lifecycle, client events, cache misses, subscription
//! counts, and relay's user online/offline, POSTed to each app's URLs in Pusher's signed format.
//!
//! Off the cores: a core hands an event to [`WebhookQueue::emit`] (a bounded lock-free queue that drops the
//! oldest when full; the core never waits) and goes on. One sender thread takes them, holds the "down" events for
//! the debounce (`debounce.rs`), batches per webhook (`batcher.rs`) and hands requests to a few HTTP threads
//! (`sender.rs`), which report each result back into the app's event log.

pub mod batcher;
pub mod debounce;
pub mod event;
pub mod sender;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;

use crossbeam_queue::ArrayQueue;

pub use batcher::{Outcome, Verdict};
pub use event::{Detail, WebhookEvent};
pub use sender::{DeliveryReport, Webhooks};

/// Events in the hand-off from the cores at most (fewer if `queue_cap` is lower). The sender empties it on every
/// wake, so it only fills if the sender thread is starved; then the oldest go (counted). Its bytes are capped too
/// (`queue_max_bytes`): past them a new event is dropped (counted) instead.
pub const HANDOFF_CAP: usize = 16_384;

/// The cores' side of the sender: where events go.
pub struct WebhookQueue {
    events: ArrayQueue<WebhookEvent>,
    /// The sender thread, woken after each event (an atomic swap unless it sleeps).
    sender: OnceLock<Thread>,
    /// Bytes of the events in the queue ([`WebhookEvent::size`]), against `max_bytes`.
    bytes: AtomicUsize,
    max_bytes: usize,
    pub stats: WebhookStats,
}

impl WebhookQueue {
    pub fn new(cap: usize, max_bytes: usize) -> Self {
        WebhookQueue {
            events: ArrayQueue::new(cap.max(1)),
            sender: OnceLock::new(),
            bytes: AtomicUsize::new(0),
            max_bytes,
            stats: WebhookStats::default(),
        }
    }

    /// Queues an event; when the queue is full its oldest event is dropped to make room (counted).
    pub fn emit(&self, event: WebhookEvent) {
        let size = event.size();
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            WebhookStats::add(&self.stats.dropped, 1);
            return;
        }
        if let Some(old) = self.events.force_push(event) {
            self.bytes.fetch_sub(old.size(), Ordering::Relaxed);
            WebhookStats::add(&self.stats.dropped, 1);
        }
        if let Some(t) = self.sender.get() {
            t.unpark();
        }
    }

    fn pop(&self) -> Option<WebhookEvent> {
        let event = self.events.pop()?;
        self.bytes.fetch_sub(event.size(), Ordering::Relaxed);
        Some(event)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The sender's running totals (read by `/stats` and, later, the metrics exporter).
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events delivered (2xx).
    pub delivered: AtomicU64,
    /// Requests that failed and were scheduled again.
    pub retries: AtomicU64,
    /// Events lost: past the retry window, refused for good by a receiver, or dropped by a full queue.
    pub dropped: AtomicU64,
    /// Events held by the sender now (queued, debounced, waiting for a retry).
    pub held: AtomicU64,
}

impl WebhookStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
