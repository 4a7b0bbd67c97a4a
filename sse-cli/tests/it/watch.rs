//! `sse-cli watch` end to end over HTTP, against the scripted test server:
//! every fixture served in chunks, the request it sends, the error paths,
//! `--json`, `--count`, and reconnecting like EventSource.

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use crate::{
    fixtures::{Expected, FIXTURES},
    support::{closed_port, run_cli, Reply, TestServer, XorShift},
};

/// The `--json` line the contract promises for an event, built here
/// independently of the code under test.
fn json_line(&(event, data, id): &Expected) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("string serialises");
    format!(
        r#"{{"event": {}, "data": {}, "id": {}}}"#,
        q(event),
        q(data),
        q(id)
    )
}

/// Serves fixture `i` at `/f/i`, split by `split`, and checks every one.
async fn check_fixtures_over_http(
    pause: Duration,
    split: impl Fn(usize, &'static [u8]) -> Vec<Vec<u8>> + Send + Sync + 'static,
) {
    let server = TestServer::start(move |_, request| {
        let index: usize = request
            .target
            .strip_prefix("/f/")
            .and_then(|i| i.parse().ok())
            .expect("fixture path");
        Reply::sse(split(index, FIXTURES[index].input)).pause(pause)
    })
    .await;
    for (index, fixture) in FIXTURES.iter().enumerate() {
        let url = server.url(&format!("/f/{index}"));
        let run = run_cli(&["watch", "--json", "--no-reconnect", &url]).await;
        assert!(run.status.success(), "{}: {run:?}", fixture.name);
        let expected: Vec<String> = fixture.events.iter().map(json_line).collect();
        assert_eq!(run.lines(), expected, "fixture {:?}", fixture.name);
    }
}

#[tokio::test]
async fn every_fixture_over_http_one_byte_at_a_time() {
    check_fixtures_over_http(Duration::from_millis(1), |_, input| {
        input.iter().map(|&b| vec![b]).collect()
    })
    .await;
}

#[tokio::test]
async fn every_fixture_over_http_in_pseudo_random_chunks() {
    check_fixtures_over_http(Duration::ZERO, |index, input| {
        XorShift::new(index as u64 + 1)
            .chunks(input, 5)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    })
    .await;
}

#[tokio::test]
async fn sends_eventsource_headers_topics_and_last_event_id() {
    let server = TestServer::start(|_, _| Reply::sse(vec![b"data: x\n\n".to_vec()])).await;
    let url = server.url("/sse");
    let run = run_cli(&[
        "watch",
        "--no-reconnect",
        "--last-event-id",
        "41",
        "-H",
        "X-Token: abc",
        "--topic",
        "a b",
        "--topic",
        "c&d",
        &url,
    ])
    .await;
    assert!(run.status.success(), "{run:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.target, "/sse?topic=a%20b&topic=c%26d");
    assert_eq!(request.header("accept"), Some("text/event-stream"));
    assert_eq!(request.header("cache-control"), Some("no-cache"));
    assert_eq!(request.header("x-token"), Some("abc"));
    assert_eq!(request.header("last-event-id"), Some("41"));
}

#[tokio::test]
async fn no_last_event_id_header_without_an_id() {
    let server = TestServer::start(|_, _| Reply::sse(vec![b"data: x\n\n".to_vec()])).await;
    let run = run_cli(&["watch", "--no-reconnect", &server.url("/sse")]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(server.requests()[0].header("last-event-id"), None);
}

#[tokio::test]
async fn connection_refused_is_one_clear_error() {
    let url = format!("http://127.0.0.1:{}/sse", closed_port().await);
    for json in [false, true] {
        let mut args = vec!["watch", url.as_str()];
        if json {
            args.push("--json");
        }
        let run = run_cli(&args).await;
        assert!(!run.status.success(), "{run:?}");
        assert_eq!(run.stdout, "");
        assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
        assert!(
            run.stderr.contains("connection refused"),
            "{:?}",
            run.stderr
        );
        assert!(run.stderr.contains(&url), "{:?}", run.stderr);
    }
}

#[tokio::test]
async fn not_found_is_an_error_with_the_servers_message() {
    let server = TestServer::start(|_, _| {
        Reply::status(
            404,
            "application/json",
            r#"{"error": "no such stream\u001b[2J"}"#,
        )
    })
    .await;
    let run = run_cli(&["watch", &server.url("/nope")]).await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(
        run.stderr
            .contains("404 Not Found: no such stream\\u{1b}[2J"),
        "escaped: {:?}",
        run.stderr
    );
    assert_eq!(server.requests().len(), 1, "a 404 is not retried");
}

#[tokio::test]
async fn server_error_is_not_retried() {
    let server = TestServer::start(|_, _| Reply::status(503, "text/plain", "busy")).await;
    let run = run_cli(&["watch", &server.url("/sse")]).await;
    assert!(!run.status.success(), "{run:?}");
    assert!(
        run.stderr.contains("503 Service Unavailable: busy"),
        "{:?}",
        run.stderr
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn html_content_type_is_an_error() {
    let server =
        TestServer::start(|_, _| Reply::status(200, "text/html", "<html>data: x\n\n</html>")).await;
    let run = run_cli(&["watch", &server.url("/")]).await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "", "nothing of an HTML page is parsed");
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(run.stderr.contains("\"text/html\""), "{:?}", run.stderr);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn any_text_event_stream_content_type_is_accepted() {
    for content_type in ["Text/Event-Stream; charset=UTF-8", "TEXT/EVENT-STREAM"] {
        let server = TestServer::start(move |_, _| {
            Reply::sse(vec![b"data: ok\n\n".to_vec()]).content_type(content_type)
        })
        .await;
        let run = run_cli(&["watch", "--json", "--no-reconnect", &server.url("/")]).await;
        assert!(run.status.success(), "{content_type}: {run:?}");
        assert_eq!(
            run.lines(),
            [r#"{"event": "message", "data": "ok", "id": ""}"#]
        );
    }
}

#[tokio::test]
async fn no_content_stops_without_reconnecting() {
    let server = TestServer::start(|_, _| Reply::status(204, "text/event-stream", "")).await;
    let run = run_cli(&["watch", &server.url("/sse")]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn no_content_on_a_reconnect_stops_too() {
    let server = TestServer::start(|connection, _| match connection {
        0 => Reply::sse(vec![b"retry: 10\nid: 1\ndata: one\n\n".to_vec()]),
        _ => Reply::status(204, "text/event-stream", ""),
    })
    .await;
    let run = run_cli(&["watch", "--json", &server.url("/sse")]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.lines(),
        [r#"{"event": "message", "data": "one", "id": "1"}"#]
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn json_output_is_exact() {
    let stream = b"id: 7\nevent: greet\ndata: h\xC3\xA9llo \"w\"\ndata: \\ tab\t\x01\n\n\
                   data: no id change\n\n"
        .to_vec();
    let server = TestServer::start(move |_, _| Reply::sse(vec![stream.clone()])).await;
    let run = run_cli(&["watch", "--json", "--no-reconnect", &server.url("/")]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout,
        concat!(
            r#"{"event": "greet", "data": "héllo \"w\"\n\\ tab\t\u0001", "id": "7"}"#,
            "\n",
            r#"{"event": "message", "data": "no id change", "id": "7"}"#,
            "\n"
        )
    );
}

#[tokio::test]
async fn count_exits_after_n_events_on_an_open_stream() {
    let server = TestServer::start(|_, _| {
        let events = (1..=5).map(|i| format!("id: {i}\ndata: {i}\n\n").into_bytes());
        Reply::sse(events.collect()).hold_open()
    })
    .await;
    let run = run_cli(&["watch", "--json", "--count", "3", &server.url("/")]).await;
    assert!(run.status.success(), "{run:?}");
    let data: Vec<String> = run
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["data"].to_string())
        .collect();
    assert_eq!(data, [r#""1""#, r#""2""#, r#""3""#]);
}

#[tokio::test]
async fn count_stops_mid_chunk() {
    // All five events arrive in one chunk; only three are printed.
    let server = TestServer::start(|_, _| {
        Reply::sse(vec![
            b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n".to_vec()
        ])
        .hold_open()
    })
    .await;
    let run = run_cli(&["watch", "--count", "3", &server.url("/")]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.lines().len(), 3, "{:?}", run.stdout);
}

#[tokio::test]
async fn reconnects_with_last_event_id_and_prints_nothing_twice() {
    let server = TestServer::start(|connection, request| match connection {
        // Ends with an event cut short: it must not be printed now, and it
        // comes again (complete) on the next connection.
        0 => Reply::sse(vec![
            b"retry: 20\n\nid: 1\ndata: one\n\n".to_vec(),
            b"id: 2\ndata: two\n\nid: 3\ndata: thr".to_vec(),
        ])
        .cut(),
        1 => {
            // Replay after whatever the client says it has.
            let after: u32 = request
                .header("last-event-id")
                .and_then(|id| id.parse().ok())
                .unwrap_or(0);
            let events = (after + 1..=4).map(|i| format!("id: {i}\ndata: {i}\n\n").into_bytes());
            Reply::sse(events.collect())
        }
        _ => Reply::sse(vec![b"data: five\n\n".to_vec()]).hold_open(),
    })
    .await;
    let run = run_cli(&["watch", "--json", "--count", "5", &server.url("/")]).await;
    assert!(run.status.success(), "{run:?}");
    let got: Vec<(String, String)> = run
        .lines()
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["data"].as_str().unwrap_or_default().to_string(),
                v["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("one", "1"),
        ("two", "2"),
        ("3", "3"),
        ("4", "4"),
        ("five", "4"),
    ]
    .iter()
    .map(|&(d, i)| (d.to_string(), i.to_string()))
    .collect();
    assert_eq!(got, expected);
    let requests = server.requests();
    assert_eq!(requests[0].header("last-event-id"), None);
    assert_eq!(requests[1].header("last-event-id"), Some("2"));
    assert_eq!(requests[2].header("last-event-id"), Some("4"));
    // --json mode keeps stderr for what went wrong (the cut), not for the
    // routine reconnect after the clean end.
    let notices: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(notices.len(), 1, "{}", run.stderr);
    assert!(
        notices[0].starts_with("sse-cli: connection lost: "),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn retry_flag_overrides_the_servers_retry() {
    // The server asks for an hour; --retry makes it 10 ms, so the second
    // connection happens (otherwise this test would hang).
    let server = TestServer::start(|connection, _| match connection {
        0 => Reply::sse(vec![b"retry: 3600000\nid: 1\ndata: a\n\n".to_vec()]),
        _ => Reply::sse(vec![b"data: b\n\n".to_vec()]).hold_open(),
    })
    .await;
    let run = run_cli(&["watch", "--count", "2", "--retry", "10ms", &server.url("/")]).await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(server.requests().len(), 2);
    assert!(
        run.stderr.contains("stream ended; reconnecting in 10ms"),
        "{:?}",
        run.stderr
    );
    assert!(
        run.stderr.contains("reconnected, resuming after id 1"),
        "{:?}",
        run.stderr
    );
}

#[tokio::test]
async fn broken_stream_is_shown_and_reconnected_in_human_mode() {
    let server = TestServer::start(|connection, _| match connection {
        0 => Reply::sse(vec![b"id: 1\ndata: a\n\n".to_vec()]).cut(),
        _ => Reply::sse(vec![b"data: b\n\n".to_vec()]).hold_open(),
    })
    .await;
    let run = run_cli(&["watch", "--count", "2", "--retry", "10ms", &server.url("/")]).await;
    assert!(run.status.success(), "{run:?}");
    assert!(run.stderr.contains("connection lost"), "{:?}", run.stderr);
    assert_eq!(run.lines().len(), 2);
}

#[tokio::test]
async fn no_reconnect_exits_zero_when_the_stream_ends() {
    let server = TestServer::start(|_, _| Reply::sse(vec![b"data: a\n\n".to_vec()])).await;
    let run = run_cli(&[
        "watch",
        "--no-reconnect",
        "--retry",
        "10ms",
        &server.url("/"),
    ])
    .await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.lines().len(), 1);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn no_reconnect_fails_when_the_stream_breaks() {
    let server = TestServer::start(|_, _| Reply::sse(vec![b"data: a\n\n".to_vec()]).cut()).await;
    let run = run_cli(&["watch", "--no-reconnect", &server.url("/")]).await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(
        run.lines().len(),
        1,
        "the event before the break is printed"
    );
    assert!(run.stderr.contains("broke"), "{:?}", run.stderr);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn event_over_the_size_limit_is_an_error() {
    let server = TestServer::start(|_, _| {
        Reply::sse(vec![b"data: small\n\n".to_vec(), vec![b'x'; 4096]]).hold_open()
    })
    .await;
    let run = run_cli(&["watch", "--max-event-size", "1024", &server.url("/")]).await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.lines().len(), 1);
    assert!(
        run.stderr.contains("limit of 1024 bytes"),
        "{:?}",
        run.stderr
    );
}

#[tokio::test]
async fn keeps_retrying_while_a_reconnect_is_refused() {
    // A server that goes away after one event, and comes back on the same
    // port only once the client has reported a refused reconnect.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut child = crate::support::hermetic(env!("CARGO_BIN_EXE_sse-cli"))
        .args([
            "watch",
            "--count",
            "2",
            "--retry",
            "20ms",
            &format!("http://{addr}/"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();

    let (mut socket, _) = listener.accept().await.expect("accept");
    read_head(&mut socket).await;
    socket
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 19\r\n\r\nid: 9\ndata: first\n\n")
        .await
        .expect("write");
    drop(socket);
    drop(listener);

    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), stderr.next_line())
            .await
            .expect("client reports reconnect attempts")
            .expect("read stderr")
            .expect("stderr open");
        let refused = line.contains("reconnect failed: connection refused");
        seen.push(line);
        if refused {
            break;
        }
    }

    let listener = TcpListener::bind(addr).await.expect("rebind same port");
    let (mut socket, _) = listener.accept().await.expect("accept again");
    let head = read_head(&mut socket).await;
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nlast-event-id: 9\r\n"),
        "{head}"
    );
    socket
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 14\r\n\r\ndata: second\n\n")
        .await
        .expect("write");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("client exits after --count")
        .expect("wait");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].ends_with("id=9  first") && lines[1].ends_with("id=9  second"),
        "{stdout}"
    );
    assert!(seen[0].contains("stream ended"), "{seen:?}");
}

/// Reads an HTTP request head (the client sends no body).
async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.expect("read") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
