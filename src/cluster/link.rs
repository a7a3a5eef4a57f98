//! How the bridge threads reach Redis: a standalone server at the URL, or, when the URL points at a node of a Redis
//! Cluster, the primary that owns relay's slot. Every key and Redis channel relay uses starts with the prefix as a
//! hash tag (`{relay}:…`), so they all live in one slot: the Lua scripts keep working (their keys share a slot)
//! and pub/sub goes through that slot's shard with SPUBLISH / SSUBSCRIBE (sharded pub/sub).

use std::time::Duration;

use redis::{ConnectionAddr, ProtocolVersion, PushKind, Value};

/// Reconnect backoff: from the first to the most.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The wait before the next connection attempt after `failures` in a row.
pub fn backoff(failures: u32) -> Duration {
    RECONNECT_MIN
        .saturating_mul(1 << failures.min(6))
        .min(RECONNECT_MAX)
}

/// Connect, read and write deadline of a connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection, and whether it is to a Redis Cluster (then pub/sub is sharded).
pub struct Link {
    pub con: redis::Connection,
    pub sharded: bool,
}

/// The hash tag of relay's keys with this prefix.
pub fn tagged(prefix: &str) -> String {
    format!("{{{prefix}}}")
}

/// Connects to the Redis at the URL or, in a Redis Cluster, to the primary owning the slot of `tag`. `resp3`: for
/// a [`Subscriber`] (its confirmations and messages are then pushes, which the `redis` crate never mistakes for
/// the late answer of a read that timed out).
pub fn connect(client: &redis::Client, tag: &str, resp3: bool) -> redis::RedisResult<Link> {
    let resp3_client;
    let client = if resp3 {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        resp3_client = redis::Client::open(info.set_redis_settings(settings))?;
        &resp3_client
    } else {
        client
    };
    let mut con = open(client)?;
    let slot: i64 = match redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(tag)
        .query(&mut con)
    {
        Ok(slot) => slot,
        // "cluster support disabled" (or a server that refuses CLUSTER): a standalone Redis.
        Err(e) if !is_connection_error(&e) => {
            return Ok(Link {
                con,
                sharded: false,
            });
        }
        Err(e) => return Err(e),
    };
    let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con)?;
    let seed = client.get_connection_info().addr().clone();
    let (host, port) = owner(&slots, slot).ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::Io,
            "no Redis Cluster node owns relay's slot",
        ))
    })?;
    let target = match &seed {
        ConnectionAddr::Tcp(seed_host, _) => {
            ConnectionAddr::Tcp(host.unwrap_or_else(|| seed_host.clone()), port)
        }
        ConnectionAddr::TcpTls {
            host: seed_host,
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.unwrap_or_else(|| seed_host.clone()),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => seed.clone(),
    };
    if target == seed {
        return Ok(Link { con, sharded: true });
    }
    let info = client.get_connection_info().clone().set_addr(target);
    Ok(Link {
        con: open(&redis::Client::open(info)?)?,
        sharded: true,
    })
}

fn open(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(IO_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// A failure of the connection (as opposed to an error Redis answered). A MOVED answer counts: the slot went to
/// another primary, so the link must be made again.
pub fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.redirect_node().is_some()
}

/// The primary serving `slot` in a `CLUSTER SLOTS` answer: its host (`None`: the one we asked) and port.
fn owner(slots: &Value, slot: i64) -> Option<(Option<String>, u16)> {
    let Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(r) = range else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return None;
        };
        if slot < *start || slot > *end {
            return None;
        }
        let host = match primary.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
        .filter(|h| !h.is_empty() && h != "?");
        let Value::Int(port) = primary.get(1)? else {
            return None;
        };
        Some((host, u16::try_from(*port).ok()?))
    })
}

/// A subscriber connection (RESP3, see [`connect`]): SUBSCRIBE on a standalone Redis, SSUBSCRIBE on a Redis
/// Cluster.
pub struct Subscriber {
    con: redis::Connection,
    sharded: bool,
    /// Messages that arrived while a (un)subscribe waited for its confirmations.
    early: std::collections::VecDeque<Vec<u8>>,
}

