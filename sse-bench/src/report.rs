//! The final report: one serializable struct (`--json` prints it as is, so
//! its field names are a stable interface) and its verdict. The printers
//! live in [`print`](crate::print).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

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
        why
    }

    /// The one-line verdict: `OK: ...` or `FAILED: <problems>`.
    pub fn verdict(&self) -> String {
        if self.ok {
            "OK: every client connected and got every event exactly once".to_string()
        } else {
            format!("FAILED: {}", self.problems().join(", "))
        }
    }
}
