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
        atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, RwLock,
    },
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::{task::AtomicWaker, Stream};
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metrics, wire::EventId};

/// Most bytes a lagging subscriber gets in one write: several pending events
/// go out in one socket write (cheaper than one write each), bounded so one
/// subscriber never holds a large copy.
const MAX_BATCH_BYTES: usize = 64 * 1024;

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

/// Where a subscription starts, as the hub found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// No id given: live events only.
    Live,
    /// The id is in the ring (or is the newest event): replay starts after it.
    InRing,
    /// The id is older than the oldest event the ring holds (`first`); the
    /// subscription starts at the oldest event.
    BeforeRing {
        /// The oldest event in the ring.
        first: EventId,
    },
    /// The id is newer than anything the hub has seen (another server run,
    /// or invented); the subscription starts at the oldest event.
    Unknown,
}

struct Ring {
    events: VecDeque<StoredEvent>,
    /// Ring position of `events[0]`; positions only ever grow.
    first_pos: u64,
    capacity: usize,
    /// Id of the newest event ever pushed.
    last_id: Option<EventId>,
}

impl Ring {
    fn head(&self) -> u64 {
        self.first_pos + self.events.len() as u64
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
}

type Registry = HashMap<Arc<str>, HashMap<u64, Arc<Shared>>>;

/// The fan-out hub. Cheap to share: wrap it in an `Arc`.
pub struct Hub {
    ring: Mutex<Ring>,
    subscribers: RwLock<Registry>,
    next_key: AtomicU64,
    count: AtomicUsize,
    queue: usize,
    heartbeat: AtomicU64,
    closed: AtomicBool,
    /// Bumped to end every current subscription (see [`Hub::end_all`]).
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.subscriber_count())
            .finish()
    }
}

impl Hub {
    /// A hub keeping `history` events and allowing each subscriber `queue`
    /// pending events (at most `history`).
    pub fn new(history: usize, queue: usize, metrics: Arc<Metrics>) -> Self {
        let history = history.max(1);
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(history.min(1024)),
                first_pos: 0,
                capacity: history,
                last_id: None,
            }),
            subscribers: RwLock::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            queue: queue.clamp(1, history),
            heartbeat: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
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

    /// Id of the newest event the hub has seen.
    pub fn last_id(&self) -> Option<EventId> {
        self.ring().last_id
    }

    /// Id of the oldest event the ring still holds.
    pub fn oldest_id(&self) -> Option<EventId> {
        self.ring().events.front().map(|e| e.id)
    }

    /// Subscribers connected now.
    pub fn subscriber_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends an event and wakes the subscribers of its topic.
    ///
    /// Events must arrive in increasing id order; one that is not newer
    /// than the last is ignored (a Redis reader may see an entry twice after
    /// reconnecting).
    pub fn push(&self, event: StoredEvent) {
        self.append(|last| last.is_none_or(|last| event.id > last).then_some(event));
    }

    /// Appends the event `make` builds from the newest id, atomically with
    /// respect to other appends (so ids can be assigned in order), and wakes
    /// the subscribers of its topic. `make` returns `None` to append nothing.
    pub fn append(
        &self,
        make: impl FnOnce(Option<EventId>) -> Option<StoredEvent>,
    ) -> Option<EventId> {
        let (pos, id, topic) = {
            let mut ring = self.ring();
            let event = make(ring.last_id)?;
            let (id, topic) = (event.id, Arc::clone(&event.topic));
            ring.last_id = Some(id);
            let pos = ring.head();
            ring.events.push_back(event);
            if ring.events.len() > ring.capacity {
                ring.events.pop_front();
                ring.first_pos += 1;
            }
            (pos, id, topic)
        };
        self.metrics.published.inc();
        let registry = self.registry();
        if let Some(subscribers) = registry.get(&topic) {
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
        Some(id)
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

    /// Ends every subscription (server shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake_all(&self) {
        for subscribers in self.registry().values() {
            for shared in subscribers.values() {
                shared.waker.wake();
            }
        }
    }

    /// Subscribes to `topics`, resuming after `after` when given.
    ///
    /// `connection` is cancelled when the subscriber is dropped as too slow;
    /// the server closes the connection on it.
    pub fn subscribe(
        self: &Arc<Self>,
        topics: Vec<Arc<str>>,
        after: Option<EventId>,
        connection: CancellationToken,
    ) -> (Subscription, Resume) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let ring = self.ring();
        let head = ring.head();
        let (cursor, resume) = match after {
            None => (head, Resume::Live),
            Some(id) => locate(&ring, id),
        };
        let shared = Arc::new(Shared {
            waker: AtomicWaker::new(),
            pending: AtomicI64::new(0),
            live_from: head,
            ended: AtomicBool::new(false),
            connection,
        });
        {
            // Registered while the ring is locked: every event pushed from
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
        self.count.fetch_add(1, Ordering::Relaxed);
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
            generation: self.generation.load(Ordering::Acquire),
        };
        (subscription, resume)
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
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.metrics.clients.dec();
    }
}

