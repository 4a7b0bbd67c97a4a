//! One lightweight task per SSE connection: a raw HTTP/1.1 GET over a tokio
//! `TcpStream` ([`http1`](crate::http1) reads the head and undoes the body
//! framing), the body fed to the shared spec-exact parser of `sse-cli`, each
//! delivery checked against its sequence number ([`seq`](crate::seq)) and
//! timed against its intended send time.
//!
//! Per client the state is a read buffer, the parser, a 128-event sequence
//! window and a small latency batch: a few KiB, no histogram.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sse_cli::parse::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::aggregate::{Counters, Msg};
use crate::http1::{self, Framing, Head};
use crate::payload;
use crate::scenario::{
    ClientPlan, Role, Signal, DEFAULT_RECONNECT, MAX_RETRY_AFTER, SLOW_RECV_BUFFER,
};
use crate::seq::SeqTracker;

/// Bytes read per `read()` call: holds a dozen 128-byte events when a client
/// is behind, while keeping per-client memory small (the goal is < 10 KB).
pub const READ_BUF_BYTES: usize = 4096;

/// Latencies a client collects before handing them to the aggregator in one
/// message: amortises channel cost while keeping the live p99 fresh.
pub const LATENCY_BATCH: usize = 32;

/// A partly filled latency batch is handed over once its oldest sample is
/// this old, so the live p99 stays current at low event rates.
pub const LATENCY_BATCH_MAX_AGE_NS: u64 = 1_000_000_000;

/// Largest event (line or data) a client's parser accepts: far above any
/// `--payload` a run uses (the payload is checked against it), and small
/// enough that a server streaming garbage without line ends cannot make
/// 10,000 clients hold a megabyte each.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Where and how clients connect; shared by all clients of a process.
#[derive(Debug)]
pub struct Target {
    /// Resolved server address.
    pub addr: SocketAddr,
    /// The request without its final empty line, built once.
    pub request_head: String,
    /// Source addresses to bind before connecting, round-robin by client index.
    pub source_ips: Vec<IpAddr>,
    /// Deadline for TCP connect plus response head.
    pub connect_timeout: Duration,
}

impl Target {
    /// Resolves the subscribe URL and prepares the request (with
    /// `Authorization: Bearer` when a token is given).
    ///
    /// # Errors
    /// When the URL is not plain http, the host does not resolve, or the
    /// token cannot be sent in a header.
    pub async fn new(
        sub_url: &str,
        source_ips: Vec<IpAddr>,
        connect_timeout: Duration,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        if token.is_some_and(|t| t.bytes().any(|b| b < 0x20 || b == 0x7f)) {
            bail!("--token holds characters a header cannot carry");
        }
        let (host, port, path) = http1::split_http_url(sub_url)?;
        let lookup_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addr = tokio::net::lookup_host((lookup_host.as_str(), port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let host_header = if port == 80 {
            host
        } else {
            format!("{host}:{port}")
        };
        let mut request_head = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\nUser-Agent: sse-bench/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = token {
            request_head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        Ok(Self {
            addr,
            request_head,
            source_ips,
            connect_timeout,
        })
    }

    /// The request bytes, with `Last-Event-ID` when resuming.
    fn request(&self, last_event_id: &str) -> Vec<u8> {
        let mut r = String::with_capacity(self.request_head.len() + 64);
        r.push_str(&self.request_head);
        if !last_event_id.is_empty() {
            r.push_str("Last-Event-ID: ");
            r.push_str(last_event_id);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r.into_bytes()
    }
}

/// Maps an I/O error to the short kind used as a report key.
pub fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused".into(),
        K::ConnectionReset => "reset".into(),
        K::ConnectionAborted => "aborted".into(),
        K::TimedOut => "timeout".into(),
        K::AddrNotAvailable => "no local port (EADDRNOTAVAIL)".into(),
        K::AddrInUse => "local address in use".into(),
        K::UnexpectedEof => "closed".into(),
        _ => match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => "too many open files".into(),
            Some(code) => format!("io error {code}"),
            None => format!("io: {e}"),
        },
    }
}

/// A failure while opening the stream.
#[derive(Debug)]
pub struct OpenError {
    /// Report key (`refused`, `http 503`, `timeout`, ...).
    pub kind: String,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
}

impl OpenError {
    fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            retry_after: None,
        }
    }
}

/// An open stream: the socket, its body framing, and the body bytes that
/// arrived with the head (`pending` in the read buffer).
pub struct Conn {
    stream: TcpStream,
    framing: Framing,
    pending: Range<usize>,
}

