//! What happens to channels and users as a whole, across cores: the events webhooks, the cluster bridge and
//! metrics consume. Each is produced in one place, where its fact changes on the owning core
//! (`runtime::lifecycle` is where they go).

use crate::app::AppIdx;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// The first subscriber on any core (docs/protocol.md#webhooks: `channel_occupied`).
    ChannelOccupied { app: AppIdx, channel: Box<str> },
    /// The last subscriber on every core left.
    ChannelVacated { app: AppIdx, channel: Box<str> },
    /// A user's first connection joined a presence channel.
    MemberAdded {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
    },
    /// A user's last connection left a presence channel.
    MemberRemoved {
        app: AppIdx,
        channel: Box<str>,
        user_id: Box<str>,
    },
    /// A channel's subscription count was broadcast (apps with `subscription_count` on).
    SubscriptionCount {
        app: AppIdx,
        channel: Box<str>,
        count: u64,
    },
    /// A signed-in user's first connection opened.
    UserOnline { app: AppIdx, user_id: Box<str> },
    /// A signed-in user's last connection closed.
    UserOffline { app: AppIdx, user_id: Box<str> },
}
