//! The Redis broker: one Redis stream is the event log shared by every
//! server instance that names the same Redis and key prefix.
//!
//! - Publishing is `XADD {prefix}:events MAXLEN ~ {history} * topic T event E
//!   data D`; the entry id Redis assigns is the event id, so an id handed out
//!   by any instance means the same position on every other one.
//! - Each instance runs one reader task on its own connection: a blocking
//!   `XREAD` from the last entry it saw, pushing every entry into the local
//!   [`Hub`]. Fan-out is then the memory broker's code path, and publishing
//!   never waits on subscribers.
//! - A resume whose id the local ring covers is served from the ring. Older
//!   ones are filled from the stream with `XRANGE` and then continue in the
//!   ring, with no gap and no duplicate. Ids the stream no longer covers (or
//!   never handed out) get the too-old notice first.
//! - While Redis is unreachable, publishes fail (the route answers 503),
//!   `/healthz` reports the broker down, subscribers stay connected, and the
//!   reader reconnects with backoff and continues from the last entry it
//!   saw, so nothing published meanwhile on other instances is skipped.
//! - A Redis that cannot be reached at start is the same outage: the server
//!   starts degraded and connects once Redis appears. A Redis that answers
//!   but refuses the connection (a wrong password) stops the server.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    streams::{StreamId, StreamRangeReply, StreamReadReply},
    AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind, Value,
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    hub::{Hub, Limits},
    resume::{self, predecessor, Plan, Retained, Start},
    too_old_notice, BrokerError, StoredEvent, Subscription,
};
use crate::{
    config::redact_url,
    metrics::Metrics,
    wire::{self, EventId},
};

/// How long the reader's `XREAD` blocks waiting for new entries. Short
/// enough that a broker marked down by a failed publish is probed and
/// marked up again within a couple of seconds; long enough that an idle
/// instance costs Redis one round trip every two seconds.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// Extra time, beyond [`READ_BLOCK`], that a blocking read may take before
/// the connection is considered dead. Redis answers an expired `BLOCK`
/// immediately, so silence this long means the network dropped the
/// connection without closing it.
const READ_GRACE: Duration = Duration::from_secs(5);
/// Entries the reader takes per `XREAD`: large enough that a burst is
/// drained in a few round trips, small enough to bound one reply's memory.
const READ_BATCH: usize = 1_000;
/// Entries per `XRANGE` page when filling a replay from the stream.
const REPLAY_PAGE: usize = 1_000;
/// Replayed events are joined into writes of about this size (the hub's
/// batch size), so a long replay is a few large writes, not thousands.
const REPLAY_CHUNK_BYTES: usize = 64 * 1024;
/// How long a publish may wait for Redis before answering 503. A healthy
/// Redis answers in well under a millisecond; this only bounds the wait
/// while the connection is being re-established.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection attempt may take: loopback and LAN Redis
/// servers connect in milliseconds, and an unreachable host should be
/// reported (and retried) quickly rather than hang a reconnect loop.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of the queries a subscribe makes (`XINFO`, `XRANGE`): a replay
/// of a full history is a few MB, which Redis sends in well under this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a resuming subscriber waits for this instance's reader to
/// reach the id it resumes from (an id handed out by an instance that is
/// ahead). The reader is normally milliseconds behind the stream.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for this instance's reader to reach the end of
/// the stream, so that events acknowledged just before the signal reach
/// local subscribers; well inside the server's shutdown grace period.
const SHUTDOWN_CATCH_UP: Duration = Duration::from_secs(1);
/// How long Redis keeps an idempotency key at most; the key counts only
/// while its entry is still in the stream.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// A publish with an idempotency key: `KEYS[1]` the stream, `KEYS[2]` the
/// key's string; `ARGV`: history, topic, event, data, TTL in ms.
const PUBLISH_ONCE: &str = r"
local first = redis.call('GET', KEYS[2])
if first and #redis.call('XRANGE', KEYS[1], first, first) > 0 then
  return first
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
  'topic', ARGV[2], 'event', ARGV[3], 'data', ARGV[4])
redis.call('SET', KEYS[2], id, 'PX', ARGV[5])
return id
";
/// First delay before reconnecting after Redis became unreachable.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest delay between reconnection attempts: an outage of any length
/// is noticed to be over within this.
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Retries the publish connection makes on its own before a publish fails;
/// the reader keeps retrying for as long as the outage lasts, so the
/// publisher need not.
const PUBLISH_RECONNECT_RETRIES: usize = 2;

