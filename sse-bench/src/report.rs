//! The final report: one serializable struct (`--json` prints it as is, so
//! its field names are a stable interface) and its verdict. The printers
//! live in [`print`](crate::print).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// Every figure of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Name of the target (`--label`, default the host:port).
    pub label: String,
    /// Subscribe URL used.
    pub sub_url: String,
    /// Publish URL used.
    pub pub_url: String,
    /// Requested clients.
    pub clients: u64,
    /// Processes the clients ran in.
    pub workers: u64,
    /// Events per second requested.
    pub rate: f64,
    /// Payload bytes.
    pub payload: u64,
    /// Publishing time requested, seconds.
    pub duration_s: f64,
    /// Connection ramp rate requested, per second.
    pub connect_rate: f64,
    /// Connection outcomes.
    pub connections: Connections,
    /// Connect-time percentiles (TCP connect to response head), ms.
    pub connect_ms: Percentiles,
    /// Delivery latency percentiles (intended send time to receipt), ms.
    pub latency_ms: Percentiles,
    /// Event accounting.
    pub events: Events,
    /// Delivery throughput while publishing.
    pub throughput: Throughput,
    /// The bench's own cost.
    pub bench: BenchCost,
    /// The server's cost, with `--server-pid`.
    pub server: Option<ServerCost>,
    /// The scenario run.
    #[serde(default)]
    pub scenario: Scenario,
    /// `reconnect-storm`: the cut and the recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormReport>,
    /// `churn`: the short-lived clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<ChurnReport>,
    /// `slow-consumers`: the slow clients and the others' latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<SlowReport>,
    /// Figures per second, for charts (`--report`).
    #[serde(default)]
    pub timeline: Timeline,
    /// The latency distribution in log-spaced buckets, for charts.
    #[serde(default)]
    pub latency_histogram: Vec<Bucket>,
    /// True when every client connected and every event reached every
    /// client exactly once.
    pub ok: bool,
}

/// Connection outcomes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connections {
    /// Clients started.
    pub attempted: u64,
    /// Clients that got a stream.
    pub connected: u64,
    /// Clients that did not.
    pub failed: u64,
    /// Streams that ended before the run did.
    pub dropped: u64,
    /// Failures by kind (`refused`, `timeout`, `http 503`, `dropped: ...`).
    pub errors: BTreeMap<String, u64>,
    /// Seconds from the first connection attempt until every client had
    /// connected or failed.
    pub ramp_s: f64,
}

/// Percentiles of a histogram recorded in µs, reported in ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Reads a µs histogram.
    pub fn from_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Event accounting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Events {
    /// Events the schedule called for.
    pub scheduled: u64,
    /// Events the server accepted.
    pub published: u64,
    /// Failed publishes by kind.
    pub publish_errors: BTreeMap<String, u64>,
    /// Largest delay of a publish behind its schedule, ms.
    pub publish_max_lag_ms: f64,
    /// Deliveries expected: published × connected clients.
    pub expected: u64,
    /// Distinct deliveries received.
    pub delivered: u64,
    /// Expected deliveries never received.
    pub lost: u64,
    /// Deliveries received more than once (extra copies).
    pub duplicated: u64,
    /// Deliveries received after a later event.
    pub out_of_order: u64,
    /// Events received that were not the bench's (other publishers, clocks).
    pub foreign: u64,
}

/// Delivery throughput.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Seconds the publishing phase took.
    pub elapsed_s: f64,
    /// Distinct deliveries per second.
    pub events_per_s: f64,
    /// Stream bytes received per second, MB (10^6).
    pub mb_per_s: f64,
    /// Stream bytes received in total.
    pub bytes: u64,
}

