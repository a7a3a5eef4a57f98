//! Small helpers: JSON output builder, histograms, /proc and rusage readers,
//! a single-thread notify primitive and progress printing.

use std::cell::Cell;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

// ---------------------------------------------------------------------------
// JSON output (only the final report; never on the hot path)

/// Minimal JSON object writer. Keys are static identifiers, values escaped.
#[derive(Clone)]
pub struct Obj {
    s: String,
}

impl Default for Obj {
    fn default() -> Self {
        Self::new()
    }
}

impl Obj {
    pub fn new() -> Self {
        Obj {
            s: String::from("{"),
        }
    }
    fn key(&mut self, k: &str) {
        if self.s.len() > 1 {
            self.s.push(',');
        }
        self.s.push('"');
        escape_into(&mut self.s, k);
        self.s.push_str("\":");
    }
    pub fn u(mut self, k: &str, v: u64) -> Self {
        self.key(k);
        let _ = write!(self.s, "{v}");
        self
    }
    pub fn f(mut self, k: &str, v: f64) -> Self {
        self.key(k);
        if v.is_finite() {
            let _ = write!(self.s, "{}", (v * 1000.0).round() / 1000.0);
        } else {
            self.s.push_str("null");
        }
        self
    }
    pub fn b(mut self, k: &str, v: bool) -> Self {
        self.key(k);
        self.s.push_str(if v { "true" } else { "false" });
        self
    }
    pub fn s(mut self, k: &str, v: &str) -> Self {
        self.key(k);
        self.s.push('"');
        escape_into(&mut self.s, v);
        self.s.push('"');
        self
    }
    pub fn opt_u(self, k: &str, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.u(k, v),
            None => self.null(k),
        }
    }
    pub fn opt_b(self, k: &str, v: Option<bool>) -> Self {
        match v {
            Some(v) => self.b(k, v),
            None => self.null(k),
        }
    }
    pub fn opt_f(self, k: &str, v: Option<f64>) -> Self {
        match v {
            Some(v) => self.f(k, v),
            None => self.null(k),
        }
    }
    pub fn null(mut self, k: &str) -> Self {
        self.key(k);
        self.s.push_str("null");
        self
    }
    pub fn o(mut self, k: &str, v: Obj) -> Self {
        self.key(k);
        self.s.push_str(&v.finish());
        self
    }
    pub fn opt_o(self, k: &str, v: Option<Obj>) -> Self {
        match v {
            Some(v) => self.o(k, v),
            None => self.null(k),
        }
    }
    pub fn arr(mut self, k: &str, v: Vec<Obj>) -> Self {
        self.key(k);
        self.s.push('[');
        for (i, o) in v.into_iter().enumerate() {
            if i > 0 {
                self.s.push(',');
            }
            self.s.push_str(&o.finish());
        }
        self.s.push(']');
        self
    }
    pub fn arr_u(mut self, k: &str, v: &[u64]) -> Self {
        self.key(k);
        self.s.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                self.s.push(',');
            }
            let _ = write!(self.s, "{x}");
        }
        self.s.push(']');
        self
    }
    /// Appends all fields of `other` to this object.
    pub fn merge(mut self, other: Obj) -> Self {
        let inner = &other.s[1..];
        if !inner.is_empty() {
            if self.s.len() > 1 {
                self.s.push(',');
            }
            self.s.push_str(inner);
        }
        self
    }
    pub fn finish(mut self) -> String {
        self.s.push('}');
        self.s
    }
}

/// JSON string escaping (RFC 8259).
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

// ---------------------------------------------------------------------------
// Histograms (values in µs; 1 µs .. 1 h, 3 significant digits)

pub type Hist = Histogram<u64>;

pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn merge(into: &mut Hist, from: &Hist) {
    // Same bounds everywhere, so addition cannot fail; ignore defensively.
    let _ = into.add(from);
}

/// Latency summary object. `with_p90` / `with_p999` add those quantiles.
pub fn hist_obj(h: &Hist, with_p90: bool, with_p999: bool) -> Obj {
    let q = |p: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let mut o = Obj::new().u("count", h.len()).u("p50", q(0.50));
    if with_p90 {
        o = o.u("p90", q(0.90));
    }
    o = o.u("p99", q(0.99));
    if with_p999 {
        o = o.u("p999", q(0.999));
    }
    o.u("max", if h.is_empty() { 0 } else { h.max() })
        .f("mean", if h.is_empty() { 0.0 } else { h.mean() })
}

pub fn p99(h: &Hist) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(0.99)
    }
}

// ---------------------------------------------------------------------------
// Process statistics

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            return rest.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user_us: u64,
    pub sys_us: u64,
}

