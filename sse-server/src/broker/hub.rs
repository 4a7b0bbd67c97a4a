//! Local fan-out: one shared ring of encoded events, a cursor per subscriber.
//!
//! Both brokers end here. The memory broker pushes each published event; the
//! Redis broker pushes each entry its reader gets from the shared stream.
//! Publishing writes one slot and wakes the subscribers of that topic; each
//! subscriber then copies `Bytes` handles (not event data) out of the ring
//! from its own cursor. Nothing per subscriber grows with the event rate: a
//! subscriber that falls more than `queue` events behind is disconnected and
//! can resume with `Last-Event-ID`.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, RwLock,
    },
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::{task::AtomicWaker, Stream};
use tokio_util::sync::CancellationToken;

use super::resume::{self, Plan, Retained, Start};
use crate::{metrics::Metrics, wire::EventId};

/// Most bytes a lagging subscriber gets in one write: several pending events
/// go out in one socket write (cheaper than one write each), bounded so one
/// subscriber never holds a large copy.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// What the hub may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events kept for replay (`--history`).
    pub history: usize,
    /// Encoded bytes kept for replay (`--history-bytes`); the newest event
    /// is kept whatever its size, so live subscribers get it.
    pub history_bytes: usize,
    /// Live events a subscriber may have pending (`--queue`).
    pub queue: usize,
}

impl Limits {
    /// The limits the configuration sets.
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            history: config.history,
            history_bytes: config.history_bytes,
            queue: config.queue,
        }
    }
}

/// One event as the ring holds it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The broker's id of the event.
    pub id: EventId,
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// Its encoded `text/event-stream` bytes, shared by every subscriber.
    pub wire: Bytes,
}

/// How a subscription was opened, read under the ring lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Where it starts, as [`resume::plan`] decided.
    pub plan: Plan,
    /// What the ring retained at that instant.
    pub retained: Retained,
    /// The first event of the subscriber's topics the ring replays to it:
    /// when the whole history is replayed, the oldest retained event of
    /// those topics. Only looked for when the plan is [`Plan::TooOld`] or
    /// the position was given ([`Hub::subscribe_after`]).
    pub first_replayed: Option<EventId>,
}

struct Ring {
    events: VecDeque<StoredEvent>,
    /// Ring position of `events[0]`; positions only ever grow.
    first_pos: u64,
    capacity: usize,
    /// Encoded bytes of the events held, and the most allowed.
    bytes: usize,
    max_bytes: usize,
    /// Id of the newest event ever appended, or the hub's base before any.
    last_id: EventId,
    /// Set by [`Hub::finish`]: nothing more is appended.
    finished: bool,
}

impl Ring {
    fn head(&self) -> u64 {
        self.first_pos + self.events.len() as u64
    }

    /// What the ring retains. The ring holds every event after its base
    /// (eviction aside), so it covers every id from the oldest event's
    /// predecessor (or the base, while empty) to the newest.
    fn retained(&self) -> Retained {
        Retained {
            floor: self
                .events
                .front()
                .map_or(self.last_id, |first| resume::predecessor(first.id)),
            last: self.last_id,
        }
    }

    /// Ring position of the first event newer than `id`.
    fn position_after(&self, id: EventId) -> u64 {
        // Ids in the ring increase, so the first newer one is found by
        // binary search.
        self.first_pos + self.events.partition_point(|e| e.id <= id) as u64
    }

    /// Ring position of the newest `n` events on `topics` (the first
    /// retained one when fewer).
    fn position_of_newest(&self, n: usize, topics: &[Arc<str>]) -> u64 {
        if n == 0 {
            return self.head();
        }
        let mut found = 0;
        for (index, event) in self.events.iter().enumerate().rev() {
            if topics.contains(&event.topic) {
                found += 1;
                if found == n {
                    return self.first_pos + index as u64;
                }
            }
        }
        self.first_pos
    }

    /// Id of the first event on `topics` at or after ring position `pos`.
    fn first_on(&self, pos: u64, topics: &[Arc<str>]) -> Option<EventId> {
        let offset = pos.saturating_sub(self.first_pos) as usize;
        self.events
            .range(offset.min(self.events.len())..)
            .find(|e| topics.contains(&e.topic))
            .map(|e| e.id)
    }
}

