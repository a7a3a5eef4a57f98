//! The sender: one thread that takes the cores' events, debounces, batches and schedules them, and a few HTTP
//! threads (`WebhookSettings::concurrency`) that POST the batches with a keep-alive pool (ureq: blocking, http
//! and https, no async runtime) and hand each result back. Nothing here runs on a core.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::app::AppIdx;
use crate::config::{Config, WebhookSettings};
use crate::socket_id::random_seed;
use crate::webhooks::batcher::{Batch, Batcher, Outcome, Verdict};
use crate::webhooks::debounce::Debouncer;
use crate::webhooks::{WebhookQueue, WebhookStats};

/// A summary line is logged when events were retried or lost, at most once per this (never one per event).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Events the sender takes from the queue before it looks at results and due batches again.
const EVENTS_PER_TURN: usize = 4096;

/// Bytes of a receiver's answer read (and thrown away) so the connection can be reused.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// One attempt of one batch, for the app's event log.
#[derive(Debug, Clone)]
pub struct DeliveryReport {
    pub url: Arc<str>,
    pub events: usize,
    pub attempt: u32,
    pub outcome: Outcome,
    pub verdict: Verdict,
}

/// Called on the sender thread with each attempt's report (it must not block).
pub type ReportFn = Box<dyn Fn(AppIdx, DeliveryReport) + Send>;

/// The running sender; [`Webhooks::shutdown`] flushes and stops it.
pub struct Webhooks {
    /// Set at shutdown: flush everything, stop at this instant at the latest.
    stop: Arc<OnceLock<Instant>>,
    thread: Option<JoinHandle<()>>,
}

impl Webhooks {
    /// Starts the sender if any app has a webhook (otherwise no core ever builds an event).
    pub fn start(
        config: &Config,
        queue: Arc<WebhookQueue>,
        report: ReportFn,
    ) -> io::Result<Webhooks> {
        let stop = Arc::new(OnceLock::new());
        if !config.has_webhooks() {
            return Ok(Webhooks { stop, thread: None });
        }
        let settings = config.webhooks.clone();
        let batcher = Batcher::new(&config.apps, settings.clone(), random_seed());
        let debounce = Debouncer::new(settings.debounce, settings.queue_cap);
        let (jobs_tx, jobs_rx) = unbounded::<Batch>();
        let (results_tx, results_rx) = unbounded::<(Batch, Outcome)>();
        let agent = agent(&settings);
        let dispatcher = Dispatcher {
            queue: queue.clone(),
            stop: stop.clone(),
            settings,
            batcher,
            debounce,
            jobs: jobs_tx,
            results: results_rx,
            in_flight: 0,
            report,
            counted: (0, 0),
            summary: Summary::default(),
        };
        let thread = std::thread::Builder::new()
            .name("relay-webhooks".into())
            .spawn(move || dispatcher.run())?;
        let _ = queue.sender.set(thread.thread().clone());
        let wake = thread.thread().clone();
        // Built before the HTTP threads: if one cannot start, dropping this stops the dispatcher.
        let webhooks = Webhooks {
            stop,
            thread: Some(thread),
        };
        for i in 0..config.webhooks.concurrency {
            let jobs = jobs_rx.clone();
            let results = results_tx.clone();
            let agent = agent.clone();
            let wake = wake.clone();
            std::thread::Builder::new()
                .name(format!("relay-webhook-http-{i}"))
                .spawn(move || {
                    for batch in jobs {
                        let outcome = post(&agent, &batch);
                        if results.send((batch, outcome)).is_err() {
                            return;
                        }
                        wake.unpark();
                    }
                })?;
        }
        Ok(webhooks)
    }

    /// Sends what is queued and held (debounced events at once), for at most `grace`, then stops. The HTTP
    /// threads end after their request in flight (they are not waited for).
    pub fn shutdown(mut self, grace: Duration) {
        self.stop_within(grace);
    }

    fn stop_within(&mut self, grace: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.stop.set(Instant::now() + grace);
        thread.thread().unpark();
        let _ = thread.join();
    }
}

impl Drop for Webhooks {
    /// A sender dropped without a shutdown (a start that failed later) stops at once.
    fn drop(&mut self) {
        self.stop_within(Duration::ZERO);
    }
}

fn agent(settings: &WebhookSettings) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(settings.request_timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("relay-webhooks")
        .max_idle_connections_per_host(settings.concurrency)
        .build();
    ureq::Agent::new_with_config(config)
}

