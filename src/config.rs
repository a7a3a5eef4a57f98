//! Server and app configuration.
//!
//! Sources, highest precedence first: CLI flags, `RELAY_*` environment, the apps file (JSON), built-in defaults.
//! With no configuration at all the server listens on 0.0.0.0:6001 and serves one app
//! (`app-id` / `app-key` / `app-secret`), so `cargo run --release` is immediately usable.
//! Every limit lives here with a name and a default; `validate` turns a bad value into one message that names the
//! field and the problem.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::socket_id::MAX_CORES;

mod ops;
mod webhooks;
pub use ops::{
    COMPRESSION_MIN_BYTES, CompressionSettings, DashboardSettings, LogFormat, MetricsSettings,
    OpsSettings, TlsSettings,
};
pub use webhooks::{
    KindSet, WebhookConfig, WebhookFilter, WebhookKind, WebhookSettings, parse_event_list,
};

pub const DEFAULT_PORT: u16 = 6001;
pub const DEFAULT_APP_ID: &str = "app-id";
pub const DEFAULT_APP_KEY: &str = "app-key";
pub const DEFAULT_APP_SECRET: &str = "app-secret";

/// A configuration problem: which field, and what is wrong with it.
#[derive(Debug, PartialEq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// One tenant: credentials plus its own limits and switches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    pub id: String,
    pub key: String,
    pub secret: String,
    pub enabled: bool,
    /// Simultaneous connections for this app; 0 = unlimited. Over it: close 4004.
    pub max_connections: u64,
    /// Bytes of `data` per published event (docs/protocol.md#limits: 10 KB). Over it: 413.
    pub max_event_payload_bytes: usize,
    /// Channels in one publish (docs/protocol.md#publish: 100).
    pub max_channels_per_publish: usize,
    /// Events in one batch publish (docs/protocol.md#batch-publish: 10).
    pub max_batch_size: usize,
    /// Characters in a channel name (docs/protocol.md#channel-names: 200, strict Pusher 164).
    pub max_channel_name_length: usize,
    /// Characters in an event name (docs/protocol.md#publish: 200).
    pub max_event_name_length: usize,
    /// Whether `client-*` events are relayed (docs/protocol.md#client-events).
    pub client_events: bool,
    /// Distinct users in one presence channel (docs/protocol.md#presence: 100).
    pub max_presence_members: usize,
    /// Characters in a presence user id (docs/protocol.md#presence: 128).
    pub max_presence_user_id_length: usize,
    /// Bytes of a presence member's user_info (docs/protocol.md#presence: 1 KB).
    pub max_presence_user_info_bytes: usize,
    /// Client events per second per connection (docs/protocol.md#client-events: 10).
    pub max_client_events_per_second: u32,
    /// Send `pusher_internal:subscription_count` (docs/protocol.md#subscription-count).
    pub subscription_count: bool,
    /// Seconds a cache channel keeps its last event (docs/protocol.md#cache-channels: up to 30 min).
    pub cache_ttl_secs: u64,
    /// Connections must sign in or subscribe to an authorized channel in time
    /// (docs/protocol.md#authorized-connections).
    pub authorized_connections: bool,
    /// Watched users per signed-in connection (docs/protocol.md#watchlist: 100).
    pub max_watchlist_size: usize,
    /// Channels one connection may be subscribed to at once (subscribe beyond it: `pusher:error`).
    pub max_channels_per_connection: usize,
    /// Keep each channel's recent events, give them ids, replay them to resubscribing clients
    /// (docs/protocol.md#history).
    pub history_enabled: bool,
    /// Events kept per channel.
    pub history_max: usize,
    /// Seconds an event is kept.
    pub history_ttl_secs: u64,
    /// Bytes of history for the whole app; past it the channels written longest ago lose their history first.
    pub history_max_bytes: usize,
    /// Refuse REST publishes past `rate_limit_max` events per second (429).
    pub rate_limit_enabled: bool,
    /// Events per second the app may publish over REST (each event of a batch counts).
    pub rate_limit_max: u32,
    /// Base64 of 32 bytes: lets `POST /apps/{id}/auth` return `shared_secret` for encrypted channels
    /// (docs/protocol.md#encrypted-channels).
    pub encryption_master_key_base64: Option<String>,
    /// Where this app's webhooks go and what each receives (docs/protocol.md#webhooks).
    pub webhooks: Vec<WebhookConfig>,
}

impl AppConfig {
    /// The decoded master key, if configured (validated at start).
    pub fn master_key(&self) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.encryption_master_key_base64.as_ref()?)
            .ok()?;
        raw.try_into().ok()
    }

    /// Every kind some webhook of this app receives (the cores build events of these kinds only).
    pub fn webhook_kinds(&self) -> KindSet {
        self.webhooks
            .iter()
            .fold(KindSet::default(), |s, w| s.union(w.kinds()))
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            id: DEFAULT_APP_ID.into(),
            key: DEFAULT_APP_KEY.into(),
            secret: DEFAULT_APP_SECRET.into(),
            enabled: true,
            max_connections: 0,
            max_event_payload_bytes: 10 * 1024,
            max_channels_per_publish: 100,
            max_batch_size: 10,
            max_channel_name_length: 200,
            max_event_name_length: 200,
            client_events: true,
            max_presence_members: 100,
            max_presence_user_id_length: 128,
            max_presence_user_info_bytes: 1024,
            max_client_events_per_second: 10,
            subscription_count: false,
            cache_ttl_secs: 1800,
            authorized_connections: false,
            max_watchlist_size: 100,
            max_channels_per_connection: 1000,
            history_enabled: false,
            history_max: 100,
            history_ttl_secs: 3600,
            history_max_bytes: 64 * 1024 * 1024,
            rate_limit_enabled: false,
            rate_limit_max: 100,
            encryption_master_key_base64: None,
            webhooks: Vec::new(),
        }
    }
}

/// Stack of each core thread. JSON nesting is capped (`json::MAX_JSON_DEPTH`) before sonic-rs recurses through it,
/// and the deepest accepted document needs about 4 MiB in a debug build (under 64 KiB in release): 16 MiB leaves a
/// wide margin in both. Only touched pages cost memory.
pub const CORE_STACK_BYTES: usize = 16 * 1024 * 1024;

/// Events one channel's history may keep, whatever an app asks for.
pub const MAX_HISTORY_PER_CHANNEL: usize = 10_000;

