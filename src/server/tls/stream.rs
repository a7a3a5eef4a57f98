//! rustls driven over monoio: a stream that reads and writes like a `TcpStream` and splits into a read half and a
//! write half for a WebSocket's two tasks. Either side of TLS: relay serves with it, and the load generator
//! connects with it.
//!
//! The rustls connection sits in an `Rc<RefCell<_>>` the halves share, borrowed only between awaits, never across
//! one. A read hands out plaintext rustls already holds before it touches the socket; otherwise it waits for the
//! socket to be readable and only then takes a per-thread scratch buffer for one non-blocking `recv`, so neither an
//! idle connection nor one that stalls half-way through a record or a handshake pins an I/O buffer of ours
//! (rustls gives its own back when they empty), and reads are cancel-safe. A write (or `writev`) encrypts
//! everything it is given into as few records as rustls allows and sends them with one socket write: a batch of
//! WebSocket frames costs one record per 16 KiB and one syscall, as over plain TCP. Writes, like monoio's own, are
//! not cancel-safe: one dropped half-way cuts the record stream, so the connection is closed after it (and sends
//! no close_notify).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, BufRead, IoSlice, Write};
use std::ops::DerefMut;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData};

use crate::server::transport::{ReadHalf, Transport};

/// A rustls connection of either side.
pub trait TlsSession: DerefMut<Target = ConnectionCommon<Self::Data>> + 'static {
    type Data: SideData + 'static;
}

impl TlsSession for ServerConnection {
    type Data = rustls::server::ServerConnectionData;
}

impl TlsSession for ClientConnection {
    type Data = rustls::client::ClientConnectionData;
}

/// What a connection's halves share.
struct Shared<C> {
    session: RefCell<C>,
    /// The socket's descriptor, for the non-blocking `recv` and the farewell's `send`.
    fd: RawFd,
    /// A socket write of ours did not finish (it failed, or was dropped half-way): the peer's record stream is cut
    /// off mid-record, so no close_notify may follow.
    torn: Cell<bool>,
    /// close_notify was sent (by `shutdown`).
    said_goodbye: Cell<bool>,
}

/// The read side's state.
#[derive(Default)]
struct Inbound {
    /// Ciphertext read from the socket that rustls could not take yet because its plaintext buffer was full;
    /// usually empty and unallocated.
    pending: Vec<u8>,
    /// The socket reached end of stream.
    eof: bool,
}

/// A TLS connection over TCP, after (or during) its handshake.
pub struct TlsStream<C: TlsSession> {
    // Dropped first: the close_notify goes out before the socket closes.
    farewell: Farewell<C>,
    inbound: Inbound,
    tcp: TcpStream,
}

/// The read task's half of a split [`TlsStream`].
pub struct TlsReadHalf<C: TlsSession> {
    shared: Rc<Shared<C>>,
    inbound: Inbound,
    tcp: OwnedReadHalf<TcpStream>,
}

/// The writer task's half of a split [`TlsStream`]. Dropping it sends close_notify, then FIN.
pub struct TlsWriteHalf<C: TlsSession> {
    farewell: Farewell<C>,
    tcp: OwnedWriteHalf<TcpStream>,
}

impl<C: TlsSession> TlsStream<C> {
    /// Wraps a connected socket; nothing is sent until [`TlsStream::handshake`].
    pub fn new(tcp: TcpStream, session: C) -> Self {
        TlsStream {
            farewell: Farewell {
                shared: Rc::new(Shared {
                    session: RefCell::new(session),
                    fd: tcp.as_raw_fd(),
                    torn: Cell::new(false),
                    said_goodbye: Cell::new(false),
                }),
            },
            inbound: Inbound::default(),
            tcp,
        }
    }

    /// Runs the handshake to its end. On a failure the alert rustls prepared is sent (best effort) and the error
    /// returned; the caller bounds the whole handshake in time.
    pub async fn handshake(&mut self) -> io::Result<()> {
        loop {
            flush_tls(&self.farewell.shared, &mut self.tcp).await?;
            if !self.farewell.shared.session.borrow().is_handshaking() {
                return Ok(());
            }
            let step = if !self.inbound.pending.is_empty() {
                absorb_pending(
                    &mut *self.farewell.shared.session.borrow_mut(),
                    &mut self.inbound,
                )
            } else if self.inbound.eof {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the TLS handshake",
                ))
            } else {
                receive(&self.farewell.shared, &mut self.inbound, &mut self.tcp).await
            };
            if let Err(e) = step {
                let _ = flush_tls(&self.farewell.shared, &mut self.tcp).await;
                return Err(e);
            }
        }
    }

    /// Resolves when a read would return at once, holding no buffer meanwhile.
    pub async fn readable(&mut self) -> io::Result<()> {
        readable(&self.farewell.shared, &mut self.inbound, &mut self.tcp).await
    }
}

