//! Starting real servers for tests: in this process on port 0, or the
//! real binary as a child process.

#![allow(dead_code)]

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use sse_cli::parse::{Event, Parser};
use sse_server::Config;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A server running in this process, started through the library's
/// [`sse_server::spawn`] with a configuration that ignores the environment.
pub struct TestServer {
    pub addr: SocketAddr,
    running: sse_server::Running,
}

impl TestServer {
    /// Starts a server with the clock off and `args` on top.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), args).await
    }

    /// Like [`TestServer::start`], on a given address (to restart on a port).
    pub async fn start_on(addr: SocketAddr, args: &[&str]) -> Self {
        let addr = addr.to_string();
        let mut flags = vec!["sse-server", "--addr", &addr, "--tick", "0"];
        flags.extend_from_slice(args);
        let config = Config::try_from_args(flags).expect("valid test arguments");
        let running = sse_server::spawn(config).await.expect("server starts");
        Self {
            addr: running.addr(),
            running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.running.url(path)
    }

    /// Shuts the server down and waits until it has stopped.
    pub async fn stop(self) {
        self.running.shutdown().await.expect("server run");
    }
}

/// The built `sse-server` binary, without any `SSE_*` variable of this
/// process: a developer's `export SSE_PUBLISH_TOKEN=...` must not reach
/// the servers tests start.
pub fn server_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sse-server"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SSE_") {
            command.env_remove(name);
        }
    }
    command
}

/// The real `sse-server` binary, as a child process.
pub struct BinaryServer {
    pub addr: SocketAddr,
    pub child: Child,
}

impl BinaryServer {
    /// Starts the binary on `addr` (port 0 for any) and waits until it serves.
    pub async fn start(addr: &str, args: &[&str]) -> Self {
        Self::start_with_env(addr, args, &[]).await
    }

    /// Like [`BinaryServer::start`], with environment variables set.
    pub async fn start_with_env(addr: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = server_command()
            .arg("--addr")
            .arg(addr)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start sse-server");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap();
                    return addr.parse::<SocketAddr>().unwrap();
                }
            }
            panic!("sse-server exited before serving");
        })
        .await
        .expect("sse-server did not start in 30 s");
        // Keep draining the log so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { addr, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM and returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.pid();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().await.expect("wait")
    }
}

/// A client's view of one stream, parsed with the project's parser.
pub struct EventReader {
    response: reqwest::Response,
    parser: Parser,
    ready: std::collections::VecDeque<Event>,
}

impl EventReader {
    /// Opens `url` as an event stream and checks the response head.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Self {
        let client = reqwest::Client::new();
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("connect");
        assert_eq!(response.status(), 200, "GET {url}");
        Self::from_response(response)
    }

    /// Reads events from a response the caller opened (another client,
    /// another protocol).
    pub fn from_response(response: reqwest::Response) -> Self {
        Self {
            response,
            parser: Parser::new(),
            ready: Default::default(),
        }
    }

    pub fn response(&self) -> &reqwest::Response {
        &self.response
    }

    /// The next event, or `None` when the server ended the stream cleanly
    /// (the HTTP body finished).
    ///
    /// # Panics
    /// When the connection was cut instead: a reset or a body that stopped
    /// mid-way is not an end.
    pub async fn next(&mut self) -> Option<Event> {
        self.next_or_cut()
            .await
            .unwrap_or_else(|err| panic!("the stream was cut, not ended: {err:?}"))
    }

    /// The next event; `Ok(None)` on a clean end, `Err` when the connection
    /// was cut (reset, or closed in the middle of the body).
    pub async fn next_or_cut(&mut self) -> Result<Option<Event>, reqwest::Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let Some(chunk) = self.response.chunk().await? else {
                return Ok(None);
            };
            let ready = &mut self.ready;
            self.parser
                .feed(&chunk, |event| ready.push_back(event.clone()))
                .expect("valid stream");
        }
    }

    /// The next event within `timeout`, panicking otherwise.
    pub async fn expect(&mut self, timeout: Duration) -> Event {
        tokio::time::timeout(timeout, self.next())
            .await
            .expect("an event in time")
            .expect("the stream to stay open")
    }

    /// The rest of the body as a byte stream (for wire-level checks that
    /// also tell a clean end from a cut by the stream's last item).
    pub fn into_bytes_stream(self) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> {
        self.response.bytes_stream()
    }

    /// Raw bytes of the next chunk (for wire-level checks); `None` on a
    /// clean end.
    ///
    /// # Panics
    /// When the connection was cut.
    pub async fn raw_chunk(&mut self) -> Option<bytes::Bytes> {
        self.response
            .chunk()
            .await
            .unwrap_or_else(|err| panic!("the stream was cut, not ended: {err:?}"))
    }
}

/// Publishes JSON and returns the id.
pub async fn publish(base: &str, topic: &str, event: &str, data: &str) -> String {
    publish_with(&reqwest::Client::new(), base, topic, event, data).await
}

/// Like [`publish`], with a client of the caller's (TLS, HTTP/2).
pub async fn publish_with(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    event: &str,
    data: &str,
) -> String {
    let response = client
        .post(format!("{base}/publish"))
        .json(&serde_json::json!({"topic": topic, "event": event, "data": data}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// The value of one metric from `/metrics` (`name` includes the `_total`
/// suffix of counters).
pub async fn metric(base: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

/// Polls `/metrics` until `name` reads `expected`: counters and gauges
/// trail the events that change them (a dropped connection is counted when
/// its task notices), so a single read could race.
///
/// # Panics
/// When the value is still different after 10 s.
pub async fn wait_for_metric(base: &str, name: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(base, name).await;
        if value == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A self-signed certificate for `localhost` and 127.0.0.1, in PEM files.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: String,
}

impl TestCert {
    pub fn new() -> Self {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("generate a certificate");
        let dir = tempfile::TempDir::new().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let pem = certified.cert.pem();
        std::fs::write(&cert, &pem).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        Self {
            dir,
            cert,
            key,
            pem,
        }
    }

    pub fn args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }

    /// A client that trusts this certificate and reaches `localhost` at `addr`.
    pub fn client(&self, addr: SocketAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .resolve("localhost", addr)
            .https_only(true)
            .build()
            .unwrap()
    }
}
