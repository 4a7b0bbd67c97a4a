//! The embedded broker: history in this process, ids unique across runs.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio_util::sync::CancellationToken;

use super::{
    hub::{Hub, Limits},
    too_old_notice, Plan, Start, StoredEvent, Subscription,
};
use crate::{
    metrics::Metrics,
    wire::{encode_event, EventId},
};

/// History and fan-out in memory.
///
/// Ids are `EPOCH-SEQ`, where `EPOCH` is the time this broker started in
/// milliseconds: an id from an earlier run never matches this run's, so a
/// client resuming with one is told and replayed everything retained,
/// instead of being treated as up to date.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: Arc<Hub>,
    epoch: u64,
}

impl MemoryBroker {
    /// A broker within `limits` (history, and pending events per
    /// subscriber).
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Self {
            hub: Arc::new(Hub::new(limits, EventId::new(epoch, 0), metrics)),
            epoch,
        }
    }

    /// The fan-out hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Appends an event; it is in history and on its way to every current
    /// subscriber of `topic` when this returns.
    pub fn publish(&self, topic: &str, event: &str, data: &str) -> EventId {
        let topic: Arc<str> = Arc::from(topic);
        let epoch = self.epoch;
        self.hub.append(|last| {
            // The hub starts at `epoch-0`; an older `last` (history kept
            // from an earlier run) is followed by this run's first id.
            let id = if last.ms >= epoch {
                EventId::new(last.ms, last.seq + 1)
            } else {
                EventId::new(epoch, 1)
            };
            StoredEvent {
                id,
                topic,
                wire: encode_event(&id.to_string(), event, data),
            }
        })
    }

    /// Subscribes where `start` asks; a resume from an id the history does
    /// not cover is told so before everything retained is replayed.
    pub fn subscribe(
        &self,
        topics: Vec<Arc<str>>,
        start: Start<'_>,
        connection: CancellationToken,
    ) -> Subscription {
        let (mut subscription, opened) = self.hub.subscribe(topics, start, connection);
        if let (Plan::TooOld { resume }, Start::After(requested)) = (opened.plan, start) {
            subscription.prepend(too_old_notice(resume, requested, opened.first_replayed));
        }
        subscription
    }
}
