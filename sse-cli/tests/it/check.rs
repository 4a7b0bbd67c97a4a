//! `sse-cli check`: our real server passes every check, and a small
//! pub/sub server with one deliberately injected fault fails exactly the
//! check that fault breaks (and no other).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::broadcast,
    task::JoinHandle,
};

use crate::support::{closed_port, run_cli};

/// One way of breaking a working SSE server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    NotFound,
    HtmlContentType,
    NoCacheControl,
    /// Says gzip (as a compressing proxy would).
    Compressed,
    ContentLength,
    /// Headers held back as a buffering framework does.
    LateHeaders,
    NoRetry,
    /// No heartbeat comments and no ticks: an idle stream stays silent.
    Silent,
    /// Events without `id:` (the server ticks so there are some to see).
    NoIds,
    /// Every event held 1.5 s, as a buffering proxy does.
    SlowDelivery,
    /// Non-ASCII characters replaced, as a mis-declared charset does.
    MangledUnicode,
    /// `Last-Event-ID` ignored: a reconnect gets only live events.
    NoResume,
}

/// How long the faults that delay things delay them.
const FAULT_DELAY: Duration = Duration::from_millis(1500);

struct Shared {
    fault: Fault,
    history: Mutex<Vec<(u64, String)>>,
    live: broadcast::Sender<(u64, String)>,
}

/// A minimal pub/sub SSE server over raw HTTP/1.1: `GET /sse` (resuming
/// after `Last-Event-ID`) and `POST /publish` with `{"data": ...}`.
struct FaultyServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FaultyServer {
    async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            fault,
            history: Mutex::new(Vec::new()),
            live: broadcast::channel(64).0,
        });
        if fault == Fault::NoIds {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    publish(&shared, "tick".into());
                }
            });
        }
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, &shared).await;
                });
            }
        });
        Self { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn publish(shared: &Shared, data: String) -> u64 {
    let mut history = shared.history.lock().unwrap();
    let id = history.len() as u64 + 1;
    history.push((id, data.clone()));
    let _ = shared.live.send((id, data));
    id
}

async fn serve(socket: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(socket);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let (mut length, mut last_event_id) = (0, 0);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "last-event-id" => last_event_id = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    let mut socket = reader.into_inner();
    if request_line.starts_with("POST /publish ") {
        let value: Value = serde_json::from_slice(&body).unwrap_or_default();
        let id = publish(shared, value["data"].as_str().unwrap_or_default().into());
        let body = format!(r#"{{"id":"{id}"}}"#);
        let head = format!(
            "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        socket.write_all(format!("{head}{body}").as_bytes()).await?;
        return socket.shutdown().await;
    }
    stream(socket, shared, last_event_id).await
}

async fn stream(mut socket: TcpStream, shared: &Shared, last_event_id: u64) -> std::io::Result<()> {
    let fault = shared.fault;
    let mut live = shared.live.subscribe();
    let (status, content_type) = match fault {
        Fault::NotFound => ("404 Not Found", "text/plain"),
        Fault::HtmlContentType => ("200 OK", "text/html"),
        _ => ("200 OK", "Text/Event-Stream; charset=utf-8"),
    };
    let mut head =
        format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n");
    let extra = match fault {
        Fault::NoCacheControl => "",
        Fault::Compressed => "Cache-Control: no-cache\r\nContent-Encoding: gzip\r\n",
        Fault::ContentLength => "Cache-Control: no-cache\r\nContent-Length: 1000000\r\n",
        _ => "Cache-Control: no-cache\r\n",
    };
    head.push_str(extra);
    head.push_str("\r\n");
    if fault == Fault::LateHeaders {
        tokio::time::sleep(FAULT_DELAY).await;
    }
    socket.write_all(head.as_bytes()).await?;
    if fault == Fault::NotFound {
        return socket.shutdown().await;
    }
    if fault != Fault::NoRetry {
        socket.write_all(b"retry: 1000\n\n").await?;
    }
    let after = if fault == Fault::NoResume {
        u64::MAX
    } else {
        last_event_id
    };
    let replay: Vec<(u64, String)> = shared
        .history
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| *id > after)
        .cloned()
        .collect();
    let mut written = if fault == Fault::NoResume {
        shared.history.lock().unwrap().len() as u64
    } else {
        last_event_id
    };
    for event in replay {
        written = event.0;
        write_event(&mut socket, fault, &event).await?;
    }
    let mut heartbeat = tokio::time::interval(Duration::from_millis(300));
    loop {
        tokio::select! {
            event = live.recv() => {
                let Ok(event) = event else { return Ok(()) };
                if event.0 > written {
                    written = event.0;
                    write_event(&mut socket, fault, &event).await?;
                }
            }
            _ = heartbeat.tick(), if !matches!(fault, Fault::Silent | Fault::NoIds) => {
                socket.write_all(b": heartbeat\n\n").await?;
            }
        }
    }
}

async fn write_event(
    socket: &mut TcpStream,
    fault: Fault,
    (id, data): &(u64, String),
) -> std::io::Result<()> {
    if fault == Fault::SlowDelivery {
        tokio::time::sleep(FAULT_DELAY).await;
    }
    let mut frame = String::new();
    if fault != Fault::NoIds {
        frame.push_str(&format!("id: {id}\n"));
    }
    for line in data.split('\n') {
        let line: String = if fault == Fault::MangledUnicode {
            line.chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect()
        } else {
            line.to_string()
        };
        frame.push_str(&format!("data: {line}\n"));
    }
    frame.push('\n');
    socket.write_all(frame.as_bytes()).await
}

/// Runs `sse-cli check --json` and returns (exit code, name -> (status, reason)).
async fn check(args: &[&str]) -> (i32, Vec<(String, String, String)>) {
    let mut argv = vec!["check", "--json"];
    argv.extend_from_slice(args);
    let run = run_cli(&argv).await;
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"));
    let checks = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().expect("string").to_string();
            (s("name"), s("status"), s("reason"))
        })
        .collect();
    (run.status.code().expect("exit code"), checks)
}

