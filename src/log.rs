//! Minimal leveled logging to stderr.
//!
//! `info!` and `warn!` always print; `debug!` prints only when `RELAY_DEBUG` is on. One line per event, prefixed with
//! the level, so logs stay greppable. Nothing is logged per message at info level; events that come in floods are
//! counted in `metrics` and summarised periodically (`runtime::liveness`).

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

#[inline]
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
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
