//! Shutdown that finishes delivery: on SIGTERM, publishing stops first,
//! every stream then sends every acknowledged event and ends cleanly, and
//! the server exits within its grace period.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{body::Body, http::Request};
use futures::future::join_all;
use sse_server::{app, broker::Broker, metrics::Metrics, AppState, Config};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower::ServiceExt;

use crate::support::BinaryServer;

/// Subscribers connected when the signal comes (the probe).
const SUBSCRIBERS: usize = 5_000;
/// The publisher's rate, one event every this long (50/s).
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// Generous: thousands of connections on two shared cores, debug build.
const WAIT: Duration = Duration::from_secs(60);

/// A subscriber on a raw socket: cheap enough for thousands, and it sees
/// exactly how the response ended.
struct RawStream {
    socket: TcpStream,
    received: Vec<u8>,
}

impl RawStream {
    /// Opens `/sse?topic=t` and waits for the status line and the opening
    /// `retry:` field, so the subscription exists when this returns.
    async fn open(addr: SocketAddr) -> Self {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET /sse?topic=t HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut stream = Self {
            socket,
            received: Vec::new(),
        };
        let mut buf = [0u8; 1024];
        while !stream.received.windows(6).any(|w| w == b"retry:") {
            let n = stream.socket.read(&mut buf).await.expect("read the head");
            assert!(n > 0, "closed before the stream opened");
            stream.received.extend_from_slice(&buf[..n]);
        }
        assert!(
            stream.received.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&stream.received)
        );
        stream
    }

    /// Reads to the end; returns the ids of the events received, or why the
    /// stream did not end cleanly.
    async fn finish(mut self) -> Result<Vec<String>, String> {
        let read = self.socket.read_to_end(&mut self.received);
        match tokio::time::timeout(WAIT, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(format!("cut: {err}")),
            Err(_) => return Err("never ended".to_owned()),
        }
        let head_end = self
            .received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no head")?;
        let body = dechunk(&self.received[head_end + 4..])?;
        let text = String::from_utf8(body).map_err(|_| "not UTF-8")?;
        Ok(text
            .lines()
            .filter_map(|line| line.strip_prefix("id: "))
            .map(str::to_owned)
            .collect())
    }
}

/// The body of a chunked response; an error unless it ends with the last
/// chunk (a clean end, not a cut connection).
fn dechunk(mut input: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = input
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("cut inside a chunk size")?;
        let size = std::str::from_utf8(&input[..line_end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        input = &input[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if input.len() < size + 2 {
            return Err("cut inside a chunk".to_owned());
        }
        body.extend_from_slice(&input[..size]);
        input = &input[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_every_acknowledged_event_to_thousands_of_subscribers() {
    let server = BinaryServer::start("127.0.0.1:0", &["--tick", "0", "--queue", "5000"]).await;
    let addr = server.addr;
    let mut streams = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS / 250 {
        streams.extend(join_all((0..250).map(|_| RawStream::open(addr))).await);
    }
    // Publish at 50/s; SIGTERM after a second, and keep publishing: every
    // publish the server acknowledged, before or after the signal, must
    // reach every subscriber.
    let client = reqwest::Client::new();
    let url = server.url("/publish?topic=t");
    let pid = server.pid().to_string();
    let mut child = server.child;
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut signalled_at = None;
    let mut ticker = tokio::time::interval(PUBLISH_EVERY);
    for n in 0..100 {
        ticker.tick().await;
        if n == 50 {
            assert!(std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success());
            signalled_at = Some(Instant::now());
        }
        let sent = client
            .post(&url)
            .header("content-type", "text/plain")
            .body(format!("event {n}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 202 => {
                assert_eq!(
                    refused, 0,
                    "a publish was acknowledged after one was refused"
                );
                let body: serde_json::Value = response.json().await.unwrap();
                acknowledged.push(body["id"].as_str().unwrap().to_owned());
            }
            Ok(response) => {
                assert_eq!(response.status(), 503, "refused while shutting down");
                refused += 1;
            }
            // The listener is closed: refused too.
            Err(_) => refused += 1,
        }
    }
    assert!(
        acknowledged.len() >= 40,
        "{} acknowledged",
        acknowledged.len()
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the server exits")
        .unwrap();
    let exited_after = signalled_at.unwrap().elapsed();
    assert!(status.success(), "{status}");
    let results = join_all(streams.into_iter().map(RawStream::finish)).await;
    let expected: HashSet<&str> = acknowledged.iter().map(String::as_str).collect();
    let mut incomplete = 0;
    for (n, result) in results.iter().enumerate() {
        let ids = result
            .as_ref()
            .unwrap_or_else(|why| panic!("subscriber {n}: {why}"));
        let got: HashSet<&str> = ids.iter().map(String::as_str).collect();
        if !expected.is_subset(&got) {
            incomplete += 1;
        }
    }
    assert_eq!(
        incomplete,
        0,
        "subscribers that missed acknowledged events (of {SUBSCRIBERS}, {} events acknowledged)",
        acknowledged.len()
    );
    eprintln!(
        "{} acknowledged, {refused} refused; exited {exited_after:?} after SIGTERM",
        acknowledged.len()
    );
}

#[tokio::test]
async fn a_publish_after_shutdown_started_is_refused_with_503() {
    let config = Config::try_from_args(["sse-server", "--tick", "0"]).unwrap();
    let broker = Arc::new(
        Broker::start(&config, Arc::new(Metrics::new()))
            .await
            .unwrap(),
    );
    let router = app(AppState::new(Arc::clone(&broker), config));
    let publish = || {
        Request::post("/publish")
            .header("content-type", "text/plain")
            .body(Body::from("hello"))
            .unwrap()
    };
    let before = router.clone().oneshot(publish()).await.unwrap();
    assert_eq!(before.status(), 202);
    broker.shutdown().await;
    let after = router.oneshot(publish()).await.unwrap();
    assert_eq!(after.status(), 503);
    assert_eq!(after.headers()["retry-after"], "1");
    let body = axum::body::to_bytes(after.into_body(), 1024).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("shutting down"));
}
