//! What nodes send each other through Redis, and where (docs/protocol.md#cluster).
//!
//! A publication goes to the Redis channel of its Pusher channel, `{prefix}:{app_id}:c:{channel}`, which only the
//! nodes with a subscriber of that channel listen to (interest routing: one copy per interested node). The
//! payload is a small binary record: the origin node (a node ignores its own), the app id (app indices differ
//! between nodes), the channel, the event name and data as the JSON string tokens spliced into frames, the
//! presence sender and the socket left out. Decoding checks every length: a bad record is dropped, never a panic.

use crate::socket_id::SocketId;

/// The record's first byte: its kind and version.
const PUBLISH_V1: u8 = b'P';
const MEMBER_V1: u8 = b'M';
const TERMINATE_V1: u8 = b'T';
const ONLINE_V1: u8 = b'U';
const COUNT_V1: u8 = b'C';
/// Built by the Lua scripts in `commands.rs` (text headers, so Lua needs no binary packing).
const NUMBERED_V1: u8 = b'H';
const WINDOW_V1: u8 = b'W';

/// What a node hears on a channel's Redis channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Publish(RemotePublish),
    /// A publication of an app with history, numbered by Redis (every interested node delivers it, its origin
    /// too, so every node sees the same ids in the same order).
    Numbered(NumberedPublish),
    /// A channel's history as Redis keeps it, asked for by `origin` to recover a client; it travels the
    /// channel's Redis channel so it arrives in order with the live events.
    Window(HistoryWindow),
    Member(MemberRecord),
    /// `terminate_connections` of a user, for every node (on the control channel).
    Terminate {
        origin: String,
        app_id: String,
        user_id: String,
    },
    /// A channel's subscription count in the whole cluster (on the channel's Redis channel).
    Count {
        origin: String,
        app_id: String,
        channel: String,
        total: u64,
    },
    /// A signed-in user's first connection in the cluster opened, or their last closed (control channel; an empty
    /// origin is a node's cleanup of a dead node).
    Online {
        origin: String,
        app_id: String,
        user_id: String,
        online: bool,
    },
}

impl Record {
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        match *bytes.first()? {
            PUBLISH_V1 => RemotePublish::decode(bytes).map(Record::Publish),
            NUMBERED_V1 => NumberedPublish::decode(bytes).map(Record::Numbered),
            WINDOW_V1 => HistoryWindow::decode(bytes).map(Record::Window),
            MEMBER_V1 => MemberRecord::decode(bytes).map(Record::Member),
            COUNT_V1 => {
                let mut r = Reader { b: bytes, i: 1 };
                let total = r.u64()?;
                let (origin, app_id, channel) = (r.text()?, r.text()?, r.text()?);
                (r.i == bytes.len()).then_some(Record::Count {
                    origin,
                    app_id,
                    channel,
                    total,
                })
            }
            ONLINE_V1 => {
                let mut r = Reader { b: bytes, i: 1 };
                let online = match r.byte()? {
                    0 => false,
                    1 => true,
                    _ => return None,
                };
                let (origin, app_id, user_id) = (r.text()?, r.text()?, r.text()?);
                (r.i == bytes.len()).then_some(Record::Online {
                    origin,
                    app_id,
                    user_id,
                    online,
                })
            }
            TERMINATE_V1 => {
                let mut r = Reader { b: bytes, i: 1 };
                let (origin, app_id, user_id) = (r.text()?, r.text()?, r.text()?);
                (r.i == bytes.len()).then_some(Record::Terminate {
                    origin,
                    app_id,
                    user_id,
                })
            }
            _ => None,
        }
    }

    pub fn origin(&self) -> &str {
        match self {
            Record::Publish(p) => &p.origin,
            Record::Numbered(n) => &n.publish.origin,
            Record::Window(w) => &w.origin,
            Record::Member(m) => &m.origin,
            Record::Terminate { origin, .. }
            | Record::Online { origin, .. }
            | Record::Count { origin, .. } => origin,
        }
    }

    /// The bytes of a [`Record::Count`].
    pub fn count(origin: &str, app_id: &str, channel: &str, total: u64) -> Vec<u8> {
        let mut out = vec![COUNT_V1];
        out.extend_from_slice(&total.to_le_bytes());
        put(&mut out, origin.as_bytes());
        put(&mut out, app_id.as_bytes());
        put(&mut out, channel.as_bytes());
        out
    }

    /// The bytes of a [`Record::Online`].
    pub fn online(origin: &str, app_id: &str, user_id: &str, online: bool) -> Vec<u8> {
        let mut out = vec![ONLINE_V1, u8::from(online)];
        put(&mut out, origin.as_bytes());
        put(&mut out, app_id.as_bytes());
        put(&mut out, user_id.as_bytes());
        out
    }

    /// The bytes of a [`Record::Terminate`].
    pub fn terminate(origin: &str, app_id: &str, user_id: &str) -> Vec<u8> {
        let mut out = vec![TERMINATE_V1];
        put(&mut out, origin.as_bytes());
        put(&mut out, app_id.as_bytes());
        put(&mut out, user_id.as_bytes());
        out
    }
}

