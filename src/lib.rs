//! relay: a Pusher-Channels-compatible realtime server, thread-per-core on io_uring (monoio).
//!
//! Layers, lowest first; a module may use only the layers below it (`tests/architecture.rs` checks this):
//!
//! 1. base: `log`, `clock`, `json`, `socket_id`, `metrics`, `config`, `app`: leaf types every layer uses;
//! 2. transport: `http`, `ws`: HTTP/1.1 and RFC 6455 framing, no Pusher rules;
//! 3. `protocol`: Pusher messages, frames, codes, signatures, per-connection state and rules, no I/O;
//! 4. `channels`: pub/sub without sockets: the channel index and fan-out, publications, rosters, facts;
//! 5. `webhooks`: the sender that takes lifecycle and client events off the cores to the apps' URLs;
//!    `cluster`: the bridge to Redis that shares publications between nodes;
//! 6. `runtime`: cores, inboxes, the publish pipeline, the features that span cores;
//! 7. `api`: the REST resources;
//! 8. `server`: startup, listeners, the connection loops, drain.
//!
//! Data flows one way: bytes -> `server` connection loop -> `http` / `ws` -> `protocol` -> `runtime` ->
//! `channels` fan-out -> outbox -> bytes. See ARCHITECTURE.md.

#[macro_use]
pub mod log;

pub mod clock;
pub mod json;
pub mod metrics;
pub mod socket_id;

pub mod app;
pub mod config;

pub mod http;
pub mod ws;

pub mod protocol;

pub mod channels;

pub mod webhooks;

pub mod cluster;

pub mod runtime;

pub mod api;

pub mod server;
