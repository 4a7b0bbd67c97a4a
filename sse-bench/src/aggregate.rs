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
        /// The latencies.
        values: Vec<u32>,
    },
    /// The client finished (at the end of the run or because its stream broke).
    Done(ClientSummary),
}

/// Per-client totals sent once when the client ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientSummary {
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
    /// Streams open.
    pub connected: AtomicU64,
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

/// Everything one group of clients (this process, or one worker) measured.
/// Serialized as a worker's result line; histograms travel as base64 of the
/// HdrHistogram V2 encoding.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupResult {
    /// Delivery latency in µs.
    #[serde(with = "hist_b64")]
    pub latency: Histogram<u64>,
    /// Connect time in µs.
    #[serde(with = "hist_b64")]
    pub connect: Histogram<u64>,
    /// Failed connections and broken streams by kind.
    pub errors: BTreeMap<String, u64>,
    /// Clients that got a stream.
    pub connected: u64,
    /// Clients that did not.
    pub failed: u64,
    /// Streams that ended before the run did.
    pub dropped: u64,
    /// Distinct deliveries of ours.
    pub delivered: u64,
    /// Deliveries missing at the end (published × connected − delivered).
    pub lost: u64,
    /// Repeated deliveries.
    pub duplicated: u64,
    /// Late deliveries.
    pub out_of_order: u64,
    /// Events that were not ours.
    pub foreign: u64,
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

impl GroupResult {
    /// Adds another group's figures to this one.
    ///
    /// # Errors
    /// When the histograms cannot be merged (different bounds; cannot
    /// happen for histograms made by [`new_histogram`]).
    pub fn merge(&mut self, other: GroupResult) -> anyhow::Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging latency histograms")?;
        self.connect
            .add(&other.connect)
            .context("merging connect histograms")?;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.connected += other.connected;
        self.failed += other.failed;
        self.dropped += other.dropped;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
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

/// The aggregator's state; [`Aggregator::run`] consumes messages until every
/// sender is gone.
pub struct Aggregator {
    latency: Histogram<u64>,
    recent: Histogram<u64>,
    connect: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    distinct_per_client: Vec<u64>,
    summary: ClientSummary,
    dropped: u64,
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
            recent: new_histogram(),
            connect: new_histogram(),
            errors: BTreeMap::new(),
            distinct_per_client: Vec::new(),
            summary: ClientSummary::default(),
            dropped: 0,
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

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Connected { connect_us } => {
                self.connect
                    .saturating_record(connect_us.clamp(1, MAX_TRACKABLE_US));
            }
            Msg::Failed { kind } => *self.errors.entry(kind).or_default() += 1,
            Msg::Latencies { values, .. } => {
                for us in values {
                    let v = u64::from(us).clamp(1, MAX_TRACKABLE_US);
                    self.latency.saturating_record(v);
                    self.recent.saturating_record(v);
                }
            }
            Msg::Done(s) => {
                self.distinct_per_client.push(s.distinct);
                self.summary.distinct += s.distinct;
                self.summary.duplicated += s.duplicated;
                self.summary.out_of_order += s.out_of_order;
                self.summary.foreign += s.foreign;
                if s.dropped {
                    self.dropped += 1;
                }
            }
        }
    }

    /// Final figures, with losses counted against `published` events (each
    /// connected client should have received every one of them).
    pub fn finish(self, published: u64, connected: u64, failed: u64, bytes: u64) -> GroupResult {
        let lost = self
            .distinct_per_client
            .iter()
            .map(|&d| published.saturating_sub(d))
            .sum();
        GroupResult {
            latency: self.latency,
            connect: self.connect,
            errors: self.errors,
            connected,
            failed,
            dropped: self.dropped,
            delivered: self.summary.distinct,
            lost,
            duplicated: self.summary.duplicated,
            out_of_order: self.summary.out_of_order,
            foreign: self.summary.foreign,
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
        assert_eq!(r.lost, 3);
        assert_eq!(r.delivered, 17);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.out_of_order, 2);
        assert_eq!(r.errors.get("refused"), Some(&1));

        let json = serde_json::to_string(&r).unwrap();
        let mut back: GroupResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.latency.len(), 3);
        assert_eq!(back.latency.max(), r.latency.max());
        back.merge(r).unwrap();
        assert_eq!(back.latency.len(), 6);
        assert_eq!(back.lost, 6);
    }
}
