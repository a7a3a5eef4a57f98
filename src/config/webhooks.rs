//! Webhook settings (docs/protocol.md#webhooks): the kinds of event, each app's webhooks (URL, kinds, channel
//! filter, extra headers) and the sender's delivery knobs, each with a name and a default.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// What a webhook event reports. The first seven are Pusher's; the user ones are relay's own and opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookKind {
    ChannelOccupied,
    ChannelVacated,
    MemberAdded,
    MemberRemoved,
    ClientEvent,
    CacheMiss,
    SubscriptionCount,
    UserOnline,
    UserOffline,
}

impl WebhookKind {
    pub const ALL: [WebhookKind; 9] = [
        WebhookKind::ChannelOccupied,
        WebhookKind::ChannelVacated,
        WebhookKind::MemberAdded,
        WebhookKind::MemberRemoved,
        WebhookKind::ClientEvent,
        WebhookKind::CacheMiss,
        WebhookKind::SubscriptionCount,
        WebhookKind::UserOnline,
        WebhookKind::UserOffline,
    ];

    /// The `name` field of the event, and its name in `event_types`.
    pub fn name(self) -> &'static str {
        match self {
            WebhookKind::ChannelOccupied => "channel_occupied",
            WebhookKind::ChannelVacated => "channel_vacated",
            WebhookKind::MemberAdded => "member_added",
            WebhookKind::MemberRemoved => "member_removed",
            WebhookKind::ClientEvent => "client_event",
            WebhookKind::CacheMiss => "cache_miss",
            WebhookKind::SubscriptionCount => "subscription_count",
            WebhookKind::UserOnline => "user_online",
            WebhookKind::UserOffline => "user_offline",
        }
    }

    pub fn from_name(name: &str) -> Option<WebhookKind> {
        WebhookKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of kinds, as one word (checked on the cores before an event is built).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSet(u16);

impl KindSet {
    /// What a webhook without `event_types` gets: every Pusher kind; the user kinds must be asked for.
    pub fn pusher() -> KindSet {
        let mut s = KindSet::default();
        for k in WebhookKind::ALL {
            if !matches!(k, WebhookKind::UserOnline | WebhookKind::UserOffline) {
                s.insert(k);
            }
        }
        s
    }

    pub fn insert(&mut self, kind: WebhookKind) {
        self.0 |= kind.bit();
    }

    pub fn contains(self, kind: WebhookKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }
}

/// Which channels a webhook hears about; events without a channel (user online/offline) always pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookFilter {
    pub channel_name_starts_with: Option<String>,
    pub channel_name_ends_with: Option<String>,
}

impl WebhookFilter {
    pub fn matches(&self, channel: Option<&str>) -> bool {
        let Some(channel) = channel else {
            return true;
        };
        self.channel_name_starts_with
            .as_deref()
            .is_none_or(|p| channel.starts_with(p))
            && self
                .channel_name_ends_with
                .as_deref()
                .is_none_or(|s| channel.ends_with(s))
    }
}

/// One webhook of an app: `{"url", "event_types", "filter", "headers"}` in the apps file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Kind names; absent means every Pusher kind ([`KindSet::pusher`]).
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub filter: WebhookFilter,
    /// Extra request headers (for example a token the receiver checks).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Headers relay sets itself; a webhook's own headers may not replace them.
const OWN_HEADERS: [&str; 4] = [
    "content-type",
    "x-pusher-key",
    "x-pusher-signature",
    "content-length",
];

impl WebhookConfig {
    /// The kinds this webhook receives (unknown names are refused by [`WebhookConfig::validate`]).
    pub fn kinds(&self) -> KindSet {
        match &self.event_types {
            None => KindSet::pusher(),
            Some(names) => {
                let mut s = KindSet::default();
                for k in names.iter().filter_map(|n| WebhookKind::from_name(n)) {
                    s.insert(k);
                }
                s
            }
        }
    }

    /// `field` names this webhook in errors (`apps[0].webhooks[1]`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"));
        let parses = ureq::http::Uri::try_from(self.url.as_str()).is_ok_and(|u| {
            u.host().is_some_and(|h| !h.is_empty())
                && u.authority().is_some_and(|a| {
                    // `http` reads `host:junk` as a host without a port; a port, if any, must be a number.
                    let host_port = a.as_str().rsplit('@').next().unwrap_or("");
                    match host_port.rfind(':') {
                        Some(i) if !host_port[i..].contains(']') => a.port_u16().is_some(),
                        _ => true,
                    }
                })
        });
        if !parses || rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(ConfigError::new(
                format!("{field}.url"),
                format!("'{}' is not an http:// or https:// URL", self.url),
            ));
        }
        if self.url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(ConfigError::new(
                format!("{field}.url"),
                "must not contain spaces or control characters",
            ));
        }
        for name in self.event_types.iter().flatten() {
            if WebhookKind::from_name(name).is_none() {
                let known: Vec<&str> = WebhookKind::ALL.iter().map(|k| k.name()).collect();
                return Err(ConfigError::new(
                    format!("{field}.event_types"),
                    format!("unknown kind '{name}' (known: {})", known.join(", ")),
                ));
            }
        }
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token || OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::new(
                    format!("{field}.headers"),
                    format!("'{name}' is not a header a webhook may set"),
                ));
            }
            if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                return Err(ConfigError::new(
                    format!("{field}.headers"),
                    format!("the value of '{name}' has control characters"),
                ));
            }
        }
        Ok(())
    }
}

