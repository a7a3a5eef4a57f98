//! Where lifecycle events go: the one place that consumes channel and user state changes (occupied, vacated,
//! member added and removed, subscription count, user online and offline) as they happen on the owning core:
//! the occupied-channels gauge, the cluster's interest (this node listens to a channel's publications in Redis
//! while it is occupied here), and webhooks for the apps that want the kind.
//! Client events and cache misses, which are not lifecycle, reach webhooks through [`Core::webhook`] too.

use crate::app::AppIdx;
use crate::channels::lifecycle::LifecycleEvent;
use crate::config::WebhookKind;
use crate::metrics::Gauge;
use crate::runtime::core::Core;
use crate::webhooks::{Detail, WebhookEvent};

impl Core {
    pub fn lifecycle(&self, event: LifecycleEvent) {
        crate::debug!("core {}: {event:?}", self.id);
        if let LifecycleEvent::ChannelOccupied { app, channel }
        | LifecycleEvent::ChannelVacated { app, channel } = &event
        {
            let occupied = matches!(event, LifecycleEvent::ChannelOccupied { .. });
            self.metrics()
                .shift(Gauge::OccupiedChannels, if occupied { 1 } else { -1 });
            if let Some(cluster) = self.shared.cluster.get() {
                // The webhooks come from the cluster's occupancy ([`Core::cluster_occupancy`]).
                cluster.interest(&self.app(*app).config.id, channel, occupied);
                if !occupied {
                    // Not listening any more: what this node kept stops being the whole story.
                    self.history.borrow_mut().forget(*app, channel);
                }
                return;
            }
        }
        if is_internal(&event) {
            return;
        }
        let (app, kind) = webhook_kind(&event);
        self.webhook(app, kind, || webhook_event(event, kind));
    }

    /// The cluster's first node got a subscriber of the channel, or its last node lost its last: sent by the
    /// node where that happened (or that cleaned up a dead node), so once per cluster.
    pub fn cluster_occupancy(&self, app: AppIdx, channel: &str, occupied: bool) {
        if channel.starts_with('#') {
            return;
        }
        let kind = if occupied {
            WebhookKind::ChannelOccupied
        } else {
            WebhookKind::ChannelVacated
        };
        self.webhook(app, kind, || WebhookEvent::channel(app, kind, channel));
    }

    /// Hands a webhook event to the sender if some webhook of the app receives `kind`; `build` runs only then.
    pub fn webhook(&self, app: AppIdx, kind: WebhookKind, build: impl FnOnce() -> WebhookEvent) {
        if self.with_app(app, |a| a.webhook_kinds.contains(kind)) {
            self.shared.webhooks.emit(build());
        }
    }
}

/// `#server-to-user-{id}` channels are the server's own: a backend learns of them through `user_online` and
/// `user_offline`, not as channels.
fn is_internal(event: &LifecycleEvent) -> bool {
    match event {
        LifecycleEvent::ChannelOccupied { channel, .. }
        | LifecycleEvent::ChannelVacated { channel, .. }
        | LifecycleEvent::SubscriptionCount { channel, .. } => channel.starts_with('#'),
        _ => false,
    }
}

/// The app of a lifecycle event and the webhook kind that reports it.
fn webhook_kind(event: &LifecycleEvent) -> (AppIdx, WebhookKind) {
    match event {
        LifecycleEvent::ChannelOccupied { app, .. } => (*app, WebhookKind::ChannelOccupied),
        LifecycleEvent::ChannelVacated { app, .. } => (*app, WebhookKind::ChannelVacated),
        LifecycleEvent::MemberAdded { app, .. } => (*app, WebhookKind::MemberAdded),
        LifecycleEvent::MemberRemoved { app, .. } => (*app, WebhookKind::MemberRemoved),
        LifecycleEvent::SubscriptionCount { app, .. } => (*app, WebhookKind::SubscriptionCount),
        LifecycleEvent::UserOnline { app, .. } => (*app, WebhookKind::UserOnline),
        LifecycleEvent::UserOffline { app, .. } => (*app, WebhookKind::UserOffline),
    }
}

fn webhook_event(event: LifecycleEvent, kind: WebhookKind) -> WebhookEvent {
    match event {
        LifecycleEvent::ChannelOccupied { app, channel }
        | LifecycleEvent::ChannelVacated { app, channel } => {
            WebhookEvent::channel(app, kind, &channel)
        }
        LifecycleEvent::MemberAdded {
            app,
            channel,
            user_id,
        }
        | LifecycleEvent::MemberRemoved {
            app,
            channel,
            user_id,
        } => WebhookEvent::member(app, kind, &channel, &user_id),
        LifecycleEvent::SubscriptionCount {
            app,
            channel,
            count,
        } => WebhookEvent {
            detail: Detail::Count(count),
            ..WebhookEvent::channel(app, kind, &channel)
        },
        LifecycleEvent::UserOnline { app, user_id }
        | LifecycleEvent::UserOffline { app, user_id } => WebhookEvent::user(app, kind, &user_id),
    }
}
