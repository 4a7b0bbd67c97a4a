//! One aggregator task owns the histograms: clients send it compact samples
//! (batched latencies, one connect time, one summary at the end), so memory
//! does not grow with the client count the way a histogram per connection
//! (~136 KiB each) would.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Highest latency or connect time the histograms track, in µs (one hour):
/// anything slower is clamped, and a run that slow is broken anyway.
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// Significant decimal digits kept by the histograms: 3 gives 0.1% precision
/// in ~100 KiB, the HdrHistogram default.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// What clients tell the aggregator.
#[derive(Debug)]
pub enum Msg {
    /// The response head arrived: the stream is open.
    Connected {
        /// From starting the TCP connect to a complete `200` response head.
        connect_us: u64,
    },
    /// The client never got a stream; `kind` says why (refused, timeout, http 503, ...).
    Failed {
        /// Error kind, used as a key in the report.
        kind: String,
    },
    /// Latencies of distinct deliveries, in µs.
    Latencies {
        /// Receipt time of the first, unix ns (all are from the same second).
        at_ns: u64,
        /// From a slow client (`slow-consumers`), kept apart.
        slow: bool,
        /// The latencies.
        values: Vec<u32>,
    },
    /// A stream ended or broke, not by the bench's doing, and the client
    /// will reconnect; `kind` says how it ended.
    Break {
        /// How the stream ended.
        kind: String,
    },
    /// The outcome of one reconnection attempt (`200`, `http 503`, `refused`).
    Attempt {
        /// Outcome key.
        kind: String,
    },
    /// A client is back: its stream reopened this long after it was lost.
    Reconnected {
        /// From the cut or break to the new `200` head.
        after_us: u64,
    },
    /// The scenario's moment (storm, slow readers' start) happened at this
    /// unix time.
    Event {
        /// Unix ns.
        at_ns: u64,
    },
    /// The client finished (at the end of the run or because its stream broke).
    Done(ClientSummary),
}

/// Per-client totals sent once when the client ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientSummary {
    /// The client's index over the whole run.
    pub index: u64,
    /// A slow reader (`slow-consumers`).
    pub slow: bool,
    /// Cut by the bench in a storm.
    pub cut: bool,
    /// Streams of this client that the server ended or broke.
    pub breaks: u64,
    /// Streams reopened after a cut or break.
    pub resumes: u64,
    /// Resumes whose replay continued exactly after the last event seen
    /// (no event skipped, none repeated).
    pub resumes_exact: u64,
    /// Events skipped across resumes.
    pub gap_lost: u64,
    /// Events repeated across resumes.
    pub gap_duplicated: u64,
    /// Still waiting to reconnect when the run ended.
    pub not_back: bool,
    /// Distinct events of ours received.
    pub distinct: u64,
    /// Events received again.
    pub duplicated: u64,
    /// Events that arrived after a later one.
    pub out_of_order: u64,
    /// Events whose data was not a bench payload.
    pub foreign: u64,
    /// The stream ended before the run did (counted as an error too).
    pub dropped: bool,
}

/// Live counters for progress display, shared by clients (or worker reader
/// tasks) and the display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Clients that got a stream (first connections only).
    pub connected: AtomicU64,
    /// Streams open right now.
    pub open: AtomicU64,
    /// Connection attempts that failed.
    pub failed: AtomicU64,
    /// Events received (ours and foreign, duplicates included).
    pub events: AtomicU64,
    /// Distinct events of ours received: drain ends when this reaches
    /// published × connected.
    pub distinct: AtomicU64,
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// Streams that ended early.
    pub dropped: AtomicU64,
    /// p99 latency over the last progress interval, in µs.
    pub recent_p99_us: AtomicU64,
}

