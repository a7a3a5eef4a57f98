//! Tiny mock Pusher server used only by the tests: one monoio thread;
//! accepts WebSockets on /app/{key}, sends connection_established, answers
//! pusher:subscribe with subscription_succeeded (and optionally sends a WS
//! ping plus a pusher:ping to check that the loadgen answers them), and on
//! signed POST /apps/{id}/events broadcasts the event to the channel's
//! subscribers. Keep-alive and pipelined REST requests are supported.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
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
}

#[derive(Clone)]
pub struct MockOpts {
    pub key: String,
    pub secret: String,
    /// After each subscribe, send a WS ping and a pusher:ping.
    pub ping_on_subscribe: bool,
}

impl Default for MockOpts {
    fn default() -> Self {
        MockOpts {
            key: "app-key".into(),
            secret: "app-secret".into(),
            ping_on_subscribe: true,
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
}

impl Out {
    fn push(&self, frame: Rc<Vec<u8>>) {
        self.q.borrow_mut().push_back(frame);
        self.notify.notify();
    }
}

async fn accept_loop(listener: TcpListener, st: Rc<State>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
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
    let (rd, mut wr) = s.into_split();
    if key.as_deref() != Some(b"dGhlIHNhbXBsZSBub25jZQ==".as_slice()) {
        let _ = wr
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec())
            .await;
        return;
    }
    st.stats.ws_conns.fetch_add(1, Relaxed);
    let out = Rc::new(Out::default());
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
    out.closed.set(true);
    out.notify.notify();
    let mut chans = st.channels.borrow_mut();
    for ch in subscribed {
        if let Some(v) = chans.get_mut(&ch) {
            v.retain(|o| !Rc::ptr_eq(o, &out));
        }
    }
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
