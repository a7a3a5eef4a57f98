//! Our own small HTTP/1.1, no Pusher rules: request heads on httparse, query strings, and responses. The
//! connection loop that uses them is `server::http_conn`.

pub mod query;
pub mod request;
pub mod response;