/// Server-wide limits. Each has a name, a default and a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Whole-server connection capacity; 0 = unlimited. Over it: close 4100 (clients back off).
    pub max_connections: u64,
    /// Distinct occupied channels, all apps, all cores: a subscribe that would open one more gets `pusher:error`
    /// 4100. Any client can create channels, and each costs an index entry on its core and facts on its home.
    /// At the limit a core takes new subscribers only for channels it already has (whether another core has a
    /// channel is known only to the channel's home).
    pub max_channels: usize,
    /// Largest WebSocket message (after reassembly) a client may send. Checked right after a frame header.
    pub max_ws_message_bytes: usize,
    /// A WebSocket message sent in fragments must be complete within this (close 1008 otherwise).
    pub ws_fragment_timeout: Duration,
    /// Bytes queued for one connection before it is closed as a slow reader (4100-range code, see protocol).
    pub max_outbound_queue_bytes: usize,
    /// Request line plus headers.
    pub max_http_head_bytes: usize,
    /// Header count per request.
    pub max_http_headers: usize,
    /// Request body (Content-Length).
    pub max_http_body_bytes: usize,
    /// A request head or body must arrive within this (slowloris guard).
    pub http_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub http_idle_timeout: Duration,
    /// A response must be taken by the client within this, or the connection is closed.
    pub http_write_timeout: Duration,
    /// Messages queued in one core's inbox before publishers are told the server is overloaded.
    pub core_inbox_capacity: usize,
    /// Entries each app's event log keeps (`GET /apps/{id}/events/log`); 0 turns the log off.
    pub event_log_max: usize,
    /// REST timestamp window (docs/protocol.md#auth-parameters: 600 s).
    pub auth_timestamp_window_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 0,
            max_channels: 1_000_000,
            max_ws_message_bytes: 64 * 1024,
            ws_fragment_timeout: Duration::from_secs(10),
            max_outbound_queue_bytes: 1024 * 1024,
            max_http_head_bytes: 16 * 1024,
            max_http_headers: 64,
            max_http_body_bytes: 1024 * 1024,
            http_read_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            http_write_timeout: Duration::from_secs(10),
            core_inbox_capacity: 64 * 1024,
            auth_timestamp_window_secs: 600,
            event_log_max: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// Worker cores (one pinned thread and one runtime each).
    pub workers: usize,
    pub debug: bool,
    /// Seconds of client silence before the server checks liveness (sent in connection_established).
    pub activity_timeout_secs: u64,
    /// Seconds to wait for any reply to that check before closing with 4201.
    pub pong_timeout_secs: u64,
    /// Seconds a connection of an authorized-connections app has to sign in (docs/protocol.md#authorized-connections:
    /// 30).
    pub authorized_connection_timeout_secs: u64,
    pub limits: Limits,
    /// How webhooks are delivered (for every app).
    pub webhooks: WebhookSettings,
    /// Nodes sharing their apps through Redis; `None` runs one node alone.
    pub cluster: Option<ClusterConfig>,
    /// Metrics listener, TLS, dashboard, log format, drain.
    pub ops: OpsSettings,
    pub apps: Vec<AppConfig>,
}

impl Config {
    /// Some app has a webhook (else the sender does not run).
    pub fn has_webhooks(&self) -> bool {
        self.apps.iter().any(|a| !a.webhooks.is_empty())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: DEFAULT_PORT,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            debug: false,
            activity_timeout_secs: 120,
            pong_timeout_secs: 30,
            authorized_connection_timeout_secs: 30,
            limits: Limits::default(),
            webhooks: WebhookSettings::default(),
            cluster: None,
            ops: OpsSettings::default(),
            apps: vec![AppConfig::default()],
        }
    }
}

/// A cluster of nodes over Redis (docs/protocol.md#cluster).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` (`rediss://` for TLS).
    pub redis_url: String,
    /// This node's name in Redis, logs and metrics; unique in the cluster.
    pub node_id: String,
    /// Prefix of every Redis key and channel relay uses, so clusters can share one Redis.
    pub prefix: String,
    /// Publications held while Redis is unreachable, sent when it is back; past it the oldest are dropped.
    pub outage_buffer: usize,
    /// A node whose heartbeat is older than this is dead: a survivor removes its members (and tells everyone).
    pub node_timeout: Duration,
}

impl ClusterConfig {
    fn new(redis_url: String) -> Self {
        ClusterConfig {
            redis_url,
            node_id: generated_node_id(),
            prefix: "relay".into(),
            outage_buffer: 10_000,
            node_timeout: Duration::from_secs(5),
        }
    }
}

/// `host-pid-random`: readable in logs, unique across restarts.
fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() { "node".into() } else { host };
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        crate::socket_id::random_seed() & 0xff_ffff
    )
}

/// The apps file: server settings (all optional) and the apps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AppsFile {
    host: Option<String>,
    port: Option<u16>,
    workers: Option<usize>,
    debug: Option<bool>,
    activity_timeout: Option<u64>,
    max_connections: Option<u64>,
    apps: Vec<AppConfig>,
}

