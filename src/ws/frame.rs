//! WebSocket (RFC 6455) frame codec for relay's own connection loop.
//!
//! The server owns its read/write loop on monoio instead of running tungstenite's `WebSocketContext`, so that a
//! broadcast is encoded once into a `Bytes` and shared by every subscriber, and so that client bytes are decoded
//! straight out of the connection's `BytesMut` read buffer without an extra copy. This file holds:
//!
//! * server -> client encoders (`encode_*`), which produce one contiguous, unmasked frame per call;
//! * [`FrameDecoder`], which turns client -> server bytes into whole [`Message`]s and enforces every rule of
//!   RFC 6455 that tungstenite's `FrameHeader::parse` leaves to the caller (masking, RSV bits, control-frame
//!   limits, fragment sequencing, size limit, UTF-8, close payload);
//! * [`unmask`], the hot XOR loop.
//!
//! The header codec is written by hand rather than with `tungstenite::protocol::frame::FrameHeader`: it is ~40
//! lines, works on plain slices (no `Cursor`/`io::Write` plumbing or `io::Result` to map), lets the decoder
//! reject a bad frame from its first two bytes, and lets `encode_text_with` write the header into a fixed array.
//! tungstenite is still used by the tests as an independent reference for the wire format.
//!
//! No input from the client can make anything here panic: every failure is a [`FrameError`], after which the
//! caller sends a close frame with [`FrameError::close_code`] and drops the connection (the decoder's state is
//! unspecified after an error).

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use crate::ws::deflate::{self, InflateError};

/// Largest header the server ever writes: 2 bytes + 8-byte extended length, never a mask.
pub const MAX_SERVER_HEADER_LEN: usize = 10;
/// RFC 6455 §5.5: control frames carry at most 125 payload bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// A close payload is a 2-byte code plus the reason, and must fit in a control frame.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - CLOSE_CODE_LEN;

const CLOSE_CODE_LEN: usize = 2;
const MASK_LEN: usize = 4;
/// Payload lengths up to this value fit in the 7-bit length field itself.
const MAX_LEN_7: usize = 125;
const LEN_16_MARKER: u8 = 126;
const LEN_64_MARKER: u8 = 127;

const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
/// RFC 7692 §6: RSV1 marks the first frame of a compressed message (permessage-deflate).
const RSV1_BIT: u8 = 0x40;
const OPCODE_BITS: u8 = 0x0F;
const MASK_BIT: u8 = 0x80;
const LEN_7_BITS: u8 = 0x7F;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// RFC 6455 §7.4.1 close codes we send.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;
/// RFC 6455 §7.4.1: the peer broke a rule of ours (a fragmented message that never completes).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;

// ---------------------------------------------------------------------------------------------------------------
// Server -> client
// ---------------------------------------------------------------------------------------------------------------

/// Server -> client frames (never masked).
pub fn encode_text(payload: &[u8]) -> Bytes {
    encode_frame(OP_TEXT, payload)
}

pub fn encode_binary(payload: &[u8]) -> Bytes {
    encode_frame(OP_BINARY, payload)
}

/// Anything past 125 bytes is dropped: an over-long control frame would make a conforming client fail us.
pub fn encode_ping(payload: &[u8]) -> Bytes {
    encode_frame(OP_PING, clamp_control(payload))
}

/// Anything past 125 bytes is dropped (see [`encode_ping`]); a pong echoing a client ping never needs it since
/// the decoder already refuses pings over 125 bytes.
pub fn encode_pong(payload: &[u8]) -> Bytes {
    encode_frame(OP_PONG, clamp_control(payload))
}

/// `reason` is cut to at most [`MAX_CLOSE_REASON`] bytes on a char boundary, because the client must reject a
/// close reason that is not valid UTF-8.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1; // terminates: index 0 is always a char boundary
    }
    let reason = &reason.as_bytes()[..end];
    let (header, header_len) = server_header(OP_CLOSE, CLOSE_CODE_LEN + reason.len());
    let mut frame = Vec::with_capacity(header_len + CLOSE_CODE_LEN + reason.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    Bytes::from(frame)
}

/// Encode-once path for broadcasts: reserves the max header size (10 bytes) at the front of one Vec, lets
/// `write_payload` append the JSON payload, then writes the real header right-aligned before the payload and
/// returns a Bytes that starts at the header (no second copy of the payload). `capacity_hint` is the expected
/// payload size.
///
/// `write_payload` must only append to the Vec; the first [`MAX_SERVER_HEADER_LEN`] bytes are scratch space.
pub fn encode_text_with(capacity_hint: usize, write_payload: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    encode_data_with(FIN_BIT | OP_TEXT, capacity_hint, write_payload)
}

/// [`encode_text_with`] for a payload `write_payload` appends already compressed: the frame has RSV1 set
/// (permessage-deflate, RFC 7692 §6), for connections that negotiated the extension.
pub fn encode_deflated_text_with(
    capacity_hint: usize,
    write_payload: impl FnOnce(&mut Vec<u8>),
) -> Bytes {
    encode_data_with(FIN_BIT | RSV1_BIT | OP_TEXT, capacity_hint, write_payload)
}

/// The header length of a frame this server encoded (its payload starts there).
pub fn server_header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & LEN_7_BITS) {
        Some(LEN_16_MARKER) => 4,
        Some(LEN_64_MARKER) => 10,
        Some(_) => 2,
        None => frame.len(),
    }
}

/// Whether a frame this server encoded is compressed (RSV1 set).
pub fn is_deflated(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & RSV1_BIT != 0)
}

