//! The `churn` scenario's extra clients: started at `--churn-rate` per
//! second while the measuring clients run, each connects, reads (and
//! discards) for a short random time, and leaves, as visitors of a page do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aggregate::{new_histogram, MAX_TRACKABLE_US};
use crate::client::{self, SocketOptions, Target, READ_BUF_BYTES};

/// Shortest time a churning client stays: long enough to get the head and
/// a first event at common rates.
pub const CHURN_MIN_STAY: Duration = Duration::from_millis(200);

/// Longest time a churning client stays: short, so the population turns
/// over several times in a typical 30 s run.
pub const CHURN_MAX_STAY: Duration = Duration::from_secs(2);

/// What the churning clients saw.
#[derive(Debug)]
pub struct ChurnStats {
    /// Clients started.
    pub started: u64,
    /// Clients that got a stream.
    pub connected: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Connect times, µs.
    pub connect: Histogram<u64>,
    /// Seconds the churn ran.
    pub elapsed_s: f64,
}

/// Running churn; [`Churn::finish`] stops it.
pub struct Churn {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<ChurnStats>,
}

/// A small deterministic generator (xorshift), enough to spread stays.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

impl Churn {
    /// Starts `rate` clients per second against `target`; their indices
    /// start at `first_index` (for source addresses).
    pub fn start(target: Arc<Target>, rate: f64, first_index: usize) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(spawn_loop(target, rate, first_index, stop_rx));
        Self { stop, task }
    }

    /// Stops starting clients, ends the ones still reading, and returns the
    /// figures.
    pub async fn finish(self) -> ChurnStats {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(stats) => stats,
            // The loop does not panic; if it did, report nothing rather
            // than fail the whole run.
            Err(_) => ChurnStats {
                started: 0,
                connected: 0,
                errors: BTreeMap::from([("churn task failed".to_string(), 1)]),
                connect: new_histogram(),
                elapsed_s: 0.0,
            },
        }
    }
}

/// Shared figures of the churning clients.
struct Tally {
    connected: u64,
    errors: BTreeMap<String, u64>,
    connect: Histogram<u64>,
}

async fn spawn_loop(
    target: Arc<Target>,
    rate: f64,
    first_index: usize,
    mut stop: watch::Receiver<bool>,
) -> ChurnStats {
    let tally = Arc::new(Mutex::new(Tally {
        connected: 0,
        errors: BTreeMap::new(),
        connect: new_histogram(),
    }));
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    let step = Duration::from_secs_f64(1.0 / rate);
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    let mut started = 0u64;
    loop {
        let at = tokio::time::Instant::from_std(start + step.mul_f64(started as f64));
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        let span = (CHURN_MAX_STAY - CHURN_MIN_STAY).as_millis() as u64;
        let stay = CHURN_MIN_STAY + Duration::from_millis(next_random(&mut random) % span.max(1));
        let index = first_index + started as usize;
        tasks.spawn(one(
            target.clone(),
            index,
            stay,
            tally.clone(),
            stop.clone(),
        ));
        started += 1;
        // Reap finished clients so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed_s = start.elapsed().as_secs_f64();
    let t = std::mem::replace(
        &mut *tally.lock().unwrap_or_else(|p| p.into_inner()),
        Tally {
            connected: 0,
            errors: BTreeMap::new(),
            connect: new_histogram(),
        },
    );
    ChurnStats {
        started,
        connected: t.connected,
        errors: t.errors,
        connect: t.connect,
        elapsed_s,
    }
}

/// One visitor: connect, read for `stay` (or until stopped), leave.
async fn one(
    target: Arc<Target>,
    index: usize,
    stay: Duration,
    tally: Arc<Mutex<Tally>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let started = Instant::now();
    let opened = tokio::select! {
        _ = stop.changed() => return,
        r = client::open(&target, index, "", SocketOptions::default(), &mut buf) => r,
    };
    let mut stream = match opened {
        Ok(conn) => {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            t.connected += 1;
            t.connect.saturating_record(us.clamp(1, MAX_TRACKABLE_US));
            conn.into_stream()
        }
        Err(e) => {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            *t.errors.entry(e.kind).or_default() += 1;
            return;
        }
    };
    let leave = tokio::time::sleep(stay);
    tokio::pin!(leave);
    loop {
        tokio::select! {
            _ = &mut leave => return,
            _ = stop.changed() => return,
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                    *t.errors.entry("ended before leaving".into()).or_default() += 1;
                    return;
                }
                Ok(_) => {}
            },
        }
    }
}
