//! Subscription counts across cores (docs/protocol.md#subscription-count), for apps that turn them on: every
//! subscribe and unsubscribe tells the channel's home core, which broadcasts `pusher_internal:subscription_count`
//! (throttled for big channels). Presence channels have no subscription count.

use std::time::Instant;

use crate::app::AppIdx;
use crate::channels::lifecycle::LifecycleEvent;
use crate::channels::publication::Publication;
use crate::config::WebhookKind;
use crate::protocol::channel_name::{ChannelKind, ChannelType};
use crate::runtime::core::Core;
use crate::runtime::inbox::Lane;
use crate::runtime::message::CoreMsg;

pub enum CountMsg {
    /// A subscription was added (+1) or removed (-1) on some core.
    Delta {
        app: AppIdx,
        channel: Box<str>,
        delta: i64,
    },
    /// Cluster bridge -> home: the channel's count over every node; `report`: the webhook is this node's.
    Total {
        app: AppIdx,
        channel: Box<str>,
        total: u64,
        report: bool,
    },
}

impl CountMsg {
    /// Never refused: each delta is owed by a subscription already made or undone, and a lost one would skew
    /// the count for good (a total is the latest word, small and rare).
    pub fn lane(&self) -> Lane {
        Lane::Cleanup
    }
}

/// Tells the channel's home a subscription came or went, for apps that count subscriptions (for the
/// `subscription_count` event or webhook).
pub fn changed(core: &Core, app: AppIdx, channel: &str, delta: i64) {
    let a = core.app(app);
    // A cluster counts every app's subscriptions: `info=subscription_count` is answered from Redis.
    let counted = a.config.subscription_count
        || a.webhook_kinds.contains(WebhookKind::SubscriptionCount)
        || core.shared.cluster.get().is_some();
    if !counted || ChannelType::of(channel).kind == ChannelKind::Presence {
        return;
    }
    let msg = CountMsg::Delta {
        app,
        channel: Box::from(channel),
        delta,
    };
    let _ = core.send_home(app, channel, CoreMsg::Counts(msg));
}

pub fn on_message(core: &Core, msg: CountMsg) {
    let (app, channel, delta) = match msg {
        CountMsg::Delta {
            app,
            channel,
            delta,
        } => (app, channel, delta),
        CountMsg::Total {
            app,
            channel,
            total,
            report,
        } => return broadcast(core, app, &channel, total, report),
    };
    let due = core
        .facts
        .borrow_mut()
        .count_delta(app, &channel, delta, Instant::now());
    // In a cluster this node's count goes to Redis, and the total comes back (throttled there) as `Total`.
    if let Some(cluster) = core.shared.cluster.get() {
        let n = core.facts.borrow().subscriptions(app, &channel);
        cluster.count(&core.app(app).config.id, &channel, n);
        return;
    }
    if let Some(n) = due {
        broadcast(core, app, &channel, n, true);
    }
}

/// Throttled channels whose count changed since the last broadcast get it now (run from the periodic scan).
pub fn flush_throttled(core: &Core, now: Instant) {
    let due = core.facts.borrow_mut().throttled_due(now);
    if core.shared.cluster.get().is_some() {
        return;
    }
    for (app, channel, n) in due {
        broadcast(core, app, &channel, n, true);
    }
}

/// `report`: the `subscription_count` webhook is this node's to send (in a cluster, the node whose change it was).
fn broadcast(core: &Core, app: AppIdx, channel: &str, n: u64, report: bool) {
    if core.app(app).config.subscription_count {
        let data = format!(r#"{{"subscription_count":{n}}}"#);
        let p =
            Publication::server_event(app, channel, "pusher_internal:subscription_count", &data);
        core.broadcast(p);
    }
    if report {
        core.lifecycle(LifecycleEvent::SubscriptionCount {
            app,
            channel: Box::from(channel),
            count: n,
        });
    }
}