const ALL: [&str; 12] = [
    "status",
    "content-type",
    "cache-control",
    "content-encoding",
    "content-length",
    "headers-flushed",
    "retry",
    "heartbeat",
    "ids",
    "delivery",
    "round-trip",
    "resume",
];

/// Checks a faulty server with --publish-url (unless `passive_only`).
async fn check_fault(fault: Fault, passive_only: bool) -> (i32, Vec<(String, String, String)>) {
    let server = FaultyServer::start(fault).await;
    let (url, publish_url) = (server.url("/sse"), server.url("/publish"));
    let mut args = vec![url.as_str(), "--timeout", "6s"];
    if !passive_only {
        args.extend(["--publish-url", publish_url.as_str()]);
    }
    check(&args).await
}

#[tokio::test]
async fn the_fault_free_test_server_passes_every_check() {
    let (code, checks) = check_fault(Fault::None, false).await;
    let names: Vec<&str> = checks.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ALL);
    for (name, status, reason) in &checks {
        assert_eq!(status, "pass", "{name}: {reason}");
    }
    assert_eq!(code, 0);
}

#[tokio::test]
async fn each_fault_fails_exactly_the_check_it_breaks() {
    let cases = [
        (Fault::NotFound, "status", "fail", false),
        (Fault::HtmlContentType, "content-type", "fail", false),
        (Fault::NoCacheControl, "cache-control", "fail", false),
        (Fault::Compressed, "content-encoding", "fail", false),
        (Fault::ContentLength, "content-length", "fail", false),
        (Fault::LateHeaders, "headers-flushed", "fail", false),
        (Fault::NoRetry, "retry", "warn", false),
        (Fault::Silent, "heartbeat", "warn", false),
        (Fault::NoIds, "ids", "warn", true),
        (Fault::SlowDelivery, "delivery", "fail", false),
        (Fault::MangledUnicode, "round-trip", "fail", false),
        (Fault::NoResume, "resume", "fail", false),
    ];
    // A few at a time: several wait out a timeout or a delay, but the
    // passing checks have 1 s deadlines that a flood of processes on a
    // busy machine should not threaten.
    let runs: Vec<_> = futures::stream::iter(cases)
        .map(|(fault, broken, level, passive_only)| async move {
            let (code, checks) = check_fault(fault, passive_only).await;
            (fault, broken, level, code, checks)
        })
        .buffer_unordered(3)
        .collect()
        .await;
    for run in runs {
        let (fault, broken, level, code, checks) = run;
        for (name, status, reason) in &checks {
            if name == broken {
                assert_eq!(status, level, "{fault:?} on {name}: {reason}");
            } else {
                // Checks that cannot run after the broken one are skipped;
                // every other one passes.
                let ok = status == "pass" || (status == "skip" && reason.starts_with("not run"));
                assert!(ok, "{fault:?} also flagged {name}: {status} {reason}");
            }
        }
        assert!(
            checks.iter().any(|c| c.0 == broken),
            "{fault:?}: no {broken} line"
        );
        let expected_code = i32::from(level == "fail");
        assert_eq!(code, expected_code, "{fault:?}: exit code");
    }
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_exits_2() {
    let url = format!("http://127.0.0.1:{}/sse", closed_port().await);
    let (code, checks) = check(&[&url]).await;
    assert_eq!(code, 2);
    assert_eq!(checks[0].1, "fail");
    assert!(
        checks[0].2.contains("connection refused"),
        "{:?}",
        checks[0]
    );
}

#[tokio::test]
async fn the_table_has_a_line_per_check_and_a_summary() {
    let server = FaultyServer::start(Fault::NoCacheControl).await;
    let run = run_cli(&["check", &server.url("/sse"), "--timeout", "3s"]).await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let lines = run.lines();
    assert_eq!(lines[0], format!("sse-cli check {}", server.url("/sse")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  FAIL  cache-control  ")),
        "{}",
        run.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  PASS  status  ")),
        "{}",
        run.stdout
    );
    assert_eq!(
        lines.last().copied(),
        // ids: no event arrived by itself and none was published.
        Some("12 checks: 7 passed, 1 warning, 1 failed, 3 skipped: broken for browsers"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn our_server_passes_every_check() {
    // A short heartbeat so the heartbeat is seen quickly; no clock, so the
    // ids come from check's own events.
    let server = crate::support::real_server_with("127.0.0.1:0", &["--heartbeat", "1s"]).await;
    let addr = server.addr();
    let publish_url = format!("http://{addr}/publish");
    // The default topic, and a named one (check's default publish body
    // follows the URL's ?topic=).
    for url in [
        format!("http://{addr}/sse"),
        format!("http://{addr}/sse?topic=or%20ders"),
    ] {
        let (code, checks) =
            check(&[&url, "--publish-url", &publish_url, "--timeout", "10s"]).await;
        for (name, status, reason) in &checks {
            assert_eq!(status, "pass", "{url} {name}: {reason}");
        }
        assert_eq!(checks.len(), ALL.len());
        assert_eq!(code, 0);
    }
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("server stops")
        .expect("server run");
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_fails_headers_flushed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/sse", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let (code, checks) = check(&[&url, "--timeout", "1s"]).await;
    hold.abort();
    assert_eq!(code, 1, "connected, so not 2: {checks:?}");
    let flushed = checks
        .iter()
        .find(|c| c.0 == "headers-flushed")
        .expect("line");
    assert_eq!(flushed.1, "fail", "{flushed:?}");
    assert!(
        flushed.2.contains("no headers within 1.00 s"),
        "{flushed:?}"
    );
}
