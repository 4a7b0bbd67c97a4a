//! Where events go: the broker owns ids, history, replay and fan-out.
//!
//! HTTP handlers only call [`Broker::publish`] and [`Broker::subscribe`].
//! Both brokers fan out through the same local [`hub::Hub`]; they differ in
//! where the log lives (this process, or a Redis stream shared by several
//! server processes).

pub mod hub;
pub mod memory;
pub mod redis;
pub mod resume;

use std::sync::Arc;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{BrokerUrl, Config},
    metrics::Metrics,
    wire::{self, EventId},
};
pub use hub::{Hub, Limits, Opened, StoredEvent, Subscription};
pub use memory::MemoryBroker;
pub use redis::RedisBroker;
pub use resume::{Plan, Start};

/// Why the broker could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker's backing store cannot be reached; nothing was changed.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The disk log (`--data-dir`) cannot store events now; nothing was
    /// published.
    #[error(transparent)]
    Storage(#[from] crate::durable::AppendError),
    /// The disk log (`--data-dir`) cannot be opened.
    #[error(transparent)]
    Log(#[from] crate::durable::LogError),
    /// The configuration asks for something this broker does not do.
    #[error("{0}")]
    Config(String),
    /// The broker did not answer in time after the event was sent: it may
    /// or may not have been stored (a retry may store it twice, unless it
    /// carries an idempotency key).
    #[error("{0}")]
    Uncertain(String),
    /// The server is shutting down and takes no more events.
    #[error("the server is shutting down; publish to another instance or retry later")]
    ShuttingDown,
}

/// The event log behind the server.
#[derive(Debug)]
pub enum Broker {
    /// History in this process.
    Memory(MemoryBroker),
    /// History in a Redis stream shared by several server instances.
    Redis(RedisBroker),
}

impl Broker {
    /// Starts the broker the configuration names.
    ///
    /// # Errors
    /// When the broker's backing store cannot be set up.
    pub async fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Self, BrokerError> {
        match &config.broker {
            BrokerUrl::Memory => match &config.data_dir {
                None => Ok(Self::Memory(MemoryBroker::new(
                    Limits::from_config(config),
                    metrics,
                ))),
                Some(dir) => {
                    let options = crate::durable::LogOptions {
                        dir: dir.clone(),
                        fsync: config.fsync,
                        history: config.history,
                        history_bytes: config.history_bytes,
                    };
                    // Reading the log back is disk work: off the runtime.
                    let limits = Limits::from_config(config);
                    let broker = tokio::task::spawn_blocking(move || {
                        MemoryBroker::durable(options, limits, metrics)
                    })
                    .await
                    .map_err(|err| BrokerError::Unavailable(err.to_string()))??;
                    Ok(Self::Memory(broker))
                }
            },
            BrokerUrl::Redis(_) if config.data_dir.is_some() => Err(BrokerError::Config(
                "--data-dir keeps the embedded broker's history; with --broker redis://... \
                 Redis keeps it: turn on its append-only file (appendonly yes, \
                 appendfsync always) instead"
                    .to_owned(),
            )),
            BrokerUrl::Redis(url) => Ok(Self::Redis(
                RedisBroker::start(
                    url,
                    &config.redis_prefix,
                    Limits::from_config(config),
                    metrics,
                )
                .await?,
            )),
        }
    }

    /// The local fan-out hub.
    pub fn hub(&self) -> &Arc<Hub> {
        match self {
            Self::Memory(broker) => broker.hub(),
            Self::Redis(broker) => broker.hub(),
        }
    }

    /// Publishes an event; returns its id once the broker has accepted it.
    ///
    /// # Errors
    /// When the broker cannot accept events right now; nothing was published.
    pub async fn publish(
        &self,
        topic: &str,
        event: &str,
        data: &str,
    ) -> Result<EventId, BrokerError> {
        match self {
            Self::Memory(broker) => broker.publish(topic, event, data).await,
            Self::Redis(broker) => broker.publish(topic, event, data).await,
        }
    }

    /// Publishes an event once per idempotency `key`: a retry with the same
    /// key, while the first event is retained, returns that event's id and
    /// stores nothing (across instances with Redis).
    ///
    /// # Errors
    /// As [`Broker::publish`].
    pub async fn publish_once(
        &self,
        key: &str,
        topic: &str,
        event: &str,
        data: &str,
    ) -> Result<EventId, BrokerError> {
        match self {
            Self::Memory(broker) => broker.publish_once(key, topic, event, data).await,
            Self::Redis(broker) => broker.publish_once(key, topic, event, data).await,
        }
    }

    /// Publishes `events` (topic, event type, data) in order, all or none;
    /// returns their ids once the broker has them all.
    ///
    /// # Errors
    /// As [`Broker::publish`]; then none of them was published (with
    /// [`BrokerError::Uncertain`], all or none may have been).
    pub async fn publish_batch(
        &self,
        events: &[(String, String, String)],
    ) -> Result<Vec<EventId>, BrokerError> {
        match self {
            Self::Memory(broker) => broker.publish_batch(events).await,
            Self::Redis(broker) => broker.publish_batch(events).await,
        }
    }

    /// Subscribes to `topics`, starting where `start` asks ([`resume`]
    /// decides how). Never fails: a replay that cannot be read is replaced
    /// by the too-old notice, so the client is told rather than refused.
    pub async fn subscribe(
        &self,
        topics: Vec<Arc<str>>,
        start: Start<'_>,
        connection: CancellationToken,
    ) -> Subscription {
        match self {
            Self::Memory(broker) => broker.subscribe(topics, start, connection),
            Self::Redis(broker) => broker.subscribe(topics, start, connection).await,
        }
    }

    /// Whether the broker can accept events now.
    pub fn is_up(&self) -> bool {
        match self {
            Self::Memory(broker) => broker.problem().is_none(),
            Self::Redis(broker) => broker.is_up(),
        }
    }

    /// Why the broker cannot accept events now, when it can say (a full
    /// disk under `--data-dir`).
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Memory(broker) => broker.problem().map(|problem| problem.to_string()),
            Self::Redis(_) => None,
        }
    }

    /// Stops taking publishes (they fail with
    /// [`BrokerError::ShuttingDown`]), then lets every stream send
    /// everything acknowledged so far and end; stops background work.
    pub async fn shutdown(&self) {
        match self {
            Self::Memory(broker) => broker.shutdown().await,
            Self::Redis(broker) => broker.shutdown().await,
        }
    }
}

/// The notice sent before a replay that cannot start where the client asked
/// ([`Plan::TooOld`]).
///
/// Its `id` is `resume_id`, where the replay that follows starts, so a client
/// that reconnects in the middle of the replay continues from there.
/// `oldest` is the oldest retained event of the client's topics: the first
/// one the replay sends.
pub fn too_old_notice(resume_id: EventId, requested: &str, oldest: Option<EventId>) -> Bytes {
    let data = serde_json::json!({
        "lastEventId": requested,
        "oldestId": oldest.map(|id| id.to_string()),
        "message": "the requested event is older than the retained history or unknown to this server; replaying everything retained",
    });
    wire::encode_event(
        &resume_id.to_string(),
        wire::TOO_OLD_EVENT,
        &data.to_string(),
    )
}
