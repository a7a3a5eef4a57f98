//! Which webhook gets which event, and when its requests leave (docs/protocol.md#webhooks): one queue per
//! webhook (app and URL), batches of up to `batch_size` events that leave `batch_window` after their first event
//! or when full, one request in flight per webhook so its events arrive in order, retries with exponential
//! backoff and jitter (1 s to 60 s) until the oldest event of a batch is `retry_window` old, and a cap on the
//! events held that drops the oldest of the longest queue.
//!
//! Pure: the sender thread feeds it events, results and the time, and sends the batches it hands out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::AppIdx;
use crate::config::{AppConfig, KindSet, WebhookFilter, WebhookSettings};
use crate::protocol::auth::webhook_signature;
use crate::webhooks::event::{WebhookEvent, body};

/// First retry delay, and the most any retry waits.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Where one webhook's requests go and how they are signed.
#[derive(Debug)]
pub struct Target {
    pub app: AppIdx,
    pub url: Arc<str>,
    pub app_key: Arc<str>,
    pub headers: Vec<(String, String)>,
    secret: String,
    /// What it receives, worked out once from its configuration.
    kinds: KindSet,
    filter: WebhookFilter,
}

/// One request: its body is built and signed once and sent as is on every attempt.
#[derive(Debug, Clone)]
pub struct Batch {
    pub target: usize,
    pub to: Arc<Target>,
    pub body: Arc<[u8]>,
    pub signature: Arc<str>,
    pub events: usize,
    /// The 1-based attempt this sending is.
    pub attempt: u32,
    /// When the oldest event reached the sender: the retry window runs from it.
    oldest: Instant,
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: connection refused, reset, timeout, DNS (worth another try).
    Failed(String),
    /// A request that can never succeed as configured (a URL ureq refuses, a TLS setup error).
    Broken(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(s))
    }

    /// Connection errors, timeouts, 408, 429 and 5xx are worth another try; other answers are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Outcome::Failed(_) => true,
            Outcome::Broken(_) => false,
            Outcome::Status(s) => *s == 408 || *s == 429 || *s >= 500,
        }
    }
}

/// What became of a batch after an attempt, for the log and the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Tried again after this delay.
    Retrying(Duration),
    /// Past the retry window, or refused by the receiver for good: its events are lost.
    Dropped,
}

#[derive(Default)]
struct TargetState {
    queue: VecDeque<(Instant, Arc<WebhookEvent>)>,
    in_flight: bool,
    /// A failed batch waiting for its next attempt; nothing else of this webhook leaves before it.
    retry: Option<(Instant, Batch)>,
}

pub struct Batcher {
    settings: WebhookSettings,
    targets: Vec<Arc<Target>>,
    state: Vec<TargetState>,
    /// Targets of each app.
    by_app: Vec<Vec<usize>>,
    /// Events in queues and in retried batches, and their bytes ([`WebhookEvent::size`]; a batch counts its body).
    held: usize,
    held_bytes: usize,
    rng: u64,
    /// Where the next scan for ready batches starts, so every webhook gets its turn when slots are scarce.
    cursor: usize,
    /// Events dropped because the cap was reached, and because they outlived the retry window.
    pub overflowed: u64,
    pub expired: u64,
}

impl Batcher {
    pub fn new(apps: &[AppConfig], settings: WebhookSettings, seed: u64) -> Self {
        let mut targets = Vec::new();
        let mut by_app = Vec::with_capacity(apps.len());
        for (i, app) in apps.iter().enumerate() {
            let mut mine = Vec::new();
            for hook in &app.webhooks {
                mine.push(targets.len());
                targets.push(Arc::new(Target {
                    app: i as AppIdx,
                    url: Arc::from(hook.url.as_str()),
                    app_key: Arc::from(app.key.as_str()),
                    headers: hook.headers.clone().into_iter().collect(),
                    secret: app.secret.clone(),
                    kinds: hook.kinds(),
                    filter: hook.filter.clone(),
                }));
            }
            by_app.push(mine);
        }
        let state = targets.iter().map(|_| TargetState::default()).collect();
        Batcher {
            settings,
            targets,
            state,
            by_app,
            held: 0,
            held_bytes: 0,
            rng: seed | 1,
            cursor: 0,
            overflowed: 0,
            expired: 0,
        }
    }

