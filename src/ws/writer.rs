//! The writer task: drains a session's outbox into the socket, coalescing every queued frame into one
//! `writev` per wake-up.
//!
//! Under load a burst of publishes queues several frames per socket before the writer runs, so one syscall
//! (one SQE on io_uring) carries them all; when idle a single frame goes out at once, adding no latency.
//! The iovec array is owned by the in-flight operation (monoio's `write_vectored_all` is not cancel-safe).
//! Generic over the socket's write side (plain TCP, or TLS which encrypts a whole batch into one write), and
//! counts the bytes each write took (`WsBytesSent`, frames as sent, TLS overhead not included).

use std::future::poll_fn;

use bytes::{Buf, Bytes};
use monoio::buf::IoVecBuf;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::metrics::{CoreMetrics, Counter};
use crate::ws::outbox::Outbox;

/// iovecs per writev (Linux IOV_MAX is 1024).
pub const MAX_IOVECS: usize = 1024;

/// Frames being written plus the iovec array pointing into them.
pub struct FrameBatch {
    frames: Vec<Bytes>,
    iov: Vec<libc::iovec>,
}

// SAFETY: `iov` points into the heap buffers of `frames`, which the batch owns; moving the batch moves only the
// Vec headers, so the pointers stay valid while the runtime owns the batch, and `rebuild` runs only while we own it.
unsafe impl IoVecBuf for FrameBatch {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

impl FrameBatch {
    pub fn new() -> Self {
        FrameBatch {
            frames: Vec::new(),
            iov: Vec::new(),
        }
    }

    fn rebuild(&mut self) {
        self.iov.clear();
        self.iov.extend(self.frames.iter().map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        }));
    }

    /// Drops what the kernel took: whole frames, then a prefix of the first partial one.
    fn advance(&mut self, mut n: usize) {
        let mut whole = 0;
        while whole < self.frames.len() && n >= self.frames[whole].len() {
            n -= self.frames[whole].len();
            whole += 1;
        }
        self.frames.drain(..whole);
        if n > 0
            && let Some(f) = self.frames.first_mut()
        {
            f.advance(n);
        }
    }
}

impl Default for FrameBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes everything `outbox` is given until it closes (true: all written) or the socket fails (false: the outbox
/// is dead). The caller drops the write half afterwards, which sends FIN after the last frame (usually a Close).
pub async fn run<W: AsyncWriteRent>(outbox: &Outbox, wr: &mut W, metrics: &CoreMetrics) -> bool {
    let mut batch = FrameBatch::new();
    loop {
        let more = poll_fn(|cx| outbox.poll_take(cx, &mut batch.frames, MAX_IOVECS)).await;
        if !more {
            return !outbox.is_killed();
        }
        outbox.set_writing(true);
        let ok = match batch.frames.len() {
            1 => {
                let frame = batch.frames.pop().expect("one frame");
                let len = frame.len() as u64;
                let ok = wr.write_all(frame).await.0.is_ok();
                if ok {
                    metrics.add(Counter::WsBytesSent, len);
                }
                ok
            }
            _ => write_batch(wr, &mut batch, metrics).await,
        };
        outbox.set_writing(false);
        if !ok {
            outbox.kill();
            return false;
        }
    }
}

async fn write_batch<W: AsyncWriteRent>(
    wr: &mut W,
    batch: &mut FrameBatch,
    metrics: &CoreMetrics,
) -> bool {
    while !batch.frames.is_empty() {
        batch.rebuild();
        let owned = std::mem::take(batch);
        let (res, back) = wr.writev(owned).await;
        *batch = back;
        match res {
            Ok(0) | Err(_) => {
                batch.frames.clear();
                return false;
            }
            Ok(n) => {
                metrics.add(Counter::WsBytesSent, n as u64);
                batch.advance(n);
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_drops_whole_frames_and_trims_partial() {
        let mut b = FrameBatch::new();
        b.frames = vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
            Bytes::from_static(b"h"),
        ];
        b.advance(5);
        assert_eq!(
            b.frames,
            vec![Bytes::from_static(b"fg"), Bytes::from_static(b"h")]
        );
        b.advance(3);
        assert!(b.frames.is_empty());
    }
}
