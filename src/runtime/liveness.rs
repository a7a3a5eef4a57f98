//! The per-core periodic scan (one timer per core, not one per socket): applies the liveness rules to every
//! session, forgets expired cache entries, sends throttled subscription counts, and (core 0) logs one summary
//! line for events that come in floods.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::metrics::{CloseReason, Counter, Metrics};
use crate::protocol::liveness::{LivenessRules, Verdict, verdict};
use crate::protocol::outbound;
use crate::runtime::core::Core;
use crate::runtime::counts;
use crate::ws::frame;

/// Interval of each core's scan.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Per class of flood: the count as of its last line, and when that line was (core 0 only).
#[derive(Default)]
pub struct FloodSummary {
    seen: Cell<[u64; FLOOD_CLASSES]>,
    last: Cell<[Option<Instant>; FLOOD_CLASSES]>,
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

    /// At most one warning per class of connection error per `FLOOD_SUMMARY_INTERVAL`, all cores together: the
    /// first at the scan after it happens, then how many more since the last line (never one line per event).
    fn summarise_floods(&self, now: Instant) {
        let counts = flood_counts(&self.shared.metrics);
        let mut seen = self.floods.seen.get();
        let mut last = self.floods.last.get();
        for line in flood_lines(&counts, &mut seen, &mut last, now) {
            crate::warn!("{line}");
        }
        self.floods.seen.set(seen);
        self.floods.last.set(last);
    }
}

/// The lines due now: a class that grew since its last line gets one if its last was `FLOOD_SUMMARY_INTERVAL`
/// ago or more (or never), with the count since.
fn flood_lines(
    counts: &[(&'static str, u64)],
    seen: &mut [u64],
    last: &mut [Option<Instant>],
    now: Instant,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, (class, n)) in counts.iter().enumerate() {
        let quiet = last[i].is_none_or(|t| now >= t + FLOOD_SUMMARY_INTERVAL);
        if *n > seen[i] && quiet {
            let since = last[i].map_or(String::new(), |t| {
                format!(" in the last {}s", now.duration_since(t).as_secs().max(1))
            });
            lines.push(format!("{} {class}{since}", n - seen[i]));
            seen[i] = *n;
            last[i] = Some(now);
        }
    }
    lines
}

/// How often a flood is summarised at most, per class.
pub const FLOOD_SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

const FLOOD_CLASSES: usize = 8;

/// The classes of connection error summarised, and their running totals.
fn flood_counts(m: &Metrics) -> [(&'static str, u64); FLOOD_CLASSES] {
    let status = |codes: &[u16]| -> u64 { codes.iter().map(|&c| m.http_status_total(c)).sum() };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_one_line_at_once_then_one_per_interval() {
        let t0 = Instant::now();
        let (mut seen, mut last) = ([0u64; 2], [None; 2]);
        let mut at = |a: u64, b: u64, secs: u64| {
            let counts = [("x", a), ("y", b)];
            flood_lines(
                &counts,
                &mut seen,
                &mut last,
                t0 + Duration::from_secs(secs),
            )
        };
        assert!(at(0, 0, 0).is_empty());
        assert_eq!(at(3, 0, 1), ["3 x"]);
        assert!(at(500, 0, 2).is_empty(), "within the interval: held");
        assert_eq!(at(900, 1, 3), ["1 y"], "another class has its own interval");
        assert_eq!(at(1000, 1, 6), ["997 x in the last 5s"]);
        assert!(at(1000, 1, 20).is_empty(), "nothing new, nothing said");
    }
}
