//! The byte stream a connection is served over: plain TCP, or TLS over it (`server::tls`).
//!
//! `http_conn` and `ws_conn` are generic over [`Transport`], so each kind of connection gets its own compiled copy
//! of the connection code: a plain connection runs exactly the code it ran before TLS existed, with no branch or
//! indirection per read or write. The choice between them is made once, when a connection is accepted.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;

use monoio::io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

/// A connection's stream before it is split into a WebSocket's reader and writer.
pub trait Transport: AsyncReadRent + AsyncWriteRent + AsRawFd + 'static {
    type Reader: ReadHalf;
    type Writer: AsyncWriteRent + 'static;

    /// Sends small writes at once (WebSocket frames must not wait for Nagle).
    fn set_nodelay(&self) -> io::Result<()>;

    /// The reader for the connection's read task and the writer for its writer task. Dropping the writer ends
    /// the sending side (FIN) after what was written.
    fn into_halves(self) -> (Self::Reader, Self::Writer);
}

/// A WebSocket's read side.
pub trait ReadHalf: AsyncReadRent + 'static {
    /// Resolves when a read would return at once (data, end of stream or an error), holding no buffer meanwhile:
    /// an idle connection must not pin a read buffer.
    fn readable(&mut self) -> impl Future<Output = io::Result<()>>;
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf<TcpStream>;
    type Writer = OwnedWriteHalf<TcpStream>;

    fn set_nodelay(&self) -> io::Result<()> {
        TcpStream::set_nodelay(self, true)
    }

    fn into_halves(self) -> (Self::Reader, Self::Writer) {
        self.into_split()
    }
}

impl ReadHalf for OwnedReadHalf<TcpStream> {
    fn readable(&mut self) -> impl Future<Output = io::Result<()>> {
        // SAFETY: the stream is only borrowed immutably for `readable`, on this thread, while the read task has no
        // other operation of its own in flight; the writer task uses only the write side.
        let stream = unsafe { &*self.0.get() };
        stream.readable(false)
    }
}
