//! Signed REST publishers over keep-alive HTTP/1.1 connections.
//!
//! Open loop (`rate: Some(R)`): publish number n is due at t0 + n/R; the
//! connection k of P sends the numbers n ≡ k (mod P), channel n % K, pipelining
//! at most `max_inflight` requests per connection. Closed loop (`rate: None`):
//! each connection keeps `max_inflight` requests outstanding back to back.
//! Each connection is a writer task plus a reader task (split stream);
//! responses come back in order, so the reader matches them to a FIFO of
//! (channel, send time).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddrV4;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::net;
use crate::sign::sign_rest_query;
use crate::tls::{ReadHalf, TlsClient, WriteHalf};
use crate::util::{
    Hist, Notify, build_runtime, json_escape, merge, new_hist, ns_since, pin_thread, unix_secs,
};

/// `--json-pad`: pad data with [`json_pad`] (set once by `main`, before any publisher starts).
pub static JSON_PAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// At least `len` bytes that compress like a typical JSON event (orders with ids, symbols, prices): varied digits
/// from a fixed pseudo-random sequence, single quotes so any prefix is safe inside a JSON string.
pub fn json_pad(len: usize) -> String {
    let mut s = String::with_capacity(len + 128);
    s.push_str("{'orders':[");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    while s.len() < len {
        let _ = write!(
            s,
            "{{'id':{},'symbol':'SYM{}','side':'{}','price':{}.{:02},'qty':{},'status':'open'}},",
            100_000 + next(900_000),
            next(40),
            if next(2) == 0 { "buy" } else { "sell" },
            50 + next(200),
            next(100),
            1 + next(500)
        );
    }
    s
}

pub struct PubCfg {
    pub addr: SocketAddrV4,
    /// https:// (`--tls`).
    pub tls: Option<TlsClient>,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    /// HTTP connections in total.
    pub conns: usize,
    /// Runtime threads the connections are spread over.
    pub threads: usize,
    /// Publishes per second in total; None = closed loop.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Requests in flight per connection.
    pub max_inflight: usize,
    /// Length of the event's data string.
    pub payload: usize,
    pub channels: Vec<String>,
    /// Live subscribers per channel, read at ack time for expected deliveries.
    pub subs: Option<Arc<Vec<AtomicU32>>>,
    /// Shared clock origin for timestamps embedded in the data.
    pub start: Instant,
    pub drain: Duration,
    pub pin: Vec<usize>,
}

/// Live counters, readable by the controller while publishing.
#[derive(Default)]
pub struct PubProgress {
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub acked: AtomicU64,
    pub expected: AtomicU64,
    /// Connections whose writer has finished (time over or gave up).
    pub writers_done: AtomicUsize,
}

pub struct PubResult {
    pub scheduled: u64,
    pub sent: u64,
    pub answered: u64,
    pub acked: u64,
    pub unanswered: u64,
    pub expected: u64,
    pub status: BTreeMap<u16, u64>,
    pub conn_errors: BTreeMap<String, u64>,
    pub latency: Hist,
    pub lag_max_us: u64,
    pub late: u64,
    /// Wall time between the first and last request written.
    pub send_secs: f64,
}

pub struct PubHandle {
    handles: Vec<JoinHandle<ThreadResult>>,
    pub progress: Arc<PubProgress>,
    cfg: Arc<PubCfg>,
}

struct ThreadResult {
    status: Vec<u64>,
    conn_errors: BTreeMap<String, u64>,
    latency: Hist,
    lag_max_us: u64,
    late: u64,
    unanswered: u64,
    first_send: Option<Instant>,
    last_send: Option<Instant>,
}

/// Lateness above this counts as a late publish.
const LATE: Duration = Duration::from_millis(10);
const MAX_BATCH: usize = 64;
const MAX_RECONNECTS: u32 = 50;

pub fn start(cfg: PubCfg) -> std::io::Result<PubHandle> {
    let cfg = Arc::new(cfg);
    let progress = Arc::new(PubProgress::default());
    let t0 = Instant::now();
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (cfg2, p2) = (cfg.clone(), progress.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("lg-pub-{t}"))
                .spawn(move || pub_thread(t, threads, t0, cfg2, p2))?,
        );
    }
    Ok(PubHandle {
        handles,
        progress,
        cfg,
    })
}