impl Counters {
    /// Attempts that have finished connecting one way or the other.
    pub fn settled(&self) -> u64 {
        self.connected.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// Totals of one class of clients (the measuring ones, or the slow ones).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ClassTotals {
    /// Clients that ended (sent their summary).
    pub clients: u64,
    /// Distinct deliveries of ours.
    pub delivered: u64,
    /// Deliveries missing at the end (published − distinct, per client).
    pub lost: u64,
    /// Repeated deliveries.
    pub duplicated: u64,
    /// Late deliveries.
    pub out_of_order: u64,
    /// Events that were not ours.
    pub foreign: u64,
    /// Steady runs: streams that ended before the run did.
    pub dropped: u64,
    /// Clients cut by the bench.
    pub cut: u64,
    /// Clients whose stream the server ended at least once.
    pub broken_clients: u64,
    /// Streams the server ended, all told.
    pub breaks: u64,
    /// Streams reopened.
    pub resumes: u64,
    /// Clients that reopened a stream at least once.
    pub resumed_clients: u64,
    /// Resumes that continued exactly where the client was.
    pub resumes_exact: u64,
    /// Clients with a resume that skipped or repeated events.
    pub inexact_clients: u64,
    /// Events skipped across resumes.
    pub gap_lost: u64,
    /// Events repeated across resumes.
    pub gap_duplicated: u64,
    /// Clients still reconnecting at the end.
    pub not_back: u64,
    /// Up to [`MAX_LISTED`] clients whose resume was not exact:
    /// `(index, skipped, repeated)`.
    pub inexact: Vec<(u64, u64, u64)>,
}

/// Clients listed by index in [`ClassTotals::inexact`]: enough to look
/// one up in a server log, few enough to keep the report small.
pub const MAX_LISTED: usize = 20;

impl ClassTotals {
    fn add_client(&mut self, s: &ClientSummary, published: u64) {
        self.clients += 1;
        self.delivered += s.distinct;
        self.lost += published.saturating_sub(s.distinct);
        self.duplicated += s.duplicated;
        self.out_of_order += s.out_of_order;
        self.foreign += s.foreign;
        self.dropped += u64::from(s.dropped);
        self.cut += u64::from(s.cut);
        self.broken_clients += u64::from(s.breaks > 0);
        self.breaks += s.breaks;
        self.resumes += s.resumes;
        self.resumed_clients += u64::from(s.resumes > 0);
        self.resumes_exact += s.resumes_exact;
        self.gap_lost += s.gap_lost;
        self.gap_duplicated += s.gap_duplicated;
        self.not_back += u64::from(s.not_back);
        if s.resumes_exact < s.resumes {
            self.inexact_clients += 1;
            if self.inexact.len() < MAX_LISTED {
                self.inexact.push((s.index, s.gap_lost, s.gap_duplicated));
            }
        }
    }

    fn merge(&mut self, o: ClassTotals) {
        self.clients += o.clients;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.foreign += o.foreign;
        self.dropped += o.dropped;
        self.cut += o.cut;
        self.broken_clients += o.broken_clients;
        self.breaks += o.breaks;
        self.resumes += o.resumes;
        self.resumed_clients += o.resumed_clients;
        self.resumes_exact += o.resumes_exact;
        self.inexact_clients += o.inexact_clients;
        self.gap_lost += o.gap_lost;
        self.gap_duplicated += o.gap_duplicated;
        self.not_back += o.not_back;
        let room = MAX_LISTED.saturating_sub(self.inexact.len());
        self.inexact.extend(o.inexact.into_iter().take(room));
    }
}

/// Latencies received in one wall-clock second.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecondLatency {
    /// Unix time, whole seconds.
    pub unix_s: u64,
    /// Latencies of deliveries received in that second, µs.
    #[serde(with = "hist_b64")]
    pub latency: Histogram<u64>,
}

/// Everything one group of clients (this process, or one worker) measured.
/// Serialized as a worker's result line; histograms travel as base64 of the
/// HdrHistogram V2 encoding.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupResult {
    /// Delivery latency in µs (measuring clients).
    #[serde(with = "hist_b64")]
    pub latency: Histogram<u64>,
    /// Latency of the measuring clients before the scenario's moment.
    #[serde(with = "hist_b64")]
    pub latency_before_event: Histogram<u64>,
    /// Latency of slow clients.
    #[serde(with = "hist_b64")]
    pub slow_latency: Histogram<u64>,
    /// Connect time in µs.
    #[serde(with = "hist_b64")]
    pub connect: Histogram<u64>,
    /// Time from a cut or break to the reopened stream, µs.
    #[serde(with = "hist_b64")]
    pub back: Histogram<u64>,
    /// Measuring clients' latency per second received.
    pub timeline: Vec<SecondLatency>,
    /// Failed connections and broken streams by kind.
    pub errors: BTreeMap<String, u64>,
    /// Reconnection attempts by outcome.
    pub attempts: BTreeMap<String, u64>,
    /// How streams the server ended, ended.
    pub breaks: BTreeMap<String, u64>,
    /// Clients that got a stream.
    pub connected: u64,
    /// Clients that did not.
    pub failed: u64,
    /// The measuring clients.
    pub main: ClassTotals,
    /// The slow clients.
    pub slow: ClassTotals,
    /// Body bytes received.
    pub bytes: u64,
    /// This group's process CPU seconds: total, and during the run phase
    /// (after every client settled). Filled in by the process that ran it.
    pub cpu_total_s: f64,
    /// See `cpu_total_s`.
    pub cpu_run_s: f64,
    /// Resident memory before and after connecting, in KiB.
    pub rss_before_kib: u64,
    /// See `rss_before_kib`.
    pub rss_connected_kib: u64,
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

