//! A publication: one event for one or more channels of an app, encoded once per channel into the WebSocket frame
//! every subscriber on every core gets. Every kind of event is built by [`Publication::new`]: REST publishes and
//! batches, client events, and the events the server makes (member added and removed, subscription counts).
//! Encoding is a step of its own ([`Publication::encode`]) because an app with history encodes on the channel's
//! home core, once the event has its id. Compressing is one more ([`Publication::deflate`]): the core that fans the
//! publication out compresses each channel's frame once, and every core hands that same frame to its subscribers
//! that negotiated permessage-deflate.

use std::time::Instant;

use bytes::Bytes;

use crate::app::AppIdx;
use crate::channels::history::EventId;
use crate::protocol::outbound;
use crate::socket_id::SocketId;
use crate::ws::{deflate, frame};

/// Where a publication came from: decides which pipeline stages apply (only REST events are cached,
/// docs/protocol.md#cache-channels; server events are not kept in history) and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST events`, `batch_events`, the deprecated publish; also `#server-to-user-{id}` sends.
    Rest,
    /// A `client-*` event from a connection (never echoed to it).
    Client,
    /// An event the server makes: `pusher_internal:member_added`, `member_removed`, `subscription_count`.
    Server,
}

/// One channel's copy of the event: its frame, empty until encoded, and the same frame compressed (RSV1 set),
/// empty unless [`Publication::deflate`] made one.
pub struct ChannelFrame {
    pub channel: Box<str>,
    pub frame: Bytes,
    pub deflated: Bytes,
}

/// An event of an app with history as Redis numbered it (docs/protocol.md#cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    pub id: EventId,
    /// Unix ms of the publish.
    pub published_at_ms: u64,
    /// Published on this node: it went out only through Redis, and comes back to be delivered here too.
    pub own: bool,
}

pub struct Publication {
    pub app: AppIdx,
    pub source: Source,
    /// The event name and data as JSON string tokens, as spliced into every frame.
    pub name_token: Bytes,
    pub data_token: Bytes,
    /// The sender of a client event on a presence channel.
    pub user_id: Option<Box<str>>,
    /// Not delivered to this socket (the REST `socket_id` parameter; the sender of a client event).
    pub except: Option<SocketId>,
    pub frames: Vec<ChannelFrame>,
    /// Published on another node of the cluster and received through Redis (not sent back there).
    pub remote: bool,
    /// In a cluster, the id Redis gave an event of an app with history.
    pub numbered: Option<Numbered>,
    /// When the event reached this node (`relay_publish_fanout_seconds` runs from here).
    pub arrived: Instant,
    encoded: bool,
}

impl Publication {
    /// `name_token` and `data_token` are complete JSON string tokens, later spliced into each frame byte for byte.
    pub fn new<C: AsRef<str>>(
        app: AppIdx,
        source: Source,
        channels: &[C],
        name_token: &[u8],
        data_token: &[u8],
        user_id: Option<&str>,
        except: Option<SocketId>,
    ) -> Self {
        Publication {
            app,
            source,
            name_token: Bytes::copy_from_slice(name_token),
            data_token: Bytes::copy_from_slice(data_token),
            user_id: user_id.map(Box::from),
            except,
            frames: channels
                .iter()
                .map(|c| ChannelFrame {
                    channel: Box::from(c.as_ref()),
                    frame: Bytes::new(),
                    deflated: Bytes::new(),
                })
                .collect(),
            remote: false,
            numbered: None,
            arrived: Instant::now(),
            encoded: false,
        }
    }

    /// A server event on `channel` whose data is the JSON text `data_json` (sent as a string, like every
    /// server event's data, docs/protocol.md#framing), encoded.
    pub fn server_event(app: AppIdx, channel: &str, event: &str, data_json: &str) -> Self {
        let mut p = Self::new(
            app,
            Source::Server,
            &[channel],
            &outbound::string_token(event),
            &outbound::string_token(data_json),
            None,
            None,
        );
        p.encode(None);
        p
    }

    /// Encodes the event once per channel; `id` is the event's history id, for apps that keep history.
    pub fn encode(&mut self, id: Option<&str>) {
        for cf in &mut self.frames {
            cf.frame = outbound::channel_event(
                &self.name_token,
                &cf.channel,
                &self.data_token,
                self.user_id.as_deref(),
                id,
            );
        }
        self.encoded = true;
    }

