//! Leveled logging to stderr, as text (`relay INFO  …`) or JSON lines (`RELAY_LOG_FORMAT=json`:
//! `{"ts":"2026-11-29T13:53:49.123Z","level":"info","msg":"…"}`).
//!
//! `info!` and `warn!` always print; `debug!` prints only when `RELAY_DEBUG` is on. One line per event, so logs stay
//! greppable. Nothing is logged per message or per connection at info level; events that come in floods are
//! counted in `metrics` and summarised periodically, one line per class (`runtime::liveness`).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// JSON lines instead of text.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

#[inline]
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// Writes one line (one `write` of the whole line, so lines of different threads never interleave).
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    let line = if JSON.load(Ordering::Relaxed) {
        json_line(level, crate::clock::unix_ms(), &args.to_string())
    } else {
        let tag = match level {
            Level::Debug => "DEBUG",
            Level::Info => "INFO ",
            Level::Warn => "WARN ",
        };
        format!("relay {tag} {args}\n")
    };
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn json_line(level: Level, ms: u64, msg: &str) -> String {
    let level = match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
    };
    let mut out = format!(
        r#"{{"ts":"{}","level":"{level}","msg":"#,
        crate::clock::iso_utc_ms(ms)
    );
    crate::json::push_json_string_into(&mut out, msg);
    out.push_str("}\n");
    out
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Info, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Warn, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() { $crate::log::emit($crate::log::Level::Debug, format_args!($($arg)*)) }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_an_rfc3339_time_and_an_escaped_message() {
        assert_eq!(
            json_line(Level::Warn, 0, "a \"b\"\n"),
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"warn\",\"msg\":\"a \\\"b\\\"\\n\"}\n"
        );
    }
}
