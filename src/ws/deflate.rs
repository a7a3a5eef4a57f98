//! permessage-deflate (RFC 7692) without per-connection state.
//!
//! relay accepts the extension only with `server_no_context_takeover` and `client_no_context_takeover`, so every
//! message is a deflate stream of its own in both directions. That is what lets a publication be compressed once
//! and the same compressed frame go to every subscriber that negotiated the extension, and lets a core inflate all
//! its clients' messages with one inflater reset per message: a connection holds no compression state at all
//! (an idle connection costs what it did before).
//!
//! * [`accept_offer`]: the negotiation rules (which offers relay can honour, and the answer to one);
//! * [`deflate_text_frame`]: one whole text frame with RSV1 set, from a plain payload (one compressor per core);
//! * [`inflate`]: a client message back to its bytes, in bounded steps that stop at the size limit, so a small
//!   compressed message cannot make the server allocate more than the limit (no decompression bomb);
//! * [`Negotiated`]: how many connections of this process negotiated it, so a publishing core compresses only
//!   when some core may need the compressed frame.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::ws::frame;

/// The extension's name in `Sec-WebSocket-Extensions` (RFC 7692 §7).
pub const EXTENSION: &str = "permessage-deflate";
/// What relay answers to an acceptable offer: both sides reset their context per message (RFC 7692 §7.1.1).
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The answer to an offer that names `server_max_window_bits` (only 15 is accepted): RFC 7692 §7.1.2.1 has the
/// server accept that parameter by echoing it, with the same or a smaller value.
pub const RESPONSE_WITH_WINDOW: &str = "permessage-deflate; server_no_context_takeover; \
     client_no_context_takeover; server_max_window_bits=15";
/// RFC 7692 §7.2.1: a sync flush ends with these four bytes; they are left off the wire and put back to inflate.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The window relay's compressor always uses (RFC 7692 §7.1.2: 8 to 15 bits).
const WINDOW_BITS: u8 = 15;
/// Level 6 (zlib's default). On a 2 KB JSON event (bench profile, this machine): level 1 gives 609 bytes in 16 µs,
/// level 3 547 in 29 µs, level 6 506 in 33 µs; the compressor runs once per publication, not per subscriber, so
/// the smaller frame, which every subscriber's socket then carries, is worth the microseconds.
const LEVEL: u32 = 6;
/// Inflated output grows by at most this much per step, so memory stays within the limit plus one step.
const INFLATE_STEP: usize = 16 * 1024;

thread_local! {
    // One of each per core thread, made on first use and reset per message (raw deflate: no zlib header).
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(LEVEL), false));
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

// ---------------------------------------------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------------------------------------------

/// The answer to the first of the client's offers (the `Sec-WebSocket-Extensions` value, offers separated by
/// commas, in the client's order of preference) that relay can honour, or `None`. An offer with an unknown, repeated or malformed parameter is declined
/// (RFC 7692 §7.1), and so is `server_max_window_bits` below 15: relay's compressor always uses a 32 KiB window.
/// Any `client_max_window_bits` is fine: the inflater takes every window up to 15 bits.
pub fn accept_offer(header: &str) -> Option<&'static str> {
    header.split(',').find_map(answer)
}

fn answer(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next() != Some(EXTENSION) {
        return None;
    }
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
            None => (param, None),
        };
        let (i, ok) = match name {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            "server_max_window_bits" => (2, value.and_then(window_bits) == Some(WINDOW_BITS)),
            "client_max_window_bits" => (3, value.is_none_or(|v| window_bits(v).is_some())),
            _ => return None,
        };
        if !ok || seen[i] {
            return None;
        }
        seen[i] = true;
    }
    Some(if seen[2] {
        RESPONSE_WITH_WINDOW
    } else {
        RESPONSE
    })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// RFC 7692 §7.1.2.1: a decimal 8 to 15 with no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 2 {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

// ---------------------------------------------------------------------------------------------------------------
// Server -> client
// ---------------------------------------------------------------------------------------------------------------

/// The text frame (RSV1 set) carrying `payload` compressed, or `None` when compressing does not make it smaller
/// (then the plain frame is what every subscriber gets).
pub fn deflate_text_frame(payload: &[u8]) -> Option<Bytes> {
    let mut failed = false;
    let frame = frame::encode_deflated_text_with(payload.len() / 2 + 64, |out| {
        failed = !COMPRESSOR.with_borrow_mut(|c| compress(c, payload, out));
    });
    let payload_len = frame.len() - frame::server_header_len(&frame);
    (!failed && payload_len < payload.len()).then_some(frame)
}

