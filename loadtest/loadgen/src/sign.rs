//! REST request signing for the generator: the server library's signer (spec §11), in the argument order the
//! generator uses.

/// Full signed query string (without `?`) for a request with `body`.
pub fn sign_rest_query(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: u64,
) -> String {
    relay::auth::sign_rest_query(method, path, &[], body, key, secret, timestamp as i64)
}