/// The Redis channel every node listens to, for what concerns them all (terminate).
pub fn control_channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

/// A user's first connection in the cluster joined a presence channel (`user_info` set), or their last one
/// left. Sent by the node where it happened; an empty origin is a node's cleanup of a dead node, which every
/// node (the cleaner too) passes on to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub origin: String,
    pub app_id: String,
    pub channel: String,
    pub user_id: String,
    /// `Some(raw JSON)` for an added member, `None` for a removed one.
    pub user_info: Option<String>,
}

impl MemberRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.channel.len() + self.user_id.len());
        out.push(MEMBER_V1);
        put(&mut out, self.origin.as_bytes());
        put(&mut out, self.app_id.as_bytes());
        put(&mut out, self.channel.as_bytes());
        put(&mut out, self.user_id.as_bytes());
        match &self.user_info {
            Some(info) => {
                out.push(1);
                put(&mut out, info.as_bytes());
            }
            None => out.push(0),
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<MemberRecord> {
        let mut r = Reader { b: bytes, i: 0 };
        if r.byte()? != MEMBER_V1 {
            return None;
        }
        let origin = r.text()?;
        let app_id = r.text()?;
        let channel = r.text()?;
        let user_id = r.text()?;
        let user_info = match r.byte()? {
            0 => None,
            1 => Some(r.text()?),
            _ => return None,
        };
        (r.i == bytes.len()).then_some(MemberRecord {
            origin,
            app_id,
            channel,
            user_id,
            user_info,
        })
    }
}

/// A REST or client event published on one node, for the subscribers on the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePublish {
    pub origin: String,
    pub app_id: String,
    pub channel: String,
    pub name_token: Vec<u8>,
    pub data_token: Vec<u8>,
    pub user_id: Option<String>,
    pub except: Option<SocketId>,
    /// A client event (else REST): the receiving node runs the same stages as for its own.
    pub client: bool,
}

/// The Redis channel of a Pusher channel. Pusher channel names hold no `:`, so names never collide.
pub fn redis_channel(prefix: &str, app_id: &str, channel: &str) -> String {
    format!("{prefix}:{app_id}:c:{channel}")
}

impl RemotePublish {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.origin.len()
                + self.app_id.len()
                + self.channel.len()
                + self.name_token.len()
                + self.data_token.len(),
        );
        out.push(PUBLISH_V1);
        out.push(u8::from(self.client));
        put(&mut out, self.origin.as_bytes());
        put(&mut out, self.app_id.as_bytes());
        put(&mut out, self.channel.as_bytes());
        put(&mut out, &self.name_token);
        put(&mut out, &self.data_token);
        match &self.user_id {
            Some(u) => {
                out.push(1);
                put(&mut out, u.as_bytes());
            }
            None => out.push(0),
        }
        match self.except {
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.random.to_le_bytes());
                out.extend_from_slice(&s.unique.to_le_bytes());
            }
            None => out.push(0),
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<RemotePublish> {
        let mut r = Reader { b: bytes, i: 0 };
        if r.byte()? != PUBLISH_V1 {
            return None;
        }
        let client = match r.byte()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let origin = r.text()?;
        let app_id = r.text()?;
        let channel = r.text()?;
        let name_token = r.field()?.to_vec();
        let data_token = r.field()?.to_vec();
        let user_id = match r.byte()? {
            0 => None,
            1 => Some(r.text()?),
            _ => return None,
        };
        let except = match r.byte()? {
            0 => None,
            1 => Some(SocketId {
                random: r.u64()?,
                unique: r.u64()?,
            }),
            _ => return None,
        };
        (r.i == bytes.len()).then_some(RemotePublish {
            origin,
            app_id,
            channel,
            name_token,
            data_token,
            user_id,
            except,
            client,
        })
    }
}