impl PubHandle {
    pub fn sending_done(&self) -> bool {
        self.progress.writers_done.load(Relaxed) >= self.cfg.conns
    }

    pub fn join(self) -> PubResult {
        let mut status = vec![0u64; 600];
        let mut r = PubResult {
            scheduled: match self.cfg.rate {
                Some(rate) => total_scheduled(rate, self.cfg.duration),
                None => 0,
            },
            sent: 0,
            answered: 0,
            acked: 0,
            unanswered: 0,
            expected: 0,
            status: BTreeMap::new(),
            conn_errors: BTreeMap::new(),
            latency: new_hist(),
            lag_max_us: 0,
            late: 0,
            send_secs: 0.0,
        };
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        for h in self.handles {
            let Ok(t) = h.join() else { continue };
            for (i, v) in t.status.iter().enumerate() {
                status[i] += v;
            }
            for (k, v) in t.conn_errors {
                *r.conn_errors.entry(k).or_insert(0) += v;
            }
            merge(&mut r.latency, &t.latency);
            r.lag_max_us = r.lag_max_us.max(t.lag_max_us);
            r.late += t.late;
            r.unanswered += t.unanswered;
            first = match (first, t.first_send) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            last = match (last, t.last_send) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        for (code, v) in status.into_iter().enumerate() {
            if v > 0 {
                r.status.insert(code as u16, v);
            }
        }
        r.sent = self.progress.sent.load(Relaxed);
        r.answered = self.progress.answered.load(Acquire);
        r.acked = self.progress.acked.load(Relaxed);
        r.expected = self.progress.expected.load(Relaxed);
        if let (Some(a), Some(b)) = (first, last) {
            r.send_secs = b.duration_since(a).as_secs_f64();
        }
        r
    }
}

fn total_scheduled(rate: f64, d: Duration) -> u64 {
    (rate * d.as_secs_f64()).round() as u64
}

struct ThreadCtx {
    cfg: Arc<PubCfg>,
    progress: Arc<PubProgress>,
    t0: Instant,
    path: String,
    host: String,
    channels_json: Vec<String>,
    pad: String,
    status: RefCell<Vec<u64>>,
    conn_errors: RefCell<BTreeMap<String, u64>>,
    latency: RefCell<Hist>,
    lag_max_us: Cell<u64>,
    late: Cell<u64>,
    unanswered: Cell<u64>,
    conns_done: Cell<usize>,
    first_send: Cell<Option<Instant>>,
    last_send: Cell<Option<Instant>>,
}

impl ThreadCtx {
    fn conn_error(&self, label: &str) {
        *self
            .conn_errors
            .borrow_mut()
            .entry(label.to_string())
            .or_insert(0) += 1;
    }
}

fn pub_thread(
    t: usize,
    threads: usize,
    t0: Instant,
    cfg: Arc<PubCfg>,
    progress: Arc<PubProgress>,
) -> ThreadResult {
    pin_thread(&cfg.pin, t);
    let mine: Vec<usize> = (t..cfg.conns).step_by(threads).collect();
    let ctx = Rc::new(ThreadCtx {
        path: format!("/apps/{}/events", cfg.app_id),
        host: cfg.addr.to_string(),
        channels_json: cfg.channels.iter().map(|c| json_escape(c)).collect(),
        pad: if JSON_PAD.load(Relaxed) {
            json_pad(cfg.payload)
        } else {
            "x".repeat(cfg.payload)
        },
        cfg,
        progress,
        t0,
        status: RefCell::new(vec![0; 600]),
        conn_errors: RefCell::new(BTreeMap::new()),
        latency: RefCell::new(new_hist()),
        lag_max_us: Cell::new(0),
        late: Cell::new(0),
        unanswered: Cell::new(0),
        conns_done: Cell::new(0),
        first_send: Cell::new(None),
        last_send: Cell::new(None),
    });
    match build_runtime(1024) {
        Ok(mut rt) => rt.block_on(pub_thread_main(ctx.clone(), mine)),
        Err(e) => {
            eprintln!("relay-loadgen: publisher thread {t}: cannot build runtime: {e}");
            ctx.conn_error("runtime_build");
            ctx.progress.writers_done.fetch_add(mine.len(), Relaxed);
        }
    }
    ThreadResult {
        status: ctx.status.take(),
        conn_errors: ctx.conn_errors.take(),
        latency: std::mem::replace(&mut *ctx.latency.borrow_mut(), new_hist()),
        lag_max_us: ctx.lag_max_us.get(),
        late: ctx.late.get(),
        unanswered: ctx.unanswered.get(),
        first_send: ctx.first_send.get(),
        last_send: ctx.last_send.get(),
    }
}

async fn pub_thread_main(ctx: Rc<ThreadCtx>, mine: Vec<usize>) {
    crate::util::note_driver();
    let n = mine.len();
    for k in mine {
        monoio::spawn(pub_conn(ctx.clone(), k));
    }
    let hard_end = ctx.t0 + ctx.cfg.duration + ctx.cfg.drain + Duration::from_secs(2);
    while ctx.conns_done.get() < n && Instant::now() < hard_end {
        monoio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Default)]
struct ConnState {
    /// (channel index, send time ns) of each request awaiting its response.
    q: RefCell<VecDeque<(u32, u64)>>,
    room: Notify,
    dead: Cell<bool>,
}

/// One logical publisher connection (reconnects if the server closes it).
async fn pub_conn(ctx: Rc<ThreadCtx>, k: usize) {
    let cfg = ctx.cfg.clone();
    let end = ctx.t0 + cfg.duration;
    let drain_end = end + cfg.drain;
    let mut n = k as u64;
    let mut reconnects = 0u32;
    let mut writer_done_reported = false;
    loop {
        if Instant::now() >= end {
            break;
        }
        let connected = match net::connect(cfg.addr, None).await {
            Ok(tcp) => crate::tls::wrap(cfg.tls.as_ref(), tcp, *cfg.addr.ip()).await,
            Err(e) => Err(e),
        };
        let stream = match connected {
            Ok(s) => s,
            Err(e) => {
                ctx.conn_error(
                    &format!("connect_{}", e.kind())
                        .to_lowercase()
                        .replace(' ', "_"),
                );
                reconnects += 1;
                if reconnects > MAX_RECONNECTS {
                    break;
                }
                monoio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (rd, wr) = stream.into_split();
        let st = Rc::new(ConnState::default());
        monoio::spawn(read_responses(rd, st.clone(), ctx.clone()));
        let finished = write_requests(wr, &st, &ctx, &mut n, end).await;
        if finished {
            ctx.progress.writers_done.fetch_add(1, Relaxed);
            writer_done_reported = true;
        }
        // Wait for outstanding responses (bounded by the drain window).
        while !st.dead.get() && !st.q.borrow().is_empty() && Instant::now() < drain_end {
            let _ = monoio::time::timeout(Duration::from_millis(10), st.room.notified()).await;
        }
        let lost = st.q.borrow().len() as u64;
        ctx.unanswered.set(ctx.unanswered.get() + lost);
        st.dead.set(true);
        if finished {
            break;
        }
        // Some servers (sockudo) answer publishes with `Connection: close`: reconnecting is their normal
        // cost, so only failed connects count against MAX_RECONNECTS; the publish window bounds the loop.
        ctx.conn_error("closed_by_server");
    }
    if !writer_done_reported {
        ctx.progress.writers_done.fetch_add(1, Relaxed);
    }
    ctx.conns_done.set(ctx.conns_done.get() + 1);
}

/// How long after the publish window a paced run may still send publishes that were due in it.
const LATE_SEND_GRACE: Duration = Duration::from_secs(1);

/// Writes requests until the publish window ends (returns true) or the
/// connection dies (returns false).
async fn write_requests(
    mut wr: WriteHalf,
    st: &ConnState,
    ctx: &ThreadCtx,
    n: &mut u64,
    end: Instant,
) -> bool {
    let cfg = &ctx.cfg;
    let step = cfg.conns as u64;
    let total = cfg.rate.map(|r| total_scheduled(r, cfg.duration));
    let due = |n: u64| -> Option<Instant> {
        cfg.rate
            .map(|r| ctx.t0 + Duration::from_secs_f64(n as f64 / r))
    };
    let mut wbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut body = String::with_capacity(256 + cfg.payload);
    loop {
        if st.dead.get() {
            return false;
        }
        let now = Instant::now();
        if let Some(total) = total
            && *n >= total
        {
            return true;
        }
        // A paced run sends every publish it scheduled (all are due before `end`), late ones included, so a
        // busy machine shows up as lag, not as a missing publish; past `end` plus a grace it gives up.
        if now >= end && (total.is_none() || now >= end + LATE_SEND_GRACE) {
            return true;
        }
        if let Some(d) = due(*n)
            && d > now
        {
            monoio::time::sleep_until(monoio::time::Instant::from_std(d.min(end))).await;
            continue;
        }
        if st.q.borrow().len() >= cfg.max_inflight {
            let _ = monoio::time::timeout(Duration::from_millis(50), st.room.notified()).await;
            continue;
        }
        wbuf.clear();
        let mut batch = 0u64;
        loop {
            let send_ns = ns_since(cfg.start);
            if let Some(d) = due(*n) {
                let lag = now.saturating_duration_since(d);
                if lag > LATE {
                    ctx.late.set(ctx.late.get() + 1);
                }
                let us = lag.as_micros() as u64;
                if us > ctx.lag_max_us.get() {
                    ctx.lag_max_us.set(us);
                }
            }
            let ch = (*n % cfg.channels.len() as u64) as usize;
            build_request(&mut wbuf, &mut body, ctx, ch, send_ns, *n);
            st.q.borrow_mut().push_back((ch as u32, send_ns));
            batch += 1;
            *n += step;
            if st.q.borrow().len() >= cfg.max_inflight || batch as usize >= MAX_BATCH {
                break;
            }
            match (total, due(*n)) {
                (Some(total), Some(d)) if *n < total && d <= now => {}
                _ => break,
            }
        }
        let t = Instant::now();
        if ctx.first_send.get().is_none() {
            ctx.first_send.set(Some(t));
        }
        ctx.last_send.set(Some(t));
        ctx.progress.sent.fetch_add(batch, Relaxed);
        let (res, b) = wr.write_all(wbuf).await;
        wbuf = b;
        if res.is_err() {
            st.dead.set(true);
            return false;
        }
    }
}

fn build_request(
    w: &mut Vec<u8>,
    body: &mut String,
    ctx: &ThreadCtx,
    ch: usize,
    send_ns: u64,
    seq: u64,
) {
    let cfg = &ctx.cfg;
    body.clear();
    let _ = write!(
        body,
        r#"{{"name":"lg","channel":"{}","data":""#,
        ctx.channels_json[ch]
    );
    let data_start = body.len();
    let _ = write!(body, "t={send_ns};s={seq};");
    let used = body.len() - data_start;
    if used < cfg.payload {
        body.push_str(&ctx.pad[..cfg.payload - used]);
    }
    body.push_str("\"}");
    let q = sign_rest_query(
        &cfg.key,
        &cfg.secret,
        "POST",
        &ctx.path,
        body.as_bytes(),
        unix_secs(),
    );
    let _ = write!(
        w,
        "POST {}?{} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        ctx.path,
        q,
        ctx.host,
        body.len()
    );
    w.extend_from_slice(body.as_bytes());
}

/// Parses one HTTP response at the start of `b`: Ok(Some((consumed, status,
/// connection_close))), Ok(None) if incomplete.
pub fn parse_response(b: &[u8]) -> Result<Option<(usize, u16, bool)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let h = match r.parse(b) {
        Ok(httparse::Status::Complete(h)) => h,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let code = r.code.unwrap_or(0);
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut close = r.version == Some(0);
    for hd in r.headers.iter() {
        if hd.name.eq_ignore_ascii_case("content-length") {
            content_length = std::str::from_utf8(hd.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
            if content_length.is_none() {
                return Err(());
            }
        } else if hd.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = hd
                .value
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"chunked"));
        } else if hd.name.eq_ignore_ascii_case("connection") {
            if hd
                .value
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b"close"))
            {
                close = true;
            } else if hd
                .value
                .windows(10)
                .any(|w| w.eq_ignore_ascii_case(b"keep-alive"))
            {
                close = false;
            }
        }
    }
    let body_len = if (100..200).contains(&code) || code == 204 || code == 304 {
        0
    } else if chunked {
        match chunked_len(&b[h..])? {
            Some(n) => n,
            None => return Ok(None),
        }
    } else if let Some(cl) = content_length {
        cl
    } else {
        // Body delimited by connection close: not supported for pipelining.
        close = true;
        0
    };
    if b.len() < h + body_len {
        return Ok(None);
    }
    Ok(Some((h + body_len, code, close)))
}

