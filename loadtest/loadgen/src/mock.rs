//! Tiny mock Pusher server used only by the tests: one monoio thread;
//! accepts WebSockets on /app/{key}, sends connection_established, answers
//! pusher:subscribe with subscription_succeeded (and optionally sends a WS
//! ping plus a pusher:ping to check that the loadgen answers them), and on
//! signed POST /apps/{id}/events broadcasts the event to the channel's
//! subscribers. Keep-alive and pipelined REST requests are supported.
//!
//! For `soak`: private and presence subscriptions are checked with relay's
//! `verify_channel_auth` (every socket id is "1.2"), presence joins and
//! leaves send member_added / member_removed, client events go to the other
//! subscribers (over 10 per second per connection: `pusher:error` 4301),
//! WebSocket pings get pongs, and with `max_queue_bytes` a connection whose
//! queue grows past it is cut off like relay does it (queue dropped,
//! `pusher:error` + Close 4100 queued, socket shut after `close_grace`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, Splitable};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use crate::sign::sign_rest_query;
use crate::util::{Notify, build_runtime};
use crate::ws::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, contains, parse_header, unmask};

#[derive(Default)]
pub struct MockStats {
    pub ws_conns: AtomicU64,
    pub subscribes: AtomicU64,
    pub publishes: AtomicU64,
    pub bad_auth: AtomicU64,
    pub unmasked_frames: AtomicU64,
    pub ws_pongs: AtomicU64,
    pub pusher_pongs: AtomicU64,
    pub frames_broadcast: AtomicU64,
    pub client_pings: AtomicU64,
    pub client_events: AtomicU64,
    pub rate_limited: AtomicU64,
    pub member_events: AtomicU64,
    pub cut_offs: AtomicU64,
}

#[derive(Clone)]
pub struct MockOpts {
    pub key: String,
    pub secret: String,
    /// After each subscribe, send a WS ping and a pusher:ping.
    pub ping_on_subscribe: bool,
    /// Cut a connection off once this many bytes wait in its queue.
    pub max_queue_bytes: Option<usize>,
    /// Time from a cut-off to shutting the socket.
    pub close_grace: Duration,
    /// SO_SNDBUF for accepted sockets (small = slow readers fill up fast).
    pub sndbuf: Option<usize>,
}

impl Default for MockOpts {
    fn default() -> Self {
        MockOpts {
            key: "app-key".into(),
            secret: "app-secret".into(),
            ping_on_subscribe: true,
            max_queue_bytes: None,
            close_grace: Duration::from_secs(1),
            sndbuf: None,
        }
    }
}