/// Settings that may come from the environment or CLI flags, keyed by the env name.
const SETTINGS: &[(&str, &str, &str)] = &[
    // (env var, cli flag, meaning)
    ("RELAY_HOST", "--host", "address to listen on"),
    (
        "RELAY_PORT",
        "--port",
        "port for WebSocket and HTTP (0 = any free port)",
    ),
    ("RELAY_WORKERS", "--workers", "worker cores"),
    (
        "RELAY_APPS_FILE",
        "--apps-file",
        "JSON file with server settings and apps",
    ),
    ("RELAY_APP_ID", "--app-id", "id of the default app"),
    ("RELAY_APP_KEY", "--app-key", "key of the default app"),
    (
        "RELAY_APP_SECRET",
        "--app-secret",
        "secret of the default app",
    ),
    (
        "RELAY_MAX_CONNECTIONS",
        "--max-connections",
        "connections allowed for the default app (0 = unlimited)",
    ),
    (
        "RELAY_SERVER_MAX_CONNECTIONS",
        "--server-max-connections",
        "connections for the whole server (0 = unlimited)",
    ),
    (
        "RELAY_MAX_CHANNELS",
        "--max-channels",
        "distinct occupied channels for the whole server",
    ),
    ("RELAY_DEBUG", "--debug", "debug logging (true/false)"),
    (
        "RELAY_ACTIVITY_TIMEOUT",
        "--activity-timeout",
        "seconds of client silence before a liveness check",
    ),
    (
        "RELAY_PONG_TIMEOUT",
        "--pong-timeout",
        "seconds to answer a liveness check",
    ),
    (
        "RELAY_HTTP_READ_TIMEOUT",
        "--http-read-timeout",
        "seconds a request head and body may take to arrive",
    ),
    (
        "RELAY_HTTP_IDLE_TIMEOUT",
        "--http-idle-timeout",
        "seconds an idle keep-alive connection is kept",
    ),
    (
        "RELAY_HTTP_WRITE_TIMEOUT",
        "--http-write-timeout",
        "seconds a client may take to read a response",
    ),
    (
        "RELAY_AUTHORIZED_CONNECTION_TIMEOUT",
        "--authorized-connection-timeout",
        "seconds to sign in when an app requires authorized connections",
    ),
    (
        "RELAY_CLIENT_EVENTS",
        "--client-events",
        "relay client-* events for the default app (true/false)",
    ),
    (
        "RELAY_SUBSCRIPTION_COUNT",
        "--subscription-count",
        "send subscription_count events (true/false)",
    ),
    (
        "RELAY_HISTORY_ENABLED",
        "--history-enabled",
        "keep recent events per channel, with ids and replay (default for every app)",
    ),
    (
        "RELAY_HISTORY_MAX",
        "--history-max",
        "events kept per channel (default for every app)",
    ),
    (
        "RELAY_HISTORY_TTL",
        "--history-ttl",
        "seconds an event is kept (default for every app)",
    ),
    (
        "RELAY_RATE_LIMIT_ENABLED",
        "--rate-limit-enabled",
        "refuse REST publishes over the rate with 429 (default for every app)",
    ),
    (
        "RELAY_RATE_LIMIT_MAX",
        "--rate-limit-max",
        "REST events per second per app (default for every app)",
    ),
    (
        "RELAY_EVENT_LOG_MAX",
        "--event-log-max",
        "entries kept in each app's event log (0: off)",
    ),
    (
        "RELAY_WEBHOOK_URL",
        "--webhook-url",
        "a webhook URL for the default app",
    ),
    (
        "RELAY_WEBHOOK_EVENTS",
        "--webhook-events",
        "kinds that webhook receives, comma-separated (default: every Pusher kind)",
    ),
    (
        "RELAY_WEBHOOK_BATCH_MS",
        "--webhook-batch-ms",
        "milliseconds a webhook batch waits for more events (50)",
    ),
    (
        "RELAY_WEBHOOK_BATCH_SIZE",
        "--webhook-batch-size",
        "events per webhook request (100)",
    ),
    (
        "RELAY_WEBHOOK_TIMEOUT",
        "--webhook-timeout",
        "seconds a webhook request may take (5)",
    ),
    (
        "RELAY_WEBHOOK_RETRY_WINDOW",
        "--webhook-retry-window",
        "seconds a webhook event is retried before it is dropped (300)",
    ),
    (
        "RELAY_WEBHOOK_QUEUE_CAP",
        "--webhook-queue-cap",
        "webhook events held before the oldest are dropped (100000)",
    ),
    (
        "RELAY_WEBHOOK_QUEUE_MAX_BYTES",
        "--webhook-queue-max-bytes",
        "bytes of webhook events held before the oldest are dropped (67108864)",
    ),
    (
        "RELAY_WEBHOOK_DEBOUNCE_MS",
        "--webhook-debounce-ms",
        "milliseconds vacated/removed/offline wait for a return (3000)",
    ),
    (
        "RELAY_WEBHOOK_CONCURRENCY",
        "--webhook-concurrency",
        "webhook requests in flight at once (8)",
    ),
    (
        "RELAY_REDIS_URL",
        "--redis-url",
        "redis://host:port/db of the cluster (unset: one node alone)",
    ),
    (
        "RELAY_NODE_ID",
        "--node-id",
        "this node's name in the cluster (default: generated)",
    ),
    (
        "RELAY_REDIS_PREFIX",
        "--redis-prefix",
        "prefix of relay's Redis keys and channels (relay)",
    ),
    (
        "RELAY_CLUSTER_OUTAGE_BUFFER",
        "--cluster-outage-buffer",
        "publications held while Redis is unreachable (10000)",
    ),
    (
        "RELAY_CLUSTER_NODE_TIMEOUT",
        "--cluster-node-timeout",
        "seconds without a heartbeat before a node is removed from the cluster (5)",
    ),
    (
        "RELAY_MAX_WS_MESSAGE_BYTES",
        "--max-ws-message-bytes",
        "largest WebSocket message from a client",
    ),
    (
        "RELAY_WS_FRAGMENT_TIMEOUT",
        "--ws-fragment-timeout",
        "seconds a fragmented WebSocket message may take to complete",
    ),
    (
        "RELAY_MAX_OUTBOUND_QUEUE_BYTES",
        "--max-outbound-queue-bytes",
        "bytes queued per connection before it is cut off",
    ),
    (
        "RELAY_MAX_HTTP_BODY_BYTES",
        "--max-http-body-bytes",
        "largest HTTP request body",
    ),
    (
        "RELAY_METRICS_HOST",
        "--metrics-host",
        "address of the Prometheus endpoint (127.0.0.1)",
    ),
    (
        "RELAY_METRICS_PORT",
        "--metrics-port",
        "port of GET /metrics (9601; 0 = off)",
    ),
    (
        "RELAY_TLS_CERT",
        "--tls-cert",
        "PEM certificate chain: serve wss:// and https://",
    ),
    (
        "RELAY_TLS_KEY",
        "--tls-key",
        "PEM private key of --tls-cert",
    ),
    (
        "RELAY_DASHBOARD_ENABLED",
        "--dashboard-enabled",
        "serve the dashboard (true/false, default false)",
    ),
    (
        "RELAY_DASHBOARD_PATH",
        "--dashboard-path",
        "where the dashboard is served (/dashboard)",
    ),
    (
        "RELAY_DASHBOARD_USER",
        "--dashboard-user",
        "dashboard user name (admin)",
    ),
    (
        "RELAY_DASHBOARD_PASSWORD",
        "--dashboard-password",
        "dashboard password (required when enabled)",
    ),
    (
        "RELAY_DASHBOARD_MAX_STREAMS",
        "--dashboard-max-streams",
        "live dashboard streams open at once (16)",
    ),
    ("RELAY_LOG_FORMAT", "--log-format", "text or json"),
    (
        "RELAY_SHUTDOWN_GRACE",
        "--shutdown-grace",
        "seconds a SIGTERM drain spreads client closes over (10)",
    ),
    (
        "RELAY_COMPRESSION",
        "--compression",
        "accept permessage-deflate when a client offers it (on/off, default on)",
    ),
    (
        "RELAY_COMPRESSION_MIN_BYTES",
        "--compression-min-bytes",
        "smallest message sent compressed (256)",
    ),
];

pub fn usage() -> String {
    let mut s = String::from(
        "relay: a Pusher-Channels-compatible realtime server\n\nUSAGE: relay [FLAGS]\n\nEvery flag also reads from its environment variable; flags win.\n\n",
    );
    for (env, flag, meaning) in SETTINGS {
        s.push_str(&format!("  {flag:<28} {env:<32} {meaning}\n"));
    }
    s.push_str("  --check-config               check the configuration, print the effective settings, exit\n");
    s.push_str("  --help                       print this\n");
    s
}

