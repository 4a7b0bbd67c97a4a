//! One benchmark run, start to finish: check limits, connect every client,
//! publish on schedule, drain, stop, and assemble the report. Also the
//! worker side of `--workers`.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncBufReadExt as _;

use crate::aggregate::{Counters, GroupResult};
use crate::cli::Cli;
use crate::client::Target;
use crate::group::{Group, LocalGroup, WorkerGroup, WorkerLine, PROGRESS_TICK};
use crate::publisher::{self, BodyTemplate, PublishSpec};
use crate::report::{BenchCost, Connections, Events, Percentiles, Report, ServerCost, Throughput};
use crate::{limits, payload, procstat};

/// Extra time allowed for the ramp beyond its schedule and the connect
/// timeout, before giving up on clients that neither connected nor failed.
const RAMP_SLACK: Duration = Duration::from_secs(5);

/// How often wait loops look at the counters.
const POLL: Duration = Duration::from_millis(20);

/// Fills `{url}` and `{topic}` in a URL template.
pub fn fill_url(template: &str, url: &str, topic: &str) -> String {
    template
        .replace("{url}", url.trim_end_matches('/'))
        .replace("{topic}", topic)
}

/// Progress bars on stderr, only on a terminal.
struct Progress {
    multi: MultiProgress,
    ramp: ProgressBar,
    run: Option<ProgressBar>,
}

impl Progress {
    fn new(enabled: bool, clients: u64) -> Self {
        let target = if enabled && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let ramp = multi.add(ProgressBar::new(clients));
        ramp.set_style(
            ProgressStyle::with_template("connecting {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            multi,
            ramp,
            run: None,
        }
    }

    fn ramp(&self, c: &Counters) {
        self.ramp.set_position(c.settled());
        self.ramp.set_message(format!(
            "connected {} failed {}",
            c.connected.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed)
        ));
    }

