//! Worker mode (`--workers K` starts K of these): run this process's share
//! of the clients, report progress as JSON lines on stdout, and the result
//! when the parent says `stop N`.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::io::AsyncBufReadExt as _;

use crate::aggregate::Counters;
use crate::cli::Cli;
use crate::client::Target;
use crate::group::{LocalGroup, WorkerLine, PROGRESS_TICK};
use crate::{limits, procstat};

/// How often a worker reports while its clients are connecting: often, so
/// the parent's ramp time is exact.
const RAMP_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Worker mode: run this process's share of clients, print progress lines,
/// and on `stop N` from the parent print the result line.
///
/// # Errors
/// When the target cannot be prepared or stdout cannot be written.
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    use std::io::Write as _;
    let before = procstat::this();
    let nofile = limits::raise_nofile().context("reading the open-file limit")?;
    limits::check(
        cli.clients as u64,
        cli.clients as u64,
        1,
        nofile,
        cli.source_ips.len() as u64,
    )?;
    let target = Arc::new(
        Target::new(
            &cli.sub_url,
            cli.source_ips.clone(),
            cli.connect_timeout,
            cli.token.as_deref(),
        )
        .await?,
    );
    let counters = Arc::new(Counters::default());
    let plan = cli.client_plan(cli.total_clients.unwrap_or(cli.clients));
    let group = LocalGroup::start(
        target,
        plan,
        (cli.clients, cli.client_offset),
        cli.connect_rate,
        counters.clone(),
    );
    let emit = |line: &WorkerLine| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    };
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut connected_at: Option<procstat::Sample> = None;
    let published = loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(l)) => {
                    if l.trim() == "event" {
                        group.event();
                    } else if let Some(n) = l.strip_prefix("stop ").and_then(|n| n.trim().parse::<u64>().ok()) {
                        break n;
                    }
                }
                // Parent gone: stop quietly.
                _ => break 0,
            },
            // Report quickly while ramping, so the parent's ramp time is exact.
            _ = tokio::time::sleep(if connected_at.is_none() { RAMP_POLL } else { PROGRESS_TICK }) => {
                if connected_at.is_none() && counters.settled() >= cli.clients as u64 {
                    connected_at = Some(procstat::this());
                }
                emit(&WorkerLine::progress(&counters))?;
            }
        }
    };
    let connected = connected_at.unwrap_or_else(procstat::this);
    let mut result = group.finish(published).await?;
    let after = procstat::this();
    result.cpu_total_s = after.cpu_s - before.cpu_s;
    result.cpu_run_s = after.cpu_s - connected.cpu_s;
    result.rss_before_kib = before.rss_kib;
    result.rss_connected_kib = connected.rss_kib;
    emit(&WorkerLine::Result(Box::new(result)))
}
