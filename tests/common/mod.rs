//! Test kit for integration tests over real sockets: start the `relay` binary, a blocking WebSocket client that
//! speaks raw frames, and signed REST calls. The server inherits MONOIO_FORCE_LEGACY_DRIVER from the test
//! environment, so the same tests run on io_uring and on epoll.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

pub mod receiver;

pub const APP_ID: &str = "app-id";
pub const APP_KEY: &str = "app-key";
pub const APP_SECRET: &str = "app-secret";
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[], &[])
    }

    /// Starts relay on a free port with 2 workers plus `args` and `env`; waits until it listens.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay"));
        cmd.args(["--port", "0", "--workers", "2", "--host", "127.0.0.1"])
            .args(args);
        // Many servers run at once: none serves metrics unless its test asks (9601 would clash).
        cmd.env("RELAY_METRICS_PORT", "0");
        // The compressed pass compresses every channel event, small ones too, unless a test sets its own minimum.
        if deflate_everywhere() {
            cmd.env("RELAY_COMPRESSION_MIN_BYTES", "0");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn relay");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged before the port is handed over: a test that starts reading the log once the server
                // listens finds the listening line in it.
                {
                    let mut l = log2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let port: u16 = rest
                        .split(' ')
                        .next()
                        .unwrap()
                        .rsplit(':')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("relay did not start listening");
        Server { child, port, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM without waiting: the server starts draining.
    pub fn begin_shutdown(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// SIGKILL: the process dies without a goodbye (a crashed node).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ws(&self) -> Ws {
        Ws::connect(
            self.port,
            &format!("/app/{APP_KEY}?protocol=7&client=js&version=8.4.0&flash=false"),
        )
    }

    /// A connected client that has received connection_established.
    pub fn client(&self) -> Client {
        let mut ws = self.ws();
        let ev = ws.expect_event("pusher:connection_established");
        let data = ev.data_json();
        let socket_id = data["socket_id"].as_str().unwrap().to_string();
        Client { ws, socket_id }
    }

    pub fn rest(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        rest_signed(
            self.port,
            method,
            path,
            extra,
            body,
            APP_KEY,
            APP_SECRET,
            now(),
        )
    }

    pub fn publish(&self, channel: &str, event: &str, data: &str) -> (u16, String) {
        let body = format!(
            r#"{{"name":"{event}","channel":"{channel}","data":{}}}"#,
            sonic_rs::to_string(data).unwrap()
        );
        self.rest("POST", &format!("/apps/{APP_ID}/events"), &[], &body)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[allow(clippy::too_many_arguments)]
pub fn rest_signed(
    port: u16,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
    key: &str,
    secret: &str,
    ts: i64,
) -> (u16, String) {
    let query = relay::protocol::auth::sign_rest_query(
        method,
        path,
        extra,
        body.as_bytes(),
        key,
        secret,
        ts,
    );
    http(port, method, &format!("{path}?{query}"), body)
}

/// One HTTP/1.1 request with Connection: close; returns status and body.
pub fn http(port: u16, method: &str, target: &str, body: &str) -> (u16, String) {
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    parse_response(&raw(port, req.as_bytes()))
}

/// Sends raw bytes, reads until the server closes.
pub fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_response(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn json(text: &str) -> Value {
    sonic_rs::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A parsed Pusher event.
#[derive(Debug, Clone)]
pub struct Event {
    pub raw: String,
    pub value: Value,
}

impl Event {
    pub fn name(&self) -> &str {
        self.value["event"].as_str().unwrap_or("")
    }
    pub fn channel(&self) -> Option<&str> {
        self.value["channel"].as_str()
    }
    /// `data` must be a JSON string holding JSON; decode it.
    pub fn data_json(&self) -> Value {
        let s = self.value["data"]
            .as_str()
            .unwrap_or_else(|| panic!("data is not a string: {}", self.raw));
        json(s)
    }
    pub fn data_str(&self) -> &str {
        self.value["data"]
            .as_str()
            .unwrap_or_else(|| panic!("data is not a string: {}", self.raw))
    }
}

pub struct Ws {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// permessage-deflate was negotiated (`RELAY_TEST_DEFLATE=1`): compressed frames are inflated on the way in
    /// and the text this client sends goes compressed.
    deflate: bool,
    /// Compressed messages received and inflated.
    inflated: usize,
}

/// `RELAY_TEST_DEFLATE=1`: every test client made by [`Ws::connect`] offers permessage-deflate as a browser does,
/// requires it accepted, inflates what comes compressed and compresses the text it sends, and test servers
/// compress every channel event (`RELAY_COMPRESSION_MIN_BYTES=0`), so the conformance suites run with compression
/// negotiated (scripts/test runs them so; `tests/deflate.rs` and the TLS clients are not meant for it).
pub fn deflate_everywhere() -> bool {
    std::env::var("RELAY_TEST_DEFLATE").is_ok_and(|v| v == "1")
}

/// What browsers and Node's `ws` offer.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// RFC 7692 §7.2.1: a sync flush ends with these four bytes; they are left off the wire.
pub const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A client's side of RFC 7692 §7.2.1, independent of the server's code: raw deflate, sync flush, tail removed.
pub fn compress(text: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(text.len() + 64);
    c.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() as usize, text.len());
    assert!(out.ends_with(&DEFLATE_TAIL));
    out.truncate(out.len() - DEFLATE_TAIL.len());
    out
}

/// `len` pseudo-random letters and digits: text that stays large when compressed, for tests whose point is the
/// bytes on the wire (slow readers, queue caps).
pub fn incompressible(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// A compressed message's payload back to its bytes (the tail put back).
pub fn inflate(payload: &[u8]) -> Vec<u8> {
    use flate2::{Decompress, FlushDecompress};
    let mut input = payload.to_vec();
    input.extend_from_slice(&DEFLATE_TAIL);
    let mut d = Decompress::new(false);
    let mut out = Vec::new();
    loop {
        out.reserve(1 << 20);
        let before = (d.total_in(), d.total_out());
        d.decompress_vec(
            &input[d.total_in() as usize..],
            &mut out,
            FlushDecompress::Sync,
        )
        .unwrap();
        // Done when every byte is in and the inflater stopped with room to spare.
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        assert_ne!(before, (d.total_in(), d.total_out()), "inflating is stuck");
    }
}

impl Ws {
    pub fn connect(port: u16, path: &str) -> Ws {
        let deflate = deflate_everywhere();
        let (mut ws, head) = Ws::connect_offering(port, path, deflate.then_some(DEFLATE_OFFER));
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        if deflate {
            assert!(
                head.contains("Sec-WebSocket-Extensions: permessage-deflate;"),
                "RELAY_TEST_DEFLATE=1 but the offer was declined: {head}"
            );
        }
        ws.deflate = deflate;
        ws
    }

    /// How many compressed messages this client received (and inflated).
    pub fn inflated(&self) -> usize {
        self.inflated
    }

    pub fn send_frame(&mut self, opcode: u8, payload: &[u8], fin: bool, masked: bool) {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        let n = payload.len();
        if n < 126 {
            f.push(mask_bit | n as u8);
        } else if n < 65536 {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        if masked {
            let key = [0x12, 0x34, 0x56, 0x78];
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        self.stream.write_all(&f).unwrap();
    }

    /// One text message; compressed (RSV1) when permessage-deflate was negotiated, as a browser sends it.
    pub fn send_text(&mut self, text: &str) {
        if self.deflate {
            self.send_raw_frame(0xc1, &compress(text.as_bytes()));
        } else {
            self.send_frame(1, text.as_bytes(), true, true);
        }
    }

    /// The next frame, inflated when it came compressed.
    pub fn try_recv_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let raw = self.try_recv_raw_frame(timeout)?;
        let mut frame = Frame {
            opcode: raw.opcode(),
            payload: raw.payload,
        };
        if raw.first & 0x40 != 0 {
            assert!(self.deflate, "RSV1 set without permessage-deflate");
            assert_eq!(frame.opcode, 1, "only text messages are compressed");
            frame.payload = inflate(&frame.payload);
            self.inflated += 1;
        }
        Some(frame)
    }

    pub fn recv_frame(&mut self) -> Frame {
        self.try_recv_frame(TIMEOUT)
            .expect("no frame from server within the timeout")
    }

    /// Next text frame as an event, answering nothing and skipping control frames other than Close.
    pub fn try_recv_event(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let f = self.try_recv_frame(left)?;
            match f.opcode {
                1 => {
                    let raw = String::from_utf8(f.payload).expect("server text is UTF-8");
                    let value = json(&raw);
                    return Some(Event { raw, value });
                }
                8 => panic!("unexpected close: {:?}", close_of(&f)),
                _ => continue,
            }
        }
    }

    pub fn recv_event(&mut self) -> Event {
        self.try_recv_event(TIMEOUT)
            .expect("no event from server within the timeout")
    }

    pub fn expect_event(&mut self, name: &str) -> Event {
        let e = self.recv_event();
        assert_eq!(e.name(), name, "unexpected event: {}", e.raw);
        e
    }

    /// The next event, named `name`, within `d` (for waits longer than [`TIMEOUT`]).
    pub fn expect_event_within(&mut self, name: &str, d: Duration) -> Event {
        let e = self
            .try_recv_event(d)
            .unwrap_or_else(|| panic!("no {name} within {d:?}"));
        assert_eq!(e.name(), name, "unexpected event: {}", e.raw);
        e
    }

    /// Asserts nothing but control frames arrives for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        if let Some(e) = self.try_recv_event(d) {
            panic!("expected no event, got {}", e.raw);
        }
    }

    /// Reads until a Close frame; returns (code, reason). Text frames before it are returned too.
    pub fn expect_close(&mut self) -> (Option<u16>, Vec<Event>) {
        let mut events = Vec::new();
        loop {
            let f = self
                .try_recv_frame(Duration::from_secs(10))
                .expect("connection ended without a Close frame");
            match f.opcode {
                8 => return (close_of(&f), events),
                1 => {
                    let raw = String::from_utf8(f.payload).unwrap();
                    let value = json(&raw);
                    events.push(Event { raw, value });
                }
                _ => {}
            }
        }
    }

    pub fn subscribe(&mut self, channel: &str) -> Event {
        self.send_text(&format!(
            r#"{{"event":"pusher:subscribe","data":{{"auth":"","channel":"{channel}"}}}}"#
        ));
        let e = self.recv_event();
        assert_eq!(
            e.name(),
            "pusher_internal:subscription_succeeded",
            "{}",
            e.raw
        );
        e
    }

    pub fn close_tcp(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

pub fn close_of(f: &Frame) -> Option<u16> {
    (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]))
}

/// Server frames are unmasked.
fn parse_frame(b: &[u8]) -> Option<(Frame, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let (len, mut off) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
    if b.len() < off + len {
        return None;
    }
    let payload = b[off..off + len].to_vec();
    off += len;
    Some((Frame { opcode, payload }, off))
}

pub struct Client {
    pub ws: Ws,
    pub socket_id: String,
}

impl std::ops::Deref for Client {
    type Target = Ws;
    fn deref(&self) -> &Ws {
        &self.ws
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Ws {
        &mut self.ws
    }
}

pub fn obj_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .map(|o| o.iter().map(|(k, _)| k.to_string()).collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

// ---- channel authorization and sign-in over a client, signed with the default app ----

pub fn sub_msg(channel: &str, auth: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(d) => format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}","auth":"{auth}","channel_data":{}}}}}"#,
            sonic_rs::to_string(d).unwrap()
        ),
        None => format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}","auth":"{auth}"}}}}"#
        ),
    }
}

/// Joins a presence channel as `user_id` and returns the subscription_succeeded event.
pub fn join(c: &mut Client, channel: &str, user_id: &str, info: Option<&str>) -> Event {
    let data = match info {
        Some(i) => format!(r#"{{"user_id":"{user_id}","user_info":{i}}}"#),
        None => format!(r#"{{"user_id":"{user_id}"}}"#),
    };
    let auth = relay::protocol::auth::sign_channel(
        APP_KEY,
        APP_SECRET,
        &c.socket_id,
        channel,
        Some(&data),
    );
    c.send_text(&sub_msg(channel, &auth, Some(&data)));
    c.expect_event("pusher_internal:subscription_succeeded")
}

pub fn private_sub(c: &mut Client, channel: &str) {
    let auth =
        relay::protocol::auth::sign_channel(APP_KEY, APP_SECRET, &c.socket_id, channel, None);
    c.send_text(&sub_msg(channel, &auth, None));
    c.expect_event("pusher_internal:subscription_succeeded");
}

pub fn signin(c: &mut Client, user_data: &str) -> Event {
    let auth = relay::protocol::auth::sign_user(APP_KEY, APP_SECRET, &c.socket_id, user_data);
    c.send_text(&format!(
        r#"{{"event":"pusher:signin","data":{{"auth":"{auth}","user_data":{}}}}}"#,
        sonic_rs::to_string(user_data).unwrap()
    ));
    c.recv_event()
}

/// A raw server frame with its first byte (FIN, RSV bits, opcode), for the permessage-deflate tests.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub first: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }
    /// RSV1: a compressed message (RFC 7692 §6).
    pub fn rsv1(&self) -> bool {
        self.first & 0x40 != 0
    }
}

impl Ws {
    /// Connects offering `extensions` in `Sec-WebSocket-Extensions` (none when `None`); returns the client and
    /// the server's 101 head. The client neither inflates nor compresses: its caller reads the answer and the raw
    /// frames itself ([`Ws::connect`] turns that on for `RELAY_TEST_DEFLATE=1`).
    pub fn connect_offering(port: u16, path: &str, extensions: Option<&str>) -> (Ws, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let offer = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).expect("handshake read");
            assert!(
                n > 0,
                "closed during handshake: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        buf.drain(..head_end);
        (
            Ws {
                stream,
                buf,
                deflate: false,
                inflated: 0,
            },
            head,
        )
    }

    /// Sends one masked frame whose first byte is exactly `first` (FIN, RSV bits and opcode as given).
    pub fn send_raw_frame(&mut self, first: u8, payload: &[u8]) {
        let mut f = vec![first];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let key = [0x9a, 0x0b, 0x3c, 0x4d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&f).unwrap();
    }

    /// The next frame with its first byte; `None` on timeout or end of stream.
    pub fn try_recv_raw_frame(&mut self, timeout: Duration) -> Option<RawFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2
                && let Some((frame, used)) = parse_frame(&self.buf)
            {
                let first = self.buf[0];
                self.buf.drain(..used);
                return Some(RawFrame {
                    first,
                    payload: frame.payload,
                });
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// The next text frame (control frames other than Close skipped).
    pub fn recv_text_frame(&mut self) -> RawFrame {
        loop {
            let f = self
                .try_recv_raw_frame(TIMEOUT)
                .expect("no frame from server within the timeout");
            match f.opcode() {
                1 => return f,
                8 => panic!("unexpected close: {:?}", f.payload),
                _ => continue,
            }
        }
    }
}
