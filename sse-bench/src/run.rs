//! One benchmark run, a function per phase: [`Plan::new`] checks the flags
//! and limits, [`start_group`] starts the clients, [`ramp`] waits for them
//! to connect, [`publish`] runs the publisher while [`Progress`] shows the
//! live figures, [`drain`] waits for deliveries in flight, and [`assemble`]
//! turns what was measured into the [`Report`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::aggregate::{Counters, GroupResult};
use crate::cli::Cli;
use crate::client::{Target, MAX_EVENT_BYTES};
use crate::group::{Group, LocalGroup, WorkerGroup, PROGRESS_TICK};
use crate::progress::Progress;
use crate::publisher::{self, BodyTemplate, PublishSpec, PublishStats};
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

/// The validated inputs of a run.
pub struct Plan {
    /// Report label.
    pub label: String,
    /// Filled-in subscribe URL.
    pub sub_url: String,
    /// Client count.
    pub clients: u64,
    /// Processes the clients run in.
    pub workers: usize,
    /// Where local clients connect.
    pub target: Arc<Target>,
    /// What the publisher does.
    pub spec: PublishSpec,
}

impl Plan {
    /// Checks the flags and the system's limits, and resolves the target.
    ///
    /// # Errors
    /// When the run cannot start: bad flags, limits too low, a target that
    /// does not resolve.
    pub async fn new(cli: &Cli) -> anyhow::Result<Self> {
        if cli.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if !(payload::MIN_PAYLOAD..=MAX_EVENT_BYTES / 2).contains(&cli.payload) {
            bail!(
                "--payload must be between {} bytes (sequence number and timestamp) and {} bytes",
                payload::MIN_PAYLOAD,
                MAX_EVENT_BYTES / 2
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
            crate::http1::split_http_url(&sub_url)
                .map_or_else(|_| sub_url.clone(), |(h, p, _)| format!("{h}:{p}"))
        });
        let clients = cli.clients as u64;
        let nofile = limits::raise_nofile().context("reading the open-file limit")?;
        limits::check(
            clients,
            clients.div_ceil(workers as u64),
            workers as u64,
            nofile,
            cli.source_ips.len() as u64,
        )?;
        let target =
            Arc::new(Target::new(&sub_url, cli.source_ips.clone(), cli.connect_timeout).await?);
        let spec = PublishSpec {
            url: pub_url,
            body: BodyTemplate::new(&cli.pub_body, &topic),
            headers: publisher::headers(&cli.pub_content_type, &cli.pub_headers)?,
            rate: cli.rate,
            duration: cli.duration,
            payload: cli.payload,
        };
        Ok(Self {
            label,
            sub_url,
            clients,
            workers,
            target,
            spec,
        })
    }
}

/// CPU and memory of the bench and the server at the phase boundaries.
struct Samples {
    bench: [procstat::Sample; 3],
    server: Option<[procstat::Sample; 3]>,
}

/// Reads the server's processes, if `--server-pid` was given.
fn server_sample(pids: &[u32]) -> Option<procstat::Sample> {
    (!pids.is_empty()).then(|| procstat::tree(pids))
}

/// Starts the clients, in this process or in worker processes.
///
/// # Errors
/// When a worker cannot be started.
fn start_group(plan: &Plan, cli: &Cli, counters: Arc<Counters>) -> anyhow::Result<Group> {
    if plan.workers == 1 {
        return Ok(Group::Local(LocalGroup::start(
            plan.target.clone(),
            cli.clients,
            0,
            cli.connect_rate,
            counters,
        )));
    }
    let mut args = vec![
        "--sub-url".to_string(),
        plan.sub_url.clone(),
        "--connect-timeout".into(),
        humantime::format_duration(cli.connect_timeout).to_string(),
    ];
    for ip in &cli.source_ips {
        args.push("--source-ip".into());
        args.push(ip.to_string());
    }
    Ok(Group::Workers(WorkerGroup::start(
        plan.workers,
        cli.clients,
        cli.connect_rate,
        &args,
        counters,
    )?))
}

/// Waits until every client connected or failed (or the ramp's deadline
/// passed); returns the seconds it took.
async fn ramp(
    plan: &Plan,
    cli: &Cli,
    group: &Group,
    counters: &Counters,
    progress: &Progress,
) -> f64 {
    let start = Instant::now();
    let deadline = start
        + Duration::from_secs_f64(plan.clients as f64 / cli.connect_rate)
        + cli.connect_timeout
        + RAMP_SLACK;
    loop {
        group.refresh();
        progress.ramp(counters);
        if counters.settled() >= plan.clients || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    start.elapsed().as_secs_f64()
}

/// Runs the publisher to the end of its schedule, updating the progress
/// display meanwhile. Publishes even with no client connected: a run
/// against a dead server still reports what happened.
///
/// # Errors
/// When the publisher thread cannot start or its HTTP client cannot be built.
async fn publish(
    plan: &Plan,
    group: &Group,
    counters: &Counters,
    progress: &mut Progress,
) -> anyhow::Result<PublishStats> {
    progress.start_run(plan.spec.duration);
    // The publisher gets its own thread and runtime so that its sends are
    // not queued behind thousands of busy client tasks: on a loaded box the
    // schedule would slip and the bench would measure itself.
    let (done_tx, mut publishing) = tokio::sync::oneshot::channel();
    let spec = plan.spec.clone();
    let sent = Arc::new(AtomicU64::new(0));
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(publisher::run(spec, sent)));
            let _ = done_tx.send(result);
        })
        .context("starting the publisher thread")?;
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    loop {
        tokio::select! {
            r = &mut publishing => return r.context("publisher thread ended early")?,
            _ = tokio::time::sleep(PROGRESS_TICK) => {
                group.refresh();
                let events = counters.events.load(Ordering::Relaxed);
                let dt = last.0.elapsed().as_secs_f64();
                if dt > 0.0 {
                    rate = (events - last.1) as f64 / dt;
                }
                last = (Instant::now(), events);
                progress.run(counters, start.elapsed(), rate);
            }
        }
    }
}

