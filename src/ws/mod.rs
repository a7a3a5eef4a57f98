//! WebSocket transport (RFC 6455), no Pusher rules: the opening handshake, the frame codec, the per-connection
//! output queue and the writer task that drains it.

pub mod frame;
pub mod handshake;
pub mod outbox;
pub mod writer;
