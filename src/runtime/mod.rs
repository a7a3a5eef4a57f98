//! The runtime: cores and how they cooperate. A `Core` owns its sessions, its channel index and the facts it is
//! home to; cores talk only through inboxes. Each feature that spans cores has its own module with its messages,
//! its two sides and its teardown (`presence`, `users`, `cache`, `counts`, `occupancy`); `publish` is the one
//! pipeline every event enters; `facts` is the one interface to shared facts; `lifecycle` is where channel and
//! user state changes go; `handler` carries out a connection's messages.

pub mod cache;
pub mod core;
pub mod counts;
pub mod event_log;
pub mod facts;
pub mod handler;
pub mod history;
pub mod inbox;
pub mod lifecycle;
pub mod liveness;
pub mod message;
pub mod occupancy;
pub mod presence;
pub mod publish;
pub mod query;
pub mod shared;
pub mod users;

#[cfg(test)]
mod tests;
