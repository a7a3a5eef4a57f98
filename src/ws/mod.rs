//! WebSocket: handshake, frame codec, per-connection session, output queue and the connection's tasks.

pub mod connection;
pub mod frame;
pub mod handshake;
pub mod outbox;
pub mod session;
pub mod writer;
