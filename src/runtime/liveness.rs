//! The per-core periodic scan (one timer per core, not one per socket): applies the liveness rules to every
//! session, forgets expired cache entries, sends throttled subscription counts, and (core 0) logs one summary
//! line for events that come in floods.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::metrics::{CloseReason, Counter, HTTP_STATUSES, HttpRoute, Metrics};
use crate::protocol::liveness::{LivenessRules, Verdict, verdict};
use crate::protocol::outbound;
use crate::runtime::core::Core;
use crate::runtime::counts;
use crate::ws::frame;

/// Interval of each core's scan.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Flood counters as of the last summary, and when it was (core 0 only).
pub struct FloodSummary {
    seen: Cell<[(&'static str, u64); FLOOD_CLASSES]>,
    last: Cell<Option<Instant>>,
}

impl Default for FloodSummary {
    fn default() -> Self {
        FloodSummary {
            seen: Cell::new([("", 0); FLOOD_CLASSES]),
            last: Cell::new(None),
        }
    }
}

impl Core {
    pub fn scan(&self, now: Instant) {
        if self.id == 0 {
            self.summarise_floods(now);
        }
        self.facts.borrow_mut().purge_expired(now);
        self.history.borrow_mut().purge_expired(now);
        counts::flush_throttled(self, now);
        let config = &self.shared.config;
        let rules = LivenessRules {
            activity: Duration::from_secs(config.activity_timeout_secs),
            pong: Duration::from_secs(config.pong_timeout_secs),
            authorize_within: None,
        };
        let authorize_within = Duration::from_secs(config.authorized_connection_timeout_secs);
        let registry = self.registry();
        self.for_each_session(|s| {
            let rules = LivenessRules {
                authorize_within: registry
                    .get(s.app)
                    .config
                    .authorized_connections
                    .then_some(authorize_within),
                ..rules
            };
            match verdict(&rules, s, now) {
                Verdict::Alive => {}
                Verdict::Ping => {
                    // A WebSocket ping works for every client; the protocol ping reaches pusher-js too.
                    s.send(frame::encode_ping(b""));
                    s.send(outbound::ping());
                    s.ping_sent.set(Some(now));
                }
                Verdict::Close {
                    code,
                    reason,
                    with_error,
                } => {
                    crate::debug!(
                        "socket {} closed by the liveness scan: {reason}",
                        s.socket_id
                    );
                    if with_error {
                        s.close_with_error(code, reason);
                    } else {
                        s.close(code, reason, None);
                    }
                }
                Verdict::Cut => s.abort(),
            }
        });
    }

    /// At most one warning per class of connection error per `FLOOD_SUMMARY_INTERVAL`, all cores together:
    /// how many of each happened since the last summary (never one line per event).
    fn summarise_floods(&self, now: Instant) {
        let due = self
            .floods
            .last
            .get()
            .is_none_or(|t| now >= t + FLOOD_SUMMARY_INTERVAL);
        if !due {
            return;
        }
        self.floods.last.set(Some(now));
        let counts = flood_counts(&self.shared.metrics);
        let before = self.floods.seen.replace(counts);
        for ((class, n), (_, was)) in counts.iter().zip(before.iter()) {
            if n > was {
                crate::warn!(
                    "{} {class} in the last {}s",
                    n - was,
                    FLOOD_SUMMARY_INTERVAL.as_secs()
                );
            }
        }
    }
}

/// How often a flood is summarised at most, per class.
pub const FLOOD_SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

const FLOOD_CLASSES: usize = 8;

/// The classes of connection error summarised, and their running totals.
fn flood_counts(m: &Metrics) -> [(&'static str, u64); FLOOD_CLASSES] {
    let status = |codes: &[u16]| -> u64 {
        HttpRoute::ALL
            .iter()
            .flat_map(|&r| {
                codes.iter().filter_map(move |c| {
                    HTTP_STATUSES
                        .iter()
                        .position(|s| s == c)
                        .map(|slot| (r, slot))
                })
            })
            .map(|(r, slot)| m.http(r, slot))
            .sum()
    };
    [
        (
            "slow reader(s) cut off: output queue over its cap (closed with 4100)",
            m.total(Counter::SlowReaderCutoffs),
        ),
        (
            "message(s) refused: a core inbox was full",
            m.total(Counter::InboxOverflows),
        ),
        (
            "connection(s) closed for a protocol error (1002/1007/1008/1009)",
            m.closed(CloseReason::ProtocolError),
        ),
        (
            "connection(s) refused or closed by the app's rules (4000-4099)",
            m.closed(CloseReason::Refused),
        ),
        (
            "connection(s) closed for missing pongs (4201)",
            m.closed(CloseReason::PongTimeout),
        ),
        (
            "malformed or oversized HTTP request(s) (400/408/411/413/431)",
            status(&[400, 408, 411, 413, 431]),
        ),
        (
            "REST event(s) refused by rate limits (429)",
            m.total(Counter::RateLimited),
        ),
        (
            "connection(s) that failed before HTTP (accept errors, TLS handshakes)",
            m.total(Counter::ConnectionErrors),
        ),
    ]
}
