//! The event log (`GET /apps/{id}/events/log`, docs/protocol.md#event-log): each app's most recent server
//! events: publishes, subscribes and unsubscribes, connections opened and closed, rate-limit refusals. Each core
//! keeps a small ring per app (no lock, no cross-core traffic when writing); a read asks every core for its newest
//! entries and merges them, newest first.

use crate::clock::unix_us;
use std::collections::VecDeque;

use bytes::Bytes;

use crate::app::AppIdx;
use crate::channels::publication::{Publication, Source};
use crate::json::push_json_string;
use crate::runtime::core::Core;
use crate::socket_id::SocketId;
use crate::webhooks::{DeliveryReport, Outcome, Verdict};

#[derive(Debug, Clone)]
pub enum LogEvent {
    Publish {
        channel: Box<str>,
        /// The event name as its JSON string token.
        name_token: Bytes,
        /// Bytes of the event's data token.
        size: usize,
        source: Source,
    },
    Subscribe {
        channel: Box<str>,
        socket: SocketId,
    },
    Unsubscribe {
        channel: Box<str>,
        socket: SocketId,
    },
    ConnectionOpened {
        socket: SocketId,
    },
    ConnectionClosed {
        socket: SocketId,
    },
    /// A REST request refused by the app's rate limit, with the events it held.
    RateLimited {
        events: u32,
    },
    /// One attempt to deliver a batch of webhook events, and what became of the batch.
    Webhook(DeliveryReport),
}

#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Microseconds: the merge orders the cores' entries by it (two cores often log within one millisecond).
    pub time_us: u64,
    pub event: LogEvent,
}

