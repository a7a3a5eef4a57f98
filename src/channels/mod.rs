//! Channels: names and types, and the per-core subscriber index with its fan-out loop.

pub mod facts;
pub mod index;
pub mod name;
pub mod presence;
