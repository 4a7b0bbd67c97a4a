//! Resuming with `Last-Event-ID`: replay in order, no gap or duplicate at
//! the seam with live events, the too-old notice, ids across restarts.

use std::time::Duration;

use crate::support::{metric, publish, BinaryServer, EventReader, TestServer};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn header_and_query_replay_every_newer_event_on_the_topics() {
    let server = TestServer::start(&[]).await;
    let base = server.url("");
    let mut ids = Vec::new();
    for i in 0..6 {
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(publish(&base, topic, "message", &format!("e{i}")).await);
    }
    // Header: after e1, topic even → e2, e4.
    let mut reader = EventReader::open(&server.url("/sse?topic=even"), Some(&ids[1])).await;
    assert_eq!(reader.expect(WAIT).await.data, "e2");
    assert_eq!(reader.expect(WAIT).await.data, "e4");
    // Then live.
    publish(&base, "even", "message", "live").await;
    assert_eq!(reader.expect(WAIT).await.data, "live");
    // Query parameter, for clients that cannot set headers; both topics.
    let url = server.url(&format!("/sse?topic=even&topic=odd&lastEventId={}", ids[2]));
    let mut reader = EventReader::open(&url, None).await;
    for expected in ["e3", "e4", "e5", "live"] {
        assert_eq!(reader.expect(WAIT).await.data, expected);
    }
    // The header wins over the query.
    let url = server.url(&format!("/sse?topic=odd&lastEventId={}", ids[0]));
    let mut reader = EventReader::open(&url, Some(&ids[4])).await;
    assert_eq!(reader.expect(WAIT).await.data, "e5");
    // The newest id: nothing to replay, then live.
    let newest = publish(&base, "odd", "message", "newest").await;
    let mut reader = EventReader::open(&server.url("/sse?topic=odd"), Some(&newest)).await;
    publish(&base, "odd", "message", "after newest").await;
    assert_eq!(reader.expect(WAIT).await.data, "after newest");
    server.stop().await;
}