/// What `load` found on the command line besides settings.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    /// `--check-config`: the configuration is valid; print it and exit.
    Check(Box<Config>),
    Help,
}

/// Builds the configuration from the process environment and arguments.
pub fn load() -> Result<Command, ConfigError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |name: &str| std::env::var(name).ok();
    load_from(&args, env)
}

/// Pure form of `load` for tests: `env` looks a variable up.
pub fn load_from(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, ConfigError> {
    let mut flags: Vec<(&'static str, String)> = Vec::new();
    let mut check = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        if arg == "--check-config" {
            check = true;
            i += 1;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let Some(&(env_name, _, _)) = SETTINGS.iter().find(|(_, flag, _)| *flag == name) else {
            return Err(ConfigError::new(arg.clone(), "unknown flag (see --help)"));
        };
        let value = match inline {
            Some(v) => v,
            None if name == "--debug" => "true".to_string(),
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| ConfigError::new(name, "needs a value"))?
            }
        };
        flags.push((env_name, value));
        i += 1;
    }
    // CLI flags shadow the environment.
    let get = |name: &str| -> Option<(String, String)> {
        if let Some((_, v)) = flags.iter().rev().find(|(n, _)| *n == name) {
            let flag = SETTINGS
                .iter()
                .find(|(e, _, _)| *e == name)
                .map(|s| s.1)
                .unwrap_or(name);
            return Some((flag.to_string(), v.clone()));
        }
        env(name).map(|v| (name.to_string(), v))
    };

    let mut config = Config::default();
    let mut set_in_file = Vec::new();
    if let Some((field, path)) = get("RELAY_APPS_FILE") {
        set_in_file = apply_apps_file(&mut config, &field, &path)?;
    }
    if let Some((field, v)) = get("RELAY_HOST") {
        config.host = v
            .parse()
            .map_err(|_| ConfigError::new(field, format!("'{v}' is not an IP address")))?;
    }
    if let Some((field, v)) = get("RELAY_PORT") {
        config.port = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_WORKERS") {
        config.workers = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_DEBUG") {
        config.debug = parse_bool(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_ACTIVITY_TIMEOUT") {
        config.activity_timeout_secs = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_PONG_TIMEOUT") {
        config.pong_timeout_secs = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_HTTP_READ_TIMEOUT") {
        config.limits.http_read_timeout = Duration::from_secs(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_HTTP_IDLE_TIMEOUT") {
        config.limits.http_idle_timeout = Duration::from_secs(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_HTTP_WRITE_TIMEOUT") {
        config.limits.http_write_timeout = Duration::from_secs(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_AUTHORIZED_CONNECTION_TIMEOUT") {
        config.authorized_connection_timeout_secs = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_SERVER_MAX_CONNECTIONS") {
        config.limits.max_connections = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_MAX_CHANNELS") {
        config.limits.max_channels = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_MAX_WS_MESSAGE_BYTES") {
        config.limits.max_ws_message_bytes = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_WS_FRAGMENT_TIMEOUT") {
        config.limits.ws_fragment_timeout = Duration::from_secs(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_MAX_OUTBOUND_QUEUE_BYTES") {
        config.limits.max_outbound_queue_bytes = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_MAX_HTTP_BODY_BYTES") {
        config.limits.max_http_body_bytes = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_EVENT_LOG_MAX") {
        config.limits.event_log_max = parse_num(&field, &v)?;
    }
    apply_webhook_settings(&mut config.webhooks, &get)?;
    config.cluster = cluster_settings(&get)?;
    ops::apply(&mut config.ops, &get)?;
    apply_app_defaults(&mut config, &set_in_file, &get)?;
    let from_file = get("RELAY_APPS_FILE").is_some();
    apply_default_app(&mut config, from_file, &get)?;
    validate(&config)?;
    if check {
        return Ok(Command::Check(Box::new(config)));
    }
    Ok(Command::Run(Box::new(config)))
}

/// The effective configuration, for `--check-config`: every setting, secrets and passwords replaced.
pub fn describe(config: &Config) -> String {
    const HIDDEN: &str = "<redacted>";
    let mut c = config.clone();
    for app in &mut c.apps {
        app.secret = HIDDEN.into();
        if app.encryption_master_key_base64.is_some() {
            app.encryption_master_key_base64 = Some(HIDDEN.into());
        }
        for hook in &mut app.webhooks {
            for v in hook.headers.values_mut() {
                *v = HIDDEN.into();
            }
        }
    }
    if !c.ops.dashboard.password.is_empty() {
        c.ops.dashboard.password = HIDDEN.into();
    }
    if let Some(cluster) = &mut c.cluster
        && let (Some(scheme), Some(at)) =
            (cluster.redis_url.find("://"), cluster.redis_url.rfind('@'))
        && at > scheme
    {
        cluster.redis_url = format!(
            "{}://{HIDDEN}@{}",
            &cluster.redis_url[..scheme],
            &cluster.redis_url[at + 1..]
        );
    }
    format!("{c:#?}\n")
}

/// Settings a reload cannot apply to a running server (only apps are reloaded; the TLS files are re-read): the
/// names of those that differ, for one log line.
pub fn restart_only_changes(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut note = |differs: bool, name: &'static str| {
        if differs {
            changed.push(name);
        }
    };
    note(running.host != next.host, "host");
    note(running.port != next.port, "port");
    note(running.workers != next.workers, "workers");
    note(running.debug != next.debug, "debug");
    note(
        running.activity_timeout_secs != next.activity_timeout_secs
            || running.pong_timeout_secs != next.pong_timeout_secs,
        "activity_timeout",
    );
    note(running.limits != next.limits, "limits");
    note(running.cluster != next.cluster, "cluster");
    note(running.ops != next.ops, "operations settings");
    let hooks = |c: &Config| -> Vec<(String, Vec<WebhookConfig>)> {
        c.apps
            .iter()
            .map(|a| (a.id.clone(), a.webhooks.clone()))
            .filter(|(_, h)| !h.is_empty())
            .collect()
    };
    note(
        running.webhooks != next.webhooks || hooks(running) != hooks(next),
        "webhooks",
    );
    changed
}

fn cluster_settings(
    get: &impl Fn(&str) -> Option<(String, String)>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some((field, url)) = get("RELAY_REDIS_URL") else {
        for name in [
            "RELAY_NODE_ID",
            "RELAY_REDIS_PREFIX",
            "RELAY_CLUSTER_OUTAGE_BUFFER",
            "RELAY_CLUSTER_NODE_TIMEOUT",
        ] {
            if let Some((field, _)) = get(name) {
                return Err(ConfigError::new(field, "needs RELAY_REDIS_URL"));
            }
        }
        return Ok(None);
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ConfigError::new(
            field,
            format!("'{url}' is not a redis:// or rediss:// URL"),
        ));
    }
    let mut c = ClusterConfig::new(url);
    // Names that go into Redis keys and logs as they are.
    let name = |(field, v): (String, String)| {
        let ok = !v.is_empty()
            && v.len() <= 100
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(v)
        } else {
            Err(ConfigError::new(
                field,
                "1-100 letters, digits, '-', '_' or '.'",
            ))
        }
    };
    if let Some(v) = get("RELAY_NODE_ID") {
        c.node_id = name(v)?;
    }
    if let Some(v) = get("RELAY_REDIS_PREFIX") {
        c.prefix = name(v)?;
    }
    if let Some((field, v)) = get("RELAY_CLUSTER_OUTAGE_BUFFER") {
        c.outage_buffer = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_CLUSTER_NODE_TIMEOUT") {
        let secs: u64 = parse_num(&field, &v)?;
        if !(2..=600).contains(&secs) {
            return Err(ConfigError::new(field, "must be between 2 and 600 seconds"));
        }
        c.node_timeout = Duration::from_secs(secs);
    }
    Ok(Some(c))
}

fn apply_webhook_settings(
    w: &mut WebhookSettings,
    get: &impl Fn(&str) -> Option<(String, String)>,
) -> Result<(), ConfigError> {
    let millis = |v: u64| Duration::from_millis(v);
    let secs = Duration::from_secs;
    if let Some((field, v)) = get("RELAY_WEBHOOK_BATCH_MS") {
        w.batch_window = millis(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_WEBHOOK_BATCH_SIZE") {
        w.batch_size = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_WEBHOOK_TIMEOUT") {
        w.request_timeout = secs(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_WEBHOOK_RETRY_WINDOW") {
        w.retry_window = secs(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_WEBHOOK_QUEUE_CAP") {
        w.queue_cap = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_WEBHOOK_QUEUE_MAX_BYTES") {
        w.queue_max_bytes = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_WEBHOOK_DEBOUNCE_MS") {
        w.debounce = millis(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_WEBHOOK_CONCURRENCY") {
        w.concurrency = parse_num(&field, &v)?;
    }
    Ok(())
}

/// Per-app settings that `RELAY_*` environment and flags give every app a default for; an app of the apps file
/// keeps the value it sets itself.
#[derive(Debug, Default, Deserialize)]
struct AppSetsItself {
    history_enabled: Option<bool>,
    history_max: Option<usize>,
    history_ttl_secs: Option<u64>,
    rate_limit_enabled: Option<bool>,
    rate_limit_max: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct AppsFileSets {
    #[serde(default)]
    apps: Vec<AppSetsItself>,
}

fn apply_app_defaults(
    config: &mut Config,
    set_in_file: &[AppSetsItself],
    get: &impl Fn(&str) -> Option<(String, String)>,
) -> Result<(), ConfigError> {
    let history_enabled = get("RELAY_HISTORY_ENABLED")
        .map(|(f, v)| parse_bool(&f, &v))
        .transpose()?;
    let history_max = get("RELAY_HISTORY_MAX")
        .map(|(f, v)| parse_num::<usize>(&f, &v))
        .transpose()?;
    let history_ttl = get("RELAY_HISTORY_TTL")
        .map(|(f, v)| parse_num::<u64>(&f, &v))
        .transpose()?;
    let rate_enabled = get("RELAY_RATE_LIMIT_ENABLED")
        .map(|(f, v)| parse_bool(&f, &v))
        .transpose()?;
    let rate_max = get("RELAY_RATE_LIMIT_MAX")
        .map(|(f, v)| parse_num::<u32>(&f, &v))
        .transpose()?;
    let nothing = AppSetsItself::default();
    for (i, app) in config.apps.iter_mut().enumerate() {
        let own = set_in_file.get(i).unwrap_or(&nothing);
        if let (Some(v), None) = (history_enabled, own.history_enabled) {
            app.history_enabled = v;
        }
        if let (Some(v), None) = (history_max, own.history_max) {
            app.history_max = v;
        }
        if let (Some(v), None) = (history_ttl, own.history_ttl_secs) {
            app.history_ttl_secs = v;
        }
        if let (Some(v), None) = (rate_enabled, own.rate_limit_enabled) {
            app.rate_limit_enabled = v;
        }
        if let (Some(v), None) = (rate_max, own.rate_limit_max) {
            app.rate_limit_max = v;
        }
    }
    Ok(())
}

/// The `RELAY_APP_*` settings describe one app. Without an apps file it is the only app; with one, it overrides
/// the file's app of the same id, or is added to the file's apps.
fn apply_default_app(
    config: &mut Config,
    from_file: bool,
    get: &impl Fn(&str) -> Option<(String, String)>,
) -> Result<(), ConfigError> {
    let id = get("RELAY_APP_ID");
    let key = get("RELAY_APP_KEY");
    let secret = get("RELAY_APP_SECRET");
    let max = get("RELAY_MAX_CONNECTIONS");
    let client_events = get("RELAY_CLIENT_EVENTS");
    let sub_count = get("RELAY_SUBSCRIPTION_COUNT");
    let webhook_url = get("RELAY_WEBHOOK_URL");
    let webhook_events = get("RELAY_WEBHOOK_EVENTS");
    if let (None, Some((field, _))) = (&webhook_url, &webhook_events) {
        return Err(ConfigError::new(
            field.clone(),
            "names the kinds of RELAY_WEBHOOK_URL, which is not set",
        ));
    }
    let any = webhook_url.is_some()
        || id.is_some()
        || key.is_some()
        || secret.is_some()
        || max.is_some()
        || client_events.is_some()
        || sub_count.is_some();
    if !any {
        return Ok(());
    }
    let target_id = id.as_ref().map(|(_, v)| v.clone());
    let index = match &target_id {
        _ if !from_file => Some(0),
        Some(wanted) => config.apps.iter().position(|a| &a.id == wanted),
        None => (!config.apps.is_empty()).then_some(0),
    };
    let index = match index {
        Some(i) => i,
        None => {
            config.apps.push(AppConfig::default());
            config.apps.len() - 1
        }
    };
    let app = &mut config.apps[index];
    if let Some((_, v)) = id {
        app.id = v;
    }
    if let Some((_, v)) = key {
        app.key = v;
    }
    if let Some((_, v)) = secret {
        app.secret = v;
    }
    if let Some((field, v)) = max {
        app.max_connections = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = client_events {
        app.client_events = parse_bool(&field, &v)?;
    }
    if let Some((field, v)) = sub_count {
        app.subscription_count = parse_bool(&field, &v)?;
    }
    if let Some((_, url)) = webhook_url {
        let event_types = webhook_events
            .map(|(field, v)| parse_event_list(&field, &v))
            .transpose()?;
        app.webhooks.push(WebhookConfig {
            url,
            event_types,
            ..WebhookConfig::default()
        });
    }
    Ok(())
}

/// Parses and validates the bytes of an apps file as `--apps-file` would with no other setting: the file's values
/// over the defaults, then [`validate`]. The same code path as loading the file (the fuzz targets call this).
pub fn parse_apps_file(bytes: &[u8]) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    apply_apps_bytes(&mut config, "apps file", bytes)?;
    validate(&config)?;
    Ok(config)
}

/// Applies the apps file at `path`; returns which per-app settings each app sets itself.
fn apply_apps_file(
    config: &mut Config,
    field: &str,
    path: &str,
) -> Result<Vec<AppSetsItself>, ConfigError> {
    let text = std::fs::read(path)
        .map_err(|e| ConfigError::new(field, format!("cannot read '{path}': {e}")))?;
    apply_apps_bytes(config, &format!("{field} '{path}'"), &text)?;
    let sets: AppsFileSets = crate::json::parse(&text).unwrap_or_default();
    Ok(sets.apps)
}

/// Applies the apps file `text` to `config`; `source` names the file in errors.
fn apply_apps_bytes(config: &mut Config, source: &str, text: &[u8]) -> Result<(), ConfigError> {
    let file: AppsFile = crate::json::parse_explained(text)
        .map_err(|e| ConfigError::new(source, format!("not a valid apps file: {e}")))?;
    if let Some(h) = file.host {
        config.host = h.parse().map_err(|_| {
            ConfigError::new("apps file: host", format!("'{h}' is not an IP address"))
        })?;
    }
    if let Some(p) = file.port {
        config.port = p;
    }
    if let Some(w) = file.workers {
        config.workers = w;
    }
    if let Some(d) = file.debug {
        config.debug = d;
    }
    if let Some(t) = file.activity_timeout {
        config.activity_timeout_secs = t;
    }
    if let Some(m) = file.max_connections {
        config.limits.max_connections = m;
    }
    if !file.apps.is_empty() {
        config.apps = file.apps;
    }
    Ok(())
}

fn parse_num<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::new(field, format!("'{v}' is not a valid non-negative number")))
}

fn parse_bool(field: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::new(
            field,
            format!("'{v}' is not true or false"),
        )),
    }
}

/// Checks the whole configuration; the first problem found is reported.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if config.workers == 0 || config.workers > MAX_CORES {
        return Err(ConfigError::new(
            "workers",
            format!("must be between 1 and {MAX_CORES} (socket ids number the core)"),
        ));
    }
    if config.activity_timeout_secs == 0 {
        return Err(ConfigError::new(
            "activity_timeout",
            "must be at least 1 second (pusher-js refuses 0)",
        ));
    }
    if config.pong_timeout_secs == 0 {
        return Err(ConfigError::new(
            "pong_timeout",
            "must be at least 1 second",
        ));
    }
    let l = &config.limits;
    if l.http_read_timeout.is_zero()
        || l.http_idle_timeout.is_zero()
        || l.http_write_timeout.is_zero()
    {
        return Err(ConfigError::new(
            "http_read_timeout",
            "HTTP timeouts must be at least 1 second",
        ));
    }
    if l.max_channels == 0 {
        return Err(ConfigError::new("max_channels", "must be at least 1"));
    }
    if l.ws_fragment_timeout.is_zero() {
        return Err(ConfigError::new(
            "ws_fragment_timeout",
            "must be at least 1 second",
        ));
    }
    if l.max_ws_message_bytes < 1024 {
        return Err(ConfigError::new(
            "max_ws_message_bytes",
            "must be at least 1024",
        ));
    }
    if l.max_outbound_queue_bytes < 64 * 1024 {
        return Err(ConfigError::new(
            "max_outbound_queue_bytes",
            "must be at least 65536",
        ));
    }
    if l.max_http_body_bytes < 1024 {
        return Err(ConfigError::new(
            "max_http_body_bytes",
            "must be at least 1024",
        ));
    }
    config.webhooks.validate()?;
    config.ops.validate()?;
    if config.apps.is_empty() {
        return Err(ConfigError::new("apps", "at least one app is needed"));
    }
    for (i, app) in config.apps.iter().enumerate() {
        let f = |name: &str| format!("apps[{i}].{name}");
        for (name, value) in [("id", &app.id), ("key", &app.key), ("secret", &app.secret)] {
            if value.is_empty() {
                return Err(ConfigError::new(f(name), "must not be empty"));
            }
            if value.len() > 200 || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    f(name),
                    "must be 1-200 printable ASCII characters without spaces",
                ));
            }
        }
        if app.id.contains('/') || app.key.contains('/') || app.key.contains('?') {
            return Err(ConfigError::new(
                f("id"),
                "id and key must not contain '/' or '?'",
            ));
        }
        if app.max_event_payload_bytes == 0 {
            return Err(ConfigError::new(
                f("max_event_payload_bytes"),
                "must be at least 1",
            ));
        }
        if app.max_channels_per_publish == 0 {
            return Err(ConfigError::new(
                f("max_channels_per_publish"),
                "must be at least 1",
            ));
        }
        if app.max_batch_size == 0 {
            return Err(ConfigError::new(f("max_batch_size"), "must be at least 1"));
        }
        if app.max_channel_name_length == 0 || app.max_event_name_length == 0 {
            return Err(ConfigError::new(
                f("max_channel_name_length"),
                "name lengths must be at least 1",
            ));
        }
        if app.history_max == 0 || app.history_max > MAX_HISTORY_PER_CHANNEL {
            return Err(ConfigError::new(
                f("history_max"),
                format!("must be between 1 and {MAX_HISTORY_PER_CHANNEL}"),
            ));
        }
        if app.history_ttl_secs == 0 {
            return Err(ConfigError::new(
                f("history_ttl_secs"),
                "must be at least 1",
            ));
        }
        if app.history_max_bytes < 1024 {
            return Err(ConfigError::new(
                f("history_max_bytes"),
                "must be at least 1024",
            ));
        }
        if app.rate_limit_max == 0 {
            return Err(ConfigError::new(
                f("rate_limit_max"),
                "must be at least 1 (turn rate_limit_enabled off instead)",
            ));
        }
        if app.encryption_master_key_base64.is_some() && app.master_key().is_none() {
            return Err(ConfigError::new(
                f("encryption_master_key_base64"),
                "must be base64 of exactly 32 bytes",
            ));
        }
        for (j, hook) in app.webhooks.iter().enumerate() {
            hook.validate(&f(&format!("webhooks[{j}]")))?;
        }
        for (j, other) in config.apps.iter().enumerate().take(i) {
            if other.id == app.id {
                return Err(ConfigError::new(
                    f("id"),
                    format!("'{}' is also the id of apps[{j}]", app.id),
                ));
            }
            if other.key == app.key {
                return Err(ConfigError::new(
                    f("key"),
                    format!("'{}' is also the key of apps[{j}]", app.key),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match load_from(&args, |n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })? {
            Command::Run(c) => Ok(*c),
            Command::Check(_) => panic!("check"),
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn operator_settings_have_defaults_names_and_checks() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.ops.metrics.port, 9601);
        assert_eq!(c.ops.metrics.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.ops.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.ops.log_format, LogFormat::Text);
        assert!(!c.ops.dashboard.enabled && c.ops.tls.is_none());
        assert_eq!(
            c.ops.compression,
            CompressionSettings {
                enabled: true,
                min_bytes: COMPRESSION_MIN_BYTES
            }
        );
        let c = run(
            &["--compression-min-bytes", "1024"],
            &[("RELAY_COMPRESSION", "off")],
        )
        .unwrap();
        assert!(!c.ops.compression.enabled);
        assert_eq!(c.ops.compression.min_bytes, 1024);
        let c = run(
            &["--metrics-port", "0", "--log-format", "json"],
            &[
                ("RELAY_SHUTDOWN_GRACE", "3"),
                ("RELAY_TLS_CERT", "c.pem"),
                ("RELAY_TLS_KEY", "k.pem"),
            ],
        )
        .unwrap();
        assert_eq!(c.ops.metrics.port, 0);
        assert_eq!(c.ops.log_format, LogFormat::Json);
        assert_eq!(c.ops.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.ops.tls.unwrap().key, std::path::PathBuf::from("k.pem"));
        let field = |env: &[(&str, &str)]| run(&[], env).unwrap_err().field;
        assert_eq!(field(&[("RELAY_TLS_CERT", "c.pem")]), "RELAY_TLS_KEY");
        assert_eq!(field(&[("RELAY_LOG_FORMAT", "xml")]), "RELAY_LOG_FORMAT");
        assert_eq!(
            field(&[("RELAY_SHUTDOWN_GRACE", "0")]),
            "RELAY_SHUTDOWN_GRACE"
        );
        assert_eq!(
            field(&[("RELAY_SHUTDOWN_GRACE", "18446744073709551615")]),
            "RELAY_SHUTDOWN_GRACE",
            "a grace past an hour would overflow the drain's deadline"
        );
        assert_eq!(
            field(&[("RELAY_COMPRESSION", "maybe")]),
            "RELAY_COMPRESSION"
        );
        assert_eq!(
            field(&[("RELAY_COMPRESSION_MIN_BYTES", "-1")]),
            "RELAY_COMPRESSION_MIN_BYTES"
        );
        assert_eq!(
            field(&[("RELAY_COMPRESSION_MIN_BYTES", "99999999")]),
            "RELAY_COMPRESSION_MIN_BYTES"
        );
        assert_eq!(
            field(&[("RELAY_DASHBOARD_ENABLED", "true")]),
            "RELAY_DASHBOARD_PASSWORD"
        );
        for path in ["/apps", "/app/x", "dash", "/", "/d/"] {
            assert_eq!(
                field(&[
                    ("RELAY_DASHBOARD_ENABLED", "true"),
                    ("RELAY_DASHBOARD_PASSWORD", "pw"),
                    ("RELAY_DASHBOARD_PATH", path)
                ]),
                "RELAY_DASHBOARD_PATH",
                "{path}"
            );
        }
        let c = run(
            &[],
            &[
                ("RELAY_DASHBOARD_ENABLED", "true"),
                ("RELAY_DASHBOARD_PASSWORD", "pw"),
                ("RELAY_DASHBOARD_PATH", "/ops/dash"),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.ops.dashboard.path.as_str(), c.ops.dashboard.user.as_str()),
            ("/ops/dash", "admin")
        );
    }

    #[test]
    fn check_config_describes_the_settings_without_secrets() {
        let args: Vec<String> = vec!["--check-config".into()];
        let env = |n: &str| match n {
            "RELAY_APP_SECRET" => Some("s3cret-value".to_string()),
            "RELAY_REDIS_URL" => Some("redis://user:hunter2@10.0.0.1:6379/0".to_string()),
            "RELAY_DASHBOARD_ENABLED" => Some("true".to_string()),
            "RELAY_DASHBOARD_PASSWORD" => Some("pw-value".to_string()),
            _ => None,
        };
        let Ok(Command::Check(c)) = load_from(&args, env) else {
            panic!("not a check")
        };
        let text = describe(&c);
        for hidden in ["s3cret-value", "hunter2", "pw-value"] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
        assert!(
            text.contains("10.0.0.1:6379") && text.contains("app-key"),
            "{text}"
        );
    }

    #[test]
    fn a_reload_names_the_settings_that_wait_for_a_restart() {
        let a = run(&[], &[]).unwrap();
        let b = run(&["--port", "7000"], &[("RELAY_APP_SECRET", "other")]).unwrap();
        assert_eq!(restart_only_changes(&a, &b), vec!["port"]);
        assert!(restart_only_changes(&a, &a).is_empty());
    }

    #[test]
    fn no_configuration_gives_the_default_app_on_6001() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.port, 6001);
        assert_eq!(c.apps, vec![AppConfig::default()]);
        assert_eq!(c.apps[0].key, "app-key");
    }

    #[test]
    fn flags_beat_environment() {
        let c = run(
            &["--port", "7000", "--app-key=k2"],
            &[("RELAY_PORT", "6500"), ("RELAY_APP_KEY", "k1")],
        )
        .unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.apps[0].key, "k2");
    }

    #[test]
    fn environment_sets_the_default_app() {
        let c = run(
            &[],
            &[
                ("RELAY_APP_ID", "1"),
                ("RELAY_APP_SECRET", "s"),
                ("RELAY_MAX_CONNECTIONS", "5"),
            ],
        )
        .unwrap();
        assert_eq!(c.apps.len(), 1);
        assert_eq!(
            (
                c.apps[0].id.as_str(),
                c.apps[0].secret.as_str(),
                c.apps[0].max_connections
            ),
            ("1", "s", 5)
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        let e = run(&[], &[("RELAY_PORT", "http")]).unwrap_err();
        assert_eq!(e.field, "RELAY_PORT");
        let e = run(&["--workers", "0"], &[]).unwrap_err();
        assert_eq!(e.field, "workers");
        let e = run(&["--bogus"], &[]).unwrap_err();
        assert_eq!(e.field, "--bogus");
    }

    #[test]
    fn history_and_rate_settings_are_defaults_apps_may_override() {
        let dir =
            std::env::temp_dir().join(format!("relay-config-defaults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("apps.json");
        std::fs::write(
            &file,
            r#"{"apps":[{"id":"1","key":"k1","secret":"s1"},{"id":"2","key":"k2","secret":"s2","history_enabled":false,"rate_limit_max":7}]}"#,
        )
        .unwrap();
        let c = run(
            &["--history-max", "50"],
            &[
                ("RELAY_APPS_FILE", file.to_str().unwrap()),
                ("RELAY_HISTORY_ENABLED", "true"),
                ("RELAY_RATE_LIMIT_MAX", "20"),
                ("RELAY_EVENT_LOG_MAX", "10"),
            ],
        )
        .unwrap();
        assert!(
            c.apps[0].history_enabled && !c.apps[1].history_enabled,
            "an app's own value wins"
        );
        assert_eq!((c.apps[0].history_max, c.apps[1].history_max), (50, 50));
        assert_eq!(
            (c.apps[0].rate_limit_max, c.apps[1].rate_limit_max),
            (20, 7)
        );
        assert_eq!(c.limits.event_log_max, 10);
        let c = run(&[], &[("RELAY_HISTORY_ENABLED", "yes")]).unwrap();
        assert!(
            c.apps[0].history_enabled,
            "the default app takes the environment"
        );
        let e = run(&["--history-max", "0"], &[]).unwrap_err();
        assert_eq!(e.field, "apps[0].history_max");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn webhook_settings_come_from_the_environment_and_the_apps_file() {
        let c = run(
            &["--webhook-debounce-ms", "0"],
            &[
                ("RELAY_WEBHOOK_URL", "http://127.0.0.1:9/hooks"),
                ("RELAY_WEBHOOK_EVENTS", "member_added, user_online"),
                ("RELAY_WEBHOOK_RETRY_WINDOW", "30"),
            ],
        )
        .unwrap();
        assert_eq!(c.apps[0].webhooks.len(), 1);
        let kinds = c.apps[0].webhook_kinds();
        assert!(kinds.contains(WebhookKind::UserOnline) && !kinds.contains(WebhookKind::CacheMiss));
        assert_eq!(c.webhooks.debounce, Duration::ZERO);
        assert_eq!(c.webhooks.retry_window, Duration::from_secs(30));
        assert_eq!(c.webhooks.batch_size, 100, "defaults stay");

        let e = run(&[], &[("RELAY_WEBHOOK_EVENTS", "member_added")]).unwrap_err();
        assert_eq!(e.field, "RELAY_WEBHOOK_EVENTS");
        let e = run(&[], &[("RELAY_WEBHOOK_URL", "ftp://x")]).unwrap_err();
        assert_eq!(e.field, "apps[0].webhooks[0].url");
        let e = run(&["--webhook-batch-size", "0"], &[]).unwrap_err();
        assert_eq!(e.field, "webhook_batch_size");

        let c = parse_apps_file(
            br#"{"apps":[{"id":"1","key":"k","secret":"s","webhooks":[{"url":"https://h/x","filter":{"channel_name_ends_with":"-room"},"headers":{"Authorization":"t"}}]}]}"#,
        )
        .unwrap();
        let hook = &c.apps[0].webhooks[0];
        assert!(hook.kinds().contains(WebhookKind::ChannelOccupied));
        assert!(hook.filter.matches(Some("a-room")));
        assert!(!hook.filter.matches(Some("a-hall")));
        assert!(
            !hook.kinds().contains(WebhookKind::UserOnline),
            "user kinds are opt-in"
        );
        let e = parse_apps_file(
            br#"{"apps":[{"id":"1","key":"k","secret":"s","webhooks":[{"url":"https://h/x","event_types":["nope"]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "apps[0].webhooks[0].event_types");
    }

    #[test]
    fn apps_file_is_read_and_validated() {
        let dir = std::env::temp_dir().join(format!("relay-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("apps.json");
        std::fs::write(
            &good,
            r#"{"port":7001,"apps":[{"id":"1","key":"k1","secret":"s1","max_connections":3},{"id":"2","key":"k2","secret":"s2","client_events":false}]}"#,
        )
        .unwrap();
        let c = run(
            &[],
            &[
                ("RELAY_APPS_FILE", good.to_str().unwrap()),
                ("RELAY_PORT", "7002"),
            ],
        )
        .unwrap();
        assert_eq!(c.port, 7002, "environment beats the apps file");
        assert_eq!(c.apps.len(), 2);
        assert_eq!(c.apps[0].max_connections, 3);
        assert!(!c.apps[1].client_events);
        assert_eq!(c.apps[1].max_batch_size, 10, "unset fields take defaults");

        let dup = dir.join("dup.json");
        std::fs::write(
            &dup,
            r#"{"apps":[{"id":"1","key":"k","secret":"s"},{"id":"1","key":"k2","secret":"s"}]}"#,
        )
        .unwrap();
        let e = run(&[], &[("RELAY_APPS_FILE", dup.to_str().unwrap())]).unwrap_err();
        assert_eq!(e.field, "apps[1].id");

        let unknown = dir.join("unknown.json");
        std::fs::write(
            &unknown,
            r#"{"apps":[{"id":"1","key":"k","secret":"s","colour":"red"}]}"#,
        )
        .unwrap();
        let e = run(&[], &[("RELAY_APPS_FILE", unknown.to_str().unwrap())]).unwrap_err();
        assert!(e.problem.contains("colour"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn apps_file_bytes_are_parsed_and_validated() {
        let c = parse_apps_file(
            br#"{"port":7001,"workers":2,"apps":[{"id":"1","key":"k1","secret":"s1","max_batch_size":5}]}"#,
        )
        .unwrap();
        assert_eq!((c.port, c.workers), (7001, 2));
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].max_batch_size, 5);
        assert_eq!(c.apps[0].max_channel_name_length, 200, "defaults fill in");
        // No apps in the file keeps the default app.
        assert_eq!(
            parse_apps_file(br#"{"workers":1}"#).unwrap().apps,
            vec![AppConfig::default()]
        );
        let e = parse_apps_file(
            b"{\"apps\":[{\"id\":\"1\",\"key\":\"k\",\"secret\":\"s\",\"colour\":1}]}",
        )
        .unwrap_err();
        assert_eq!(e.field, "apps file");
        assert!(e.problem.contains("colour"), "{e}");
        let e = parse_apps_file(br#"{"workers":0}"#).unwrap_err();
        assert_eq!(e.field, "workers", "validated");
        let e = parse_apps_file(br#"{"workers":1,"apps":[{"id":"a b","key":"k","secret":"s"}]}"#)
            .unwrap_err();
        assert_eq!(e.field, "apps[0].id");
        let mut deep = b"{\"apps\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 10_000));
        assert!(
            parse_apps_file(&deep)
                .unwrap_err()
                .problem
                .contains("deeper")
        );
    }
}
