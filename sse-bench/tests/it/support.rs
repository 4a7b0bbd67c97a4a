//! Test servers with known behaviour, and a helper that runs the bench
//! binary and parses its JSON report.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How a [`FakeServer`] treats published events (by sequence number, the
/// first word of the data).
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Every event is sent to subscribers this long after its publish.
    pub delay: Duration,
    /// Never sent.
    pub drop: HashSet<u64>,
    /// Sent twice.
    pub duplicate: HashSet<u64>,
    /// Sent this much later than the rest (to arrive out of order).
    pub hold: HashMap<u64, Duration>,
    /// Answer `GET /sse` with this status instead of a stream.
    pub reject_status: Option<u16>,
}

/// A minimal SSE pub/sub server over raw TCP: `GET /sse` streams (chunked),
/// `POST /publish` takes our JSON body and answers 202.
pub struct FakeServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test server");
        let addr = listener.local_addr().expect("local addr");
        let (tx, _) = broadcast::channel::<Arc<String>>(4096);
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream, tx.clone(), behaviour.clone()));
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(mut stream: TcpStream, tx: broadcast::Sender<Arc<String>>, b: Arc<Behaviour>) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (and body, by Content-Length).
        let (method, path, head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| {
                        std::str::from_utf8(h.value)
                            .ok()?
                            .trim()
                            .parse::<usize>()
                            .ok()
                    })
                    .unwrap_or(0);
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                    n,
                    len,
                );
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_len + body_len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_len..head_len + body_len].to_vec();
        buf.drain(..head_len + body_len);

        if method == "GET" && path.starts_with("/sse") {
            if let Some(code) = b.reject_status {
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 {code} No\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                return;
            }
            let mut rx = tx.subscribe();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                        Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            // An opening comment and retry, as real servers send.
            let _ = stream
                .write_all(chunk(":ok\nretry: 1000\n\n").as_bytes())
                .await;
            loop {
                match rx.recv().await {
                    Ok(frame) => {
                        if stream.write_all(chunk(&frame).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        } else if method == "POST" && path.starts_with("/publish") {
            let data = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("data")?.as_str().map(str::to_string))
                .unwrap_or_default();
            let seq: Option<u64> = data.split(' ').next().and_then(|s| s.parse().ok());
            let resp = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"id\":1}";
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            let Some(seq) = seq else { continue };
            if b.drop.contains(&seq) {
                continue;
            }
            let frame = Arc::new(format!("id: {seq}\nevent: message\ndata: {data}\n\n"));
            let copies = if b.duplicate.contains(&seq) { 2 } else { 1 };
            let delay = b.delay + b.hold.get(&seq).copied().unwrap_or_default();
            let tx = tx.clone();
            let send = async move {
                for _ in 0..copies {
                    let _ = tx.send(frame.clone());
                }
            };
            if delay.is_zero() {
                send.await;
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    send.await;
                });
            }
        } else {
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }
}

/// One HTTP/1.1 chunk holding `s`.
fn chunk(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

/// An address on which nothing listens (bound, then released).
pub async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// What a bench run returned.
pub struct Run {
    pub code: i32,
    pub json: serde_json::Value,
    pub stderr: String,
}

/// Runs the bench binary with `args` plus `--json --quiet`, with a hard
/// time limit so a hang fails the test instead of stalling CI.
pub async fn bench(args: &[&str]) -> Run {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sse-bench"))
        .args(args)
        .args(["--json", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sse-bench");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("sse-bench did not finish within 120 s")
        .expect("wait for sse-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr,
    }
}

/// A number from the report at a JSON pointer such as `/events/lost`.
pub fn num(v: &serde_json::Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {v:#}"))
}