/// What the broker and its reader task share.
#[derive(Debug)]
struct State {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    up: AtomicBool,
    /// The publish connection; empty until Redis was first reached (a
    /// server started while Redis was down).
    publisher: OnceLock<ConnectionManager>,
    /// Where the URL is shown (logs), with any password replaced.
    redacted_url: String,
}

impl State {
    fn set_up(&self, up: bool, cause: Option<&dyn std::fmt::Display>) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.metrics.broker_up.set(i64::from(up));
            match (up, cause) {
                (true, _) => tracing::info!(redis = %self.redacted_url, "Redis is reachable again"),
                (false, Some(cause)) => {
                    tracing::warn!(redis = %self.redacted_url, cause = %cause, "Redis is unreachable");
                }
                (false, None) => tracing::warn!(redis = %self.redacted_url, "Redis is unreachable"),
            }
        }
    }
}

/// An event log in a Redis stream, shared by every instance using the same
/// Redis and prefix.
pub struct RedisBroker {
    state: Arc<State>,
    key: String,
    history: usize,
    /// The id of the last entry the reader pushed into the hub.
    position: watch::Receiver<EventId>,
    stop: CancellationToken,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// Held (shared) by every publish for its whole `XADD`; `false` once
    /// shutdown started. Shutdown takes it exclusively, so no publish is
    /// acknowledged after the streams' last event is fixed.
    open: tokio::sync::RwLock<bool>,
    /// The newest id this instance acknowledged.
    acknowledged: Mutex<EventId>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("redis", &self.state.redacted_url)
            .field("key", &self.key)
            .finish()
    }
}

