//! The checks behind every fuzz target and every property test: one definition of each.
//!
//! Included as a module from both sides, so it may use only `relay` and the crates relay itself depends on
//! (`bytes`, `sonic_rs`):
//!
//! * `fuzz/fuzz_targets/<target>.rs` (cargo-fuzz, nightly): `#[path = "../harness.rs"] mod harness;`, then
//!   `fuzz_target!(|data: &[u8]| harness::<target>(data));`
//! * `tests/fuzz_props.rs` (proptest, stable, `cargo test`): `#[path = "../fuzz/harness.rs"] mod harness;`; its
//!   generators build structured-but-hostile input and call the `check_*` functions directly, and random bytes
//!   go through the same byte-level entry points the fuzzer uses.
//!
//! Each byte-level entry point (`http_head`, `ws_frames`, ...) turns raw fuzzer bytes into the arguments of the
//! `check_*` functions, which hold the invariants. A broken invariant is a panic, which both libFuzzer and
//! proptest report with the input.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use relay::config::AppConfig;
use relay::http::query::{Query, percent_decode};
use relay::http::request::{HttpError, Method, parse_head};
use relay::json::{self, ArrayError, JsonError, MAX_JSON_DEPTH};
use relay::protocol::auth;
use relay::protocol::channel_name::{self, ChannelKind, ChannelType, SERVER_TO_USER_PREFIX};
use relay::protocol::inbound::{self, IdField};
use relay::protocol::session::{Membership, Session, SignedInUser, Subscription};
use relay::protocol::{client_event, signin, subscribe};
use relay::socket_id::SocketId;
use relay::ws::frame::{FrameDecoder, FrameError, Message, is_valid_close_code, unmask};
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use std::cell::Cell;
use std::rc::Rc;

// ---------------------------------------------------------------------------------------------------------------
// Reading structure out of fuzzer bytes
// ---------------------------------------------------------------------------------------------------------------

/// A cursor over fuzzer bytes: fixed-size numbers from the front, fields split on NUL. Running out yields zeros
/// and empty fields, never a panic, so every byte string is a valid input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// Bytes up to the next NUL (consumed) or the end.
    pub fn field(&mut self) -> &'a [u8] {
        match self.data.iter().position(|&b| b == 0) {
            Some(i) => {
                let (f, rest) = self.data.split_at(i);
                self.data = &rest[1..];
                f
            }
            None => self.rest(),
        }
    }

    /// [`Input::field`] as text (invalid UTF-8 replaced: the server's text inputs are `&str`).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Was a known issue, fixed in a8c3fb3 (`tests/fuzz_props.rs`, `invalid_utf8_in_a_lazy_json_string`): `json::parse`
/// let sonic-rs build a `LazyValue` `&str` over invalid UTF-8 before its final check (a debug-assertion panic at
/// sonic-rs `parser.rs:104`). While `true`, bytes that reach `json::parse` are made UTF-8 here (lossily).
pub const KNOWN_ISSUE_INVALID_UTF8: bool = false;

/// `bytes`, or its lossy UTF-8 form while [`KNOWN_ISSUE_INVALID_UTF8`] stands.
pub fn json_input(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    match String::from_utf8_lossy(bytes) {
        std::borrow::Cow::Owned(s) if KNOWN_ISSUE_INVALID_UTF8 => {
            std::borrow::Cow::Owned(s.into_bytes())
        }
        _ => std::borrow::Cow::Borrowed(bytes),
    }
}

/// Fixed issue (see `tests/fuzz_props.rs`, `invalid_string_escapes_are_refused`): sonic-rs skipped a lazily read
/// string without checking its `\u` escapes, so a string token such as `"\u00zz"` was relayed byte for byte into
/// frames other clients receive. `json::parse` now refuses it at the door. Kept as a switch so a
/// regression can be explored without failing the run.
pub const KNOWN_ISSUE_RAW_STRING_TOKENS: bool = false;

/// Strict RFC 8259 grammar (§2-§7): one value, optional whitespace around it; no raw control characters in
/// strings, escapes only `\" \\ \/ \b \f \n \r \t \uXXXX`. Lone surrogate escapes are grammatical (§8.2).
/// Recursion is bounded: documents that reach it passed `json::check_depth`.
pub fn json_grammar_ok(bytes: &[u8]) -> bool {
    let mut g = Grammar { b: bytes, i: 0 };
    g.value(0) && {
        g.ws();
        g.i == bytes.len()
    }
}

/// `token` is exactly one JSON string.
pub fn is_json_string_token(token: &[u8]) -> bool {
    token.first() == Some(&b'"') && json_grammar_ok(token)
}

struct Grammar<'a> {
    b: &'a [u8],
    i: usize,
}

impl Grammar<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let ok = self.peek() == Some(c);
        self.i += usize::from(ok);
        ok
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn digits(&mut self) -> bool {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i > start
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > 2 * MAX_JSON_DEPTH {
            return false;
        }
        self.ws();
        match self.peek() {
            Some(open @ (b'{' | b'[')) => {
                self.i += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                self.ws();
                if self.eat(close) {
                    return true;
                }
                loop {
                    if open == b'{' {
                        self.ws();
                        if !self.string() {
                            return false;
                        }
                        self.ws();
                        if !self.eat(b':') {
                            return false;
                        }
                    }
                    if !self.value(depth + 1) {
                        return false;
                    }
                    self.ws();
                    if self.eat(close) {
                        return true;
                    }
                    if !self.eat(b',') {
                        return false;
                    }
                }
            }
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.b[self.i..].starts_with(word);
        self.i += if ok { word.len() } else { 0 };
        ok
    }

    fn number(&mut self) -> bool {
        self.eat(b'-');
        let leading = self.eat(b'0')
            || (self.peek().is_some_and(|c| (b'1'..=b'9').contains(&c)) && self.digits());
        if !leading {
            return false;
        }
        if self.eat(b'.') && !self.digits() {
            return false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _ = self.eat(b'+') || self.eat(b'-');
            if !self.digits() {
                return false;
            }
        }
        true
    }

    fn string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        loop {
            match self.peek() {
                None => return false,
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                    return false;
                                }
                                self.i += 1;
                            }
                        }
                        _ => return false,
                    }
                }
                Some(c) if c < 0x20 => return false,
                Some(_) => self.i += 1,
            }
        }
    }
}

