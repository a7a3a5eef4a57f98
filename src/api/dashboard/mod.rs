//! The dashboard (`RELAY_DASHBOARD_*`): one page with embedded assets behind HTTP Basic authentication, and a
//! server-sent event stream of live figures (README "Dashboard", docs/protocol.md#relay-extensions).
//!
//! Everything under the configured path is the dashboard's: the page at the path itself, its script and style
//! sheet, the event stream and a one-off snapshot. Every request there must carry the operator's credentials; a
//! missing or wrong one is a 401 that makes the browser ask. The server keeps no state per viewer: each stream
//! sends totals, and the page works out rates from two of them.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use sha2::Sha256;

use crate::config::DashboardSettings;
use crate::http::request::{Method, RequestHead};
use crate::http::response::Response;
use crate::runtime::core::Core;
use crate::runtime::shared::Shared;

mod snapshot;

/// One snapshot per second: the charts' resolution.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);
/// A stream ends after this long; the browser's EventSource reconnects within `RECONNECT_MS`, authenticating
/// again, so a viewer whose password was changed or a forgotten tab does not hold a stream for ever.
pub const MAX_STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// The `retry:` the stream tells EventSource to wait before reconnecting.
const RECONNECT_MS: u64 = 1000;
/// How often a stream waiting for its next snapshot looks whether the server began to drain.
const DRAIN_POLL: Duration = Duration::from_millis(200);

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// The page loads nothing but its own script, style sheet and event stream (no CDN: relay may run offline), and
/// may not be framed by another site.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What a `WWW-Authenticate` challenge names (RFC 7617).
const CHALLENGE: &str = r#"Basic realm="relay dashboard", charset="UTF-8""#;

/// The answer for a request under the dashboard's path; `None` when the dashboard is off or the path is not its.
pub async fn route(core: &Rc<Core>, head: &RequestHead) -> Option<Response> {
    let d = &core.shared.config.ops.dashboard;
    if !d.enabled {
        return None;
    }
    let rest = head.path.strip_prefix(d.path.as_str())?;
    if !rest.is_empty() && !rest.starts_with('/') {
        // `/dashboardx` is not under `/dashboard`.
        return None;
    }
    if !authorized(d, head.authorization.as_deref()) {
        let mut r = Response::error(401, "Dashboard credentials required");
        r.header = Some(("WWW-Authenticate", CHALLENGE));
        return Some(r);
    }
    let get = match head.method {
        Method::Get => true,
        Method::Head => false,
        _ => return Some(Response::method_not_allowed("GET, HEAD")),
    };
    let r = match rest {
        "" => {
            let mut r = Response::content("text/html; charset=utf-8", page(&d.path).into_bytes());
            r.header = Some(("Content-Security-Policy", PAGE_POLICY));
            r
        }
        "/app.js" => {
            Response::content("text/javascript; charset=utf-8", SCRIPT.as_bytes().to_vec())
        }
        "/style.css" => Response::content("text/css; charset=utf-8", STYLE.as_bytes().to_vec()),
        // A HEAD cannot be answered with a stream (its head has no end but the connection's).
        // The slot itself is taken when the stream starts (`stream_events`); this answers the common case plainly.
        "/events" if get && streams_full(&core.shared) => {
            Response::error(503, "Too many dashboard streams open")
        }
        "/events" if get => Response::event_stream(),
        "/events" => Response::method_not_allowed("GET"),
        "/api/snapshot" => {
            let mut body = Vec::new();
            snapshot::write(core, &mut body).await;
            let mut r = Response::json(200, body);
            r.header = Some(("Cache-Control", "no-store"));
            r
        }
        _ => Response::error(404, "Not found"),
    };
    Some(r)
}

/// The page, told where its assets and stream are (the path is the operator's, so it is escaped).
fn page(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    PAGE.replace("__BASE__", &escaped)
}

/// Whether `Authorization: Basic base64(user:password)` names the dashboard's user and password. The comparison
/// is of two HMAC digests through `verify_slice` (constant time, fixed length), so timing tells an attacker
/// neither how much of a guess was right nor how long the password is.
fn authorized(d: &DashboardSettings, header: Option<&str>) -> bool {
    use base64::Engine as _;
    let Some((scheme, token)) = header.and_then(|h| h.split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return false;
    };
    let digest = |parts: &[&[u8]]| {
        // The key only makes the digests fixed-length; it need not be secret.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"relay dashboard")
            .expect("HMAC takes a key of any length");
        for p in parts {
            mac.update(p);
        }
        mac
    };
    let expected = digest(&[d.user.as_bytes(), b":", d.password.as_bytes()])
        .finalize()
        .into_bytes();
    digest(&[&given]).verify_slice(&expected).is_ok()
}

