//! Our own small HTTP/1.1: request heads on httparse, bodies, responses, and the per-connection loop.

pub mod conn;
pub mod query;
pub mod request;
pub mod response;