/// The bench's own CPU and memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchCost {
    /// CPU seconds, all processes of the bench, whole run.
    pub cpu_s: f64,
    /// CPU seconds after every client connected (publish, receive, drain).
    pub run_cpu_s: f64,
    /// `run_cpu_s` per distinct delivery, µs.
    pub cpu_us_per_delivery: f64,
    /// Resident memory grown while connecting, per connected client, bytes.
    pub bytes_per_client: f64,
    /// Resident memory of all bench processes once connected, KiB.
    pub rss_kib: u64,
}

/// The server's CPU and memory (`--server-pid`, with descendants).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerCost {
    /// PIDs given.
    pub pids: Vec<u32>,
    /// Processes measured (the PIDs and their descendants).
    pub processes: usize,
    /// CPU seconds spent while clients connected.
    pub connect_cpu_s: f64,
    /// CPU seconds spent while publishing and draining.
    pub run_cpu_s: f64,
    /// `run_cpu_s` per distinct delivery, µs.
    pub cpu_us_per_delivery: f64,
    /// Resident memory before any client connected, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with every client connected, KiB.
    pub rss_connected_kib: u64,
    /// Growth per connected client, bytes.
    pub bytes_per_connection: f64,
    /// Resident memory at the end of the run, KiB.
    #[serde(default)]
    pub rss_after_kib: u64,
}

/// How clients got back after the storm (and after any stream the server
/// ended).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormReport {
    /// Seconds after publishing started that the cut came.
    pub at_s: f64,
    /// Share of clients cut.
    pub fraction: f64,
    /// Clients cut.
    pub cut: u64,
    /// Clients whose stream the server ended.
    pub broken_by_server: u64,
    /// Clients that reconnected at least once.
    pub resumed_clients: u64,
    /// Clients still trying to reconnect at the end of the run.
    pub not_back: u64,
    /// Per client, from losing the stream to the new stream's head, ms.
    pub time_to_back_ms: Percentiles,
    /// From the cut until the last client was back, seconds (none while a
    /// client is still out).
    pub all_back_s: Option<f64>,
    /// Reconnection attempts by outcome (`200`, `http 503`, `refused`, ...).
    pub statuses: BTreeMap<String, u64>,
    /// How the streams the server ended, ended.
    pub breaks: BTreeMap<String, u64>,
    /// Clients whose every resume continued exactly after the last event
    /// they had: no event skipped, none repeated.
    pub gaps_closed: u64,
    /// Clients with a resume that skipped or repeated events.
    pub gaps_open: u64,
    /// Events skipped across resumes.
    pub gap_lost: u64,
    /// Events repeated across resumes.
    pub gap_duplicated: u64,
    /// Up to 20 clients whose gap stayed open: `[index, skipped, repeated]`.
    pub open_gaps: Vec<(u64, u64, u64)>,
}

/// The short-lived clients of `churn`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnReport {
    /// Clients started per second, as asked.
    pub rate: f64,
    /// Clients started.
    pub started: u64,
    /// Clients that got a stream.
    pub connected: u64,
    /// Streams opened per second, sustained over the run.
    pub connects_per_s: f64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Their connect times.
    pub connect_ms: Percentiles,
}

/// The slow clients of `slow-consumers`, and what they did to the others.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlowReport {
    /// Slow clients.
    pub clients: u64,
    /// Their read rate, bytes per second.
    pub read_rate: u64,
    /// Seconds after publishing started that they turned slow.
    pub from_s: f64,
    /// The healthy clients' latency before the slow ones turned slow (the
    /// steady baseline, same connections).
    pub healthy_baseline_ms: Percentiles,
    /// The healthy clients' latency after.
    pub healthy_with_slow_ms: Percentiles,
    /// Slow clients the server disconnected at least once.
    pub dropped_by_server: u64,
    /// How those streams ended.
    pub breaks: BTreeMap<String, u64>,
    /// Streams of slow clients reopened.
    pub resumes: u64,
    /// Of those, how many continued exactly (no loss, no repeat).
    pub resumes_exact: u64,
    /// Slow clients still reconnecting at the end.
    pub not_back: u64,
    /// Events the slow clients had received by the end.
    pub delivered: u64,
    /// Events they had not.
    pub behind: u64,
    /// Events they received twice.
    pub duplicated: u64,
    /// Their own latency.
    pub latency_ms: Percentiles,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    /// Start of the second, seconds after publishing started.
    pub t_s: f64,
    /// Distinct deliveries received in it.
    pub delivered: u64,
    /// Latency median, ms.
    pub p50_ms: f64,
    /// Latency 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
}

