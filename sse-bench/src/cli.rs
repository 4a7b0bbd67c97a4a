//! Command-line interface: every flag of `sse-bench`, with the defaults and
//! the reasons for them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use sse_cli::cli::Header;

use sse_cli::duration::parse_duration;

use crate::scenario::{parse_rate, ClientPlan, Scenario};

/// Clients opened when `--clients` is not given: enough to see fan-out cost,
/// few enough to run anywhere.
pub const DEFAULT_CLIENTS: usize = 100;

/// Events per second when `--rate` is not given (the product contract's
/// example uses 10).
pub const DEFAULT_RATE: f64 = 10.0;

/// Payload bytes per event: the contract's default of 128 B is a typical
/// small notification.
pub const DEFAULT_PAYLOAD: usize = 128;

/// New connections per second during ramp-up: fast enough to open 10,000
/// clients in two seconds, slow enough not to overflow a 4096 listen backlog.
pub const DEFAULT_CONNECT_RATE: f64 = 5000.0;

/// Share of connections the storm cuts: half, as a deploy that restarts one
/// of two instances would.
pub const DEFAULT_STORM_FRACTION: f64 = 0.5;

/// Short-lived clients per second in `churn`: a busy page's visitors
/// arriving and leaving, well within one core's accept rate.
pub const DEFAULT_CHURN_RATE: f64 = 100.0;

/// Read rate of slow clients: about a mobile connection in a tunnel, below
/// what the default 10 events/s of 128 B need with their framing (~2 KB/s).
pub const DEFAULT_SLOW_READ_RATE: &str = "1KB/s";

/// Subscribe URL template for our server; `{url}` and `{topic}` are
/// substituted.
pub const DEFAULT_SUB_URL: &str = "{url}/sse?topic={topic}";

/// Publish URL template for our server.
pub const DEFAULT_PUB_URL: &str = "{url}/publish";

/// Publish body template for our server's JSON publish API; `{payload}` only
/// ever holds characters that need no JSON escaping.
pub const DEFAULT_PUB_BODY: &str = r#"{"topic":"{topic}","event":"message","data":"{payload}"}"#;

/// Load tester for Server-Sent Events servers.
///
/// Opens N concurrent SSE connections, publishes events on a fixed schedule,
/// and measures delivery latency (from the intended send time, so a
/// publisher that falls behind is not hidden), connect time, throughput,
/// lost/duplicated/out-of-order events, and the CPU and memory of the bench
/// and, with --server-pid, of the server.
///
/// Exit status: 0 when every client connected and every event published was
/// delivered to every client exactly once; 1 when deliveries were lost or
/// connections failed; 2 when the run could not start.
#[derive(Debug, Clone, Parser)]
#[command(name = "sse-bench", version, about, long_about)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// `completions SHELL` prints a completion script instead of running.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Number of concurrent SSE clients.
    #[arg(short = 'c', long, default_value_t = DEFAULT_CLIENTS, env = "SSE_BENCH_CLIENTS")]
    pub clients: usize,

    /// Base URL of the server (substituted for {url} in the URL templates).
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "SSE_BENCH_URL")]
    pub url: String,

    /// How long to publish, e.g. 30s, 2m.
    #[arg(short = 'd', long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Events published per second (fixed schedule).
    #[arg(short = 'r', long, default_value_t = DEFAULT_RATE, value_parser = parse_positive_f64)]
    pub rate: f64,

    /// Payload size in bytes (at least 48: sequence number and timestamp).
    #[arg(short = 'p', long, default_value_t = DEFAULT_PAYLOAD)]
    pub payload: usize,

    /// New connections per second while ramping up.
    #[arg(long, default_value_t = DEFAULT_CONNECT_RATE, value_parser = parse_positive_f64)]
    pub connect_rate: f64,

    /// Print one JSON object with every figure instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Topic (channel) to publish to and subscribe to; default: a fresh name
    /// per run, so runs never see each other's events.
    #[arg(long)]
    pub topic: Option<String>,

    /// Subscribe URL template ({url}, {topic} substituted); plain http only.
    #[arg(long, default_value = DEFAULT_SUB_URL)]
    pub sub_url: String,

    /// Publish URL template ({url}, {topic} substituted).
    #[arg(long, default_value = DEFAULT_PUB_URL)]
    pub pub_url: String,

    /// Publish body template ({topic}, {payload} substituted), e.g. a raw
    /// "{payload}" for Nchan, or Pushpin's JSON publish format.
    #[arg(long, default_value = DEFAULT_PUB_BODY)]
    pub pub_body: String,

    /// Content-Type of publish requests.
    #[arg(long, default_value = "application/json")]
    pub pub_content_type: String,

    /// Extra header on publish requests, 'Name: value' (repeatable), e.g.
    /// 'Authorization: Bearer TOKEN'.
    #[arg(long = "pub-header", value_name = "HEADER", value_parser = sse_cli::cli::parse_header)]
    pub pub_headers: Vec<Header>,

    /// Bearer token sent as `Authorization: Bearer T` on every subscribe and
    /// publish (a server with --publish-token or JWT authorization).
    #[arg(long, env = "SSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// PID of the server under test (repeatable): its CPU time and resident
    /// memory, with all its descendant processes, are reported.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,

    /// Split the clients over K child processes (each with its own open-file
    /// limit); their histograms are merged.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,

    /// Local source address for client connections (repeatable or
    /// comma-separated, e.g. 127.0.0.2,127.0.0.3): each adds a full
    /// ephemeral port range, for more connections than one range holds.
    #[arg(long = "source-ip", value_name = "IP", value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,

    /// Give up on a connection attempt (TCP connect plus response head) after
    /// this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// After the last publish, wait at most this long for deliveries still
    /// in flight before counting them lost.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Name of the target in reports (for side-by-side tables).
    #[arg(long)]
    pub label: Option<String>,

    /// No progress bars even on a terminal.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Draw the run (with --table: the saved runs on shared axes) into
    /// FILE.svg, or FILE.html (self-contained): latency per second, events
    /// and clients over time with the scenario's moment marked, and the
    /// latency histogram.
    #[arg(long, value_name = "FILE.svg|FILE.html", value_parser = parse_report_path)]
    pub report: Option<PathBuf>,

    /// Print a side-by-side table of saved --json reports and exit (reports
    /// with the same label are runs of one target: the table shows their
    /// medians and spread).
    #[arg(long, value_name = "REPORT.json", num_args = 1..)]
    pub table: Vec<PathBuf>,

    /// What to do to the clients: steady (default), reconnect-storm, churn
    /// or slow-consumers.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    pub scenario: Scenario,

    /// reconnect-storm: when to cut, after publishing starts (default: half
    /// the duration).
    #[arg(long, value_parser = parse_duration)]
    pub storm_at: Option<Duration>,

    /// reconnect-storm: share of the connections cut at once.
    #[arg(long, default_value_t = DEFAULT_STORM_FRACTION, value_parser = parse_fraction)]
    pub storm_fraction: f64,

    /// churn: short-lived clients started per second, each reading for a
    /// random time and leaving.
    #[arg(long, default_value_t = DEFAULT_CHURN_RATE, value_parser = parse_positive_f64)]
    pub churn_rate: f64,

    /// slow-consumers: how many of the clients read slowly (default: a
    /// tenth, at least one).
    #[arg(long)]
    pub slow_clients: Option<usize>,

    /// slow-consumers: how fast the slow clients read, e.g. 1KB/s, 512B/s.
    #[arg(long, default_value = DEFAULT_SLOW_READ_RATE, value_parser = parse_rate)]
    pub slow_read_rate: u64,

    /// Internal: run as a worker child process of a --workers run.
    #[arg(long, hide = true)]
    pub worker: bool,

    /// Internal: clients of the whole run (a worker's roles depend on it).
    #[arg(long, hide = true)]
    pub total_clients: Option<usize>,

    /// Internal: index of the first client of this worker (spreads source
    /// addresses evenly across workers).
    #[arg(long, hide = true, default_value_t = 0)]
    pub client_offset: usize,

    /// Internal (used by `cargo xtask bench --compare`): serve a minimal GRIP
    /// origin for Pushpin on this address and exit on SIGTERM/SIGINT.
    #[arg(long, hide = true, value_name = "ADDR")]
    pub grip_origin: Option<SocketAddr>,
}