fn encode_data_with(
    first_byte: u8,
    capacity_hint: usize,
    write_payload: impl FnOnce(&mut Vec<u8>),
) -> Bytes {
    let mut frame = Vec::with_capacity(MAX_SERVER_HEADER_LEN.saturating_add(capacity_hint));
    frame.resize(MAX_SERVER_HEADER_LEN, 0);
    write_payload(&mut frame);
    if frame.len() < MAX_SERVER_HEADER_LEN {
        // A closure that truncated the scratch space is a bug on our side; in release builds send an empty
        // frame rather than garbage.
        debug_assert!(
            false,
            "encode_text_with: write_payload truncated the header space"
        );
        frame.clear();
        frame.resize(MAX_SERVER_HEADER_LEN, 0);
    }
    let payload_len = frame.len() - MAX_SERVER_HEADER_LEN;
    let (mut header, header_len) = server_header(OP_TEXT, payload_len);
    header[0] = first_byte;
    let start = MAX_SERVER_HEADER_LEN - header_len;
    frame[start..MAX_SERVER_HEADER_LEN].copy_from_slice(&header[..header_len]);
    // Bytes keeps the whole allocation and just moves its start pointer past the unused scratch bytes.
    let mut bytes = Bytes::from(frame);
    bytes.advance(start);
    bytes
}

fn clamp_control(payload: &[u8]) -> &[u8] {
    &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)]
}

/// Exactly sized so that `Bytes::from(Vec)` adopts the buffer without reallocating.
fn encode_frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (header, header_len) = server_header(opcode, payload.len());
    let mut frame = Vec::with_capacity(header_len + payload.len());
    frame.extend_from_slice(&header[..header_len]);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// Returns the header in a fixed array plus how many of its leading bytes are used, so callers can place it
/// anywhere (appended, or right-aligned in front of an already written payload).
fn server_header(opcode: u8, payload_len: usize) -> ([u8; MAX_SERVER_HEADER_LEN], usize) {
    let mut header = [0u8; MAX_SERVER_HEADER_LEN];
    header[0] = FIN_BIT | opcode;
    let used = if payload_len <= MAX_LEN_7 {
        header[1] = payload_len as u8;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        header[1] = LEN_16_MARKER;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = LEN_64_MARKER;
        // usize is at most 64 bits on every target we build for, so this is lossless.
        header[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    (header, used)
}

// ---------------------------------------------------------------------------------------------------------------
// Unmasking
// ---------------------------------------------------------------------------------------------------------------

/// In-place XOR unmask, fast: process 8 bytes at a time with a u64 mask (mind alignment via from_ne_bytes on
/// chunks), tail bytewise.
///
/// Each chunk starts at a multiple of 8, which is a multiple of the 4-byte mask period, so the same u64 mask
/// applies to every chunk and the tail starts again at mask byte 0. `from_ne_bytes` on `[u8; 8]` compiles to an
/// unaligned load, so the slice may start anywhere; the loop has no cross-iteration dependency and LLVM
/// vectorises it.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let [m0, m1, m2, m3] = mask;
    let wide = u64::from_ne_bytes([m0, m1, m2, m3, m0, m1, m2, m3]);
    let (chunks, tail) = data.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    for (byte, m) in tail.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Client -> server
// ---------------------------------------------------------------------------------------------------------------

/// A complete client message after reassembly of fragments.
///
/// An unfragmented message's payload is a view into the caller's read buffer (no copy); holding it keeps that
/// allocation alive, so long-lived consumers should copy out what they keep.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// Guaranteed valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// `code` is `None` for an empty close payload; `reason` is guaranteed valid UTF-8.
    Close {
        code: Option<u16>,
        reason: Bytes,
    },
}

/// Why we must close the connection; `close_code()` gives the RFC 6455 close code to send.
#[derive(Debug, PartialEq)]
pub enum FrameError {
    /// Client frames must be masked (RFC 6455 §5.1).
    Unmasked,
    /// RSV1-3 set, but no extension was negotiated; or RSV1 on a control or continuation frame (RFC 7692 §6.1),
    /// or RSV2/RSV3 with permessage-deflate.
    ReservedBits,
    ReservedOpcode,
    /// Control frame without FIN.
    ControlFragmented,
    /// Control payload over 125 bytes.
    ControlTooLong,
    /// Continuation with no message in progress.
    UnexpectedContinuation,
    /// New data frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// Message (sum of fragments) or single frame over `max_message_size`.
    TooLarge,
    /// Text message (after reassembly) is not UTF-8.
    InvalidUtf8,
    /// A compressed message that is not a valid deflate stream (RFC 7692 §7.2.2).
    InvalidCompressed,
    /// Close payload of length 1, a close code that may not be sent (RFC 6455 §7.4), or a reason that is not
    /// UTF-8.
    BadClosePayload,
}

impl FrameError {
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::TooLarge => CLOSE_TOO_BIG,
            FrameError::InvalidUtf8 | FrameError::InvalidCompressed => CLOSE_INVALID_PAYLOAD,
            FrameError::Unmasked
            | FrameError::ReservedBits
            | FrameError::ReservedOpcode
            | FrameError::ControlFragmented
            | FrameError::ControlTooLong
            | FrameError::UnexpectedContinuation
            | FrameError::ExpectedContinuation
            | FrameError::BadClosePayload => CLOSE_PROTOCOL_ERROR,
        }
    }

    /// Short text suitable as the close reason.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Unmasked => "client frame not masked",
            FrameError::ReservedBits => "reserved bits set",
            FrameError::ReservedOpcode => "reserved opcode",
            FrameError::ControlFragmented => "fragmented control frame",
            FrameError::ControlTooLong => "control frame too long",
            FrameError::UnexpectedContinuation => "unexpected continuation frame",
            FrameError::ExpectedContinuation => "expected continuation frame",
            FrameError::TooLarge => "message too large",
            FrameError::InvalidUtf8 => "invalid UTF-8 in text message",
            FrameError::InvalidCompressed => "invalid compressed message",
            FrameError::BadClosePayload => "invalid close payload",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for FrameError {}