/// Waits until every connected client has every published event, or the
/// drain time is up.
async fn drain(group: &Group, counters: &Counters, expected: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        group.refresh();
        if counters.distinct.load(Ordering::Relaxed) >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the benchmark the flags describe.
///
/// # Errors
/// When the run cannot start (limits, bad URLs, workers that fail); problems
/// during the run are measured and reported, not returned.
pub async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let plan = Plan::new(cli).await?;
    let self_before = procstat::this();
    let server_before = server_sample(&cli.server_pids);
    if server_before.as_ref().is_some_and(|s| s.processes == 0) {
        bail!("--server-pid {:?}: no such process", cli.server_pids);
    }
    let counters = Arc::new(Counters::default());
    let mut progress = Progress::new(!cli.quiet, plan.clients);
    let group = start_group(&plan, cli, counters.clone())?;
    let ramp_s = ramp(&plan, cli, &group, &counters, &progress).await;
    let self_connected = procstat::this();
    let server_connected = server_sample(&cli.server_pids);
    let connected = counters.connected.load(Ordering::Relaxed);

    let stats = publish(&plan, &group, &counters, &mut progress).await?;
    drain(&group, &counters, stats.published * connected, cli.drain).await;
    let result = group.finish(stats.published).await?;
    progress.finish();
    let samples = Samples {
        bench: [self_before, self_connected, procstat::this()],
        server: match (
            server_before,
            server_connected,
            server_sample(&cli.server_pids),
        ) {
            (Some(b), Some(c), Some(a)) => Some([b, c, a]),
            _ => None,
        },
    };
    Ok(assemble(&plan, cli, ramp_s, &stats, &result, &samples))
}

/// The server's cost from its samples before, once connected, and after.
fn server_cost(pids: &[u32], s: &[procstat::Sample; 3], result: &GroupResult) -> ServerCost {
    let [b, c, a] = s;
    ServerCost {
        pids: pids.to_vec(),
        processes: a.processes,
        connect_cpu_s: c.cpu_s - b.cpu_s,
        run_cpu_s: a.cpu_s - c.cpu_s,
        cpu_us_per_delivery: (a.cpu_s - c.cpu_s) * 1e6 / result.delivered.max(1) as f64,
        rss_before_kib: b.rss_kib,
        rss_connected_kib: c.rss_kib,
        bytes_per_connection: (c.rss_kib as f64 - b.rss_kib as f64) * 1024.0
            / result.connected.max(1) as f64,
    }
}

/// The bench's own cost: this process plus its workers.
fn bench_cost(s: &[procstat::Sample; 3], result: &GroupResult) -> BenchCost {
    let [before, connected, after] = s;
    let run_cpu = (after.cpu_s - connected.cpu_s) + result.cpu_run_s;
    let mem_kib = (connected.rss_kib as f64 - before.rss_kib as f64)
        + (result.rss_connected_kib as f64 - result.rss_before_kib as f64);
    BenchCost {
        cpu_s: (after.cpu_s - before.cpu_s) + result.cpu_total_s,
        run_cpu_s: run_cpu,
        cpu_us_per_delivery: run_cpu * 1e6 / result.delivered.max(1) as f64,
        bytes_per_client: mem_kib * 1024.0 / result.connected.max(1) as f64,
        rss_kib: connected.rss_kib + result.rss_connected_kib,
    }
}

/// Event accounting from the publisher's and the clients' figures.
fn events(stats: &PublishStats, result: &GroupResult) -> Events {
    Events {
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
    }
}

/// Puts the measured figures together into the report.
fn assemble(
    plan: &Plan,
    cli: &Cli,
    ramp_s: f64,
    stats: &PublishStats,
    result: &GroupResult,
    samples: &Samples,
) -> Report {
    let clients = plan.clients;
    let mut errors = result.errors.clone();
    let settled = result.connected + result.failed;
    if settled < clients {
        *errors.entry("never settled".into()).or_default() += clients - settled;
    }
    let ok = result.connected == clients
        && result.failed == 0
        && result.dropped == 0
        && result.lost == 0
        && result.duplicated == 0
        && stats.published == stats.scheduled;
    let elapsed = stats.elapsed_s.max(1e-9);
    Report {
        label: plan.label.clone(),
        sub_url: plan.sub_url.clone(),
        pub_url: plan.spec.url.clone(),
        clients,
        workers: plan.workers as u64,
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
        connect_ms: Percentiles::from_us(&result.connect),
        latency_ms: Percentiles::from_us(&result.latency),
        events: events(stats, result),
        throughput: Throughput {
            elapsed_s: stats.elapsed_s,
            events_per_s: result.delivered as f64 / elapsed,
            mb_per_s: result.bytes as f64 / elapsed / 1e6,
            bytes: result.bytes,
        },
        bench: bench_cost(&samples.bench, result),
        server: samples
            .server
            .as_ref()
            .map(|s| server_cost(&cli.server_pids, s, result)),
        ok,
    }
}
