//! One lightweight task per SSE connection: a raw HTTP/1.1 GET over a tokio
//! `TcpStream`, the body de-chunked in place and fed to the shared
//! spec-exact parser of `sse-cli`, each delivery checked against its
//! sequence number and timed against its intended send time.
//!
//! Per client the state is a read buffer, the parser, a 128-event sequence
//! window and a small latency batch: a few KiB, no histogram.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sse_cli::parse::Parser;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::aggregate::{ClientSummary, Counters, Msg};
use crate::payload;

/// Bytes read per `read()` call: holds a dozen 128-byte events when a client
/// is behind, while keeping per-client memory small (the goal is < 10 KB).
pub const READ_BUF_BYTES: usize = 4096;

/// Largest response head accepted; a server sending more is misbehaving.
const MAX_HEAD_BYTES: usize = READ_BUF_BYTES;

/// Latencies a client collects before handing them to the aggregator in one
/// message: amortises channel cost while keeping the live p99 fresh.
pub const LATENCY_BATCH: usize = 32;

/// A partly filled latency batch is handed over once its oldest sample is
/// this old, so the live p99 stays current at low event rates.
pub const LATENCY_BATCH_MAX_AGE_NS: u64 = 1_000_000_000;

/// Width of the per-client window used to tell duplicates from late
/// arrivals (in events behind the newest one seen).
const SEQ_WINDOW: u64 = 128;

/// Where and how clients connect; shared by all clients of a process.
#[derive(Debug)]
pub struct Target {
    /// Resolved server address.
    pub addr: SocketAddr,
    /// The complete request, built once.
    pub request: Vec<u8>,
    /// Source addresses to bind before connecting, round-robin by client index.
    pub source_ips: Vec<IpAddr>,
    /// Deadline for TCP connect plus response head.
    pub connect_timeout: Duration,
}

/// Splits a plain `http://host[:port]/path?query` URL.
///
/// # Errors
/// On any other scheme or a URL without a host.
pub fn split_http_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url:?}: no host");
    }
    let (host, port_text) = if authority.starts_with('[') {
        // IPv6 literal: [addr] or [addr]:port
        let end = authority
            .find(']')
            .with_context(|| format!("{url:?}: unclosed ["))?;
        let after = &authority[end + 1..];
        (&authority[..=end], after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port_text {
        Some(p) => p
            .parse()
            .with_context(|| format!("{url:?}: bad port {p:?}"))?,
        None => 80,
    };
    let host = host.to_string();
    Ok((host, port, path.to_string()))
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
        let (host, port, path) = split_http_url(sub_url)?;
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
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept: text/event-stream\r\n\
             Cache-Control: no-cache\r\nUser-Agent: sse-bench/{}\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes();
        Ok(Self {
            addr,
            request,
            source_ips,
            connect_timeout,
        })
    }
}

/// Counts distinct, duplicated and out-of-order sequence numbers with a
/// fixed-size window (no per-event memory).
#[derive(Debug, Default)]
pub struct SeqTracker {
    newest: Option<u64>,
    /// Bit `i` set: event `newest - i` was received.
    window: u128,
    /// Totals so far.
    pub summary: ClientSummary,
}

impl SeqTracker {
    /// Records `seq`; true when it is a first delivery.
    pub fn observe(&mut self, seq: u64) -> bool {
        let s = &mut self.summary;
        match self.newest {
            None => {
                self.newest = Some(seq);
                self.window = 1;
            }
            Some(newest) if seq > newest => {
                let shift = seq - newest;
                self.window = if shift >= SEQ_WINDOW {
                    0
                } else {
                    self.window << shift
                };
                self.window |= 1;
                self.newest = Some(seq);
            }
            Some(newest) => {
                let behind = newest - seq;
                if behind < SEQ_WINDOW {
                    let bit = 1u128 << behind;
                    if self.window & bit != 0 {
                        s.duplicated += 1;
                        return false;
                    }
                    self.window |= bit;
                }
                // Older than the window: cannot tell a duplicate from a
                // late arrival, and with 128 events of slack neither happens
                // in practice; counted as out of order.
                s.out_of_order += 1;
            }
        }
        s.distinct += 1;
        true
    }
}

/// HTTP/1.1 body framing of the stream.
#[derive(Debug)]
enum Framing {
    /// Read until the server closes.
    Close,
    /// `Content-Length` bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunked),
}

#[derive(Debug, Clone, Copy)]
enum Chunked {
    /// Reading the hex size line.
    Size { value: u64, digits: u8, ext: bool },
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// After a chunk, skipping its CRLF.
    DataEnd,
    /// The last chunk arrived.
    Done,
}