enum Push {
    Message(Vec<u8>),
    /// A (un)subscribe confirmation: `true` for an unsubscribe.
    Ack {
        unsubscribe: bool,
    },
}

impl Subscriber {
    pub fn new(link: Link) -> Subscriber {
        Subscriber {
            con: link.con,
            sharded: link.sharded,
            early: std::collections::VecDeque::new(),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> redis::RedisResult<()> {
        self.con.set_read_timeout(t)
    }

    pub fn subscribe<S: AsRef<str>>(&mut self, channels: &[S]) -> redis::RedisResult<()> {
        let cmd = if self.sharded {
            "SSUBSCRIBE"
        } else {
            "SUBSCRIBE"
        };
        self.call(cmd, channels, false)
    }

    pub fn unsubscribe<S: AsRef<str>>(&mut self, channels: &[S]) -> redis::RedisResult<()> {
        let cmd = if self.sharded {
            "SUNSUBSCRIBE"
        } else {
            "UNSUBSCRIBE"
        };
        self.call(cmd, channels, true)
    }

    /// Sends the command and waits for one confirmation per channel.
    fn call<S: AsRef<str>>(
        &mut self,
        cmd: &str,
        channels: &[S],
        unsubscribe: bool,
    ) -> redis::RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        let mut c = redis::cmd(cmd);
        for ch in channels {
            c.arg(ch.as_ref());
        }
        self.con.send_packed_command(&c.get_packed_command())?;
        let mut left = channels.len();
        while left > 0 {
            match self.read()? {
                Push::Message(m) => self.early.push_back(m),
                Push::Ack { unsubscribe: u } if u == unsubscribe => left -= 1,
                Push::Ack { .. } => return Err(moved()),
            }
        }
        Ok(())
    }

    /// The next message's payload (a read timeout is an error with `is_timeout()`).
    pub fn next_message(&mut self) -> redis::RedisResult<Vec<u8>> {
        if let Some(m) = self.early.pop_front() {
            return Ok(m);
        }
        match self.read()? {
            Push::Message(m) => Ok(m),
            // Unasked: in a Redis Cluster the slot moved to another primary (Redis unsubscribes its clients).
            Push::Ack { unsubscribe: true } => Err(moved()),
            Push::Ack { unsubscribe: false } => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "unexpected subscribe confirmation",
            ))),
        }
    }

    fn read(&mut self) -> redis::RedisResult<Push> {
        let Value::Push { kind, mut data } = self.con.recv_response()? else {
            return Err(protocol_error());
        };
        match kind {
            PushKind::Message | PushKind::SMessage => match data.pop() {
                Some(Value::BulkString(payload)) if data.len() == 1 => Ok(Push::Message(payload)),
                _ => Err(protocol_error()),
            },
            PushKind::Subscribe | PushKind::SSubscribe => Ok(Push::Ack { unsubscribe: false }),
            PushKind::Unsubscribe | PushKind::SUnsubscribe => Ok(Push::Ack { unsubscribe: true }),
            _ => Err(protocol_error()),
        }
    }
}

fn moved() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "Redis Cluster moved relay's slot; connecting again",
    ))
}

fn protocol_error() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "unexpected pub/sub message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_owner_of_a_slot_is_found_in_cluster_slots() {
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("10.0.0.1"), Value::Int(7000), bulk("id1")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(7001), bulk("id2")]),
                Value::Array(vec![bulk("10.0.0.9"), Value::Int(7009), bulk("replica")]),
            ]),
        ]);
        assert_eq!(owner(&slots, 0), Some((Some("10.0.0.1".into()), 7000)));
        assert_eq!(
            owner(&slots, 9000),
            Some((None, 7001)),
            "empty host: the seed's"
        );
        assert_eq!(owner(&slots, 16384), None);
        assert_eq!(owner(&Value::Nil, 1), None);
        assert_eq!(tagged("relay"), "{relay}");
    }
}
