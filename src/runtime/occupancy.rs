//! Which channels are occupied, per app, across cores: a core tells the channel's home when it gets its first
//! local subscriber and when it loses its last; the home core counts cores and turns 0 -> 1 into
//! `ChannelOccupied` and 1 -> 0 into `ChannelVacated` (docs/protocol.md#webhooks). `/stats` reads the running
//! count of occupied channels instead of asking every core for every name.

use crate::app::AppIdx;
use crate::channels::facts::Occupancy;
use crate::channels::lifecycle::LifecycleEvent;
use crate::runtime::core::Core;
use crate::runtime::inbox::Lane;
use crate::runtime::message::CoreMsg;

pub enum OccupancyMsg {
    /// Core -> home: this core got its first (+1) or lost its last (-1) subscriber of the channel.
    Delta {
        app: AppIdx,
        channel: Box<str>,
        delta: i32,
    },
    /// Cluster bridge -> home: the cluster's occupancy of the channel changed through this node; its
    /// `channel_occupied` / `channel_vacated` webhook is this node's to send.
    Cluster {
        app: AppIdx,
        channel: Box<str>,
        occupied: bool,
    },
}

impl OccupancyMsg {
    /// Never refused: each +1 is owed by a subscription already made, each -1 by one undone.
    pub fn lane(&self) -> Lane {
        Lane::Cleanup
    }
}

pub fn changed(core: &Core, app: AppIdx, channel: &str, delta: i32) {
    let msg = OccupancyMsg::Delta {
        app,
        channel: Box::from(channel),
        delta,
    };
    let _ = core.send_home(app, channel, CoreMsg::Occupancy(msg));
}

pub fn on_message(core: &Core, msg: OccupancyMsg) {
    let (app, channel, delta) = match msg {
        OccupancyMsg::Delta {
            app,
            channel,
            delta,
        } => (app, channel, delta),
        OccupancyMsg::Cluster {
            app,
            channel,
            occupied,
        } => return core.cluster_occupancy(app, &channel, occupied),
    };
    let change = core
        .facts
        .borrow_mut()
        .occupancy_delta(app, &channel, delta);
    match change {
        Some(Occupancy::Occupied) => {
            core.lifecycle(LifecycleEvent::ChannelOccupied { app, channel })
        }
        Some(Occupancy::Vacated) => core.lifecycle(LifecycleEvent::ChannelVacated { app, channel }),
        None => {}
    }
}
