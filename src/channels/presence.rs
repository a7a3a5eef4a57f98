//! A presence channel's roster (docs/protocol.md#presence), kept by the channel's home core only.
//!
//! Members are users, not connections: a user on several connections counts once, joins on the first and
//! leaves with the last. The roster is the one place that decides `member_added` / `member_removed`.

use std::collections::HashMap;

use crate::json::push_json_string;

struct Member {
    /// `user_info` as raw JSON text (`null` when absent); the first connection's info wins
    /// (docs/protocol.md#presence).
    info: Box<str>,
    connections: u32,
}

#[derive(Default)]
pub struct PresenceRoster {
    members: HashMap<Box<str>, Member>,
    /// Join order, so `ids` lists members in the order they arrived.
    order: Vec<Box<str>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// First connection of this user: others get `member_added`.
    NewMember,
    /// Another connection of a present user: nobody is told.
    AnotherConnection,
    /// The channel already has `max` distinct users.
    Full,
}

impl PresenceRoster {
    pub fn join(&mut self, user_id: &str, info: &str, max_members: usize) -> Join {
        if let Some(m) = self.members.get_mut(user_id) {
            m.connections += 1;
            return Join::AnotherConnection;
        }
        if self.members.len() >= max_members {
            return Join::Full;
        }
        self.members.insert(
            Box::from(user_id),
            Member {
                info: Box::from(info),
                connections: 1,
            },
        );
        self.order.push(Box::from(user_id));
        Join::NewMember
    }

    /// Returns true when this was the user's last connection (send `member_removed`).
    pub fn leave(&mut self, user_id: &str) -> bool {
        let Some(m) = self.members.get_mut(user_id) else {
            return false;
        };
        debug_assert!(m.connections > 0, "a member with no connections");
        m.connections -= 1;
        if m.connections > 0 {
            return false;
        }
        self.members.remove(user_id);
        if let Some(i) = self.order.iter().position(|u| &**u == user_id) {
            self.order.remove(i);
        }
        true
    }

    pub fn contains(&self, user_id: &str) -> bool {
        self.members.contains_key(user_id)
    }

    pub fn user_count(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn user_ids(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|u| &**u)
    }

    /// `{"presence":{"ids":[..],"hash":{..},"count":n}}` for `subscription_succeeded` (docs/protocol.md#presence).
    pub fn snapshot_json(&self) -> String {
        snapshot_json_of(self.order.iter().map(|id| (&**id, &*self.members[id].info)))
    }
}

/// The `subscription_succeeded` data for members given as (user id, raw user_info JSON), in the order given (a
/// cluster's roster comes from Redis).
pub fn snapshot_json_of<'a>(members: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> String {
    let mut o = Vec::with_capacity(256);
    o.extend_from_slice(br#"{"presence":{"ids":["#);
    for (i, (id, _)) in members.clone().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        push_json_string(&mut o, id);
    }
    o.extend_from_slice(br#"],"hash":{"#);
    let mut count = 0usize;
    for (i, (id, info)) in members.enumerate() {
        if i > 0 {
            o.push(b',');
        }
        push_json_string(&mut o, id);
        o.push(b':');
        o.extend_from_slice(info.as_bytes());
        count += 1;
    }
    o.extend_from_slice(br#"},"count":"#);
    o.extend_from_slice(count.to_string().as_bytes());
    o.extend_from_slice(b"}}");
    String::from_utf8(o).expect("built from UTF-8 pieces")
}

/// `{"user_id":"42","user_info":{..}}`
pub fn member_added_json(user_id: &str, info: &str) -> String {
    let mut o = Vec::new();
    o.extend_from_slice(br#"{"user_id":"#);
    push_json_string(&mut o, user_id);
    o.extend_from_slice(br#","user_info":"#);
    o.extend_from_slice(info.as_bytes());
    o.push(b'}');
    String::from_utf8(o).expect("built from UTF-8 pieces")
}

/// `{"user_id":"42"}`
pub fn member_removed_json(user_id: &str) -> String {
    let mut o = Vec::new();
    o.extend_from_slice(br#"{"user_id":"#);
    push_json_string(&mut o, user_id);
    o.push(b'}');
    String::from_utf8(o).expect("built from UTF-8 pieces")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_count_once_across_connections() {
        let mut r = PresenceRoster::default();
        assert_eq!(r.join("42", r#"{"name":"Ada"}"#, 100), Join::NewMember);
        assert_eq!(r.join("7", "null", 100), Join::NewMember);
        assert_eq!(
            r.join("42", r#"{"name":"Other"}"#, 100),
            Join::AnotherConnection
        );
        assert_eq!(
            r.snapshot_json(),
            r#"{"presence":{"ids":["42","7"],"hash":{"42":{"name":"Ada"},"7":null},"count":2}}"#
        );
        assert!(!r.leave("42"));
        assert!(r.leave("42"));
        assert!(!r.leave("42"), "unknown users are ignored");
        assert_eq!(r.user_count(), 1);
    }

    #[test]
    fn full_roster_refuses_new_users_but_not_extra_connections() {
        let mut r = PresenceRoster::default();
        assert_eq!(r.join("a", "null", 1), Join::NewMember);
        assert_eq!(r.join("b", "null", 1), Join::Full);
        assert_eq!(r.join("a", "null", 1), Join::AnotherConnection);
    }
}
