//! Running the server: health, metrics, limits, signals, configuration.

use std::time::Duration;

use crate::support::{publish, BinaryServer, EventReader, TestServer};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn healthz_and_metrics() {
    let server = TestServer::start(&[]).await;
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    publish(&server.url(""), "default", "message", "counted").await;
    reader.expect(WAIT).await;
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sse_clients 1",
        "sse_events_published_total 1",
        "sse_events_delivered_total 1",
        "sse_clients_dropped_slow_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("sse_bytes_sent_total "));
    server.stop().await;
}

#[tokio::test]
async fn max_clients_refuses_the_next_with_503_and_retry_after() {
    let server = TestServer::start(&["--max-clients", "2", "--retry", "4s"]).await;
    let first = EventReader::open(&server.url("/sse"), None).await;
    let _second = EventReader::open(&server.url("/sse"), None).await;
    let refused = reqwest::get(server.url("/sse")).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "4");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("too many"));
    // A slot frees when a subscriber leaves.
    drop(first);
    let mut admitted = false;
    for _ in 0..50 {
        if reqwest::get(server.url("/sse")).await.unwrap().status() == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_returns() {
    let server = TestServer::start(&[]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    assert!(reader.raw_chunk().await.is_some());
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("stops within the grace period");
    assert!(reader.next().await.is_none(), "the stream ended");
}

async fn stops_on_signal(signal: &str) {
    let server = BinaryServer::start("127.0.0.1:0", &["--tick", "100ms"]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    reader.expect(WAIT).await;
    let pid = server.pid().to_string();
    let mut child = server.child;
    let started = std::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within seconds")
        .unwrap();
    assert!(status.success(), "{status}");
    // The open stream was ended, not cut.
    while let Some(event) = tokio::time::timeout(WAIT, reader.next()).await.unwrap() {
        assert_eq!(event.event, "tick");
    }
    eprintln!("{signal}: stopped in {:?}", started.elapsed());
}

#[tokio::test]
async fn sigterm_stops_the_binary_gracefully() {
    stops_on_signal("-TERM").await;
}

#[tokio::test]
async fn sigint_stops_the_binary_gracefully() {
    stops_on_signal("-INT").await;
}

#[tokio::test]
async fn flags_come_from_the_environment_too() {
    let output = crate::support::server_command()
        .arg("--help")
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--addr",
        "--tick",
        "--history",
        "--heartbeat",
        "--retry",
        "--publish-token",
        "--max-clients",
        "--broker",
        "--static-dir",
        "SSE_ADDR",
        "SSE_PUBLISH_TOKEN",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
    // SSE_RETRY and SSE_TICK from the environment reach the stream.
    let server = BinaryServer::start_with_env(
        "127.0.0.1:0",
        &[],
        &[("SSE_RETRY", "1234ms"), ("SSE_TICK", "0")],
    )
    .await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    assert_eq!(&reader.raw_chunk().await.unwrap()[..], b"retry: 1234\n");
    server.terminate().await;
    // A bad value is a clear error naming the variable's flag.
    let output = crate::support::server_command()
        .env("SSE_TICK", "soon")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--tick"), "{stderr}");
}