/// Appends `input` deflated with a sync flush and without its last four bytes (RFC 7692 §7.2.1). False when the
/// output would not be smaller than the input (stopped early) or the compressor failed.
fn compress(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> bool {
    c.reset();
    let start = out.len();
    // Worth going on only while the output stays smaller than the input (plus the tail that comes off).
    let budget = input.len() + SYNC_TAIL.len();
    loop {
        if out.len() - start > budget {
            return false;
        }
        if out.capacity() - out.len() < 64 {
            out.reserve(256.max(input.len() / 4));
        }
        let consumed = c.total_in() as usize;
        let Some(rest) = input.get(consumed..) else {
            return false;
        };
        if c.compress_vec(rest, out, FlushCompress::Sync).is_err() {
            return false;
        }
        // The flush is complete when all input is in and the compressor left room in the output (zlib's rule).
        if c.total_in() as usize == input.len() && out.len() < out.capacity() {
            break;
        }
    }
    if !out[start..].ends_with(&SYNC_TAIL) {
        return false;
    }
    out.truncate(out.len() - SYNC_TAIL.len());
    true
}

// ---------------------------------------------------------------------------------------------------------------
// Client -> server
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The message inflates past the size limit (close 1009); inflating stopped there.
    TooLarge,
    /// Not a valid deflate stream.
    Invalid,
}

/// Inflates one client message (its frames' payloads joined, RSV1 on the first) into at most `limit` bytes.
/// The output grows by [`INFLATE_STEP`] at a time and inflating stops as soon as it passes `limit`.
pub fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        let mut out = Vec::new();
        for segment in [compressed, &SYNC_TAIL[..]] {
            if inflate_segment(d, segment, limit, &mut out)? {
                break;
            }
        }
        Ok(out)
    })
}

