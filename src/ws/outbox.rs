//! The per-connection output queue: fan-out pushes shared frames in, one writer task drains them.
//!
//! Frames are `Bytes` clones of buffers encoded once per publish, so a queued frame costs a refcount and a slot.
//! The queue is capped in bytes, counting each frame's real cost (payload plus its slot and allocation), so a
//! flood of tiny frames cannot pin more than the cap: a reader too slow to keep up is cut off instead of growing
//! server memory (design: backpressure is first class). Pongs do not queue at all: at most one waits, the answer to
//! the latest ping (RFC 6455 §5.5.3). Everything here is single-core (`Cell`/`RefCell`), no locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued while the writer is idle: it goes out on this loop turn.
    Queued,
    /// Queued behind a write still in flight: the reader is not keeping up right now.
    Backpressured,
    /// The connection is closing or gone; the frame was dropped.
    Closed,
    /// The cap was reached; the caller must cut the connection off.
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// A final frame (close) is queued; nothing more is accepted.
    Closing,
    /// The writer is gone.
    Dead,
}

/// A burst (a 100 KB batch publish, say) may take the queue over its cap up to this factor: a reader that keeps up
/// drains it within milliseconds, and cutting it off would be wrong. Past this factor the reader is cut at once.
pub const BURST_FACTOR: usize = 4;

/// How long the queue may stay over its cap (within the burst allowance) before its reader counts as slow.
pub const SLOW_READER_GRACE: Duration = Duration::from_millis(500);

/// What a queued frame costs beyond its bytes: its `Bytes` handle in the queue and the allocator's rounding of a
/// small frame's buffer. Counted against the cap so that a million empty frames are a million times this.
pub const QUEUED_FRAME_OVERHEAD: usize = std::mem::size_of::<Bytes>() + 16;

/// The bytes a frame is charged against the cap.
#[inline]
fn cost(frame: &Bytes) -> usize {
    frame.len() + QUEUED_FRAME_OVERHEAD
}

pub struct Outbox {
    queue: RefCell<VecDeque<Bytes>>,
    /// The answer to the latest ping, if not yet written; a newer ping replaces it.
    pong: RefCell<Option<Bytes>>,
    queued_bytes: Cell<usize>,
    /// A write is in flight: frames queued now wait on the client, so the plain cap applies.
    writing: Cell<bool>,
    /// Since when the queue has been over its cap, if it is.
    over_cap_since: Cell<Option<Instant>>,
    writer: Cell<Option<Waker>>,
    state: Cell<State>,
    cap: usize,
}