/// Finds where a subscriber resuming after `id` starts.
fn locate(ring: &Ring, id: EventId) -> (u64, Resume) {
    let Some(last) = ring.last_id else {
        return (ring.head(), Resume::Unknown);
    };
    if id > last {
        return (ring.first_pos, Resume::Unknown);
    }
    match ring.events.front() {
        Some(first) if id < first.id => (ring.first_pos, Resume::BeforeRing { first: first.id }),
        _ => {
            // Ids in the ring increase, so the first newer one is found by
            // binary search.
            let index = ring.events.partition_point(|e| e.id <= id);
            (ring.first_pos + index as u64, Resume::InRing)
        }
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
            || this.hub.closed.load(Ordering::Acquire)
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
        match this.take_batch() {
            None => {
                this.hub.end_slow(&this.shared);
                Poll::Ready(None)
            }
            Some((Some(bytes), events)) => Poll::Ready(Some(this.sent(bytes, events))),
            Some((None, _)) => {
                let beat = this.hub.heartbeat.load(Ordering::Acquire);
                if beat != this.heartbeat_seen {
                    this.heartbeat_seen = beat;
                    if !std::mem::take(&mut this.sent_since_heartbeat) {
                        return Poll::Ready(Some(
                            this.sent(Bytes::from_static(crate::wire::HEARTBEAT), 0),
                        ));
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
        Arc::new(Hub::new(history, queue, Arc::new(Metrics::new())))
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
        let (mut sub, resume) = hub.subscribe(topics(&["a"]), None, CancellationToken::new());
        assert_eq!(resume, Resume::Live);
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
        let (mut sub, _) = hub.subscribe(topics(&["a"]), None, token.clone());
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
        let (_sub, _) = hub.subscribe(topics(&["a"]), None, token.clone());
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
        let (mut sub, resume) =
            hub.subscribe(topics(&["a"]), Some(EventId::new(1, 1)), token.clone());
        assert_eq!(resume, Resume::InRing);
        push(&hub, 6, "a");
        assert!(!token.is_cancelled());
        let replayed = sub.next().await.unwrap();
        assert!(replayed.starts_with(b"id: 1-2\n") && replayed.ends_with(b"id: 1-6\ndata: a\n\n"));
    }

    #[tokio::test]
    async fn end_all_ends_current_subscriptions_only() {
        let hub = hub(10, 10);
        let (mut before, _) = hub.subscribe(topics(&["a"]), None, CancellationToken::new());
        hub.end_all();
        let (mut after, _) = hub.subscribe(topics(&["a"]), None, CancellationToken::new());
        push(&hub, 1, "a");
        assert!(before.next().await.is_none());
        assert!(after.next().await.is_some());
    }

    #[test]
    fn ids_are_located_in_the_ring() {
        let hub = hub(3, 3);
        let find = |id| {
            hub.subscribe(
                topics(&["a"]),
                Some(EventId::new(1, id)),
                CancellationToken::new(),
            )
            .1
        };
        assert_eq!(find(1), Resume::Unknown, "nothing published yet");
        for seq in 1..=5 {
            push(&hub, seq, "a");
        }
        assert_eq!(
            find(1),
            Resume::BeforeRing {
                first: EventId::new(1, 3)
            }
        );
        assert_eq!(find(3), Resume::InRing);
        assert_eq!(find(5), Resume::InRing);
        assert_eq!(find(6), Resume::Unknown);
        // Out-of-order pushes (a Redis re-read) are ignored.
        push(&hub, 4, "a");
        assert_eq!(hub.last_id(), Some(EventId::new(1, 5)));
    }
}
