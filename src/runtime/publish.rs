//! The publish pipeline: every publication (REST, batch, client event, server event) enters [`Core::publish`],
//! passes its stages, and fans out to every core's subscribers.
//!
//! Stages, in order, each in its own module: cache store (`cache::keep_last_event`); then the fan-out: other
//! cores first (they run in parallel with our local loop), then this core; deliveries are counted by outcome.
//! History append, webhook emission and the cluster bridge plug in before the fan-out.

use std::sync::Arc;

use crate::channels::index::Deliveries;
use crate::channels::publication::{Publication, Source};
use crate::metrics::Counter;
use crate::runtime::cache;
use crate::runtime::core::Core;
use crate::runtime::inbox::InboxFull;
use crate::runtime::message::CoreMsg;

impl Core {
    /// Publishes on every core. Fails if a core's inbox is full; cores that took it deliver it.
    pub fn publish(&self, p: Publication) -> Result<(), InboxFull> {
        cache::keep_last_event(self, &p);
        self.metrics().inc(match p.source {
            Source::Rest => Counter::PublishesRest,
            Source::Client => Counter::PublishesClient,
            Source::Server => Counter::PublishesServer,
        });
        let p = Arc::new(p);
        let mut result = Ok(());
        for (i, inbox) in self.shared.inboxes.iter().enumerate() {
            if i != self.id && inbox.send(CoreMsg::Publish(p.clone())).is_err() {
                self.metrics().inc(Counter::InboxOverflows);
                result = Err(InboxFull);
            }
        }
        self.deliver(&p);
        result
    }

    /// A server event: nobody to tell if an inbox is full (it is counted with the overflows).
    pub fn broadcast(&self, p: Publication) {
        let _ = self.publish(p);
    }

    /// The local fan-out of a publication, counted by outcome.
    pub fn deliver(&self, p: &Publication) {
        let mut d = Deliveries::default();
        {
            let channels = self.channels.borrow();
            for cf in &p.frames {
                d.add(channels.deliver(p.app, &cf.channel, &cf.frame, p.except));
            }
        }
        let m = self.metrics();
        m.add(Counter::Deliveries, d.queued);
        m.add(Counter::DeliveriesBackpressured, d.backpressured);
        m.add(Counter::SlowReaderCutoffs, d.cut_off);
        m.add(Counter::DeliveriesDropped, d.dropped);
    }
}