impl Framing {
    /// Calls `body` with each body slice of `input`; returns false when the
    /// body is complete.
    fn decode(
        &mut self,
        mut input: &[u8],
        mut body: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<bool> {
        match self {
            Framing::Close => {
                body(input)?;
                Ok(true)
            }
            Framing::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                body(&input[..n])?;
                *left -= n as u64;
                Ok(*left > 0)
            }
            Framing::Chunked(state) => {
                while !input.is_empty() {
                    match state {
                        Chunked::Size { value, digits, ext } => {
                            let b = input[0];
                            input = &input[1..];
                            match b {
                                b'\n' => {
                                    if *digits == 0 {
                                        bail!("bad chunk size line");
                                    }
                                    *state = if *value == 0 {
                                        Chunked::Done
                                    } else {
                                        Chunked::Data(*value)
                                    };
                                }
                                b'\r' => {}
                                _ if *ext => {}
                                b';' | b' ' | b'\t' => *ext = true,
                                _ => {
                                    let d = char::from(b).to_digit(16).context("bad chunk size")?;
                                    *digits = digits.saturating_add(1);
                                    if *digits > 15 {
                                        bail!("chunk size too large");
                                    }
                                    *value = *value * 16 + u64::from(d);
                                }
                            }
                        }
                        Chunked::Data(left) => {
                            let n = usize::try_from(*left)
                                .unwrap_or(usize::MAX)
                                .min(input.len());
                            body(&input[..n])?;
                            input = &input[n..];
                            *left -= n as u64;
                            if *left == 0 {
                                *state = Chunked::DataEnd;
                            }
                        }
                        Chunked::DataEnd => {
                            let b = input[0];
                            input = &input[1..];
                            if b == b'\n' {
                                *state = Chunked::Size {
                                    value: 0,
                                    digits: 0,
                                    ext: false,
                                };
                            } else if b != b'\r' {
                                bail!("missing CRLF after chunk");
                            }
                        }
                        Chunked::Done => return Ok(false),
                    }
                }
                Ok(!matches!(state, Chunked::Done))
            }
        }
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

/// A failure while opening the stream, with its report kind.
#[derive(Debug)]
struct OpenError(String);

/// Opens the stream: TCP connect (bound to a source address if given),
/// request, and a `200 text/event-stream` response head. Returns the stream,
/// the body framing and how many bytes of `buf` already belong to the body
/// (they start at `body_start`).
async fn open(
    target: &Target,
    index: usize,
    buf: &mut [u8],
) -> Result<(TcpStream, Framing, usize, usize), OpenError> {
    let io = |e: std::io::Error| OpenError(io_kind(&e));
    let mut stream = match target
        .source_ips
        .get(index % target.source_ips.len().max(1))
    {
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(io)?;
            if ip.is_ipv4() {
                // Best effort: without it binds are slower, not wrong.
                let _ =
                    crate::limits::bind_address_no_port(std::os::fd::AsRawFd::as_raw_fd(&socket));
            }
            socket.bind(SocketAddr::new(*ip, 0)).map_err(io)?;
            socket.connect(target.addr).await.map_err(io)?
        }
        None => TcpStream::connect(target.addr).await.map_err(io)?,
    };
    stream.set_nodelay(true).map_err(io)?;
    stream.write_all(&target.request).await.map_err(io)?;
    let mut filled = 0;
    loop {
        if filled == buf.len().min(MAX_HEAD_BYTES) {
            return Err(OpenError("response head too large".into()));
        }
        let n = stream.read(&mut buf[filled..]).await.map_err(io)?;
        if n == 0 {
            return Err(OpenError("closed before response".into()));
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf[..filled]) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(OpenError("malformed response".into())),
            Ok(httparse::Status::Complete(head_len)) => {
                let code = resp.code.unwrap_or(0);
                if code != 200 {
                    return Err(OpenError(format!("http {code}")));
                }
                let mut framing = Framing::Close;
                let mut content_type_ok = false;
                for h in resp.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-type") {
                        let essence = value.split(';').next().unwrap_or("").trim();
                        content_type_ok = essence.eq_ignore_ascii_case("text/event-stream");
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        if value.to_ascii_lowercase().ends_with("chunked") {
                            framing = Framing::Chunked(Chunked::Size {
                                value: 0,
                                digits: 0,
                                ext: false,
                            });
                        }
                    } else if h.name.eq_ignore_ascii_case("content-length")
                        && !matches!(framing, Framing::Chunked(_))
                    {
                        let len = value
                            .parse()
                            .map_err(|_| OpenError("bad content-length".into()))?;
                        framing = Framing::Length(len);
                    }
                }
                if !content_type_ok {
                    return Err(OpenError("not text/event-stream".into()));
                }
                return Ok((stream, framing, head_len, filled));
            }
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
    let opened = tokio::time::timeout(target.connect_timeout, open(&target, index, &mut buf)).await;
    let (mut stream, mut framing, body_start, filled) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(OpenError(kind))) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Msg::Failed { kind });
            return;
        }
        Err(_) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Msg::Failed {
                kind: "timeout".into(),
            });
            return;
        }
    };
    let connect_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let _ = tx.send(Msg::Connected { connect_us });
    counters.connected.fetch_add(1, Ordering::Relaxed);

    let mut parser = Parser::new();
    let mut tracker = SeqTracker::default();
    let mut batch: Vec<u32> = Vec::new();
    // Receipt time of the batch's first sample.
    let mut batch_started_ns = 0u64;
    let mut failure: Option<String> = None;

    // Body bytes that arrived with the head.
    let mut pending = body_start..filled;
    // One stop future for the whole stream: re-creating it on every wake-up
    // would re-register with the watch channel for every event.
    let mut stop_signal = stop.clone();
    let stopped = stop_signal.changed();
    tokio::pin!(stopped);
    loop {
        if !pending.is_empty() {
            let now = payload::now_ns();
            let chunk = &buf[pending.clone()];
            let mut events = 0u64;
            let before = tracker.summary.distinct;
            let result = framing.decode(chunk, |body| {
                parser
                    .feed(body, |ev| {
                        events += 1;
                        match payload::decode(&ev.data) {
                            Some((seq, intended)) => {
                                if tracker.observe(seq) {
                                    let us = now.saturating_sub(intended) / 1000;
                                    if batch.is_empty() {
                                        batch_started_ns = now;
                                    }
                                    batch.push(u32::try_from(us).unwrap_or(u32::MAX));
                                }
                            }
                            None => tracker.summary.foreign += 1,
                        }
                    })
                    .map_err(|e| anyhow::anyhow!("{e:?}"))
            });
            counters
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if events > 0 {
                counters.events.fetch_add(events, Ordering::Relaxed);
                counters
                    .distinct
                    .fetch_add(tracker.summary.distinct - before, Ordering::Relaxed);
            }
            if batch.len() >= LATENCY_BATCH
                || (!batch.is_empty()
                    && now.saturating_sub(batch_started_ns) >= LATENCY_BATCH_MAX_AGE_NS)
            {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(LATENCY_BATCH));
                let _ = tx.send(Msg::Latencies(full));
            }
            match result {
                Ok(true) => {}
                Ok(false) => {
                    failure = Some("stream ended".into());
                    break;
                }
                Err(e) => {
                    failure = Some(format!("bad stream: {e}"));
                    break;
                }
            }
        }
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            r = stream.read(&mut buf) => match r {
                Ok(0) => {
                    failure = Some("closed by server".into());
                    break;
                }
                Ok(n) => pending = 0..n,
                Err(e) => {
                    failure = Some(io_kind(&e));
                    break;
                }
            },
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Msg::Latencies(batch));
    }
    let mut summary = tracker.summary;
    if let Some(kind) = failure {
        // A stream that ends before the run does is an error, unless the
        // run was already stopping.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_duplicates_and_late_events() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 3, 2, 3, 5, 5, 4] {
            t.observe(seq);
        }
        assert_eq!(t.summary.distinct, 6);
        assert_eq!(t.summary.duplicated, 2);
        assert_eq!(t.summary.out_of_order, 2);
    }

    #[test]
    fn tracker_handles_big_gaps() {
        let mut t = SeqTracker::default();
        t.observe(0);
        t.observe(1000);
        t.observe(1000);
        t.observe(999);
        assert_eq!(t.summary.distinct, 3);
        assert_eq!(t.summary.duplicated, 1);
        assert_eq!(t.summary.out_of_order, 1);
    }

    #[test]
    fn chunked_bodies_are_decoded_across_reads() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut f = Framing::Chunked(Chunked::Size {
                value: 0,
                digits: 0,
                ext: false,
            });
            let mut out = Vec::new();
            let more = f.decode(&wire[..split], |b| {
                out.extend_from_slice(b);
                Ok(())
            });
            // The body is complete once the last-chunk line is in.
            assert_eq!(more.unwrap(), split < wire.len() - 2, "split at {split}");
            let more = f.decode(&wire[split..], |b| {
                out.extend_from_slice(b);
                Ok(())
            });
            assert!(!more.unwrap(), "split at {split}");
            assert_eq!(out, b"hello world");
        }
        let mut f = Framing::Chunked(Chunked::Size {
            value: 0,
            digits: 0,
            ext: false,
        });
        assert!(f.decode(b"zz\r\n", |_| Ok(())).is_err());
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_http_url("http://127.0.0.1:3000/sse?topic=a").unwrap(),
            ("127.0.0.1".to_string(), 3000, "/sse?topic=a".to_string())
        );
        assert_eq!(
            split_http_url("http://localhost").unwrap(),
            ("localhost".to_string(), 80, "/".to_string())
        );
        assert_eq!(
            split_http_url("http://[::1]:8080/s").unwrap(),
            ("[::1]".to_string(), 8080, "/s".to_string())
        );
        assert_eq!(split_http_url("http://[::1]").unwrap().1, 80);
        assert!(split_http_url("https://x/").is_err());
        assert!(split_http_url("http://h:notaport/").is_err());
    }
}