fn parse_report_path(s: &str) -> Result<PathBuf, String> {
    let lower = s.to_ascii_lowercase();
    if lower.ends_with(".svg") || lower.ends_with(".html") || lower.ends_with(".htm") {
        Ok(PathBuf::from(s))
    } else {
        Err(format!("{s:?}: the name must end in .svg or .html"))
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("expected a share above 0 and at most 1, got {s:?}")),
    }
}

fn parse_positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a positive number, got {s:?}")),
    }
}

/// What `sse-bench` does besides a run.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print the shell completion script, e.g.
    /// `sse-bench completions bash > ~/.local/share/bash-completion/completions/sse-bench`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Writes the completion script for `shell` to `out`.
///
/// # Errors
/// Writing to `out` failed.
pub fn completions(
    shell: clap_complete::Shell,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sse-bench", &mut script);
    if shell == clap_complete::Shell::Bash {
        // clap_complete's bash script spells a hyphenated binary's
        // subcommand states two ways (clap-rs/clap#6421), as in sse-cli:
        // spell the case arms the loop's way. A no-op once fixed upstream.
        let text = String::from_utf8_lossy(&script).replace("sse__subcmd__bench", "sse__bench");
        script = text.into_bytes();
    }
    out.write_all(&script)?;
    out.flush()
}

impl Cli {
    /// The scenario settings clients need, for a run of `total` clients.
    pub fn client_plan(&self, total: usize) -> ClientPlan {
        ClientPlan {
            scenario: self.scenario,
            total,
            storm_fraction: self.storm_fraction,
            slow_clients: self.slow_clients.unwrap_or((total / 10).max(1)).min(total),
            slow_read_rate: self.slow_read_rate,
        }
    }

    /// When the scenario's moment comes, after publishing starts.
    pub fn event_at(&self) -> Option<Duration> {
        match self.scenario {
            Scenario::ReconnectStorm => Some(self.storm_at.unwrap_or(self.duration / 2)),
            Scenario::SlowConsumers => Some(self.duration / 2),
            Scenario::Steady | Scenario::Churn => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn contract_flags_parse() {
        let cli = Cli::try_parse_from([
            "sse-bench",
            "--clients",
            "10000",
            "--url",
            "http://127.0.0.1:3000",
            "--duration",
            "30s",
            "--rate",
            "20",
            "--payload",
            "128",
            "--connect-rate",
            "5000",
            "--json",
        ])
        .expect("contract flags must parse");
        assert_eq!(cli.clients, 10_000);
        assert_eq!(cli.duration, Duration::from_secs(30));
        assert!(cli.json);
        assert!(Cli::try_parse_from(["sse-bench", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["sse-bench", "--duration", "soon"]).is_err());
    }
}
