//! `sse-cli watch` riding out what real deployments do (issue 12), against
//! fault-injecting servers: proxies answering 502/503/429 while upstreams
//! restart, `Retry-After`, servers that accept and never answer, streams
//! that go silent, and the browser's rules that must still hold.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::support::{run_cli, run_cli_with, Reply, TestServer};

/// A reply that also records when its request arrived.
fn timed(
    times: &Arc<Mutex<Vec<Instant>>>,
    script: impl Fn(usize) -> Reply + Send + Sync + 'static,
) -> impl Fn(usize, &crate::support::Request) -> Reply + Send + Sync + 'static {
    let times = times.clone();
    move |connection, _| {
        times.lock().unwrap().push(Instant::now());
        script(connection)
    }
}

fn data_of(line: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(line).expect("json line");
    value["data"].as_str().expect("data").to_string()
}

#[tokio::test]
async fn reconnects_through_502_503_and_429_honouring_retry_after() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let server = TestServer::start(timed(&times, |connection| match connection {
        0 => Reply::sse(vec![b"retry: 10\nid: 1\ndata: one\n\n".to_vec()]),
        1 => Reply::status(502, "text/html", "<html>Bad Gateway</html>"),
        2 => {
            let mut reply = Reply::status(503, "application/json", r#"{"error": "full"}"#);
            reply.headers.push(("Retry-After".into(), "1".into()));
            reply
        }
        3 => Reply::status(429, "text/plain", "slow down"),
        _ => Reply::sse(vec![b"id: 2\ndata: two\n\n".to_vec()]).hold_open(),
    }))
    .await;
    let run = run_cli(&["watch", "--json", "--count", "2", &server.url("/sse")]).await;
    assert!(run.status.success(), "{run:?}");
    let data: Vec<String> = run.lines().iter().map(|l| data_of(l)).collect();
    assert_eq!(data, ["one", "two"]);
    let requests = server.requests();
    assert_eq!(requests.len(), 5);
    for request in &requests[1..] {
        assert_eq!(request.header("last-event-id"), Some("1"));
    }
    // Said on stderr, even in --json mode: these are failures, not routine.
    for expected in [
        "reconnect answered 502 Bad Gateway",
        "reconnect answered 503 Service Unavailable: full (Retry-After 1s)",
        "reconnect answered 429 Too Many Requests: slow down",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert!(
        !run.stderr.contains("stream ended"),
        "routine reconnects stay quiet in --json mode: {}",
        run.stderr
    );
    let times = times.lock().unwrap();
    assert!(
        times[3] - times[2] >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured: {:?}",
        times[3] - times[2]
    );
}

#[tokio::test]
async fn consecutive_failures_back_off_exponentially() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let server = TestServer::start(timed(&times, |connection| match connection {
        0 => Reply::sse(vec![b"id: 1\ndata: one\n\n".to_vec()]),
        1..=5 => Reply::status(503, "text/plain", "restarting"),
        _ => Reply::sse(vec![b"data: two\n\n".to_vec()]).hold_open(),
    }))
    .await;
    let run = run_cli(&[
        "watch",
        "--count",
        "2",
        "--retry",
        "100ms",
        &server.url("/sse"),
    ])
    .await;
    assert!(run.status.success(), "{run:?}");
    let times = times.lock().unwrap();
    assert_eq!(times.len(), 7);
    // Failure n waits within [d/2, d] for d = 100ms * 2^(n-1): only lower
    // bounds are asserted (a busy machine can only make waits longer).
    for n in 1..=5u32 {
        let gap = times[n as usize + 1] - times[n as usize];
        let floor = Duration::from_millis(50) * 2u32.pow(n - 1);
        assert!(gap >= floor, "wait after failure {n}: {gap:?} < {floor:?}");
    }
    let notices: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("503 Service Unavailable: restarting; reconnecting in"))
        .collect();
    assert_eq!(notices.len(), 5, "{}", run.stderr);
    assert!(run.stderr.contains("stream ended; reconnecting in 100ms"));
}