impl<C: TlsSession> AsRawFd for TlsStream<C> {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl<C: TlsSession> Transport for TlsStream<C> {
    type Reader = TlsReadHalf<C>;
    type Writer = TlsWriteHalf<C>;

    fn set_nodelay(&self) -> io::Result<()> {
        self.tcp.set_nodelay(true)
    }

    fn into_halves(self) -> (Self::Reader, Self::Writer) {
        let (rd, wr) = self.tcp.into_split();
        let reader = TlsReadHalf {
            shared: self.farewell.shared.clone(),
            inbound: self.inbound,
            tcp: rd,
        };
        let writer = TlsWriteHalf {
            farewell: self.farewell,
            tcp: wr,
        };
        (reader, writer)
    }
}

impl<C: TlsSession> ReadHalf for TlsReadHalf<C> {
    async fn readable(&mut self) -> io::Result<()> {
        readable(&self.shared, &mut self.inbound, &mut self.tcp).await
    }
}

impl<C: TlsSession> AsyncReadRent for TlsStream<C> {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        read(&self.farewell.shared, &mut self.inbound, &mut self.tcp, buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        readv(self, buf).await
    }
}

impl<C: TlsSession> AsyncReadRent for TlsReadHalf<C> {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        read(&self.shared, &mut self.inbound, &mut self.tcp, buf).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        readv(self, buf).await
    }
}

/// The write side is the same for the whole stream and its write half: both hold the farewell and a socket.
macro_rules! tls_write {
    ($stream:ident) => {
        impl<C: TlsSession> AsyncWriteRent for $stream<C> {
            async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                write(&self.farewell.shared, &mut self.tcp, buf).await
            }

            async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                writev(&self.farewell.shared, &mut self.tcp, buf).await
            }

            async fn flush(&mut self) -> io::Result<()> {
                flush_tls(&self.farewell.shared, &mut self.tcp).await?;
                self.tcp.flush().await
            }

            async fn shutdown(&mut self) -> io::Result<()> {
                goodbye(&self.farewell.shared, &mut self.tcp).await
            }
        }
    };
}

tls_write!(TlsStream);
tls_write!(TlsWriteHalf);

/// The socket under a read side: the whole stream or its read half.
trait Socket {
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>>;
}

impl Socket for TcpStream {
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>> {
        TcpStream::readable(self, false)
    }
}

impl Socket for OwnedReadHalf<TcpStream> {
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>> {
        ReadHalf::readable(self)
    }
}

