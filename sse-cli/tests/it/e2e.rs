//! `sse-cli` against the real `sse-server`, run in-process on 127.0.0.1:0:
//! watch and publish together, `--json` with real ids, and a reconnect
//! across a server restart on the same port with nothing lost or doubled.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout},
};

use crate::support::{real_server, run_cli};

/// Guard against a hung test; nothing asserts on elapsed time.
const GUARD: Duration = Duration::from_secs(60);

/// `sse-cli publish` one event; returns its id.
async fn publish(server: &str, topic: &str, event: Option<&str>, data: &str) -> String {
    let mut args = vec!["publish", "--url", server, "--topic", topic];
    if let Some(event) = event {
        args.extend(["--event", event]);
    }
    args.push(data);
    let run = run_cli(&args).await;
    assert!(run.status.success(), "{run:?}");
    let id = run.stdout.trim().to_string();
    assert!(!id.is_empty() && !id.contains('\n'), "{run:?}");
    id
}

/// A running `sse-cli watch` whose stdout is read line by line.
struct Watcher {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watcher {
    fn spawn(args: &[&str]) -> Self {
        let mut child = crate::support::hermetic(env!("CARGO_BIN_EXE_sse-cli"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sse-cli");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, lines }
    }

    async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(GUARD, self.lines.next_line())
            .await
            .expect("an event arrives")
            .expect("read stdout")
            .expect("stdout still open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Waits for exit; returns whether it succeeded and what is left of stdout.
    async fn finish(mut self) -> (bool, Vec<String>) {
        let status = tokio::time::timeout(GUARD, self.child.wait())
            .await
            .expect("sse-cli exits")
            .expect("wait");
        let mut rest = Vec::new();
        while let Ok(Some(line)) = self.lines.next_line().await {
            rest.push(line);
        }
        (status.success(), rest)
    }
}

fn event(json: &Value) -> (&str, &str, &str) {
    (
        json["event"].as_str().unwrap_or("<missing>"),
        json["data"].as_str().unwrap_or("<missing>"),
        json["id"].as_str().unwrap_or("<missing>"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_what_publish_sends_with_exact_json_and_count() {
    let server = real_server("127.0.0.1:0").await;
    let base = server.url("");
    // Resuming from an event published before the watch starts makes the
    // test independent of when the subscription lands: later events are
    // either replayed or delivered live, never missed.
    let start = publish(&base, "e2e", None, "before").await;
    let sse = format!("{base}/sse");
    let mut watcher = Watcher::spawn(&[
        "watch",
        &sse,
        "--json",
        "--topic",
        "e2e",
        "--last-event-id",
        &start,
        "--count",
        "3",
    ]);
    let one = publish(&base, "e2e", None, "one").await;
    let other = publish(&base, "elsewhere", None, "not for us").await;
    let two = publish(&base, "e2e", Some("custom"), "two\nlines, \"quoted\"").await;
    let three = publish(&base, "e2e", None, "three").await;
    assert!(one != two && two != three && other != one);

    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.push(watcher.next_json().await);
    }
    let (ok, rest) = watcher.finish().await;
    assert!(ok, "--count 3 exits 0");
    assert!(rest.is_empty(), "{rest:?}");
    let got: Vec<_> = lines.iter().map(event).collect();
    assert_eq!(
        got,
        [
            ("message", "one", one.as_str()),
            ("custom", "two\nlines, \"quoted\"", two.as_str()),
            ("message", "three", three.as_str()),
        ]
    );
    server.shutdown().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_from_the_real_server_are_byte_exact() {
    let server = real_server("127.0.0.1:0").await;
    let base = server.url("");
    let start = publish(&base, "exact", None, "before").await;
    let published = publish(&base, "exact", Some("note"), "a\r\nb\rc").await;
    let run = run_cli(&[
        "watch",
        &format!("{base}/sse?topic=exact"),
        "--json",
        "--last-event-id",
        &start,
        "--count",
        "1",
    ])
    .await;
    assert!(run.status.success(), "{run:?}");
    // The server writes one data: line per line of the data, so CRLF and a
    // lone CR both come back as LF, exactly as a browser would see them.
    assert_eq!(
        run.stdout,
        format!("{{\"event\": \"note\", \"data\": \"a\\nb\\nc\", \"id\": \"{published}\"}}\n")
    );
    server.shutdown().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_are_published_in_order_and_watched() {
    let server = real_server("127.0.0.1:0").await;
    let base = server.url("");
    let start = publish(&base, "logs", None, "before").await;
    let run = crate::support::run_cli_with(
        &["publish", "--url", &base, "--topic", "logs", "-"],
        b"GET /a 200\nGET /b 404\nGET /c 500\n",
        &[],
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    let ids: Vec<&str> = run.lines();
    assert_eq!(ids.len(), 3);
    let watched = run_cli(&[
        "watch",
        &format!("{base}/sse"),
        "--topic",
        "logs",
        "--json",
        "--last-event-id",
        &start,
        "--count",
        "3",
    ])
    .await;
    assert!(watched.status.success(), "{watched:?}");
    let got: Vec<Value> = watched
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let got: Vec<_> = got.iter().map(event).collect();
    assert_eq!(
        got,
        [
            ("message", "GET /a 200", ids[0]),
            ("message", "GET /b 404", ids[1]),
            ("message", "GET /c 500", ids[2]),
        ]
    );
    server.shutdown().await.expect("server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_across_a_server_restart_loses_and_duplicates_nothing() {
    let first = real_server("127.0.0.1:0").await;
    let addr = first.addr();
    let base = first.url("");
    let start = publish(&base, "restart", None, "before").await;
    let mut watcher = Watcher::spawn(&[
        "watch",
        &format!("{base}/sse"),
        "--json",
        "--topic",
        "restart",
        "--last-event-id",
        &start,
        "--retry",
        "50ms",
        "--count",
        "5",
    ]);
    let one = publish(&base, "restart", None, "one").await;
    let two = publish(&base, "restart", None, "two").await;
    let mut seen = vec![watcher.next_json().await, watcher.next_json().await];

    // The server goes away: the stream ends, reconnects are refused...
    first.shutdown().await.expect("server stops");
    // ...and comes back on the same port, without the old run's history.
    let second = real_server(&addr.to_string()).await;
    let three = publish(&base, "restart", None, "three").await;
    let four = publish(&base, "restart", None, "four").await;
    for _ in 0..3 {
        seen.push(watcher.next_json().await);
    }
    let (ok, rest) = watcher.finish().await;
    assert!(ok, "--count 5 exits 0");
    assert!(rest.is_empty(), "nothing beyond --count: {rest:?}");

    let got: Vec<_> = seen.iter().map(event).collect();
    assert_eq!(got[0], ("message", "one", one.as_str()));
    assert_eq!(got[1], ("message", "two", two.as_str()));
    // The new run does not know the old id, so it says so before replaying
    // what it has (the contract's too-old notice), rather than leaving a
    // silent hole.
    assert_eq!(got[2].0, "too-old", "{got:?}");
    let notice: Value = serde_json::from_str(got[2].1).expect("notice data is JSON");
    assert_eq!(notice["lastEventId"], Value::String(two.clone()));
    assert_eq!(got[3], ("message", "three", three.as_str()));
    assert_eq!(got[4], ("message", "four", four.as_str()));
    second.shutdown().await.expect("server stops");
}