/// A string token relay relays into a frame other clients parse: it must be one JSON string. Returns its value
/// when a Rust string can hold it (not for lone surrogates), `None` otherwise.
fn relayed_string(token: &[u8], what: &str) -> Option<String> {
    if !is_json_string_token(token) {
        if !KNOWN_ISSUE_RAW_STRING_TOKENS {
            panic!(
                "{what} relayed as {:?}, which is not a JSON string",
                String::from_utf8_lossy(token)
            );
        }
        return None;
    }
    json::parse::<String>(token).ok()
}

/// The app every check runs against; `small` lowers every limit so that inputs of a few bytes reach them.
pub fn app_config(small: bool) -> AppConfig {
    if small {
        AppConfig {
            max_event_payload_bytes: 16,
            max_channels_per_publish: 3,
            max_batch_size: 2,
            max_channel_name_length: 24,
            max_event_name_length: 12,
            max_presence_user_id_length: 6,
            max_presence_user_info_bytes: 16,
            max_watchlist_size: 2,
            max_channels_per_connection: 1,
            ..AppConfig::default()
        }
    } else {
        AppConfig::default()
    }
}

pub fn session() -> Session {
    Session::new(
        SocketId {
            random: 1,
            unique: 2,
        },
        0,
        -1,
        1 << 20,
    )
}