/// A place among the `RELAY_DASHBOARD_MAX_STREAMS` open event streams, given back when dropped.
struct StreamSlot(Arc<Shared>);

impl StreamSlot {
    fn take(shared: &Arc<Shared>) -> Option<StreamSlot> {
        let max = shared.config.ops.dashboard.max_streams;
        shared
            .dashboard_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(StreamSlot(shared.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.dashboard_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn streams_full(shared: &Shared) -> bool {
    shared.dashboard_streams.load(Ordering::Acquire) >= shared.config.ops.dashboard.max_streams
}

/// Writes the live figures as server-sent events until the client goes away, a write takes longer than
/// `http_write_timeout`, the stream reaches `MAX_STREAM_LIFETIME`, or the server drains. One snapshot is in
/// flight at a time and each write is awaited, so a slow reader holds one snapshot's bytes, never a backlog.
pub async fn stream_events<S: AsyncWriteRent>(core: &Rc<Core>, stream: &mut S) {
    // Lost a race for the last slot: the stream ends at once and EventSource retries (`RECONNECT_MS`).
    let Some(_slot) = StreamSlot::take(&core.shared) else {
        return;
    };
    let started = Instant::now();
    let write_limit = core.shared.config.limits.http_write_timeout;
    let mut buf = format!("retry: {RECONNECT_MS}\n\n").into_bytes();
    let mut next = Instant::now();
    loop {
        if core.shared.is_shutting_down() || started.elapsed() >= MAX_STREAM_LIFETIME {
            return;
        }
        buf.extend_from_slice(b"data: ");
        let json_start = buf.len();
        snapshot::write(core, &mut buf).await;
        // An event ends at a blank line: a line break inside the JSON would cut it. Hand-built JSON has none
        // (strings escape them), so this only keeps a future mistake from breaking the stream; outside strings a
        // space is the same JSON.
        for b in &mut buf[json_start..] {
            if matches!(*b, b'\n' | b'\r') {
                *b = b' ';
            }
        }
        buf.extend_from_slice(b"\n\n");
        match monoio::time::timeout(write_limit, stream.write_all(buf)).await {
            Ok((Ok(_), mut written)) => {
                written.clear();
                buf = written;
            }
            // Gone, failing or too slow: the connection closes when we return.
            Ok((Err(_), _)) | Err(_) => return,
        }
        // A snapshot that took long (a core slow to answer) is not followed by a burst to catch up.
        next = (next + SNAPSHOT_INTERVAL).max(Instant::now());
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if core.shared.is_shutting_down() {
                return;
            }
            monoio::time::sleep(left.min(DRAIN_POLL)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn settings() -> DashboardSettings {
        DashboardSettings {
            enabled: true,
            path: "/dashboard".into(),
            user: "admin".into(),
            password: "s3cret:with colon".into(),
            ..DashboardSettings::default()
        }
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn only_the_right_user_and_password_are_authorized() {
        let d = settings();
        assert!(authorized(&d, Some(&basic("admin:s3cret:with colon"))));
        assert!(authorized(
            &d,
            Some(&basic("admin:s3cret:with colon").replace("Basic", "basic"))
        ));
        for wrong in [
            "admin:s3cret",
            "admin:s3cret:with colonx",
            "root:s3cret:with colon",
            "admin",
            "",
            ":",
        ] {
            assert!(!authorized(&d, Some(&basic(wrong))), "{wrong}");
        }
        assert!(!authorized(&d, None));
        assert!(!authorized(&d, Some("Basic")));
        assert!(!authorized(&d, Some("Basic !!!not base64")));
        assert!(!authorized(&d, Some("Bearer YWRtaW46czNjcmV0")));
    }

    #[test]
    fn the_page_names_its_path_escaped() {
        let p = page("/ops/<dash>");
        assert!(p.contains("/ops/&lt;dash&gt;/app.js"), "{p}");
        assert!(!p.contains("__BASE__"));
    }
}
