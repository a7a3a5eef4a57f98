//! The Pusher protocol: codes, inbound message parsing, outbound frame building, and dispatch.

pub mod codes;
pub mod handler;
pub mod inbound;
pub mod outbound;
