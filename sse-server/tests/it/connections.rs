//! The connection layer against the real binary: the open-file limit and
//! the default `--max-clients`, accept failures, idle and slow heads.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

use crate::support::{publish, BinaryServer};

const WAIT: Duration = Duration::from_secs(10);

/// The binary under `prlimit --nofile=SOFT:HARD`, its log kept.
struct LimitedServer {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl LimitedServer {
    async fn start(nofile: &str, args: &[&str]) -> Self {
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_sse-server"))
            .args(["--addr", "127.0.0.1:0", "--tick", "0"])
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start sse-server under prlimit (util-linux)");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("addr=").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
            panic!("sse-server exited: {:?}", log.lock().unwrap());
        })
        .await
        .expect("serving in time");
        let keep = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep.lock().unwrap().push(line);
            }
        });
        Self {
            addr,
            log,
            _child: child,
        }
    }

    /// The log lines containing `needle`, waiting up to [`WAIT`] for one.
    async fn wait_for_log(&self, needle: &str) -> Vec<String> {
        for _ in 0..100 {
            let lines = self.log_lines(needle);
            if !lines.is_empty() {
                return lines;
            }
            tokio::time::sleep(WAIT / 100).await;
        }
        panic!(
            "no log line with {needle:?}: {:?}",
            self.log.lock().unwrap()
        );
    }

    fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }
}

/// Sends a `GET` and returns the connection.
async fn send_get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads until the end of a response head; returns it.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read");
        assert!(n > 0, "closed before a response head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Whether the server closes `stream` within `within` (reading and
/// discarding anything it sends first).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn the_open_file_limit_is_raised_and_max_clients_defaults_below_it() {
    let server = LimitedServer::start("64:128", &[]).await;
    let raised = server.log_lines("open-file limit");
    assert!(
        raised
            .iter()
            .any(|l| l.contains("was=64") && l.contains("soft=128") && l.contains("hard=128")),
        "{raised:?}"
    );
    let defaults = server.wait_for_log("--max-clients defaults").await;
    assert!(
        defaults.iter().any(|l| l.contains("max_clients=96")),
        "{defaults:?}"
    );

    let mut subscribers = Vec::new();
    for _ in 0..96 {
        let mut stream = send_get(server.addr, "/sse").await;
        let head = tokio::time::timeout(WAIT, read_head(&mut stream))
            .await
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        subscribers.push(stream);
    }
    // Subscriber 97 is refused at once, not left hanging.
    let mut refused = send_get(server.addr, "/sse").await;
    let head = tokio::time::timeout(WAIT, read_head(&mut refused))
        .await
        .expect("a fast answer");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    // Publishing and health checks still work, and the subscribers get events.
    let base = format!("http://{}", server.addr);
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    publish(&base, "default", "message", "still publishing").await;
    let mut reader = BufReader::new(subscribers.pop().unwrap());
    let got = tokio::time::timeout(WAIT, async {
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            if line.contains("still publishing") {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "a subscriber received the event");
}

#[tokio::test]
async fn accept_failures_warn_once_and_waiting_clients_are_served_later() {
    // --max-clients above what the descriptors allow: accept() fails.
    let server = LimitedServer::start("40:40", &["--max-clients", "1000"]).await;
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(send_get(server.addr, "/sse").await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warnings = server.log_lines("accept failed");
    assert!(!warnings.is_empty(), "descriptors ran out");
    assert_eq!(
        warnings.len(),
        1,
        "one warning per interval, not one per retry: {warnings:?}"
    );
    // The last client waited in the listen queue; it is served once
    // descriptors free up.
    let mut last = held.pop().unwrap();
    held.truncate(10);
    let head = tokio::time::timeout(WAIT, read_head(&mut last))
        .await
        .expect("served once descriptors were free");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_keepalive_timeout() {
    let server =
        BinaryServer::start("127.0.0.1:0", &["--tick", "0", "--keepalive-timeout", "1s"]).await;
    // Kept alive after a request, then idle.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = tokio::time::timeout(WAIT, read_head(&mut kept))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        closed_within(&mut kept, WAIT).await,
        "idle keep-alive closed"
    );
    // Connected, never sent anything.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, WAIT).await,
        "silent connection closed"
    );
    // A head trickled a header at a time (slowloris) never completes.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    assert!(
        tokio::time::timeout(WAIT, trickle).await.is_ok(),
        "a head sent too slowly is cut off"
    );
    // An open stream is not idle: it stays open past the timeout.
    let mut stream = send_get(server.addr, "/sse").await;
    let head = tokio::time::timeout(WAIT, read_head(&mut stream))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!closed_within(&mut stream, Duration::from_secs(3)).await);
    server.terminate().await;
}

/// The response head (with `date` taken out) and what follows it within
/// a moment, for a raw request.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = tokio::time::timeout(WAIT, read_head(&mut stream))
        .await
        .unwrap();
    let date = head.find("date: ").expect("a date header");
    let end = date + head[date..].find("\r\n").unwrap() + 2;
    head.replace_range(date..end, "");
    let mut rest = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut rest))
        .await
        .map_or(0, Result::unwrap);
    head + &String::from_utf8_lossy(&rest[..n])
}

#[tokio::test]
async fn lean_subscriptions_answer_with_the_same_bytes_as_hyper() {
    let server = BinaryServer::start("127.0.0.1:0", &["--tick", "0", "--max-clients", "4"]).await;
    // `TE: trailers` sends a request to hyper; hyper ignores it otherwise.
    // The Host must pass `--allowed-hosts`, whose default is the listening address.
    let host = server.addr;
    let cases = [
        format!("GET /sse?topic=a HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"),
        format!("GET /sse?topic= HTTP/1.1\r\nHost: {host}\r\n"),
        format!("GET /sse?topic=a&lastEventId=1-1 HTTP/1.1\r\nHost: {host}\r\n"),
    ];
    let mut held = Vec::new();
    for case in &cases {
        let lean = raw_exchange(server.addr, &format!("{case}\r\n")).await;
        let hyper = raw_exchange(server.addr, &format!("{case}TE: trailers\r\n\r\n")).await;
        assert_eq!(lean, hyper, "{case}");
        assert!(lean.starts_with("HTTP/1.1 "), "{lean}");
        held.push(lean);
    }
    assert!(
        held[0].contains("transfer-encoding: chunked\r\n"),
        "{}",
        held[0]
    );
    assert!(
        held[0].ends_with("\r\n\r\nC\r\nretry: 3000\n\r\n"),
        "{}",
        held[0]
    );
    assert!(held[1].starts_with("HTTP/1.1 400"), "{}", held[1]);
    // Full: the 503 is the same both ways too.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut stream = send_get(server.addr, "/sse").await;
        read_head(&mut stream).await;
        streams.push(stream);
    }
    let lean = raw_exchange(
        server.addr,
        &format!("GET /sse HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    )
    .await;
    let hyper = raw_exchange(
        server.addr,
        &format!("GET /sse HTTP/1.1\r\nHost: {host}\r\nTE: trailers\r\n\r\n"),
    )
    .await;
    assert_eq!(lean, hyper);
    assert!(
        lean.starts_with("HTTP/1.1 503") && lean.contains("retry-after: 3\r\n"),
        "{lean}"
    );
    server.terminate().await;
}