impl RedisBroker {
    /// Connects to the Redis at `url` and starts the reader task.
    ///
    /// Events live in the stream `{prefix}:events`, trimmed to about
    /// `limits.history` entries; the local ring holds what `limits` allow.
    ///
    /// A Redis that cannot be reached now is an outage like any later one:
    /// the broker starts down (publishes fail, `/healthz` says so) and its
    /// reader connects with backoff until Redis appears.
    ///
    /// # Errors
    /// When the URL is invalid, or Redis answers but refuses the connection
    /// (a wrong password, an unknown database): retrying cannot fix that.
    pub async fn start(
        url: &str,
        prefix: &str,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BrokerError> {
        let redacted_url = redact_url(url);
        let client = Client::open(url).map_err(|err| {
            BrokerError::Unavailable(format!("invalid Redis URL {redacted_url}: {err}"))
        })?;
        let key = format!("{prefix}:events");
        let first = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            let mut publisher = connect_publisher(&client).await?;
            let info = stream_info(&mut publisher, &key).await?;
            Ok::<_, RedisError>((publisher, info))
        })
        .await;
        let (publisher, start_id) = match first {
            Ok(Ok((publisher, info))) => (Some(publisher), Some(info.last)),
            Ok(Err(err)) if !is_unreachable(&err) => {
                return Err(BrokerError::Unavailable(format!(
                    "Redis at {redacted_url} refused the connection: {err}"
                )))
            }
            Ok(Err(err)) => {
                tracing::warn!(redis = %redacted_url, cause = %err, "cannot reach Redis; serving degraded (publishes get 503) and retrying");
                (None, None)
            }
            Err(_) => {
                tracing::warn!(redis = %redacted_url, cause = "no answer", "cannot reach Redis; serving degraded (publishes get 503) and retrying");
                (None, None)
            }
        };
        // The reader appends everything after the stream's current end
        // (learnt when Redis is first reached, if it is down now).
        let base = start_id.unwrap_or(EventId::new(0, 0));
        let hub = Arc::new(Hub::new(limits, base, Arc::clone(&metrics)));
        metrics.broker_up.set(i64::from(publisher.is_some()));
        let state = Arc::new(State {
            hub,
            metrics,
            up: AtomicBool::new(publisher.is_some()),
            publisher: OnceLock::new(),
            redacted_url,
        });
        if let Some(publisher) = publisher {
            let _ = state.publisher.set(publisher);
        }
        let (position_tx, position) = watch::channel(base);
        let stop = CancellationToken::new();
        let reader = Reader {
            client,
            key: key.clone(),
            state: Arc::clone(&state),
            position: position_tx,
            stop: stop.clone(),
        };
        let reader = tokio::spawn(reader.run(start_id));
        tracing::info!(redis = %state.redacted_url, %key, start = %base, "Redis broker started");
        Ok(Self {
            state,
            key,
            history: limits.history,
            position,
            stop,
            reader: Mutex::new(Some(reader)),
            open: tokio::sync::RwLock::new(true),
            acknowledged: Mutex::new(base),
        })
    }

    /// The publish connection, or an error while Redis has not been
    /// reached since the server started.
    fn publisher(&self) -> Result<ConnectionManager, RedisError> {
        self.state.publisher.get().cloned().ok_or_else(|| {
            RedisError::from((
                ErrorKind::Io,
                "Redis has not been reachable since the server started",
            ))
        })
    }

    /// The fan-out hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.state.hub
    }

    /// Whether Redis is reachable, as last seen.
    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::Acquire)
    }

    /// Appends an event to the stream; returns its id once Redis has it.
    /// Subscribers (here and on every other instance) get it from their
    /// instance's reader.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when Redis refused the event or could
    /// not be reached; the event was then not stored.
    /// [`BrokerError::Uncertain`] when Redis did not answer in time: the
    /// event may still be stored. [`BrokerError::ShuttingDown`] once
    /// shutdown started.
    pub async fn publish(
        &self,
        topic: &str,
        event: &str,
        data: &str,
    ) -> Result<EventId, BrokerError> {
        let open = self.open.read().await;
        if !*open {
            return Err(BrokerError::ShuttingDown);
        }
        let id = self.xadd(topic, event, data).await?;
        let mut acknowledged = self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        *acknowledged = (*acknowledged).max(id);
        Ok(id)
    }

    /// Like [`RedisBroker::publish`], once per idempotency `key`: a Lua
    /// script returns the id stored under `{prefix}:idem:{key}` while that
    /// entry is still in the stream, else adds the entry and stores its id
    /// under the key, atomically, so it holds across instances.
    ///
    /// # Errors
    /// As [`RedisBroker::publish`].
    pub async fn publish_once(
        &self,
        key: &str,
        topic: &str,
        event: &str,
        data: &str,
    ) -> Result<EventId, BrokerError> {
        let open = self.open.read().await;
        if !*open {
            return Err(BrokerError::ShuttingDown);
        }
        let prefix = self.key.strip_suffix(":events").unwrap_or(&self.key);
        let mut script = redis::cmd("EVAL");
        script
            .arg(PUBLISH_ONCE)
            .arg(2)
            .arg(&self.key)
            .arg(format!("{prefix}:idem:{key}"))
            .arg(self.history)
            .arg(topic)
            .arg(event)
            .arg(data)
            .arg(IDEMPOTENCY_TTL.as_millis() as u64);
        let mut connection = self.publisher().map_err(|err| {
            BrokerError::Unavailable(format!("Redis did not take the event: {err}"))
        })?;
        let reply = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            script.query_async::<String>(&mut connection),
        )
        .await;
        let id = self.answer(reply)?;
        let mut acknowledged = self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        *acknowledged = (*acknowledged).max(id);
        Ok(id)
    }

    /// The id an `XADD` (or the publish script) answered, or why not.
    fn answer(
        &self,
        reply: Result<Result<String, RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<EventId, BrokerError> {
        match reply {
            Ok(Ok(id)) => id.parse::<EventId>().map_err(|_| {
                BrokerError::Unavailable(format!(
                    "Redis answered XADD with an unexpected id {id:?}"
                ))
            }),
            Ok(Err(err)) => {
                if is_outage(&err) {
                    self.state.set_up(false, Some(&err));
                }
                Err(BrokerError::Unavailable(format!(
                    "Redis did not take the event: {err}"
                )))
            }
            Err(_) => {
                self.state.set_up(false, Some(&"publish timed out"));
                Err(BrokerError::Uncertain(format!(
                    "Redis did not answer within {PUBLISH_TIMEOUT:?}; the event may or may not have been stored"
                )))
            }
        }
    }

    /// Appends `events` (topic, event type, data) in order in one
    /// `MULTI`/`EXEC`: Redis stores all of them or none.
    ///
    /// # Errors
    /// As [`RedisBroker::publish`].
    pub async fn publish_batch(
        &self,
        events: &[(String, String, String)],
    ) -> Result<Vec<EventId>, BrokerError> {
        let open = self.open.read().await;
        if !*open {
            return Err(BrokerError::ShuttingDown);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (topic, event, data) in events {
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.history)
                .arg("*")
                .arg("topic")
                .arg(topic)
                .arg("event")
                .arg(event)
                .arg("data")
                .arg(data);
        }
        let mut connection = self.publisher().map_err(|err| {
            BrokerError::Unavailable(format!("Redis did not take the events: {err}"))
        })?;
        let reply = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            pipe.query_async::<Vec<String>>(&mut connection),
        )
        .await;
        let ids = match reply {
            Ok(Ok(ids)) => ids
                .iter()
                .map(|id| {
                    id.parse::<EventId>().map_err(|_| {
                        BrokerError::Unavailable(format!(
                            "Redis answered XADD with an unexpected id {id:?}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Ok(Err(err)) => {
                if is_outage(&err) {
                    self.state.set_up(false, Some(&err));
                }
                return Err(BrokerError::Unavailable(format!(
                    "Redis did not take the events: {err}"
                )));
            }
            Err(_) => {
                self.state.set_up(false, Some(&"publish timed out"));
                return Err(BrokerError::Uncertain(format!(
                    "Redis did not answer within {PUBLISH_TIMEOUT:?}; the events may or may not have been stored (all or none)"
                )));
            }
        };
        if let Some(&last) = ids.last() {
            let mut acknowledged = self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
            *acknowledged = (*acknowledged).max(last);
        }
        Ok(ids)
    }

    async fn xadd(&self, topic: &str, event: &str, data: &str) -> Result<EventId, BrokerError> {
        let mut command = redis::cmd("XADD");
        command
            .arg(&self.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.history)
            .arg("*")
            .arg("topic")
            .arg(topic)
            .arg("event")
            .arg(event)
            .arg("data")
            .arg(data);
        let mut connection = match self.publisher() {
            Ok(connection) => connection,
            Err(err) => {
                return Err(BrokerError::Unavailable(format!(
                    "Redis did not take the event: {err}"
                )))
            }
        };
        let reply = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            command.query_async::<String>(&mut connection),
        )
        .await;
        // A timeout means the command was sent: Redis may yet store it.
        self.answer(reply)
    }

    /// Subscribes where `start` asks.
    ///
    /// Never fails: when Redis cannot be asked about an id the ring does not
    /// cover, the client is sent the too-old notice and everything the ring
    /// holds (told, not silently given a hole).
    pub async fn subscribe(
        &self,
        topics: Vec<Arc<str>>,
        start: Start<'_>,
        connection: CancellationToken,
    ) -> Subscription {
        // The ring first. The reader appends every entry after the hub's
        // base in stream order, so the ring covers the stream from its floor
        // to its newest event: a resume inside that range is served with no
        // round trip to Redis (the common case: a client reconnecting after
        // a blip), and keeps working while Redis is down. Only an id outside
        // it needs the stream's own state.
        let (subscription, opened) =
            self.hub()
                .subscribe(topics.clone(), start, connection.clone());
        if let Plan::Newest(n @ 1..) = opened.plan {
            return self.newest(subscription, topics, n, connection).await;
        }
        let (Plan::TooOld { .. }, Start::After(requested)) = (opened.plan, start) else {
            return subscription;
        };
        // Not kept across the Redis round trip: live events would count
        // against its queue meanwhile.
        drop(subscription);
        match self
            .resume_from_stream(topics.clone(), requested, connection.clone())
            .await
        {
            Ok(subscription) => subscription,
            Err(cause) => {
                tracing::warn!(%cause, "cannot read the replay from Redis; replaying the local history with a too-old notice");
                let (mut subscription, opened) = self.hub().subscribe(topics, start, connection);
                if let Plan::TooOld { resume } = opened.plan {
                    subscription.prepend(too_old_notice(resume, requested, opened.first_replayed));
                }
                subscription
            }
        }
    }

    /// A resume the ring alone cannot serve: the stream's state decides
    /// ([`resume::plan`]); what lies between the resume point and the ring
    /// is read with `XRANGE`, and the subscription continues in the ring,
    /// with no gap and no duplicate.
    async fn resume_from_stream(
        &self,
        topics: Vec<Arc<str>>,
        requested: &str,
        connection: CancellationToken,
    ) -> Result<Subscription, String> {
        let mut publisher = self.publisher().map_err(|err| err.to_string())?;
        let info = tokio::time::timeout(QUERY_TIMEOUT, stream_info(&mut publisher, &self.key))
            .await
            .map_err(|_| "XINFO timed out".to_owned())?
            .map_err(|err| err.to_string())?;
        let (after, told) = match resume::plan(Start::After(requested), info) {
            Plan::After(id) => (id, false),
            Plan::TooOld { resume } => (resume, true),
            Plan::Live | Plan::Newest(_) => (info.last, false),
        };
        self.replay_after(topics, after, told.then_some(requested), connection)
            .await
    }

    /// A subscription from right after `after`: what lies between `after`
    /// and the ring is read from the stream, the rest comes from the ring.
    /// With `too_old` (the id the client asked for), the too-old notice
    /// goes first.
    async fn replay_after(
        &self,
        topics: Vec<Arc<str>>,
        after: EventId,
        too_old: Option<&str>,
        connection: CancellationToken,
    ) -> Result<Subscription, String> {
        // Everything up to `after` must have reached the ring first, or the
        // reader would deliver entries the client already has.
        let mut position = self.position.clone();
        tokio::time::timeout(CATCH_UP_TIMEOUT, position.wait_for(|seen| *seen >= after))
            .await
            .map_err(|_| "this instance's reader is behind the stream".to_owned())?
            .map_err(|_| "the reader has stopped".to_owned())?;
        let (mut subscription, opened) =
            self.hub()
                .subscribe_after(topics.clone(), after, connection);
        // The ring covers the stream after its floor: fetch what lies
        // between the resume point and there.
        let replay = if after < opened.retained.floor {
            tokio::time::timeout(
                QUERY_TIMEOUT,
                self.range(after, opened.retained.floor, &topics),
            )
            .await
            .map_err(|_| "XRANGE timed out".to_owned())?
            .map_err(|err| err.to_string())?
        } else {
            Vec::new()
        };
        if let Some(requested) = too_old {
            let oldest = replay.first().map(|e| e.id).or(opened.first_replayed);
            subscription.prepend(too_old_notice(after, requested, oldest));
        }
        for chunk in chunks(replay) {
            subscription.prepend(chunk);
        }
        Ok(subscription)
    }

    /// `?last=N` with the Redis broker: the ring holds only what this
    /// instance has read since it started, so the newest `n` events of the
    /// topics are looked up in the stream, and replayed from there. Falls
    /// back to what the ring holds (`ring`) when Redis cannot be asked.
    async fn newest(
        &self,
        ring: Subscription,
        topics: Vec<Arc<str>>,
        n: usize,
        connection: CancellationToken,
    ) -> Subscription {
        let found = tokio::time::timeout(QUERY_TIMEOUT, self.nth_newest(n, &topics)).await;
        let after = match found {
            Ok(Ok(Some(id))) => predecessor(id),
            // Fewer than `n`: everything retained.
            Ok(Ok(None)) => EventId::new(0, 0),
            Ok(Err(err)) => {
                tracing::warn!(cause = %err, "cannot look up ?last in Redis; replaying from local history");
                return ring;
            }
            Err(_) => {
                tracing::warn!("looking up ?last in Redis timed out; replaying from local history");
                return ring;
            }
        };
        drop(ring);
        match self
            .replay_after(topics.clone(), after, None, connection.clone())
            .await
        {
            Ok(subscription) => subscription,
            Err(cause) => {
                tracing::warn!(%cause, "cannot read ?last from Redis; replaying from local history");
                self.hub().subscribe(topics, Start::Newest(n), connection).0
            }
        }
    }

    /// The id of the `n`th newest entry on `topics` (`None` when the stream
    /// holds fewer), read backwards page by page.
    async fn nth_newest(
        &self,
        n: usize,
        topics: &[Arc<str>],
    ) -> Result<Option<EventId>, RedisError> {
        let mut publisher = self.publisher()?;
        let mut before: Option<EventId> = None;
        let mut found = 0;
        loop {
            let end = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
            let page: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&self.key)
                .arg(end)
                .arg("-")
                .arg("COUNT")
                .arg(REPLAY_PAGE)
                .query_async(&mut publisher)
                .await?;
            for entry in &page.ids {
                let Ok(id) = entry.id.parse::<EventId>() else {
                    continue;
                };
                before = Some(id);
                if stored(entry).is_some_and(|event| topics.contains(&event.topic)) {
                    found += 1;
                    if found == n {
                        return Ok(Some(id));
                    }
                }
            }
            if page.ids.len() < REPLAY_PAGE {
                return Ok(None);
            }
        }
    }

    /// Events on `topics` after `after` up to `through` (included), oldest
    /// first, read from the stream page by page.
    async fn range(
        &self,
        after: EventId,
        through: EventId,
        topics: &[Arc<str>],
    ) -> Result<Vec<StoredEvent>, RedisError> {
        let mut publisher = self.publisher()?;
        let mut events = Vec::new();
        let mut from = after;
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(format!("({from}"))
                .arg(through.to_string())
                .arg("COUNT")
                .arg(REPLAY_PAGE)
                .query_async(&mut publisher)
                .await?;
            let full = page.ids.len() >= REPLAY_PAGE;
            for entry in &page.ids {
                // The cursor moves past every entry, ours or not: a page of
                // entries someone else wrote would otherwise be read again
                // and again.
                if let Ok(id) = entry.id.parse::<EventId>() {
                    from = from.max(id);
                }
                let Some(event) = stored(entry) else { continue };
                if topics.contains(&event.topic) {
                    events.push(event);
                }
            }
            if !full {
                return Ok(events);
            }
        }
    }

    /// Stops the reader task. Idempotent.
    ///
    /// First takes no more publishes, and lets the reader reach the end of
    /// the stream (at most [`SHUTDOWN_CATCH_UP`]), so that streams then
    /// deliver every event acknowledged before they end.
    pub async fn shutdown(&self) {
        *self.open.write().await = false;
        let mut target = *self.acknowledged.lock().unwrap_or_else(|e| e.into_inner());
        let publisher = self.publisher();
        let catch_up = async {
            if let Ok(mut publisher) = publisher {
                if let Ok(info) = stream_info(&mut publisher, &self.key).await {
                    target = target.max(info.last);
                }
            }
            let mut position = self.position.clone();
            let _ = position.wait_for(|seen| *seen >= target).await;
        };
        if tokio::time::timeout(SHUTDOWN_CATCH_UP, catch_up)
            .await
            .is_err()
        {
            tracing::warn!(%target, "the Redis reader did not reach the end of the stream before shutdown");
        }
        self.stop.cancel();
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(reader) = reader {
            if let Err(err) = reader.await {
                tracing::warn!(cause = %err, "the Redis reader task failed");
            }
        }
        self.state.hub.finish();
    }
}

/// The reader task: moves every new stream entry into the hub.
struct Reader {
    client: Client,
    key: String,
    state: Arc<State>,
    position: watch::Sender<EventId>,
    stop: CancellationToken,
}

impl Reader {
    /// Reads from after `position` until stopped, reconnecting with backoff
    /// whenever the connection fails. `None`: Redis was down at start, and
    /// the reader starts at the stream's end once it first reaches it.
    async fn run(self, start: Option<EventId>) {
        let mut synced = start.is_some();
        let mut position = start.unwrap_or(EventId::new(0, 0));
        let mut backoff = RECONNECT_MIN;
        loop {
            let connected = tokio::select! {
                () = self.stop.cancelled() => return,
                connected = self.connect() => connected,
            };
            match connected {
                Ok(mut connection) => {
                    if self
                        .stop
                        .run_until_cancelled(self.follow(
                            &mut connection,
                            &mut position,
                            &mut synced,
                            &mut backoff,
                        ))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
                Err(err) => self.state.set_up(false, Some(&err)),
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    /// A connection of its own, with no response timeout: `XREAD BLOCK`
    /// holds its reply back on purpose, and redis-rs would otherwise give up
    /// on it after 500 ms.
    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Reads entries until the connection fails.
    async fn follow(
        &self,
        connection: &mut MultiplexedConnection,
        position: &mut EventId,
        synced: &mut bool,
        backoff: &mut Duration,
    ) {
        if !*synced {
            if !self.sync_to_stream_end(connection, position).await {
                return;
            }
            *synced = true;
        }
        if !self.ensure_publisher().await {
            return;
        }
        if !self.check_for_gap(connection, position).await {
            // Reading on without knowing could wait forever behind a stream
            // that went backwards: reconnect and check again.
            return;
        }
        loop {
            if !self.state.up.load(Ordering::Acquire) {
                // The reader's connection works; publishes need the other one.
                if self.probe_publisher().await {
                    self.state.set_up(true, None);
                    *backoff = RECONNECT_MIN;
                }
            }
            let mut command = redis::cmd("XREAD");
            command
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(position.to_string());
            let reply = tokio::time::timeout(
                READ_BLOCK + READ_GRACE,
                command.query_async::<Option<StreamReadReply>>(connection),
            )
            .await;
            let reply = match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(err)) => {
                    self.state.set_up(false, Some(&err));
                    return;
                }
                Err(_) => {
                    self.state.set_up(false, Some(&"XREAD got no answer"));
                    return;
                }
            };
            let entries = reply
                .into_iter()
                .flat_map(|reply| reply.keys)
                .flat_map(|key| key.ids);
            let mut moved = false;
            for entry in entries {
                let Ok(id) = entry.id.parse::<EventId>() else {
                    tracing::warn!(id = %entry.id, "skipping a stream entry with an unexpected id");
                    continue;
                };
                *position = id;
                moved = true;
                if let Some(event) = stored(&entry) {
                    if !self.state.hub.push(event) {
                        tracing::warn!(%id, "dropping a stream entry older than one already delivered");
                    }
                }
            }
            if moved {
                self.position.send_replace(*position);
            }
        }
    }

    /// First contact after a degraded start: live from the stream's end
    /// (there is no earlier position to continue from). `false` when the
    /// stream's state could not be read.
    async fn sync_to_stream_end(
        &self,
        connection: &mut MultiplexedConnection,
        position: &mut EventId,
    ) -> bool {
        let info = tokio::time::timeout(QUERY_TIMEOUT, stream_info(connection, &self.key)).await;
        let Ok(Ok(info)) = info else {
            return false;
        };
        *position = info.last;
        self.position.send_replace(info.last);
        self.state.hub.reset(info.last);
        true
    }

    /// Opens the publish connection if there is none yet; `false` when it
    /// cannot be opened now.
    async fn ensure_publisher(&self) -> bool {
        if self.state.publisher.get().is_some() {
            return true;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, connect_publisher(&self.client)).await {
            Ok(Ok(publisher)) => {
                let _ = self.state.publisher.set(publisher);
                true
            }
            Ok(Err(err)) => {
                tracing::warn!(redis = %self.state.redacted_url, cause = %err, "cannot open the publish connection to Redis");
                false
            }
            Err(_) => false,
        }
    }

    /// After (re)connecting: if entries after `position` may have been
    /// trimmed while this reader was away, the hub missed them, and its
    /// subscribers would get a silent hole. End their streams instead:
    /// they resume with `Last-Event-ID` and the subscribe path tells them.
    ///
    /// Returns `false` when the stream's state could not be read.
    async fn check_for_gap(
        &self,
        connection: &mut MultiplexedConnection,
        position: &mut EventId,
    ) -> bool {
        // On the reader's own connection, just made: the publisher's may
        // still be reconnecting.
        let info = tokio::time::timeout(QUERY_TIMEOUT, stream_info(connection, &self.key)).await;
        let Ok(Ok(info)) = info else {
            return false;
        };
        if info.last < *position {
            // Redis came back without the entries this instance read (a
            // restart without persistence, or the key deleted): new ids
            // may sort below `position`, so reading on from there would
            // wait for ids that never come, and the ring would refuse
            // new entries as out of order.
            tracing::warn!(
                %position,
                stream_last = %info.last,
                "the Redis stream is behind what this instance read (Redis restarted empty?); resetting history and ending streams so clients resume"
            );
            *position = info.last;
            self.position.send_replace(info.last);
            self.state.hub.reset(info.last);
        } else if *position < info.floor {
            tracing::warn!(
                %position,
                floor = %info.floor,
                "entries were trimmed while this instance was disconnected; ending streams so clients resume"
            );
            self.state.hub.end_all();
        }
        true
    }

    /// Whether the publish connection works (a command that fails while
    /// Redis is still loading its data, unlike `PING`).
    async fn probe_publisher(&self) -> bool {
        let Some(mut publisher) = self.state.publisher.get().cloned() else {
            return false;
        };
        let mut command = redis::cmd("EXISTS");
        command.arg(&self.key);
        let probe = command.query_async::<i64>(&mut publisher);
        matches!(
            tokio::time::timeout(PUBLISH_TIMEOUT, probe).await,
            Ok(Ok(_))
        )
    }
}

/// The connection publishes and queries go through: it reconnects on its
/// own, a couple of times per command.
async fn connect_publisher(client: &Client) -> Result<ConnectionManager, RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(QUERY_TIMEOUT))
        .set_number_of_retries(PUBLISH_RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN)
        .set_max_delay(RECONNECT_MAX);
    ConnectionManager::new_with_config(client.clone(), config).await
}

/// Whether `err`, met while connecting, means Redis is not there (yet), as
/// opposed to there and refusing us (a wrong password), which waiting
/// does not fix.
fn is_unreachable(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
            )
        )
}