impl Conn {
    /// The socket, for a client that only drains it.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

/// How a connection is opened beyond the target's defaults.
#[derive(Debug, Default, Clone, Copy)]
pub struct SocketOptions {
    /// Kernel receive buffer, bytes (small for clients that read slowly, so
    /// the server sees the back-pressure instead of the kernel hiding it).
    pub recv_buffer: Option<u32>,
}

/// TCP connect, bound to the client's source address if any.
async fn tcp_connect(
    target: &Target,
    index: usize,
    opts: SocketOptions,
) -> std::io::Result<TcpStream> {
    let ip = target
        .source_ips
        .get(index % target.source_ips.len().max(1));
    if ip.is_none() && opts.recv_buffer.is_none() {
        return TcpStream::connect(target.addr).await;
    }
    let v4 = ip.map_or(target.addr.is_ipv4(), IpAddr::is_ipv4);
    let socket = if v4 {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    if let Some(bytes) = opts.recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(ip) = ip {
        if v4 {
            // Best effort: without it binds are slower, not wrong.
            let _ = crate::limits::bind_address_no_port(std::os::fd::AsRawFd::as_raw_fd(&socket));
        }
        socket.bind(SocketAddr::new(*ip, 0))?;
    }
    socket.connect(target.addr).await
}

/// Opens the stream: TCP connect, request (with `Last-Event-ID` when
/// resuming), and a `200 text/event-stream` response head, within the
/// target's connect timeout.
///
/// # Errors
/// Why the stream did not open, as a report key.
pub async fn open(
    target: &Target,
    index: usize,
    last_event_id: &str,
    opts: SocketOptions,
    buf: &mut [u8],
) -> Result<Conn, OpenError> {
    match tokio::time::timeout(
        target.connect_timeout,
        open_inner(target, index, last_event_id, opts, buf),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(OpenError::new("timeout")),
    }
}

async fn open_inner(
    target: &Target,
    index: usize,
    last_event_id: &str,
    opts: SocketOptions,
    buf: &mut [u8],
) -> Result<Conn, OpenError> {
    let io = |e: std::io::Error| OpenError::new(io_kind(&e));
    let mut stream = tcp_connect(target, index, opts).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    stream
        .write_all(&target.request(last_event_id))
        .await
        .map_err(io)?;
    let limit = buf.len().min(http1::MAX_HEAD_BYTES);
    let mut filled = 0;
    loop {
        if filled == limit {
            return Err(OpenError::new("response head too large"));
        }
        let n = stream.read(&mut buf[filled..limit]).await.map_err(io)?;
        if n == 0 {
            return Err(OpenError::new("closed before response"));
        }
        filled += n;
        match http1::parse_head(&buf[..filled]).map_err(OpenError::new)? {
            None => continue,
            Some(Head::Refused { kind, retry_after }) => {
                return Err(OpenError {
                    kind,
                    retry_after: retry_after.map(Duration::from_secs),
                })
            }
            Some(Head::Stream { framing, len }) => {
                return Ok(Conn {
                    stream,
                    framing,
                    pending: len..filled,
                })
            }
        }
    }
}

/// Latencies waiting to be handed to the aggregator.
#[derive(Default)]
struct LatencyBatch {
    values: Vec<u32>,
    /// Receipt time of the batch's first sample.
    started_ns: u64,
}

impl LatencyBatch {
    /// Adds a sample received at `now_ns`, first handing over a batch from
    /// an earlier second (every batch is of one second, so the per-second
    /// timeline stays exact).
    fn push(&mut self, now_ns: u64, us: u64, slow: bool, tx: &mpsc::UnboundedSender<Msg>) {
        if now_ns / 1_000_000_000 != self.started_ns / 1_000_000_000 {
            self.flush(slow, tx);
        }
        if self.values.is_empty() {
            self.started_ns = now_ns;
        }
        self.values.push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// Hands the batch over when it is full, old, or from an earlier
    /// second than `now_ns`.
    fn flush_if_due(&mut self, now_ns: u64, slow: bool, tx: &mpsc::UnboundedSender<Msg>) {
        let due = self.values.len() >= LATENCY_BATCH
            || now_ns.saturating_sub(self.started_ns) >= LATENCY_BATCH_MAX_AGE_NS
            || now_ns / 1_000_000_000 != self.started_ns / 1_000_000_000;
        if due {
            self.flush(slow, tx);
        }
    }

    fn flush(&mut self, slow: bool, tx: &mpsc::UnboundedSender<Msg>) {
        if !self.values.is_empty() {
            let values = std::mem::replace(&mut self.values, Vec::with_capacity(LATENCY_BATCH));
            let _ = tx.send(Msg::Latencies {
                at_ns: self.started_ns,
                slow,
                values,
            });
        }
    }
}

/// A resume being checked: the first new event must be `expected`.
#[derive(Debug, Clone, Copy)]
struct ResumeCheck {
    expected: u64,
    repeated: u64,
}

/// What one client has received, across its connections.
pub struct Deliveries {
    parser: Parser,
    tracker: SeqTracker,
    batch: LatencyBatch,
    resume: Option<ResumeCheck>,
    slow: bool,
}

impl Deliveries {
    fn new(slow: bool) -> Self {
        Self {
            parser: Parser::with_max_event_size(MAX_EVENT_BYTES),
            tracker: SeqTracker::default(),
            batch: LatencyBatch::default(),
            resume: None,
            slow,
        }
    }

    /// A new stream opened after a cut or break: the next event of ours
    /// must be the one after the newest seen (the first, if none was).
    fn begin_resume(&mut self) {
        self.close_resume();
        self.tracker.summary.resumes += 1;
        self.resume = Some(ResumeCheck {
            expected: self.tracker.newest().map_or(0, |n| n + 1),
            repeated: 0,
        });
    }

    /// Settles a pending resume check: one that saw no new event yet
    /// counts as exact when it saw no repeat either.
    fn close_resume(&mut self) {
        if let Some(r) = self.resume.take() {
            if r.repeated == 0 {
                self.tracker.summary.resumes_exact += 1;
            }
        }
    }

    /// Checks a delivery against a pending resume.
    fn check_resume(&mut self, seq: u64) {
        let Some(r) = &mut self.resume else { return };
        let s = &mut self.tracker.summary;
        if seq < r.expected {
            r.repeated += 1;
            s.gap_duplicated += 1;
            return;
        }
        let skipped = seq - r.expected;
        s.gap_lost += skipped;
        if skipped == 0 && r.repeated == 0 {
            s.resumes_exact += 1;
        }
        self.resume = None;
    }

    /// Feeds raw body bytes (still framed); returns false when the body
    /// ended.
    fn on_bytes(
        &mut self,
        framing: &mut Framing,
        chunk: &[u8],
        counters: &Counters,
        tx: &mpsc::UnboundedSender<Msg>,
    ) -> anyhow::Result<bool> {
        let now = payload::now_ns();
        let slow = self.slow;
        let mut events = 0u64;
        let before = self.tracker.summary.distinct;
        let mut parser = std::mem::take(&mut self.parser);
        let result = framing.decode(chunk, |body| {
            parser
                .feed(body, |ev| {
                    events += 1;
                    match payload::decode(&ev.data) {
                        Some((seq, intended)) => {
                            self.check_resume(seq);
                            if self.tracker.observe(seq) {
                                let us = now.saturating_sub(intended) / 1000;
                                self.batch.push(now, us, slow, tx);
                            }
                        }
                        None => self.tracker.summary.foreign += 1,
                    }
                })
                .map_err(anyhow::Error::from)
        });
        self.parser = parser;
        counters
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if events > 0 {
            counters.events.fetch_add(events, Ordering::Relaxed);
            if !self.slow {
                counters
                    .distinct
                    .fetch_add(self.tracker.summary.distinct - before, Ordering::Relaxed);
            }
        }
        self.batch.flush_if_due(now, self.slow, tx);
        result
    }
}

/// What every client of a process shares.
pub struct Shared {
    /// Where to connect.
    pub target: Arc<Target>,
    /// Live counters.
    pub counters: Arc<Counters>,
    /// The aggregator.
    pub tx: mpsc::UnboundedSender<Msg>,
    /// The scenario.
    pub plan: ClientPlan,
}

/// How a connection's reading ended.
enum End {
    /// The run's signal changed.
    Signal,
    /// The stream ended or broke; the report key says how.
    Broken(String),
}

/// Reads one connection until it ends or `signalled` fires; `throttle`
/// (bytes per second) makes it a slow reader.
async fn read_stream(
    conn: &mut Conn,
    buf: &mut [u8],
    d: &mut Deliveries,
    shared: &Shared,
    throttle: Option<u64>,
    mut signalled: std::pin::Pin<&mut impl std::future::Future>,
) -> End {
    loop {
        if !conn.pending.is_empty() {
            let chunk = &buf[conn.pending.clone()];
            let fed = d.on_bytes(&mut conn.framing, chunk, &shared.counters, &shared.tx);
            conn.pending = 0..0;
            match fed {
                Ok(true) => {}
                Ok(false) => return End::Broken("stream ended".into()),
                Err(e) => return End::Broken(format!("bad stream: {e}")),
            }
        }
        // A slow reader takes a tenth of a second's worth at a time.
        let cap = throttle.map_or(buf.len(), |r| usize::try_from(r / 10).unwrap_or(1));
        let cap = cap.clamp(1, buf.len());
        tokio::select! {
            biased;
            _ = &mut signalled => return End::Signal,
            r = conn.stream.read(&mut buf[..cap]) => match r {
                Ok(0) => return End::Broken("closed by server".into()),
                Ok(n) => conn.pending = 0..n,
                Err(e) => return End::Broken(io_kind(&e)),
            },
        }
        if let Some(rate) = throttle {
            let pause = Duration::from_secs_f64(conn.pending.len() as f64 / rate as f64);
            tokio::select! {
                biased;
                _ = &mut signalled => return End::Signal,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Waits until the run stops.
async fn stopped(signal: &mut watch::Receiver<Signal>) {
    // An error means the run dropped its sender: stopped as well.
    let _ = signal.wait_for(|s| *s == Signal::Stop).await;
}

/// Reconnects as EventSource does: waits the stream's `retry:` time (or the
/// server's `Retry-After` after a refusal), sends `Last-Event-ID`, and tries
/// again until a stream opens or the run stops (`None`).
async fn reconnect(
    shared: &Shared,
    index: usize,
    d: &mut Deliveries,
    opts: SocketOptions,
    buf: &mut [u8],
    signal: &mut watch::Receiver<Signal>,
) -> Option<Conn> {
    let lost_at = Instant::now();
    let retry = d.parser.retry().unwrap_or(DEFAULT_RECONNECT);
    let mut wait = retry;
    loop {
        tokio::select! {
            _ = stopped(signal) => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        d.parser.reset_for_reconnect();
        let attempt = open(&shared.target, index, d.parser.last_event_id(), opts, buf);
        let outcome = tokio::select! {
            _ = stopped(signal) => return None,
            r = attempt => r,
        };
        match outcome {
            Ok(conn) => {
                let after_us = u64::try_from(lost_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = shared.tx.send(Msg::Attempt { kind: "200".into() });
                let _ = shared.tx.send(Msg::Reconnected { after_us });
                d.begin_resume();
                return Some(conn);
            }
            Err(e) => {
                wait = e.retry_after.map_or(retry, |w| w.min(MAX_RETRY_AFTER));
                let _ = shared.tx.send(Msg::Attempt { kind: e.kind });
            }
        }
    }
}

/// Runs one client until the run stops (or, in `steady`, until its stream
/// ends), reporting to the aggregator.
pub async fn run(shared: Arc<Shared>, index: usize, mut signal: watch::Receiver<Signal>) {
    let role = shared.plan.role(index);
    let opts = SocketOptions {
        recv_buffer: (role == Role::Slow).then_some(SLOW_RECV_BUFFER),
    };
    let counters = &shared.counters;
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let started = Instant::now();
    let mut conn = match open(&shared.target, index, "", opts, &mut buf).await {
        Ok(c) => c,
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let _ = shared.tx.send(Msg::Failed { kind: e.kind });
            return;
        }
    };
    let connect_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let _ = shared.tx.send(Msg::Connected { connect_us });
    counters.connected.fetch_add(1, Ordering::Relaxed);
    counters.open.fetch_add(1, Ordering::Relaxed);

    let mut d = Deliveries::new(role == Role::Slow);
    d.tracker.summary.index = index as u64;
    d.tracker.summary.slow = role == Role::Slow;
    loop {
        let throttle = (role == Role::Slow && *signal.borrow() >= Signal::Event)
            .then_some(shared.plan.slow_read_rate);
        let end = {
            // One signal future per stream: re-creating it on every wake-up
            // would re-register with the watch channel for every event.
            let changed = signal.changed();
            tokio::pin!(changed);
            read_stream(&mut conn, &mut buf, &mut d, &shared, throttle, changed).await
        };
        let now = *signal.borrow();
        match end {
            End::Signal if now == Signal::Stop => break,
            End::Signal if role == Role::Cut && !d.tracker.summary.cut => {
                d.tracker.summary.cut = true;
            }
            End::Signal => continue,
            End::Broken(_) if now == Signal::Stop => break,
            End::Broken(kind) if !shared.plan.reconnects() => {
                d.tracker.summary.dropped = true;
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                let _ = shared.tx.send(Msg::Failed {
                    kind: format!("dropped: {kind}"),
                });
                break;
            }
            End::Broken(kind) => {
                d.tracker.summary.breaks += 1;
                let _ = shared.tx.send(Msg::Break { kind });
            }
        }
        // Cut or broken: drop the socket (the bench's cut closes it here),
        // and hand over the latencies so far while reconnecting.
        drop(conn);
        d.batch.flush(d.slow, &shared.tx);
        counters.open.fetch_sub(1, Ordering::Relaxed);
        match reconnect(&shared, index, &mut d, opts, &mut buf, &mut signal).await {
            Some(c) => conn = c,
            None => {
                d.tracker.summary.not_back = true;
                counters.open.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        counters.open.fetch_add(1, Ordering::Relaxed);
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
    d.close_resume();
    d.batch.flush(d.slow, &shared.tx);
    let _ = shared.tx.send(Msg::Done(d.tracker.summary));
}