/// Length of a complete chunked body at the start of `b`, Ok(None) if incomplete.
fn chunked_len(b: &[u8]) -> Result<Option<usize>, ()> {
    let mut pos = 0usize;
    loop {
        match httparse::parse_chunk_size(&b[pos..]) {
            Ok(httparse::Status::Complete((idx, size))) => {
                pos += idx;
                if size == 0 {
                    // Optional trailers, then an empty line.
                    let rest = &b[pos..];
                    if rest.starts_with(b"\r\n") {
                        return Ok(Some(pos + 2));
                    }
                    return Ok(rest
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|i| pos + i + 4));
                }
                let size = usize::try_from(size).map_err(|_| ())?;
                pos = pos
                    .checked_add(size)
                    .and_then(|p| p.checked_add(2))
                    .ok_or(())?;
                if pos > b.len() {
                    return Ok(None);
                }
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        }
    }
}

async fn read_responses(mut rd: ReadHalf, st: Rc<ConnState>, ctx: Rc<ThreadCtx>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut head = 0usize;
    let subs = ctx.cfg.subs.clone();
    loop {
        loop {
            match parse_response(&buf[head..]) {
                Ok(Some((used, code, close))) => {
                    head += used;
                    if (100..200).contains(&code) {
                        continue;
                    }
                    let Some((ch, send_ns)) = st.q.borrow_mut().pop_front() else {
                        ctx.conn_error("unexpected_response");
                        st.dead.set(true);
                        st.room.notify();
                        return;
                    };
                    let lat_us = ns_since(ctx.cfg.start).saturating_sub(send_ns) / 1000;
                    ctx.latency.borrow_mut().saturating_record(lat_us);
                    ctx.status.borrow_mut()[(code as usize).min(599)] += 1;
                    if (200..300).contains(&code) {
                        if let Some(s) = &subs {
                            let n = s.get(ch as usize).map(|a| a.load(Relaxed)).unwrap_or(0);
                            ctx.progress.expected.fetch_add(n as u64, Relaxed);
                        }
                        ctx.progress.acked.fetch_add(1, Relaxed);
                    }
                    // Release: whoever sees this answer also sees its expected count.
                    ctx.progress.answered.fetch_add(1, Release);
                    st.room.notify();
                    if close {
                        st.dead.set(true);
                        return;
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    ctx.conn_error("bad_http_response");
                    st.dead.set(true);
                    st.room.notify();
                    return;
                }
            }
        }
        if head > 0 {
            let len = buf.len();
            buf.copy_within(head..len, 0);
            buf.truncate(len - head);
            head = 0;
        }
        if buf.len() == buf.capacity() {
            if buf.capacity() >= 4 << 20 {
                ctx.conn_error("response_too_large");
                st.dead.set(true);
                st.room.notify();
                return;
            }
            buf.reserve(buf.capacity());
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = rd.read(buf.slice_mut(len..cap)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => {
                st.dead.set(true);
                st.room.notify();
                return;
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 401 Unauthorized\r\ncontent-length: 3\r\n\r\nbad";
        let (n, code, close) = parse_response(r).unwrap().unwrap();
        assert_eq!((code, close), (200, false));
        let (m, code, _) = parse_response(&r[n..]).unwrap().unwrap();
        assert_eq!(code, 401);
        assert_eq!(n + m, r.len());
        assert_eq!(parse_response(&r[..n - 1]).unwrap(), None);
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        let (n, code, close) = parse_response(c).unwrap().unwrap();
        assert_eq!((n, code, close), (c.len(), 200, true));
        assert_eq!(parse_response(&c[..c.len() - 1]).unwrap(), None);
    }
}