/// A publication with the id Redis gave it: `H{epoch}:{seq}:{published_at_ms}\n` then the [`RemotePublish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedPublish {
    pub epoch: u64,
    pub seq: u64,
    pub published_at_ms: u64,
    pub publish: RemotePublish,
}

impl NumberedPublish {
    /// What the numbering script writes (for tests; Redis builds the real ones).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            format!("H{}:{}:{}\n", self.epoch, self.seq, self.published_at_ms).into_bytes();
        out.extend_from_slice(&self.publish.encode());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<NumberedPublish> {
        let rest = bytes.strip_prefix(&[NUMBERED_V1])?;
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let mut head = std::str::from_utf8(&rest[..nl]).ok()?.split(':');
        let mut num = || -> Option<u64> {
            let t = head.next()?;
            (!t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())?
        };
        let (epoch, seq, published_at_ms) = (num()?, num()?, num()?);
        if head.next().is_some() {
            return None;
        }
        Some(NumberedPublish {
            epoch,
            seq,
            published_at_ms,
            publish: RemotePublish::decode(&rest[nl + 1..])?,
        })
    }
}

/// `W` then netstrings (`{len}:{bytes}`): origin, app id, channel, token, epoch (empty: no window), last seq, the
/// number of events, then each kept event as a [`NumberedPublish`], oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryWindow {
    pub origin: String,
    pub app_id: String,
    pub channel: String,
    /// Which request of the origin this answers.
    pub token: u64,
    /// `None`: Redis keeps no window for the channel.
    pub epoch: Option<u64>,
    pub last_seq: u64,
    pub events: Vec<NumberedPublish>,
}