/// Whether a peer may put `code` in a close frame (RFC 6455 §7.4.1/§7.4.2 and the IANA registry: 1012-1014 are
/// registered since the RFC; 1004-1006 and 1015 must never appear on the wire; 3000-4999 are for applications).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DataKind {
    Text,
    Binary,
}

/// A fragmented message being reassembled.
struct Partial {
    kind: DataKind,
    /// Its first frame had RSV1: the joined payloads are inflated once the last fragment is in.
    compressed: bool,
    data: BytesMut,
}

/// A parsed and validated client frame header.
struct Header {
    fin: bool,
    /// RSV1 on the first frame of a message (only with permessage-deflate negotiated).
    compressed: bool,
    opcode: u8,
    mask: [u8; MASK_LEN],
    header_len: usize,
    /// Already checked against the size limit, so it fits in memory.
    payload_len: usize,
}

/// Incremental decoder for client -> server frames. Holds the in-progress fragmented message only.
pub struct FrameDecoder {
    max_message_size: usize,
    /// permessage-deflate was negotiated: RSV1 may mark a compressed message.
    deflate: bool,
    partial: Option<Partial>,
}

impl FrameDecoder {
    pub fn new(max_message_size: usize) -> Self {
        FrameDecoder {
            max_message_size,
            deflate: false,
            partial: None,
        }
    }

    /// A decoder for a connection that negotiated permessage-deflate: a message whose first frame has RSV1 is
    /// inflated (by the core's inflater, `ws::deflate`) into at most `max_message_size` bytes, else close 1009.
    /// The compressed bytes count against the same limit as they arrive.
    pub fn with_deflate(max_message_size: usize) -> Self {
        FrameDecoder {
            deflate: true,
            ..Self::new(max_message_size)
        }
    }

    /// Consumes complete frames from the front of `buf` until a whole message is ready (`Ok(Some)`) or `buf`
    /// holds no complete frame (`Ok(None)`; a trailing partial frame is left untouched). Non-final fragments
    /// are consumed into the decoder's own buffer; control frames arriving between fragments are returned at
    /// once. Every header-level rule, including the size limit, is checked as soon as the header bytes are in,
    /// before waiting for the payload, so a client announcing a 2^63-byte frame is rejected immediately.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        loop {
            let Some(header) = self.parse_header(buf)? else {
                return Ok(None);
            };
            // Cannot overflow: payload_len <= max_message_size and header_len <= 14, but stay total anyway.
            let frame_len = header
                .header_len
                .checked_add(header.payload_len)
                .ok_or(FrameError::TooLarge)?;
            if buf.len() < frame_len {
                return Ok(None);
            }
            let mut payload = buf.split_to(frame_len);
            payload.advance(header.header_len);
            unmask(&mut payload, header.mask);
            if let Some(message) = self.on_frame(&header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// True if a fragmented message is in progress (lets the caller account its buffered bytes).
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Payload bytes held for the fragmented message in progress (0 if none).
    pub fn buffered_len(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// `Ok(None)` means the header is not complete yet. Rules that only need the first two bytes are checked
    /// before the rest of the header arrives, so garbage is rejected as early as possible.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & FIN_BIT != 0;
        let opcode = b0 & OPCODE_BITS;
        // RFC 7692 §6.1: with permessage-deflate, RSV1 may be set on the first frame of a data message only.
        let compressed = self.deflate && b0 & RSV_BITS == RSV1_BIT;
        if b0 & RSV_BITS != 0 && !(compressed && matches!(opcode, OP_TEXT | OP_BINARY)) {
            return Err(FrameError::ReservedBits);
        }
        let is_control = match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => false,
            OP_CLOSE | OP_PING | OP_PONG => true,
            _ => return Err(FrameError::ReservedOpcode),
        };
        if b1 & MASK_BIT == 0 {
            return Err(FrameError::Unmasked);
        }
        let len7 = b1 & LEN_7_BITS;
        if is_control {
            if !fin {
                return Err(FrameError::ControlFragmented);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::ControlTooLong);
            }
        }
        match (opcode, self.partial.is_some()) {
            (OP_CONTINUATION, false) => return Err(FrameError::UnexpectedContinuation),
            (OP_TEXT | OP_BINARY, true) => return Err(FrameError::ExpectedContinuation),
            _ => {}
        }

        let ext_len = match len7 {
            LEN_16_MARKER => 2,
            LEN_64_MARKER => 8,
            _ => 0,
        };
        let header_len = 2 + ext_len + MASK_LEN;
        let Some(head) = buf.get(..header_len) else {
            return Ok(None);
        };
        // Non-minimal length encodings are accepted, as tungstenite does; they are harmless.
        let (ext, mask_bytes) = head[2..].split_at(ext_len);
        let announced = if ext_len == 0 {
            u64::from(len7)
        } else {
            ext.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
        };

        // A control frame between fragments is a message of its own, so the fragments buffered so far only
        // count against continuation frames.
        let already = if is_control { 0 } else { self.buffered_len() };
        let limit = self.max_message_size.saturating_sub(already);
        let payload_len = usize::try_from(announced)
            .ok()
            .filter(|&len| len <= limit)
            .ok_or(FrameError::TooLarge)?;