    pub fn is_encoded(&self) -> bool {
        self.encoded
    }

    /// Compresses each encoded frame whose payload is at least `min_bytes` long, once, with this core's
    /// compressor (permessage-deflate, no context takeover: the result is valid for every connection). A frame
    /// that does not come out smaller stays plain only.
    pub fn deflate(&mut self, min_bytes: usize) {
        debug_assert!(self.encoded, "deflate before encode");
        for cf in &mut self.frames {
            let payload = &cf.frame[frame::server_header_len(&cf.frame)..];
            if cf.deflated.is_empty()
                && payload.len() >= min_bytes
                && let Some(f) = deflate::deflate_text_frame(payload)
            {
                cf.deflated = f;
            }
        }
    }

    /// One publication per channel (history keeps and numbers each channel's events on that channel's home).
    pub fn split_per_channel(self) -> Vec<Publication> {
        let Publication {
            app,
            source,
            name_token,
            data_token,
            user_id,
            except,
            frames,
            remote,
            numbered,
            arrived,
            encoded,
            ..
        } = self;
        frames
            .into_iter()
            .map(|cf| Publication {
                app,
                source,
                name_token: name_token.clone(),
                data_token: data_token.clone(),
                user_id: user_id.clone(),
                except,
                frames: vec![cf],
                remote,
                numbered,
                arrived,
                encoded,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_per_channel_with_the_tokens_spliced() {
        let mut p = Publication::new(
            0,
            Source::Rest,
            &["a", "b"],
            br#""e""#,
            br#""{\"x\":1}""#,
            None,
            None,
        );
        assert!(!p.is_encoded());
        p.encode(None);
        assert_eq!(p.frames.len(), 2);
        assert!(
            p.frames[1]
                .frame
                .ends_with(br#"{"event":"e","channel":"b","data":"{\"x\":1}"}"#)
        );
        let s = Publication::server_event(
            0,
            "presence-r",
            "pusher_internal:member_removed",
            r#"{"user_id":"7"}"#,
        );
        assert_eq!(s.source, Source::Server);
        assert!(s.frames[0].deflated.is_empty(), "compressed only on demand");
        assert!(s.frames[0].frame.ends_with(
            br#"{"event":"pusher_internal:member_removed","channel":"presence-r","data":"{\"user_id\":\"7\"}"}"#
        ));
    }

    #[test]
    fn split_publications_carry_one_channel_each_and_ids_go_into_the_frame() {
        let p = Publication::new(
            0,
            Source::Client,
            &["a", "b"],
            br#""e""#,
            br#""d""#,
            Some("7"),
            None,
        );
        let mut parts = p.split_per_channel();
        assert_eq!(parts.len(), 2);
        parts[1].encode(Some("3-1"));
        assert!(
            parts[1].frames[0]
                .frame
                .ends_with(br#"{"event":"e","channel":"b","data":"d","user_id":"7","id":"3-1"}"#)
        );
    }

    #[test]
    fn deflate_compresses_frames_at_or_over_the_minimum_once() {
        let data = format!(
            "\"{}\"",
            "{\\\"price\\\":101.5,\\\"symbol\\\":\\\"ABC\\\"}".repeat(40)
        );
        let mut p = Publication::new(
            0,
            Source::Rest,
            &["a"],
            br#""e""#,
            data.as_bytes(),
            None,
            None,
        );
        p.encode(None);
        let plain_len = p.frames[0].frame.len() - frame::server_header_len(&p.frames[0].frame);
        p.deflate(plain_len + 1);
        assert!(
            p.frames[0].deflated.is_empty(),
            "below the minimum: plain only"
        );
        p.deflate(plain_len);
        let f = p.frames[0].deflated.clone();
        assert!(frame::is_deflated(&f) && !frame::is_deflated(&p.frames[0].frame));
        let inflated = deflate::inflate(&f[frame::server_header_len(&f)..], 1 << 20).unwrap();
        assert_eq!(
            &inflated[..],
            &p.frames[0].frame[frame::server_header_len(&p.frames[0].frame)..]
        );
        p.deflate(0);
        assert_eq!(p.frames[0].deflated.as_ptr(), f.as_ptr(), "compressed once");
    }
}