    /// Events waiting (queued or in a batch to retry).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Queues the event for every webhook of its app that wants it.
    pub fn route(&mut self, event: WebhookEvent, now: Instant) {
        let Some(targets) = self.by_app.get(event.app as usize) else {
            return;
        };
        let event = Arc::new(event);
        let size = event.size();
        for &t in targets {
            let target = &self.targets[t];
            if target.kinds.contains(event.kind) && target.filter.matches(event.channel.as_deref())
            {
                self.state[t].queue.push_back((now, event.clone()));
                self.held += 1;
                self.held_bytes += size;
            }
        }
        while self.held > self.settings.queue_cap || self.held_bytes > self.settings.queue_max_bytes
        {
            let Some(longest) = (0..self.state.len()).max_by_key(|&i| self.state[i].queue.len())
            else {
                break;
            };
            let Some((_, dropped)) = self.state[longest].queue.pop_front() else {
                break;
            };
            self.held -= 1;
            self.held_bytes -= dropped.size();
            self.overflowed += 1;
        }
    }

    /// Hands out the batches that may leave now, at most `room` of them, starting where the last scan stopped.
    /// With `flush` a batch leaves without waiting for its window (shutdown); a retry still waits its backoff.
    pub fn ready(&mut self, now: Instant, room: usize, flush: bool, out: &mut Vec<Batch>) {
        let n = self.state.len();
        let start = self.cursor;
        for step in 0..n {
            if out.len() >= room {
                return;
            }
            let t = (start + step) % n;
            self.cursor = (t + 1) % n;
            let s = &mut self.state[t];
            if s.in_flight {
                continue;
            }
            if let Some((at, _)) = &s.retry {
                if *at <= now {
                    let (_, mut batch) = s.retry.take().expect("checked above");
                    batch.attempt += 1;
                    self.held -= batch.events;
                    self.held_bytes -= batch.body.len();
                    s.in_flight = true;
                    out.push(batch);
                }
                continue;
            }
            let window = self.settings.retry_window;
            // Queued in arrival order: the expired ones are at the front (no rescan of a long backlog).
            while let Some((at, e)) = s.queue.front()
                && now.duration_since(*at) > window
            {
                self.held -= 1;
                self.held_bytes -= e.size();
                self.expired += 1;
                s.queue.pop_front();
            }
            let Some(&(first, _)) = s.queue.front() else {
                continue;
            };
            let full = s.queue.len() >= self.settings.batch_size;
            if !(full || flush || now >= first + self.settings.batch_window) {
                continue;
            }
            let n = s.queue.len().min(self.settings.batch_size);
            let events: Vec<_> = s.queue.drain(..n).collect();
            self.held -= n;
            self.held_bytes -= events.iter().map(|(_, e)| e.size()).sum::<usize>();
            let time_ms = crate::clock::unix_ms();
            let body = body(time_ms, events.iter().map(|(_, e)| &**e));
            let signature = webhook_signature(&self.targets[t].secret, &body);
            s.in_flight = true;
            out.push(Batch {
                target: t,
                to: self.targets[t].clone(),
                body: Arc::from(body),
                signature: Arc::from(signature),
                events: n,
                attempt: 1,
                oldest: first,
            });
        }
    }

    /// Takes a batch's result back; says whether it is done, retried, or dropped.
    pub fn finished(&mut self, batch: Batch, outcome: &Outcome, now: Instant) -> Verdict {
        let s = &mut self.state[batch.target];
        s.in_flight = false;
        if outcome.is_success() {
            return Verdict::Delivered;
        }
        if !outcome.is_retryable() {
            return Verdict::Dropped;
        }
        let delay = self.backoff(batch.attempt);
        let s = &mut self.state[batch.target];
        if now + delay > batch.oldest + self.settings.retry_window {
            // (validate() bounds retry_window, so the sum cannot overflow.)
            self.expired += batch.events as u64;
            return Verdict::Dropped;
        }
        self.held += batch.events;
        self.held_bytes += batch.body.len();
        s.retry = Some((now + delay, batch));
        Verdict::Retrying(delay)
    }