/// What a subscriber shares with publishers.
struct Shared {
    waker: AtomicWaker,
    /// Live events published for this subscriber and not yet taken.
    pending: AtomicI64,
    /// Ring position where live events start for this subscriber; earlier
    /// ones are replay and do not count against its queue.
    live_from: u64,
    /// Set when the subscriber must stop (too slow, or shutdown).
    ended: AtomicBool,
    /// Cancelled to drop the subscriber's connection even when it is not
    /// being polled (a client that stopped reading blocks its writes).
    connection: CancellationToken,
    /// Unix second at which the subscription ends (its token expires);
    /// 0 for never. Checked by [`Hub::expire`], one timer for all.
    expires_at: AtomicU64,
}

type Registry = HashMap<Arc<str>, HashMap<u64, Arc<Shared>>>;

/// The fan-out hub. Cheap to share: wrap it in an `Arc`.
pub struct Hub {
    ring: Mutex<Ring>,
    subscribers: RwLock<Registry>,
    next_key: AtomicU64,
    queue: usize,
    heartbeat: AtomicU64,
    /// Set by [`Hub::finish`]: streams end once they have sent everything.
    finishing: AtomicBool,
    /// Bumped to end every current subscription (see [`Hub::end_all`]).
    generation: AtomicU64,
    /// Earliest `expires_at` of any subscriber (`u64::MAX`: none), so
    /// [`Hub::expire`] looks at subscribers only when one is due.
    next_expiry: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub within `limits` (a subscriber's queue is at most the history).
    /// `base` is the id just before the first event it will hold: a resume
    /// from `base` misses nothing.
    pub fn new(limits: Limits, base: EventId, metrics: Arc<Metrics>) -> Self {
        let history = limits.history.max(1);
        let queue = limits.queue;
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(history.min(1024)),
                first_pos: 0,
                capacity: history,
                bytes: 0,
                max_bytes: limits.history_bytes,
                last_id: base,
                finished: false,
            }),
            subscribers: RwLock::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            queue: queue.clamp(1, history),
            heartbeat: AtomicU64::new(0),
            finishing: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            next_expiry: AtomicU64::new(u64::MAX),
            metrics,
        }
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves the ring consistent (every
        // mutation is a single push/pop), so a poisoned lock is still usable.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.subscribers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn registry_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.subscribers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the event `make` builds from the newest id (so the caller
    /// can number events in order, atomically with other appends), and
    /// wakes the subscribers of its topic. Returns the event's id, or `None`
    /// (appending nothing) once the hub is finishing.
    ///
    /// The event's id must be greater than the one `make` was given.
    pub fn append(&self, make: impl FnOnce(EventId) -> StoredEvent) -> Option<EventId> {
        let mut ring = self.ring();
        if ring.finished {
            return None;
        }
        let event = make(ring.last_id);
        debug_assert!(event.id > ring.last_id, "appended ids must increase");
        let id = event.id;
        let (pos, topic) = self.insert(&mut ring, event);
        drop(ring);
        self.fan_out(pos, &topic);
        Some(id)
    }

    /// Whether the event `id` is still in the ring (published and not yet
    /// evicted).
    pub fn retains(&self, id: EventId) -> bool {
        let retained = self.ring().retained();
        id > retained.floor && id <= retained.last
    }

    /// Appends several events under one lock, each made from the id of the
    /// one before (so no other append comes between them), and wakes their
    /// subscribers. Returns their ids, or `None` (appending nothing) once
    /// the hub is finishing.
    pub fn append_many(
        &self,
        count: usize,
        mut make: impl FnMut(usize, EventId) -> StoredEvent,
    ) -> Option<Vec<EventId>> {
        let mut ring = self.ring();
        if ring.finished {
            return None;
        }
        let mut ids = Vec::with_capacity(count);
        let mut woken = Vec::with_capacity(count);
        for n in 0..count {
            let event = make(n, ring.last_id);
            debug_assert!(event.id > ring.last_id, "appended ids must increase");
            ids.push(event.id);
            woken.push(self.insert(&mut ring, event));
        }
        drop(ring);
        for (pos, topic) in woken {
            self.fan_out(pos, &topic);
        }
        Some(ids)
    }

    /// Appends an event numbered elsewhere (a Redis stream entry) and wakes
    /// the subscribers of its topic.
    ///
    /// Returns `false`, appending nothing, when the event is not newer than
    /// the newest one (a Redis reader may see an entry twice after
    /// reconnecting), or once the hub is finishing.
    pub fn push(&self, event: StoredEvent) -> bool {
        let mut ring = self.ring();
        if event.id <= ring.last_id || ring.finished {
            return false;
        }
        let (pos, topic) = self.insert(&mut ring, event);
        drop(ring);
        self.fan_out(pos, &topic);
        true
    }

    /// Fills the ring with events kept from an earlier run (durable
    /// history), oldest first, before anyone subscribes: not counted as
    /// published, no one woken. Events not newer than the newest are
    /// skipped.
    pub fn restore(&self, events: impl IntoIterator<Item = StoredEvent>) {
        let mut ring = self.ring();
        for event in events {
            if event.id > ring.last_id {
                self.insert(&mut ring, event);
            }
        }
    }

    /// Puts `event` at the head of the ring, evicting the oldest beyond
    /// the limits in events or bytes; returns its ring position and topic.
    fn insert(&self, ring: &mut Ring, event: StoredEvent) -> (u64, Arc<str>) {
        let topic = Arc::clone(&event.topic);
        ring.last_id = event.id;
        let pos = ring.head();
        ring.bytes += event.wire.len();
        ring.events.push_back(event);
        while ring.events.len() > ring.capacity
            || (ring.bytes > ring.max_bytes && ring.events.len() > 1)
        {
            if let Some(evicted) = ring.events.pop_front() {
                ring.bytes -= evicted.wire.len();
                ring.first_pos += 1;
            }
        }
        self.metrics.history_bytes.set(ring.bytes as i64);
        self.metrics.history_events.set(ring.events.len() as i64);
        (pos, topic)
    }

    /// Counts the event at ring position `pos` against every subscriber of
    /// `topic` and wakes them (outside the ring lock).
    fn fan_out(&self, pos: u64, topic: &Arc<str>) {
        self.metrics.published.inc();
        let registry = self.registry();
        if let Some(subscribers) = registry.get(topic) {
            for shared in subscribers.values() {
                if pos < shared.live_from {
                    continue;
                }
                let pending = shared.pending.fetch_add(1, Ordering::AcqRel) + 1;
                if pending > self.queue as i64 {
                    self.end_slow(shared);
                }
                shared.waker.wake();
            }
        }
    }

    fn end_slow(&self, shared: &Shared) {
        if !shared.ended.swap(true, Ordering::AcqRel) {
            self.metrics.dropped_slow.inc();
            tracing::info!("dropping a subscriber that fell behind");
            shared.connection.cancel();
        }
    }

    /// Sends a heartbeat comment to every subscriber that sent nothing since
    /// the previous call. One shared timer calls this; subscribers have none.
    pub fn heartbeat(&self) {
        self.heartbeat.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// Ends every current subscription but keeps serving: their clients
    /// reconnect with `Last-Event-ID` and are told of any gap. For when the
    /// hub may have missed events (a Redis reader whose position was
    /// trimmed away while it was disconnected).
    pub fn end_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    /// Ends the subscriptions whose expiry (see [`Subscription::end_at`])
    /// is at or before `now` (Unix seconds). Cheap when none is due.
    pub fn expire(&self, now: u64) {
        if self.next_expiry.load(Ordering::Acquire) > now {
            return;
        }
        // Recomputed from the subscribers left; one that sets an expiry
        // meanwhile lowers it again with `fetch_min`.
        self.next_expiry.store(u64::MAX, Ordering::Release);
        let mut next = u64::MAX;
        for subscribers in self.registry().values() {
            for shared in subscribers.values() {
                match shared.expires_at.load(Ordering::Acquire) {
                    0 => {}
                    at if at <= now => {
                        shared.ended.store(true, Ordering::Release);
                        shared.waker.wake();
                    }
                    at => next = next.min(at),
                }
            }
        }
        self.next_expiry.fetch_min(next, Ordering::AcqRel);
    }

    /// Forgets every event held and starts again after `base`, ending every
    /// current subscription (clients resume and are told of the gap): for
    /// a Redis stream that went backwards, whose new ids may sort below the
    /// ones held.
    pub fn reset(&self, base: EventId) {
        let mut ring = self.ring();
        // Under the ring lock, so a subscription sees either the old ring
        // and the old generation, or the new ones.
        self.generation.fetch_add(1, Ordering::AcqRel);
        ring.first_pos = ring.head();
        ring.events.clear();
        ring.bytes = 0;
        ring.last_id = base;
        self.metrics.history_bytes.set(0);
        self.metrics.history_events.set(0);
        drop(ring);
        self.wake_all();
    }

    /// Takes no more events, and ends every subscription once it has sent
    /// everything the hub holds for it (server shutdown: every event
    /// acknowledged so far still reaches every subscriber).
    pub fn finish(&self) {
        self.ring().finished = true;
        self.finishing.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake_all(&self) {
        for subscribers in self.registry().values() {
            for shared in subscribers.values() {
                shared.waker.wake();
            }
        }
    }

    /// Subscribes to `topics`, starting where [`resume::plan`] decides for
    /// `start` with what the ring retains now.
    ///
    /// `connection` is cancelled when the subscriber is dropped as too slow;
    /// the server closes the connection on it.
    pub fn subscribe(
        self: &Arc<Self>,
        topics: Vec<Arc<str>>,
        start: Start<'_>,
        connection: CancellationToken,
    ) -> (Subscription, Opened) {
        self.open(topics, connection, false, |retained| {
            resume::plan(start, retained)
        })
    }

    /// Subscribes to `topics` from right after `after`, whatever the ring
    /// holds: for a broker that replays what lies before the ring from
    /// elsewhere (`Opened::retained.floor` says where the ring's coverage
    /// starts).
    pub fn subscribe_after(
        self: &Arc<Self>,
        topics: Vec<Arc<str>>,
        after: EventId,
        connection: CancellationToken,
    ) -> (Subscription, Opened) {
        self.open(topics, connection, true, |_| Plan::After(after))
    }

    fn open(
        self: &Arc<Self>,
        topics: Vec<Arc<str>>,
        connection: CancellationToken,
        find_first: bool,
        decide: impl FnOnce(Retained) -> Plan,
    ) -> (Subscription, Opened) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let ring = self.ring();
        let generation = self.generation.load(Ordering::Acquire);
        let head = ring.head();
        let retained = ring.retained();
        let plan = decide(retained);
        let cursor = match plan {
            Plan::Live => head,
            Plan::After(id) => ring.position_after(id),
            Plan::TooOld { .. } => ring.first_pos,
            Plan::Newest(n) => ring.position_of_newest(n, &topics),
        };
        let first_replayed = (find_first || matches!(plan, Plan::TooOld { .. }))
            .then(|| ring.first_on(cursor, &topics))
            .flatten();
        let shared = Arc::new(Shared {
            waker: AtomicWaker::new(),
            pending: AtomicI64::new(0),
            live_from: head,
            ended: AtomicBool::new(false),
            connection,
            expires_at: AtomicU64::new(0),
        });
        {
            // Registered while the ring is locked: every event appended from
            // here on sees this subscriber, and `live_from` splits replay
            // from live exactly.
            let mut registry = self.registry_mut();
            for topic in &topics {
                registry
                    .entry(Arc::clone(topic))
                    .or_default()
                    .insert(key, Arc::clone(&shared));
            }
        }
        drop(ring);
        self.metrics.clients.inc();
        let subscription = Subscription {
            hub: Arc::clone(self),
            shared,
            key,
            topics,
            cursor,
            prefix: VecDeque::new(),
            heartbeat_seen: self.heartbeat.load(Ordering::Acquire),
            sent_since_heartbeat: false,
            generation,
        };
        let opened = Opened {
            plan,
            retained,
            first_replayed,
        };
        (subscription, opened)
    }

    fn unsubscribe(&self, key: u64, topics: &[Arc<str>]) {
        let mut registry = self.registry_mut();
        for topic in topics {
            if let Some(subscribers) = registry.get_mut(topic) {
                subscribers.remove(&key);
                if subscribers.is_empty() {
                    registry.remove(topic);
                }
            }
        }
        drop(registry);
        self.metrics.clients.dec();
    }
}

/// One subscriber's view of the hub: a stream of `text/event-stream` bytes.
///
/// Yields any bytes put in front with [`Subscription::prepend`] first, then
/// events from the ring. Ends when the hub closes or the subscriber falls
/// too far behind.
pub struct Subscription {
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    key: u64,
    topics: Vec<Arc<str>>,
    cursor: u64,
    prefix: VecDeque<Bytes>,
    heartbeat_seen: u64,
    sent_since_heartbeat: bool,
    generation: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Subscription {
    /// Ends the subscription (cleanly, as the server would end a stream) at
    /// Unix second `at`: when the token that allowed it expires.
    pub fn end_at(&mut self, at: u64) {
        let at = at.max(1);
        self.shared.expires_at.store(at, Ordering::Release);
        self.hub.next_expiry.fetch_min(at, Ordering::AcqRel);
    }

    /// Queues bytes to send before anything from the ring (the `retry:`
    /// field, a too-old notice, events replayed from elsewhere).
    pub fn prepend(&mut self, bytes: Bytes) {
        self.prefix.push_back(bytes);
    }

    /// Takes the next batch of matching events from the ring, if any, with
    /// the number of events in it.
    ///
    /// Returns `None` when events this subscriber was owed were already
    /// evicted: it must end, so that its client resumes and is told.
    fn take_batch(&mut self) -> Option<(Option<Bytes>, u64)> {
        let ring = self.hub.ring();
        if self.cursor < ring.first_pos {
            // Events between the cursor and the ring's start are gone.
            // Replay events may have been ours; live ones were if more are
            // pending than the ring still holds for us (read under the lock,
            // so no newer event can have been counted yet).
            if self.cursor < self.shared.live_from {
                return None;
            }
            let live_from = self.shared.live_from;
            let ours = (ring.first_pos..)
                .zip(&ring.events)
                .filter(|(pos, e)| *pos >= live_from && self.topics.contains(&e.topic))
                .count();
            if self.shared.pending.load(Ordering::Acquire) > ours as i64 {
                return None;
            }
            self.cursor = ring.first_pos;
        }
        let offset = (self.cursor - ring.first_pos) as usize;
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let (mut taken, mut live_taken, mut scanned) = (0u64, 0i64, 0u64);
        for event in ring.events.range(offset..) {
            if self.topics.contains(&event.topic) {
                let size =
                    first.as_ref().map_or(0, Bytes::len) + joined.as_ref().map_or(0, BytesMut::len);
                if size > 0 && size + event.wire.len() > MAX_BATCH_BYTES {
                    break;
                }
                if self.cursor + scanned >= self.shared.live_from {
                    live_taken += 1;
                }
                taken += 1;
                match (&first, &mut joined) {
                    (None, _) => first = Some(event.wire.clone()),
                    (Some(one), None) => {
                        let mut buf = BytesMut::with_capacity(one.len() + event.wire.len());
                        buf.extend_from_slice(one);
                        buf.extend_from_slice(&event.wire);
                        joined = Some(buf);
                    }
                    (Some(_), Some(buf)) => buf.extend_from_slice(&event.wire),
                }
            }
            scanned += 1;
        }
        drop(ring);
        self.cursor += scanned;
        if live_taken > 0 {
            self.shared.pending.fetch_sub(live_taken, Ordering::AcqRel);
        }
        let bytes = match joined {
            Some(buf) => Some(buf.freeze()),
            None => first,
        };
        Some((bytes, taken))
    }
}

impl Stream for Subscription {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if this.shared.ended.load(Ordering::Acquire)
            || this.hub.generation.load(Ordering::Acquire) != this.generation
        {
            return Poll::Ready(None);
        }
        if let Some(bytes) = this.prefix.pop_front() {
            return Poll::Ready(Some(this.sent(bytes, 0)));
        }
        // Register before looking, so a push between the look and the
        // return still wakes this task.
        this.shared.waker.register(cx.waker());
        // Read before the ring: once set, nothing more is appended, so a
        // batch that comes back empty after it means everything was sent.
        let finishing = this.hub.finishing.load(Ordering::Acquire);
        match this.take_batch() {
            // Reset meanwhile: ended, not too slow.
            None if this.hub.generation.load(Ordering::Acquire) != this.generation => {
                Poll::Ready(None)
            }
            None => {
                this.hub.end_slow(&this.shared);
                Poll::Ready(None)
            }
            Some((Some(bytes), events)) => Poll::Ready(Some(this.sent(bytes, events))),
            Some((None, _)) if finishing => Poll::Ready(None),
            Some((None, _)) => {
                let beat = this.hub.heartbeat.load(Ordering::Acquire);
                if beat != this.heartbeat_seen {
                    this.heartbeat_seen = beat;
                    if !std::mem::take(&mut this.sent_since_heartbeat) {
                        let beat = this.sent(Bytes::from_static(crate::wire::HEARTBEAT), 0);
                        // A heartbeat is not traffic: an otherwise idle
                        // stream gets one every interval, not every other.
                        this.sent_since_heartbeat = false;
                        return Poll::Ready(Some(beat));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Subscription {
    fn sent(&mut self, bytes: Bytes, events: u64) -> Bytes {
        self.sent_since_heartbeat = true;
        let metrics = &self.hub.metrics;
        metrics.bytes_sent.inc_by(bytes.len() as u64);
        if events > 0 {
            metrics.delivered.inc_by(events);
        }
        bytes
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.key, &self.topics);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn hub(history: usize, queue: usize) -> Arc<Hub> {
        Arc::new(Hub::new(
            Limits {
                history,
                history_bytes: usize::MAX,
                queue,
            },
            EventId::new(1, 0),
            Arc::new(Metrics::new()),
        ))
    }

    fn push(hub: &Hub, seq: u64, topic: &str) {
        hub.push(StoredEvent {
            id: EventId::new(1, seq),
            topic: Arc::from(topic),
            wire: Bytes::from(format!("id: 1-{seq}\ndata: {topic}\n\n")),
        });
    }

    fn topics(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[tokio::test]
    async fn pending_events_are_batched_into_one_write() {
        let hub = hub(100, 100);
        let (mut sub, opened) =
            hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        assert_eq!(opened.plan, Plan::Live);
        push(&hub, 1, "a");
        push(&hub, 2, "b");
        push(&hub, 3, "a");
        let batch = sub.next().await.unwrap();
        assert_eq!(&batch[..], b"id: 1-1\ndata: a\n\nid: 1-3\ndata: a\n\n");
        assert_eq!(hub.metrics().delivered.get(), 2);
    }

    #[tokio::test]
    async fn a_subscriber_whose_owed_events_were_evicted_ends() {
        // The queue allows 10 pending events, but other topics' events push
        // the 3 owed ones out of a 10-event history.
        let hub = hub(10, 10);
        let token = CancellationToken::new();
        let (mut sub, _) = hub.subscribe(topics(&["a"]), Start::Live, token.clone());
        for seq in 1..=3 {
            push(&hub, seq, "a");
        }
        for seq in 4..=13 {
            push(&hub, seq, "b");
        }
        assert!(
            sub.next().await.is_none(),
            "ended instead of skipping events silently"
        );
        assert!(token.is_cancelled());
        assert_eq!(hub.metrics().dropped_slow.get(), 1);
    }

    #[tokio::test]
    async fn a_full_queue_cancels_the_connection_without_being_polled() {
        let hub = hub(100, 3);
        let token = CancellationToken::new();
        let (_sub, _) = hub.subscribe(topics(&["a"]), Start::Live, token.clone());
        for seq in 1..=3 {
            push(&hub, seq, "a");
        }
        assert!(!token.is_cancelled());
        push(&hub, 4, "a");
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn replay_does_not_count_against_the_queue() {
        let hub = hub(100, 2);
        for seq in 1..=5 {
            push(&hub, seq, "a");
        }
        let token = CancellationToken::new();
        let (mut sub, opened) = hub.subscribe(topics(&["a"]), Start::After("1-1"), token.clone());
        assert_eq!(opened.plan, Plan::After(EventId::new(1, 1)));
        push(&hub, 6, "a");
        assert!(!token.is_cancelled());
        let replayed = sub.next().await.unwrap();
        assert!(replayed.starts_with(b"id: 1-2\n") && replayed.ends_with(b"id: 1-6\ndata: a\n\n"));
    }

    #[tokio::test]
    async fn end_all_ends_current_subscriptions_only() {
        let hub = hub(10, 10);
        let (mut before, _) = hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        hub.end_all();
        let (mut after, _) = hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        push(&hub, 1, "a");
        assert!(before.next().await.is_none());
        assert!(after.next().await.is_some());
    }

    #[tokio::test]
    async fn expired_subscriptions_end_cleanly_and_others_stay() {
        let hub = hub(10, 10);
        let token = CancellationToken::new();
        let (mut soon, _) = hub.subscribe(topics(&["a"]), Start::Live, token.clone());
        let (mut later, _) = hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        let (mut never, _) = hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        soon.end_at(100);
        later.end_at(200);
        hub.expire(99);
        push(&hub, 1, "a");
        assert!(soon.next().await.is_some(), "not expired yet");
        hub.expire(100);
        assert!(soon.next().await.is_none(), "ended at its expiry");
        assert!(
            !token.is_cancelled(),
            "a clean end, not a dropped connection"
        );
        assert_eq!(hub.metrics().dropped_slow.get(), 0);
        assert!(later.next().await.is_some());
        assert!(never.next().await.is_some());
        hub.expire(u64::MAX - 1);
        assert!(later.next().await.is_none());
        push(&hub, 2, "a");
        assert!(never.next().await.is_some(), "no expiry, no end");
    }

    /// Opens a subscription to topic `a` as `start` asks; returns the plan,
    /// the oldest event the notice would name, and the first replayed bytes.
    async fn open(hub: &Arc<Hub>, start: Start<'_>) -> (Plan, Option<EventId>, Option<Bytes>) {
        let (mut sub, opened) = hub.subscribe(topics(&["a"]), start, CancellationToken::new());
        let first = tokio::time::timeout(std::time::Duration::from_millis(50), sub.next())
            .await
            .ok()
            .flatten();
        (opened.plan, opened.first_replayed, first)
    }

    #[tokio::test]
    async fn ids_are_located_in_the_ring_under_one_lock() {
        let hub = hub(3, 3);
        let id = |seq| EventId::new(1, seq);
        // Nothing published: only the base is covered.
        assert_eq!(open(&hub, Start::After("1-0")).await.0, Plan::After(id(0)));
        assert_eq!(
            open(&hub, Start::After("1-1")).await.0,
            Plan::TooOld { resume: id(0) }
        );
        for seq in 1..=5 {
            push(&hub, seq, if seq == 3 { "b" } else { "a" });
        }
        // The ring holds 1-3 (b), 1-4, 1-5: it covers 1-2 onwards.
        let (plan, oldest, first) = open(&hub, Start::After("1-1")).await;
        assert_eq!(plan, Plan::TooOld { resume: id(2) });
        assert_eq!(oldest, Some(id(4)), "the oldest event of the topic");
        assert!(first.unwrap().starts_with(b"id: 1-4\n"));
        let (plan, _, first) = open(&hub, Start::After("1-2")).await;
        assert_eq!(plan, Plan::After(id(2)), "the floor loses nothing");
        assert!(first.unwrap().starts_with(b"id: 1-4\n"));
        assert_eq!(open(&hub, Start::After("1-5")).await.0, Plan::After(id(5)));
        assert!(open(&hub, Start::After("1-5")).await.2.is_none());
        assert_eq!(
            open(&hub, Start::After("1-6")).await.0,
            Plan::TooOld { resume: id(2) },
            "never handed out"
        );
        // Out-of-order pushes (a Redis re-read) are refused.
        assert!(!hub.push(StoredEvent {
            id: id(4),
            topic: Arc::from("a"),
            wire: Bytes::from_static(b"x"),
        }));
    }

    #[tokio::test]
    async fn newest_n_of_the_topics_then_live() {
        let hub = hub(10, 10);
        for seq in 1..=6 {
            push(&hub, seq, if seq % 2 == 0 { "a" } else { "b" });
        }
        let (plan, _, first) = open(&hub, Start::Newest(2)).await;
        assert_eq!(plan, Plan::Newest(2));
        assert_eq!(
            &first.unwrap()[..],
            b"id: 1-4\ndata: a\n\nid: 1-6\ndata: a\n\n"
        );
        let (_, _, first) = open(&hub, Start::Newest(50)).await;
        assert!(first.unwrap().starts_with(b"id: 1-2\n"), "fewer: all");
        assert!(open(&hub, Start::Newest(0)).await.2.is_none());
    }

    #[tokio::test]
    async fn history_is_bounded_by_encoded_bytes_too() {
        let metrics = Arc::new(Metrics::new());
        let limits = Limits {
            history: 100,
            history_bytes: 100,
            queue: 100,
        };
        let hub = Arc::new(Hub::new(limits, EventId::new(1, 0), Arc::clone(&metrics)));
        let event = |seq: u64, size: usize| StoredEvent {
            id: EventId::new(1, seq),
            topic: Arc::from("a"),
            wire: Bytes::from(vec![b'x'; size]),
        };
        for seq in 1..=4 {
            hub.push(event(seq, 30));
        }
        // 4 x 30 > 100: the oldest went; 3 x 30 stay.
        assert_eq!(metrics.history_bytes.get(), 90);
        assert_eq!(metrics.history_events.get(), 3);
        let (plan, _, _) = open(&hub, Start::After("1-1")).await;
        assert_eq!(plan, Plan::After(EventId::new(1, 1)));
        assert_eq!(
            open(&hub, Start::After("1-0")).await.0,
            Plan::TooOld {
                resume: EventId::new(1, 1)
            }
        );
        // One event over the limit is still kept, alone, for live readers.
        let (mut live, _) = hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        hub.push(event(5, 500));
        assert_eq!(metrics.history_bytes.get(), 500);
        assert_eq!(metrics.history_events.get(), 1);
        assert_eq!(live.next().await.unwrap().len(), 500);
    }

    #[tokio::test]
    async fn finishing_delivers_everything_held_then_ends() {
        let hub = hub(100, 100);
        let (mut sub, _) = hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        push(&hub, 1, "a");
        push(&hub, 2, "b");
        push(&hub, 3, "a");
        hub.finish();
        assert!(!hub.push(StoredEvent {
            id: EventId::new(1, 4),
            topic: Arc::from("a"),
            wire: Bytes::from_static(b"late"),
        }));
        assert!(hub
            .append(|_| unreachable!("a finishing hub builds nothing"))
            .is_none());
        let batch = sub.next().await.unwrap();
        assert_eq!(&batch[..], b"id: 1-1\ndata: a\n\nid: 1-3\ndata: a\n\n");
        assert!(sub.next().await.is_none(), "ends once everything was sent");
    }

    #[tokio::test]
    async fn a_reset_ends_subscriptions_and_starts_again_after_the_base() {
        let hub = hub(10, 10);
        push(&hub, 9, "a");
        let (mut before, _) = hub.subscribe(topics(&["a"]), Start::Live, CancellationToken::new());
        hub.reset(EventId::new(1, 0));
        assert!(before.next().await.is_none());
        assert_eq!(hub.metrics().dropped_slow.get(), 0, "ended, not dropped");
        // Lower ids than before the reset are taken again.
        push(&hub, 1, "a");
        let (plan, _, first) = open(&hub, Start::After("1-0")).await;
        assert_eq!(plan, Plan::After(EventId::new(1, 0)));
        assert!(first.unwrap().starts_with(b"id: 1-1\n"));
        assert_eq!(
            open(&hub, Start::After("1-9")).await.0,
            Plan::TooOld {
                resume: EventId::new(1, 0)
            }
        );
    }
}
