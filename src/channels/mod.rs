//! Pub/sub, with no sockets: the per-core subscriber index and its fan-out loop, publications, presence rosters,
//! the facts a home core keeps, and the lifecycle events those facts produce.

pub mod facts;
pub mod history;
pub mod index;
pub mod lifecycle;
pub mod presence;
pub mod publication;
