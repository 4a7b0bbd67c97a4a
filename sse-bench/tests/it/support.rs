//! Test servers with known behaviour, and a helper that runs the bench
//! binary and parses its JSON report.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How a [`FakeServer`] treats published events (by sequence number, the
/// first word of the data) and subscribers.
#[derive(Debug, Clone)]
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
    /// The `retry:` the stream opens with, ms.
    pub retry_ms: u64,
    /// Events a subscriber may have queued; one that falls further behind
    /// is disconnected (a bounded queue, as a real server has).
    pub queue: usize,
    /// Kernel send buffer of subscriber sockets (small, so a slow reader
    /// fills it quickly).
    pub send_buffer: Option<u32>,
    /// A resume (`Last-Event-ID`) replays from this many events before the
    /// id: the client sees that many again.
    pub replay_repeat: u64,
    /// A resume's replay leaves out the first event after the id.
    pub replay_skip_first: bool,
    /// The first this many resumes are answered `503` with `Retry-After: 1`.
    pub refuse_resumes: u64,
    /// Subscriptions accepted over the server's life; later ones get `503`.
    pub max_subscriptions: Option<u64>,
    /// Subscribes and publishes without `Authorization: Bearer TOKEN` get `401`.
    pub token: Option<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            drop: HashSet::new(),
            duplicate: HashSet::new(),
            hold: HashMap::new(),
            reject_status: None,
            retry_ms: 1000,
            queue: 4096,
            send_buffer: None,
            replay_repeat: 0,
            replay_skip_first: false,
            refuse_resumes: 0,
            max_subscriptions: None,
            token: None,
        }
    }
}

/// What the server shares between connections: history (for resumes),
/// the subscribers' queues, and counts.
#[derive(Default)]
struct State {
    history: Vec<(u64, Arc<String>)>,
    /// Each subscriber's queue, and the means to let it go at once.
    subscribers: Vec<(mpsc::Sender<Arc<String>>, oneshot::Sender<()>)>,
    subscriptions: u64,
    refused_resumes: u64,
}

/// A minimal SSE pub/sub server over raw TCP: `GET /sse` streams (chunked,
/// resuming after `Last-Event-ID` from its history), `POST /publish` takes
/// our JSON body and answers 202.
pub struct FakeServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(behaviour: Behaviour) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(bytes) = behaviour.send_buffer {
            // Accepted sockets inherit the listener's buffer sizes.
            socket.set_send_buffer_size(bytes).expect("SO_SNDBUF");
        }
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind test server");
        let listener = socket.listen(1024).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let behaviour = Arc::new(behaviour);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(handle(stream, state.clone(), behaviour.clone()));
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

/// One request head: method, path, `Last-Event-ID`, head and body length.
struct Request {
    method: String,
    path: String,
    last_event_id: Option<u64>,
    authorization: Option<String>,
    head_len: usize,
    body_len: usize,
}

