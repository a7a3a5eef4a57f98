//! When a connection has gone quiet, what to do about it (docs/protocol.md#heartbeats): ping it after
//! `activity_timeout` of silence, close it with 4201 when the ping goes unanswered, close it with 4009 when an
//! app that requires authorized connections is not signed in in time, and cut a close handshake that never ends.
//! Pure rules over a session's timestamps; the runtime's per-core scan applies them.

use std::time::{Duration, Instant};

use crate::protocol::codes::close;
use crate::protocol::session::Session;

/// How long a closing session may wait for the client's Close reply before the socket is cut.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
pub struct LivenessRules {
    /// Client silence before the server checks on it.
    pub activity: Duration,
    /// Time to answer that check.
    pub pong: Duration,
    /// Set for apps that require authorized connections: time to sign in or join an authorized channel.
    pub authorize_within: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Alive,
    /// Send a WebSocket ping and a `pusher:ping` (every client answers one of them), and note when.
    Ping,
    /// Close with `code`; `with_error` sends `pusher:error` first.
    Close {
        code: u16,
        reason: &'static str,
        with_error: bool,
    },
    /// The close handshake is overdue: cut the socket.
    Cut,
}

pub fn verdict(rules: &LivenessRules, s: &Session, now: Instant) -> Verdict {
    if let Some(since) = s.closing_since.get() {
        return if now.duration_since(since) > CLOSE_GRACE {
            Verdict::Cut
        } else {
            Verdict::Alive
        };
    }
    if let Some(within) = rules.authorize_within
        && !s.authorized.get()
        && now.duration_since(s.connected_at) >= within
    {
        return Verdict::Close {
            code: close::UNAUTHORIZED,
            reason: "Connection not authorized in time: sign in or subscribe to a private channel",
            with_error: true,
        };
    }
    match s.ping_sent.get() {
        Some(sent) if now.duration_since(sent) >= rules.pong => Verdict::Close {
            code: close::PONG_NOT_RECEIVED,
            reason: "Pong reply not received",
            with_error: false,
        },
        Some(_) => Verdict::Alive,
        None if now.duration_since(s.last_seen.get()) >= rules.activity => Verdict::Ping,
        None => Verdict::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket_id::SocketId;

    const RULES: LivenessRules = LivenessRules {
        activity: Duration::from_secs(120),
        pong: Duration::from_secs(30),
        authorize_within: None,
    };

    fn session() -> Session {
        Session::new(
            SocketId {
                random: 1,
                unique: 1,
            },
            0,
            -1,
            1 << 16,
        )
    }

    #[test]
    fn silence_gets_a_ping_then_4201() {
        let s = session();
        let t0 = s.last_seen.get();
        assert_eq!(
            verdict(&RULES, &s, t0 + Duration::from_secs(119)),
            Verdict::Alive
        );
        assert_eq!(
            verdict(&RULES, &s, t0 + Duration::from_secs(120)),
            Verdict::Ping
        );
        s.ping_sent.set(Some(t0 + Duration::from_secs(120)));
        assert_eq!(
            verdict(&RULES, &s, t0 + Duration::from_secs(149)),
            Verdict::Alive
        );
        assert!(matches!(
            verdict(&RULES, &s, t0 + Duration::from_secs(150)),
            Verdict::Close {
                code: close::PONG_NOT_RECEIVED,
                ..
            }
        ));
        s.touch();
        assert_eq!(
            verdict(&RULES, &s, Instant::now()),
            Verdict::Alive,
            "any frame answers"
        );
    }

    #[test]
    fn unauthorized_connections_close_with_4009_and_closing_ones_are_cut_after_the_grace() {
        let rules = LivenessRules {
            authorize_within: Some(Duration::from_secs(30)),
            ..RULES
        };
        let s = session();
        let t0 = s.connected_at;
        assert!(matches!(
            verdict(&rules, &s, t0 + Duration::from_secs(30)),
            Verdict::Close {
                code: close::UNAUTHORIZED,
                with_error: true,
                ..
            }
        ));
        s.authorized.set(true);
        assert_eq!(
            verdict(&rules, &s, t0 + Duration::from_secs(30)),
            Verdict::Alive
        );
        s.close(1000, "", None);
        let since = s.closing_since.get().unwrap();
        assert_eq!(verdict(&rules, &s, since + CLOSE_GRACE), Verdict::Alive);
        assert_eq!(
            verdict(&rules, &s, since + CLOSE_GRACE + Duration::from_millis(1)),
            Verdict::Cut
        );
    }
}
