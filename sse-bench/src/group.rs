//! A group of clients: either tasks in this process, or `--workers` child
//! processes (each running a local group) whose progress and results come
//! back as JSON lines on their stdout.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::aggregate::{Aggregator, Counters, GroupResult, Msg};
use crate::client::{self, Shared, Target};
use crate::scenario::{ClientPlan, Signal};

/// How often the aggregator refreshes the live p99 (and workers report
/// progress): often enough for a lively display, rarely enough to cost
/// nothing.
pub const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// Clients in this process.
pub struct LocalGroup {
    counters: Arc<Counters>,
    signal: watch::Sender<Signal>,
    tx: mpsc::UnboundedSender<Msg>,
    aggregator: JoinHandle<Aggregator>,
}

impl LocalGroup {
    /// Starts `n` clients, ramped at `connect_rate` per second; client
    /// indices start at `offset` (for roles and source-address
    /// round-robin).
    pub fn start(
        target: Arc<Target>,
        plan: ClientPlan,
        (n, offset): (usize, usize),
        connect_rate: f64,
        counters: Arc<Counters>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (signal, signal_rx) = watch::channel(Signal::Run);
        let aggregator = tokio::spawn(Aggregator::new(counters.clone()).run(rx, PROGRESS_TICK));
        let shared = Arc::new(Shared {
            target,
            counters: counters.clone(),
            tx: tx.clone(),
            plan,
        });
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let step = Duration::from_secs_f64(1.0 / connect_rate);
            for i in 0..n {
                tokio::time::sleep_until(start + step.mul_f64(i as f64)).await;
                if *signal_rx.borrow() == Signal::Stop {
                    // Stopped during ramp-up: the rest never start.
                    shared
                        .counters
                        .failed
                        .fetch_add((n - i) as u64, Ordering::Relaxed);
                    for _ in i..n {
                        let _ = shared.tx.send(Msg::Failed {
                            kind: "not started".into(),
                        });
                    }
                    break;
                }
                tokio::spawn(client::run(shared.clone(), offset + i, signal_rx.clone()));
            }
        });
        Self {
            counters,
            signal,
            tx,
            aggregator,
        }
    }

    /// The scenario's moment: cut the storm's clients, slow the slow ones.
    pub fn event(&self) {
        let _ = self.tx.send(Msg::Event {
            at_ns: crate::payload::now_ns(),
        });
        self.signal.send_if_modified(|s| {
            let changed = *s < Signal::Event;
            *s = (*s).max(Signal::Event);
            changed
        });
    }

    /// Stops every client and returns the group's figures, with losses
    /// counted against `published` events.
    ///
    /// # Errors
    /// When the aggregator task panicked.
    pub async fn finish(self, published: u64) -> anyhow::Result<GroupResult> {
        let _ = self.signal.send(Signal::Stop);
        drop(self.tx);
        let agg = self.aggregator.await.context("aggregator task failed")?;
        let c = &self.counters;
        Ok(agg.finish(
            published,
            c.connected.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.bytes.load(Ordering::Relaxed),
        ))
    }
}

/// A line a worker prints on stdout.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerLine {
    /// Live counters.
    Progress {
        /// Streams open.
        connected: u64,
        /// Failed attempts.
        failed: u64,
        /// Events received.
        events: u64,
        /// Distinct deliveries.
        distinct: u64,
        /// Bytes received.
        bytes: u64,
        /// Streams dropped.
        dropped: u64,
        /// Streams open now.
        open: u64,
        /// Recent p99, µs.
        p99_us: u64,
    },
    /// Final figures (the last line).
    Result(Box<GroupResult>),
}