impl Cpu {
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user_us: self.user_us.saturating_sub(earlier.user_us),
            sys_us: self.sys_us.saturating_sub(earlier.sys_us),
        }
    }
    pub fn total_us(self) -> u64 {
        self.user_us + self.sys_us
    }
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime of a process (all threads), from /proc/PID/stat.
pub fn read_proc_cpu(pid: u32) -> Option<Cpu> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parens: fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    // After ')': state(3) ppid(4) ... utime is field 14, stime 15 (1-based).
    let utime: u64 = it.nth(11)?.parse().ok()?;
    let stime: u64 = it.next()?.parse().ok()?;
    let per_tick = 1_000_000 / clk_tck();
    Some(Cpu {
        user_us: utime * per_tick,
        sys_us: stime * per_tick,
    })
}

/// CPU time of this process (all threads) via getrusage(RUSAGE_SELF).
pub fn self_cpu() -> Cpu {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Cpu::default();
    }
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Cpu {
        user_us: tv(ru.ru_utime),
        sys_us: tv(ru.ru_stime),
    }
}

/// Server and loadgen CPU snapshot at one instant.
#[derive(Clone, Copy)]
pub struct CpuMark {
    pub at: Instant,
    pub server: Option<Cpu>,
    pub own: Cpu,
}

impl CpuMark {
    pub fn now(server_pid: Option<u32>) -> Self {
        CpuMark {
            at: Instant::now(),
            server: server_pid.and_then(read_proc_cpu),
            own: self_cpu(),
        }
    }
}

/// `server_cpu` object: totals over the window plus per-unit cost
/// (`per_unit_name` e.g. "per_delivery").
pub fn server_cpu_obj(a: &CpuMark, b: &CpuMark, units: u64, per_unit_name: &str) -> Option<Obj> {
    let (Some(sa), Some(sb)) = (a.server, b.server) else {
        return None;
    };
    let d = sb.since(sa);
    let win = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let per = |v: u64| {
        if units == 0 {
            None
        } else {
            Some(v as f64 / units as f64)
        }
    };
    Some(
        Obj::new()
            .u("user_us", d.user_us)
            .u("system_us", d.sys_us)
            .u("total_us", d.total_us())
            .f("cores_used", d.total_us() as f64 / 1e6 / win)
            .opt_f(&format!("{per_unit_name}_us"), per(d.total_us()))
            .opt_f(&format!("{per_unit_name}_user_us"), per(d.user_us))
            .opt_f(&format!("{per_unit_name}_system_us"), per(d.sys_us)),
    )
}

pub fn own_cpu_obj(a: &CpuMark, b: &CpuMark) -> Obj {
    let d = b.own.since(a.own);
    let win = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    Obj::new()
        .u("user_us", d.user_us)
        .u("system_us", d.sys_us)
        .u("total_us", d.total_us())
        .f("cores_used", d.total_us() as f64 / 1e6 / win)
}

/// Try to raise RLIMIT_NOFILE as far as allowed; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls with valid pointers.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        let want = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: r.rlim_max.max(1 << 20),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            return want.rlim_cur;
        }
        let soft = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return soft.rlim_cur;
        }
        r.rlim_cur
    }
}

// ---------------------------------------------------------------------------
// Single-thread, single-waiter notification (monoio tasks are !Send)

#[derive(Default)]
pub struct Notify {
    waker: Cell<Option<Waker>>,
    flag: Cell<bool>,
}

impl Notify {
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
    pub async fn notified(&self) {
        poll_fn(|cx| {
            if self.flag.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// Misc

/// Nanoseconds since the shared start instant (comparable across threads).
#[inline]
pub fn ns_since(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Prints a progress line to stderr at most about once per second.
pub struct Progress {
    last: Instant,
    start: Instant,
    pub quiet: bool,
}

impl Progress {
    pub fn new(start: Instant, quiet: bool) -> Self {
        Progress {
            last: Instant::now(),
            start,
            quiet,
        }
    }
    pub fn due(&mut self) -> bool {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            !self.quiet
        } else {
            false
        }
    }
    pub fn line(&self, scenario: &str, msg: &str) {
        if !self.quiet {
            eprintln!(
                "[{scenario} {:7.1}s] {msg}",
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// Builds one monoio runtime per calling thread (io_uring with epoll fallback).
pub fn build_runtime(
    entries: u32,
) -> std::io::Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(entries)
        .enable_timer()
        .build()
}

static DRIVER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Records which monoio driver this runtime thread got (call inside block_on).
pub fn note_driver() {
    let v = if monoio::utils::is_legacy() { 2 } else { 1 };
    DRIVER.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// "io_uring", "legacy" (epoll) or "unknown" (no runtime ran yet).
pub fn driver_name() -> &'static str {
    match DRIVER.load(std::sync::atomic::Ordering::Relaxed) {
        1 => "io_uring",
        2 => "legacy",
        _ => "unknown",
    }
}

pub fn pin_thread(pin: &[usize], idx: usize) {
    if !pin.is_empty() {
        let _ = monoio::utils::bind_to_cpu_set([pin[idx % pin.len()]]);
    }
}
