//! Shared test helpers: a deterministic chunker, a tiny scripted HTTP server
//! that writes raw bytes in chunks, and a runner for the built binary.

use std::{
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Longest a single CLI run may take before the test calls it hung. Only a
/// guard against hanging forever: no test asserts on elapsed time.
const RUN_GUARD: Duration = Duration::from_secs(60);

/// A small deterministic pseudo-random generator (xorshift64), so chunkings
/// are "random" yet the same on every run.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // xorshift gets stuck at zero; any other seed works.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// Splits `input` into chunks of 1 to `max` bytes (and sometimes an
    /// empty chunk, which a parser must also take in its stride).
    pub fn chunks<'a>(&mut self, input: &'a [u8], max: u64) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            if self.below(10) == 0 {
                out.push(&rest[..0]);
            }
            let take = (1 + self.below(max)) as usize;
            let (chunk, tail) = rest.split_at(take.min(rest.len()));
            out.push(chunk);
            rest = tail;
        }
        out
    }
}

/// A request as the test server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the test server does after reading a request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Written one HTTP chunk each, flushed, with `pause` between them.
    pub chunks: Vec<Vec<u8>>,
    pub pause: Duration,
    /// Keep the connection open after the chunks until the client leaves.
    pub hold_open: bool,
    /// Cut the connection after the chunks without ending the HTTP body,
    /// as a network failure or a crashed server would.
    pub cut: bool,
}

impl Reply {
    /// A `text/event-stream` reply with these chunks, closed at the end.
    pub fn sse(chunks: Vec<Vec<u8>>) -> Self {
        Self {
            status: 200,
            headers: vec![("Content-Type".into(), "text/event-stream".into())],
            chunks,
            pause: Duration::ZERO,
            hold_open: false,
            cut: false,
        }
    }

    /// A reply with a status, a content type and a body.
    pub fn status(status: u16, content_type: &str, body: &str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            chunks: if body.is_empty() {
                vec![]
            } else {
                vec![body.as_bytes().to_vec()]
            },
            pause: Duration::ZERO,
            hold_open: false,
            cut: false,
        }
    }

    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    pub fn hold_open(mut self) -> Self {
        self.hold_open = true;
        self
    }

    pub fn cut(mut self) -> Self {
        self.cut = true;
        self
    }

    pub fn content_type(mut self, value: &str) -> Self {
        self.headers = vec![("Content-Type".into(), value.into())];
        self
    }
}

type Handler = dyn Fn(usize, &Request) -> Reply + Send + Sync;

/// A scripted HTTP/1.1 server on 127.0.0.1:0. The handler gets the
/// connection's index (0 for the first) and the request.
pub struct TestServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            let mut index = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let seen = seen.clone();
                let this = index;
                index += 1;
                tokio::spawn(async move {
                    // A client that goes away mid-reply is not a test failure.
                    let _ = serve(stream, this, &*handler, &seen).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    index: usize,
    handler: &Handler,
    seen: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let request = read_request(&mut stream).await?;
    seen.lock().expect("lock").push(request.clone());
    let reply = handler(index, &request);
    // One request per connection, so say so: a client must not reuse it.
    let mut head = format!("HTTP/1.1 {} Test\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = reply.status != 204 && reply.status != 304;
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    if chunked {
        for chunk in &reply.chunks {
            if chunk.is_empty() {
                continue; // an empty HTTP chunk would end the body
            }
            if !reply.pause.is_zero() {
                tokio::time::sleep(reply.pause).await;
            }
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            stream.write_all(chunk).await?;
            stream.write_all(b"\r\n").await?;
            stream.flush().await?;
        }
    }
    if reply.hold_open {
        // Wait for the client to close; it never sends more.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        return Ok(());
    }
    if chunked && !reply.cut {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await?;
    stream.shutdown().await
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(Request {
        method,
        target,
        headers,
        body,
    })
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// The real `sse-server`, in this process on `addr` (port 0 for any), with
/// the clock off and the developer's `SSE_*` environment ignored.
pub async fn real_server(addr: &str) -> sse_server::Running {
    real_server_with(addr, &[]).await
}

/// Like [`real_server`], with `extra` flags on top.
pub async fn real_server_with(addr: &str, extra: &[&str]) -> sse_server::Running {
    let base = ["sse-server", "--addr", addr, "--tick", "0"];
    let config =
        sse_server::Config::try_from_args(base.iter().chain(extra)).expect("server config");
    sse_server::spawn(config).await.expect("server starts")
}

/// `program` with every `SSE_*` variable of this process removed, so a
/// developer's environment does not change what a test sees.
pub fn hermetic(program: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SSE_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs the built `sse-cli` with these arguments, stdin from `stdin`,
/// environment variables set (or, with `None`, removed).
pub async fn run_cli_with(args: &[&str], stdin: &[u8], env: &[(&str, Option<&str>)]) -> Run {
    let mut command = hermetic(env!("CARGO_BIN_EXE_sse-cli"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = command.spawn().expect("spawn sse-cli");
    let mut child_stdin = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    tokio::spawn(async move {
        let _ = child_stdin.write_all(&input).await;
        // Dropping closes stdin.
    });
    let output = tokio::time::timeout(RUN_GUARD, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("sse-cli {args:?} did not finish"))
        .expect("wait for sse-cli");
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
    }
}

/// Runs the built `sse-cli` with these arguments and an empty stdin.
pub async fn run_cli(args: &[&str]) -> Run {
    run_cli_with(args, b"", &[]).await
}

/// The port of a socket that was bound and closed: nothing listens there.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}
