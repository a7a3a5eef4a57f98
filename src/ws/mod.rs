//! WebSocket transport (RFC 6455), no Pusher rules: the opening handshake, the frame codec, permessage-deflate
//! (RFC 7692), the per-connection output queue and the writer task that drains it.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod outbox;
pub mod writer;
