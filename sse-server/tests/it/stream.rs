//! `GET /sse`: headers, the opening `retry:`, heartbeats, ids, topics, clock.

use std::time::Duration;

use crate::support::{publish, EventReader, TestServer};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn stream_has_the_contract_headers_and_opens_with_retry() {
    let server = TestServer::start(&["--retry", "1500ms"]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    let headers = reader.response().headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let first = reader.raw_chunk().await.unwrap();
    assert_eq!(&first[..], b"retry: 1500\n");
    server.stop().await;
}

#[tokio::test]
async fn every_event_carries_an_id_and_its_type() {
    let server = TestServer::start(&[]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    let id1 = publish(&server.url(""), "default", "message", "one").await;
    let id2 = publish(&server.url(""), "default", "greeting", "two").await;
    let first = reader.expect(WAIT).await;
    let second = reader.expect(WAIT).await;
    assert_eq!(
        (first.id.as_str(), first.event.as_str(), first.data.as_str()),
        (id1.as_str(), "message", "one")
    );
    assert_eq!(
        (
            second.id.as_str(),
            second.event.as_str(),
            second.data.as_str()
        ),
        (id2.as_str(), "greeting", "two")
    );
    assert_ne!(id1, id2);
    server.stop().await;
}

#[tokio::test]
async fn heartbeat_comments_keep_an_idle_stream_alive() {
    let server = TestServer::start(&["--heartbeat", "200ms"]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    assert_eq!(&reader.raw_chunk().await.unwrap()[..], b"retry: 3000\n");
    let beat = tokio::time::timeout(WAIT, reader.raw_chunk())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&beat[..], b": keep-alive\n");
    server.stop().await;
}

#[tokio::test]
async fn the_clock_publishes_ticks_on_the_default_topic() {
    let server = TestServer::start(&["--tick", "100ms"]).await;
    let mut default = EventReader::open(&server.url("/sse"), None).await;
    let mut other = EventReader::open(&server.url("/sse?topic=other"), None).await;
    let tick = default.expect(WAIT).await;
    assert_eq!(tick.event, "tick");
    assert!(tick.data.starts_with("the time is "), "{tick:?}");
    assert!(!tick.id.is_empty());
    // Another topic does not get the clock.
    publish(&server.url(""), "other", "message", "only this").await;
    assert_eq!(other.expect(WAIT).await.data, "only this");
    server.stop().await;
}

#[tokio::test]
async fn subscribers_get_exactly_their_topics() {
    let server = TestServer::start(&[]).await;
    let base = server.url("");
    let mut both = EventReader::open(&server.url("/sse?topic=a&topic=b%20c"), None).await;
    let mut only_a = EventReader::open(&server.url("/sse?topic=a"), None).await;
    publish(&base, "x", "message", "not for anyone here").await;
    publish(&base, "b c", "message", "for both").await;
    publish(&base, "a", "message", "for a").await;
    assert_eq!(both.expect(WAIT).await.data, "for both");
    assert_eq!(both.expect(WAIT).await.data, "for a");
    assert_eq!(only_a.expect(WAIT).await.data, "for a");
    server.stop().await;
}

#[tokio::test]
async fn bad_topics_in_the_query_are_refused_with_json() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let long = "t".repeat(257);
    for query in [
        "topic=",
        "topic=a%0Ab",
        "topic=a%00",
        &format!("topic={long}"),
    ] {
        let response = client
            .get(server.url(&format!("/sse?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("topic"), "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_page_is_served_at_the_root() {
    let server = TestServer::start(&[]).await;
    let response = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let body = response.text().await.unwrap();
    assert!(
        body.contains(r#"<script type="module" src="app.js">"#),
        "{body}"
    );
    // The scripts it loads are served too, and they are what connects.
    let app = reqwest::get(server.url("/app.js")).await.unwrap();
    assert_eq!(app.status(), 200);
    assert!(app.text().await.unwrap().contains("./js/streams.js"));
    let streams = reqwest::get(server.url("/js/streams.js")).await.unwrap();
    assert_eq!(streams.status(), 200);
    assert!(streams.text().await.unwrap().contains("new EventSource("));
    let missing = reqwest::get(server.url("/no-such-file")).await.unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}
