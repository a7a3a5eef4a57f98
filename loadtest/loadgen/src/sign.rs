//! REST request signing for the generator: the server library's signer (docs/protocol.md#rest-signing), in the argument order the
//! generator uses. Every use of the server crate (`relay::…`) goes through this file, so a move of the
//! server's `auth` module needs a change here only.

/// Full signed query string (without `?`) for a request with `body`.
pub fn sign_rest_query(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> String {
    relay::protocol::auth::sign_rest_query(method, path, &[], body, key, secret, timestamp as i64)
}

/// Channel auth token `key:signature` for a private (`channel_data` None) or
/// presence channel: the server library's signer (docs/protocol.md#channel-authorization).
pub fn sign_channel(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    relay::protocol::auth::sign_channel(key, secret, socket_id, channel, channel_data)
}

/// Checks a channel auth token the way the server does (the mock uses it).
#[cfg(test)]
pub fn verify_channel(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    relay::protocol::auth::verify_channel_auth(key, secret, socket_id, channel, channel_data, auth)
        .is_ok()
}
