//! minimal-fanout: the smallest monoio server that `relay-loadgen fanout` can drive, as a latency and CPU
//! baseline for relay (BENCHMARKS.md, "Tail latency at low load").
//!
//! One thread, one monoio runtime (io_uring, or epoll with `MONOIO_FORCE_LEGACY_DRIVER=1`). It speaks just enough
//! of the Pusher protocol: a WebSocket upgrade on `/app/{key}`, `pusher:connection_established`,
//! `pusher:subscribe` answered with `pusher_internal:subscription_succeeded`, and `POST /apps/{id}/events` (no
//! signature check) whose event is framed once and written *directly* to each subscriber's socket with a
//! non-blocking `send(2)` inside the request handler: no queue, no writer task, no wake-up. A send that would block
//! drops the delivery (counted, printed at most once a second), so at low load it measures the cost and latency of
//! the plain work a delivery needs and nothing else. Not a server for anything but that measurement.
//!
//! `minimal-fanout [--port 6001] [--host 127.0.0.1]`

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

#[derive(Default)]
struct State {
    /// channel -> subscribers' socket fds.
    channels: RefCell<HashMap<Vec<u8>, Vec<RawFd>>>,
    dropped: Cell<u64>,
    last_report: Cell<Option<Instant>>,
}

impl State {
    /// Writes `frame` to `fd` now; a short or failed write is a dropped delivery.
    fn send_now(&self, fd: RawFd, frame: &[u8]) {
        // SAFETY: `fd` belongs to a live session (removed from the index before its socket closes); the pointer
        // and length describe `frame`.
        let n = unsafe {
            libc::send(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n != frame.len() as isize {
            self.dropped.set(self.dropped.get() + 1);
            let now = Instant::now();
            if self
                .last_report
                .get()
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
            {
                self.last_report.set(Some(now));
                eprintln!(
                    "minimal-fanout: {} deliveries dropped (socket full)",
                    self.dropped.get()
                );
            }
        }
    }
}

fn main() {
    let mut port = 6001u16;
    let mut host = "127.0.0.1".to_string();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match (args[i].as_str(), args.get(i + 1)) {
            ("--port", Some(v)) => port = v.parse().expect("--port: a number"),
            ("--host", Some(v)) => host = v.clone(),
            _ => {
                eprintln!("usage: minimal-fanout [--port 6001] [--host 127.0.0.1]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind_with_config(
            format!("{host}:{port}"),
            &ListenerOpts::new().reuse_port(false).backlog(4096),
        )
        .expect("bind");
        eprintln!("minimal-fanout: listening on {host}:{port}");
        let st = Rc::new(State::default());
        loop {
            if let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                monoio::spawn(serve(s, st.clone()));
            }
        }
    });
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

/// HTTP requests until a WebSocket upgrade.
async fn serve(mut s: TcpStream, st: Rc<State>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let (head_len, post, ws, content_length, key) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let header = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                    };
                    let cl = header("content-length")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0usize);
                    let key = header("sec-websocket-key").map(str::to_string);
                    let path = req.path.unwrap_or("");
                    break (
                        n,
                        req.method == Some("POST") && path.starts_with("/apps/"),
                        req.method == Some("GET") && path.starts_with("/app/"),
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
        if ws {
            buf.drain(..head_len);
            ws_session(s, buf, st, key.unwrap_or_default()).await;
            return;
        }
        while buf.len() < head_len + content_length {
            let (ok, b) = read_more(&mut s, buf).await;
            buf = b;
            if !ok {
                return;
            }
        }
        let status = if post {
            publish(&st, &buf[head_len..head_len + content_length])
        } else {
            "404 Not Found"
        };
        buf.drain(..head_len + content_length);
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        if s.write_all(resp.into_bytes()).await.0.is_err() {
            return;
        }
    }
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

/// Frames the event once and sends it to every subscriber of its channel, now.
fn publish(st: &State, body: &[u8]) -> &'static str {
    let (Some(name), Some(ch), Some(data)) = (
        json_str(body, "name"),
        json_str(body, "channel"),
        json_str(body, "data"),
    ) else {
        return "400 Bad Request";
    };
    let mut msg = Vec::with_capacity(data.len() + 64);
    msg.extend_from_slice(b"{\"event\":\"");
    msg.extend_from_slice(name);
    msg.extend_from_slice(b"\",\"channel\":\"");
    msg.extend_from_slice(ch);
    msg.extend_from_slice(b"\",\"data\":\"");
    msg.extend_from_slice(data);
    msg.extend_from_slice(b"\"}");
    let frame = text_frame(&msg);
    if let Some(fds) = st.channels.borrow().get(ch) {
        for &fd in fds {
            st.send_now(fd, &frame);
        }
    }
    "200 OK"
}

/// An unmasked server text frame.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
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

/// One client frame: (opcode, header length, payload length, mask), if complete in `b`.
fn client_frame(b: &[u8]) -> Option<(u8, usize, usize, [u8; 4])> {
    if b.len() < 2 {
        return None;
    }
    let (mut len, mut at) = ((b[1] & 0x7f) as usize, 2);
    if len == 126 {
        len = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize;
        at = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize;
        at = 10;
    }
    let mask: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    at += 4;
    (b.len() >= at + len).then_some((b[0] & 0x0f, at, len, mask))
}

const SUBSCRIBE: &[u8] = b"\"pusher:subscribe\"";

async fn ws_session(mut s: TcpStream, mut buf: Vec<u8>, st: Rc<State>, key: String) {
    let fd = s.as_raw_fd();
    let accept = relay::ws::handshake::accept_response(&key);
    if s.write_all(accept).await.0.is_err() {
        return;
    }
    st.send_now(
        fd,
        &text_frame(
            br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#,
        ),
    );
    let mut subscribed: Vec<Vec<u8>> = Vec::new();
    'session: loop {
        while let Some((op, hl, len, mask)) = client_frame(&buf) {
            let mut p = buf[hl..hl + len].to_vec();
            for (i, b) in p.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            buf.drain(..hl + len);
            match op {
                0x8 => break 'session,
                0x1 if p.windows(SUBSCRIBE.len()).any(|w| w == SUBSCRIBE) => {
                    if let Some(ch) = json_str(&p, "channel") {
                        let ch = ch.to_vec();
                        let ok = format!(
                            r#"{{"event":"pusher_internal:subscription_succeeded","data":"{{}}","channel":"{}"}}"#,
                            String::from_utf8_lossy(&ch)
                        );
                        st.channels
                            .borrow_mut()
                            .entry(ch.clone())
                            .or_default()
                            .push(fd);
                        subscribed.push(ch);
                        st.send_now(fd, &text_frame(ok.as_bytes()));
                    }
                }
                _ => {}
            }
        }
        let (ok, b) = read_more(&mut s, buf).await;
        buf = b;
        if !ok {
            break;
        }
    }
    let mut chans = st.channels.borrow_mut();
    for ch in subscribed {
        if let Some(v) = chans.get_mut(&ch) {
            v.retain(|&f| f != fd);
        }
    }
}