/// Parses `RELAY_WEBHOOK_EVENTS`: comma-separated kind names.
pub fn parse_event_list(field: &str, v: &str) -> Result<Vec<String>, ConfigError> {
    let names: Vec<String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    for n in &names {
        if WebhookKind::from_name(n).is_none() {
            return Err(ConfigError::new(field, format!("unknown kind '{n}'")));
        }
    }
    Ok(names)
}

/// How the webhook sender delivers, for every app.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// A batch leaves this long after its first event, or sooner when full.
    pub batch_window: Duration,
    /// Events in one request.
    pub batch_size: usize,
    /// A request (connect, send, answer) must finish within this, or it is retried.
    pub request_timeout: Duration,
    /// Events are retried with backoff until they are this old; then they are dropped and counted.
    pub retry_window: Duration,
    /// Events held by the sender (waiting, debounced, batched) and in the queue from the cores; past it the
    /// oldest are dropped and counted.
    pub queue_cap: usize,
    /// Bytes of events the sender holds (client event data counts whole); past it the oldest are dropped too.
    pub queue_max_bytes: usize,
    /// `channel_vacated`, `member_removed` and `user_offline` wait this long and are dropped, with the
    /// `occupied`/`added`/`online` that undoes them, if the channel or user comes back in the meantime.
    pub debounce: Duration,
    /// Requests in flight at once (one per webhook at most, so each webhook's events stay in order).
    pub concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            batch_window: Duration::from_millis(50),
            batch_size: 100,
            request_timeout: Duration::from_secs(5),
            retry_window: Duration::from_secs(300),
            queue_cap: 100_000,
            queue_max_bytes: 64 * 1024 * 1024,
            debounce: Duration::from_secs(3),
            concurrency: 8,
        }
    }
}

impl WebhookSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_most = |name: &str, d: Duration, max: Duration| {
            if d > max {
                Err(ConfigError::new(
                    name,
                    format!("must be at most {} seconds", max.as_secs()),
                ))
            } else {
                Ok(())
            }
        };
        at_most(
            "webhook_batch_window",
            self.batch_window,
            Duration::from_secs(60),
        )?;
        at_most(
            "webhook_timeout",
            self.request_timeout,
            Duration::from_secs(300),
        )?;
        at_most(
            "webhook_retry_window",
            self.retry_window,
            Duration::from_secs(86_400),
        )?;
        at_most("webhook_debounce", self.debounce, Duration::from_secs(3600))?;
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(ConfigError::new(
                "webhook_batch_size",
                "must be between 1 and 10000",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "webhook_timeout",
                "must be at least 1 second",
            ));
        }
        if self.queue_cap < self.batch_size {
            return Err(ConfigError::new(
                "webhook_queue_cap",
                "must be at least the batch size",
            ));
        }
        if self.queue_max_bytes < 1024 * 1024 {
            return Err(ConfigError::new(
                "webhook_queue_max_bytes",
                "must be at least 1048576",
            ));
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err(ConfigError::new(
                "webhook_concurrency",
                "must be between 1 and 256",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_default_to_pusher_ones() {
        let hook = WebhookConfig {
            url: "http://x".into(),
            ..Default::default()
        };
        assert!(hook.kinds().contains(WebhookKind::ChannelVacated));
        assert!(hook.kinds().contains(WebhookKind::SubscriptionCount));
        assert!(!hook.kinds().contains(WebhookKind::UserOnline));
        let hook = WebhookConfig {
            event_types: Some(vec!["user_online".into(), "client_event".into()]),
            ..hook
        };
        assert!(hook.kinds().contains(WebhookKind::UserOnline));
        assert!(!hook.kinds().contains(WebhookKind::ChannelVacated));
    }

    #[test]
    fn filters_match_prefix_and_suffix() {
        let f = WebhookFilter {
            channel_name_starts_with: Some("presence-".into()),
            channel_name_ends_with: Some("-room".into()),
        };
        assert!(f.matches(Some("presence-big-room")));
        assert!(!f.matches(Some("presence-big")));
        assert!(!f.matches(Some("private-room")));
        assert!(f.matches(None), "user events have no channel");
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = WebhookConfig {
            url: "https://example.com/hook".into(),
            ..Default::default()
        };
        assert!(ok.validate("w").is_ok());
        for url in [
            "ftp://x",
            "http://",
            "example.com",
            "http:///x",
            "http://a b",
            "http://host:badport/",
        ] {
            let bad = WebhookConfig {
                url: url.into(),
                ..Default::default()
            };
            assert_eq!(bad.validate("w").unwrap_err().field, "w.url", "{url}");
        }
        let bad = WebhookConfig {
            event_types: Some(vec!["channel_ocupied".into()]),
            ..ok.clone()
        };
        assert!(
            bad.validate("w")
                .unwrap_err()
                .problem
                .contains("channel_ocupied")
        );
        for (name, value) in [
            ("X-Pusher-Signature", "x"),
            ("bad name", "x"),
            ("X-A", "a\r\nb"),
        ] {
            let bad = WebhookConfig {
                headers: BTreeMap::from([(name.to_string(), value.to_string())]),
                ..ok.clone()
            };
            assert_eq!(bad.validate("w").unwrap_err().field, "w.headers", "{name}");
        }
        assert!(parse_event_list("E", "member_added, user_offline").is_ok());
        assert!(parse_event_list("E", "member_added,nope").is_err());
    }
}
