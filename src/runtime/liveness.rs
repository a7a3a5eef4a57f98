//! The per-core periodic scan (one timer per core, not one per socket): applies the liveness rules to every
//! session, forgets expired cache entries, sends throttled subscription counts, and (core 0) logs one summary
//! line for events that come in floods.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::metrics::Counter;
use crate::protocol::liveness::{LivenessRules, Verdict, verdict};
use crate::protocol::outbound;
use crate::runtime::core::Core;
use crate::runtime::counts;
use crate::ws::frame;

/// Interval of each core's scan.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Flood counters as of the last summary (core 0 only).
#[derive(Default)]
pub struct FloodSummary {
    seen: Cell<(u64, u64)>,
}

impl Core {
    pub fn scan(&self, now: Instant) {
        if self.id == 0 {
            self.summarise_floods();
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
        self.for_each_session(|s| {
            let rules = LivenessRules {
                authorize_within: self
                    .app(s.app)
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

    /// One warning per scan for slow readers cut off and messages refused by full inboxes, all cores.
    fn summarise_floods(&self) {
        let m = &self.shared.metrics;
        let now = (
            m.total(Counter::SlowReaderCutoffs),
            m.total(Counter::InboxOverflows),
        );
        let (slow, full) = self.floods.seen.replace(now);
        if now.0 > slow {
            crate::warn!(
                "{} slow reader(s) cut off: output queue over its cap (closed with 4100)",
                now.0 - slow
            );
        }
        if now.1 > full {
            crate::warn!("{} message(s) refused: a core inbox was full", now.1 - full);
        }
    }
}
