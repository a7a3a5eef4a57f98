//! The publish pipeline: every publication (REST, batch, client event, server event) enters [`Core::publish`],
//! passes its stages, and fans out to every core's subscribers.
//!
//! Stages, in order, each in its own module: for apps with history, the channel's home core numbers and keeps the
//! event (`history::route`; the rest of the pipeline then runs there); the encode; the compression (once for the
//! node, here, when some connection negotiated permessage-deflate); the cache store (`cache::keep_last_event`);
//! then the fan-out: other cores first (they run in parallel with our local loop), then this core; deliveries are
//! counted by outcome. Webhook emission and the cluster bridge plug in before the
//! fan-out.

use std::sync::Arc;

use crate::channels::index::{Deliveries, Frames};
use crate::channels::publication::{Publication, Source};
use crate::cluster::{Keep, RemotePublish};
use crate::metrics::{AppCounter, Counter};
use crate::protocol::channel_name::ChannelType;
use crate::runtime::core::Core;
use crate::runtime::history::Stage;
use crate::runtime::inbox::InboxFull;
use crate::runtime::message::CoreMsg;
use crate::runtime::{cache, history};
use crate::ws::deflate::Negotiated;
use std::time::Duration;

impl Core {
    /// Publishes on every core. Fails if a core's inbox is full; cores that took it deliver it.
    pub fn publish(&self, p: Publication) -> Result<(), InboxFull> {
        if !p.remote && matches!(p.source, Source::Rest | Source::Client) {
            self.catch_up();
        }
        let own_echo = p.numbered.is_some_and(|n| n.own);
        if !own_echo {
            let (counter, per_app) = match p.source {
                _ if p.remote => (Counter::PublishesRemote, None),
                Source::Rest => (Counter::PublishesRest, Some(AppCounter::PublishesRest)),
                Source::Client => (Counter::PublishesClient, Some(AppCounter::PublishesClient)),
                Source::Server => (Counter::PublishesServer, None),
            };
            self.metrics().inc(counter);
            if let Some(c) = per_app {
                self.with_app(p.app, |a| a.live.metrics.add(self.id, c, 1));
            }
            self.log_publication(&p);
        }
        match history::stage(self, &p) {
            Stage::Redis => {
                // Delivered here too once Redis has numbered it.
                self.to_other_nodes(&p, true);
                return Ok(());
            }
            Stage::Home => {
                self.to_other_nodes(&p, false);
                return history::route(self, p);
            }
            Stage::None => self.to_other_nodes(&p, false),
        }
        let mut p = p;
        if !p.is_encoded() {
            p.encode(None);
        }
        self.fan_out(p)
    }

    /// Cluster stage: REST and client events go to the other nodes listening to their channels (server events
    /// are facts of this node; events from another node are not sent back). `numbered`: Redis numbers and keeps
    /// each (an app with history) and publishes it to this node too.
    fn to_other_nodes(&self, p: &Publication, numbered: bool) {
        let Some(cluster) = self.shared.cluster.get() else {
            return;
        };
        if p.remote || p.source == Source::Server {
            return;
        }
        let config = &self.app(p.app).config;
        let published_at_ms = if numbered { crate::clock::unix_ms() } else { 0 };
        for cf in &p.frames {
            let remote = RemotePublish {
                origin: cluster.node_id.clone(),
                app_id: config.id.clone(),
                channel: cf.channel.to_string(),
                name_token: p.name_token.to_vec(),
                data_token: p.data_token.to_vec(),
                user_id: p.user_id.as_deref().map(String::from),
                except: p.except,
                client: p.source == Source::Client,
            };
            // Nodes with no subscriber now find a cache channel's last event in Redis later.
            let cached = p.source == Source::Rest && ChannelType::of(&cf.channel).cache;
            let ttl = cached.then(|| Duration::from_secs(config.cache_ttl_secs));
            let keep = numbered.then(|| Keep {
                app_id: config.id.clone(),
                channel: cf.channel.to_string(),
                max_events: config.history_max,
                ttl: Duration::from_secs(config.history_ttl_secs),
                published_at_ms,
            });
            cluster.publish(&remote, ttl, keep);
        }
    }

    /// The stages that need the encoded frame (compression, cache store), then the fan-out: other cores first
    /// (they run in parallel with our local loop), then this one.
    ///
    /// Compression happens here, once for the node, rather than lazily on each core: a publication crosses
    /// cores as one `Arc`, so the compressed frame travels with it and no core compresses it again (lazily, every
    /// core with a compressed subscriber would pay for it, and the frame would need a per-core cache). It is
    /// skipped while no connection of the process negotiated the extension.
    pub fn fan_out(&self, mut p: Publication) -> Result<(), InboxFull> {
        debug_assert!(p.is_encoded(), "fan-out of an event with no frames");
        let compression = self.shared.config.ops.compression;
        if compression.enabled && Negotiated::any() {
            p.deflate(compression.min_bytes);
        }
        cache::keep_last_event(self, &p);
        let p = Arc::new(p);
        let mut result = Ok(());
        for (i, inbox) in self.shared.inboxes.iter().enumerate() {
            if i != self.id && inbox.send(CoreMsg::Publish(p.clone())).is_err() {
                // Never delivered there (the refused message and its reference are gone): the fan-out ends
                // without that core.
                self.metrics().inc(Counter::InboxOverflows);
                result = Err(InboxFull);
            }
        }
        self.deliver(p);
        result
    }

    /// A server event: nobody to tell if an inbox is full (it is counted with the overflows).
    pub fn broadcast(&self, p: Publication) {
        let _ = self.publish(p);
    }

    /// The local fan-out of a publication, counted by outcome. Every core the publication reached holds one
    /// reference; the core that lets go of the last one times the fan-out.
    pub fn deliver(&self, p: Arc<Publication>) {
        let mut d = Deliveries::default();
        {
            let channels = self.channels.borrow();
            for cf in &p.frames {
                let frames = Frames {
                    plain: &cf.frame,
                    deflated: &cf.deflated,
                };
                d.add(channels.deliver_frames(p.app, &cf.channel, frames, p.except));
            }
        }
        let m = self.metrics();
        m.add(Counter::Deliveries, d.queued);
        m.add(Counter::DeliveriesBackpressured, d.backpressured);
        m.add(Counter::SlowReaderCutoffs, d.cut_off);
        m.add(Counter::DeliveriesDropped, d.dropped);
        let delivered = d.queued + d.backpressured;
        if delivered > 0 {
            self.with_app(p.app, |a| {
                a.live
                    .metrics
                    .add(self.id, AppCounter::Deliveries, delivered)
            });
        }
        if let Some(p) = Arc::into_inner(p) {
            m.fanout(p.arrived.elapsed());
        }
    }
}
