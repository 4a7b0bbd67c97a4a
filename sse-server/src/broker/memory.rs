//! The embedded broker: history in this process, ids unique across runs,
//! and with `--data-dir` kept on disk and restored at start.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio_util::sync::CancellationToken;

use super::{
    hub::{Hub, Limits},
    resume::predecessor,
    too_old_notice, BrokerError, Plan, Start, StoredEvent, Subscription,
};
use crate::{
    durable::{self, AppendError, DiskLog, LogError, LogOptions},
    metrics::Metrics,
    wire::{encode_event, EventId},
};

/// History and fan-out in memory.
///
/// Ids are `EPOCH-SEQ`, where `EPOCH` is the time this broker started in
/// milliseconds: an id from an earlier run never matches this run's, so a
/// client resuming with one is told and replayed everything retained,
/// instead of being treated as up to date.
///
/// With a disk log (`--data-dir`) the history of earlier runs is restored
/// into the hub at start, so their ids resume exactly, and `EPOCH` is
/// later than every restored id's, so new ids sort after all of them.
/// Events reach the hub (and subscribers) only once the log has them.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: Arc<Hub>,
    epoch: u64,
    log: Option<DiskLog>,
    /// Idempotency keys and the ids they were first published as; held
    /// across a keyed publish, so two requests with one key store once.
    keys: tokio::sync::Mutex<Keys>,
}

/// Idempotency keys of retained events, oldest first.
#[derive(Debug, Default)]
struct Keys {
    ids: HashMap<String, EventId>,
    order: VecDeque<String>,
}

/// Milliseconds since the Unix epoch: a run's `EPOCH`.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

/// The id after `last` in a run whose epoch is `epoch`.
fn next_id(epoch: u64, last: EventId) -> EventId {
    // An older `last` (history kept from an earlier run) is followed by
    // this run's first id.
    if last.ms >= epoch {
        EventId::new(last.ms, last.seq + 1)
    } else {
        EventId::new(epoch, 1)
    }
}

impl MemoryBroker {
    /// A broker within `limits` (history, and pending events per
    /// subscriber).
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        let epoch = now_ms();
        Self {
            hub: Arc::new(Hub::new(limits, EventId::new(epoch, 0), metrics)),
            epoch,
            log: None,
            keys: tokio::sync::Mutex::default(),
        }
    }

    /// A broker whose history is kept in the disk log `options` names:
    /// restores what the log holds, then stores every event there before
    /// it is published.
    ///
    /// # Errors
    /// When the log cannot be opened (see [`durable::open`]).
    pub fn durable(
        options: LogOptions,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LogError> {
        let mut opened = durable::open(options)?;
        let restored = opened.take_events();
        // Later than any restored id, even if the clock went back.
        let epoch = now_ms().max(opened.last_id().map_or(0, |last| last.ms + 1));
        // A resume from just before the oldest restored event misses nothing.
        let base = restored
            .first()
            .map_or(EventId::new(epoch, 0), |first| predecessor(first.id));
        let hub = Arc::new(Hub::new(limits, base, metrics));
        hub.restore(restored);
        let sink = Arc::clone(&hub);
        let log = opened
            .start(move |event| {
                sink.push(event);
            })
            .map_err(|cause| LogError::Dir {
                dir: "writer thread".into(),
                cause,
            })?;
        Ok(Self {
            hub,
            epoch,
            log: Some(log),
            keys: tokio::sync::Mutex::default(),
        })
    }

    /// The fan-out hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Appends an event; it is in history (on disk as `--fsync` says, with
    /// a disk log) and on its way to every current subscriber of `topic`
    /// when this returns.
    ///
    /// # Errors
    /// When the disk log cannot store the event (a full disk), or the
    /// server is shutting down; nothing was published.
    pub async fn publish(
        &self,
        topic: &str,
        event: &str,
        data: &str,
    ) -> Result<EventId, BrokerError> {
        let topic: Arc<str> = Arc::from(topic);
        let epoch = self.epoch;
        let make = |last: EventId| {
            let id = next_id(epoch, last);
            StoredEvent {
                id,
                topic,
                wire: encode_event(&id.to_string(), event, data),
            }
        };
        match &self.log {
            None => self.hub.append(make).ok_or(BrokerError::ShuttingDown),
            Some(log) => log
                .append(|last| make(last.unwrap_or(EventId::new(epoch, 0))))
                .await
                .map_err(|err| match err {
                    AppendError::Closed => BrokerError::ShuttingDown,
                    err => BrokerError::Storage(err),
                }),
        }
    }

    /// Like [`MemoryBroker::publish`], once per idempotency `key`: while the
    /// event first published with `key` is retained, returns its id and
    /// stores nothing.
    ///
    /// # Errors
    /// As [`MemoryBroker::publish`].
    pub async fn publish_once(
        &self,
        key: &str,
        topic: &str,
        event: &str,
        data: &str,
    ) -> Result<EventId, BrokerError> {
        let mut keys = self.keys.lock().await;
        if let Some(&id) = keys.ids.get(key) {
            if self.hub.retains(id) {
                return Ok(id);
            }
        }
        let id = self.publish(topic, event, data).await?;
        // Keys of events no longer retained go, oldest first.
        while let Some(oldest) = keys.order.front() {
            match keys.ids.get(oldest) {
                Some(&old) if self.hub.retains(old) => break,
                _ => {
                    let oldest = keys.order.pop_front().unwrap_or_default();
                    keys.ids.remove(&oldest);
                }
            }
        }
        if keys.ids.insert(key.to_owned(), id).is_none() {
            keys.order.push_back(key.to_owned());
        }
        Ok(id)
    }

    /// Appends `events` (topic, event type, data) in order, all or none:
    /// under one ring lock, and with a disk log as one write.
    ///
    /// # Errors
    /// As [`MemoryBroker::publish`]; then none of them was published.
    pub async fn publish_batch(
        &self,
        events: &[(String, String, String)],
    ) -> Result<Vec<EventId>, BrokerError> {
        let epoch = self.epoch;
        let make = |n: usize, last: EventId| {
            let (topic, event, data) = &events[n];
            let id = next_id(epoch, last);
            StoredEvent {
                id,
                topic: Arc::from(topic.as_str()),
                wire: encode_event(&id.to_string(), event, data),
            }
        };
        match &self.log {
            None => self
                .hub
                .append_many(events.len(), make)
                .ok_or(BrokerError::ShuttingDown),
            Some(log) => log
                .append_many(|last| {
                    let mut last = last.unwrap_or(EventId::new(epoch, 0));
                    (0..events.len())
                        .map(|n| {
                            let event = make(n, last);
                            last = event.id;
                            event
                        })
                        .collect()
                })
                .await
                .map_err(|err| match err {
                    AppendError::Closed => BrokerError::ShuttingDown,
                    err => BrokerError::Storage(err),
                }),
        }
    }

    /// What keeps events from being stored, if anything (a full disk).
    pub fn problem(&self) -> Option<AppendError> {
        self.log.as_ref().and_then(DiskLog::problem)
    }

    /// Stores what is queued for the disk log and stops its writer, then
    /// lets every stream send everything acknowledged and end.
    pub async fn shutdown(&self) {
        if let Some(log) = &self.log {
            log.shutdown().await;
        }
        // Every acknowledged event is in the hub now: streams send them
        // all, then end.
        self.hub.finish();
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