impl LogEntry {
    /// `{"time_ms":..,"type":"publish",...}`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!(r#"{{"time_ms":{},"type":"#, self.time_us / 1000).as_bytes());
        match &self.event {
            LogEvent::Publish {
                channel,
                name_token,
                size,
                source,
            } => {
                out.extend_from_slice(br#""publish","channel":"#);
                push_json_string(out, channel);
                out.extend_from_slice(br#","event":"#);
                out.extend_from_slice(name_token);
                let source = match source {
                    Source::Rest => "rest",
                    Source::Client => "client",
                    Source::Server => "server",
                };
                out.extend_from_slice(format!(r#","size":{size},"source":"{source}""#).as_bytes());
            }
            LogEvent::Subscribe { channel, socket } | LogEvent::Unsubscribe { channel, socket } => {
                let kind = match &self.event {
                    LogEvent::Subscribe { .. } => "subscribe",
                    _ => "unsubscribe",
                };
                out.extend_from_slice(format!(r#""{kind}","channel":"#).as_bytes());
                push_json_string(out, channel);
                out.extend_from_slice(format!(r#","socket_id":"{socket}""#).as_bytes());
            }
            LogEvent::ConnectionOpened { socket } => {
                out.extend_from_slice(
                    format!(r#""connection_opened","socket_id":"{socket}""#).as_bytes(),
                );
            }
            LogEvent::ConnectionClosed { socket } => {
                out.extend_from_slice(
                    format!(r#""connection_closed","socket_id":"{socket}""#).as_bytes(),
                );
            }
            LogEvent::RateLimited { events } => {
                out.extend_from_slice(format!(r#""rate_limited","events":{events}"#).as_bytes());
            }
            LogEvent::Webhook(r) => {
                out.extend_from_slice(br#""webhook","url":"#);
                push_json_string(out, &r.url);
                out.extend_from_slice(
                    format!(r#","events":{},"attempt":{},"#, r.events, r.attempt).as_bytes(),
                );
                match &r.outcome {
                    Outcome::Status(s) => {
                        out.extend_from_slice(format!(r#""status":{s}"#).as_bytes())
                    }
                    Outcome::Failed(e) | Outcome::Broken(e) => {
                        out.extend_from_slice(br#""error":"#);
                        push_json_string(out, e);
                    }
                }
                let result = match r.verdict {
                    Verdict::Delivered => "delivered",
                    Verdict::Retrying(_) => "retrying",
                    Verdict::Dropped => "dropped",
                };
                out.extend_from_slice(format!(r#","result":"{result}""#).as_bytes());
            }
        }
        out.push(b'}');
    }
}

/// One core's rings, one per app.
pub struct EventLog {
    apps: Vec<VecDeque<LogEntry>>,
    max: usize,
}

impl EventLog {
    pub fn new(apps: usize, max: usize) -> Self {
        EventLog {
            apps: (0..apps).map(|_| VecDeque::new()).collect(),
            max,
        }
    }

    /// Room for apps added by a reload.
    pub fn grow(&mut self, apps: usize) {
        while self.apps.len() < apps {
            self.apps.push(VecDeque::new());
        }
    }

    pub fn push(&mut self, app: AppIdx, time_us: u64, event: LogEvent) {
        if self.max == 0 {
            return;
        }
        // An app a reload added after this core's rings were sized.
        self.grow(app as usize + 1);
        let ring = &mut self.apps[app as usize];
        if ring.len() == self.max {
            ring.pop_front();
        }
        ring.push_back(LogEntry { time_us, event });
    }

    /// The newest `limit` entries of `app`, newest first.
    pub fn newest(&self, app: AppIdx, limit: usize) -> Vec<LogEntry> {
        let Some(ring) = self.apps.get(app as usize) else {
            return Vec::new();
        };
        ring.iter().rev().take(limit).cloned().collect()
    }
}

/// Merges the cores' answers: the newest `limit` of them all, newest first.
pub fn merge(parts: Vec<Vec<LogEntry>>, limit: usize) -> Vec<LogEntry> {
    let mut all: Vec<LogEntry> = parts.into_iter().flatten().collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.time_us));
    all.truncate(limit);
    all
}

impl Core {
    /// Notes `event` in the app's log on this core.
    pub fn log_event(&self, app: AppIdx, event: LogEvent) {
        self.event_log.borrow_mut().push(app, unix_us(), event);
    }

    /// Publish stage: REST and client events are logged where they enter, once per channel.
    pub fn log_publication(&self, p: &Publication) {
        if p.source == Source::Server || self.shared.config.limits.event_log_max == 0 {
            return;
        }
        for cf in &p.frames {
            self.log_event(
                p.app,
                LogEvent::Publish {
                    channel: cf.channel.clone(),
                    name_token: p.name_token.clone(),
                    size: p.data_token.len(),
                    source: p.source,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(n: u64) -> SocketId {
        SocketId {
            random: 1,
            unique: n,
        }
    }

    #[test]
    fn rings_keep_the_newest_and_merge_newest_first() {
        let mut a = EventLog::new(1, 2);
        let mut b = EventLog::new(1, 2);
        a.push(0, 1000, LogEvent::ConnectionOpened { socket: sock(1) });
        a.push(0, 3000, LogEvent::ConnectionOpened { socket: sock(2) });
        a.push(0, 5000, LogEvent::ConnectionClosed { socket: sock(1) });
        b.push(0, 4000, LogEvent::RateLimited { events: 10 });
        let merged = merge(vec![a.newest(0, 10), b.newest(0, 10)], 3);
        assert_eq!(
            merged.iter().map(|e| e.time_us).collect::<Vec<_>>(),
            [5000, 4000, 3000]
        );
        let mut out = Vec::new();
        merged[1].write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"time_ms":4,"type":"rate_limited","events":10}"#
        );
        // Two cores within one millisecond: the later microsecond comes first.
        let mut c = EventLog::new(1, 2);
        let mut d = EventLog::new(1, 2);
        c.push(0, 7900, LogEvent::RateLimited { events: 2 });
        d.push(0, 7100, LogEvent::RateLimited { events: 1 });
        let merged = merge(vec![d.newest(0, 10), c.newest(0, 10)], 2);
        assert_eq!(
            merged.iter().map(|e| e.time_us).collect::<Vec<_>>(),
            [7900, 7100]
        );
        let off = {
            let mut l = EventLog::new(1, 0);
            l.push(0, 1, LogEvent::RateLimited { events: 1 });
            l.newest(0, 10)
        };
        assert!(off.is_empty());
    }
}