impl GroupResult {
    /// Adds another group's figures to this one.
    ///
    /// # Errors
    /// When the histograms cannot be merged (different bounds; cannot
    /// happen for histograms made by [`new_histogram`]).
    pub fn merge(&mut self, other: GroupResult) -> anyhow::Result<()> {
        for (mine, theirs) in [
            (&mut self.latency, &other.latency),
            (&mut self.latency_before_event, &other.latency_before_event),
            (&mut self.slow_latency, &other.slow_latency),
            (&mut self.connect, &other.connect),
            (&mut self.back, &other.back),
        ] {
            mine.add(theirs).context("merging histograms")?;
        }
        for second in other.timeline {
            match self.timeline.iter_mut().find(|s| s.unix_s == second.unix_s) {
                Some(s) => s
                    .latency
                    .add(&second.latency)
                    .context("merging timelines")?,
                None => self.timeline.push(second),
            }
        }
        self.timeline.sort_by_key(|s| s.unix_s);
        add_counts(&mut self.errors, other.errors);
        add_counts(&mut self.attempts, other.attempts);
        add_counts(&mut self.breaks, other.breaks);
        self.connected += other.connected;
        self.failed += other.failed;
        self.main.merge(other.main);
        self.slow.merge(other.slow);
        self.bytes += other.bytes;
        self.cpu_total_s += other.cpu_total_s;
        self.cpu_run_s += other.cpu_run_s;
        self.rss_before_kib += other.rss_before_kib;
        self.rss_connected_kib += other.rss_connected_kib;
        Ok(())
    }
}

/// A latency/connect-time histogram in µs with the bench's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy HdrHistogram's rules (low >= 1,
    // high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Significant digits of the per-second histograms: 1% is plenty for a
/// chart, and keeps a second at a few KiB.
const TIMELINE_DIGITS: u8 = 2;