        let mut mask = [0u8; MASK_LEN];
        mask.copy_from_slice(mask_bytes);
        Ok(Some(Header {
            fin,
            compressed,
            opcode,
            mask,
            header_len,
            payload_len,
        }))
    }

    fn on_frame(
        &mut self,
        header: &Header,
        payload: BytesMut,
    ) -> Result<Option<Message>, FrameError> {
        match header.opcode {
            OP_TEXT | OP_BINARY => {
                let kind = if header.opcode == OP_TEXT {
                    DataKind::Text
                } else {
                    DataKind::Binary
                };
                if header.fin {
                    if header.compressed {
                        return self.inflate(kind, &payload).map(Some);
                    }
                    return finish(kind, payload.freeze()).map(Some);
                }
                // Copy the first fragment into a buffer of our own: keeping a split of the read buffer across
                // reads would stop the caller's BytesMut from reusing its allocation.
                self.partial = Some(Partial {
                    kind,
                    compressed: header.compressed,
                    data: BytesMut::from(&payload[..]),
                });
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some(partial) = self.partial.as_mut() else {
                    // parse_header already rejected this; kept total rather than panicking.
                    return Err(FrameError::UnexpectedContinuation);
                };
                partial.data.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                match self.partial.take() {
                    Some(Partial {
                        kind,
                        compressed: true,
                        data,
                    }) => self.inflate(kind, &data).map(Some),
                    Some(Partial { kind, data, .. }) => finish(kind, data.freeze()).map(Some),
                    None => Err(FrameError::UnexpectedContinuation),
                }
            }
            OP_PING => Ok(Some(Message::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Message::Pong(payload.freeze()))),
            OP_CLOSE => parse_close(payload.freeze()).map(Some),
            _ => Err(FrameError::ReservedOpcode),
        }
    }
}

impl FrameDecoder {
    /// A compressed message's payload, inflated within the size limit, then checked like any other.
    fn inflate(&self, kind: DataKind, compressed: &[u8]) -> Result<Message, FrameError> {
        match deflate::inflate(compressed, self.max_message_size) {
            Ok(data) => finish(kind, Bytes::from(data)),
            Err(InflateError::TooLarge) => Err(FrameError::TooLarge),
            Err(InflateError::Invalid) => Err(FrameError::InvalidCompressed),
        }
    }
}

/// UTF-8 is checked only on the whole message because fragment boundaries may split a code point.
fn finish(kind: DataKind, data: Bytes) -> Result<Message, FrameError> {
    match kind {
        DataKind::Binary => Ok(Message::Binary(data)),
        DataKind::Text => match std::str::from_utf8(&data) {
            Ok(_) => Ok(Message::Text(data)),
            Err(_) => Err(FrameError::InvalidUtf8),
        },
    }
}

