//! What cores send each other: one enum wrapping each feature's own messages, the lane each takes, and how a
//! core waits for another's reply (never forever).

use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::app::{AppIdx, AppRegistry};
use crate::channels::publication::Publication;
use crate::runtime::cache::CacheMsg;
use crate::runtime::counts::CountMsg;
use crate::runtime::history::HistoryMsg;
use crate::runtime::inbox::{Lane, Routed};
use crate::runtime::occupancy::OccupancyMsg;
use crate::runtime::presence::PresenceMsg;
use crate::runtime::query::{Answer, Query};
use crate::runtime::users::UserMsg;
use crate::webhooks::DeliveryReport;

pub enum CoreMsg {
    /// Deliver to local subscribers (every core gets the same `Arc`).
    Publish(Arc<Publication>),
    /// A publication of another node, handed to the channel's home core, which publishes it here.
    Remote(Box<Publication>),
    /// A REST request on another core asks about this core's local state.
    Query(Query, oneshot::Sender<Answer>),
    Presence(PresenceMsg),
    Users(UserMsg),
    Cache(CacheMsg),
    Counts(CountMsg),
    Occupancy(OccupancyMsg),
    History(HistoryMsg),
    /// The webhook sender reports an attempt, for the app's event log on this core.
    WebhookReport(AppIdx, DeliveryReport),
    /// A reload changed the apps: serve these from now on (connections of removed apps are closed).
    Apps(Arc<AppRegistry>),
    /// A drain began: wakes the serve loop, which spreads closes with 4200 and then exits.
    Shutdown,
}

impl Routed for CoreMsg {
    fn lane(&self) -> Lane {
        match self {
            CoreMsg::Publish(_) | CoreMsg::Remote(_) => Lane::Publish,
            CoreMsg::Query(..) => Lane::Control,
            CoreMsg::Presence(m) => m.lane(),
            CoreMsg::Users(m) => m.lane(),
            CoreMsg::Cache(m) => m.lane(),
            CoreMsg::Counts(m) => m.lane(),
            CoreMsg::Occupancy(m) => m.lane(),
            CoreMsg::History(m) => m.lane(),
            // Refused when the lane is full: a log line is not worth waiting for.
            CoreMsg::WebhookReport(..) => Lane::Control,
            // Never refused: a core that missed a reload would serve apps that are gone.
            CoreMsg::Apps(_) | CoreMsg::Shutdown => Lane::Cleanup,
        }
    }
}

/// How long a core waits for another core's answer before giving up on it: a stalled core makes a REST request
/// answer 503, never hang.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The other core did not answer (its inbox refused the question, or the answer did not come in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoReply;

/// Waits for a reply, at most [`REPLY_TIMEOUT`].
pub async fn reply<T>(rx: oneshot::Receiver<T>) -> Result<T, NoReply> {
    match monoio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(NoReply),
    }
}
