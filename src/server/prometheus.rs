//! `GET /metrics` in Prometheus's text exposition format, on a listener of its own (`RELAY_METRICS_HOST`,
//! `RELAY_METRICS_PORT`) served by one plain thread: a scrape sums the per-core blocks (and each app's) with
//! relaxed loads and never asks a core for anything.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::app::{App, AppRegistry};
use crate::http::response::Response;
use crate::metrics::{
    AppCounter, CloseReason, Counter, FANOUT_BUCKETS, Gauge, HTTP_STATUSES, HttpRoute, Metrics,
};
use crate::runtime::shared::Shared;
use crate::webhooks::WebhookStats;

/// A scraper must send its whole request within this, and take the answer within it too.
pub const SCRAPE_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read from a scraper.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Binds the metrics listener (an error names the address) and serves it from a thread of its own.
pub fn start(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("relay-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => answer(&shared, s),
                    // EMFILE and friends: back off instead of spinning.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })?;
    Ok(local)
}

/// One request per connection: a scrape is rare, and a scraper that stalls is cut at the timeout.
fn answer(shared: &Shared, mut stream: TcpStream) {
    // One deadline for the whole request (a per-read timeout would let a byte every few seconds hold the thread).
    let deadline = std::time::Instant::now() + SCRAPE_IO_TIMEOUT;
    let _ = stream.set_write_timeout(Some(SCRAPE_IO_TIMEOUT));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > MAX_REQUEST_BYTES {
            let mut out = Vec::new();
            plain(431, "request head too large\n").write_to(&mut out, false, false);
            let _ = stream.write_all(&out);
            return;
        }
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let response = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => Response::content(
            "text/plain; version=0.0.4; charset=utf-8",
            render(shared).into_bytes(),
        ),
        (_, b"/metrics") => plain(405, "GET only\n"),
        _ => plain(404, "not found: try /metrics\n"),
    };
    let mut out = Vec::with_capacity(response.body.len() + 160);
    response.write_to(&mut out, false, method == b"HEAD");
    let _ = stream.write_all(&out);
}

/// A short text answer (errors of this little listener are not the API's JSON ones).
fn plain(status: u16, body: &str) -> Response {
    let mut r = Response::content("text/plain", body.as_bytes().to_vec());
    r.status = status;
    r
}

/// A label value with `\`, `"` and newlines escaped, as the exposition format wants.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// One series with a line per app served.
fn per_app(
    out: &mut String,
    registry: &AppRegistry,
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&App) -> u64,
) {
    head(out, name, kind, help);
    for app in registry.iter() {
        let _ = writeln!(
            out,
            "{name}{{app=\"{}\"}} {}",
            label(&app.config.id),
            value(app)
        );
    }
}

