//! Pusher's checks on a WebSocket upgrade (docs/protocol.md#connection): the app key in the path, the protocol
//! version, and admission in Pusher's order, each refusal with its close code.

use std::sync::Arc;

use crate::app::{App, AppRegistry, ConnectionQuota};
use crate::protocol::codes::close;

/// The app key from `/app/{key}`, if the path has that shape.
pub fn app_key_from_path(path: &str) -> Option<&str> {
    let key = path.strip_prefix("/app/")?;
    let key = key.strip_suffix('/').unwrap_or(key);
    (!key.is_empty() && !key.contains('/')).then_some(key)
}

/// Protocol 7 (5 and 6 behave the same); a missing `protocol` is taken as 7 (lenient, docs/protocol.md#connection).
pub fn protocol_supported(query: &str) -> bool {
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("protocol=") {
            return matches!(v.parse::<u32>(), Ok(5..=7));
        }
    }
    true
}

/// Why a connection is refused after the upgrade: `pusher:error` then Close, both with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub message: String,
}

impl Refusal {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// Admits a connection to the app with `key`, in Pusher's order: known key (4001), enabled (4003), protocol
/// (4007), draining (4200), app quota (4004), server capacity (4100). On success one slot of the app's quota and
/// one of the server's are held; [`release`] gives them back when the connection ends.
pub fn admit(
    apps: &AppRegistry,
    server: &ConnectionQuota,
    key: &str,
    query: &str,
    draining: bool,
) -> Result<Arc<App>, Refusal> {
    let Some(app) = apps.by_key(key) else {
        return Err(Refusal::new(
            close::UNKNOWN_APP,
            format!("App key {key} not in this cluster. Did you forget to specify the cluster?"),
        ));
    };
    if !app.config.enabled {
        return Err(Refusal::new(close::APP_DISABLED, "Application is disabled"));
    }
    if !protocol_supported(query) {
        return Err(Refusal::new(
            close::UNSUPPORTED_PROTOCOL,
            "Unsupported protocol version: use 7",
        ));
    }
    if draining {
        return Err(Refusal::new(close::RECONNECT, "Server is shutting down"));
    }
    if !app.live.connections.try_add() {
        return Err(Refusal::new(
            close::APP_OVER_QUOTA,
            "Application is over connection quota",
        ));
    }
    if !server.try_add() {
        app.live.connections.remove();
        return Err(Refusal::new(
            close::OVER_CAPACITY,
            "Server is over capacity",
        ));
    }
    Ok(app.clone())
}

/// Gives back the slots [`admit`] took.
pub fn release(app: &App, server: &ConnectionQuota) {
    app.live.connections.remove();
    server.remove();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    #[test]
    fn app_paths_and_protocols() {
        assert_eq!(app_key_from_path("/app/abc"), Some("abc"));
        assert_eq!(app_key_from_path("/app/abc/"), Some("abc"));
        assert_eq!(app_key_from_path("/app/"), None);
        assert_eq!(app_key_from_path("/foo/bar"), None);
        assert!(protocol_supported("protocol=7&client=js"));
        assert!(protocol_supported("client=js"));
        assert!(!protocol_supported("protocol=3"));
        assert!(!protocol_supported("client=js&protocol=abc"));
    }

    #[test]
    fn admission_follows_pushers_order_and_holds_quota() {
        let disabled = AppConfig {
            id: "2".into(),
            key: "off".into(),
            enabled: false,
            ..AppConfig::default()
        };
        let limited = AppConfig {
            max_connections: 1,
            ..AppConfig::default()
        };
        let apps = AppRegistry::new(&[limited, disabled], 1);
        let server = ConnectionQuota::new(0);
        let code = |key, query, draining| {
            admit(&apps, &server, key, query, draining)
                .err()
                .map(|r| r.code)
        };
        assert_eq!(code("nope", "protocol=3", false), Some(close::UNKNOWN_APP));
        assert_eq!(code("off", "protocol=3", false), Some(close::APP_DISABLED));
        assert_eq!(
            code("app-key", "protocol=3", true),
            Some(close::UNSUPPORTED_PROTOCOL)
        );
        assert_eq!(code("app-key", "protocol=7", true), Some(close::RECONNECT));
        let app = admit(&apps, &server, "app-key", "protocol=7", false).unwrap();
        assert_eq!(
            code("app-key", "protocol=7", false),
            Some(close::APP_OVER_QUOTA)
        );
        release(&app, &server);
        assert_eq!(server.count(), 0);
        let full = ConnectionQuota::new(1);
        assert!(full.try_add());
        let refused = admit(&apps, &full, "app-key", "", false).err().unwrap();
        assert_eq!(refused.code, close::OVER_CAPACITY);
        assert_eq!(
            apps.by_key("app-key").unwrap().live.connections.count(),
            0,
            "app slot given back"
        );
    }
}
