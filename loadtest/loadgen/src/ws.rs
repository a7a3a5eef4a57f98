//! Minimal WebSocket client for the Pusher protocol: upgrade, wait for
//! `pusher:connection_established`, subscribe, wait for
//! `pusher_internal:subscription_succeeded`, then a receive loop that does no
//! allocation per message and answers WS pings and `pusher:ping`.

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelableAsyncReadRent, Canceller};
#[cfg(test)]
use monoio::net::TcpStream;

use crate::net;
use crate::tls::{Stream, TlsClient};
use crate::util::json_escape;

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest server frame we accept (anything bigger is a protocol error).
const MAX_FRAME: usize = 16 << 20;

/// Fixed handshake key and its RFC 6455 accept value.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const PUSHER_PONG: &[u8] = br#"{"event":"pusher:pong","data":{}}"#;
pub const PUSHER_PING: &[u8] = br#"{"event":"pusher:ping","data":{}}"#;

/// Where the receive loop ([`WsConn::hold`]) reports deliveries and pongs.
pub trait Recv {
    /// Nanoseconds since the shared start instant.
    fn now_ns(&self) -> u64;
    /// One delivery: `t_ns` is the publisher's stamp, `now_ns` the read time.
    fn delivery(&self, t_ns: u64, now_ns: u64);
    /// Deliveries of one read, counted once per read.
    fn add_delivered(&self, n: u64);
    fn add_pong(&self);
}

/// Bytes read from every socket of this process, as they came off the wire (before any inflating): the
/// `wire_bytes` of a report. One relaxed add per read, not per message.
pub static WIRE_BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// RSV1: a compressed message (permessage-deflate, RFC 7692 §6).
const RSV1: u8 = 0x40;
/// What `--deflate` offers: the extension as a browser or Node's `ws` does.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Where a compressed message's text is, in place of a range of the read buffer.
const INFLATED: usize = usize::MAX;

thread_local! {
    /// One inflater per loadgen thread, reset per message (the servers under test take no context over).
    static INFLATER: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(false));
}

/// The receive loop reads only the start of a compressed message (the event name, channel and the publisher's
/// `t=` stamp come first): inflating every delivery whole would make the generator, not the server, the
/// bottleneck. The handshake phase inflates whole messages.
const INFLATE_PREFIX: usize = 192;

/// How many recent compressed messages each thread remembers (see `inflate_prefix`): more than the publications
/// a saturated server has in flight at once in the scenarios here (about 15 at 750 publishes/s and 20 ms).
const INFLATE_CACHE: usize = 64;

/// Compressed messages inflated (cache misses), all threads: `inflated_messages` in a report. With every
/// subscriber's copy recognised it equals the publications times the threads that received them.
pub static INFLATED_MESSAGES: AtomicU64 = AtomicU64::new(0);

/// Recent compressed messages with the start of their text, and the next slot to replace (round robin).
type SeenMessages = (usize, Vec<(Vec<u8>, Vec<u8>)>);

thread_local! {
    static INFLATE_SEEN: std::cell::RefCell<SeenMessages> = const { std::cell::RefCell::new((0, Vec::new())) };
}

/// The start of a compressed message's text (`INFLATE_PREFIX` bytes at least) into `out`. Every subscriber of a
/// publication gets the same compressed bytes (deflate is deterministic, and neither server keeps a context), and
/// each real client inflates on its own CPU; this generator plays a thousand clients on one core, so it inflates
/// each distinct message once per thread and recognises the repeats by comparing their bytes whole. Otherwise
/// the generator's inflating (Huffman tables built per message) would be the bottleneck and its queueing would be
/// measured as the server's latency.
fn inflate_prefix(payload: &[u8], out: &mut Vec<u8>) -> Result<(), ConnError> {
    let hit = INFLATE_SEEN.with_borrow(|(_, seen)| {
        seen.iter()
            .find(|(c, _)| c[..] == *payload)
            .map(|(_, text)| {
                out.clear();
                out.extend_from_slice(text);
            })
    });
    if hit.is_some() {
        return Ok(());
    }
    inflate_into(payload, out, INFLATE_PREFIX)?;
    INFLATED_MESSAGES.fetch_add(1, Ordering::Relaxed);
    INFLATE_SEEN.with_borrow_mut(|(next, seen)| {
        if seen.len() < INFLATE_CACHE {
            seen.push((payload.to_vec(), out.clone()));
        } else {
            // The slot's buffers are reused: once they are as large as the messages, a miss allocates nothing.
            let (c, text) = &mut seen[*next];
            c.clear();
            c.extend_from_slice(payload);
            text.clear();
            text.extend_from_slice(out);
            *next = (*next + 1) % INFLATE_CACHE;
        }
    });
    Ok(())
}

