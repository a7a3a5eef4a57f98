//! Channel names: validation (docs/protocol.md#channel-names) and the channel type implied by the prefix
//! (docs/protocol.md#channel-types).

/// What a channel's prefix makes it. Prefixes are anchored at the start of the name (docs/protocol.md#channel-names:
/// `notprivate-x` is public, `my-cache-x` is not a cache channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Public,
    Private,
    Encrypted,
    Presence,
    /// `#server-to-user-{id}` (docs/protocol.md#server-to-user).
    ServerToUser,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelType {
    pub kind: ChannelKind,
    /// One of the four cache prefixes (docs/protocol.md#cache-channels).
    pub cache: bool,
}

pub const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

impl ChannelType {
    pub fn of(name: &str) -> ChannelType {
        // docs/protocol.md#channel-types: first match wins.
        const TABLE: &[(&str, ChannelKind, bool)] = &[
            ("private-encrypted-cache-", ChannelKind::Encrypted, true),
            ("private-encrypted-", ChannelKind::Encrypted, false),
            ("private-cache-", ChannelKind::Private, true),
            ("private-", ChannelKind::Private, false),
            ("presence-cache-", ChannelKind::Presence, true),
            ("presence-", ChannelKind::Presence, false),
            ("cache-", ChannelKind::Public, true),
            (SERVER_TO_USER_PREFIX, ChannelKind::ServerToUser, false),
        ];
        for (prefix, kind, cache) in TABLE {
            if name.starts_with(prefix) {
                return ChannelType {
                    kind: *kind,
                    cache: *cache,
                };
            }
        }
        ChannelType {
            kind: ChannelKind::Public,
            cache: false,
        }
    }

    /// Private, encrypted and presence channels need a signed `auth`.
    pub fn needs_auth(self) -> bool {
        matches!(
            self.kind,
            ChannelKind::Private | ChannelKind::Encrypted | ChannelKind::Presence
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    BadCharacter,
}

impl NameError {
    pub fn message(self, name: &str, max: usize) -> String {
        match self {
            NameError::Empty => "Channel name must not be empty".to_string(),
            NameError::TooLong => format!("Channel name too long (over {max} characters)"),
            NameError::BadCharacter => {
                format!(
                    "Invalid channel name '{}': only A-Z a-z 0-9 _ - = @ , . ; are allowed",
                    truncate(name, 210)
                )
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[inline]
fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

/// docs/protocol.md#channel-names: `^[-a-zA-Z0-9_=@,.;]+$`, at most `max_len`; `#` only as `#server-to-user-{id}`.
pub fn validate(name: &str, max_len: usize) -> Result<ChannelType, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_len {
        return Err(NameError::TooLong);
    }
    let body = match name.strip_prefix(SERVER_TO_USER_PREFIX) {
        Some(user) if !user.is_empty() => user,
        _ => name,
    };
    if !body.bytes().all(allowed) {
        return Err(NameError::BadCharacter);
    }
    Ok(ChannelType::of(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_anchored_and_first_match_wins() {
        let t = |n| ChannelType::of(n);
        assert_eq!(
            t("private-encrypted-cache-x"),
            ChannelType {
                kind: ChannelKind::Encrypted,
                cache: true
            }
        );
        assert_eq!(
            t("private-encrypted-x"),
            ChannelType {
                kind: ChannelKind::Encrypted,
                cache: false
            }
        );
        assert_eq!(
            t("private-cache-x"),
            ChannelType {
                kind: ChannelKind::Private,
                cache: true
            }
        );
        assert_eq!(
            t("presence-cache-x"),
            ChannelType {
                kind: ChannelKind::Presence,
                cache: true
            }
        );
        assert_eq!(
            t("cache-x"),
            ChannelType {
                kind: ChannelKind::Public,
                cache: true
            }
        );
        assert_eq!(
            t("notprivate-x"),
            ChannelType {
                kind: ChannelKind::Public,
                cache: false
            }
        );
        assert_eq!(
            t("my-cache-x"),
            ChannelType {
                kind: ChannelKind::Public,
                cache: false
            }
        );
        assert_eq!(t("#server-to-user-42").kind, ChannelKind::ServerToUser);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate("my-channel", 200).is_ok());
        assert!(validate("a-Z_0=@,.;", 200).is_ok());
        assert_eq!(validate("", 200), Err(NameError::Empty));
        assert_eq!(validate("has space", 200), Err(NameError::BadCharacter));
        assert_eq!(validate("a:b", 200), Err(NameError::BadCharacter));
        assert_eq!(validate("#foo", 200), Err(NameError::BadCharacter));
        assert_eq!(
            validate("#server-to-user-", 200),
            Err(NameError::BadCharacter)
        );
        assert!(validate("#server-to-user-42", 200).is_ok());
        assert!(validate(&"a".repeat(200), 200).is_ok());
        assert_eq!(validate(&"a".repeat(201), 200), Err(NameError::TooLong));
        assert_eq!(validate("é", 200), Err(NameError::BadCharacter));
    }
}