impl Outbox {
    pub fn new(cap: usize) -> Self {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            pong: RefCell::new(None),
            queued_bytes: Cell::new(0),
            writing: Cell::new(false),
            over_cap_since: Cell::new(None),
            writer: Cell::new(None),
            state: Cell::new(State::Open),
            cap,
        }
    }

    #[inline]
    pub fn push(&self, frame: Bytes) -> Push {
        if self.state.get() != State::Open {
            return Push::Closed;
        }
        let bytes = self.queued_bytes.get() + cost(&frame);
        if bytes > self.cap && self.over_too_long(bytes, Instant::now()) {
            return Push::Overflow;
        }
        self.queued_bytes.set(bytes);
        self.queue.borrow_mut().push_back(frame);
        self.wake_writer();
        if self.writing.get() {
            Push::Backpressured
        } else {
            Push::Queued
        }
    }

    /// Over the cap: a reader is slow when the burst allowance is exceeded, or when the queue has stayed over the
    /// cap for longer than [`SLOW_READER_GRACE`].
    fn over_too_long(&self, bytes: usize, now: Instant) -> bool {
        if bytes > self.cap.saturating_mul(BURST_FACTOR) {
            return true;
        }
        match self.over_cap_since.get() {
            None => {
                self.over_cap_since.set(Some(now));
                false
            }
            Some(since) => now.duration_since(since) > SLOW_READER_GRACE,
        }
    }

    /// Queues a pong in the one pong slot, replacing an unsent older one (RFC 6455 §5.5.3: answering the latest
    /// ping is enough), so a ping flood costs one frame however long the client does not read.
    pub fn push_pong(&self, frame: Bytes) -> Push {
        if self.state.get() != State::Open {
            return Push::Closed;
        }
        let added = cost(&frame);
        let replaced = self
            .pong
            .borrow_mut()
            .replace(frame)
            .map_or(0, |f| cost(&f));
        self.queued_bytes
            .set(self.queued_bytes.get() + added - replaced);
        self.wake_writer();
        Push::Queued
    }

    /// Queues the last frames of the connection (e.g. `pusher:error` then Close) past the cap; later pushes are
    /// dropped. Returns false if the connection was already closing.
    pub fn finish(&self, frames: &[Bytes]) -> bool {
        if self.state.get() != State::Open {
            return false;
        }
        let mut q = self.queue.borrow_mut();
        for f in frames {
            self.queued_bytes.set(self.queued_bytes.get() + cost(f));
            q.push_back(f.clone());
        }
        drop(q);
        self.state.set(State::Closing);
        self.wake_writer();
        true
    }

    /// A reader too slow to keep up: drop what is queued (bounding memory now) and queue only the final frames.
    pub fn replace_and_finish(&self, frames: &[Bytes]) -> bool {
        if self.state.get() != State::Open {
            return false;
        }
        self.queue.borrow_mut().clear();
        self.pong.borrow_mut().take();
        self.queued_bytes.set(0);
        self.finish(frames)
    }

    /// The writer is gone (socket error or teardown): drop everything queued.
    pub fn kill(&self) {
        self.state.set(State::Dead);
        self.queue.borrow_mut().clear();
        self.pong.borrow_mut().take();
        self.queued_bytes.set(0);
        self.wake_writer();
    }

    /// The writer marks the span of each socket write.
    pub fn set_writing(&self, on: bool) {
        self.writing.set(on);
    }

    /// The writer is gone (or the connection was cut): nothing queued will ever be written.
    pub fn is_killed(&self) -> bool {
        self.state.get() == State::Dead
    }

    pub fn is_open(&self) -> bool {
        self.state.get() == State::Open
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Writer side: moves up to `max` queued frames into `batch`. Pending while the queue is empty and the
    /// connection open; `Ready(false)` when there is nothing more to write ever (closing and drained, or dead).
    pub fn poll_take(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Bytes>,
        max: usize,
    ) -> Poll<bool> {
        if self.state.get() == State::Dead {
            return Poll::Ready(false);
        }
        let mut q = self.queue.borrow_mut();
        let pong = self.pong.borrow_mut().take();
        if q.is_empty() && pong.is_none() {
            if self.state.get() == State::Closing {
                return Poll::Ready(false);
            }
            self.writer.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        let mut taken = 0;
        if let Some(p) = pong {
            taken += cost(&p);
            batch.push(p);
        }
        let n = q.len().min(max.saturating_sub(batch.len()));
        for f in q.drain(..n) {
            taken += cost(&f);
            batch.push(f);
        }
        self.queued_bytes.set(self.queued_bytes.get() - taken);
        if self.queued_bytes.get() <= self.cap {
            self.over_cap_since.set(None);
        }
        Poll::Ready(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A cap that holds exactly `n` frames of `len` bytes.
    fn cap_for(n: usize, len: usize) -> usize {
        n * (len + QUEUED_FRAME_OVERHEAD)
    }

    #[test]
    fn a_burst_is_absorbed_up_to_its_allowance_and_for_the_grace_only() {
        let o = Outbox::new(cap_for(1, 6));
        o.set_writing(true);
        for _ in 0..BURST_FACTOR {
            assert_eq!(o.push(Bytes::from_static(b"123456")), Push::Backpressured);
        }
        assert_eq!(
            o.push(Bytes::from_static(b"123456")),
            Push::Overflow,
            "over the burst allowance"
        );
        // Over the cap for longer than the grace: slow, however small the excess.
        let o = Outbox::new(cap_for(1, 6));
        let t0 = Instant::now();
        o.push(Bytes::from_static(b"123456"));
        assert!(
            !o.over_too_long(cap_for(2, 6), t0),
            "the excess starts the clock"
        );
        assert!(!o.over_too_long(cap_for(2, 6), t0 + SLOW_READER_GRACE));
        assert!(o.over_too_long(cap_for(2, 6), t0 + SLOW_READER_GRACE * 2));
        // Draining below the cap stops the clock.
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(o.poll_take(&mut cx, &mut Vec::new(), 64), Poll::Ready(true));
        assert!(!o.over_too_long(cap_for(2, 6), t0 + SLOW_READER_GRACE * 3));
    }

    #[test]
    fn empty_frames_are_charged_their_real_cost() {
        let o = Outbox::new(cap_for(100, 0));
        o.set_writing(true);
        for _ in 0..100 * BURST_FACTOR {
            assert_eq!(o.push(Bytes::new()), Push::Backpressured);
        }
        assert_eq!(o.push(Bytes::new()), Push::Overflow);
    }

    #[test]
    fn only_the_latest_pong_waits() {
        let o = Outbox::new(cap_for(2, 6));
        o.set_writing(true);
        for i in 0..100_000u32 {
            assert_eq!(
                o.push_pong(Bytes::from(i.to_be_bytes().to_vec())),
                Push::Queued
            );
        }
        assert_eq!(o.queued_bytes(), 4 + QUEUED_FRAME_OVERHEAD);
        assert_eq!(o.push(Bytes::from_static(b"data")), Push::Backpressured);
        let mut cx = Context::from_waker(Waker::noop());
        let mut batch = Vec::new();
        assert_eq!(o.poll_take(&mut cx, &mut batch, 64), Poll::Ready(true));
        assert_eq!(
            batch,
            [
                Bytes::from(99_999u32.to_be_bytes().to_vec()),
                Bytes::from_static(b"data")
            ]
        );
        assert_eq!(o.queued_bytes(), 0);
    }

    #[test]
    fn cap_is_enforced_and_finish_bypasses_it() {
        let o = Outbox::new(cap_for(1, 6));
        o.set_writing(true);
        for _ in 0..BURST_FACTOR {
            assert_eq!(o.push(Bytes::from_static(b"123456")), Push::Backpressured);
        }
        assert_eq!(o.push(Bytes::from_static(b"123456")), Push::Overflow);
        assert_eq!(o.queued_bytes(), BURST_FACTOR * cap_for(1, 6));
        assert!(o.finish(&[Bytes::from_static(b"closeframe")]));
        assert_eq!(o.push(Bytes::from_static(b"x")), Push::Closed);
        let mut cx = Context::from_waker(Waker::noop());
        let mut batch = Vec::new();
        assert_eq!(o.poll_take(&mut cx, &mut batch, 64), Poll::Ready(true));
        assert_eq!(batch.len(), BURST_FACTOR + 1);
        assert_eq!(o.poll_take(&mut cx, &mut batch, 64), Poll::Ready(false));
    }

    #[test]
    fn replace_and_finish_drops_the_backlog() {
        let o = Outbox::new(cap_for(1, 8));
        o.push(Bytes::from_static(b"12345678"));
        assert!(o.replace_and_finish(&[Bytes::from_static(b"bye")]));
        assert_eq!(o.queued_bytes(), cap_for(1, 3));
        assert!(!o.replace_and_finish(&[Bytes::from_static(b"again")]));
    }

    #[test]
    fn empty_open_queue_is_pending() {
        let o = Outbox::new(10);
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(o.poll_take(&mut cx, &mut Vec::new(), 64), Poll::Pending);
        o.kill();
        assert_eq!(
            o.poll_take(&mut cx, &mut Vec::new(), 64),
            Poll::Ready(false)
        );
    }
}