/// Inflates one compressed message (RFC 7692 §7.2.2: the 00 00 ff ff tail put back) into `out`, stopping once
/// `out` holds at least `cap` bytes.
fn inflate_into(payload: &[u8], out: &mut Vec<u8>, cap: usize) -> Result<(), ConnError> {
    out.clear();
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        for input in [payload, &[0x00, 0x00, 0xff, 0xff][..]] {
            let start = d.total_in();
            loop {
                if out.len() >= cap {
                    return Ok(());
                }
                if out.capacity() == out.len() {
                    out.reserve_exact((cap - out.len()).min(out.capacity().max(4096)));
                }
                let done = (d.total_in() - start) as usize;
                let status = d
                    .decompress_vec(&input[done..], out, flate2::FlushDecompress::Sync)
                    .map_err(|_| ConnError::Protocol("bad compressed message"))?;
                let done = (d.total_in() - start) as usize;
                if status == flate2::Status::StreamEnd {
                    return Ok(());
                }
                if done == input.len() && out.len() < out.capacity() {
                    break;
                }
                if out.len() > MAX_FRAME {
                    return Err(ConnError::Protocol("compressed message too large"));
                }
            }
        }
        Ok(())
    })
}

/// Where to connect and how.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddrV4,
    pub key: String,
    /// Spread source addresses once the connection total exceeds this.
    pub per_ip: usize,
    /// wss:// (`--tls`).
    pub tls: Option<TlsClient>,
    /// Offer permessage-deflate (`--deflate`).
    pub deflate: bool,
}

#[derive(Debug)]
pub enum ConnError {
    Connect(std::io::Error),
    /// The TLS handshake failed.
    Tls(std::io::Error),
    Io(std::io::Error),
    Closed,
    HttpStatus(u16),
    Protocol(&'static str),
    PusherError,
    Timeout,
}

impl ConnError {
    /// Short label used as a key in the JSON error counts.
    pub fn label(&self) -> String {
        match self {
            ConnError::Connect(e) => match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => "connect_refused".into(),
                Some(libc::EADDRNOTAVAIL) => "connect_addr_not_avail".into(),
                Some(libc::EMFILE) | Some(libc::ENFILE) => "connect_too_many_files".into(),
                Some(code) => format!("connect_errno_{code}"),
                None => "connect_error".into(),
            },
            ConnError::Tls(e) => format!("tls_{:?}", e.kind()).to_lowercase(),
            ConnError::Io(e) => match e.raw_os_error() {
                Some(libc::ECONNRESET) => "io_reset".into(),
                Some(code) => format!("io_errno_{code}"),
                None => "io_error".into(),
            },
            ConnError::Closed => "closed".into(),
            ConnError::HttpStatus(s) => format!("http_{s}"),
            ConnError::Protocol(p) => format!("protocol_{}", p.replace(' ', "_")),
            ConnError::PusherError => "pusher_error".into(),
            ConnError::Timeout => "timeout".into(),
        }
    }
}

/// Parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHdr {
    pub opcode: u8,
    pub fin: bool,
    pub hdr_len: usize,
    pub payload_len: usize,
    pub mask: Option<[u8; 4]>,
}