/// A moment of the run worth marking on a chart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Mark {
    /// Seconds after publishing started.
    pub t_s: f64,
    /// What happened (`storm: 2,500 cut`).
    pub label: String,
}

/// The run over time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timeline {
    /// One entry per second with deliveries.
    pub seconds: Vec<Second>,
    /// Open streams of the measuring clients, sampled four times a second:
    /// `[seconds after publishing started, streams]`.
    pub clients: Vec<(f64, u64)>,
    /// Scenario events.
    pub marks: Vec<Mark>,
}

/// A latency histogram bucket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, ms.
    pub to_ms: f64,
    /// Deliveries with a latency in the bucket.
    pub count: u64,
}

/// Buckets from 0.1 ms growing by this factor: 25% wide, fine enough to
/// show a bimodal distribution, about 50 buckets up to a second.
const BUCKET_GROWTH: f64 = 1.25;

/// First bucket's upper bound, µs.
const FIRST_BUCKET_US: u64 = 100;

/// The latency distribution of a µs histogram in log-spaced buckets.
pub fn buckets(h: &Histogram<u64>) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_log(FIRST_BUCKET_US, BUCKET_GROWTH)
        .map(|v| Bucket {
            to_ms: v.value_iterated_to() as f64 / 1000.0,
            count: v.count_since_last_iteration(),
        })
        .collect()
}

impl Report {
    /// What made the run unclean, one phrase each; empty for a clean run.
    pub fn problems(&self) -> Vec<String> {
        use crate::print::count;
        let c = &self.connections;
        let e = &self.events;
        let mut why = Vec::new();
        if c.failed > 0 {
            why.push(format!("{} connections failed", count(c.failed)));
        }
        if c.dropped > 0 {
            why.push(format!("{} streams dropped", count(c.dropped)));
        }
        if e.lost > 0 {
            why.push(format!("{} deliveries lost", count(e.lost)));
        }
        if e.duplicated > 0 {
            why.push(format!("{} duplicated", count(e.duplicated)));
        }
        if e.published < e.scheduled {
            why.push(format!(
                "{} publishes failed",
                count(e.scheduled - e.published)
            ));
        }
        if c.connected == 0 {
            why.push("no client connected".into());
        }
        if let Some(s) = &self.storm {
            if s.not_back > 0 {
                why.push(format!("{} clients not back", count(s.not_back)));
            }
            if s.gaps_open > 0 {
                why.push(format!("{} gaps not closed exactly", count(s.gaps_open)));
            }
        }
        if let Some(ch) = self.churn.as_ref().filter(|ch| !ch.errors.is_empty()) {
            let n: u64 = ch.errors.values().sum();
            why.push(format!("{} churn connections failed", count(n)));
        }
        if let Some(v) = self.slow.as_ref().filter(|v| v.resumes_exact < v.resumes) {
            why.push(format!(
                "{} slow-client resumes not exact",
                count(v.resumes - v.resumes_exact)
            ));
        }
        why
    }

    /// The one-line verdict: `OK: ...` or `FAILED: <problems>`.
    pub fn verdict(&self) -> String {
        if self.ok {
            match self.scenario {
                Scenario::ReconnectStorm => {
                    "OK: every client got every event exactly once, cut clients included"
                }
                Scenario::SlowConsumers => {
                    "OK: every healthy client got every event exactly once; slow ones resumed exactly"
                }
                _ => "OK: every client connected and got every event exactly once",
            }
            .to_string()
        } else {
            format!("FAILED: {}", self.problems().join(", "))
        }
    }
}