#[tokio::test]
async fn no_gap_and_no_duplicate_where_replay_meets_live() {
    let server = TestServer::start(&["--queue", "5000"]).await;
    let base = server.url("");
    let first = publish(&base, "seam", "message", "0").await;
    // Publish continuously while clients resume from the first event.
    let publisher = tokio::spawn({
        let base = base.clone();
        async move {
            for i in 1..=400 {
                publish(&base, "seam", "message", &i.to_string()).await;
            }
        }
    });
    let mut readers = Vec::new();
    for _ in 0..8 {
        readers.push(EventReader::open(&server.url("/sse?topic=seam"), Some(&first)).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publisher.await.unwrap();
    for mut reader in readers {
        for i in 1..=400 {
            assert_eq!(reader.expect(WAIT).await.data, i.to_string());
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn an_id_older_than_history_is_announced_before_the_replay() {
    let server = TestServer::start(&["--history", "3"]).await;
    let base = server.url("");
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(publish(&base, "default", "message", &format!("e{i}")).await);
    }
    let mut reader = EventReader::open(&server.url("/sse"), Some(&ids[0])).await;
    let notice = reader.expect(WAIT).await;
    assert_eq!(notice.event, "too-old");
    let detail: serde_json::Value = serde_json::from_str(&notice.data).unwrap();
    assert_eq!(detail["lastEventId"], ids[0]);
    assert_eq!(detail["oldestId"], ids[3]);
    for expected in ["e3", "e4", "e5"] {
        assert_eq!(reader.expect(WAIT).await.data, expected);
    }
    // The notice's id is where its replay starts: resuming from it replays
    // the same events without a second notice.
    let mut again = EventReader::open(&server.url("/sse"), Some(&notice.id)).await;
    assert_eq!(again.expect(WAIT).await.data, "e3");
    // The id just before the oldest retained event lost nothing: no notice.
    let mut exact = EventReader::open(&server.url("/sse"), Some(&ids[2])).await;
    assert_eq!(exact.expect(WAIT).await.data, "e3");
    server.stop().await;
}

#[tokio::test]
async fn ids_the_server_never_gave_are_treated_as_too_old() {
    let server = TestServer::start(&[]).await;
    let base = server.url("");
    publish(&base, "default", "message", "a").await;
    publish(&base, "default", "message", "b").await;
    for unknown in ["garbage", "99999999999999-1", "1-1", "%0A"] {
        let url = server.url(&format!("/sse?lastEventId={unknown}"));
        let mut reader = EventReader::open(&url, None).await;
        let notice = reader.expect(WAIT).await;
        assert_eq!(notice.event, "too-old", "{unknown:?}");
        assert_eq!(reader.expect(WAIT).await.data, "a");
        assert_eq!(reader.expect(WAIT).await.data, "b");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_resuming_after_a_restart_gets_what_was_published_since() {
    let server = BinaryServer::start("127.0.0.1:0", &["--tick", "0"]).await;
    let addr = server.addr.to_string();
    let base = server.url("");
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    publish(&base, "default", "message", "before").await;
    let seen = reader.expect(WAIT).await;
    assert_eq!(seen.data, "before");
    drop(reader);
    let status = server.terminate().await;
    assert!(status.success());

    let server = BinaryServer::start(&addr, &["--tick", "0"]).await;
    let base = server.url("");
    let new_ids = [
        publish(&base, "default", "message", "after 1").await,
        publish(&base, "default", "message", "after 2").await,
    ];
    assert!(
        !new_ids.contains(&seen.id),
        "ids must not repeat across runs"
    );
    let mut reader = EventReader::open(&server.url("/sse"), Some(&seen.id)).await;
    assert_eq!(reader.expect(WAIT).await.event, "too-old");
    assert_eq!(reader.expect(WAIT).await.data, "after 1");
    assert_eq!(reader.expect(WAIT).await.data, "after 2");
    server.terminate().await;
}

#[tokio::test]
async fn history_is_bounded_by_encoded_bytes_as_well_as_events() {
    let server = TestServer::start(&["--history-bytes", "4096"]).await;
    let base = server.url("");
    let kilobyte = "x".repeat(1000);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(publish(&base, "default", "message", &format!("{i}{kilobyte}")).await);
    }
    // About 1,030 encoded bytes each: three fit in 4,096.
    assert_eq!(metric(&base, "sse_history_events").await, 3);
    let bytes = metric(&base, "sse_history_bytes").await;
    assert!((3_000..=4_096).contains(&bytes), "{bytes}");
    let mut reader = EventReader::open(&server.url("/sse"), Some(&ids[0])).await;
    let notice = reader.expect(WAIT).await;
    assert_eq!(notice.event, "too-old");
    let detail: serde_json::Value = serde_json::from_str(&notice.data).unwrap();
    assert_eq!(detail["oldestId"], ids[7]);
    for id in &ids[7..] {
        assert_eq!(&reader.expect(WAIT).await.id, id);
    }
    // The encoded size counts: 2,000 newlines are 2,001 `data:` lines.
    publish(&base, "default", "message", &"\n".repeat(2_000)).await;
    assert_eq!(metric(&base, "sse_history_events").await, 1);
    assert!(metric(&base, "sse_history_bytes").await > 12_000);
    server.stop().await;
}

#[tokio::test]
async fn last_n_replays_the_newest_events_of_the_topics_then_live() {
    let server = TestServer::start(&[]).await;
    let base = server.url("");
    let mut ids = Vec::new();
    for i in 0..6 {
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(publish(&base, topic, "message", &format!("e{i}")).await);
    }
    let mut reader = EventReader::open(&server.url("/sse?topic=even&last=2"), None).await;
    assert_eq!(reader.expect(WAIT).await.data, "e2");
    assert_eq!(reader.expect(WAIT).await.data, "e4");
    publish(&base, "even", "message", "live").await;
    assert_eq!(reader.expect(WAIT).await.data, "live");
    // More than retained: everything of the topic, no notice.
    let mut all = EventReader::open(&server.url("/sse?topic=odd&last=100"), None).await;
    for expected in ["e1", "e3", "e5"] {
        assert_eq!(all.expect(WAIT).await.data, expected);
    }
    // Last-Event-ID wins.
    let mut resumed = EventReader::open(&server.url("/sse?topic=odd&last=3"), Some(&ids[3])).await;
    assert_eq!(resumed.expect(WAIT).await.data, "e5");
    let refused = reqwest::get(server.url("/sse?last=many")).await.unwrap();
    assert_eq!(refused.status(), 400);
    server.stop().await;
}