    fn start_run(&mut self, duration: Duration) {
        self.ramp.finish();
        let bar = self
            .multi
            .add(ProgressBar::new(duration.as_millis() as u64));
        bar.set_style(
            ProgressStyle::with_template("running    {bar:30} {elapsed}/{duration} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.run = Some(bar);
    }

    fn run(&self, c: &Counters, elapsed: Duration, rate: f64) {
        if let Some(bar) = &self.run {
            bar.set_position(elapsed.as_millis() as u64);
            let p99 = match c.recent_p99_us.load(Ordering::Relaxed) {
                0 => "-".to_string(),
                us => format!("{:.1} ms", us as f64 / 1000.0),
            };
            bar.set_message(format!(
                "events {} ({:.0}/s) p99 {p99}",
                c.events.load(Ordering::Relaxed),
                rate,
            ));
        }
    }

    fn finish(&self) {
        self.ramp.finish_and_clear();
        if let Some(bar) = &self.run {
            bar.finish_and_clear();
        }
    }
}

/// Runs the benchmark the flags describe.
///
/// # Errors
/// When the run cannot start (limits, bad URLs, workers that fail); problems
/// during the run are measured and reported, not returned.
pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    if cli.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if cli.payload < payload::MIN_PAYLOAD {
        bail!(
            "--payload must be at least {} bytes (sequence number and timestamp)",
            payload::MIN_PAYLOAD
        );
    }
    let workers = cli.workers.max(1);
    if workers > cli.clients {
        bail!("--workers {workers} is more than --clients {}", cli.clients);
    }
    let topic = cli.topic.clone().unwrap_or_else(|| {
        format!(
            "bench-{}-{}",
            std::process::id(),
            payload::now_ns() % 1_000_000_000
        )
    });
    let sub_url = fill_url(&cli.sub_url, &cli.url, &topic);
    let pub_url = fill_url(&cli.pub_url, &cli.url, &topic);
    let label = cli.label.clone().unwrap_or_else(|| {
        crate::client::split_http_url(&sub_url)
            .map_or_else(|_| sub_url.clone(), |(h, p, _)| format!("{h}:{p}"))
    });

    let clients = cli.clients as u64;
    let per_process = clients.div_ceil(workers as u64);
    let nofile = limits::raise_nofile().context("reading the open-file limit")?;
    limits::check(
        clients,
        per_process,
        workers as u64,
        nofile,
        cli.source_ips.len() as u64,
    )?;
    let target =
        Arc::new(Target::new(&sub_url, cli.source_ips.clone(), cli.connect_timeout).await?);
    let spec = PublishSpec {
        url: pub_url.clone(),
        body: BodyTemplate::new(&cli.pub_body, &topic),
        headers: publisher::headers(&cli.pub_content_type, &cli.pub_headers)?,
        rate: cli.rate,
        duration: cli.duration,
        payload: cli.payload,
    };

    let self_before = procstat::this();
    let server_before = (!cli.server_pids.is_empty()).then(|| procstat::tree(&cli.server_pids));
    if let Some(s) = &server_before {
        if s.processes == 0 {
            bail!("--server-pid {:?}: no such process", cli.server_pids);
        }
    }

    let counters = Arc::new(Counters::default());
    let mut progress = Progress::new(!cli.quiet, clients);
    let ramp_start = Instant::now();
    let group = if workers > 1 {
        let mut args = vec![
            "--sub-url".to_string(),
            sub_url.clone(),
            "--connect-timeout".into(),
        ];
        args.push(humantime::format_duration(cli.connect_timeout).to_string());
        for ip in &cli.source_ips {
            args.push("--source-ip".into());
            args.push(ip.to_string());
        }
        Group::Workers(WorkerGroup::start(
            workers,
            cli.clients,
            cli.connect_rate,
            &args,
            counters.clone(),
        )?)
    } else {
        Group::Local(LocalGroup::start(
            target,
            cli.clients,
            0,
            cli.connect_rate,
            counters.clone(),
        ))
    };

    // Ramp: wait until every client connected or failed.
    let ramp_deadline = ramp_start
        + Duration::from_secs_f64(clients as f64 / cli.connect_rate)
        + cli.connect_timeout
        + RAMP_SLACK;
    loop {
        group.refresh();
        progress.ramp(&counters);
        if counters.settled() >= clients {
            break;
        }
        if Instant::now() > ramp_deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();
    let self_connected = procstat::this();
    let server_connected = server_before.map(|_| procstat::tree(&cli.server_pids));
    let connected = counters.connected.load(Ordering::Relaxed);

    // Publish (even with no client connected: a run against a dead server
    // still reports what happened).
    progress.start_run(cli.duration);
    let sent = Arc::new(AtomicU64::new(0));
    // The publisher gets its own thread and runtime so that its sends are
    // not queued behind thousands of busy client tasks: on a loaded box the
    // schedule would slip and the bench would measure itself.
    let (done_tx, mut publishing) = tokio::sync::oneshot::channel();
    let publisher_sent = sent.clone();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(publisher::run(spec, publisher_sent)));
            let _ = done_tx.send(result);
        })
        .context("starting the publisher thread")?;
    let run_start = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    let stats = loop {
        tokio::select! {
            r = &mut publishing => break r.context("publisher thread ended early")??,
            _ = tokio::time::sleep(PROGRESS_TICK) => {
                group.refresh();
                let events = counters.events.load(Ordering::Relaxed);
                let dt = last.0.elapsed().as_secs_f64();
                if dt > 0.0 {
                    rate = (events - last.1) as f64 / dt;
                }
                last = (Instant::now(), events);
                progress.run(&counters, run_start.elapsed(), rate);
            }
        }
    };

    // Drain: until every connected client has every published event, or
    // the drain time is up.
    let expected = stats.published * connected;
    let drain_deadline = Instant::now() + cli.drain;
    loop {
        group.refresh();
        if counters.distinct.load(Ordering::Relaxed) >= expected || Instant::now() > drain_deadline
        {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let result = group.finish(stats.published).await?;
    progress.finish();
    let self_after = procstat::this();
    let server_after = server_before.map(|_| procstat::tree(&cli.server_pids));

    let GroupResult {
        latency, connect, ..
    } = &result;
    let mut errors = result.errors.clone();
    if result.connected + result.failed < clients {
        *errors.entry("never settled".into()).or_default() +=
            clients - result.connected - result.failed;
    }
    let delivered = result.delivered.max(1) as f64;
    let bench_run_cpu = (self_after.cpu_s - self_connected.cpu_s) + result.cpu_run_s;
    let bench_mem = (self_connected.rss_kib as f64 - self_before.rss_kib as f64)
        + (result.rss_connected_kib as f64 - result.rss_before_kib as f64);
    let server = match (server_before, server_connected, server_after) {
        (Some(b), Some(c), Some(a)) => Some(ServerCost {
            pids: cli.server_pids.clone(),
            processes: a.processes,
            connect_cpu_s: c.cpu_s - b.cpu_s,
            run_cpu_s: a.cpu_s - c.cpu_s,
            cpu_us_per_delivery: (a.cpu_s - c.cpu_s) * 1e6 / delivered,
            rss_before_kib: b.rss_kib,
            rss_connected_kib: c.rss_kib,
            bytes_per_connection: (c.rss_kib as f64 - b.rss_kib as f64) * 1024.0
                / result.connected.max(1) as f64,
        }),
        _ => None,
    };
    let events = Events {
        scheduled: stats.scheduled,
        published: stats.published,
        publish_errors: stats.errors.clone(),
        publish_max_lag_ms: stats.max_lag_us as f64 / 1000.0,
        expected: stats.published * result.connected,
        delivered: result.delivered,
        lost: result.lost,
        duplicated: result.duplicated,
        out_of_order: result.out_of_order,
        foreign: result.foreign,
    };
    let ok = result.connected == clients
        && result.failed == 0
        && result.dropped == 0
        && result.lost == 0
        && result.duplicated == 0
        && stats.published == stats.scheduled;
    let elapsed = stats.elapsed_s.max(1e-9);
    Ok(Report {
        label,
        sub_url,
        pub_url,
        clients,
        workers: workers as u64,
        rate: cli.rate,
        payload: cli.payload as u64,
        duration_s: cli.duration.as_secs_f64(),
        connect_rate: cli.connect_rate,
        connections: Connections {
            attempted: clients,
            connected: result.connected,
            failed: result.failed,
            dropped: result.dropped,
            errors,
            ramp_s,
        },
        connect_ms: Percentiles::from_us(connect),
        latency_ms: Percentiles::from_us(latency),
        events,
        throughput: Throughput {
            elapsed_s: stats.elapsed_s,
            events_per_s: result.delivered as f64 / elapsed,
            mb_per_s: result.bytes as f64 / elapsed / 1e6,
            bytes: result.bytes,
        },
        bench: BenchCost {
            cpu_s: (self_after.cpu_s - self_before.cpu_s) + result.cpu_total_s,
            run_cpu_s: bench_run_cpu,
            cpu_us_per_delivery: bench_run_cpu * 1e6 / delivered,
            bytes_per_client: bench_mem * 1024.0 / result.connected.max(1) as f64,
            rss_kib: self_connected.rss_kib + result.rss_connected_kib,
        },
        server,
        ok,
    })
}

/// Worker mode: run this process's share of clients, print progress lines,
/// and on `stop N` from the parent print the result line.
///
/// # Errors
/// When the target cannot be prepared or stdout cannot be written.
pub async fn worker(cli: &Cli) -> anyhow::Result<()> {
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
    let target =
        Arc::new(Target::new(&cli.sub_url, cli.source_ips.clone(), cli.connect_timeout).await?);
    let counters = Arc::new(Counters::default());
    let group = LocalGroup::start(
        target,
        cli.clients,
        cli.client_offset,
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
                    if let Some(n) = l.strip_prefix("stop ").and_then(|n| n.trim().parse::<u64>().ok()) {
                        break n;
                    }
                }
                // Parent gone: stop quietly.
                _ => break 0,
            },
            // Report quickly while ramping, so the parent's ramp time is exact.
            _ = tokio::time::sleep(if connected_at.is_none() { POLL } else { PROGRESS_TICK }) => {
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
