//! One accepted TCP connection: HTTP/1.1 requests (keep-alive, pipelining) until it upgrades to WebSocket.
//!
//! Pipelined requests already in the buffer are answered in place before the next read, and their responses go
//! out in one write. Limits: head size and header count (431), body size (413), chunked bodies (411), a read
//! timeout for heads and bodies that trickle in (408), an idle timeout between keep-alive requests, a write
//! timeout for clients that do not read, and caps on responses buffered and requests answered per turn.

use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::api;
use crate::http::request::{HttpError, Method, parse_head};
use crate::runtime::core::Core;
use crate::server::transport::Transport;
use crate::server::{ws_conn, yield_now};

const READ_CHUNK: usize = 4096;

enum ReadOutcome {
    Data,
    Closed,
    TimedOut,
}

/// Appends what the socket has to `buf`, waiting at most `limit`.
async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    limit: Duration,
) -> ReadOutcome {
    buf.reserve(READ_CHUNK);
    let len = buf.len();
    let cap = buf.capacity();
    let taken = std::mem::take(buf);
    // A timed-out read is dropped with its buffer; the connection is closed right after, so nothing is lost.
    match monoio::time::timeout(limit, stream.read(taken.slice_mut(len..cap))).await {
        Ok((Ok(n), slice)) => {
            *buf = slice.into_inner();
            if n == 0 {
                ReadOutcome::Closed
            } else {
                ReadOutcome::Data
            }
        }
        Ok((Err(_), _)) => ReadOutcome::Closed,
        Err(_) => ReadOutcome::TimedOut,
    }
}

/// Time left until the current request's deadline, starting it now if it has not started.
fn remaining(deadline: &mut Option<Instant>, limit: Duration) -> Duration {
    let now = Instant::now();
    deadline
        .get_or_insert(now + limit)
        .saturating_duration_since(now)
}

/// Responses buffered for a pipelining client before they are written: past this the connection writes before it
/// answers more, so a client that sends and never reads holds at most this much of ours (plus its socket buffer).
pub const MAX_BUFFERED_RESPONSE_BYTES: usize = 64 * 1024;
/// Pipelined requests answered in one go before the connection yields to the core's other tasks: a client with a
/// megabyte of tiny requests queued cannot hold a core.
pub const MAX_REQUESTS_PER_TURN: usize = 64;
/// A read buffer grown past this (by a large body) is given back once it holds no more than a partial request.
const READ_BUFFER_KEEP: usize = 64 * 1024;

/// Writes `out` within `limit`; false if the client is gone or does not read in time.
async fn write_out<S: AsyncWriteRent>(stream: &mut S, out: &mut Vec<u8>, limit: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let data = std::mem::take(out);
    // A timed-out write is dropped with its buffer; the connection is closed right after.
    match monoio::time::timeout(limit, stream.write_all(data)).await {
        Ok((Ok(_), mut data)) => {
            data.clear();
            *out = data;
            true
        }
        Ok((Err(_), _)) | Err(_) => false,
    }
}

/// Drops the consumed front of the read buffer (once per read, never per request: pipelined requests are
/// answered in place), and gives back a buffer a large body grew.
fn compact(buf: &mut Vec<u8>, start: &mut usize) {
    buf.drain(..*start);
    *start = 0;
    if buf.capacity() > READ_BUFFER_KEEP && buf.len() <= READ_BUFFER_KEEP / 2 {
        buf.shrink_to(READ_BUFFER_KEEP / 2);
    }
}