fn parse_close(payload: Bytes) -> Result<Message, FrameError> {
    match *payload {
        [] => Ok(Message::Close {
            code: None,
            reason: Bytes::new(),
        }),
        [_] => Err(FrameError::BadClosePayload),
        [hi, lo, ..] => {
            let code = u16::from_be_bytes([hi, lo]);
            if !is_valid_close_code(code) {
                return Err(FrameError::BadClosePayload);
            }
            let reason = payload.slice(CLOSE_CODE_LEN..);
            if std::str::from_utf8(&reason).is_err() {
                return Err(FrameError::BadClosePayload);
            }
            Ok(Message::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::{Frame, FrameHeader};

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const LENGTHS: [usize; 6] = [0, 125, 126, 65535, 65536, 70000];

    /// A masked client frame, built independently of the code under test (bytewise mask, explicit lengths).
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { FIN_BIT } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(MASK_BIT | len as u8);
        } else if len <= 0xFFFF {
            out.push(MASK_BIT | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(MASK_BIT | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn text_payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| b'a' + (i % 26) as u8).collect()
    }

    fn binary_payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn decode_all(dec: &mut FrameDecoder, bytes: &[u8]) -> Result<Vec<Message>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = dec.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    fn decode_err(max: usize, bytes: &[u8]) -> FrameError {
        match decode_all(&mut FrameDecoder::new(max), bytes) {
            Err(e) => e,
            Ok(msgs) => panic!("expected an error, got {msgs:?}"),
        }
    }

    /// Strips the server header (tests only see well-formed server frames).
    fn server_payload(frame: &[u8]) -> &[u8] {
        let hl = match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &frame[hl..]
    }

    /// RFC 7692 §7.2.3.1: "Hello" compressed.
    const HELLO_DEFLATED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn with_deflate_rsv1_marks_a_compressed_message_on_its_first_frame_only() {
        let hello = Ok(vec![Message::Text(Bytes::from_static(b"Hello"))]);
        let whole = client_frame(true, OP_TEXT | RSV1_BIT, &HELLO_DEFLATED, MASK);
        assert_eq!(
            decode_all(&mut FrameDecoder::with_deflate(100), &whole),
            hello
        );
        // RFC 7692 §7.2.3.1 again, in two fragments; RSV1 on the first only.
        let mut split = client_frame(false, OP_TEXT | RSV1_BIT, &HELLO_DEFLATED[..3], MASK);
        split.extend(client_frame(
            true,
            OP_CONTINUATION,
            &HELLO_DEFLATED[3..],
            MASK,
        ));
        assert_eq!(
            decode_all(&mut FrameDecoder::with_deflate(100), &split),
            hello
        );
        // Plain messages still decode on a deflate connection.
        let plain = client_frame(true, OP_TEXT, b"Hello", MASK);
        assert_eq!(
            decode_all(&mut FrameDecoder::with_deflate(100), &plain),
            hello
        );

        let deflate_err =
            |bytes: &[u8]| match decode_all(&mut FrameDecoder::with_deflate(100), bytes) {
                Err(e) => e,
                Ok(m) => panic!("expected an error, got {m:?}"),
            };
        assert_eq!(
            decode_err(100, &whole),
            FrameError::ReservedBits,
            "not negotiated"
        );
        let mut bad_cont = client_frame(false, OP_TEXT | RSV1_BIT, &HELLO_DEFLATED[..3], MASK);
        bad_cont.extend(client_frame(
            true,
            OP_CONTINUATION | RSV1_BIT,
            &HELLO_DEFLATED[3..],
            MASK,
        ));
        assert_eq!(deflate_err(&bad_cont), FrameError::ReservedBits);
        for op in [OP_PING, OP_PONG, OP_CLOSE] {
            assert_eq!(
                deflate_err(&client_frame(true, op | RSV1_BIT, b"", MASK)),
                FrameError::ReservedBits
            );
        }
        for rsv in [0x20, 0x10, 0x60] {
            assert_eq!(
                deflate_err(&client_frame(true, OP_TEXT | rsv, b"x", MASK)),
                FrameError::ReservedBits
            );
        }
        // Inflated past the limit: 1009; not a deflate stream: 1007; inflated but not UTF-8: 1007.
        let e = decode_all(&mut FrameDecoder::with_deflate(4), &whole).unwrap_err();
        assert_eq!((e.close_code(), e), (CLOSE_TOO_BIG, FrameError::TooLarge));
        let garbage = client_frame(true, OP_TEXT | RSV1_BIT, &[0xff; 6], MASK);
        assert_eq!(deflate_err(&garbage).close_code(), CLOSE_INVALID_PAYLOAD);
        // 0xff as a stored block: BFINAL=0, BTYPE=00, LEN=1, NLEN=0xfffe, then the byte.
        let not_utf8 = client_frame(
            true,
            OP_TEXT | RSV1_BIT,
            &[0x00, 0x01, 0x00, 0xfe, 0xff, 0xff],
            MASK,
        );
        assert_eq!(deflate_err(&not_utf8), FrameError::InvalidUtf8);
    }

    #[test]
    fn round_trip_lengths() {
        for len in LENGTHS {
            let text = text_payload(len);
            let bin = binary_payload(len);
            let mut dec = FrameDecoder::new(1 << 20);
            let mut wire = client_frame(true, OP_TEXT, &text, MASK);
            wire.extend(client_frame(true, OP_BINARY, &bin, MASK));
            let mut buf = BytesMut::from(&wire[..]);
            assert_eq!(
                dec.decode(&mut buf),
                Ok(Some(Message::Text(Bytes::from(text.clone())))),
                "len {len}"
            );
            assert_eq!(
                dec.decode(&mut buf),
                Ok(Some(Message::Binary(Bytes::from(bin.clone())))),
                "len {len}"
            );
            assert_eq!(dec.decode(&mut buf), Ok(None));
            assert!(buf.is_empty());

            // Server side: the encoders' output matches tungstenite's formatting byte for byte.
            for (ours, op, payload) in [
                (encode_text(&text), OpCode::Data(Data::Text), &text),
                (encode_binary(&bin), OpCode::Data(Data::Binary), &bin),
            ] {
                let mut theirs = Vec::new();
                Frame::message(payload.clone(), op, true)
                    .format(&mut theirs)
                    .unwrap();
                assert_eq!(&ours[..], &theirs[..], "len {len}");
                assert_eq!(server_payload(&ours), &payload[..]);
            }
        }
    }

    #[test]
    fn limit_is_inclusive() {
        let payload = binary_payload(1000);
        let ok = decode_all(
            &mut FrameDecoder::new(1000),
            &client_frame(true, OP_BINARY, &payload, MASK),
        );
        assert_eq!(ok, Ok(vec![Message::Binary(Bytes::from(payload.clone()))]));
        let too_big = client_frame(true, OP_BINARY, &binary_payload(1001), MASK);
        assert_eq!(decode_err(1000, &too_big), FrameError::TooLarge);
    }

    #[test]
    fn split_at_every_offset() {
        for len in [0, 5, 125, 126, 300, 65536] {
            let payload = text_payload(len);
            let wire = client_frame(true, OP_TEXT, &payload, MASK);
            let header_len = wire.len() - len;
            // Every offset for small frames; for the big one every header offset plus some payload offsets.
            let offsets: Vec<usize> = if wire.len() <= 400 {
                (0..=wire.len()).collect()
            } else {
                (0..=header_len + 2)
                    .chain([wire.len() / 2, wire.len() - 1, wire.len()])
                    .collect()
            };
            for split in offsets {
                let mut dec = FrameDecoder::new(1 << 20);
                let mut buf = BytesMut::from(&wire[..split]);
                let first = dec.decode(&mut buf).unwrap();
                if split < wire.len() {
                    assert_eq!(first, None, "len {len} split {split}");
                    assert_eq!(
                        &buf[..],
                        &wire[..split],
                        "partial frame must be left untouched"
                    );
                    buf.extend_from_slice(&wire[split..]);
                    let second = dec.decode(&mut buf).unwrap();
                    assert_eq!(
                        second,
                        Some(Message::Text(Bytes::from(payload.clone()))),
                        "len {len} split {split}"
                    );
                } else {
                    assert_eq!(first, Some(Message::Text(Bytes::from(payload.clone()))));
                }
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn byte_by_byte_stream() {
        let mut wire = client_frame(false, OP_TEXT, "héllo ".as_bytes(), MASK);
        wire.extend(client_frame(true, OP_PING, b"p", MASK));
        wire.extend(client_frame(
            true,
            OP_CONTINUATION,
            "wörld".as_bytes(),
            MASK,
        ));
        wire.extend(client_frame(true, OP_BINARY, &binary_payload(200), MASK));
        wire.extend(client_frame(
            true,
            OP_CLOSE,
            &[0x03, 0xe8, b'o', b'k'],
            MASK,
        ));
        let mut dec = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &wire {
            buf.extend_from_slice(&[b]);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(
            got,
            vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text(Bytes::from("héllo wörld")),
                Message::Binary(Bytes::from(binary_payload(200))),
                Message::Close {
                    code: Some(1000),
                    reason: Bytes::from_static(b"ok")
                },
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn several_frames_in_one_buffer_then_partial() {
        let mut wire = client_frame(true, OP_TEXT, b"one", MASK);
        wire.extend(client_frame(true, OP_BINARY, b"two", [1, 2, 3, 4]));
        wire.extend(client_frame(true, OP_PING, b"", MASK));
        wire.extend(client_frame(true, OP_PONG, b"pong", MASK));
        wire.extend(client_frame(true, OP_CLOSE, b"", MASK));
        let tail = client_frame(true, OP_TEXT, b"partial", MASK);
        wire.extend_from_slice(&tail[..5]);
        let mut dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&wire[..]);
        let expected = [
            Message::Text(Bytes::from_static(b"one")),
            Message::Binary(Bytes::from_static(b"two")),
            Message::Ping(Bytes::new()),
            Message::Pong(Bytes::from_static(b"pong")),
            Message::Close {
                code: None,
                reason: Bytes::new(),
            },
        ];
        for want in expected {
            assert_eq!(dec.decode(&mut buf), Ok(Some(want)));
        }
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], &tail[..5]);
    }

    #[test]
    fn fragmented_text_with_interleaved_control() {
        let mut wire = client_frame(false, OP_TEXT, b"Hel", MASK);
        wire.extend(client_frame(true, OP_PING, b"p1", MASK));
        wire.extend(client_frame(false, OP_CONTINUATION, b"lo ", MASK));
        wire.extend(client_frame(false, OP_CONTINUATION, b"", MASK));
        wire.extend(client_frame(true, OP_PONG, b"p2", MASK));
        wire.extend(client_frame(true, OP_CONTINUATION, b"world", MASK));
        let mut dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Ping(Bytes::from_static(b"p1"))))
        );
        assert!(dec.in_progress());
        assert_eq!(dec.buffered_len(), 3);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Pong(Bytes::from_static(b"p2"))))
        );
        assert_eq!(dec.buffered_len(), 6);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Message::Text(Bytes::from_static(b"Hello world"))))
        );
        assert!(!dec.in_progress());
        assert_eq!(dec.buffered_len(), 0);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn fragmented_binary_and_zero_length_fragments() {
        let mut wire = client_frame(false, OP_BINARY, b"", MASK);
        wire.extend(client_frame(false, OP_CONTINUATION, &[0xff, 0x00], MASK));
        wire.extend(client_frame(true, OP_CONTINUATION, b"", MASK));
        let got = decode_all(&mut FrameDecoder::new(16), &wire);
        assert_eq!(
            got,
            Ok(vec![Message::Binary(Bytes::from_static(&[0xff, 0x00]))])
        );
    }

    #[test]
    fn utf8_code_point_split_across_fragments() {
        let euro = "€".as_bytes(); // e2 82 ac
        let mut wire = client_frame(false, OP_TEXT, &[b'x', euro[0]], MASK);
        wire.extend(client_frame(false, OP_CONTINUATION, &euro[1..2], MASK));
        wire.extend(client_frame(true, OP_CONTINUATION, &[euro[2], b'y'], MASK));
        let got = decode_all(&mut FrameDecoder::new(64), &wire);
        assert_eq!(got, Ok(vec![Message::Text(Bytes::from("x€y"))]));

        // The same split, but the message ends mid code point.
        let mut wire = client_frame(false, OP_TEXT, &[b'x', euro[0]], MASK);
        wire.extend(client_frame(true, OP_CONTINUATION, &euro[1..2], MASK));
        assert_eq!(decode_err(64, &wire), FrameError::InvalidUtf8);
    }

    #[test]
    fn every_error_variant() {
        let max = 64;
        let mut unmasked = client_frame(true, OP_TEXT, b"hi", MASK);
        unmasked[1] &= !MASK_BIT;
        unmasked.drain(2..6);
        assert_eq!(decode_err(max, &unmasked), FrameError::Unmasked);

        for rsv in [0x40, 0x20, 0x10] {
            let mut f = client_frame(true, OP_TEXT, b"hi", MASK);
            f[0] |= rsv;
            assert_eq!(decode_err(max, &f), FrameError::ReservedBits);
        }

        for op in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                decode_err(max, &client_frame(true, op, b"", MASK)),
                FrameError::ReservedOpcode
            );
        }

        for op in [OP_PING, OP_PONG, OP_CLOSE] {
            assert_eq!(
                decode_err(max, &client_frame(false, op, b"", MASK)),
                FrameError::ControlFragmented
            );
            let long = client_frame(true, op, &[b'a'; 126], MASK);
            assert_eq!(decode_err(1024, &long), FrameError::ControlTooLong);
        }
        // 125 is fine.
        let ping125 = client_frame(true, OP_PING, &[b'a'; 125], MASK);
        assert_eq!(
            decode_all(&mut FrameDecoder::new(1024), &ping125),
            Ok(vec![Message::Ping(Bytes::from(vec![b'a'; 125]))])
        );

        assert_eq!(
            decode_err(max, &client_frame(true, OP_CONTINUATION, b"x", MASK)),
            FrameError::UnexpectedContinuation
        );

        for op in [OP_TEXT, OP_BINARY] {
            let mut f = client_frame(false, OP_TEXT, b"a", MASK);
            f.extend(client_frame(true, op, b"b", MASK));
            assert_eq!(decode_err(max, &f), FrameError::ExpectedContinuation);
        }

        // Single frame over the limit, and fragments whose sum is over it.
        assert_eq!(
            decode_err(10, &client_frame(true, OP_BINARY, &[0; 11], MASK)),
            FrameError::TooLarge
        );
        let mut f = client_frame(false, OP_TEXT, b"123456", MASK);
        f.extend(client_frame(true, OP_CONTINUATION, b"78901", MASK));
        assert_eq!(decode_err(10, &f), FrameError::TooLarge);

        assert_eq!(
            decode_err(max, &client_frame(true, OP_TEXT, &[b'a', 0xff], MASK)),
            FrameError::InvalidUtf8
        );
        assert_eq!(
            decode_err(max, &client_frame(true, OP_TEXT, &[0xc0, 0x80], MASK)),
            FrameError::InvalidUtf8
        );

        assert_eq!(
            decode_err(max, &client_frame(true, OP_CLOSE, &[0x03], MASK)),
            FrameError::BadClosePayload
        );
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            let f = client_frame(true, OP_CLOSE, &code.to_be_bytes(), MASK);
            assert_eq!(
                decode_err(max, &f),
                FrameError::BadClosePayload,
                "code {code}"
            );
        }
        let f = client_frame(true, OP_CLOSE, &[0x03, 0xe8, 0xff, 0xfe], MASK);
        assert_eq!(decode_err(max, &f), FrameError::BadClosePayload);

        let expected_codes = [
            (FrameError::Unmasked, 1002),
            (FrameError::ReservedBits, 1002),
            (FrameError::ReservedOpcode, 1002),
            (FrameError::ControlFragmented, 1002),
            (FrameError::ControlTooLong, 1002),
            (FrameError::UnexpectedContinuation, 1002),
            (FrameError::ExpectedContinuation, 1002),
            (FrameError::TooLarge, 1009),
            (FrameError::InvalidUtf8, 1007),
            (FrameError::BadClosePayload, 1002),
        ];
        for (err, code) in expected_codes {
            assert_eq!(err.close_code(), code, "{err:?}");
            assert!(err.reason().len() <= MAX_CLOSE_REASON);
        }
    }

    #[test]
    fn errors_surface_from_the_first_two_bytes() {
        // Only two bytes in: no need to wait for extended length, mask or payload.
        assert_eq!(decode_err(64, &[0x81, 0x7e]), FrameError::Unmasked);
        assert_eq!(decode_err(64, &[0xc1, 0xfe]), FrameError::ReservedBits);
        assert_eq!(decode_err(64, &[0x09, 0x80]), FrameError::ControlFragmented);
        assert_eq!(decode_err(64, &[0x89, 0xfe]), FrameError::ControlTooLong);
    }

    #[test]
    fn valid_close_codes() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1010, 1011, 1014, 3000, 4000, 4999,
        ] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("bye ✓".as_bytes());
            let got = decode_all(
                &mut FrameDecoder::new(64),
                &client_frame(true, OP_CLOSE, &payload, MASK),
            );
            let want = Message::Close {
                code: Some(code),
                reason: Bytes::from("bye ✓"),
            };
            assert_eq!(got, Ok(vec![want]), "code {code}");
        }
    }

    #[test]
    fn limit_checked_before_payload_arrives() {
        // Header only: FIN text, 64-bit length 2^40, mask. Nothing else.
        let mut header = vec![FIN_BIT | OP_TEXT, MASK_BIT | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&MASK);
        assert_eq!(decode_err(1 << 20, &header), FrameError::TooLarge);

        for announced in [1u64 << 63, u64::MAX] {
            let mut header = vec![OP_BINARY, MASK_BIT | 127];
            header.extend_from_slice(&announced.to_be_bytes());
            header.extend_from_slice(&MASK);
            assert_eq!(
                decode_err(1 << 20, &header),
                FrameError::TooLarge,
                "{announced}"
            );
        }

        // A continuation that would push the message over the limit is refused from its header alone.
        let mut wire = client_frame(false, OP_TEXT, &[b'a'; 60], MASK);
        wire.extend_from_slice(&[OP_CONTINUATION, MASK_BIT | 5]);
        wire.extend_from_slice(&MASK);
        assert_eq!(decode_err(64, &wire), FrameError::TooLarge);

        // Within the limit: waits for the payload and leaves the header in place.
        let mut header = vec![FIN_BIT | OP_BINARY, MASK_BIT | 126];
        header.extend_from_slice(&1000u16.to_be_bytes());
        header.extend_from_slice(&MASK);
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(FrameDecoder::new(1000).decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], &header[..]);
    }

    #[test]
    fn empty_buffer_is_not_an_error() {
        let mut dec = FrameDecoder::new(0);
        assert_eq!(dec.decode(&mut BytesMut::new()), Ok(None));
        // A zero limit still admits empty frames; the limit applies to control frames too.
        let mut wire = client_frame(true, OP_TEXT, b"", MASK);
        wire.extend(client_frame(true, OP_PING, b"", MASK));
        assert_eq!(
            decode_all(&mut dec, &wire),
            Ok(vec![
                Message::Text(Bytes::new()),
                Message::Ping(Bytes::new())
            ])
        );
        assert_eq!(
            decode_err(0, &client_frame(true, OP_PING, b"x", MASK)),
            FrameError::TooLarge
        );
    }

    #[test]
    fn encode_text_with_matches_encode_text() {
        for len in [0, 1, 125, 126, 65535, 65536, 70000] {
            let payload = text_payload(len);
            for hint in [0, len, len + 100] {
                let with = encode_text_with(hint, |v| v.extend_from_slice(&payload));
                assert_eq!(with, encode_text(&payload), "len {len} hint {hint}");
            }
        }
    }

    #[test]
    fn encode_text_with_does_not_copy_the_payload() {
        let mut payload_ptr = std::ptr::null();
        let frame = encode_text_with(300, |v| {
            v.extend_from_slice(&[b'x'; 300]);
            payload_ptr = v[MAX_SERVER_HEADER_LEN..].as_ptr();
        });
        assert_eq!(server_payload(&frame).as_ptr(), payload_ptr);
    }

    #[test]
    fn control_encoders() {
        let long = [b'z'; 200];
        for (frame, op) in [(encode_ping(&long), OP_PING), (encode_pong(&long), OP_PONG)] {
            assert_eq!(frame[0], FIN_BIT | op);
            assert_eq!(frame[1], 125);
            assert_eq!(frame.len(), 2 + 125);
        }
        assert_eq!(&encode_ping(b"hi")[..], &[FIN_BIT | OP_PING, 2, b'h', b'i']);
        assert_eq!(&encode_pong(b"")[..], &[FIN_BIT | OP_PONG, 0]);
        assert_eq!(
            &encode_close(1000, "")[..],
            &[FIN_BIT | OP_CLOSE, 2, 0x03, 0xe8]
        );
    }

    #[test]
    fn encode_close_truncates_on_char_boundary() {
        // "ab" + 100 x "é" (2 bytes each): byte 123 falls in the middle of an "é".
        let reason = format!("ab{}", "é".repeat(100));
        assert!(!reason.is_char_boundary(MAX_CLOSE_REASON));
        let frame = encode_close(4000, &reason);
        let payload = server_payload(&frame);
        assert_eq!(frame[1] as usize, payload.len());
        assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(&payload[..2], &4000u16.to_be_bytes());
        let kept = std::str::from_utf8(&payload[2..]).unwrap();
        assert_eq!(kept, format!("ab{}", "é".repeat(60)));

        // Three-byte chars, and a reason that fits exactly.
        let euros = "€".repeat(50);
        let kept_len = server_payload(&encode_close(1000, &euros)).len() - 2;
        assert_eq!(kept_len, 123);
        let exact = "x".repeat(123);
        assert_eq!(
            &server_payload(&encode_close(1000, &exact))[2..],
            exact.as_bytes()
        );

        // What we send is accepted by our own decoder once masked like a client would.
        let mut wire = client_frame(true, OP_CLOSE, server_payload(&frame), MASK);
        wire[0] = frame[0];
        let got = decode_all(&mut FrameDecoder::new(1024), &wire);
        assert_eq!(
            got,
            Ok(vec![Message::Close {
                code: Some(4000),
                reason: Bytes::from(kept.to_owned())
            }])
        );
    }

    #[test]
    fn unmask_matches_naive_xor() {
        let masks = [[0, 0, 0, 0], [0xff; 4], MASK, [1, 2, 3, 4]];
        let backing: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(31).wrapping_add(7))
            .collect();
        for mask in masks {
            for offset in 0..8 {
                for len in 0..=40 {
                    let mut fast = backing.clone();
                    let mut naive = backing.clone();
                    unmask(&mut fast[offset..offset + len], mask);
                    for (i, b) in naive[offset..offset + len].iter_mut().enumerate() {
                        *b ^= mask[i % 4];
                    }
                    assert_eq!(fast, naive, "mask {mask:?} offset {offset} len {len}");
                }
            }
        }
    }

    #[test]
    fn cross_check_with_tungstenite() {
        // Client side: tungstenite's masked formatting equals the test helper, and we decode it.
        for len in LENGTHS {
            let payload = text_payload(len);
            let header = FrameHeader {
                opcode: OpCode::Data(Data::Text),
                mask: Some(MASK),
                ..FrameHeader::default()
            };
            let mut theirs = Vec::new();
            Frame::from_payload(header, Bytes::from(payload.clone()))
                .format(&mut theirs)
                .unwrap();
            assert_eq!(
                theirs,
                client_frame(true, OP_TEXT, &payload, MASK),
                "len {len}"
            );
            let got = decode_all(&mut FrameDecoder::new(1 << 20), &theirs);
            assert_eq!(got, Ok(vec![Message::Text(Bytes::from(payload))]));
        }

        // Server side: tungstenite parses our header back to the same fields.
        for len in LENGTHS {
            let ours = encode_text_with(len, |v| v.extend_from_slice(&text_payload(len)));
            let mut cursor = std::io::Cursor::new(&ours[..]);
            let (header, parsed_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final && !header.rsv1 && !header.rsv2 && !header.rsv3);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(header.mask, None);
            assert_eq!(parsed_len, len as u64);
            assert_eq!(cursor.position() as usize + len, ours.len());
        }
        let close = encode_close(1001, "going away");
        let mut theirs = Vec::new();
        Frame::close(Some(tungstenite::protocol::CloseFrame {
            code: 1001.into(),
            reason: "going away".into(),
        }))
        .format(&mut theirs)
        .unwrap();
        assert_eq!(&close[..], &theirs[..]);
    }

    #[test]
    fn random_bytes_never_panic() {
        // Deterministic xorshift; masked-bit and small lengths are forced often so frames actually complete.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut dec = FrameDecoder::new(256);
            let mut buf = BytesMut::new();
            'stream: for _ in 0..64 {
                let r = next();
                let mut chunk: Vec<u8> = (0..(r % 24) as usize).map(|_| next() as u8).collect();
                if r & 0x100 != 0 && chunk.len() >= 2 {
                    chunk[0] =
                        (chunk[0] & 0x8f) | [0x0, 0x1, 0x2, 0x8, 0x9, 0xA][(r >> 9) as usize % 6];
                    chunk[1] = MASK_BIT | (chunk[1] % 16);
                }
                buf.extend_from_slice(&chunk);
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(e) => {
                            assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                            break 'stream;
                        }
                    }
                }
            }
        }
    }
}
