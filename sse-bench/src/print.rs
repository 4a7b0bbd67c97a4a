//! Printers: the human table of one run and the side-by-side Markdown table
//! of several saved reports (`--table`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{Percentiles, Report, SlowReport};

/// A figure with 2 to 3 significant digits.
pub fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn count(v: u64) -> String {
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

/// The human-readable table of one run.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "sse-bench {}: {} clients, {} events/s x {}s, {} B payload",
        r.label,
        count(r.clients),
        num(r.rate),
        num(r.duration_s),
        r.payload
    );
    let _ = writeln!(s, "  subscribe  {}", r.sub_url);
    let _ = writeln!(s, "  publish    {}", r.pub_url);
    let _ = writeln!(s);
    let mut rows = connection_rows(r);
    rows.extend(event_rows(r));
    rows.extend(scenario_rows(r));
    rows.extend(cost_rows(r));
    rows.push(("result", r.verdict()));
    for (name, value) in rows {
        let _ = writeln!(s, "  {name:<14}{value}");
    }
    s
}

type Rows = Vec<(&'static str, String)>;

fn ms_percentiles(p: &Percentiles, p999: bool) -> String {
    let mut s = format!(
        "p50 {} ms  p90 {} ms  p99 {} ms",
        num(p.p50),
        num(p.p90),
        num(p.p99)
    );
    if p999 {
        let _ = write!(s, "  p99.9 {} ms", num(p.p999));
    }
    let _ = write!(s, "  max {} ms", num(p.max));
    s
}

fn connection_rows(r: &Report) -> Rows {
    let c = &r.connections;
    let mut rows = vec![(
        "connections",
        format!(
            "{} connected, {} failed, {} dropped; all settled in {} s",
            count(c.connected),
            count(c.failed),
            count(c.dropped),
            num(c.ramp_s)
        ),
    )];
    if !c.errors.is_empty() {
        rows.push(("  errors", errors(&c.errors)));
    }
    rows.push(("connect time", ms_percentiles(&r.connect_ms, false)));
    rows.push(("latency", ms_percentiles(&r.latency_ms, true)));
    rows
}

fn event_rows(r: &Report) -> Rows {
    let e = &r.events;
    let publish_errors = if e.publish_errors.is_empty() {
        String::new()
    } else {
        format!(" (errors: {})", errors(&e.publish_errors))
    };
    let foreign = if e.foreign > 0 {
        format!(", foreign {}", count(e.foreign))
    } else {
        String::new()
    };
    vec![
        (
            "published",
            format!(
                "{} of {} scheduled{publish_errors}; max publish lag {} ms",
                count(e.published),
                count(e.scheduled),
                num(e.publish_max_lag_ms)
            ),
        ),
        (
            "deliveries",
            format!(
                "{} of {} expected: lost {}, duplicated {}, out of order {}{foreign}",
                count(e.delivered),
                count(e.expected),
                count(e.lost),
                count(e.duplicated),
                count(e.out_of_order),
            ),
        ),
        (
            "throughput",
            format!(
                "{} events/s, {} MB/s",
                count(r.throughput.events_per_s.round() as u64),
                num(r.throughput.mb_per_s)
            ),
        ),
    ]
}

fn p50_p99(p: &Percentiles) -> String {
    format!("p50 {} ms, p99 {} ms", num(p.p50), num(p.p99))
}

fn scenario_rows(r: &Report) -> Rows {
    let mut rows = Rows::new();
    if let Some(s) = &r.storm {
        let back = match s.all_back_s {
            Some(t) => format!("all back in {} s", num(t)),
            None => format!("{} not back", count(s.not_back)),
        };
        rows.push((
            "storm",
            format!(
                "at {} s cut {} of {}; {back} (per client {})",
                num(s.at_s),
                count(s.cut),
                count(r.clients),
                p50_p99(&s.time_to_back_ms)
            ),
        ));
        rows.push(("  statuses", errors(&s.statuses)));
        if !s.breaks.is_empty() {
            rows.push(("  server ended", errors(&s.breaks)));
        }
        rows.push((
            "  gaps",
            format!(
                "{} of {} closed exactly (skipped {}, repeated {})",
                count(s.gaps_closed),
                count(s.gaps_closed + s.gaps_open),
                count(s.gap_lost),
                count(s.gap_duplicated)
            ),
        ));
    }
    if let Some(c) = &r.churn {
        rows.push((
            "churn",
            format!(
                "{} of {} short-lived clients connected ({}/s), connect {}{}",
                count(c.connected),
                count(c.started),
                num(c.connects_per_s),
                p50_p99(&c.connect_ms),
                if c.errors.is_empty() {
                    String::new()
                } else {
                    format!("; errors: {}", errors(&c.errors))
                }
            ),
        ));
    }
    if let Some(v) = &r.slow {
        rows.extend(slow_rows(v));
    }
    rows
}

fn slow_rows(v: &SlowReport) -> Rows {
    vec![
        (
            "slow readers",
            format!(
                "{} at {} B/s from {} s: {} dropped by the server, {} resumes ({} exact), {} not back",
                count(v.clients),
                count(v.read_rate),
                num(v.from_s),
                count(v.dropped_by_server),
                count(v.resumes),
                count(v.resumes_exact),
                count(v.not_back)
            ),
        ),
        (
            "  slow events",
            format!(
                "{} received, {} still behind, {} repeated; latency {}",
                count(v.delivered),
                count(v.behind),
                count(v.duplicated),
                p50_p99(&v.latency_ms)
            ),
        ),
        (
            "healthy",
            format!(
                "before: {}; with slow readers: {}",
                p50_p99(&v.healthy_baseline_ms),
                p50_p99(&v.healthy_with_slow_ms)
            ),
        ),
    ]
}

fn cost_rows(r: &Report) -> Rows {
    let b = &r.bench;
    let mut rows = vec![(
        "bench cost",
        format!(
            "CPU {} s ({} s running = {} us/delivery), {} KB/client",
            num(b.cpu_s),
            num(b.run_cpu_s),
            num(b.cpu_us_per_delivery),
            num(b.bytes_per_client / 1000.0)
        ),
    )];
    if let Some(v) = &r.server {
        rows.push((
            "server cost",
            format!(
                "CPU {} s connecting, {} s running = {} us/delivery; RSS {} -> {} -> {} MiB = {} KB/connection ({} processes)",
                num(v.connect_cpu_s),
                num(v.run_cpu_s),
                num(v.cpu_us_per_delivery),
                num(v.rss_before_kib as f64 / 1024.0),
                num(v.rss_connected_kib as f64 / 1024.0),
                num(v.rss_after_kib as f64 / 1024.0),
                num(v.bytes_per_connection / 1000.0),
                v.processes
            ),
        ));
    }
    rows
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

/// Rows shown only when some report has the figure (scenario results).
const SCENARIO_METRICS: &[Metric] = &[
    Metric {
        name: "storm: clients cut",
        get: |r| r.storm.as_ref().map(|s| s.cut as f64),
        fmt: int,
    },
    Metric {
        name: "storm: all back after (s)",
        get: |r| r.storm.as_ref().and_then(|s| s.all_back_s),
        fmt: num,
    },
    Metric {
        name: "storm: back p50 per client (ms)",
        get: |r| r.storm.as_ref().map(|s| s.time_to_back_ms.p50),
        fmt: num,
    },
    Metric {
        name: "storm: back p99 per client (ms)",
        get: |r| r.storm.as_ref().map(|s| s.time_to_back_ms.p99),
        fmt: num,
    },
    Metric {
        name: "storm: not back",
        get: |r| r.storm.as_ref().map(|s| s.not_back as f64),
        fmt: int,
    },
    Metric {
        name: "storm: refused reconnects",
        get: |r| {
            r.storm.as_ref().map(|s| {
                s.statuses
                    .iter()
                    .filter(|(k, _)| k.as_str() != "200")
                    .map(|(_, v)| *v as f64)
                    .sum()
            })
        },
        fmt: int,
    },
    Metric {
        name: "storm: gaps closed exactly",
        get: |r| r.storm.as_ref().map(|s| s.gaps_closed as f64),
        fmt: int,
    },
    Metric {
        name: "storm: gaps left open",
        get: |r| r.storm.as_ref().map(|s| s.gaps_open as f64),
        fmt: int,
    },
    Metric {
        name: "churn: connects/s",
        get: |r| r.churn.as_ref().map(|c| c.connects_per_s),
        fmt: num,
    },
    Metric {
        name: "churn: failed connects",
        get: |r| {
            r.churn
                .as_ref()
                .map(|c| c.errors.values().sum::<u64>() as f64)
        },
        fmt: int,
    },
    Metric {
        name: "slow: dropped by server",
        get: |r| r.slow.as_ref().map(|v| v.dropped_by_server as f64),
        fmt: int,
    },
    Metric {
        name: "slow: exact resumes",
        get: |r| r.slow.as_ref().map(|v| v.resumes_exact as f64),
        fmt: int,
    },
    Metric {
        name: "healthy p99 before slow (ms)",
        get: |r| r.slow.as_ref().map(|v| v.healthy_baseline_ms.p99),
        fmt: num,
    },
    Metric {
        name: "healthy p99 with slow (ms)",
        get: |r| r.slow.as_ref().map(|v| v.healthy_with_slow_ms.p99),
        fmt: num,
    },
    Metric {
        name: "server RSS at end (MiB)",
        get: |r| {
            r.server
                .as_ref()
                .filter(|s| s.rss_after_kib > 0)
                .map(|s| s.rss_after_kib as f64 / 1024.0)
        },
        fmt: num,
    },
];

/// One table row: the figure for each label (`median (min-max)` over runs).
fn metric_row(m: &Metric, labels: &[&str], reports: &[Report]) -> Vec<String> {
    labels
        .iter()
        .map(|l| {
            let mut vals: Vec<f64> = reports
                .iter()
                .filter(|r| &r.label == l)
                .filter_map(|r| (m.get)(r))
                .collect();
            match vals.len() {
                0 => "-".to_string(),
                1 => (m.fmt)(vals[0]),
                _ => {
                    let med = median(&mut vals);
                    let (lo, hi) = (vals[0], vals[vals.len() - 1]);
                    format!("{} ({}-{})", (m.fmt)(med), (m.fmt)(lo), (m.fmt)(hi))
                }
            }
        })
        .collect()
}

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
            "{}{} clients, {} events/s, {} B payload, {} s; runs per target: {}{}\n",
            match first.scenario {
                crate::scenario::Scenario::Steady => String::new(),
                other => format!("{}: ", other.name()),
            },
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
        let cells = metric_row(m, &labels, reports);
        let _ = writeln!(s, "| {} | {} |", m.name, cells.join(" | "));
    }
    for m in SCENARIO_METRICS {
        if reports.iter().any(|r| (m.get)(r).is_some()) {
            let cells = metric_row(m, &labels, reports);
            let _ = writeln!(s, "| {} | {} |", m.name, cells.join(" | "));
        }
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {}", r.label, r.verdict()))
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
    use crate::report::*;

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
            scenario: Default::default(),
            storm: None,
            churn: None,
            slow: None,
            timeline: Timeline::default(),
            latency_histogram: Vec::new(),
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