#[tokio::test]
async fn the_browsers_rules_still_hold_on_a_reconnect() {
    // A wrong content type and a 4xx other than 429 end the watch for good.
    for (reply, expected) in [
        (
            Reply::status(200, "text/html", "<html></html>"),
            "\"text/html\"",
        ),
        (
            Reply::status(404, "text/plain", "gone"),
            "404 Not Found: gone",
        ),
        (
            Reply::status(401, "text/plain", "who are you"),
            "401 Unauthorized",
        ),
    ] {
        let server = TestServer::start(move |connection, _| match connection {
            0 => Reply::sse(vec![b"retry: 10\ndata: one\n\n".to_vec()]),
            _ => reply.clone(),
        })
        .await;
        let run = run_cli(&["watch", &server.url("/sse")]).await;
        assert!(!run.status.success(), "{expected}: {run:?}");
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
        assert_eq!(server.requests().len(), 2, "{expected}: not retried");
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_reported_after_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/sse", listener.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        // Accept, read the request, never answer.
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let run = run_cli(&["watch", "--connect-timeout", "300ms", &url]).await;
    hold.abort();
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no response within 300ms"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_reconnect_that_never_answers_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/sse", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        for connection in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            read_head(&mut socket).await;
            let body: &[u8] = match connection {
                0 => b"retry: 10\nid: 1\ndata: one\n\n",
                1 => {
                    held.push(socket); // never answered
                    continue;
                }
                _ => b"data: two\n\n",
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body).await;
            if connection > 1 {
                held.push(socket); // stay open: --count ends the watch
            }
        }
    });
    let run = run_cli(&[
        "watch",
        "--json",
        "--count",
        "2",
        "--connect-timeout",
        "300ms",
        &url,
    ])
    .await;
    server.abort();
    assert!(run.status.success(), "{run:?}");
    let data: Vec<String> = run.lines().iter().map(|l| data_of(l)).collect();
    assert_eq!(data, ["one", "two"]);
    assert!(
        run.stderr
            .contains("reconnect failed: no response within 300ms; reconnecting in"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_silent_stream_is_reconnected_after_the_idle_timeout() {
    let server = TestServer::start(|connection, _| match connection {
        0 => Reply::sse(vec![b"id: 1\ndata: one\n\n".to_vec()]).hold_open(),
        _ => Reply::sse(vec![b"data: two\n\n".to_vec()]).hold_open(),
    })
    .await;
    let run = run_cli(&[
        "watch",
        "--json",
        "--count",
        "2",
        "--retry",
        "10ms",
        "--idle-timeout",
        "300ms",
        &server.url("/sse"),
    ])
    .await;
    assert!(run.status.success(), "{run:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("last-event-id"), Some("1"));
    assert!(
        run.stderr
            .contains("connection lost: nothing received for 300ms; reconnecting in"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn heartbeat_comments_keep_the_idle_timeout_at_bay() {
    // Ten comments 100 ms apart, then the event: 1 s of stream with no
    // event, but never 500 ms of silence.
    let server = TestServer::start(|_, _| {
        let mut chunks = vec![b": heartbeat\n\n".to_vec(); 10];
        chunks.push(b"data: after the heartbeats\n\n".to_vec());
        Reply::sse(chunks)
            .pause(Duration::from_millis(100))
            .hold_open()
    })
    .await;
    let run = run_cli(&[
        "watch",
        "--count",
        "1",
        "--idle-timeout",
        "500ms",
        &server.url("/sse"),
    ])
    .await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(server.requests().len(), 1, "{}", run.stderr);
    assert!(run.stdout.contains("after the heartbeats"));
}

#[tokio::test]
async fn idle_timeout_with_no_reconnect_is_an_error() {
    let server =
        TestServer::start(|_, _| Reply::sse(vec![b"data: one\n\n".to_vec()]).hold_open()).await;
    let run = run_cli(&[
        "watch",
        "--no-reconnect",
        "--idle-timeout",
        "200ms",
        &server.url("/sse"),
    ])
    .await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.lines().len(), 1);
    assert!(
        run.stderr.contains("broke: nothing received for 200ms"),
        "{}",
        run.stderr
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn no_reconnect_does_not_retry_a_server_error_either() {
    let server = TestServer::start(|connection, _| match connection {
        0 => Reply::sse(vec![b"data: one\n\n".to_vec()]),
        _ => Reply::status(503, "text/plain", "busy"),
    })
    .await;
    let run = run_cli(&["watch", "--no-reconnect", &server.url("/sse")]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn token_and_url_come_from_flags_or_the_environment() {
    let server = TestServer::start(|_, _| Reply::sse(vec![b"data: x\n\n".to_vec()])).await;
    let url = server.url("/sse");
    let run = run_cli(&["watch", "--no-reconnect", "--token", "abc.def", &url]).await;
    assert!(run.status.success(), "{run:?}");
    let run = run_cli_with(
        &["watch", "--no-reconnect"],
        b"",
        &[
            ("SSE_WATCH_URL", Some(&url)),
            ("SSE_TOKEN", Some("from-env")),
        ],
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    let run = run_cli_with(
        &["watch", "--no-reconnect", "-H", "Authorization: Basic eA=="],
        b"",
        &[
            ("SSE_WATCH_URL", Some(&url)),
            ("SSE_TOKEN", Some("ignored")),
        ],
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    let seen: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(
        seen,
        [
            Some("Bearer abc.def".to_string()),
            Some("Bearer from-env".to_string()),
            Some("Basic eA==".to_string()),
        ]
    );
}

/// Reads an HTTP request head (the client sends no body).
async fn read_head(socket: &mut tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match socket.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}