/// Every series, summed over the cores.
pub fn render(shared: &Shared) -> String {
    let m: &Metrics = &shared.metrics;
    let registry = shared.registry();
    let mut out = String::with_capacity(8 * 1024);

    per_app(
        &mut out,
        &registry,
        "relay_connections",
        "gauge",
        "Open WebSocket connections, per app.",
        |app| app.live.connections.count(),
    );
    single(
        &mut out,
        "relay_connections_opened_total",
        "counter",
        "WebSocket connections accepted (after the Pusher handshake).",
        m.total(Counter::ConnectionsOpened),
    );
    head(
        &mut out,
        "relay_connections_closed_total",
        "counter",
        "WebSocket connections ended, by reason (the close code the server sent, or client).",
    );
    for r in CloseReason::ALL {
        let _ = writeln!(
            out,
            "relay_connections_closed_total{{reason=\"{}\"}} {}",
            r.label(),
            m.closed(r)
        );
    }
    per_app(
        &mut out,
        &registry,
        "relay_deliveries_total",
        "counter",
        "Frames queued to subscribers, per app.",
        |app| app.live.metrics.total(AppCounter::Deliveries),
    );
    head(
        &mut out,
        "relay_publishes_total",
        "counter",
        "Events published on this node, per app and source (rest: HTTP API; client: client events).",
    );
    for app in registry.iter() {
        let id = label(&app.config.id);
        for (source, c) in [
            ("rest", AppCounter::PublishesRest),
            ("client", AppCounter::PublishesClient),
        ] {
            let _ = writeln!(
                out,
                "relay_publishes_total{{app=\"{id}\",source=\"{source}\"}} {}",
                app.live.metrics.total(c)
            );
        }
    }
    single(
        &mut out,
        "relay_server_events_total",
        "counter",
        "Events the server made itself (member added/removed, subscription counts).",
        m.total(Counter::PublishesServer),
    );
    single(
        &mut out,
        "relay_ws_bytes_sent_total",
        "counter",
        "Bytes written to WebSocket clients.",
        m.total(Counter::WsBytesSent),
    );
    single(
        &mut out,
        "relay_ws_bytes_received_total",
        "counter",
        "Bytes read from WebSocket clients.",
        m.total(Counter::WsBytesReceived),
    );
    head(
        &mut out,
        "relay_http_requests_total",
        "counter",
        "HTTP requests answered, by route and status.",
    );
    for route in HttpRoute::ALL {
        for slot in 0..Metrics::STATUS_SLOTS {
            let n = m.http(route, slot);
            if n == 0 {
                continue;
            }
            let status = HTTP_STATUSES
                .get(slot)
                .map_or_else(|| "other".to_string(), |s| s.to_string());
            let _ = writeln!(
                out,
                "relay_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                route.label()
            );
        }
    }
    single(
        &mut out,
        "relay_channels",
        "gauge",
        "Occupied channels, all apps.",
        m.gauge(Gauge::OccupiedChannels).max(0) as u64,
    );
    single(
        &mut out,
        "relay_slow_reader_cutoffs_total",
        "counter",
        "Subscribers cut off because their output queue went over its cap (close 4100).",
        m.total(Counter::SlowReaderCutoffs),
    );
    single(
        &mut out,
        "relay_rate_limited_total",
        "counter",
        "REST events refused by an app's rate limit (429).",
        m.total(Counter::RateLimited),
    );
    single(
        &mut out,
        "relay_deliveries_dropped_total",
        "counter",
        "Frames not queued because the connection was already closing.",
        m.total(Counter::DeliveriesDropped),
    );
    single(
        &mut out,
        "relay_inbox_overflows_total",
        "counter",
        "Messages a core's inbox refused because it was full.",
        m.total(Counter::InboxOverflows),
    );
    single(
        &mut out,
        "relay_history_evictions_total",
        "counter",
        "Channel histories dropped to keep an app within its history byte budget.",
        m.total(Counter::HistoryEvictions),
    );
    single(
        &mut out,
        "relay_connection_errors_total",
        "counter",
        "Connections that failed before HTTP (accept errors, TLS handshakes that failed or timed out).",
        m.total(Counter::ConnectionErrors),
    );
    fanout(&mut out, m);
    webhooks(&mut out, shared);
    cluster(&mut out, shared);
    out
}

fn fanout(out: &mut String, m: &Metrics) {
    let name = "relay_publish_fanout_seconds";
    head(
        out,
        name,
        "histogram",
        "From a publication's arrival on this node to its last frame queued on this node.",
    );
    let (buckets, sum) = m.fanout();
    let mut cumulative = 0;
    for (i, n) in buckets.iter().enumerate() {
        cumulative += n;
        match FANOUT_BUCKETS.get(i) {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {cumulative}");
}

fn webhooks(out: &mut String, shared: &Shared) {
    let w = &shared.webhooks.stats;
    let get = WebhookStats::get;
    single(
        out,
        "relay_webhook_queue_depth",
        "gauge",
        "Webhook events held by the sender (queued, debounced, waiting for a retry).",
        get(&w.held),
    );
    single(
        out,
        "relay_webhook_delivered_total",
        "counter",
        "Webhook events delivered (2xx).",
        get(&w.delivered),
    );
    single(
        out,
        "relay_webhook_retries_total",
        "counter",
        "Webhook requests that failed and were scheduled again.",
        get(&w.retries),
    );
    single(
        out,
        "relay_webhook_dropped_total",
        "counter",
        "Webhook events lost (past the retry window, refused for good, or dropped by a full queue).",
        get(&w.dropped),
    );
}

fn cluster(out: &mut String, shared: &Shared) {
    let Some(c) = shared.cluster.get() else {
        return;
    };
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    single(
        out,
        "relay_cluster_redis_connected",
        "gauge",
        "1 while the node's subscriber connection to Redis is up.",
        u64::from(c.connected.load(Ordering::Acquire)),
    );
    single(
        out,
        "relay_cluster_published_total",
        "counter",
        "Publications sent to Redis.",
        get(&c.stats.published),
    );
    single(
        out,
        "relay_cluster_received_total",
        "counter",
        "Publications of other nodes received through Redis.",
        get(&c.stats.received),
    );
    single(
        out,
        "relay_cluster_dropped_total",
        "counter",
        "Publications lost (outage buffer overflowed, refused by Redis, or a full core inbox).",
        get(&c.stats.dropped),
    );
    single(
        out,
        "relay_cluster_redis_reconnects_total",
        "counter",
        "Connections to Redis made again after one failed.",
        get(&c.stats.reconnects),
    );
    single(
        out,
        "relay_cluster_bridge_backlog",
        "gauge",
        "Publications queued for Redis and not sent yet (the bridge's lag behind the cores).",
        c.backlog() as u64,
    );
    single(
        out,
        "relay_publishes_remote_total",
        "counter",
        "Publications of other nodes delivered on this node.",
        shared.metrics.total(Counter::PublishesRemote),
    );
}
