//! The final report: one serializable struct (`--json` prints it as is, so
//! its field names are a stable interface), the human table, and the
//! side-by-side table of several saved reports (`--table`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

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

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn count(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn errors(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}: {}", count(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let c = &self.connections;
        let e = &self.events;
        let l = &self.latency_ms;
        let k = &self.connect_ms;
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "sse-bench {}: {} clients, {} events/s x {}s, {} B payload",
            self.label,
            count(self.clients),
            num(self.rate),
            num(self.duration_s),
            self.payload
        );
        let _ = writeln!(s, "  subscribe  {}", self.sub_url);
        let _ = writeln!(s, "  publish    {}", self.pub_url);
        let _ = writeln!(s);
        let row = |s: &mut String, name: &str, value: String| {
            let _ = writeln!(s, "  {name:<14}{value}");
        };
        row(
            &mut s,
            "connections",
            format!(
                "{} connected, {} failed, {} dropped; all settled in {} s",
                count(c.connected),
                count(c.failed),
                count(c.dropped),
                num(c.ramp_s)
            ),
        );
        if !c.errors.is_empty() {
            row(&mut s, "  errors", errors(&c.errors));
        }
        row(
            &mut s,
            "connect time",
            format!(
                "p50 {} ms  p90 {} ms  p99 {} ms  max {} ms",
                num(k.p50),
                num(k.p90),
                num(k.p99),
                num(k.max)
            ),
        );
        row(
            &mut s,
            "latency",
            format!(
                "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms",
                num(l.p50),
                num(l.p90),
                num(l.p99),
                num(l.p999),
                num(l.max)
            ),
        );
        row(
            &mut s,
            "published",
            format!(
                "{} of {} scheduled{}; max publish lag {} ms",
                count(e.published),
                count(e.scheduled),
                if e.publish_errors.is_empty() {
                    String::new()
                } else {
                    format!(" (errors: {})", errors(&e.publish_errors))
                },
                num(e.publish_max_lag_ms)
            ),
        );
        row(
            &mut s,
            "deliveries",
            format!(
                "{} of {} expected: lost {}, duplicated {}, out of order {}{}",
                count(e.delivered),
                count(e.expected),
                count(e.lost),
                count(e.duplicated),
                count(e.out_of_order),
                if e.foreign > 0 {
                    format!(", foreign {}", count(e.foreign))
                } else {
                    String::new()
                }
            ),
        );
        row(
            &mut s,
            "throughput",
            format!(
                "{} events/s, {} MB/s",
                count(self.throughput.events_per_s.round() as u64),
                num(self.throughput.mb_per_s)
            ),
        );
        let b = &self.bench;
        row(
            &mut s,
            "bench cost",
            format!(
                "CPU {} s ({} s running = {} us/delivery), {} KB/client",
                num(b.cpu_s),
                num(b.run_cpu_s),
                num(b.cpu_us_per_delivery),
                num(b.bytes_per_client / 1000.0)
            ),
        );
        if let Some(v) = &self.server {
            row(
                &mut s,
                "server cost",
                format!(
                    "CPU {} s connecting, {} s running = {} us/delivery; RSS {} -> {} MiB = {} KB/connection ({} processes)",
                    num(v.connect_cpu_s),
                    num(v.run_cpu_s),
                    num(v.cpu_us_per_delivery),
                    num(v.rss_before_kib as f64 / 1024.0),
                    num(v.rss_connected_kib as f64 / 1024.0),
                    num(v.bytes_per_connection / 1000.0),
                    v.processes
                ),
            );
        }
        let verdict = if self.ok {
            "OK: every client connected and got every event exactly once".to_string()
        } else {
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
            format!("FAILED: {}", why.join(", "))
        };
        row(&mut s, "result", verdict);
        s
    }
}

/// One row of the side-by-side table: a name and how to read the figure.
struct Metric {
    name: &'static str,
    get: fn(&Report) -> Option<f64>,
    fmt: fn(f64) -> String,
}

fn int(v: f64) -> String {
    count(v.round() as u64)
}