impl FrameHdr {
    #[inline]
    pub fn total(&self) -> usize {
        self.hdr_len + self.payload_len
    }
}

/// Parses a frame header. `Ok(None)` if more bytes are needed.
#[inline]
pub fn parse_header(b: &[u8]) -> Result<Option<FrameHdr>, &'static str> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (b[0], b[1]);
    // RSV1 is permessage-deflate's; the connection checks it was negotiated.
    if b0 & 0x30 != 0 {
        return Err("rsv bits set");
    }
    let (len, mut off) = match b1 & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(a), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_FRAME as u64 {
        return Err("frame too large");
    }
    let mask = if b1 & 0x80 != 0 {
        if b.len() < off + 4 {
            return Ok(None);
        }
        let m = [b[off], b[off + 1], b[off + 2], b[off + 3]];
        off += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHdr {
        opcode: b0 & 0x0f,
        fin: b0 & 0x80 != 0,
        hdr_len: off,
        payload_len: len as usize,
        mask,
    }))
}

/// Appends one masked client frame (FIN set) to `out`.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

pub fn unmask(p: &mut [u8], mask: [u8; 4]) {
    for (i, b) in p.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[inline]
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Finds `"t=<digits>` in a payload and returns the number (no allocation).
#[inline]
pub fn find_t(p: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < p.len() {
        let j = i + p[i..].iter().position(|&c| c == b'"')?;
        if p.get(j + 1) == Some(&b't') && p.get(j + 2) == Some(&b'=') {
            let mut v: u64 = 0;
            let mut k = j + 3;
            while k < p.len() && p[k].is_ascii_digit() {
                v = v.wrapping_mul(10).wrapping_add((p[k] - b'0') as u64);
                k += 1;
            }
            if k > j + 3 {
                return Some(v);
            }
        }
        i = j + 1;
    }
    None
}

/// The `socket_id` inside a `pusher:connection_established` payload, whose
/// data is a JSON string (so the inner quotes may be escaped).
pub fn socket_id_of(p: &[u8]) -> Option<String> {
    let key = b"socket_id";
    let i = p.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &p[i..];
    let start = rest.iter().position(|c| c.is_ascii_digit())?;
    let len = rest[start..]
        .iter()
        .position(|c| !(c.is_ascii_digit() || *c == b'.'))
        .unwrap_or(rest.len() - start);
    std::str::from_utf8(&rest[start..start + len])
        .ok()
        .map(String::from)
}

/// Status code of a Close frame payload (None when it carries none).
pub fn close_code(p: &[u8]) -> Option<u16> {
    (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]))
}

/// The numeric `code` of a `pusher:error` text payload (e.g. 4100, 4301),
/// whether `data` is an object or a JSON string with escaped quotes.
pub fn pusher_error_code(p: &[u8]) -> Option<u16> {
    if !contains(p, b"\"pusher:error\"") {
        return None;
    }
    let key = b"code";
    let i = p.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &p[i..];
    let start = rest
        .iter()
        .position(|c| !matches!(c, b'"' | b'\\' | b':' | b' '))?;
    let mut v: u32 = 0;
    let mut n = 0;
    for c in &rest[start..] {
        if !c.is_ascii_digit() || n == 5 {
            break;
        }
        v = v * 10 + (c - b'0') as u32;
        n += 1;
    }
    (n > 0 && v <= u16::MAX as u32).then_some(v as u16)
}