    /// `2^(attempt-1)` seconds up to [`RETRY_MAX`], ±25 % jitter folded back inside [`RETRY_MIN`, `RETRY_MAX`]
    /// (clamping would pile retries up on the bounds, in step).
    fn backoff(&mut self, attempt: u32) -> Duration {
        // xorshift: jitter only needs to spread receivers' retries apart.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = RETRY_MIN
            .saturating_mul(1 << attempt.saturating_sub(1).min(6))
            .min(RETRY_MAX)
            .as_secs_f64();
        let jittered = base * (0.75 + (self.rng % 1000) as f64 / 2000.0);
        let (lo, hi) = (RETRY_MIN.as_secs_f64(), RETRY_MAX.as_secs_f64());
        let folded = if jittered < lo {
            2.0 * lo - jittered
        } else if jittered > hi {
            2.0 * hi - jittered
        } else {
            jittered
        };
        Duration::from_secs_f64(folded.clamp(lo, hi))
    }

    /// When something may next become ready (a window closing or a retry falling due; in the past when a batch
    /// is ready but had no room).
    pub fn next_due(&self) -> Option<Instant> {
        self.state
            .iter()
            .filter(|s| !s.in_flight)
            .filter_map(|s| match &s.retry {
                Some((at, _)) => Some(*at),
                None => s
                    .queue
                    .front()
                    .map(|(at, _)| *at + self.settings.batch_window),
            })
            .min()
    }

