//! Scenarios (`--scenario`): which clients the bench disturbs, and how.
//!
//! - `steady`: every client reads at full speed for the whole run; a stream
//!   that ends early is an error.
//! - `reconnect-storm`: at `--storm-at` the bench cuts `--storm-fraction` of
//!   its connections at once; each reconnects as EventSource does.
//! - `churn`: short-lived extra clients come and go at `--churn-rate` while
//!   the measuring clients stay ([`churn`](crate::churn)).
//! - `slow-consumers`: `--slow-clients` of the clients read at
//!   `--slow-read-rate` from half the run on (the first half, with every
//!   client at full speed, is the steady baseline on the same connections).
//!
//! In every scenario but `steady`, a client whose stream ends reconnects
//! the way a browser's EventSource does: after the stream's `retry:` time
//! (or the server's `Retry-After` after a refusal), sending `Last-Event-ID`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Reconnection time when the stream never sent `retry:`: Chrome's
/// EventSource default (Firefox waits 5 s).
pub const DEFAULT_RECONNECT: Duration = Duration::from_secs(3);

/// Longest wait honoured from a `Retry-After`, so one odd answer cannot
/// park a client for the rest of the run.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Kernel receive buffer of a slow client: small, so that the server feels
/// the slow reader within seconds instead of after the kernel has buffered
/// megabytes for it.
pub const SLOW_RECV_BUFFER: u32 = 4096;

/// What a run does to its clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every client reads at full speed for the whole run.
    #[default]
    Steady,
    /// A fraction of the clients is cut at once and reconnects.
    ReconnectStorm,
    /// Short-lived clients connect and leave while the others measure.
    Churn,
    /// Some clients read slowly.
    SlowConsumers,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::ReconnectStorm => "reconnect-storm",
            Scenario::Churn => "churn",
            Scenario::SlowConsumers => "slow-consumers",
        }
    }
}

/// What the run tells its clients, in order: a value only ever grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    /// Publishing (or connecting).
    Run,
    /// The scenario's moment: the storm's cut, the slow readers' start.
    Event,
    /// The run is over.
    Stop,
}

/// What a client does in its scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads at full speed, undisturbed.
    Steady,
    /// Is cut at the storm.
    Cut,
    /// Reads slowly after the scenario's moment.
    Slow,
}

/// The scenario settings every client process needs.
#[derive(Debug, Clone, Copy)]
pub struct ClientPlan {
    /// The scenario.
    pub scenario: Scenario,
    /// Clients of the whole run (all workers).
    pub total: usize,
    /// Share of clients cut by the storm.
    pub storm_fraction: f64,
    /// Slow clients of the whole run.
    pub slow_clients: usize,
    /// Bytes per second a slow client reads.
    pub slow_read_rate: u64,
}

impl ClientPlan {
    /// A plan where nothing is disturbed.
    pub fn steady(total: usize) -> Self {
        Self {
            scenario: Scenario::Steady,
            total,
            storm_fraction: 0.0,
            slow_clients: 0,
            slow_read_rate: 0,
        }
    }

    /// Whether clients reconnect when their stream ends.
    pub fn reconnects(&self) -> bool {
        self.scenario != Scenario::Steady
    }

    /// The role of client `index` (0-based over the whole run). Chosen
    /// clients are spread evenly over the indices, so every worker and
    /// every source address gets its share, and exactly
    /// `floor(total × fraction)` are chosen.
    pub fn role(&self, index: usize) -> Role {
        let picked =
            |share: f64| ((index + 1) as f64 * share).floor() > (index as f64 * share).floor();
        match self.scenario {
            Scenario::ReconnectStorm if picked(self.storm_fraction) => Role::Cut,
            Scenario::SlowConsumers
                if picked(self.slow_clients as f64 / self.total.max(1) as f64) =>
            {
                Role::Slow
            }
            _ => Role::Steady,
        }
    }
}

/// Parses a read rate such as `1KB/s`, `512B/s`, `2KiB/s`, `1MB/s` or a
/// bare number of bytes per second (`/s` optional; K and M are 1000 and
/// 1,000,000, Ki and Mi 1024 and 1,048,576).
///
/// # Errors
/// A message for clap on anything else, or zero.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" => 1_048_576.0,
        _ => {
            return Err(format!(
                "{s:?}: expected a rate such as 1KB/s, 512B/s, 2KiB/s"
            ))
        }
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v * factor >= 1.0 => Ok((v * factor) as u64),
        _ => Err(format!("{s:?}: expected a positive rate such as 1KB/s")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("1KB/s"), Ok(1000));
        assert_eq!(parse_rate("2KiB/s"), Ok(2048));
        assert_eq!(parse_rate("512"), Ok(512));
        assert_eq!(parse_rate("1.5MB/s"), Ok(1_500_000));
        assert!(parse_rate("0B/s").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn roles_are_spread_and_counted_exactly() {
        let plan = ClientPlan {
            scenario: Scenario::ReconnectStorm,
            storm_fraction: 0.3,
            ..ClientPlan::steady(1000)
        };
        let cut = (0..1000).filter(|&i| plan.role(i) == Role::Cut).count();
        assert_eq!(cut, 300);
        // Evenly spread: every tenth of the range gets its share.
        let first = (0..100).filter(|&i| plan.role(i) == Role::Cut).count();
        assert_eq!(first, 30);
        let slow = ClientPlan {
            scenario: Scenario::SlowConsumers,
            slow_clients: 7,
            ..ClientPlan::steady(100)
        };
        assert_eq!((0..100).filter(|&i| slow.role(i) == Role::Slow).count(), 7);
        assert!((0..100).all(|i| ClientPlan::steady(100).role(i) == Role::Steady));
    }
}