impl WorkerLine {
    /// A progress line from counters.
    pub fn progress(c: &Counters) -> Self {
        WorkerLine::Progress {
            connected: c.connected.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            distinct: c.distinct.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            p99_us: c.recent_p99_us.load(Ordering::Relaxed),
        }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    counters: Arc<Counters>,
    result: oneshot::Receiver<anyhow::Result<GroupResult>>,
}

/// Clients spread over child processes.
pub struct WorkerGroup {
    workers: Vec<Worker>,
    total: Arc<Counters>,
}

impl WorkerGroup {
    /// Spawns `k` copies of this executable in worker mode, splitting `n`
    /// clients; `args` are the client-side flags to pass on (URL, timeouts,
    /// source addresses).
    ///
    /// # Errors
    /// When a child cannot be spawned.
    pub fn start(
        k: usize,
        n: usize,
        connect_rate: f64,
        args: &[String],
        token: Option<&str>,
        total: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this executable to start workers")?;
        let mut workers = Vec::new();
        let mut offset = 0;
        for w in 0..k {
            let share = n / k + usize::from(w < n % k);
            let mut child = tokio::process::Command::new(&exe)
                .arg("--worker")
                .args(["--clients", &share.to_string()])
                .args(["--client-offset", &offset.to_string()])
                .args(["--connect-rate", &(connect_rate / k as f64).to_string()])
                .args(args)
                // The token travels in the environment, out of `ps`.
                .env_remove("SSE_TOKEN")
                .envs(token.map(|t| ("SSE_TOKEN", t)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {w} ({})", exe.display()))?;
            offset += share;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let counters = Arc::new(Counters::default());
            let (result_tx, result) = oneshot::channel();
            let c = counters.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let outcome = loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => match serde_json::from_str::<WorkerLine>(&line) {
                            Ok(WorkerLine::Progress {
                                connected,
                                failed,
                                events,
                                distinct,
                                bytes,
                                dropped,
                                open,
                                p99_us,
                            }) => {
                                c.open.store(open, Ordering::Relaxed);
                                c.connected.store(connected, Ordering::Relaxed);
                                c.failed.store(failed, Ordering::Relaxed);
                                c.events.store(events, Ordering::Relaxed);
                                c.distinct.store(distinct, Ordering::Relaxed);
                                c.bytes.store(bytes, Ordering::Relaxed);
                                c.dropped.store(dropped, Ordering::Relaxed);
                                c.recent_p99_us.store(p99_us, Ordering::Relaxed);
                            }
                            Ok(WorkerLine::Result(r)) => break Ok(*r),
                            Err(e) => {
                                break Err(anyhow::anyhow!("worker {w} sent a bad line: {e}"))
                            }
                        },
                        Ok(None) => {
                            break Err(anyhow::anyhow!("worker {w} exited without a result"))
                        }
                        Err(e) => break Err(anyhow::anyhow!("reading worker {w}: {e}")),
                    }
                };
                let _ = result_tx.send(outcome);
            });
            workers.push(Worker {
                child,
                stdin,
                counters,
                result,
            });
        }
        Ok(Self { workers, total })
    }

    /// Sums the workers' latest counters into the group total.
    pub fn refresh(&self) {
        let sum = |f: fn(&Counters) -> &std::sync::atomic::AtomicU64| {
            self.workers
                .iter()
                .map(|w| f(&w.counters).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let t = &self.total;
        t.connected.store(sum(|c| &c.connected), Ordering::Relaxed);
        t.failed.store(sum(|c| &c.failed), Ordering::Relaxed);
        t.events.store(sum(|c| &c.events), Ordering::Relaxed);
        t.distinct.store(sum(|c| &c.distinct), Ordering::Relaxed);
        t.bytes.store(sum(|c| &c.bytes), Ordering::Relaxed);
        t.dropped.store(sum(|c| &c.dropped), Ordering::Relaxed);
        t.open.store(sum(|c| &c.open), Ordering::Relaxed);
        let p99 = self
            .workers
            .iter()
            .map(|w| w.counters.recent_p99_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        t.recent_p99_us.store(p99, Ordering::Relaxed);
    }

    /// Tells every worker that the scenario's moment has come.
    pub async fn event(&mut self) {
        for w in &mut self.workers {
            // A worker that already died shows up at the end.
            let _ = w.stdin.write_all(b"event\n").await;
            let _ = w.stdin.flush().await;
        }
    }

    /// Tells every worker to stop and merges their results.
    ///
    /// # Errors
    /// When a worker fails or sends no result.
    pub async fn finish(self, published: u64) -> anyhow::Result<GroupResult> {
        let mut merged: Option<GroupResult> = None;
        let mut workers = self.workers;
        for w in &mut workers {
            // A worker that already died shows up below as a missing result.
            let _ = w
                .stdin
                .write_all(format!("stop {published}\n").as_bytes())
                .await;
            let _ = w.stdin.flush().await;
        }
        for (i, mut w) in workers.into_iter().enumerate() {
            let r = w
                .result
                .await
                .with_context(|| format!("worker {i} result"))??;
            let _ = w.child.wait().await;
            match &mut merged {
                None => merged = Some(r),
                Some(m) => m.merge(r)?,
            }
        }
        match merged {
            Some(m) => Ok(m),
            None => bail!("no workers"),
        }
    }
}

/// Clients of a run, wherever they are.
pub enum Group {
    /// In this process.
    Local(LocalGroup),
    /// In child processes.
    Workers(WorkerGroup),
}

impl Group {
    /// Brings the shared counters up to date (workers report asynchronously).
    pub fn refresh(&self) {
        if let Group::Workers(w) = self {
            w.refresh();
        }
    }

    /// The scenario's moment, for every client.
    pub async fn event(&mut self) {
        match self {
            Group::Local(g) => g.event(),
            Group::Workers(g) => g.event().await,
        }
    }

    /// Stops the clients and returns their figures.
    ///
    /// # Errors
    /// See [`LocalGroup::finish`] and [`WorkerGroup::finish`].
    pub async fn finish(self, published: u64) -> anyhow::Result<GroupResult> {
        match self {
            Group::Local(g) => g.finish(published).await,
            Group::Workers(g) => g.finish(published).await,
        }
    }
}