    /// Counts per webhook URL of what is waiting, for a summary line.
    pub fn backlog(&self) -> BTreeMap<Arc<str>, usize> {
        let mut m = BTreeMap::new();
        for (t, s) in self.targets.iter().zip(&self.state) {
            let n = s.queue.len() + s.retry.as_ref().map_or(0, |(_, b)| b.events);
            if n > 0 {
                *m.entry(t.url.clone()).or_default() += n;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{WebhookConfig, WebhookFilter, WebhookKind};
    use crate::protocol::auth::webhook_signature;

    fn apps() -> Vec<AppConfig> {
        let hook = |url: &str, types: Option<&[&str]>, prefix: Option<&str>| WebhookConfig {
            url: url.into(),
            event_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            filter: WebhookFilter {
                channel_name_starts_with: prefix.map(String::from),
                channel_name_ends_with: None,
            },
            headers: Default::default(),
        };
        vec![
            AppConfig {
                id: "1".into(),
                key: "k1".into(),
                secret: "s1".into(),
                webhooks: vec![
                    hook("http://a", None, None),
                    hook("http://b", Some(&["member_added"]), Some("presence-")),
                ],
                ..AppConfig::default()
            },
            AppConfig {
                id: "2".into(),
                key: "k2".into(),
                secret: "s2".into(),
                ..AppConfig::default()
            },
        ]
    }

    fn settings() -> WebhookSettings {
        WebhookSettings {
            batch_window: Duration::from_millis(50),
            batch_size: 3,
            retry_window: Duration::from_secs(10),
            queue_cap: 100,
            ..WebhookSettings::default()
        }
    }

    fn ev(app: AppIdx, kind: WebhookKind, channel: &str) -> WebhookEvent {
        WebhookEvent::member(app, kind, channel, "u")
    }

    #[test]
    fn events_go_to_the_webhooks_that_want_them_in_signed_batches() {
        let t0 = Instant::now();
        let mut b = Batcher::new(&apps(), settings(), 7);
        b.route(ev(0, WebhookKind::MemberAdded, "presence-r"), t0);
        b.route(ev(0, WebhookKind::MemberAdded, "private-r"), t0);
        b.route(ev(0, WebhookKind::MemberRemoved, "presence-r"), t0);
        b.route(ev(1, WebhookKind::MemberAdded, "presence-r"), t0);
        assert_eq!(
            b.held(),
            4,
            "3 for a, 1 for b, none for the app without webhooks"
        );
        let mut out = Vec::new();
        b.ready(t0 + Duration::from_millis(10), 8, false, &mut out);
        assert_eq!(out.len(), 1, "a's batch is full; b waits for its window");
        assert_eq!((out[0].target, out[0].events), (0, 3));
        assert_eq!(
            &*out[0].signature,
            webhook_signature("s1", &out[0].body).as_str()
        );
        let text = std::str::from_utf8(&out[0].body).unwrap();
        assert!(text.contains(r#""name":"member_removed""#), "{text}");
        b.ready(t0 + Duration::from_millis(50), 8, false, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((out[1].target, out[1].events), (1, 1));
        assert!(
            std::str::from_utf8(&out[1].body)
                .unwrap()
                .contains("presence-r")
        );
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn one_request_in_flight_per_webhook_and_retries_until_the_window() {
        let t0 = Instant::now();
        let mut b = Batcher::new(&apps(), settings(), 7);
        b.route(ev(0, WebhookKind::ChannelOccupied, "c1"), t0);
        let mut out = Vec::new();
        b.ready(t0 + Duration::from_millis(50), 8, false, &mut out);
        let first = out.pop().unwrap();
        b.route(ev(0, WebhookKind::ChannelOccupied, "c2"), t0);
        b.ready(t0 + Duration::from_secs(1), 8, false, &mut out);
        assert!(out.is_empty(), "the first is still in flight");

        let now = t0 + Duration::from_secs(1);
        let v = b.finished(first.clone(), &Outcome::Status(503), now);
        let Verdict::Retrying(delay) = v else {
            panic!("{v:?}")
        };
        assert!(delay >= RETRY_MIN && delay <= Duration::from_millis(1250));
        for attempt in 1..20 {
            let d = b.backoff(attempt);
            assert!(
                (RETRY_MIN..=RETRY_MAX).contains(&d),
                "attempt {attempt}: {d:?}"
            );
        }
        let late: Vec<Duration> = (0..50).map(|_| b.backoff(12)).collect();
        assert!(
            late.iter().filter(|d| **d == RETRY_MAX).count() < 5,
            "late retries are spread, not piled on 60 s: {late:?}"
        );
        b.ready(now, 8, false, &mut out);
        assert!(
            out.is_empty(),
            "nothing passes a batch waiting to be retried"
        );
        b.ready(now + delay, 8, false, &mut out);
        let again = out.pop().unwrap();
        assert_eq!(
            (again.attempt, &again.body),
            (2, &first.body),
            "same body, same signature"
        );

        // Attempts 2, 3, 4 wait ~2, ~4, ~8 s: the last would end past the 10 s window.
        let mut now = now + delay;
        let mut batch = again;
        loop {
            match b.finished(batch, &Outcome::Failed("refused".into()), now) {
                Verdict::Retrying(d) => {
                    now += d;
                    b.ready(now, 8, false, &mut out);
                    batch = out.pop().unwrap();
                }
                Verdict::Dropped => break,
                Verdict::Delivered => unreachable!(),
            }
        }
        assert!(now <= t0 + Duration::from_secs(10));
        assert_eq!(b.expired, 1);
        b.ready(now, 8, false, &mut out);
        assert_eq!(out.len(), 1, "then the next batch");
        assert_eq!(
            b.finished(out.pop().unwrap(), &Outcome::Status(404), now),
            Verdict::Dropped,
            "a 4xx is final"
        );
    }

    #[test]
    fn webhooks_take_turns_when_slots_are_scarce() {
        let t0 = Instant::now();
        let mut b = Batcher::new(&apps(), settings(), 7);
        let mut served = Vec::new();
        for round in 0..4 {
            b.route(ev(0, WebhookKind::MemberAdded, "presence-r"), t0);
            let mut out = Vec::new();
            b.ready(t0 + Duration::from_secs(1), 1, false, &mut out);
            let batch = out.pop().unwrap();
            served.push(batch.target);
            b.finished(batch, &Outcome::Status(200), t0);
            let _ = round;
        }
        assert!(served.contains(&0) && served.contains(&1), "{served:?}");
    }

    #[test]
    fn a_flush_does_not_skip_a_retry_backoff() {
        let t0 = Instant::now();
        let mut b = Batcher::new(&apps(), settings(), 7);
        b.route(ev(0, WebhookKind::ChannelOccupied, "c"), t0);
        let mut out = Vec::new();
        b.ready(t0, 8, true, &mut out);
        let v = b.finished(out.pop().unwrap(), &Outcome::Status(503), t0);
        assert!(matches!(v, Verdict::Retrying(_)));
        b.ready(t0, 8, true, &mut out);
        assert!(
            out.is_empty(),
            "a failing receiver is not hammered during a drain"
        );
        b.ready(t0 + Duration::from_secs(2), 8, true, &mut out);
        let retried = out.pop().expect("the retry after its backoff");
        assert_eq!(
            b.finished(retried, &Outcome::Broken("bad uri".into()), t0),
            Verdict::Dropped,
            "a broken request is final"
        );
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 503] {
            assert!(Outcome::Status(s).is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 413] {
            assert!(!Outcome::Status(s).is_retryable(), "{s}");
        }
        assert!(Outcome::Status(204).is_success());
    }

    #[test]
    fn the_cap_drops_the_oldest_of_the_longest_queue_and_old_events_expire() {
        let t0 = Instant::now();
        let mut s = settings();
        s.queue_cap = 4;
        let mut b = Batcher::new(&apps(), s, 7);
        for i in 0..6 {
            b.route(ev(0, WebhookKind::ChannelOccupied, &format!("c{i}")), t0);
        }
        assert_eq!((b.held(), b.overflowed), (4, 2));
        let mut out = Vec::new();
        b.ready(t0 + Duration::from_millis(50), 8, false, &mut out);
        assert!(
            std::str::from_utf8(&out[0].body)
                .unwrap()
                .contains("\"c2\"")
        );

        let mut b = Batcher::new(&apps(), settings(), 7);
        b.route(ev(0, WebhookKind::ChannelOccupied, "old"), t0);
        out.clear();
        b.ready(t0 + Duration::from_secs(11), 8, false, &mut out);
        assert!(out.is_empty());
        assert_eq!((b.held(), b.expired), (0, 1));
    }

    #[test]
    fn the_byte_cap_drops_the_oldest_too() {
        let t0 = Instant::now();
        let mut s = settings();
        s.queue_max_bytes = 25_000;
        let mut b = Batcher::new(&apps(), s, 7);
        let big = |i: u64| WebhookEvent {
            detail: crate::webhooks::event::Detail::Client {
                event_token: b"\"client-x\"".to_vec().into(),
                data_token: vec![b'a'; 10_000].into(),
                socket_id: crate::socket_id::SocketId {
                    random: 1,
                    unique: i,
                },
            },
            ..WebhookEvent::channel(0, WebhookKind::ClientEvent, "private-c")
        };
        for i in 0..5 {
            b.route(big(i), t0);
        }
        assert_eq!(
            (b.held(), b.overflowed),
            (2, 3),
            "10 KB events against 25 KB"
        );
        let mut out = Vec::new();
        b.ready(t0, 8, true, &mut out);
        assert!(
            std::str::from_utf8(&out[0].body)
                .unwrap()
                .contains("\"socket_id\":\"1.3\"")
        );
        assert_eq!(b.held_bytes, 0);
    }

    #[test]
    fn flush_sends_without_waiting_and_room_limits_requests() {
        let t0 = Instant::now();
        let mut b = Batcher::new(&apps(), settings(), 7);
        b.route(ev(0, WebhookKind::MemberAdded, "presence-r"), t0);
        let mut out = Vec::new();
        b.ready(t0, 1, true, &mut out);
        assert_eq!(out.len(), 1, "room for one");
        b.ready(t0, 2, true, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(b.next_due(), None);
    }
}
