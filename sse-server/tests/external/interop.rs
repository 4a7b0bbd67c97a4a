//! Popular clients against the real server: Python's httpx-sse and npm's
//! `eventsource`, installed by `cargo xtask test` under `target/interop/`;
//! and schemathesis, checking the server against its OpenAPI description.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

use crate::{
    redis::WAIT,
    support::{publish, BinaryServer},
};

/// Where `cargo xtask test` installs the clients (`xtask/src/deps.rs`).
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop")
}

fn installed(path: &Path, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed at {}: run `cargo xtask test`, which installs it",
        path.display()
    );
    path.to_owned()
}

/// The events both clients are given, with heartbeats in between.
const EVENTS: [(&str, &str); 3] = [
    ("message", "plain"),
    ("headline", "two\nlines"),
    ("message", "unicode: héllo 日本語"),
];

/// Starts a client, waits for its `{"open":true}` line, lets a few
/// heartbeats pass, publishes [`EVENTS`], and returns every event the
/// client printed.
async fn events_seen_by(mut client: Command, server: &BinaryServer) -> Vec<serde_json::Value> {
    let mut child: Child = client
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client");
    let mut lines: Lines<BufReader<ChildStdout>> =
        BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the client opened the stream in time")
        .unwrap()
        .expect("the client printed nothing");
    let opened: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(opened["open"], true, "{first}");
    // Several heartbeats (every 100 ms) reach the client before any event.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let base = server.url("");
    for (event, data) in EVENTS {
        publish(&base, "interop", event, data).await;
    }
    let mut seen = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the client printed every event in time")
    {
        seen.push(serde_json::from_str(&line).expect("a JSON line"));
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "client exited with {status}");
    seen
}

fn assert_exactly_the_events(seen: &[serde_json::Value]) {
    let got: Vec<(&str, &str)> = seen
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["data"].as_str().unwrap()))
        .collect();
    assert_eq!(got, EVENTS, "{seen:?}");
    for event in seen {
        assert!(!event["id"].as_str().unwrap().is_empty(), "{event}");
    }
}

#[tokio::test]
async fn httpx_sse_sees_exactly_the_published_events() {
    let python = interop_dir().join("python");
    installed(&python.join("httpx_sse"), "httpx-sse");
    let server = BinaryServer::start("127.0.0.1:0", &["--tick", "0", "--heartbeat", "100ms"]).await;
    let mut client = Command::new("python3");
    client
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/external/interop/httpx_sse_client.py"),
        )
        .arg(server.url("/sse?topic=interop"))
        .arg(EVENTS.len().to_string())
        .env("PYTHONPATH", &python);
    let seen = events_seen_by(client, &server).await;
    // httpx-sse reports a block without data (a `retry:` or a heartbeat
    // followed by a blank line) as an empty event: there must be none.
    assert_exactly_the_events(&seen);
    server.terminate().await;
}

#[tokio::test]
async fn npm_eventsource_sees_exactly_the_published_events() {
    let node = interop_dir().join("node");
    installed(&node.join("node_modules/eventsource"), "npm eventsource");
    // ES modules resolve packages from the script's own folder.
    let script = node.join("eventsource_client.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/external/interop/eventsource_client.mjs"),
        &script,
    )
    .unwrap();
    let server = BinaryServer::start("127.0.0.1:0", &["--tick", "0", "--heartbeat", "100ms"]).await;
    let mut client = Command::new("node");
    client
        .arg(&script)
        .arg(server.url("/sse?topic=interop"))
        .arg(EVENTS.len().to_string())
        .arg("headline");
    let seen = events_seen_by(client, &server).await;
    assert_exactly_the_events(&seen);
    server.terminate().await;
}

#[tokio::test]
async fn schemathesis_finds_no_5xx_and_no_response_off_the_description() {
    let python = interop_dir().join("python");
    installed(&python.join("schemathesis"), "schemathesis");
    let server = BinaryServer::start("127.0.0.1:0", &["--tick", "0"]).await;
    let output = Command::new("python3")
        .args(["-m", "schemathesis.cli", "run"])
        .arg(server.url("/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
            // The stream never ends, so a client that reads whole
            // responses cannot test it; tests/it covers /sse.
            "--exclude-path",
            "/sse",
            "--max-examples",
            "50",
            "--seed",
            "1",
        ])
        .env("PYTHONPATH", &python)
        // Its cache (`.schemathesis/`) goes under target/, not the tree.
        .current_dir(interop_dir())
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis failed:\n{report}");
    server.terminate().await;
}