fn timeline_histogram() -> Histogram<u64> {
    // Constant, valid bounds as in `new_histogram`.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, TIMELINE_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// The aggregator's state; [`Aggregator::run`] consumes messages until every
/// sender is gone.
pub struct Aggregator {
    latency: Histogram<u64>,
    before_event: Histogram<u64>,
    slow_latency: Histogram<u64>,
    recent: Histogram<u64>,
    connect: Histogram<u64>,
    back: Histogram<u64>,
    timeline: BTreeMap<u64, Histogram<u64>>,
    event_ns: Option<u64>,
    errors: BTreeMap<String, u64>,
    attempts: BTreeMap<String, u64>,
    breaks: BTreeMap<String, u64>,
    summaries: Vec<ClientSummary>,
    counters: Arc<Counters>,
}

/// How many recent samples the live p99 needs before it is shown; fewer
/// would make the progress display jumpy.
const RECENT_MIN_SAMPLES: u64 = 10;

impl Aggregator {
    /// A fresh aggregator publishing its live p99 to `counters`.
    pub fn new(counters: Arc<Counters>) -> Self {
        Self {
            latency: new_histogram(),
            before_event: new_histogram(),
            slow_latency: new_histogram(),
            recent: new_histogram(),
            connect: new_histogram(),
            back: new_histogram(),
            timeline: BTreeMap::new(),
            event_ns: None,
            errors: BTreeMap::new(),
            attempts: BTreeMap::new(),
            breaks: BTreeMap::new(),
            summaries: Vec::new(),
            counters,
        }
    }

    /// Consumes messages until all senders are dropped; refreshes the live
    /// p99 every `tick`.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        tick: std::time::Duration,
    ) -> Self {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = interval.tick() => {
                    if self.recent.len() >= RECENT_MIN_SAMPLES {
                        self.counters
                            .recent_p99_us
                            .store(self.recent.value_at_quantile(0.99), Ordering::Relaxed);
                        self.recent.reset();
                    }
                }
            }
        }
        self
    }

    fn latencies(&mut self, at_ns: u64, slow: bool, values: Vec<u32>) {
        if slow {
            for us in values {
                self.slow_latency
                    .saturating_record(u64::from(us).clamp(1, MAX_TRACKABLE_US));
            }
            return;
        }
        let before = self.event_ns.is_none_or(|e| at_ns < e);
        let second = self
            .timeline
            .entry(at_ns / 1_000_000_000)
            .or_insert_with(timeline_histogram);
        for us in values {
            let v = u64::from(us).clamp(1, MAX_TRACKABLE_US);
            self.latency.saturating_record(v);
            self.recent.saturating_record(v);
            second.saturating_record(v);
            if before {
                self.before_event.saturating_record(v);
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        let count = |map: &mut BTreeMap<String, u64>, kind| *map.entry(kind).or_default() += 1;
        match msg {
            Msg::Connected { connect_us } => {
                self.connect
                    .saturating_record(connect_us.clamp(1, MAX_TRACKABLE_US));
            }
            Msg::Failed { kind } => count(&mut self.errors, kind),
            Msg::Latencies {
                at_ns,
                slow,
                values,
            } => self.latencies(at_ns, slow, values),
            Msg::Break { kind } => count(&mut self.breaks, kind),
            Msg::Attempt { kind } => count(&mut self.attempts, kind),
            Msg::Reconnected { after_us } => {
                self.back
                    .saturating_record(after_us.clamp(1, MAX_TRACKABLE_US));
            }
            Msg::Event { at_ns } => self.event_ns = Some(at_ns),
            Msg::Done(s) => self.summaries.push(s),
        }
    }

    /// Final figures, with losses counted against `published` events (each
    /// connected client should have received every one of them).
    pub fn finish(self, published: u64, connected: u64, failed: u64, bytes: u64) -> GroupResult {
        let mut main = ClassTotals::default();
        let mut slow = ClassTotals::default();
        for s in &self.summaries {
            let class = if s.slow { &mut slow } else { &mut main };
            class.add_client(s, published);
        }
        GroupResult {
            latency: self.latency,
            latency_before_event: self.before_event,
            slow_latency: self.slow_latency,
            connect: self.connect,
            back: self.back,
            timeline: self
                .timeline
                .into_iter()
                .map(|(unix_s, latency)| SecondLatency { unix_s, latency })
                .collect(),
            errors: self.errors,
            attempts: self.attempts,
            breaks: self.breaks,
            connected,
            failed,
            main,
            slow,
            bytes,
            cpu_total_s: 0.0,
            cpu_run_s: 0.0,
            rss_before_kib: 0,
            rss_connected_kib: 0,
        }
    }
}

/// Serde adapter: a histogram as base64 of its V2 serialization.
mod hist_b64 {
    use super::*;
    use serde::de::Error as _;
    use serde::ser::Error as _;

    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut buf)
            .map_err(|e| S::Error::custom(format!("histogram serialization: {e:?}")))?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(buf))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(D::Error::custom)?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| D::Error::custom(format!("histogram deserialization: {e:?}")))?;
        // Re-home the values into a histogram with our bounds so merging works.
        let mut out = new_histogram();
        out.add(&h)
            .map_err(|e| D::Error::custom(format!("histogram bounds: {e:?}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lost_is_counted_per_client_and_results_round_trip() {
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let agg =
            tokio::spawn(Aggregator::new(counters).run(rx, std::time::Duration::from_millis(50)));
        tx.send(Msg::Connected { connect_us: 500 }).unwrap();
        tx.send(Msg::Latencies {
            at_ns: 0,
            slow: false,
            values: vec![1000, 2000, 3000],
        })
        .unwrap();
        tx.send(Msg::Done(ClientSummary {
            distinct: 10,
            duplicated: 1,
            ..Default::default()
        }))
        .unwrap();
        tx.send(Msg::Done(ClientSummary {
            distinct: 7,
            out_of_order: 2,
            ..Default::default()
        }))
        .unwrap();
        tx.send(Msg::Failed {
            kind: "refused".into(),
        })
        .unwrap();
        drop(tx);
        let agg = agg.await.unwrap();
        let r = agg.finish(10, 2, 1, 99);
        assert_eq!(r.main.lost, 3);
        assert_eq!(r.main.delivered, 17);
        assert_eq!(r.main.duplicated, 1);
        assert_eq!(r.main.out_of_order, 2);
        assert_eq!(r.errors.get("refused"), Some(&1));

        let json = serde_json::to_string(&r).unwrap();
        let mut back: GroupResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.latency.len(), 3);
        assert_eq!(back.latency.max(), r.latency.max());
        back.merge(r).unwrap();
        assert_eq!(back.latency.len(), 6);
        assert_eq!(back.main.lost, 6);
        assert_eq!(back.timeline.len(), 1);
        assert_eq!(back.timeline[0].latency.len(), 6);
    }
}