/// Serves HTTP on an accepted connection, plain TCP or TLS (compiled once for each).
pub async fn serve<S: Transport>(core: Rc<Core>, mut stream: S) {
    let limits = core.shared.config.limits.clone();
    let write_limit = limits.http_write_timeout;
    let mut buf: Vec<u8> = Vec::new();
    // Requests before `start` are answered; parsing goes on from there without moving bytes.
    let mut start = 0;
    let mut out: Vec<u8> = Vec::new();
    let mut answered_this_turn = 0;
    // One deadline per request, from its first byte: a client trickling a byte at a time cannot hold the
    // connection by resetting a per-read timeout.
    let mut deadline: Option<Instant> = None;
    loop {
        let pending = &buf[start..];
        let head = match parse_head(pending, limits.max_http_head_bytes, limits.max_http_headers) {
            Ok(Some(h)) => h,
            Ok(None) => {
                if !write_out(&mut stream, &mut out, write_limit).await {
                    return;
                }
                answered_this_turn = 0;
                let idle = pending.is_empty();
                compact(&mut buf, &mut start);
                let wait = if idle {
                    limits.http_idle_timeout
                } else {
                    remaining(&mut deadline, limits.http_read_timeout)
                };
                match read_more(&mut stream, &mut buf, wait).await {
                    ReadOutcome::Data => continue,
                    ReadOutcome::Closed => return,
                    // An idle keep-alive connection just ends; a half-sent head is told why.
                    ReadOutcome::TimedOut if idle => return,
                    ReadOutcome::TimedOut => {
                        refuse(&mut stream, &mut out, HttpError::Timeout, write_limit).await;
                        return;
                    }
                }
            }
            Err(e) => {
                refuse(&mut stream, &mut out, e, write_limit).await;
                return;
            }
        };

        if head.upgrade {
            if !write_out(&mut stream, &mut out, write_limit).await {
                return;
            }
            let leftover = buf.split_off(start + head.head_len);
            // A task of its own: this HTTP task's buffers and state are freed for the connection's lifetime.
            let fut = ws_conn::serve(core, stream, head, leftover);
            monoio::spawn(fut);
            return;
        }
        if head.chunked {
            refuse(
                &mut stream,
                &mut out,
                HttpError::LengthRequired,
                write_limit,
            )
            .await;
            return;
        }
        let body_len = head.content_length.unwrap_or(0);
        if body_len > limits.max_http_body_bytes {
            let e = HttpError::BodyTooLarge {
                limit: limits.max_http_body_bytes,
            };
            refuse(&mut stream, &mut out, e, write_limit).await;
            return;
        }
        let total = head.head_len + body_len;
        if buf.len() - start < total {
            // The body is still coming: answer what is buffered first, then make room at the front.
            if !write_out(&mut stream, &mut out, write_limit).await {
                return;
            }
            compact(&mut buf, &mut start);
        }
        while buf.len() - start < total {
            let wait = remaining(&mut deadline, limits.http_read_timeout);
            match read_more(&mut stream, &mut buf, wait).await {
                ReadOutcome::Data => {}
                ReadOutcome::Closed => return,
                ReadOutcome::TimedOut => {
                    refuse(&mut stream, &mut out, HttpError::Timeout, write_limit).await;
                    return;
                }
            }
        }
        let body = &buf[start + head.head_len..start + total];
        let response = api::route(&core, &head, body).await;
        if response.event_stream {
            response.write_to(&mut out, false, false);
            if write_out(&mut stream, &mut out, write_limit).await {
                api::dashboard::stream_events(&core, &mut stream).await;
            }
            return;
        }
        let keep_alive = head.keep_alive && !core.shared.is_shutting_down();
        response.write_to(&mut out, keep_alive, head.method == Method::Head);
        start += total;
        deadline = None;
        if !keep_alive {
            write_out(&mut stream, &mut out, write_limit).await;
            return;
        }
        // Pipelined requests already buffered are answered before anything is written, within two bounds.
        answered_this_turn += 1;
        if out.len() >= MAX_BUFFERED_RESPONSE_BYTES || answered_this_turn >= MAX_REQUESTS_PER_TURN {
            if !write_out(&mut stream, &mut out, write_limit).await {
                return;
            }
            answered_this_turn = 0;
            yield_now().await;
        }
    }
}

/// Answers a request we cannot serve and ends the connection (its framing can no longer be trusted).
pub(crate) async fn refuse<S: AsyncReadRent + AsyncWriteRent>(
    stream: &mut S,
    out: &mut Vec<u8>,
    e: HttpError,
    write_limit: Duration,
) {
    crate::debug!("http request refused: {e:?}");
    e.response().write_to(out, false, false);
    if !write_out(stream, out, write_limit).await {
        return;
    }
    // Closing with unread input makes the kernel send a reset, which can destroy the response before the client
    // reads it (a 413 for a body still being sent, say). Half-close, then discard what is still coming, bounded.
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + REFUSE_DRAIN_TIME;
    let mut discarded = 0;
    let mut buf = vec![0u8; READ_CHUNK];
    while discarded < REFUSE_DRAIN_BYTES {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        match monoio::time::timeout(left, stream.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                discarded += n;
                buf = b;
            }
            _ => return,
        }
    }
}

/// How much unread input a refused connection may still send us before it is closed anyway.
const REFUSE_DRAIN_BYTES: usize = 4 * 1024 * 1024;
const REFUSE_DRAIN_TIME: Duration = Duration::from_secs(2);
