//! Slow subscribers: a client that stops reading is disconnected when its
//! queue fills, the others keep receiving, and memory stays flat.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{metric, rss_kib, wait_for_metric, BinaryServer, EventReader};

/// Big events fill the stalled client's socket buffers quickly.
const EVENT_SIZE: usize = 16 * 1024;
const EVENTS: usize = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_dropped_without_hurting_the_others() {
    let server = BinaryServer::start(
        "127.0.0.1:0",
        &["--tick", "0", "--queue", "100", "--history", "200"],
    )
    .await;
    let base = server.url("");
    // A client that sends its request and then never reads.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(
            b"GET /sse?topic=big HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let mut healthy = EventReader::open(&server.url("/sse?topic=big"), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = rss_kib(server.pid());

    let reader = tokio::spawn(async move {
        for i in 0..EVENTS {
            let event = healthy.expect(Duration::from_secs(30)).await;
            assert_eq!(event.data.len(), EVENT_SIZE);
            assert!(
                event.data.starts_with(&format!("{i:06}")),
                "event {i} in order"
            );
        }
    });
    let client = reqwest::Client::new();
    for i in 0..EVENTS {
        let mut data = format!("{i:06}");
        data.push_str(&"x".repeat(EVENT_SIZE - data.len()));
        let response = client
            .post(format!("{base}/publish?topic=big"))
            .header("content-type", "text/plain")
            .body(data)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        // Let the healthy reader keep pace, as a real one would.
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    reader.await.unwrap();
    wait_for_metric(&base, "sse_clients_dropped_slow_total", 1).await;
    // The healthy reader is gone, the stalled one dropped.
    wait_for_metric(&base, "sse_clients", 0).await;

    // 1,500 x 16 KiB = 24 MiB went out; the server kept none of it for the
    // stalled client beyond its history of 200 events (3 MiB).
    let grown_kib = rss_kib(server.pid()).saturating_sub(rss_before);
    assert!(grown_kib < 12 * 1024, "server grew by {grown_kib} KiB");

    // The stalled client's connection was closed: it reads to the end.
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stalled connection was not closed");
    server.terminate().await;
}

#[tokio::test]
async fn a_quiet_topic_subscriber_is_not_dropped_when_other_topics_are_busy() {
    let server = crate::support::TestServer::start(&["--history", "10", "--queue", "5"]).await;
    let base = server.url("");
    let mut quiet = EventReader::open(&server.url("/sse?topic=quiet"), None).await;
    for i in 0..100 {
        crate::support::publish(&base, "busy", "message", &i.to_string()).await;
    }
    crate::support::publish(&base, "quiet", "message", "still here").await;
    assert_eq!(
        quiet.expect(Duration::from_secs(10)).await.data,
        "still here"
    );
    assert_eq!(metric(&base, "sse_clients_dropped_slow_total").await, 0);
    server.stop().await;
}