fn parse_request(buf: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(buf) else {
        return None;
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    Some(Request {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        last_event_id: header("last-event-id").and_then(|v| v.parse().ok()),
        authorization: header("authorization").map(str::to_string),
        head_len,
        body_len: header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

async fn handle(mut stream: TcpStream, state: Arc<Mutex<State>>, b: Arc<Behaviour>) {
    let mut buf = Vec::new();
    loop {
        // Read one request head (and body, by Content-Length).
        let req = loop {
            if let Some(r) = parse_request(&buf) {
                if buf.len() >= r.head_len + r.body_len {
                    break r;
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body: Vec<u8> = buf[req.head_len..req.head_len + req.body_len].to_vec();
        buf.drain(..req.head_len + req.body_len);
        let authorized = b
            .token
            .as_ref()
            .is_none_or(|t| req.authorization.as_deref() == Some(&format!("Bearer {t}")));
        if !authorized {
            let _ = stream
                .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        if req.method == "GET" && req.path.starts_with("/sse") {
            subscribe(stream, &state, &b, req.last_event_id).await;
            return;
        } else if req.method == "POST" && req.path.starts_with("/publish") {
            let resp = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"id\":1}";
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            publish(&body, &state, &b);
        } else {
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }
}

/// Whether a subscription is refused, and with what status.
fn admit(state: &Mutex<State>, b: &Behaviour, resuming: bool) -> Option<u16> {
    let mut st = state.lock().expect("state lock");
    if let Some(code) = b.reject_status {
        return Some(code);
    }
    if resuming && st.refused_resumes < b.refuse_resumes {
        st.refused_resumes += 1;
        return Some(503);
    }
    if b.max_subscriptions
        .is_some_and(|max| st.subscriptions >= max)
    {
        return Some(503);
    }
    st.subscriptions += 1;
    None
}

async fn subscribe(
    mut stream: TcpStream,
    state: &Mutex<State>,
    b: &Behaviour,
    last_event_id: Option<u64>,
) {
    if let Some(code) = admit(state, b, last_event_id.is_some()) {
        let _ = stream
            .write_all(
                format!("HTTP/1.1 {code} No\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        return;
    }
    // Registering and reading the replay under one lock: no event is
    // missed or sent twice between the two.
    let (replay, mut rx, mut kicked) = {
        let mut st = state.lock().expect("state lock");
        let replay: Vec<Arc<String>> = match last_event_id {
            None => Vec::new(),
            Some(id) => {
                let from = id.saturating_sub(b.replay_repeat);
                let mut newer: Vec<_> = st.history.iter().filter(|(s, _)| *s > from).collect();
                if b.replay_skip_first {
                    if let Some(i) = newer.iter().position(|(s, _)| *s > id) {
                        newer.remove(i);
                    }
                }
                newer.into_iter().map(|(_, f)| f.clone()).collect()
            }
        };
        let (tx, rx) = mpsc::channel(b.queue);
        let (kick, kicked) = oneshot::channel();
        st.subscribers.push((tx, kick));
        (replay, rx, kicked)
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // An opening comment and retry, as real servers send.
    let opening = format!(":ok\nretry: {}\n\n", b.retry_ms);
    let _ = stream.write_all(chunk(&opening).as_bytes()).await;
    for frame in replay {
        if stream.write_all(chunk(&frame).as_bytes()).await.is_err() {
            return;
        }
    }
    // Ends at once when the subscriber is let go for falling behind, even
    // in the middle of a write that its full socket holds up.
    let forward = async {
        while let Some(frame) = rx.recv().await {
            if stream.write_all(chunk(&frame).as_bytes()).await.is_err() {
                return;
            }
        }
    };
    let let_go = tokio::select! {
        _ = forward => false,
        _ = &mut kicked => true,
    };
    if let_go {
        // Reset rather than close: a close would first deliver what the
        // socket buffers hold, which a slow reader takes ages to read.
        // A zero linger never blocks, which is what the deprecation is about.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
    }
}

fn publish(body: &[u8], state: &Arc<Mutex<State>>, b: &Arc<Behaviour>) {
    let data = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("data")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let Some(seq) = data.split(' ').next().and_then(|s| s.parse::<u64>().ok()) else {
        return;
    };
    if b.drop.contains(&seq) {
        return;
    }
    let frame = Arc::new(format!("id: {seq}\nevent: message\ndata: {data}\n\n"));
    let copies = if b.duplicate.contains(&seq) { 2 } else { 1 };
    let delay = b.delay + b.hold.get(&seq).copied().unwrap_or_default();
    let state = state.clone();
    let send = move || {
        let mut st = state.lock().expect("state lock");
        st.history.push((seq, frame.clone()));
        for _ in 0..copies {
            // A full queue: the subscriber is too slow and is let go.
            st.subscribers
                .retain(|(tx, _)| tx.try_send(frame.clone()).is_ok());
        }
    };
    if delay.is_zero() {
        send();
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            send();
        });
    }
}

/// The real `sse-server` in this process on 127.0.0.1:0 (through the
/// library's [`sse_server::spawn`]), with the clock off and the
/// developer's `SSE_*` environment ignored.
pub struct RealServer {
    pub addr: SocketAddr,
    running: sse_server::Running,
}

impl RealServer {
    pub async fn start(extra: &[&str]) -> Self {
        let flags = ["sse-server", "--addr", "127.0.0.1:0", "--tick", "0"]
            .iter()
            .chain(extra);
        let config = sse_server::Config::try_from_args(flags).expect("config");
        let running = sse_server::spawn(config).await.expect("server starts");
        Self {
            addr: running.addr(),
            running,
        }
    }

    pub fn url(&self) -> String {
        self.running.url("")
    }

    pub async fn stop(self) {
        self.running.shutdown().await.expect("server run");
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
/// time limit so a hang fails the test instead of stalling CI. The
/// developer's `SSE_*` variables are not passed on.
pub async fn bench(args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sse-bench"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SSE_") {
            command.env_remove(name);
        }
    }
    let child = command
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