impl HistoryWindow {
    /// What the window script writes (for tests; Redis builds the real ones).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WINDOW_V1];
        let epoch = self.epoch.map(|e| e.to_string()).unwrap_or_default();
        for field in [
            self.origin.as_bytes(),
            self.app_id.as_bytes(),
            self.channel.as_bytes(),
            self.token.to_string().as_bytes(),
            epoch.as_bytes(),
            self.last_seq.to_string().as_bytes(),
            self.events.len().to_string().as_bytes(),
        ] {
            netstring(&mut out, field);
        }
        for e in &self.events {
            netstring(&mut out, &e.encode());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<HistoryWindow> {
        let mut rest = bytes.strip_prefix(&[WINDOW_V1])?;
        let mut next = || -> Option<&[u8]> {
            let colon = rest.iter().take(11).position(|&b| b == b':')?;
            let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
            let field = rest.get(colon + 1..colon.checked_add(1)?.checked_add(len)?)?;
            rest = &rest[colon + 1 + len..];
            Some(field)
        };
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let number = |b: &[u8]| -> Option<u64> {
            (!b.is_empty() && b.len() <= 20 && b.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(b).ok()?.parse().ok())?
        };
        let origin = text(next()?)?;
        let app_id = text(next()?)?;
        let channel = text(next()?)?;
        let token = number(next()?)?;
        let epoch = match next()? {
            [] => None,
            e => Some(number(e)?),
        };
        let last_seq = number(next()?)?;
        let count = number(next()?)?;
        let mut events = Vec::new();
        while let Some(field) = next() {
            events.push(NumberedPublish::decode(field)?);
        }
        (rest.is_empty() && events.len() as u64 == count).then_some(HistoryWindow {
            origin,
            app_id,
            channel,
            token,
            epoch,
            last_seq,
            events,
        })
    }
}

fn netstring(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(field.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(field);
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.field()?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_publishes_and_windows_round_trip_and_damage_is_refused() {
        let publish = RemotePublish {
            origin: "node-a".into(),
            app_id: "app".into(),
            channel: "room".into(),
            name_token: b"\"e\"".to_vec(),
            data_token: b"\"line\\nnext\"".to_vec(),
            user_id: None,
            except: None,
            client: false,
        };
        let n = NumberedPublish {
            epoch: 281_474_976_710_655,
            seq: 7,
            published_at_ms: 1_700_000_000_000,
            publish,
        };
        let bytes = n.encode();
        assert!(bytes.starts_with(b"H281474976710655:7:1700000000000\n"));
        assert_eq!(Record::decode(&bytes), Some(Record::Numbered(n.clone())));
        for cut in 0..bytes.len() {
            assert_eq!(NumberedPublish::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        for bad in [&b"H1:2\n"[..], b"H1:2:3:4\nP", b"H-1:2:3\nP", b"H1:x:3\nP"] {
            assert_eq!(NumberedPublish::decode(bad), None);
        }
        let w = HistoryWindow {
            origin: "node-b".into(),
            app_id: "app".into(),
            channel: "room".into(),
            token: 99,
            epoch: Some(281_474_976_710_655),
            last_seq: 8,
            events: vec![n.clone(), NumberedPublish { seq: 8, ..n }],
        };
        let bytes = w.encode();
        assert_eq!(Record::decode(&bytes), Some(Record::Window(w.clone())));
        for cut in 0..bytes.len() {
            assert_eq!(HistoryWindow::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let empty = HistoryWindow {
            epoch: None,
            last_seq: 0,
            events: Vec::new(),
            ..w
        };
        assert_eq!(HistoryWindow::decode(&empty.encode()), Some(empty));
        assert_eq!(
            HistoryWindow::decode(b"W99999999999:x"),
            None,
            "a length past the end"
        );
    }

    #[test]
    fn a_publish_round_trips_and_damage_is_refused() {
        let p = RemotePublish {
            origin: "node-a".into(),
            app_id: "app-id".into(),
            channel: "presence-room".into(),
            name_token: b"\"client-x\"".to_vec(),
            data_token: b"\"{\\\"a\\\":1}\"".to_vec(),
            user_id: Some("42".into()),
            except: Some(SocketId {
                random: 123,
                unique: 456,
            }),
            client: true,
        };
        let bytes = p.encode();
        assert_eq!(RemotePublish::decode(&bytes), Some(p.clone()));
        let plain = RemotePublish {
            user_id: None,
            except: None,
            client: false,
            ..p
        };
        assert_eq!(RemotePublish::decode(&plain.encode()), Some(plain.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(RemotePublish::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = plain.encode();
        longer.push(0);
        assert_eq!(RemotePublish::decode(&longer), None, "trailing bytes");
        let mut huge = plain.encode();
        huge[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(RemotePublish::decode(&huge), None, "a length past the end");
        assert_eq!(
            redis_channel("relay", "app-id", "my-channel"),
            "relay:app-id:c:my-channel"
        );
        let m = MemberRecord {
            origin: String::new(),
            app_id: "a".into(),
            channel: "presence-r".into(),
            user_id: "u\n1".into(),
            user_info: Some("{\"n\":1}".into()),
        };
        assert_eq!(Record::decode(&m.encode()), Some(Record::Member(m.clone())));
        let gone = MemberRecord {
            user_info: None,
            ..m
        };
        let bytes = gone.encode();
        assert_eq!(Record::decode(&bytes), Some(Record::Member(gone)));
        for cut in 0..bytes.len() {
            assert_eq!(Record::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Record::decode(b"X"), None);
        let t = Record::terminate("n", "a", "u");
        assert_eq!(
            Record::decode(&t),
            Some(Record::Terminate {
                origin: "n".into(),
                app_id: "a".into(),
                user_id: "u".into()
            })
        );
        assert_eq!(Record::decode(&t[..t.len() - 1]), None);
        let c = Record::count("n", "a", "ch", 12);
        assert_eq!(
            Record::decode(&c),
            Some(Record::Count {
                origin: "n".into(),
                app_id: "a".into(),
                channel: "ch".into(),
                total: 12
            })
        );
        let o = Record::online("", "a", "u", false);
        assert_eq!(
            Record::decode(&o),
            Some(Record::Online {
                origin: String::new(),
                app_id: "a".into(),
                user_id: "u".into(),
                online: false
            })
        );
    }
}