const METRICS: &[Metric] = &[
    Metric {
        name: "clients connected",
        get: |r| Some(r.connections.connected as f64),
        fmt: int,
    },
    Metric {
        name: "connect all (s)",
        get: |r| Some(r.connections.ramp_s),
        fmt: num,
    },
    Metric {
        name: "connect p99 (ms)",
        get: |r| Some(r.connect_ms.p99),
        fmt: num,
    },
    Metric {
        name: "latency p50 (ms)",
        get: |r| Some(r.latency_ms.p50),
        fmt: num,
    },
    Metric {
        name: "latency p99 (ms)",
        get: |r| Some(r.latency_ms.p99),
        fmt: num,
    },
    Metric {
        name: "latency p99.9 (ms)",
        get: |r| Some(r.latency_ms.p999),
        fmt: num,
    },
    Metric {
        name: "latency max (ms)",
        get: |r| Some(r.latency_ms.max),
        fmt: num,
    },
    Metric {
        name: "delivered events/s",
        get: |r| Some(r.throughput.events_per_s),
        fmt: int,
    },
    Metric {
        name: "lost",
        get: |r| Some(r.events.lost as f64),
        fmt: int,
    },
    Metric {
        name: "duplicated",
        get: |r| Some(r.events.duplicated as f64),
        fmt: int,
    },
    Metric {
        name: "out of order",
        get: |r| Some(r.events.out_of_order as f64),
        fmt: int,
    },
    Metric {
        name: "server CPU running (s)",
        get: |r| r.server.as_ref().map(|s| s.run_cpu_s),
        fmt: num,
    },
    Metric {
        name: "server CPU/delivery (us)",
        get: |r| r.server.as_ref().map(|s| s.cpu_us_per_delivery),
        fmt: num,
    },
    Metric {
        name: "server KB/connection",
        get: |r| r.server.as_ref().map(|s| s.bytes_per_connection / 1000.0),
        fmt: num,
    },
    Metric {
        name: "bench CPU/delivery (us)",
        get: |r| Some(r.bench.cpu_us_per_delivery),
        fmt: num,
    },
    Metric {
        name: "bench KB/client",
        get: |r| Some(r.bench.bytes_per_client / 1000.0),
        fmt: num,
    },
];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Side-by-side table (Markdown) of reports, one column per label in order
/// of first appearance; several runs of a label show `median (min-max)`.
pub fn side_by_side(reports: &[Report]) -> String {
    let mut labels: Vec<&str> = Vec::new();
    for r in reports {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    let mut s = String::new();
    if let Some(first) = reports.first() {
        let runs: Vec<String> = labels
            .iter()
            .map(|l| format!("{l}: {}", reports.iter().filter(|r| &r.label == l).count()))
            .collect();
        let _ = writeln!(
            s,
            "{} clients, {} events/s, {} B payload, {} s; runs per target: {}{}\n",
            count(first.clients),
            num(first.rate),
            first.payload,
            num(first.duration_s),
            runs.join(", "),
            if reports.len() > labels.len() {
                "; median (min-max)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s, "| metric | {} |", labels.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(labels.len()));
    for m in METRICS {
        let mut cells = Vec::new();
        for l in &labels {
            let mut vals: Vec<f64> = reports
                .iter()
                .filter(|r| &r.label == l)
                .filter_map(|r| (m.get)(r))
                .collect();
            cells.push(match vals.len() {
                0 => "-".to_string(),
                1 => (m.fmt)(vals[0]),
                _ => {
                    let med = median(&mut vals);
                    let (lo, hi) = (vals[0], vals[vals.len() - 1]);
                    format!("{} ({}-{})", (m.fmt)(med), (m.fmt)(lo), (m.fmt)(hi))
                }
            });
        }
        let _ = writeln!(s, "| {} | {} |", m.name, cells.join(" | "));
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            let last = r.render().lines().last().unwrap_or("").to_string();
            let verdict = last
                .trim()
                .trim_start_matches("result")
                .trim_start()
                .to_string();
            format!("{}: {verdict}", r.label)
        })
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\nRuns that were not clean:");
        for f in failed {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(label: &str, p99: f64) -> Report {
        Report {
            label: label.into(),
            sub_url: String::new(),
            pub_url: String::new(),
            clients: 10,
            workers: 1,
            rate: 20.0,
            payload: 128,
            duration_s: 30.0,
            connect_rate: 5000.0,
            connections: Connections::default(),
            connect_ms: Percentiles::default(),
            latency_ms: Percentiles {
                p99,
                ..Default::default()
            },
            events: Events::default(),
            throughput: Throughput::default(),
            bench: BenchCost::default(),
            server: None,
            ok: true,
        }
    }

    #[test]
    fn side_by_side_shows_medians_and_spread() {
        let t = side_by_side(&[
            report("a", 1.0),
            report("b", 7.0),
            report("a", 3.0),
            report("a", 2.0),
        ]);
        let row = t
            .lines()
            .find(|l| l.starts_with("| latency p99 (ms)"))
            .unwrap();
        assert_eq!(row, "| latency p99 (ms) | 2.00 (1.00-3.00) | 7.00 |");
        assert!(t.contains("runs per target: a: 3, b: 1"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
    }
}
