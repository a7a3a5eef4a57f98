//! A cluster of relay nodes over Redis (docs/protocol.md#cluster): each node publishes its REST and client events
//! to the Redis channel of their Pusher channel, and listens only to the channels it has subscribers for, so a
//! publication reaches each interested node once and no other. The Redis connections live on the bridge's own
//! threads (`bridge.rs`); what travels is in `wire.rs`.

pub mod bridge;
pub mod commands;
pub mod link;
pub mod wire;

pub use bridge::{Cluster, ClusterStats, DeliverFn, Delivery, Keep};
pub use commands::{ClusterAnswer, ClusterQuery, PresenceJoined};
pub use wire::{MemberRecord, RemotePublish};
