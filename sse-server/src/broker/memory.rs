//! The embedded broker: history in this process, ids unique across runs.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio_util::sync::CancellationToken;

use super::{hub::Hub, too_old_notice, Resume, StoredEvent, Subscription};
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
    /// A broker keeping `history` events, with `queue` pending events
    /// allowed per subscriber.
    pub fn new(history: usize, queue: usize, metrics: Arc<Metrics>) -> Self {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        Self {
            hub: Arc::new(Hub::new(history, queue, metrics)),
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
        let appended = self.hub.append(|last| {
            let seq = last.filter(|id| id.ms == epoch).map_or(1, |id| id.seq + 1);
            let id = EventId::new(epoch, seq);
            Some(StoredEvent {
                id,
                topic,
                wire: encode_event(&id.to_string(), event, data),
            })
        });
        // `make` above always returns an event.
        appended.unwrap_or(EventId::new(epoch, 0))
    }

    /// Subscribes, replaying everything newer than `last_event_id` first.
    pub fn subscribe(
        &self,
        topics: Vec<Arc<str>>,
        last_event_id: Option<&str>,
        connection: CancellationToken,
    ) -> Subscription {
        let Some(requested) = last_event_id else {
            return self.hub.subscribe(topics, None, connection).0;
        };
        let ours = requested
            .parse::<EventId>()
            .ok()
            .filter(|id| id.ms == self.epoch);
        // An id this run did not hand out starts before everything retained.
        let after = ours.unwrap_or(EventId::new(0, 0));
        let (mut subscription, resume) = self.hub.subscribe(topics, Some(after), connection);
        let notice = match (ours, resume) {
            (_, Resume::Live | Resume::InRing) => None,
            // The resume point of a notice sent before anything was published.
            (Some(id), Resume::Unknown) if id.seq == 0 && self.hub.last_id().is_none() => None,
            // The id is the one just before the oldest retained: nothing lost.
            (Some(id), Resume::BeforeRing { first }) if id.seq + 1 == first.seq => None,
            (_, Resume::BeforeRing { first }) => Some(too_old_notice(
                EventId::new(self.epoch, first.seq - 1),
                requested,
                Some(first),
            )),
            (_, Resume::Unknown) => {
                let oldest = self.hub.oldest_id();
                // Where the replay of everything retained starts.
                let resume_id = EventId::new(self.epoch, oldest.map_or(0, |first| first.seq - 1));
                Some(too_old_notice(resume_id, requested, oldest))
            }
        };
        if let Some(notice) = notice {
            subscription.prepend(notice);
        }
        subscription
    }
}
