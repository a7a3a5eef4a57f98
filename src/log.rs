//! Minimal leveled logging to stderr.
//!
//! `info!` and `warn!` always print; `debug!` prints only when `RELAY_DEBUG` is on. One line per event, prefixed with
//! the level, so logs stay greppable. Nothing is logged per message at info level.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

#[inline]
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Events that can come in floods (a mass slow-reader cut-off, a full inbox) are counted on the hot path and
/// logged as one summary line per scan interval, so logging never stalls a core or floods stderr.
static SLOW_READERS: AtomicU64 = AtomicU64::new(0);
static OVERFLOWS: AtomicU64 = AtomicU64::new(0);

pub fn count_slow_reader() {
    SLOW_READERS.fetch_add(1, Ordering::Relaxed);
}

pub fn count_overflow() {
    OVERFLOWS.fetch_add(1, Ordering::Relaxed);
}

/// Logs and resets the flood counters (called periodically by one core).
pub fn report_counts() {
    let slow = SLOW_READERS.swap(0, Ordering::Relaxed);
    if slow > 0 {
        crate::warn!("{slow} slow reader(s) cut off: output queue over its cap (closed with 4100)");
    }
    let full = OVERFLOWS.swap(0, Ordering::Relaxed);
    if full > 0 {
        crate::warn!("{full} message(s) refused: a core inbox was full");
    }
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { eprintln!("relay INFO  {}", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { eprintln!("relay WARN  {}", format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::debug_enabled() { eprintln!("relay DEBUG {}", format_args!($($arg)*)) }
    };
}
