//! Operator settings (README "Operations"): the metrics listener, TLS, the dashboard, the log format, the drain and
//! compression, each with a name and a default.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, parse_bool, parse_num};

/// Where Prometheus scrapes `GET /metrics` (a port of its own, loopback by default: the counters name apps).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    pub host: IpAddr,
    /// 0 turns the endpoint off.
    pub port: u16,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 9601,
        }
    }
}

/// PEM files for `wss://` and `https://` on the main port; re-read on SIGHUP.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The dashboard page on the main port, behind HTTP Basic authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSettings {
    pub enabled: bool,
    /// Where the page is served (the seed's Relay: `/dashboard`).
    pub path: String,
    pub user: String,
    /// Required when enabled: relay refuses to start without it.
    pub password: String,
    /// Live event streams open at once, the whole server (each one is a viewer's tab).
    pub max_streams: usize,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            enabled: false,
            path: "/dashboard".into(),
            user: "admin".into(),
            password: String::new(),
            max_streams: 16,
        }
    }
}

/// permessage-deflate (README "Compression"): offered by the client, accepted unless off; each publication is
/// compressed once, when its frame is at least `min_bytes` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionSettings {
    pub enabled: bool,
    /// Smaller messages go out plain: deflate saves little on them and costs as much per publication.
    pub min_bytes: usize,
}

/// Default of `RELAY_COMPRESSION_MIN_BYTES`.
pub const COMPRESSION_MIN_BYTES: usize = 256;
/// Above this no WebSocket message is ever compressed, so a larger minimum is a mistake.
const MAX_COMPRESSION_MIN_BYTES: usize = 16 * 1024 * 1024;

impl Default for CompressionSettings {
    fn default() -> Self {
        CompressionSettings {
            enabled: true,
            min_bytes: COMPRESSION_MIN_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line: `{"ts":..,"level":..,"msg":..}`.
    Json,
}

/// Everything an operator sets besides apps and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsSettings {
    pub metrics: MetricsSettings,
    pub tls: Option<TlsSettings>,
    pub dashboard: DashboardSettings,
    pub log_format: LogFormat,
    /// SIGTERM: clients are closed (4200) spread over this, and the process exits within it.
    pub shutdown_grace: Duration,
    pub compression: CompressionSettings,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings {
            metrics: MetricsSettings::default(),
            tls: None,
            dashboard: DashboardSettings::default(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            compression: CompressionSettings::default(),
        }
    }
}

/// The longest drain relay accepts (an hour).
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);

/// Paths the dashboard may not take: they belong to the protocol and the API.
const RESERVED_PATHS: &[&str] = &["/app", "/apps", "/health", "/up", "/ready", "/stats"];

pub(super) fn apply(
    ops: &mut OpsSettings,
    get: &impl Fn(&str) -> Option<(String, String)>,
) -> Result<(), ConfigError> {
    if let Some((field, v)) = get("RELAY_METRICS_HOST") {
        ops.metrics.host = v
            .parse()
            .map_err(|_| ConfigError::new(field, format!("'{v}' is not an IP address")))?;
    }
    if let Some((field, v)) = get("RELAY_METRICS_PORT") {
        ops.metrics.port = parse_num(&field, &v)?;
    }
    match (get("RELAY_TLS_CERT"), get("RELAY_TLS_KEY")) {
        (None, None) => {}
        (Some((_, cert)), Some((_, key))) => {
            ops.tls = Some(TlsSettings {
                cert: cert.into(),
                key: key.into(),
            })
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                "RELAY_TLS_KEY",
                "needs RELAY_TLS_CERT's key",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "RELAY_TLS_CERT",
                "needs a certificate with RELAY_TLS_KEY",
            ));
        }
    }
    if let Some((field, v)) = get("RELAY_DASHBOARD_ENABLED") {
        ops.dashboard.enabled = parse_bool(&field, &v)?;
    }
    if let Some((_, v)) = get("RELAY_DASHBOARD_PATH") {
        ops.dashboard.path = v;
    }
    if let Some((_, v)) = get("RELAY_DASHBOARD_USER") {
        ops.dashboard.user = v;
    }
    if let Some((_, v)) = get("RELAY_DASHBOARD_PASSWORD") {
        ops.dashboard.password = v;
    }
    if let Some((field, v)) = get("RELAY_DASHBOARD_MAX_STREAMS") {
        ops.dashboard.max_streams = parse_num(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_LOG_FORMAT") {
        ops.log_format = match v.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::new(
                    field,
                    format!("'{v}' is not text or json"),
                ));
            }
        };
    }
    if let Some((field, v)) = get("RELAY_SHUTDOWN_GRACE") {
        ops.shutdown_grace = Duration::from_secs(parse_num(&field, &v)?);
    }
    if let Some((field, v)) = get("RELAY_COMPRESSION") {
        ops.compression.enabled = parse_bool(&field, &v)?;
    }
    if let Some((field, v)) = get("RELAY_COMPRESSION_MIN_BYTES") {
        ops.compression.min_bytes = parse_num(&field, &v)?;
    }
    Ok(())
}

impl OpsSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.dashboard;
        if d.enabled {
            if d.password.is_empty() {
                return Err(ConfigError::new(
                    "RELAY_DASHBOARD_PASSWORD",
                    "is required when the dashboard is enabled",
                ));
            }
            if d.user.is_empty() || d.user.contains(':') {
                return Err(ConfigError::new(
                    "RELAY_DASHBOARD_USER",
                    "must be non-empty and without ':' (HTTP Basic authentication)",
                ));
            }
            let reserved = RESERVED_PATHS
                .iter()
                .any(|r| d.path == *r || d.path.starts_with(&format!("{r}/")));
            if !d.path.starts_with('/')
                || d.path.len() < 2
                || d.path.ends_with('/')
                || d.path.contains(['?', '#', ' '])
                || reserved
            {
                return Err(ConfigError::new(
                    "RELAY_DASHBOARD_PATH",
                    format!(
                        "'{}' must start with '/', not end with one, and not be one of relay's own paths",
                        d.path
                    ),
                ));
            }
        }
        if self.compression.min_bytes > MAX_COMPRESSION_MIN_BYTES {
            return Err(ConfigError::new(
                "RELAY_COMPRESSION_MIN_BYTES",
                format!("must be at most {MAX_COMPRESSION_MIN_BYTES} (16 MiB)"),
            ));
        }
        if self.shutdown_grace.is_zero() || self.shutdown_grace > MAX_SHUTDOWN_GRACE {
            return Err(ConfigError::new(
                "RELAY_SHUTDOWN_GRACE",
                "must be between 1 and 3600 seconds",
            ));
        }
        Ok(())
    }
}