fn post(agent: &ureq::Agent, batch: &Batch) -> Outcome {
    let to = &batch.to;
    let mut request = agent
        .post(&*to.url)
        .header("Content-Type", "application/json")
        .header("X-Pusher-Key", &*to.app_key)
        .header("X-Pusher-Signature", &*batch.signature);
    for (name, value) in &to.headers {
        request = request.header(name, value);
    }
    match request.send(&batch.body[..]) {
        Ok(mut response) => {
            // Read the answer so the connection goes back to the pool.
            let _ = response
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER_BYTES)
                .read_to_vec();
            Outcome::Status(response.status().as_u16())
        }
        Err(
            e @ (ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)),
        ) => Outcome::Broken(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[derive(Default)]
struct Summary {
    last: Option<Instant>,
    retries: u64,
    dropped: u64,
    /// The last final refusal since the last summary, named in it.
    refused: Option<String>,
}

struct Dispatcher {
    queue: Arc<WebhookQueue>,
    stop: Arc<OnceLock<Instant>>,
    settings: WebhookSettings,
    batcher: Batcher,
    debounce: Debouncer,
    jobs: Sender<Batch>,
    results: Receiver<(Batch, Outcome)>,
    in_flight: usize,
    report: ReportFn,
    /// The batcher's overflowed and expired totals already added to the stats.
    counted: (u64, u64),
    summary: Summary,
}

impl Dispatcher {
    fn run(mut self) {
        let mut events = Vec::new();
        let mut batches = Vec::new();
        loop {
            let now = Instant::now();
            let stopping = self.stop.get().copied();
            while let Ok((batch, outcome)) = self.results.try_recv() {
                self.in_flight -= 1;
                self.finished(batch, outcome, now);
            }
            let mut taken = 0;
            while taken < EVENTS_PER_TURN {
                let Some(event) = self.queue.pop() else { break };
                self.debounce.offer(event, now, &mut events);
                taken += 1;
            }
            match stopping {
                Some(_) => self.debounce.release_all(&mut events),
                None => self.debounce.due(now, &mut events),
            }
            for event in events.drain(..) {
                self.batcher.route(event, now);
            }
            let room = self.settings.concurrency.saturating_sub(self.in_flight);
            self.batcher
                .ready(now, room, stopping.is_some(), &mut batches);
            for batch in batches.drain(..) {
                self.in_flight += 1;
                if self.jobs.send(batch).is_err() {
                    return;
                }
            }
            self.count(now);
            if let Some(deadline) = stopping {
                let idle = self.queue.is_empty() && self.batcher.held() == 0 && self.in_flight == 0;
                if idle || now >= deadline {
                    if !idle {
                        crate::warn!(
                            "webhooks: stopped with {} events not delivered",
                            self.batcher.held() + self.queue.len()
                        );
                    }
                    return;
                }
            }
            if taken == EVENTS_PER_TURN {
                continue;
            }
            let mut wake = now + Duration::from_secs(1);
            // With every slot taken, a ready batch waits for a result, and a result unparks this thread.
            let batches_due = (self.in_flight < self.settings.concurrency)
                .then(|| self.batcher.next_due())
                .flatten();
            for at in [batches_due, self.debounce.next_due(), stopping]
                .into_iter()
                .flatten()
            {
                wake = wake.min(at);
            }
            std::thread::park_timeout(wake.saturating_duration_since(Instant::now()));
        }
    }

    fn finished(&mut self, batch: Batch, outcome: Outcome, now: Instant) {
        let app = batch.to.app;
        let url = batch.to.url.clone();
        let (events, attempt) = (batch.events, batch.attempt);
        let verdict = self.batcher.finished(batch, &outcome, now);
        let stats = &self.queue.stats;
        match &verdict {
            Verdict::Delivered => WebhookStats::add(&stats.delivered, events as u64),
            Verdict::Retrying(_) => WebhookStats::add(&stats.retries, 1),
            // Expired batches are counted through the batcher's total, refused ones here; both appear in the
            // periodic summary (never one line per batch).
            Verdict::Dropped if !outcome.is_retryable() => {
                WebhookStats::add(&stats.dropped, events as u64);
                self.summary.refused = Some(format!("{url} answered {outcome:?}"));
            }
            Verdict::Dropped => {}
        }
        crate::debug!(
            "webhooks: {url}: {events} events, attempt {attempt}: {outcome:?} -> {verdict:?}"
        );
        (self.report)(
            app,
            DeliveryReport {
                url,
                events,
                attempt,
                outcome,
                verdict,
            },
        );
    }

    /// Stats and the periodic summary line.
    fn count(&mut self, now: Instant) {
        let stats = &self.queue.stats;
        let (overflowed, expired) = (self.batcher.overflowed, self.batcher.expired);
        let new = (overflowed - self.counted.0) + (expired - self.counted.1);
        if new > 0 {
            WebhookStats::add(&stats.dropped, new);
            self.counted = (overflowed, expired);
        }
        let held = self.batcher.held() + self.debounce.len() + self.queue.len();
        stats.held.store(held as u64, Ordering::Relaxed);
        let retries = WebhookStats::get(&stats.retries);
        let dropped = WebhookStats::get(&stats.dropped);
        let changed = retries != self.summary.retries || dropped != self.summary.dropped;
        let quiet = self
            .summary
            .last
            .is_some_and(|last| now.duration_since(last) < SUMMARY_INTERVAL);
        if !changed || quiet {
            return;
        }
        let backlog: Vec<String> = self
            .batcher
            .backlog()
            .into_iter()
            .map(|(url, n)| format!("{url}: {n}"))
            .collect();
        let refused = self
            .summary
            .refused
            .take()
            .map(|r| format!("; last refusal: {r}"))
            .unwrap_or_default();
        crate::warn!(
            "webhooks: {} requests retried, {} events dropped since the last summary; waiting: [{}]{refused}",
            retries - self.summary.retries,
            dropped - self.summary.dropped,
            backlog.join(", ")
        );
        self.summary = Summary {
            last: Some(now),
            retries,
            dropped,
            refused: None,
        };
    }
}
