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
use crate::churn::{Churn, ChurnStats};
use crate::cli::Cli;
use crate::client::{Target, MAX_EVENT_BYTES};
use crate::group::{Group, LocalGroup, WorkerGroup, PROGRESS_TICK};
use crate::print::count;
use crate::progress::Progress;
use crate::publisher::{self, BodyTemplate, PublishSpec, PublishStats};
use crate::report::{
    buckets, BenchCost, ChurnReport, Connections, Events, Mark, Percentiles, Report, Second,
    ServerCost, SlowReport, StormReport, Throughput, Timeline,
};
use crate::scenario::{ClientPlan, Scenario};
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
    /// What the scenario does to the clients.
    pub clients_plan: ClientPlan,
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
        let target = Arc::new(
            Target::new(
                &sub_url,
                cli.source_ips.clone(),
                cli.connect_timeout,
                cli.token.as_deref(),
            )
            .await?,
        );
        let spec = PublishSpec {
            url: pub_url,
            body: BodyTemplate::new(&cli.pub_body, &topic),
            headers: publisher::headers(
                &cli.pub_content_type,
                &cli.pub_headers,
                cli.token.as_deref(),
            )?,
            rate: cli.rate,
            duration: cli.duration,
            payload: cli.payload,
        };
        if let Some(at) = cli.storm_at {
            if at >= cli.duration {
                bail!("--storm-at must come before the end of --duration");
            }
        }
        Ok(Self {
            label,
            sub_url,
            clients,
            workers,
            target,
            spec,
            clients_plan: cli.client_plan(cli.clients),
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
            plan.clients_plan,
            (cli.clients, 0),
            cli.connect_rate,
            counters,
        )));
    }
    let mut args = vec![
        "--sub-url".to_string(),
        plan.sub_url.clone(),
        "--connect-timeout".into(),
        humantime::format_duration(cli.connect_timeout).to_string(),
        "--total-clients".into(),
        cli.clients.to_string(),
        "--scenario".into(),
        cli.scenario.name().into(),
        "--storm-fraction".into(),
        cli.storm_fraction.to_string(),
        "--slow-clients".into(),
        plan.clients_plan.slow_clients.to_string(),
        "--slow-read-rate".into(),
        cli.slow_read_rate.to_string(),
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
        cli.token.as_deref(),
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

/// Starts the publisher on its own thread and runtime, so that its sends
/// are not queued behind thousands of busy client tasks: on a loaded box
/// the schedule would slip and the bench would measure itself.
///
/// # Errors
/// When the thread cannot start.
fn spawn_publisher(
    spec: PublishSpec,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<PublishStats>>> {
    let (done_tx, done) = tokio::sync::oneshot::channel();
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
    Ok(done)
}

/// What happened while publishing, besides the publisher's own figures.
#[derive(Default)]
struct Observed {
    /// Unix ns when publishing started: time zero of the timeline.
    origin_ns: u64,
    /// Open streams, sampled every progress tick.
    clients: Vec<(f64, u64)>,
    /// When the scenario's moment came, seconds after the start.
    event_s: Option<f64>,
    /// The churning clients' figures.
    churn: Option<ChurnStats>,
}

/// Runs the publisher to the end of its schedule, with the scenario's
/// moment and churn on the way and the progress display updated. Publishes
/// even with no client connected: a run against a dead server still
/// reports what happened.
///
/// # Errors
/// When the publisher thread cannot start or its HTTP client cannot be built.
async fn publish(
    plan: &Plan,
    cli: &Cli,
    group: &mut Group,
    counters: &Counters,
    progress: &mut Progress,
) -> anyhow::Result<(PublishStats, Observed)> {
    progress.start_run(plan.spec.duration);
    let mut seen = Observed {
        origin_ns: payload::now_ns(),
        ..Default::default()
    };
    let mut publishing = spawn_publisher(plan.spec.clone())?;
    let start = Instant::now();
    let churn = (cli.scenario == Scenario::Churn)
        .then(|| Churn::start(plan.target.clone(), cli.churn_rate, cli.clients));
    let mut event_at = cli
        .event_at()
        .map(|d| tokio::time::Instant::from_std(start + d));
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    let stats = loop {
        let event = async {
            match event_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut publishing => break r.context("publisher thread ended early")??,
            _ = event => {
                event_at = None;
                group.event().await;
                seen.event_s = Some(start.elapsed().as_secs_f64());
            }
            _ = tokio::time::sleep(PROGRESS_TICK) => {
                group.refresh();
                let t = start.elapsed().as_secs_f64();
                seen.clients.push((t, counters.open.load(Ordering::Relaxed)));
                let events = counters.events.load(Ordering::Relaxed);
                let dt = last.0.elapsed().as_secs_f64();
                if dt > 0.0 {
                    rate = (events - last.1) as f64 / dt;
                }
                last = (Instant::now(), events);
                progress.run(counters, start.elapsed(), rate);
            }
        }
    };
    if let Some(c) = churn {
        seen.churn = Some(c.finish().await);
    }
    Ok((stats, seen))
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
    let mut group = start_group(&plan, cli, counters.clone())?;
    let ramp_s = ramp(&plan, cli, &group, &counters, &progress).await;
    let self_connected = procstat::this();
    let server_connected = server_sample(&cli.server_pids);
    let connected = counters.connected.load(Ordering::Relaxed);

    let (stats, seen) = publish(&plan, cli, &mut group, &counters, &mut progress).await?;
    let measuring = connected.saturating_sub(slow_connected(&plan, connected));
    drain(&group, &counters, stats.published * measuring, cli.drain).await;
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
    let run = Measured {
        ramp_s,
        stats,
        result,
        samples,
        seen,
    };
    Ok(assemble(&plan, cli, &run))
}

/// Slow clients among `connected` (they are not waited for in the drain).
fn slow_connected(plan: &Plan, connected: u64) -> u64 {
    if plan.clients_plan.scenario != Scenario::SlowConsumers {
        return 0;
    }
    // Exact when every client connected; otherwise none are assumed slow,
    // so the drain waits for too many rather than too few.
    if connected == plan.clients {
        plan.clients_plan.slow_clients as u64
    } else {
        0
    }
}

/// Everything measured, for [`assemble`].
struct Measured {
    ramp_s: f64,
    stats: PublishStats,
    result: GroupResult,
    samples: Samples,
    seen: Observed,
}

/// The server's cost from its samples before, once connected, and after.
fn server_cost(pids: &[u32], s: &[procstat::Sample; 3], result: &GroupResult) -> ServerCost {
    let [b, c, a] = s;
    let delivered = result.main.delivered + result.slow.delivered;
    ServerCost {
        pids: pids.to_vec(),
        processes: a.processes,
        connect_cpu_s: c.cpu_s - b.cpu_s,
        run_cpu_s: a.cpu_s - c.cpu_s,
        cpu_us_per_delivery: (a.cpu_s - c.cpu_s) * 1e6 / delivered.max(1) as f64,
        rss_before_kib: b.rss_kib,
        rss_connected_kib: c.rss_kib,
        bytes_per_connection: (c.rss_kib as f64 - b.rss_kib as f64) * 1024.0
            / result.connected.max(1) as f64,
        rss_after_kib: a.rss_kib,
    }
}

/// The bench's own cost: this process plus its workers.
fn bench_cost(s: &[procstat::Sample; 3], result: &GroupResult) -> BenchCost {
    let [before, connected, after] = s;
    let delivered = result.main.delivered + result.slow.delivered;
    let run_cpu = (after.cpu_s - connected.cpu_s) + result.cpu_run_s;
    let mem_kib = (connected.rss_kib as f64 - before.rss_kib as f64)
        + (result.rss_connected_kib as f64 - result.rss_before_kib as f64);
    BenchCost {
        cpu_s: (after.cpu_s - before.cpu_s) + result.cpu_total_s,
        run_cpu_s: run_cpu,
        cpu_us_per_delivery: run_cpu * 1e6 / delivered.max(1) as f64,
        bytes_per_client: mem_kib * 1024.0 / result.connected.max(1) as f64,
        rss_kib: connected.rss_kib + result.rss_connected_kib,
    }
}

/// Event accounting of the measuring clients.
fn events(stats: &PublishStats, result: &GroupResult) -> Events {
    let m = &result.main;
    Events {
        scheduled: stats.scheduled,
        published: stats.published,
        publish_errors: stats.errors.clone(),
        publish_max_lag_ms: stats.max_lag_us as f64 / 1000.0,
        expected: stats.published * m.clients,
        delivered: m.delivered,
        lost: m.lost,
        duplicated: m.duplicated,
        out_of_order: m.out_of_order,
        foreign: m.foreign + result.slow.foreign,
    }
}

/// The storm's figures.
fn storm_report(cli: &Cli, run: &Measured) -> StormReport {
    let r = &run.result;
    let m = &r.main;
    StormReport {
        at_s: run.seen.event_s.unwrap_or_default(),
        fraction: cli.storm_fraction,
        cut: m.cut,
        broken_by_server: m.broken_clients,
        resumed_clients: m.resumed_clients,
        not_back: m.not_back,
        time_to_back_ms: Percentiles::from_us(&r.back),
        all_back_s: (m.not_back == 0 && !r.back.is_empty()).then(|| r.back.max() as f64 / 1e6),
        statuses: r.attempts.clone(),
        breaks: r.breaks.clone(),
        gaps_closed: m.resumed_clients - m.inexact_clients,
        gaps_open: m.inexact_clients,
        gap_lost: m.gap_lost,
        gap_duplicated: m.gap_duplicated,
        open_gaps: m.inexact.clone(),
    }
}

/// The churning clients' figures.
fn churn_report(cli: &Cli, c: &ChurnStats) -> ChurnReport {
    ChurnReport {
        rate: cli.churn_rate,
        started: c.started,
        connected: c.connected,
        connects_per_s: c.connected as f64 / c.elapsed_s.max(1e-9),
        errors: c.errors.clone(),
        connect_ms: Percentiles::from_us(&c.connect),
    }
}

/// The slow clients' figures, and the healthy ones' latency before and
/// after the slow ones turned slow.
fn slow_report(plan: &Plan, run: &Measured) -> SlowReport {
    let r = &run.result;
    let s = &r.slow;
    let mut after = r.latency.clone();
    // The baseline's samples are a subset of all samples: cannot underflow.
    let _ = after.subtract(&r.latency_before_event);
    SlowReport {
        clients: s.clients,
        read_rate: plan.clients_plan.slow_read_rate,
        from_s: run.seen.event_s.unwrap_or_default(),
        healthy_baseline_ms: Percentiles::from_us(&r.latency_before_event),
        healthy_with_slow_ms: Percentiles::from_us(&after),
        dropped_by_server: s.broken_clients,
        breaks: r.breaks.clone(),
        resumes: s.resumes,
        resumes_exact: s.resumes_exact,
        not_back: s.not_back,
        delivered: s.delivered,
        behind: s.lost,
        duplicated: s.duplicated,
        latency_ms: Percentiles::from_us(&r.slow_latency),
    }
}

/// The run over time, relative to the start of publishing.
fn timeline(run: &Measured, storm_cut: Option<u64>, scenario: Scenario) -> Timeline {
    let origin = run.seen.origin_ns as f64 / 1e9;
    let seconds = run
        .result
        .timeline
        .iter()
        .map(|s| Second {
            t_s: s.unix_s as f64 - origin,
            delivered: s.latency.len(),
            p50_ms: s.latency.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: s.latency.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: s.latency.max() as f64 / 1000.0,
        })
        .collect();
    let marks = run
        .seen
        .event_s
        .map(|t_s| Mark {
            t_s,
            label: match (scenario, storm_cut) {
                (Scenario::ReconnectStorm, Some(n)) => format!("storm: {} cut", count(n)),
                _ => "slow readers start".into(),
            },
        })
        .into_iter()
        .collect();
    Timeline {
        seconds,
        clients: run.seen.clients.clone(),
        marks,
    }
}

/// Whether the run was clean for its scenario.
fn clean(plan: &Plan, run: &Measured) -> bool {
    let r = &run.result;
    let m = &r.main;
    let steady = r.connected == plan.clients
        && r.failed == 0
        && m.dropped == 0
        && m.lost == 0
        && m.duplicated == 0
        && run.stats.published == run.stats.scheduled;
    let resumes_exact = m.inexact_clients == 0 && m.not_back == 0;
    let churn_ok = run.seen.churn.as_ref().is_none_or(|c| c.errors.is_empty());
    let slow_ok = r.slow.inexact_clients == 0;
    steady && resumes_exact && churn_ok && slow_ok
}

/// Puts the measured figures together into the report.
fn assemble(plan: &Plan, cli: &Cli, run: &Measured) -> Report {
    let (result, stats) = (&run.result, &run.stats);
    let clients = plan.clients;
    let mut errors = result.errors.clone();
    let settled = result.connected + result.failed;
    if settled < clients {
        *errors.entry("never settled".into()).or_default() += clients - settled;
    }
    let elapsed = stats.elapsed_s.max(1e-9);
    let delivered = result.main.delivered + result.slow.delivered;
    let storm = (cli.scenario == Scenario::ReconnectStorm).then(|| storm_report(cli, run));
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
            dropped: result.main.dropped,
            errors,
            ramp_s: run.ramp_s,
        },
        connect_ms: Percentiles::from_us(&result.connect),
        latency_ms: Percentiles::from_us(&result.latency),
        events: events(stats, result),
        throughput: Throughput {
            elapsed_s: stats.elapsed_s,
            events_per_s: delivered as f64 / elapsed,
            mb_per_s: result.bytes as f64 / elapsed / 1e6,
            bytes: result.bytes,
        },
        bench: bench_cost(&run.samples.bench, result),
        server: run
            .samples
            .server
            .as_ref()
            .map(|s| server_cost(&cli.server_pids, s, result)),
        ok: clean(plan, run),
        scenario: cli.scenario,
        timeline: timeline(run, storm.as_ref().map(|s| s.cut), cli.scenario),
        storm,
        churn: run.seen.churn.as_ref().map(|c| churn_report(cli, c)),
        slow: (cli.scenario == Scenario::SlowConsumers).then(|| slow_report(plan, run)),
        latency_histogram: buckets(&result.latency),
    }
}