/// Copies plaintext rustls holds into `buf`: `None` when it holds none yet; `Some(Ok(0))` after the peer's
/// close_notify.
fn plaintext_into<C: TlsSession, B: IoBufMut>(
    session: &mut C,
    buf: &mut B,
) -> Option<io::Result<usize>> {
    let room = buf.bytes_total();
    let mut reader = session.reader();
    let n = match reader.fill_buf() {
        Ok(data) => {
            let n = data.len().min(room);
            // SAFETY: `write_ptr` is valid for `bytes_total` bytes while we own `buf` (IoBufMut's contract) and
            // n is at most that; rustls's buffer and ours are distinct allocations.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.write_ptr(), n) };
            n
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
        Err(e) => return Some(Err(e)),
    };
    reader.consume(n);
    // SAFETY: the first n bytes were just written.
    unsafe { buf.set_init(n) };
    Some(Ok(n))
}

/// True when a read would return without waiting for the socket.
fn has_input<C: TlsSession>(session: &mut C, inbound: &Inbound) -> bool {
    if inbound.eof || !inbound.pending.is_empty() {
        return true;
    }
    !matches!(session.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Hands `input` to rustls and processes it; what rustls cannot take yet (its plaintext buffer is full) stays in
/// `input`.
fn absorb<C: TlsSession>(session: &mut C, input: &mut &[u8]) -> io::Result<()> {
    while !input.is_empty() {
        match session.read_tls(input) {
            // After a close_notify rustls takes nothing more: the rest is dropped.
            Ok(0) => *input = &[],
            Ok(_) => {
                session
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            // "received plaintext buffer full": the reader drains it first.
            Err(e) if e.kind() == io::ErrorKind::Other => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Feeds ciphertext held back earlier; called only while rustls holds no plaintext, so it always progresses.
fn absorb_pending<C: TlsSession>(session: &mut C, inbound: &mut Inbound) -> io::Result<()> {
    let mut input = &inbound.pending[..];
    let result = absorb(session, &mut input);
    let used = inbound.pending.len() - input.len();
    if result.is_ok() && used == 0 {
        return Err(io::Error::other("TLS input not accepted"));
    }
    inbound.pending.drain(..used);
    if inbound.pending.is_empty() {
        inbound.pending = Vec::new();
    }
    result
}

/// Waits until the socket is readable, then hands what it has to rustls. Cancel-safe: the only await is the
/// readiness wait; the socket is then read with a non-blocking `recv` into a scratch buffer held only for that
/// call, so no operation of the runtime is left in flight to lose bytes, and a client that sends half a record (or
/// half a handshake) and stalls holds no buffer of ours.
async fn receive<C: TlsSession, R: Socket>(
    shared: &Shared<C>,
    inbound: &mut Inbound,
    tcp: &mut R,
) -> io::Result<()> {
    tcp.wait_readable().await?;
    let mut buf = scratch::take();
    // SAFETY: receives into the buffer's spare capacity (valid for `capacity` bytes, ours alone), without blocking
    // whatever the descriptor's mode; the length is set only to what the kernel wrote.
    let n = unsafe {
        libc::recv(
            shared.fd,
            buf.as_mut_ptr().cast(),
            buf.capacity(),
            libc::MSG_DONTWAIT,
        )
    };
    let result = if n < 0 {
        let e = io::Error::last_os_error();
        match e.kind() {
            // A spurious wake-up: the caller waits again.
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
            _ => Err(e),
        }
    } else {
        // SAFETY: the kernel initialised n bytes (n <= capacity).
        unsafe { buf.set_len(n as usize) };
        take_in(shared, inbound, &buf)
    };
    scratch::give(buf);
    result
}

/// Ciphertext just read from the socket (none: end of stream) into rustls, the rest held back.
fn take_in<C: TlsSession>(
    shared: &Shared<C>,
    inbound: &mut Inbound,
    bytes: &[u8],
) -> io::Result<()> {
    if bytes.is_empty() {
        inbound.eof = true;
        return Ok(());
    }
    let mut input = bytes;
    let result = absorb(&mut *shared.session.borrow_mut(), &mut input);
    inbound.pending.extend_from_slice(input);
    result
}

async fn read<C: TlsSession, R: Socket, B: IoBufMut>(
    shared: &Shared<C>,
    inbound: &mut Inbound,
    tcp: &mut R,
    mut buf: B,
) -> BufResult<usize, B> {
    loop {
        {
            let mut session = shared.session.borrow_mut();
            if let Some(r) = plaintext_into(&mut *session, &mut buf) {
                return (r, buf);
            }
            if !inbound.pending.is_empty() {
                if let Err(e) = absorb_pending(&mut *session, inbound) {
                    return (Err(e), buf);
                }
                continue;
            }
        }
        if inbound.eof {
            return (Ok(0), buf);
        }
        if let Err(e) = receive(shared, inbound, tcp).await {
            return (Err(e), buf);
        }
    }
}

/// Reads into the first buffer of `buf` (nothing in relay reads vectored).
async fn readv<R: AsyncReadRent, T: IoVecBufMut>(
    stream: &mut R,
    mut buf: T,
) -> BufResult<usize, T> {
    // SAFETY: the RawBuf points into `buf`'s first iovec, which we own and keep alive until the read returns.
    let n = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
        Some(raw) => stream.read(raw).await.0,
        None => Ok(0),
    };
    if let Ok(n) = n {
        // SAFETY: the read initialised n bytes of the first iovec.
        unsafe { buf.set_init(n) };
    }
    (n, buf)
}

/// Waits until plaintext, end of stream or an error is there; a partial record just waits again. Cancel-safe, as
/// [`receive`] is.
async fn readable<C: TlsSession, R: Socket>(
    shared: &Shared<C>,
    inbound: &mut Inbound,
    tcp: &mut R,
) -> io::Result<()> {
    while !has_input(&mut *shared.session.borrow_mut(), inbound) {
        receive(shared, inbound, tcp).await?;
    }
    Ok(())
}

async fn write<C: TlsSession, W: AsyncWriteRent, T: IoBuf>(
    shared: &Shared<C>,
    tcp: &mut W,
    buf: T,
) -> BufResult<usize, T> {
    let accepted = {
        // SAFETY: `read_ptr` is valid for `bytes_init` bytes while we own `buf` (IoBuf's contract); the slice is
        // used only in this block, before any await.
        let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        shared.session.borrow_mut().writer().write(data)
    };
    finish_write(shared, tcp, accepted, buf).await
}

async fn writev<C: TlsSession, W: AsyncWriteRent, T: IoVecBuf>(
    shared: &Shared<C>,
    tcp: &mut W,
    buf: T,
) -> BufResult<usize, T> {
    let len = buf.read_iovec_len();
    if len == 0 {
        return (Ok(0), buf);
    }
    let accepted = {
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix (documented by std); the iovecs and the memory
        // they point to are valid while we own `buf` (IoVecBuf's contract), and the slices are used only in this
        // block, before any await.
        let slices =
            unsafe { std::slice::from_raw_parts(buf.read_iovec_ptr().cast::<IoSlice<'_>>(), len) };
        shared.session.borrow_mut().writer().write_vectored(slices)
    };
    finish_write(shared, tcp, accepted, buf).await
}

/// Sends what was just encrypted; reports how much plaintext was taken (rustls caps one write at its buffer
/// limit, 64 KiB; the rest is the caller's to write again, as with a short socket write).
async fn finish_write<C: TlsSession, W: AsyncWriteRent, T>(
    shared: &Shared<C>,
    tcp: &mut W,
    accepted: io::Result<usize>,
    buf: T,
) -> BufResult<usize, T> {
    let n = match accepted {
        Ok(n) => n,
        Err(e) => return (Err(e), buf),
    };
    match flush_tls(shared, tcp).await {
        Ok(()) => (Ok(n), buf),
        Err(e) => (Err(e), buf),
    }
}

/// Writes every record rustls has ready, in one socket write per turn.
async fn flush_tls<C: TlsSession, W: AsyncWriteRent>(
    shared: &Shared<C>,
    tcp: &mut W,
) -> io::Result<()> {
    loop {
        let mut out = scratch::take();
        {
            let mut session = shared.session.borrow_mut();
            while session.wants_write() {
                // Writing into a Vec cannot fail.
                session.write_tls(&mut out)?;
            }
        }
        if out.is_empty() {
            scratch::give(out);
            return Ok(());
        }
        shared.torn.set(true);
        let (res, out) = tcp.write_all(out).await;
        shared.torn.set(res.is_err());
        scratch::give(out);
        res?;
    }
}

/// close_notify, then FIN.
async fn goodbye<C: TlsSession, W: AsyncWriteRent>(
    shared: &Shared<C>,
    tcp: &mut W,
) -> io::Result<()> {
    if !shared.said_goodbye.replace(true) {
        shared.session.borrow_mut().send_close_notify();
    }
    flush_tls(shared, tcp).await?;
    tcp.shutdown().await
}

/// Sends close_notify when the stream (or its write half) is dropped without `shutdown`, so a peer reading to the
/// end sees a clean close, not a truncation.
struct Farewell<C: TlsSession> {
    shared: Rc<Shared<C>>,
}

impl<C: TlsSession> Drop for Farewell<C> {
    fn drop(&mut self) {
        let shared = &self.shared;
        if shared.torn.get() || shared.said_goodbye.replace(true) {
            return;
        }
        let Ok(mut session) = shared.session.try_borrow_mut() else {
            return;
        };
        if session.is_handshaking() {
            return;
        }
        session.send_close_notify();
        let mut out = Vec::new();
        while session.wants_write() {
            if session.write_tls(&mut out).is_err() {
                return;
            }
        }
        if out.is_empty() {
            return;
        }
        // SAFETY: `fd` is this stream's socket, still open (the TCP stream is dropped after this guard); a
        // non-blocking send of a few bytes from a live buffer. If it fails (peer gone, buffer full) the peer just
        // sees no close_notify.
        unsafe {
            libc::send(
                shared.fd,
                out.as_ptr().cast(),
                out.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }
}

/// Per-thread ciphertext buffers, each lent for one socket operation.
mod scratch {
    use std::cell::RefCell;

    /// One read takes at most this much ciphertext (a full TLS record is 16 KiB plus a few bytes).
    const SIZE: usize = 16 * 1024;
    /// A buffer a large write grew past this is not kept.
    const KEEP_CAPACITY: usize = 128 * 1024;
    /// Buffers kept per thread; more in use at once are allocated and freed.
    const KEEP_COUNT: usize = 64;

    thread_local! {
        static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> Vec<u8> {
        POOL.with_borrow_mut(|p| p.pop())
            .unwrap_or_else(|| Vec::with_capacity(SIZE))
    }

    pub(super) fn give(mut buf: Vec<u8>) {
        if !(SIZE..=KEEP_CAPACITY).contains(&buf.capacity()) {
            return;
        }
        buf.clear();
        POOL.with_borrow_mut(|p| {
            if p.len() < KEEP_COUNT {
                p.push(buf);
            }
        });
    }
}