fn mask_for(idx: usize) -> [u8; 4] {
    // splitmix64 of the connection index: a fixed pseudo-random mask per connection.
    let mut z = (idx as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let m = (z as u32 | 1).to_le_bytes();
    [m[0], m[1], m[2], m[3]]
}

/// One client WebSocket connection with its reusable buffers.
pub struct WsConn {
    stream: Stream,
    /// Read buffer; bytes `head..len` are unparsed.
    buf: Vec<u8>,
    head: usize,
    /// Bytes needed from `head` for the next complete frame (0 = unknown).
    need: usize,
    wbuf: Vec<u8>,
    mask: [u8; 4],
    /// permessage-deflate was negotiated.
    deflate: bool,
    /// The last compressed message, inflated (reused).
    inflated: Vec<u8>,
}

impl WsConn {
    /// A text frame's payload: a range of the read buffer, or the message just inflated.
    pub fn text(&self, s: usize, e: usize) -> &[u8] {
        if s == INFLATED {
            &self.inflated[..e]
        } else {
            &self.buf[s..e]
        }
    }

    /// Connects, upgrades, waits for `connection_established`, subscribes to
    /// `channel` and waits for `subscription_succeeded`.
    pub async fn open(
        t: &Target,
        idx: usize,
        total: usize,
        channel: &str,
        read_buf: usize,
    ) -> Result<WsConn, ConnError> {
        let (mut c, _socket_id) = WsConn::connect(t, idx, total, read_buf, None).await?;
        c.subscribe(channel, "", None).await?;
        Ok(c)
    }

    /// Connects, upgrades and waits for `pusher:connection_established`.
    /// Returns the connection and its `socket_id`. `rcvbuf` sets `SO_RCVBUF`.
    pub async fn connect(
        t: &Target,
        idx: usize,
        total: usize,
        read_buf: usize,
        rcvbuf: Option<usize>,
    ) -> Result<(WsConn, String), ConnError> {
        let tcp = net::connect_with(t.addr, net::source_ip(idx, total, t.per_ip), rcvbuf)
            .await
            .map_err(ConnError::Connect)?;
        let stream = crate::tls::wrap(t.tls.as_ref(), tcp, *t.addr.ip())
            .await
            .map_err(ConnError::Tls)?;
        let mut c = WsConn {
            stream,
            buf: Vec::with_capacity(read_buf.max(256)),
            head: 0,
            need: 0,
            wbuf: Vec::with_capacity(256),
            mask: mask_for(idx),
            deflate: false,
            inflated: Vec::new(),
        };
        let offer = if t.deflate {
            format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
        } else {
            String::new()
        };
        let req = format!(
            "GET /app/{}?protocol=7&client=relay-loadgen&version=1.0 HTTP/1.1\r\n\
             Host: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            t.key, t.addr
        );
        let (res, _) = c.stream.write_all(req.into_bytes()).await;
        res.map_err(ConnError::Io)?;
        loop {
            c.fill().await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&c.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let code = resp.code.unwrap_or(0);
                    if code != 101 {
                        return Err(ConnError::HttpStatus(code));
                    }
                    let accept_ok = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("sec-websocket-accept")
                            && h.value.trim_ascii() == WS_ACCEPT
                    });
                    if !accept_ok {
                        return Err(ConnError::Protocol("bad accept key"));
                    }
                    c.deflate = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("sec-websocket-extensions")
                            && h.value.starts_with(b"permessage-deflate")
                    });
                    if c.deflate && !t.deflate {
                        return Err(ConnError::Protocol("extension not offered"));
                    }
                    // One inflater per thread, reset per message: a server keeping its context cannot be read.
                    let no_takeover = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("sec-websocket-extensions")
                            && contains(h.value, b"server_no_context_takeover")
                    });
                    if c.deflate && !no_takeover {
                        return Err(ConnError::Protocol("deflate with context takeover"));
                    }
                    c.head = n;
                    break;
                }
                Ok(httparse::Status::Partial) => {
                    if c.buf.len() > 16 * 1024 {
                        return Err(ConnError::Protocol("http head too large"));
                    }
                }
                Err(_) => return Err(ConnError::Protocol("bad http response")),
            }
        }
        let (s, e) = c.await_event(b"pusher:connection_established").await?;
        let socket_id = socket_id_of(c.text(s, e)).unwrap_or_default();
        Ok((c, socket_id))
    }

    /// Subscribes to `channel` (with `auth` and, for presence channels,
    /// `channel_data`) and waits for `pusher_internal:subscription_succeeded`.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        auth: &str,
        channel_data: Option<&str>,
    ) -> Result<(), ConnError> {
        let sub = match channel_data {
            None => format!(
                r#"{{"event":"pusher:subscribe","data":{{"auth":"{}","channel":"{}"}}}}"#,
                json_escape(auth),
                json_escape(channel)
            ),
            Some(d) => format!(
                r#"{{"event":"pusher:subscribe","data":{{"auth":"{}","channel":"{}","channel_data":"{}"}}}}"#,
                json_escape(auth),
                json_escape(channel),
                json_escape(d)
            ),
        };
        self.send(OP_TEXT, sub.as_bytes()).await?;
        self.await_event(b"pusher_internal:subscription_succeeded")
            .await?;
        Ok(())
    }

    /// The socket's file descriptor (for `shutdown`, `SO_LINGER`, `TCP_INFO`).
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Payload bytes of a frame returned by [`WsConn::next_frame`].
    pub fn payload(&self, s: usize, e: usize) -> &[u8] {
        &self.buf[s..e]
    }

    /// Sends one masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), ConnError> {
        self.send(opcode, payload).await
    }

    /// Appends one masked frame (this connection's mask) to `out`, to send
    /// many frames with one [`WsConn::send_raw`].
    pub fn encode_into(&self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        encode_client_frame(out, opcode, payload, self.mask);
    }

    /// Writes pre-encoded frames.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) -> (Result<(), ConnError>, Vec<u8>) {
        let (res, b) = self.stream.write_all(bytes).await;
        (res.map(|_| ()).map_err(ConnError::Io), b)
    }

    /// Next frame that is not a WebSocket ping (pings are answered here),
    /// or `Ok(None)` when `deadline` passes first. Returns (opcode, payload
    /// start, payload end); read the payload with [`WsConn::payload`]. A
    /// timeout loses no data: the pending read is cancelled and whatever it
    /// got is kept.
    pub async fn next_frame(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(u8, usize, usize)>, ConnError> {
        loop {
            let h = parse_header(&self.buf[self.head..]).map_err(ConnError::Protocol)?;
            match h {
                Some(h) if self.buf.len() - self.head >= h.total() => {
                    self.need = 0;
                    let s = self.head + h.hdr_len;
                    let e = s + h.payload_len;
                    if let Some(m) = h.mask {
                        unmask(&mut self.buf[s..e], m);
                    }
                    self.head = e;
                    if h.opcode == OP_PING {
                        let mut tmp = [0u8; 125];
                        let n = (e - s).min(125);
                        tmp[..n].copy_from_slice(&self.buf[s..s + n]);
                        self.send(OP_PONG, &tmp[..n]).await?;
                        continue;
                    }
                    return Ok(Some((h.opcode, s, e)));
                }
                h => {
                    self.need = h.map(|h| h.total()).unwrap_or(0);
                    if !self.fill_until(deadline).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Like `fill`, but gives up at `deadline` (Ok(false)) without losing
    /// bytes: the read is cancelled and its buffer taken back.
    async fn fill_until(&mut self, deadline: Instant) -> Result<bool, ConnError> {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        self.prepare_read()?;
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let stream = match &mut self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => {
                // Waiting for TLS readability is cancel-safe; once it says yes, the read returns at once.
                let wait = monoio::time::sleep_until(monoio::time::Instant::from_std(deadline));
                let ready = monoio::select! {
                    r = s.readable() => Some(r),
                    _ = wait => None,
                };
                let (res, slice) = match ready {
                    None => {
                        self.buf = buf;
                        return Ok(false);
                    }
                    Some(Err(e)) => (Err(e), buf.slice_mut(len..cap)),
                    Some(Ok(())) => s.read(buf.slice_mut(len..cap)).await,
                };
                self.buf = slice.into_inner();
                return match res {
                    Ok(0) => Err(ConnError::Closed),
                    Ok(n) => {
                        WIRE_BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
                        Ok(true)
                    }
                    Err(e) => Err(ConnError::Io(e)),
                };
            }
        };
        let canceller = Canceller::new();
        let read = stream.cancelable_read(buf.slice_mut(len..cap), canceller.handle());
        let mut read = std::pin::pin!(read);
        let sleep = monoio::time::sleep_until(monoio::time::Instant::from_std(deadline));
        let done = monoio::select! {
            r = &mut read => Some(r),
            _ = sleep => None,
        };
        let (res, slice) = match done {
            Some(r) => r,
            None => {
                let _ = canceller.cancel();
                read.await
            }
        };
        self.buf = slice.into_inner();
        match res {
            Ok(0) => Err(ConnError::Closed),
            Ok(n) => {
                WIRE_BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Ok(false),
            Err(e) => Err(ConnError::Io(e)),
        }
    }

    /// Wraps an already-upgraded stream (tests drive `hold` directly).
    #[cfg(test)]
    pub fn from_stream(stream: TcpStream, read_buf: usize) -> WsConn {
        WsConn {
            stream: Stream::Plain(stream),
            buf: Vec::with_capacity(read_buf),
            head: 0,
            need: 0,
            wbuf: Vec::with_capacity(256),
            mask: mask_for(0),
            deflate: false,
            inflated: Vec::new(),
        }
    }

    /// Moves unparsed bytes to the front and makes room for the next read.
    fn prepare_read(&mut self) -> Result<(), ConnError> {
        if self.head > 0 {
            let len = self.buf.len();
            if self.head < len {
                self.buf.copy_within(self.head..len, 0);
            }
            self.buf.truncate(len - self.head);
            self.head = 0;
        }
        let want = self.need.max(self.buf.len() + 1);
        if want > MAX_FRAME + 14 {
            return Err(ConnError::Protocol("frame too large"));
        }
        if self.buf.capacity() < want {
            // Only when a frame is larger than the buffer: grow (rare).
            let target = want.max(self.buf.capacity() * 2);
            self.buf.reserve(target - self.buf.len());
        }
        Ok(())
    }

    /// Reads more bytes, appending after the unparsed ones.
    async fn fill(&mut self) -> Result<(), ConnError> {
        self.prepare_read()?;
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        match res {
            Ok(0) => Err(ConnError::Closed),
            Ok(n) => {
                WIRE_BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(ConnError::Io(e)),
        }
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), ConnError> {
        let mut w = std::mem::take(&mut self.wbuf);
        w.clear();
        encode_client_frame(&mut w, opcode, payload, self.mask);
        let (res, w) = self.stream.write_all(w).await;
        self.wbuf = w;
        res.map(|_| ()).map_err(ConnError::Io)
    }

    /// Next text frame payload range (handshake phase only). Answers pings.
    async fn next_text(&mut self) -> Result<(usize, usize), ConnError> {
        loop {
            let h = parse_header(&self.buf[self.head..]).map_err(ConnError::Protocol)?;
            match h {
                Some(h) if self.buf.len() - self.head >= h.total() => {
                    self.need = 0;
                    let compressed = self.buf[self.head] & RSV1 != 0;
                    let s = self.head + h.hdr_len;
                    let e = s + h.payload_len;
                    if let Some(m) = h.mask {
                        unmask(&mut self.buf[s..e], m);
                    }
                    self.head = e;
                    if compressed && !(self.deflate && h.opcode == OP_TEXT) {
                        return Err(ConnError::Protocol("rsv bits set"));
                    }
                    match h.opcode {
                        OP_TEXT if compressed => {
                            let mut out = std::mem::take(&mut self.inflated);
                            let r = inflate_into(&self.buf[s..e], &mut out, MAX_FRAME);
                            let n = out.len();
                            self.inflated = out;
                            r?;
                            return Ok((INFLATED, n));
                        }
                        OP_TEXT => return Ok((s, e)),
                        OP_PING => {
                            let mut tmp = [0u8; 125];
                            let n = (e - s).min(125);
                            tmp[..n].copy_from_slice(&self.buf[s..s + n]);
                            self.send(OP_PONG, &tmp[..n]).await?;
                        }
                        OP_CLOSE => return Err(ConnError::Closed),
                        _ => {}
                    }
                }
                h => {
                    self.need = h.map(|h| h.total()).unwrap_or(0);
                    self.fill().await?;
                }
            }
        }
    }

    async fn await_event(&mut self, needle: &[u8]) -> Result<(usize, usize), ConnError> {
        loop {
            let (s, e) = self.next_text().await?;
            let p = self.text(s, e);
            if contains(p, needle) {
                return Ok((s, e));
            }
            if contains(p, b"pusher:error") || contains(p, b"subscription_error") {
                return Err(ConnError::PusherError);
            }
            if contains(p, b"\"pusher:ping\"") {
                self.send(OP_TEXT, PUSHER_PONG).await?;
            }
        }
    }

    /// Receive loop after subscribing: counts deliveries (text frames with a
    /// `"t=` timestamp), records publish->delivery latency, answers pings.
    /// No allocation per delivery (a distinct compressed message is kept once per thread). Returns why the connection ended.
    pub async fn hold<R: Recv>(&mut self, ctx: &R) -> ConnError {
        let mut now_ns = ctx.now_ns();
        loop {
            let mut delivered = 0u64;
            let mut ws_ping: Option<([u8; 125], usize)> = None;
            let mut pusher_ping = false;
            {
                loop {
                    let h = match parse_header(&self.buf[self.head..]) {
                        Ok(Some(h)) => h,
                        Ok(None) => {
                            self.need = 0;
                            break;
                        }
                        Err(e) => return ConnError::Protocol(e),
                    };
                    if self.buf.len() - self.head < h.total() {
                        self.need = h.total();
                        break;
                    }
                    let compressed = self.buf[self.head] & RSV1 != 0;
                    let s = self.head + h.hdr_len;
                    let e = s + h.payload_len;
                    self.head = e;
                    if let Some(m) = h.mask {
                        unmask(&mut self.buf[s..e], m);
                    }
                    if compressed {
                        if !(self.deflate && h.opcode == OP_TEXT) {
                            return ConnError::Protocol("rsv bits set");
                        }
                        if let Err(e) = inflate_prefix(&self.buf[s..e], &mut self.inflated) {
                            return e;
                        }
                    }
                    let p = if compressed {
                        &self.inflated[..]
                    } else {
                        &self.buf[s..e]
                    };
                    match h.opcode {
                        OP_TEXT => {
                            if let Some(t) = find_t(p) {
                                delivered += 1;
                                ctx.delivery(t, now_ns);
                            } else if contains(p, b"\"pusher:ping\"") {
                                pusher_ping = true;
                            }
                        }
                        OP_PING => {
                            let mut tmp = [0u8; 125];
                            let n = p.len().min(125);
                            tmp[..n].copy_from_slice(&p[..n]);
                            ws_ping = Some((tmp, n));
                        }
                        OP_CLOSE => return ConnError::Closed,
                        _ => {}
                    }
                }
            }
            if delivered > 0 {
                ctx.add_delivered(delivered);
            }
            if let Some((tmp, n)) = ws_ping {
                ctx.add_pong();
                if let Err(e) = self.send(OP_PONG, &tmp[..n]).await {
                    return e;
                }
            }
            if pusher_ping {
                ctx.add_pong();
                if let Err(e) = self.send(OP_TEXT, PUSHER_PONG).await {
                    return e;
                }
            }
            if let Err(e) = self.fill().await {
                return e;
            }
            now_ns = ctx.now_ns();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        let h = parse_header(&[0x81, 5]).unwrap().unwrap();
        assert_eq!((h.opcode, h.hdr_len, h.payload_len, h.fin), (1, 2, 5, true));
        let h = parse_header(&[0x81, 126, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.hdr_len, h.payload_len), (4, 256));
        let h = parse_header(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.hdr_len, h.payload_len), (10, 65536));
        assert_eq!(parse_header(&[0x81, 126, 1]).unwrap(), None);
        assert!(parse_header(&[0x81, 127, 0xff, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // RSV1 is permessage-deflate's (the connection checks it was negotiated); RSV2 and RSV3 mean nothing.
        assert!(parse_header(&[0xC1, 1]).unwrap().is_some());
        assert!(parse_header(&[0xA1, 1]).is_err());
        assert!(parse_header(&[0x91, 1]).is_err());
    }

    #[test]
    fn client_frame_roundtrip() {
        for n in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_client_frame(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            let h = parse_header(&out).unwrap().unwrap();
            assert_eq!(h.payload_len, n);
            assert_eq!(h.mask, Some([1, 2, 3, 4]));
            let mut p = out[h.hdr_len..].to_vec();
            unmask(&mut p, [1, 2, 3, 4]);
            assert_eq!(p, payload);
        }
    }

    #[test]
    fn parses_socket_id_and_codes() {
        let ce = br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#;
        assert_eq!(socket_id_of(ce).as_deref(), Some("123.456"));
        assert_eq!(socket_id_of(b"{}"), None);
        let e1 = br#"{"event":"pusher:error","data":{"code":4301,"message":"rate"}}"#;
        assert_eq!(pusher_error_code(e1), Some(4301));
        let e2 = br#"{"event":"pusher:error","data":"{\"code\":4100,\"message\":\"slow\"}"}"#;
        assert_eq!(pusher_error_code(e2), Some(4100));
        let e3 = br#"{"event":"pusher:error","data":{"code":null,"message":"x"}}"#;
        assert_eq!(pusher_error_code(e3), None);
        assert_eq!(
            pusher_error_code(br#"{"event":"lg","data":"code:1"}"#),
            None
        );
        assert_eq!(close_code(&[0x10, 0x04, b'x']), Some(4100));
        assert_eq!(close_code(&[]), None);
    }

    #[test]
    fn finds_timestamp() {
        let f = br#"{"event":"lg","channel":"channel-1","data":"t=123456;s=7;xx"}"#;
        assert_eq!(find_t(f), Some(123456));
        assert_eq!(find_t(br#"{"event":"pusher:ping","data":"{}"}"#), None);
        assert_eq!(find_t(br#"{"a":"t=","b":"t=9"}"#), Some(9));
        assert_eq!(find_t(b"\"t="), None);
    }
}

#[cfg(test)]
mod inflate_tests {
    use super::*;

    /// A message as a server with no context takeover sends it: raw deflate, sync flush, tail cut (RFC 7692).
    fn deflate(text: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn repeated_messages_read_the_same_and_equal_lengths_are_not_confused() {
        // Same length, differing only deep inside: the cache must compare whole messages.
        let texts: Vec<Vec<u8>> = (0..100)
            .map(|i| {
                format!(
                    r#"{{"event":"lg","data":"t={:06};{}"}}"#,
                    i,
                    "ab".repeat(150)
                )
                .into_bytes()
            })
            .collect();
        let mut out = Vec::new();
        let inflated0 = INFLATED_MESSAGES.load(Ordering::Relaxed);
        for round in 0..3 {
            // Each message twice in a row (a hit), then the next: 100 of them outrun the cache.
            for t in texts.iter().flat_map(|t| [t, t]) {
                inflate_prefix(&deflate(t), &mut out).unwrap();
                assert!(out.len() >= INFLATE_PREFIX, "round {round}");
                assert_eq!(out[..INFLATE_PREFIX], t[..INFLATE_PREFIX], "round {round}");
            }
        }
        // Every first copy inflated, every repeat recognised (no other test here inflates).
        assert_eq!(INFLATED_MESSAGES.load(Ordering::Relaxed) - inflated0, 300);
    }
}
