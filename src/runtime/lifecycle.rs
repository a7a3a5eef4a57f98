//! Where lifecycle events go: the one place that consumes channel and user state changes (occupied, vacated,
//! member added and removed, subscription count, user online and offline) as they happen on the owning core.
//! Today: the occupied-channels gauge and a debug line. Webhooks and the cluster bridge plug in here.

use crate::channels::lifecycle::LifecycleEvent;
use crate::metrics::Gauge;
use crate::runtime::core::Core;

impl Core {
    pub fn lifecycle(&self, event: LifecycleEvent) {
        match &event {
            LifecycleEvent::ChannelOccupied { .. } => {
                self.metrics().shift(Gauge::OccupiedChannels, 1)
            }
            LifecycleEvent::ChannelVacated { .. } => {
                self.metrics().shift(Gauge::OccupiedChannels, -1)
            }
            _ => {}
        }
        crate::debug!("core {}: {event:?}", self.id);
    }
}
