//! Pusher close and error codes (docs/protocol.md#close-codes, #pusher-error), in one place.

/// Close codes the server sends.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const UNKNOWN_APP: u16 = 4001;
    pub const APP_DISABLED: u16 = 4003;
    pub const APP_OVER_QUOTA: u16 = 4004;
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    pub const UNAUTHORIZED: u16 = 4009;
    pub const OVER_CAPACITY: u16 = 4100;
    /// Graceful shutdown: pusher-js reconnects at once (to another node).
    pub const RECONNECT: u16 = 4200;
    pub const PONG_NOT_RECEIVED: u16 = 4201;
}

/// Codes carried in `pusher:error` data without closing.
pub mod error {
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
    pub const WATCHLIST_LIMIT: u16 = 4302;
    /// A message nested past `json::MAX_JSON_DEPTH`, refused unparsed (the connection stays open).
    pub const JSON_TOO_DEEP: u16 = 4007;
}