pub struct Mock {
    pub port: u16,
    pub stats: Arc<MockStats>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Mock {
    pub fn start(opts: MockOpts) -> Mock {
        let stats = Arc::new(MockStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, stop2) = (stats.clone(), stop.clone());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut rt = build_runtime(1024).expect("mock runtime");
            rt.block_on(async move {
                // Large backlog: the loadgen opens hundreds of sockets at once.
                let listener = TcpListener::bind_with_config(
                    "127.0.0.1:0",
                    &ListenerOpts::new().reuse_port(false).backlog(4096),
                )
                .expect("bind mock");
                let port = listener.local_addr().expect("addr").port();
                let _ = port_tx.send(port);
                let st = Rc::new(State {
                    opts,
                    stats: s2,
                    channels: RefCell::new(HashMap::new()),
                });
                monoio::spawn(accept_loop(listener, st));
                let t0 = Instant::now();
                // Bounded lifetime even if the test forgets to stop us.
                while !stop2.load(Relaxed) && t0.elapsed() < Duration::from_secs(300) {
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("mock started");
        Mock {
            port,
            stats,
            stop,
            handle: Some(handle),
        }
    }
}

struct State {
    opts: MockOpts,
    stats: Arc<MockStats>,
    channels: RefCell<HashMap<String, Vec<Rc<Out>>>>,
}

#[derive(Default)]
struct Out {
    q: RefCell<VecDeque<Rc<Vec<u8>>>>,
    notify: Notify,
    closed: Cell<bool>,
    queued: Cell<usize>,
    cap: Option<usize>,
    grace: Duration,
    cut: Cell<bool>,
    fd: Cell<RawFd>,
    /// False once the session ended (its fd number may be reused).
    alive: Rc<Cell<bool>>,
    stats: Option<Arc<MockStats>>,
    /// Client events in the current one-second window: (start, count).
    events: Cell<Option<(Instant, u32)>>,
}

impl Out {
    fn push(&self, frame: Rc<Vec<u8>>) {
        if self.cut.get() {
            return;
        }
        self.queued.set(self.queued.get() + frame.len());
        self.q.borrow_mut().push_back(frame);
        if self.cap.is_some_and(|c| self.queued.get() > c) {
            self.cut_off();
        }
        self.notify.notify();
    }

    /// Like relay: drop the backlog, queue pusher:error + Close 4100, and
    /// shut the socket when the grace runs out.
    fn cut_off(&self) {
        self.cut.set(true);
        if let Some(s) = &self.stats {
            s.cut_offs.fetch_add(1, Relaxed);
        }
        let mut q = self.q.borrow_mut();
        q.clear();
        q.push_back(Rc::new(server_frame(
            OP_TEXT,
            br#"{"event":"pusher:error","data":{"code":4100,"message":"Connection too slow"}}"#,
        )));
        let mut close = 4100u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"too slow");
        q.push_back(Rc::new(server_frame(OP_CLOSE, &close)));
        self.queued.set(0);
        let (fd, grace, alive) = (self.fd.get(), self.grace, self.alive.clone());
        monoio::spawn(async move {
            monoio::time::sleep(grace).await;
            if alive.get() {
                // SAFETY: shutdown on the live session's fd (the session
                // holds it until its reader sees this EOF).
                unsafe {
                    libc::shutdown(fd, libc::SHUT_RDWR);
                }
            }
        });
    }

    fn popped(&self, n: usize) {
        self.queued.set(self.queued.get().saturating_sub(n));
    }

    /// Counts a client event against 10 per second; false when over.
    fn allow_event(&self) -> bool {
        let now = Instant::now();
        match self.events.get() {
            Some((start, n)) if now.duration_since(start) < Duration::from_secs(1) => {
                self.events.set(Some((start, n + 1)));
                n < 10
            }
            _ => {
                self.events.set(Some((now, 1)));
                true
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, st: Rc<State>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                if let Some(n) = st.opts.sndbuf {
                    let v = n as libc::c_int;
                    // SAFETY: valid pointer and size for SO_SNDBUF.
                    unsafe {
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_SNDBUF,
                            &v as *const _ as *const libc::c_void,
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        );
                    }
                }
                monoio::spawn(handle_conn(s, st.clone()));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Server frame (unmasked) with 7/16/64-bit length.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        f.push(n as u8);
    } else if n <= 0xffff {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// Value of the JSON string field `"name":"..."` (raw, still escaped).
fn json_str<'a>(b: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let pat = format!("\"{name}\":\"");
    let i = b.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(&b[i..j]),
            _ => j += 1,
        }
    }
    None
}

async fn read_more(s: &mut TcpStream, buf: Vec<u8>) -> (bool, Vec<u8>) {
    let mut buf = buf;
    if buf.len() == buf.capacity() {
        buf.reserve(buf.capacity().max(4096));
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let (r, slice) = s.read(buf.slice_mut(len..cap)).await;
    (matches!(r, Ok(n) if n > 0), slice.into_inner())
}

async fn handle_conn(mut s: TcpStream, st: Rc<State>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Parse one request head.
        let (head_len, method, path, content_length, ws_key) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let cl = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .unwrap_or(0usize);
                    let key = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                        .map(|h| h.value.to_vec());
                    break (
                        n,
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("").to_string(),
                        cl,
                        key,
                    );
                }
                Ok(httparse::Status::Partial) => {
                    let (ok, b) = read_more(&mut s, buf).await;
                    buf = b;
                    if !ok {
                        return;
                    }
                }
                Err(_) => return,
            }
        };
        if method == "GET" && path.starts_with("/app/") {
            buf.drain(..head_len);
            ws_session(s, buf, st, ws_key).await;
            return;
        }
        while buf.len() < head_len + content_length {
            let (ok, b) = read_more(&mut s, buf).await;
            buf = b;
            if !ok {
                return;
            }
        }
        let body = buf[head_len..head_len + content_length].to_vec();
        buf.drain(..head_len + content_length);
        let (code, text) = if method == "POST" && path.starts_with("/apps/") {
            rest_publish(&st, &path, &body)
        } else {
            (404, "Not Found")
        };
        let resp = format!(
            "HTTP/1.1 {code} {text}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let (r, _) = s.write_all(resp.into_bytes()).await;
        if r.is_err() {
            return;
        }
    }
}

/// Verifies the signature (by re-signing with the same scheme) and broadcasts.
fn rest_publish(st: &State, path_q: &str, body: &[u8]) -> (u16, &'static str) {
    let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    };
    let ts: u64 = param("auth_timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let expect = sign_rest_query(&st.opts.key, &st.opts.secret, "POST", path, body, ts);
    if query != expect || param("auth_key") != Some(st.opts.key.as_str()) {
        st.stats.bad_auth.fetch_add(1, Relaxed);
        return (401, "Unauthorized");
    }
    let (Some(name), Some(ch), Some(data)) = (
        json_str(body, "name"),
        json_str(body, "channel"),
        json_str(body, "data"),
    ) else {
        return (400, "Bad Request");
    };
    st.stats.publishes.fetch_add(1, Relaxed);
    let mut msg = Vec::with_capacity(data.len() + 64);
    msg.extend_from_slice(b"{\"event\":\"");
    msg.extend_from_slice(name);
    msg.extend_from_slice(b"\",\"channel\":\"");
    msg.extend_from_slice(ch);
    msg.extend_from_slice(b"\",\"data\":\"");
    msg.extend_from_slice(data);
    msg.extend_from_slice(b"\"}");
    let frame = Rc::new(server_frame(OP_TEXT, &msg));
    let ch = String::from_utf8_lossy(ch).into_owned();
    if let Some(subs) = st.channels.borrow().get(&ch) {
        for o in subs {
            o.push(frame.clone());
            st.stats.frames_broadcast.fetch_add(1, Relaxed);
        }
    }
    (200, "OK")
}

async fn ws_session(s: TcpStream, mut buf: Vec<u8>, st: Rc<State>, key: Option<Vec<u8>>) {
    let fd = s.as_raw_fd();
    let (rd, mut wr) = s.into_split();
    if key.as_deref() != Some(b"dGhlIHNhbXBsZSBub25jZQ==".as_slice()) {
        let _ = wr
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec())
            .await;
        return;
    }
    st.stats.ws_conns.fetch_add(1, Relaxed);
    let out = Rc::new(Out {
        cap: st.opts.max_queue_bytes,
        grace: st.opts.close_grace,
        fd: Cell::new(fd),
        alive: Rc::new(Cell::new(true)),
        stats: Some(st.stats.clone()),
        ..Out::default()
    });
    out.push(Rc::new(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec(),
    ));
    out.push(Rc::new(server_frame(
        OP_TEXT,
        br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#,
    )));
    let out2 = out.clone();
    monoio::spawn(async move {
        loop {
            let next = out2.q.borrow_mut().pop_front();
            match next {
                Some(f) => {
                    out2.popped(f.len());
                    let (r, _) = wr.write_all(f).await;
                    if r.is_err() {
                        out2.closed.set(true);
                        return;
                    }
                }
                None => {
                    if out2.closed.get() {
                        return;
                    }
                    out2.notify.notified().await;
                }
            }
        }
    });
    let mut subscribed: Vec<String> = Vec::new();
    ws_reader(rd, &mut buf, &st, &out, &mut subscribed).await;
    out.alive.set(false);
    out.closed.set(true);
    out.notify.notify();
    for ch in subscribed {
        leave(&st, &ch, &out);
    }
}

