//! Questions a REST request asks every core about its local subscribers (`GET /channels`, `GET
//! /channels/{name}`), answered within `message::REPLY_TIMEOUT` or not at all.

use std::sync::Arc;

use futures_channel::oneshot;

use crate::app::AppIdx;
use crate::runtime::core::Core;
use crate::runtime::event_log::LogEntry;
use crate::runtime::message::{self, CoreMsg, NoReply};

#[derive(Debug, Clone)]
pub enum Query {
    /// Local subscriber count of one channel.
    Channel { app: AppIdx, name: Arc<str> },
    /// Local subscriber counts of every channel whose name starts with `prefix`.
    Channels { app: AppIdx, prefix: Arc<str> },
    /// This core's newest event-log entries of the app.
    EventLog { app: AppIdx, limit: usize },
}

#[derive(Debug)]
pub enum Answer {
    Count(u64),
    Counts(Vec<(Box<str>, u64)>),
    Log(Vec<LogEntry>),
}

impl Core {
    /// Asks every core (this one directly). Every core must answer, or the query fails.
    pub async fn query(&self, q: Query) -> Result<Vec<Answer>, NoReply> {
        let mut answers = Vec::with_capacity(self.shared.cores());
        let mut pending = Vec::new();
        for (i, inbox) in self.shared.inboxes.iter().enumerate() {
            if i == self.id {
                answers.push(self.answer(&q));
            } else {
                let (tx, rx) = oneshot::channel();
                inbox
                    .send(CoreMsg::Query(q.clone(), tx))
                    .map_err(|_| NoReply)?;
                pending.push(rx);
            }
        }
        for rx in pending {
            answers.push(message::reply(rx).await?);
        }
        Ok(answers)
    }

    pub fn answer(&self, q: &Query) -> Answer {
        let channels = self.channels.borrow();
        match q {
            Query::Channel { app, name } => Answer::Count(channels.local_count(*app, name) as u64),
            Query::Channels { app, prefix } => Answer::Counts(
                channels
                    .channels(*app)
                    .filter(|(n, _)| n.starts_with(&**prefix))
                    .map(|(n, c)| (Box::from(&**n), c.subscribers.len() as u64))
                    .collect(),
            ),
            Query::EventLog { app, limit } => {
                Answer::Log(self.event_log.borrow().newest(*app, *limit))
            }
        }
    }
}