/// Whether `err` means Redis cannot be used now (rather than refusing one
/// command).
fn is_outage(err: &RedisError) -> bool {
    match err.kind() {
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading | ServerErrorKind::TryAgain | ServerErrorKind::MasterDown
        ),
        _ => true,
    }
}

/// What the stream retains, from `XINFO STREAM`; a stream that does not
/// exist yet is empty.
async fn stream_info(
    connection: &mut (impl redis::aio::ConnectionLike + Send),
    key: &str,
) -> Result<Retained, RedisError> {
    let exists: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(connection)
        .await?;
    let empty = Retained {
        floor: EventId::new(0, 0),
        last: EventId::new(0, 0),
    };
    if exists == 0 {
        return Ok(empty);
    }
    let mut info: HashMap<String, Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(key)
        .query_async(connection)
        .await?;
    let id_field = |info: &mut HashMap<String, Value>, name: &str| {
        info.remove(name)
            .and_then(|value| redis::from_redis_value::<String>(value).ok())
            .and_then(|text| text.parse::<EventId>().ok())
    };
    let last = id_field(&mut info, "last-generated-id").unwrap_or(empty.last);
    let first = match info.remove("first-entry") {
        Some(Value::Array(mut parts)) if !parts.is_empty() => {
            redis::from_redis_value::<String>(parts.swap_remove(0))
                .ok()
                .and_then(|id| id.parse().ok())
        }
        _ => None,
    };
    // An id below the first entry was trimmed away (or never existed): the
    // stream cannot tell which trimmed id was the last, so only the first
    // entry's predecessor (the resume point a notice hands out) is
    // accepted. An empty stream accepts only its last id. Redis 7 also
    // reports entries deleted with XDEL from the middle.
    let below_first = first.map_or(last, predecessor);
    let deleted = id_field(&mut info, "max-deleted-entry-id").unwrap_or(empty.floor);
    Ok(Retained {
        floor: below_first.max(deleted),
        last,
    })
}

