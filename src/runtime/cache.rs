//! Cache channels across cores (docs/protocol.md#cache-channels): the last event published over HTTP on a
//! `cache-` channel is kept by the channel's home core, replayed to each new subscriber (or `pusher:cache_miss`),
//! and shown by `GET /channels/{name}?info=cache`. Client events are never cached.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::channels::facts::CachedEvent;
use crate::channels::publication::{Publication, Source};
use crate::cluster::{ClusterAnswer, ClusterQuery, RemotePublish};
use crate::config::WebhookKind;
use crate::protocol::channel_name::ChannelType;
use crate::protocol::outbound;
use crate::protocol::session::Session;
use crate::runtime::core::Core;
use crate::runtime::facts::Facts;
use crate::runtime::inbox::Lane;
use crate::runtime::message::{CoreMsg, NoReply};
use crate::webhooks::WebhookEvent;

pub enum CacheMsg {
    /// Publisher's core -> home: keep this as the channel's last event.
    Store {
        app: AppIdx,
        channel: Box<str>,
        event: CachedEvent,
    },
    /// Anyone -> home: the channel's last event, if any.
    Get {
        app: AppIdx,
        channel: Box<str>,
        reply: oneshot::Sender<Option<CachedEvent>>,
    },
}

impl CacheMsg {
    pub fn lane(&self) -> Lane {
        Lane::Control
    }
}

/// Publish stage: a REST event on a cache channel becomes the channel's last event. It runs before the fan-out, so
/// a subscriber that sees this event live cannot then be handed the previous one as the cache.
pub fn keep_last_event(core: &Core, p: &Publication) {
    if p.source != Source::Rest {
        return;
    }
    let ttl = Duration::from_secs(core.with_app(p.app, |a| a.config.cache_ttl_secs));
    for cf in p
        .frames
        .iter()
        .filter(|cf| ChannelType::of(&cf.channel).cache)
    {
        let event = CachedEvent {
            frame: cf.frame.clone(),
            data_token: p.data_token.clone(),
            expires: Instant::now() + ttl,
        };
        core.store_cached(p.app, &cf.channel, event);
    }
}

/// After `subscription_succeeded` on a cache channel: the last event, or `pusher:cache_miss`, to this subscriber
/// only.
pub async fn replay(core: &Core, session: &Rc<Session>, channel: &str) {
    match core.cached(session.app, channel).await {
        Ok(Some(event)) => session.send(event.frame),
        Ok(None) => {
            // In a cluster the event may have been published while this node had no subscriber.
            let first_miss = match from_cluster(core, session.app, channel).await {
                Some(Ok(event)) => {
                    session.send(event.frame);
                    return;
                }
                Some(Err(first)) => first,
                None => true,
            };
            if first_miss {
                let kind = WebhookKind::CacheMiss;
                core.webhook(session.app, kind, || {
                    WebhookEvent::channel(session.app, kind, channel)
                });
            }
            session.send(outbound::cache_miss(channel))
        }
        // The home core did not answer: the client is told of a miss, the backend is not asked to refill.
        Err(_) => session.send(outbound::cache_miss(channel)),
    };
}

/// The channel's last event from Redis, or whether this is the cluster's first miss
/// within the webhook debounce; `None` on a single node or while Redis is unreachable.
async fn from_cluster(
    core: &Core,
    app: AppIdx,
    channel: &str,
) -> Option<Result<CachedEvent, bool>> {
    let q = || ClusterQuery::Cache {
        app_id: core.app(app).config.id.clone(),
        channel: channel.into(),
        miss_window: core.shared.config.webhooks.debounce,
    };
    match core.ask_cluster(q).await? {
        ClusterAnswer::Cached(record, ttl) => {
            let r = RemotePublish::decode(&record)?;
            let event = CachedEvent {
                frame: outbound::channel_event(&r.name_token, channel, &r.data_token, None, None),
                data_token: bytes::Bytes::from(r.data_token),
                expires: Instant::now() + ttl,
            };
            // Not kept here: a newer event may have arrived live meanwhile, and would be overwritten.
            Some(Ok(event))
        }
        ClusterAnswer::Missed(first) => Some(Err(first)),
        _ => None,
    }
}

/// The channel's last event for `GET /channels/{name}?info=cache`: this node's, else the cluster's.
pub async fn lookup(
    core: &Core,
    app: AppIdx,
    channel: &str,
) -> Result<Option<CachedEvent>, NoReply> {
    if let Some(event) = core.cached(app, channel).await? {
        return Ok(Some(event));
    }
    Ok(match from_cluster(core, app, channel).await {
        Some(Ok(event)) => Some(event),
        _ => None,
    })
}

pub fn store(core: &Core, app: AppIdx, channel: &str, event: CachedEvent) {
    let msg = CacheMsg::Store {
        app,
        channel: Box::from(channel),
        event,
    };
    let _ = core.send_home(app, channel, CoreMsg::Cache(msg));
}

pub async fn get(core: &Core, app: AppIdx, channel: &str) -> Result<Option<CachedEvent>, NoReply> {
    let channel_name = Box::from(channel);
    core.ask(core.home_of(app, channel), |reply| {
        CoreMsg::Cache(CacheMsg::Get {
            app,
            channel: channel_name,
            reply,
        })
    })
    .await
}

pub fn on_message(core: &Core, msg: CacheMsg) {
    match msg {
        CacheMsg::Store {
            app,
            channel,
            event,
        } => core.facts.borrow_mut().store_cache(app, &channel, event),
        CacheMsg::Get {
            app,
            channel,
            reply,
        } => {
            let cached = core
                .facts
                .borrow_mut()
                .cached(app, &channel, Instant::now());
            let _ = reply.send(cached);
        }
    }
}