/// Feeds one piece of input; true when the stream ended (a final block: whatever follows is ignored).
fn inflate_segment(
    d: &mut Decompress,
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<bool, InflateError> {
    let mut pos = 0;
    loop {
        if out.len() == out.capacity() {
            // Room for exactly one byte past the limit at most: producing it proves the message too large.
            let room = INFLATE_STEP.min(limit.saturating_add(1) - out.len());
            if room == 0 {
                return Err(InflateError::TooLarge);
            }
            out.reserve_exact(room);
        }
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[pos..], out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Invalid)?;
        if out.len() > limit {
            return Err(InflateError::TooLarge);
        }
        pos += (d.total_in() - in_before) as usize;
        let progressed = d.total_in() != in_before || d.total_out() != out_before;
        match status {
            Status::StreamEnd => return Ok(true),
            _ if pos == input.len() && out.len() < out.capacity() => return Ok(false),
            _ if !progressed => {
                return if pos == input.len() {
                    Ok(false)
                } else {
                    Err(InflateError::Invalid)
                };
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Who needs compressed frames
// ---------------------------------------------------------------------------------------------------------------

static NEGOTIATED: AtomicUsize = AtomicUsize::new(0);

/// Connections of this process that negotiated the extension. Touched once per such connection at its start and
/// end, read once per publication: never on the per-subscriber path. Several servers in one process (tests)
/// share it, which can only make a core compress when nobody needs it, never the reverse.
pub struct Negotiated;

impl Negotiated {
    pub fn opened() {
        NEGOTIATED.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed() {
        let _ = NEGOTIATED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn any() -> bool {
        NEGOTIATED.load(Ordering::Relaxed) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::DeflateDecoder;
    use std::io::Read;

    fn reference_inflate(payload: &[u8]) -> Vec<u8> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&SYNC_TAIL);
        let mut out = Vec::new();
        // A sync-flushed stream has no final block: the reader reports an early end, after the data.
        let _ = DeflateDecoder::new(&input[..]).read_to_end(&mut out);
        out
    }

    fn json_event(len: usize) -> Vec<u8> {
        let mut s = String::from(r#"{"event":"price-update","channel":"market-eu","data":"["#);
        let mut i = 0;
        while s.len() < len {
            s.push_str(&format!(
                r#"{{\"symbol\":\"SYM{i}\",\"bid\":{}.{},\"ask\":{}.{},\"volume\":{}}},"#,
                100 + i * 7 % 13,
                i * 31 % 100,
                101 + i * 5 % 11,
                i * 17 % 100,
                1000 + i * 123
            ));
            i += 1;
        }
        s.push_str("]\"}");
        s.into_bytes()
    }

    #[test]
    fn an_offered_server_window_is_echoed_and_the_first_acceptable_offer_is_answered() {
        assert_eq!(
            accept_offer("permessage-deflate; client_max_window_bits"),
            Some(RESPONSE)
        );
        let echo = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";
        assert_eq!(RESPONSE_WITH_WINDOW, echo);
        assert_eq!(
            accept_offer("permessage-deflate; server_max_window_bits=15"),
            Some(echo)
        );
        // The client's first choice relay can honour wins, window and all.
        assert_eq!(
            accept_offer(
                "permessage-deflate; server_max_window_bits=10, permessage-deflate; server_max_window_bits=15, permessage-deflate"
            ),
            Some(echo)
        );
        assert_eq!(
            accept_offer(
                "permessage-deflate; server_max_window_bits=10, permessage-deflate, permessage-deflate; server_max_window_bits=15"
            ),
            Some(RESPONSE)
        );
    }

    #[test]
    fn offers_relay_can_honour() {
        for ok in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=\"15\"",
            "x-webkit-deflate-frame, permessage-deflate",
            "permessage-deflate; server_max_window_bits=10, permessage-deflate",
        ] {
            assert!(accept_offer(ok).is_some(), "{ok}");
        }
        for declined in [
            "",
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=09",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflated",
        ] {
            assert_eq!(accept_offer(declined), None, "{declined}");
        }
    }

    #[test]
    fn a_deflated_frame_has_rsv1_and_inflates_to_the_payload() {
        for len in [300, 1024, 4096, 70_000] {
            let payload = json_event(len);
            let f = deflate_text_frame(&payload).expect("JSON compresses");
            assert_eq!(f[0], 0x80 | 0x40 | 0x1, "FIN, RSV1, text");
            let body = &f[frame::server_header_len(&f)..];
            assert!(!body.ends_with(&SYNC_TAIL), "the tail is left off");
            assert_eq!(reference_inflate(body), payload, "len {len}");
            assert_eq!(inflate(body, payload.len()).unwrap(), payload);
            if (1000..=4096).contains(&len) {
                let ratio = body.len() as f64 / payload.len() as f64;
                assert!(ratio < 0.35, "len {len}: ratio {ratio}");
            }
        }
    }

    #[test]
    fn incompressible_payloads_stay_plain() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(deflate_text_frame(&noise), None);
        assert_eq!(deflate_text_frame(b""), None);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        // 10 MB of one byte deflates to about 10 KB: a bomb for a 64 KiB limit.
        let mut bomb = Vec::with_capacity(1 << 16);
        let mut c = Compress::new(Compression::new(9), false);
        c.compress_vec(&vec![b'a'; 10 << 20], &mut bomb, FlushCompress::Sync)
            .unwrap();
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(inflate(&bomb, 64 * 1024), Err(InflateError::TooLarge));
        // Exactly at the limit is fine, one past is not.
        let exact = json_event(5000);
        let f = deflate_text_frame(&exact).unwrap();
        let body = &f[frame::server_header_len(&f)..];
        assert_eq!(inflate(body, exact.len()).unwrap(), exact);
        assert_eq!(inflate(body, exact.len() - 1), Err(InflateError::TooLarge));
    }

    #[test]
    fn garbage_is_invalid_and_a_final_block_is_accepted() {
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 1000),
            Err(InflateError::Invalid)
        );
        // A stream ending in a final block (BFINAL) is valid too (RFC 7692 §7.2.3.3 allows it).
        let mut c = Compress::new(Compression::new(6), false);
        let mut out = Vec::with_capacity(256);
        assert_eq!(
            c.compress_vec(b"hello hello hello", &mut out, FlushCompress::Finish)
                .unwrap(),
            Status::StreamEnd
        );
        assert_eq!(inflate(&out, 1000).unwrap(), b"hello hello hello");
        // RFC 7692 §7.2.3.1's example: "Hello" as one compressed message.
        assert_eq!(
            inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap(),
            b"Hello"
        );
    }
}