/// The event a stream entry holds, encoded; `None` (with a warning) for an
/// entry this server did not write and cannot send.
fn stored(entry: &StreamId) -> Option<StoredEvent> {
    let id = entry.id.parse::<EventId>().ok()?;
    let field = |name: &str| match entry.map.get(name) {
        Some(Value::BulkString(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Some(Value::SimpleString(text)) => Some(text.clone()),
        _ => None,
    };
    let (Some(topic), Some(event), Some(data)) = (field("topic"), field("event"), field("data"))
    else {
        tracing::warn!(%id, "skipping a stream entry without topic, event and data fields");
        return None;
    };
    if wire::check_name("topic", &topic).is_err() || wire::check_name("event", &event).is_err() {
        tracing::warn!(%id, "skipping a stream entry with an invalid topic or event name");
        return None;
    }
    Some(StoredEvent {
        id,
        topic: Arc::from(topic),
        wire: wire::encode_event(&id.to_string(), &event, &data),
    })
}

/// Joins events' bytes into writes of about [`REPLAY_CHUNK_BYTES`].
fn chunks(events: Vec<StoredEvent>) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    for event in events {
        if !buf.is_empty() && buf.len() + event.wire.len() > REPLAY_CHUNK_BYTES {
            out.push(buf.split().freeze());
        }
        buf.extend_from_slice(&event.wire);
    }
    if !buf.is_empty() {
        out.push(buf.freeze());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_encoded_events_or_are_skipped() {
        let entry = |fields: &[(&str, &str)]| StreamId {
            id: "7-1".to_owned(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..StreamId::default()
        };
        let event = stored(&entry(&[
            ("topic", "news"),
            ("event", "tick"),
            ("data", "a\nb"),
        ]))
        .unwrap();
        assert_eq!(event.id, EventId::new(7, 1));
        assert_eq!(&*event.topic, "news");
        assert_eq!(
            &event.wire[..],
            b"id: 7-1\nevent: tick\ndata: a\ndata: b\n\n"
        );
        assert!(stored(&entry(&[("topic", "news"), ("data", "x")])).is_none());
        assert!(stored(&entry(&[("topic", "a\nb"), ("event", "e"), ("data", "x")])).is_none());
    }

    #[test]
    fn replays_are_joined_into_bounded_writes() {
        let event = |n: usize| StoredEvent {
            id: EventId::new(1, n as u64),
            topic: Arc::from("t"),
            wire: Bytes::from(vec![b'x'; 40 * 1024]),
        };
        let out = chunks((0..3).map(event).collect());
        assert_eq!(out.len(), 3);
        assert!(chunks(Vec::new()).is_empty());
        let small: Vec<_> = (0..10)
            .map(|n| StoredEvent {
                wire: Bytes::from_static(b"id: 1\n\n"),
                ..event(n)
            })
            .collect();
        assert_eq!(chunks(small), vec![Bytes::from("id: 1\n\n".repeat(10))]);
    }
}
