//! relay: a Pusher-Channels-compatible realtime server, thread-per-core on io_uring (monoio).
//!
//! Data flows one way: bytes -> `http` / `ws` -> `protocol` -> `channels` -> fan-out -> bytes. `server` owns the
//! cores that run it all; `api` is the REST surface; `auth` holds every signature.

#[macro_use]
pub mod log;

pub mod api;
pub mod app;
pub mod auth;
pub mod channels;
pub mod config;
pub mod http;
pub mod json;
pub mod protocol;
pub mod server;
pub mod ws;
