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

use anyhow::Context as _;
use sse_cli::parse::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::aggregate::{Counters, Msg};
use crate::http1::{self, Framing, Head};
use crate::payload;
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
    /// Resolves the subscribe URL and prepares the request.
    ///
    /// # Errors
    /// When the URL is not plain http or the host does not resolve.
    pub async fn new(
        sub_url: &str,
        source_ips: Vec<IpAddr>,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
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
        let request_head = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\nUser-Agent: sse-bench/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
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
    fn push(&mut self, now_ns: u64, us: u64) {
        if self.values.is_empty() {
            self.started_ns = now_ns;
        }
        self.values.push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// Hands the batch over when it is full, old, or from an earlier
    /// second than `now_ns` (so the per-second timeline stays exact).
    fn flush_if_due(&mut self, now_ns: u64, tx: &mpsc::UnboundedSender<Msg>) {
        let due = self.values.len() >= LATENCY_BATCH
            || now_ns.saturating_sub(self.started_ns) >= LATENCY_BATCH_MAX_AGE_NS
            || now_ns / 1_000_000_000 != self.started_ns / 1_000_000_000;
        if due && !self.values.is_empty() {
            self.flush(tx);
        }
    }

    fn flush(&mut self, tx: &mpsc::UnboundedSender<Msg>) {
        if !self.values.is_empty() {
            let values = std::mem::replace(&mut self.values, Vec::with_capacity(LATENCY_BATCH));
            let _ = tx.send(Msg::Latencies {
                at_ns: self.started_ns,
                values,
            });
        }
    }
}

/// What one client has received, across its connections.
pub struct Deliveries {
    parser: Parser,
    tracker: SeqTracker,
    batch: LatencyBatch,
}

impl Deliveries {
    fn new() -> Self {
        Self {
            parser: Parser::with_max_event_size(MAX_EVENT_BYTES),
            tracker: SeqTracker::default(),
            batch: LatencyBatch::default(),
        }
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
        let mut events = 0u64;
        let before = self.tracker.summary.distinct;
        let Self {
            parser,
            tracker,
            batch,
        } = self;
        let result = framing.decode(chunk, |body| {
            parser
                .feed(body, |ev| {
                    events += 1;
                    match payload::decode(&ev.data) {
                        Some((seq, intended)) => {
                            if tracker.observe(seq) {
                                batch.push(now, now.saturating_sub(intended) / 1000);
                            }
                        }
                        None => tracker.summary.foreign += 1,
                    }
                })
                .map_err(anyhow::Error::from)
        });
        counters
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if events > 0 {
            counters.events.fetch_add(events, Ordering::Relaxed);
            counters
                .distinct
                .fetch_add(self.tracker.summary.distinct - before, Ordering::Relaxed);
        }
        self.batch.flush_if_due(now, tx);
        result
    }
}

/// How a connection's reading ended.
enum End {
    /// The run is stopping.
    Stopped,
    /// The stream ended or broke; the report key says how.
    Broken(String),
}

/// Reads one connection until it ends or `stopped` fires.
async fn read_stream(
    conn: &mut Conn,
    buf: &mut [u8],
    deliveries: &mut Deliveries,
    counters: &Counters,
    tx: &mpsc::UnboundedSender<Msg>,
    mut stopped: std::pin::Pin<&mut impl std::future::Future>,
) -> End {
    loop {
        if !conn.pending.is_empty() {
            let chunk = &buf[conn.pending.clone()];
            match deliveries.on_bytes(&mut conn.framing, chunk, counters, tx) {
                Ok(true) => {}
                Ok(false) => return End::Broken("stream ended".into()),
                Err(e) => return End::Broken(format!("bad stream: {e}")),
            }
        }
        tokio::select! {
            biased;
            _ = &mut stopped => return End::Stopped,
            r = conn.stream.read(buf) => match r {
                Ok(0) => return End::Broken("closed by server".into()),
                Ok(n) => conn.pending = 0..n,
                Err(e) => return End::Broken(io_kind(&e)),
            },
        }
    }
}

/// Runs one client until `stop` turns true or its stream ends, reporting to
/// the aggregator through `tx`.
pub async fn run(
    target: Arc<Target>,
    index: usize,
    counters: Arc<Counters>,
    tx: mpsc::UnboundedSender<Msg>,
    stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let started = Instant::now();
    let mut conn = match open(&target, index, "", SocketOptions::default(), &mut buf).await {
        Ok(c) => c,
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Msg::Failed { kind: e.kind });
            return;
        }
    };
    let connect_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let _ = tx.send(Msg::Connected { connect_us });
    counters.connected.fetch_add(1, Ordering::Relaxed);

    let mut deliveries = Deliveries::new();
    // One stop future for the whole stream: re-creating it on every wake-up
    // would re-register with the watch channel for every event.
    let mut stop_signal = stop.clone();
    let stopped = stop_signal.changed();
    tokio::pin!(stopped);
    let end = read_stream(
        &mut conn,
        &mut buf,
        &mut deliveries,
        &counters,
        &tx,
        stopped.as_mut(),
    )
    .await;
    deliveries.batch.flush(&tx);
    let mut summary = deliveries.tracker.summary;
    // A stream that ends before the run does is an error, unless the run
    // was already stopping.
    if let End::Broken(kind) = end {
        if !*stop.borrow() {
            summary.dropped = true;
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Msg::Failed {
                kind: format!("dropped: {kind}"),
            });
        }
    }
    let _ = tx.send(Msg::Done(summary));
}