/// Removes `out` from `ch`; on a presence channel the others get member_removed.
fn leave(st: &State, ch: &str, out: &Rc<Out>) {
    let mut chans = st.channels.borrow_mut();
    if let Some(v) = chans.get_mut(ch) {
        v.retain(|o| !Rc::ptr_eq(o, out));
        if ch.starts_with("presence-") {
            let f = Rc::new(server_frame(
                OP_TEXT,
                format!(
                    r#"{{"event":"pusher_internal:member_removed","channel":"{ch}","data":"{{}}"}}"#
                )
                .as_bytes(),
            ));
            for o in v.iter() {
                o.push(f.clone());
                st.stats.member_events.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Checks the auth of a private or presence subscribe the way relay does.
fn auth_ok(st: &State, ch: &str, p: &[u8]) -> bool {
    if !(ch.starts_with("private-") || ch.starts_with("presence-")) {
        return true;
    }
    let unescape = |b: &[u8]| String::from_utf8_lossy(b).replace("\\\"", "\"");
    let auth = json_str(p, "auth").map(unescape).unwrap_or_default();
    let data = json_str(p, "channel_data").map(unescape);
    crate::sign::verify_channel(
        &st.opts.key,
        &st.opts.secret,
        "1.2",
        ch,
        data.as_deref(),
        &auth,
    )
}

async fn ws_reader(
    mut rd: OwnedReadHalf<TcpStream>,
    buf: &mut Vec<u8>,
    st: &State,
    out: &Rc<Out>,
    subscribed: &mut Vec<String>,
) {
    loop {
        // Handle every complete frame in the buffer.
        loop {
            let h = match parse_header(buf) {
                Ok(Some(h)) if buf.len() >= h.total() => h,
                Ok(_) => break,
                Err(_) => return,
            };
            let (s, e) = (h.hdr_len, h.total());
            match h.mask {
                Some(m) => unmask(&mut buf[s..e], m),
                None => {
                    st.stats.unmasked_frames.fetch_add(1, Relaxed);
                    return;
                }
            }
            let p = buf[s..e].to_vec();
            buf.drain(..e);
            match h.opcode {
                OP_TEXT if contains(&p, b"\"pusher:subscribe\"") => {
                    let Some(ch) = json_str(&p, "channel") else {
                        continue;
                    };
                    let ch = String::from_utf8_lossy(ch).into_owned();
                    if !auth_ok(st, &ch, &p) {
                        st.stats.bad_auth.fetch_add(1, Relaxed);
                        let e = format!(
                            r#"{{"event":"pusher:subscription_error","channel":"{ch}","data":{{"type":"AuthError","status":401}}}}"#
                        );
                        out.push(Rc::new(server_frame(OP_TEXT, e.as_bytes())));
                        continue;
                    }
                    if ch.starts_with("presence-")
                        && let Some(others) = st.channels.borrow().get(&ch)
                    {
                        let f = Rc::new(server_frame(
                            OP_TEXT,
                            format!(r#"{{"event":"pusher_internal:member_added","channel":"{ch}","data":"{{}}"}}"#)
                                .as_bytes(),
                        ));
                        for o in others {
                            o.push(f.clone());
                            st.stats.member_events.fetch_add(1, Relaxed);
                        }
                    }
                    st.channels
                        .borrow_mut()
                        .entry(ch.clone())
                        .or_default()
                        .push(out.clone());
                    st.stats.subscribes.fetch_add(1, Relaxed);
                    let ok = format!(
                        r#"{{"event":"pusher_internal:subscription_succeeded","data":"{{}}","channel":"{ch}"}}"#
                    );
                    out.push(Rc::new(server_frame(OP_TEXT, ok.as_bytes())));
                    if st.opts.ping_on_subscribe {
                        out.push(Rc::new(server_frame(OP_PING, b"hb")));
                        out.push(Rc::new(server_frame(
                            OP_TEXT,
                            br#"{"event":"pusher:ping","data":"{}"}"#,
                        )));
                    }
                    subscribed.push(ch);
                }
                OP_TEXT if contains(&p, b"\"pusher:unsubscribe\"") => {
                    if let Some(ch) = json_str(&p, "channel") {
                        let ch = String::from_utf8_lossy(ch).into_owned();
                        subscribed.retain(|c| *c != ch);
                        leave(st, &ch, out);
                    }
                }
                OP_TEXT if contains(&p, b"\"event\":\"client-") => {
                    if !out.allow_event() {
                        st.stats.rate_limited.fetch_add(1, Relaxed);
                        out.push(Rc::new(server_frame(
                            OP_TEXT,
                            br#"{"event":"pusher:error","data":{"code":4301,"message":"Client event rejected due to rate limit"}}"#,
                        )));
                        continue;
                    }
                    st.stats.client_events.fetch_add(1, Relaxed);
                    let ch = json_str(&p, "channel")
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .unwrap_or_default();
                    if let Some(subs) = st.channels.borrow().get(&ch) {
                        let f = Rc::new(server_frame(OP_TEXT, &p));
                        for o in subs.iter().filter(|o| !Rc::ptr_eq(o, out)) {
                            o.push(f.clone());
                        }
                    }
                }
                OP_PING => {
                    st.stats.client_pings.fetch_add(1, Relaxed);
                    out.push(Rc::new(server_frame(OP_PONG, &p)));
                }
                OP_TEXT if contains(&p, b"\"pusher:pong\"") => {
                    st.stats.pusher_pongs.fetch_add(1, Relaxed);
                }
                OP_TEXT if contains(&p, b"\"pusher:ping\"") => {
                    out.push(Rc::new(server_frame(
                        OP_TEXT,
                        br#"{"event":"pusher:pong","data":"{}"}"#,
                    )));
                }
                OP_PONG if p == b"hb" => {
                    st.stats.ws_pongs.fetch_add(1, Relaxed);
                }
                OP_CLOSE => return,
                _ => {}
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(4096);
        }
        let b = std::mem::take(buf);
        let (len, cap) = (b.len(), b.capacity());
        let (r, slice) = rd.read(b.slice_mut(len..cap)).await;
        *buf = slice.into_inner();
        if !matches!(r, Ok(n) if n > 0) {
            return;
        }
    }
}
