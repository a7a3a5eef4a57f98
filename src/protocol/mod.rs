//! The Pusher protocol, sans I/O: messages in (`inbound`) and frames out (`outbound`), codes, channel names and
//! types, every signature (`auth`), the per-connection state (`session`), and the rules a message or connection
//! must pass (`handshake`, `subscribe`, `client_event`, `signin`, `liveness`). Decisions only: carrying them out
//! across cores is the runtime's job.

pub mod auth;
pub mod channel_name;
pub mod client_event;
pub mod codes;
pub mod handshake;
pub mod inbound;
pub mod liveness;
pub mod outbound;
pub mod rejection;
pub mod session;
pub mod signin;
pub mod subscribe;