/// `token` is a JSON string token relay wrote itself (escaped from a Rust string); returns its value.
fn json_string(token: &[u8]) -> String {
    assert!(
        is_json_string_token(token),
        "not a JSON string token: {:?}",
        String::from_utf8_lossy(token)
    );
    match json::parse::<String>(token) {
        Ok(s) => s,
        Err(e) => panic!(
            "not a JSON string token ({e}): {:?}",
            String::from_utf8_lossy(token)
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// http_head
// ---------------------------------------------------------------------------------------------------------------

/// Fuzzer bytes: 2 bytes head limit, 1 byte header limit, 2 bytes split point, then the request bytes; a first
/// byte with the top bit set also runs the Content-Length rules on the rest.
pub fn http_head(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let max_head = usize::from(input.u16());
    let max_headers = usize::from(input.byte());
    let split = usize::from(input.u16());
    let rest = input.rest();
    if mode & 0x80 != 0 {
        let mut parts = rest.splitn(2, |&b| b == 0);
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        check_content_length(first, second, mode & 1 != 0);
    } else {
        check_http_head(rest, max_head, max_headers, split);
    }
}

/// `parse_head` on `buf` and on its prefix of `split` bytes (a head arriving in two reads).
///
/// Invariants: no panic; a parsed head lies within the buffer and the limit, has an absolute path without the
/// query, never both chunked and a length; parsing is incremental: every prefix shorter than the head waits for
/// more bytes (`Ok(None)`) and every prefix that holds the head parses to the same head (bytes after it, a
/// pipelined request or a body, change nothing).
pub fn check_http_head(buf: &[u8], max_head: usize, max_headers: usize, split: usize) {
    let full = parse_head(buf, max_head, max_headers);
    let split = split.min(buf.len());
    let prefix = parse_head(&buf[..split], max_head, max_headers);
    match &full {
        Ok(Some(h)) => {
            assert!(h.head_len <= buf.len(), "head_len past the buffer");
            assert!(h.head_len <= max_head, "head over the limit accepted");
            assert!(h.path.starts_with('/') && !h.path.contains('?'), "{h:?}");
            assert!(!(h.chunked && h.content_length.is_some()), "{h:?}");
            assert!(
                buf[..h.head_len].ends_with(b"\n"),
                "head must end at a line end"
            );
            if let Method::Other(m) = &h.method {
                assert!(!m.is_empty());
            }
            let alone = parse_head(&buf[..h.head_len], max_head, max_headers);
            assert_eq!(
                format!("{alone:?}"),
                format!("{full:?}"),
                "head alone differs"
            );
            if split < h.head_len {
                assert!(
                    matches!(prefix, Ok(None)),
                    "a prefix of a valid head ({split} of {} bytes) gave {prefix:?}",
                    h.head_len
                );
            } else {
                assert_eq!(format!("{prefix:?}"), format!("{full:?}"), "prefix differs");
            }
        }
        Ok(None) => {
            assert!(
                buf.len() <= max_head,
                "incomplete head over the limit kept waiting"
            );
            // A prefix of an incomplete head is incomplete too (or already refused).
            assert!(!matches!(prefix, Ok(Some(_))), "prefix complete, whole not");
        }
        Err(e) => {
            // Every refusal maps to a response without panicking.
            let r = e.response();
            assert!(r.status >= 400, "{e:?}");
        }
    }
}

/// RFC 9110 §8.6 as relay applies it: `1*DIGIT` with optional spaces and tabs around, nothing else.
pub fn content_length_model(value: &[u8]) -> Option<usize> {
    let mut v = value;
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A POST whose Content-Length header has `value` (and a second Content-Length with `second`, if given; a
/// Transfer-Encoding header too if `chunked`). Checks the outcome against [`content_length_model`]: a valid length
/// is taken exactly, anything else is refused, two different lengths are refused, and a length next to
/// Transfer-Encoding is refused.
pub fn check_content_length(value: &[u8], second: Option<&[u8]>, chunked: bool) {
    let mut req = b"POST /apps/1/events HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
    req.extend_from_slice(value);
    req.extend_from_slice(b"\r\n");
    if let Some(s) = second {
        req.extend_from_slice(b"content-length:");
        req.extend_from_slice(s);
        req.extend_from_slice(b"\r\n");
    }
    if chunked {
        req.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let got = parse_head(&req, 1 << 16, 64);
    // A CR or LF inside a value ends the header line: the model would no longer describe the request.
    let line_breaks = |v: &[u8]| v.iter().any(|&b| b == b'\r' || b == b'\n');
    if line_breaks(value) || second.is_some_and(line_breaks) {
        return;
    }
    let first = content_length_model(value);
    let second = second.map(content_length_model);
    let expected = match (first, second) {
        (None, _) | (_, Some(None)) => None,
        (Some(a), Some(Some(b))) if a != b => None,
        (Some(a), _) => Some(a),
    };
    match (expected, &got) {
        (Some(n), Ok(Some(h))) if !chunked => assert_eq!(h.content_length, Some(n)),
        (Some(_), Err(HttpError::Malformed(_))) if chunked => {}
        (None, Err(_)) => {}
        _ => panic!(
            "Content-Length {:?} / {second:?} (chunked {chunked}): expected {expected:?}, got {got:?}",
            String::from_utf8_lossy(value)
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// ws_frames
// ---------------------------------------------------------------------------------------------------------------

/// One client frame, described by its fields, for streams built on purpose (valid or not).
#[derive(Debug, Clone)]
pub struct FrameSpec {
    pub fin: bool,
    /// RSV1-3 as the top bits of the first byte (0 for a valid frame).
    pub rsv: u8,
    pub opcode: u8,
    /// `None`: sent unmasked (a protocol error from a client).
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
    /// 0: shortest length encoding; 1: force the 16-bit form; 2: force the 64-bit form (non-minimal, accepted).
    pub len_form: u8,
}

impl FrameSpec {
    /// The 7-bit length field this frame is sent with.
    fn len7(&self) -> u8 {
        let n = self.payload.len();
        match self.len_form % 3 {
            0 if n <= 125 => n as u8,
            0 | 1 if n <= usize::from(u16::MAX) => 126,
            _ => 127,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0x70) | (self.opcode & 0x0f));
        let len7 = self.len7();
        out.push(if self.mask.is_some() { 0x80 } else { 0 } | len7);
        match len7 {
            126 => out.extend_from_slice(&(self.payload.len() as u16).to_be_bytes()),
            127 => out.extend_from_slice(&(self.payload.len() as u64).to_be_bytes()),
            _ => {}
        }
        match self.mask {
            Some(mask) => {
                out.extend_from_slice(&mask);
                out.extend(
                    self.payload
                        .iter()
                        .zip(mask.iter().cycle())
                        .map(|(b, m)| b ^ m),
                );
            }
            None => out.extend_from_slice(&self.payload),
        }
    }
}

/// A reference model of the decoder, written from RFC 6455 and the rules `FrameDecoder` documents (checked in
/// the same order: RSV bits, opcode, mask, control-frame rules, fragment sequencing, size; then UTF-8 and close
/// payloads on completion). Returns what the decoder must yield for the stream: messages, then at most one error.
pub fn ws_model(frames: &[FrameSpec], max: usize) -> Vec<Result<Message, FrameError>> {
    let mut out = Vec::new();
    let mut partial: Option<(bool, Vec<u8>)> = None; // (is_text, data)
    for f in frames {
        let control = matches!(f.opcode & 0x0f, 8..=10);
        let err = if f.rsv & 0x70 != 0 {
            Some(FrameError::ReservedBits)
        } else if !matches!(f.opcode & 0x0f, 0..=2 | 8..=10) {
            Some(FrameError::ReservedOpcode)
        } else if f.mask.is_none() {
            Some(FrameError::Unmasked)
        } else if control && !f.fin {
            Some(FrameError::ControlFragmented)
        } else if control && f.len7() > 125 {
            Some(FrameError::ControlTooLong)
        } else if f.opcode & 0x0f == 0 && partial.is_none() {
            Some(FrameError::UnexpectedContinuation)
        } else if matches!(f.opcode & 0x0f, 1 | 2) && partial.is_some() {
            Some(FrameError::ExpectedContinuation)
        } else {
            let already = match (&partial, control) {
                (Some((_, d)), false) => d.len(),
                _ => 0,
            };
            (f.payload.len() > max.saturating_sub(already)).then_some(FrameError::TooLarge)
        };
        if let Some(e) = err {
            out.push(Err(e));
            return out;
        }
        let finish = |text: bool, data: Vec<u8>| {
            if text && std::str::from_utf8(&data).is_err() {
                Err(FrameError::InvalidUtf8)
            } else if text {
                Ok(Message::Text(Bytes::from(data)))
            } else {
                Ok(Message::Binary(Bytes::from(data)))
            }
        };
        let result = match f.opcode & 0x0f {
            op @ (1 | 2) if f.fin => Some(finish(op == 1, f.payload.clone())),
            op @ (1 | 2) => {
                partial = Some((op == 1, f.payload.clone()));
                None
            }
            0 => {
                let (_, data) = partial.as_mut().expect("checked above");
                data.extend_from_slice(&f.payload);
                if f.fin {
                    let (text, data) = partial.take().expect("checked above");
                    Some(finish(text, data))
                } else {
                    None
                }
            }
            9 => Some(Ok(Message::Ping(Bytes::from(f.payload.clone())))),
            10 => Some(Ok(Message::Pong(Bytes::from(f.payload.clone())))),
            _ => Some(match f.payload.as_slice() {
                [] => Ok(Message::Close {
                    code: None,
                    reason: Bytes::new(),
                }),
                [_] => Err(FrameError::BadClosePayload),
                [hi, lo, reason @ ..] => {
                    let code = u16::from_be_bytes([*hi, *lo]);
                    if matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
                        && std::str::from_utf8(reason).is_ok()
                    {
                        Ok(Message::Close {
                            code: Some(code),
                            reason: Bytes::from(reason.to_vec()),
                        })
                    } else {
                        Err(FrameError::BadClosePayload)
                    }
                }
            }),
        };
        if let Some(r) = result {
            let stop = r.is_err();
            out.push(r);
            if stop {
                return out;
            }
        }
    }
    out
}

/// Decodes `wire` fed in pieces of the sizes in `chunks` (the rest in one piece once they run out), draining
/// every complete message after each piece and stopping feeding after the first error, as the server does.
/// Checks each message's invariants; returns the outcomes, the decoder's final fragment state and the bytes left
/// undecoded.
pub fn ws_decode(
    max: usize,
    wire: &[u8],
    chunks: &[usize],
) -> (Vec<Result<Message, FrameError>>, usize, Vec<u8>) {
    let mut dec = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter();
    while pos < wire.len() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(wire.len())
            .min(wire.len() - pos);
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => {
                    check_ws_message(&m, max);
                    out.push(Ok(m));
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e:?}");
                    assert!(e.reason().len() <= relay::ws::frame::MAX_CLOSE_REASON);
                    // The decoder's state is unspecified after an error, and how much of the stream had been fed
                    // depends on the split: only the outcomes are compared.
                    out.push(Err(e));
                    return (out, 0, Vec::new());
                }
            }
            assert!(
                dec.buffered_len() <= max,
                "fragments buffered past the limit"
            );
            assert!(dec.in_progress() || dec.buffered_len() == 0);
        }
    }
    (out, dec.buffered_len(), buf.to_vec())
}

/// What the decoder promises about every message it returns.
pub fn check_ws_message(m: &Message, max: usize) {
    match m {
        Message::Text(t) => {
            assert!(std::str::from_utf8(t).is_ok(), "Text that is not UTF-8");
            assert!(
                t.len() <= max,
                "Text of {} bytes over the limit {max}",
                t.len()
            );
        }
        Message::Binary(b) => assert!(b.len() <= max, "Binary over the limit"),
        Message::Ping(p) | Message::Pong(p) => {
            assert!(
                p.len() <= 125 && p.len() <= max,
                "control payload of {}",
                p.len()
            );
        }
        Message::Close { code, reason } => {
            assert!(reason.len() <= 123 && reason.len() <= max);
            assert!(
                std::str::from_utf8(reason).is_ok(),
                "close reason not UTF-8"
            );
            match code {
                Some(c) => assert!(is_valid_close_code(*c), "close code {c}"),
                None => assert!(reason.is_empty()),
            }
        }
    }
}

/// Arbitrary bytes: decoding in the given pieces gives exactly what decoding them in one piece gives (messages,
/// error, fragment state and leftover bytes), and every message keeps the decoder's promises.
pub fn check_ws_stream(max: usize, wire: &[u8], chunks: &[usize]) {
    let whole = ws_decode(max, wire, &[]);
    let pieces = ws_decode(max, wire, chunks);
    assert_eq!(whole, pieces, "result depends on how the bytes were split");
}

/// Frames built from specs: the decoder agrees with [`ws_model`], however the bytes are split.
pub fn check_ws_frames(max: usize, frames: &[FrameSpec], chunks: &[usize]) {
    let mut wire = Vec::new();
    for f in frames {
        f.encode(&mut wire);
    }
    let expected = ws_model(frames, max);
    let (got, _, left) = ws_decode(max, &wire, chunks);
    assert_eq!(
        got, expected,
        "decoder disagrees with the model for {frames:?}"
    );
    if !matches!(expected.last(), Some(Err(_))) {
        assert!(left.is_empty(), "whole frames left undecoded");
    }
    check_ws_stream(max, &wire, chunks);
}

/// `unmask` on `data[offset..]` equals a bytewise XOR with the repeating mask, and undoes itself.
pub fn check_unmask(data: &[u8], mask: [u8; 4], offset: usize) {
    let offset = offset.min(data.len());
    let mut fast = data.to_vec();
    unmask(&mut fast[offset..], mask);
    let naive: Vec<u8> = data[offset..]
        .iter()
        .zip(mask.iter().cycle())
        .map(|(b, m)| b ^ m)
        .collect();
    assert_eq!(
        &fast[..offset],
        &data[..offset],
        "bytes before the slice touched"
    );
    assert_eq!(&fast[offset..], &naive[..]);
    unmask(&mut fast[offset..], mask);
    assert_eq!(fast, data);
}

const WS_MAXES: [usize; 8] = [0, 1, 2, 125, 126, 1024, 65_536, 1 << 20];

/// Fuzzer bytes: a mode byte, then either raw wire bytes (with chunk sizes from the data) or frame specs.
pub fn ws_frames(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let max = WS_MAXES[usize::from(mode >> 5)];
    match mode & 3 {
        // Raw: n chunk sizes, then the wire bytes.
        0 | 1 => {
            let n = usize::from(input.byte() % 16);
            let chunks: Vec<usize> = (0..n).map(|_| usize::from(input.byte())).collect();
            check_ws_stream(max, input.rest(), &chunks);
        }
        // Structured: frames from a header byte, a length and payload bytes each.
        2 => {
            let n = usize::from(input.byte() % 16);
            let chunks: Vec<usize> = (0..n).map(|_| usize::from(input.byte() % 32)).collect();
            let mut frames = Vec::new();
            while !input.is_empty() && frames.len() < 64 {
                let head = input.byte();
                let flags = input.byte();
                let len = usize::from(input.u16() % 300);
                let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
                let payload: Vec<u8> = (0..len).map(|_| input.byte()).collect();
                frames.push(FrameSpec {
                    fin: head & 0x80 != 0,
                    // Mostly valid headers, so the fragment state is reached.
                    rsv: if flags & 0x0f == 0 { head & 0x70 } else { 0 },
                    opcode: head & 0x0f,
                    mask: (flags & 0xf0 != 0xf0).then_some(mask),
                    payload,
                    len_form: (flags >> 4) % 3 * u8::from(flags & 0x0c == 0),
                });
            }
            check_ws_frames(max, &frames, &chunks);
        }
        _ => {
            let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
            let offset = usize::from(input.byte() % 16);
            check_unmask(input.rest(), mask, offset);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// client_message
// ---------------------------------------------------------------------------------------------------------------

/// Flags for [`check_client_message`].
pub const SIGN: u8 = 1;
/// Put the session on the message's channel first (so client events pass the subscription rule).
pub const SUBSCRIBED: u8 = 2;
/// Sign the session in first (as the user a `#server-to-user-` channel names, else "u1").
pub const SIGNED_IN: u8 = 4;
/// Run with [`app_config`]`(true)`: every limit small.
pub const SMALL: u8 = 8;

/// Fuzzer bytes: a flags byte, then a client message.
pub fn client_message(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    // The server only parses Text messages, which the frame decoder has checked are UTF-8.
    check_client_message(&String::from_utf8_lossy(input.rest()), flags);
}

fn signed_in(session: &Session, id: &str) {
    *session.user.borrow_mut() = Some(SignedInUser {
        id: Rc::from(id),
        info: Box::from("null"),
        watchlist: Vec::new(),
    });
}

/// A client message through `inbound::parse`, then every pure step the server takes for each event kind:
/// subscribe (`subscribe_data`, `subscribe::check`, presence members), sign-in (`signin_data`, `parse_member`,
/// `watchlist`, `signin::check`) and client events (`client_event::check`), on a fresh session. With [`SIGN`] the
/// auth tokens are replaced by correct ones, so the checks behind the signature run too, and then they must pass.
pub fn check_client_message(text: &str, flags: u8) {
    let cfg = app_config(flags & SMALL != 0);
    let text = text.as_bytes();
    let Ok(msg) = inbound::parse(text) else {
        return;
    };
    assert_eq!(text.trim_ascii_start().first(), Some(&b'{'));
    let data_text = inbound::object_text(&msg.data);

    // Subscribe / unsubscribe data (the server reads it for both).
    if let Ok(d) = inbound::subscribe_data(&msg.data) {
        if let Some(cd) = &d.channel_data {
            check_member(cd);
        }
        let s = session();
        if flags & SIGNED_IN != 0 {
            let user = d
                .channel
                .as_deref()
                .and_then(|c| c.strip_prefix(SERVER_TO_USER_PREFIX))
                .unwrap_or("u1");
            signed_in(&s, user);
        }
        let mut d = d;
        if flags & SIGN != 0
            && let Some(c) = &d.channel
        {
            d.auth = Some(auth::sign_channel(
                &cfg.key,
                &cfg.secret,
                &s.socket_id_text,
                c,
                d.channel_data.as_deref(),
            ));
        }
        let channel = d.channel.clone();
        let channel_data = d.channel_data.clone();
        match subscribe::check(&cfg, &s, d) {
            Ok(sub) => {
                let c = channel.expect("subscribed without a channel");
                assert_eq!(sub.channel, c);
                assert_eq!(
                    channel_name::validate(&c, cfg.max_channel_name_length),
                    Ok(sub.ty)
                );
                assert_eq!(sub.ty, ChannelType::of(&c));
                assert!(
                    sub.last_event_id
                        .as_ref()
                        .is_none_or(|id| id.len() <= subscribe::MAX_EVENT_ID_LEN)
                );
                match (sub.ty.kind, &sub.member) {
                    (ChannelKind::Presence, Some(m)) => {
                        assert!(!m.user_id.is_empty());
                        assert!(m.user_id.chars().count() <= cfg.max_presence_user_id_length);
                        assert!(m.user_info.len() <= cfg.max_presence_user_info_bytes);
                    }
                    (ChannelKind::Presence, None) => panic!("presence join without a member"),
                    (_, Some(_)) => panic!("member outside presence"),
                    (_, None) => {}
                }
                if sub.ty.kind == ChannelKind::ServerToUser {
                    assert_eq!(
                        s.user_id().as_deref(),
                        c.strip_prefix(SERVER_TO_USER_PREFIX)
                    );
                }
            }
            Err(r) => {
                assert!(!r.message.is_empty());
                // Correctly signed, valid private or public channels are never refused.
                if flags & SIGN != 0
                    && let Some(c) = &channel
                    && channel_name::validate(c, cfg.max_channel_name_length).is_ok()
                    && cfg.max_channels_per_connection > 0
                {
                    let kind = ChannelType::of(c).kind;
                    assert!(
                        !matches!(
                            kind,
                            ChannelKind::Public | ChannelKind::Private | ChannelKind::Encrypted
                        ),
                        "signed subscribe to {c:?} refused: {}",
                        r.message
                    );
                    if kind == ChannelKind::Presence
                        && let Some(cd) = &channel_data
                        && let Ok(m) = inbound::parse_member(cd, IdField::UserId)
                    {
                        assert!(
                            m.user_id.is_empty()
                                || m.user_id.chars().count() > cfg.max_presence_user_id_length
                                || m.user_info.len() > cfg.max_presence_user_info_bytes,
                            "signed presence subscribe refused: {}",
                            r.message
                        );
                    }
                }
            }
        }
    }

    // The data as member and sign-in objects.
    if let Some(t) = &data_text {
        check_member(t);
        let (ids, over) = inbound::watchlist(t, cfg.max_watchlist_size);
        assert!(
            ids.len() <= cfg.max_watchlist_size && (!over || ids.len() == cfg.max_watchlist_size)
        );
        if let Ok(sd) = inbound::signin_data(t)
            && let Some(ud) = sd.user_data.as_ref().and_then(|u| u.as_str())
        {
            check_member(ud);
        }
    }

    // Client event.
    let s = session();
    if flags & SUBSCRIBED != 0
        && let Some(c) = msg.channel.as_deref()
    {
        s.subscriptions.borrow_mut().push(Subscription {
            channel: Rc::from(c),
            slot: Cell::new(0),
        });
        s.memberships.borrow_mut().push(Membership {
            channel: Rc::from(c),
            user_id: Rc::from("u1"),
        });
    }
    if let Ok(e) = client_event::check(&cfg, &s, &msg) {
        let c = msg
            .channel
            .as_deref()
            .expect("client event without a channel");
        assert_eq!(e.channel, c);
        assert!(s.is_subscribed(c));
        assert!(ChannelType::of(c).needs_auth());
        assert_eq!(json_string(&e.name_token), msg.event);
        assert!(msg.event.chars().count() <= cfg.max_event_name_length);
        match &msg.data {
            // A string is relayed byte for byte, also one whose escapes no Rust string can hold (a lone
            // surrogate, which JavaScript clients accept).
            Some(d) if d.is_str() => {
                assert_eq!(&e.data_token[..], d.as_raw_str().as_bytes());
                relayed_string(&e.data_token, "client event data");
                if let Some(text) = d.as_str() {
                    assert!(text.len() <= cfg.max_event_payload_bytes);
                }
            }
            Some(d) => {
                let data = json_string(&e.data_token);
                assert_eq!(data, d.as_raw_str());
                assert!(data.len() <= cfg.max_event_payload_bytes);
            }
            None => assert_eq!(json_string(&e.data_token), "{}"),
        }
        assert_eq!(
            e.user_id.is_some(),
            ChannelType::of(c).kind == ChannelKind::Presence
        );
    }

    // Sign-in, as sent and (with SIGN) correctly signed.
    let s = session();
    if flags & SIGNED_IN != 0 {
        signed_in(&s, "u1");
    }
    check_signin(&cfg, &s, &msg, false);
    if flags & SIGN != 0
        && let Some(t) = &data_text
        && let Ok(sd) = inbound::signin_data(t)
        && let Some(ud) = sd.user_data.as_ref().and_then(|u| u.as_str())
    {
        let token = auth::sign_user(&cfg.key, &cfg.secret, &s.socket_id_text, ud);
        let mut resigned = br#"{"event":"pusher:signin","data":{"auth":"#.to_vec();
        json::push_json_string(&mut resigned, &token);
        resigned.extend_from_slice(br#","user_data":"#);
        json::push_json_string(&mut resigned, ud);
        resigned.extend_from_slice(b"}}");
        let m = inbound::parse(&resigned).expect("a message we built parses");
        check_signin(&cfg, &s, &m, true);
    }
}

fn check_signin(cfg: &AppConfig, s: &Session, msg: &inbound::ClientMessage<'_>, signed: bool) {
    let user_data = inbound::object_text(&msg.data)
        .and_then(|t| {
            inbound::signin_data(&t).ok().and_then(|d| {
                d.user_data
                    .as_ref()
                    .and_then(|u| u.as_str().map(str::to_owned))
            })
        })
        .unwrap_or_default();
    let member = inbound::parse_member(&user_data, IdField::Id);
    match signin::check(cfg, s, msg) {
        Ok(signin::SignIn::New {
            user_id,
            user_info,
            user_data: ud,
            watchlist,
            watchlist_warning,
        }) => {
            assert!(s.user_id().is_none());
            assert_eq!(ud, user_data);
            let m = member.expect("signed in with a user_data parse_member refuses");
            assert_eq!((&m.user_id, &m.user_info), (&user_id, &user_info));
            assert!(!user_id.is_empty());
            assert!(watchlist.len() <= cfg.max_watchlist_size);
            if watchlist_warning.is_some() {
                assert_eq!(watchlist.len(), cfg.max_watchlist_size);
            }
        }
        Ok(signin::SignIn::Again { user_data: ud }) => {
            assert_eq!(ud, user_data);
            assert_eq!(
                s.user_id().as_deref(),
                member.ok().as_ref().map(|m| m.user_id.as_str())
            );
        }
        Err(r) => {
            assert!(!r.message.is_empty());
            if signed && s.user_id().is_none() {
                assert!(
                    !member.is_ok_and(|m| !m.user_id.is_empty()),
                    "correctly signed sign-in refused: {}",
                    r.message
                );
            }
        }
    }
}

/// `parse_member` with both id fields: an accepted member's id is the string sent, or a number's text, and its
/// `user_info` one whole JSON value (relayed to other members as is). Only the grammar is checked: `1e999` and
/// `"\ud800"` are JSON that no `sonic_rs::Value` holds, and are relayed unchanged like any other value.
fn check_member(text: &str) {
    for field in [IdField::UserId, IdField::Id] {
        if let Ok(m) = inbound::parse_member(text, field) {
            assert!(text.trim_start().starts_with('{'));
            assert!(
                json_grammar_ok(m.user_info.as_bytes()) || KNOWN_ISSUE_RAW_STRING_TOKENS,
                "user_info (relayed to members as is) is not one JSON value: {:?}",
                m.user_info
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// rest_query_signature
// ---------------------------------------------------------------------------------------------------------------

pub const REST_KEY: &str = "278d425bdf160c739803";
pub const REST_SECRET: &str = "7ad3773142a6692b25b8";

/// Fuzzer bytes: a mode byte; mode even: method, path, query, body as NUL-separated fields plus 8 bytes of
/// "now"; mode odd: method, path, body, then extra key/value params to sign, and 8 bytes of timestamp.
pub fn rest_query_signature(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let clock = input.u64() as i64;
    let method = input.text();
    let path = input.text();
    if mode & 1 == 0 {
        let query = input.text();
        let body = input.rest();
        check_rest_query(&method, &path, &query, body, clock, u64::from(mode));
    } else {
        let body = input.field().to_vec();
        let mut extra = Vec::new();
        while !input.is_empty() && extra.len() < 16 {
            extra.push((input.text(), input.text()));
        }
        check_rest_signing(&method, &path, &extra, &body, clock);
    }
}

/// Everything outside unreserved characters escaped (a different escaper from `sign_rest_query`'s).
fn escape_all(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Query::parse` and `percent_decode` on arbitrary text, then `verify_rest_request` with it.
///
/// Invariants: no panic (error messages included); a parsed query has unique keys and survives a re-encoding
/// round trip; percent-decoding leaves text without '%' alone and never grows it.
pub fn check_rest_query(
    method: &str,
    path: &str,
    raw_query: &str,
    body: &[u8],
    now: i64,
    window: u64,
) {
    for s in [path, raw_query] {
        match percent_decode(s) {
            Ok(d) => {
                assert!(d.len() <= s.len());
                if !s.contains('%') {
                    assert_eq!(d, s);
                }
            }
            Err(e) => {
                assert!(s.contains('%'), "{e}");
                let _ = e.to_string();
            }
        }
    }
    let query = match Query::parse(raw_query) {
        Ok(q) => q,
        Err(e) => {
            let _ = e.to_string();
            Query::default()
        }
    };
    let pairs = query.pairs();
    for (i, (k, _)) in pairs.iter().enumerate() {
        assert!(
            pairs[..i].iter().all(|(other, _)| other != k),
            "duplicate key {k:?}"
        );
    }
    let reencoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape_all(k), escape_all(v)))
        .collect();
    let again = Query::parse(&reencoded.join("&")).expect("re-encoded query parses");
    assert_eq!(again.pairs(), pairs, "re-encoding round trip");

    for (key, secret) in [(REST_KEY, REST_SECRET), ("", "")] {
        if let Err(e) =
            auth::verify_rest_request(method, path, &query, body, key, secret, now, window)
        {
            let _ = e.to_string();
        }
    }
}

/// A request signed with `sign_rest_query` verifies, and stops verifying when the clock, the secret, the body or
/// the path changes.
pub fn check_rest_signing(
    method: &str,
    path: &str,
    extra: &[(String, String)],
    body: &[u8],
    timestamp: i64,
) {
    const RESERVED: [&str; 5] = [
        "auth_key",
        "auth_timestamp",
        "auth_version",
        "auth_signature",
        "body_md5",
    ];
    // Keys must be unique on the wire (a duplicate is refused), and the auth_* names are the signer's.
    let mut params: Vec<(&str, &str)> = Vec::new();
    for (k, v) in extra {
        if !RESERVED.contains(&k.as_str()) && params.iter().all(|(p, _)| p != k) {
            params.push((k, v));
        }
    }
    let signed = auth::sign_rest_query(
        method,
        path,
        &params,
        body,
        REST_KEY,
        REST_SECRET,
        timestamp,
    );
    let query = match Query::parse(&signed) {
        Ok(q) => q,
        Err(e) => panic!("signed query {signed:?} does not parse: {e}"),
    };
    assert_eq!(query.get("auth_key"), Some(REST_KEY));
    for (k, v) in &params {
        assert_eq!(query.get(k), Some(*v), "param {k:?} lost on the wire");
    }
    let verify = |path: &str, body: &[u8], secret: &str, now: i64| {
        auth::verify_rest_request(method, path, &query, body, REST_KEY, secret, now, 600)
    };
    if let Err(e) = verify(path, body, REST_SECRET, timestamp) {
        panic!("a signed request does not verify: {e}\nquery {signed:?}");
    }
    if let Some(now) = timestamp.checked_add(601) {
        assert!(matches!(
            verify(path, body, REST_SECRET, now),
            Err(auth::RestAuthError::TimestampExpired { .. })
        ));
    }
    assert!(verify(path, body, "another-secret", timestamp).is_err());
    if !body.is_empty() {
        let mut other = body.to_vec();
        other[0] ^= 1;
        assert!(matches!(
            verify(path, &other, REST_SECRET, timestamp),
            Err(auth::RestAuthError::BodyMd5Mismatch)
        ));
    }
    let longer = format!("{path}x");
    assert!(verify(&longer, body, REST_SECRET, timestamp).is_err());
}

// ---------------------------------------------------------------------------------------------------------------
// rest_bodies
// ---------------------------------------------------------------------------------------------------------------

/// Fuzzer bytes: flags byte; channel, event name, socket id and info as NUL-separated fields; then the body.
pub fn rest_bodies(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let channel = input.text();
    let name = input.text();
    let socket_id = input.text();
    let info = input.text();
    let body = json_input(input.rest());
    check_rest_bodies(
        &body,
        &channel,
        (flags & 2 == 0).then_some(name.as_str()),
        (flags & 4 == 0).then_some(socket_id.as_str()),
        &info,
        flags & 1 != 0,
    );
}

fn check_event(cfg: &AppConfig, e: &relay::api::events::Event) {
    if let Some(name) = relayed_string(&e.name_token, "event name") {
        assert!(!name.is_empty() && name.chars().count() <= cfg.max_event_name_length);
        assert!(!name.starts_with("pusher:") && !name.starts_with("pusher_internal:"));
    }
    if let Some(data) = relayed_string(&e.data_token, "event data") {
        assert!(
            data.len() <= cfg.max_event_payload_bytes,
            "{} data bytes",
            data.len()
        );
    }
    assert!(!e.channels.is_empty() && e.channels.len() <= cfg.max_channels_per_publish);
    for (i, c) in e.channels.iter().enumerate() {
        let ty = channel_name::validate(c, cfg.max_channel_name_length)
            .unwrap_or_else(|err| panic!("published to invalid channel {c:?}: {err:?}"));
        assert!(ty.kind != ChannelKind::Encrypted || e.channels.len() == 1);
        assert!(!e.channels[..i].contains(c), "channel {c:?} twice");
    }
}

fn check_error_response(r: &relay::http::response::Response, statuses: &[u16]) {
    assert!(statuses.contains(&r.status), "status {}", r.status);
    let v: sonic_rs::Value = json::parse(&r.body).expect("error body is JSON");
    assert!(v.get("error").and_then(|e| e.as_str()).is_some());
}

/// The JSON body of every REST endpoint: `parse_event`, `parse_batch`, `parse_legacy`, `app_auth::authorize`, and
/// the `info` parameter. Accepted events satisfy every publish rule; refusals are 400/413 with a JSON error body.
pub fn check_rest_bodies(
    body: &[u8],
    channel: &str,
    name: Option<&str>,
    socket_id: Option<&str>,
    info: &str,
    small: bool,
) {
    use relay::api::{app_auth, channels::Info, events};
    let mut cfg = app_config(small);
    if small {
        // Lets encrypted-channel authorization run to the shared secret.
        cfg.encryption_master_key_base64 =
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into());
    }
    match events::parse_event(&cfg, body) {
        Ok(e) => check_event(&cfg, &e),
        Err(r) => check_error_response(&r, &[400, 413]),
    }
    match events::parse_batch(&cfg, body) {
        Ok(batch) => {
            assert!(!batch.is_empty() && batch.len() <= cfg.max_batch_size);
            for e in &batch {
                check_event(&cfg, e);
                assert_eq!(e.channels.len(), 1);
            }
        }
        Err(r) => check_error_response(&r, &[400, 413]),
    }
    match events::parse_legacy(&cfg, channel, name, socket_id, body) {
        Ok(e) => {
            check_event(&cfg, &e);
            assert_eq!(e.channels, [channel]);
            assert_eq!(json_string(&e.name_token), name.unwrap_or_default());
            assert_eq!(json_string(&e.data_token).as_bytes(), body);
            assert_eq!(e.except.is_some(), socket_id.is_some());
        }
        Err(r) => check_error_response(&r, &[400, 413]),
    }
    let r = app_auth::authorize(&cfg, body);
    if r.status == 200 {
        let v: sonic_rs::Value = json::parse(&r.body).expect("auth body is JSON");
        let token = v.get("auth").and_then(|a| a.as_str()).expect("auth token");
        assert!(token.starts_with(&format!("{}:", cfg.key)));
    } else {
        check_error_response(&r, &[400]);
    }
    match Info::parse(info) {
        Ok(i) => {
            for attr in info.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                assert!(matches!(
                    attr,
                    "user_count" | "subscription_count" | "cache"
                ));
            }
            assert_eq!(i.is_empty(), info.split(',').all(|a| a.trim().is_empty()));
        }
        Err(m) => assert!(!m.is_empty()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// apps_file
// ---------------------------------------------------------------------------------------------------------------

pub fn apps_file(data: &[u8]) {
    check_apps_file(&json_input(data));
}

/// `config::parse_apps_file`: an accepted file gives a configuration that validates, with unique app ids and
/// keys; a refused one names a field.
pub fn check_apps_file(bytes: &[u8]) {
    match relay::config::parse_apps_file(bytes) {
        Ok(c) => {
            relay::config::validate(&c).expect("parse_apps_file returned an invalid config");
            assert!(!c.apps.is_empty());
            for (i, a) in c.apps.iter().enumerate() {
                assert!(c.apps[..i].iter().all(|b| b.id != a.id && b.key != a.key));
                assert!(!a.id.is_empty() && !a.key.is_empty() && !a.secret.is_empty());
            }
        }
        Err(e) => {
            assert!(!e.field.is_empty() && !e.problem.is_empty());
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// json_depth
// ---------------------------------------------------------------------------------------------------------------

/// Fuzzer bytes: a byte for the depth limit and one for the array item limit, then the document.
pub fn json_depth(data: &[u8]) {
    let mut input = Input::new(data);
    let max_depth = usize::from(input.byte() % 80);
    let max_items = usize::from(input.byte() % 20);
    check_json(&json_input(input.rest()), max_depth, max_items);
}

/// Nesting depth of a parsed value (bounded: only documents within `MAX_JSON_DEPTH` ever parse).
pub fn value_depth(v: &sonic_rs::Value) -> usize {
    if let Some(a) = v.as_array() {
        1 + a.iter().map(value_depth).max().unwrap_or(0)
    } else if let Some(o) = v.as_object() {
        1 + o.iter().map(|(_, v)| value_depth(v)).max().unwrap_or(0)
    } else {
        0
    }
}

/// `check_depth`, `json::parse` and `array_items`.
///
/// Invariants: nothing deeper than `MAX_JSON_DEPTH` parses; for a document that parses, `check_depth` passes
/// exactly at its real depth; `array_items` agrees with the parsed array (all items up to the limit, `TooMany`
/// past it, `Invalid` for anything else).
pub fn check_json(bytes: &[u8], max_depth: usize, max_items: usize) {
    let within = json::check_depth(bytes, max_depth);
    let parsed = json::parse::<sonic_rs::Value>(bytes);
    // Bytes that are not UTF-8 are refused before their depth is looked at.
    if json::check_depth(bytes, MAX_JSON_DEPTH).is_err() && std::str::from_utf8(bytes).is_ok() {
        assert_eq!(parsed.as_ref().err(), Some(&JsonError::TooDeep));
    }
    if std::str::from_utf8(bytes).is_err() {
        assert_eq!(parsed.as_ref().err(), Some(&JsonError::Invalid));
    }
    let Ok(v) = &parsed else {
        // `array_items` is only ever given documents whose depth was checked.
        if let Ok(text) = std::str::from_utf8(bytes)
            && json::check_depth(bytes, MAX_JSON_DEPTH).is_ok()
        {
            let _ = json::array_items(text, max_items);
        }
        return;
    };
    assert!(json_grammar_ok(bytes), "sonic-rs parsed what is not JSON");
    let depth = value_depth(v);
    assert!(
        depth <= MAX_JSON_DEPTH,
        "a document {depth} deep was parsed"
    );
    assert_eq!(
        within.is_ok(),
        depth <= max_depth,
        "check_depth({max_depth}) on depth {depth}"
    );
    assert_eq!(json::check_depth(bytes, depth), Ok(()));
    if depth > 0 {
        assert_eq!(json::check_depth(bytes, depth - 1), Err(JsonError::TooDeep));
    }
    let text = std::str::from_utf8(bytes).expect("parsed JSON is UTF-8");
    let items = json::array_items(text, max_items);
    match v.as_array() {
        Some(a) if a.len() <= max_items => {
            let items =
                items.unwrap_or_else(|e| panic!("array of {} items refused: {e:?}", a.len()));
            assert_eq!(items.len(), a.len());
            for (lazy, value) in items.iter().zip(a.iter()) {
                let reparsed: sonic_rs::Value =
                    json::parse(lazy.as_raw_str().as_bytes()).expect("an item parses alone");
                assert_eq!(&reparsed, value);
            }
        }
        Some(_) => assert_eq!(items.err(), Some(ArrayError::TooMany)),
        None => assert_eq!(items.err(), Some(ArrayError::Invalid)),
    }
}
