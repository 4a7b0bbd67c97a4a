//! Nothing lost under concurrency.

use std::{collections::HashSet, time::Duration};

use futures::future::join_all;

use crate::support::{EventReader, TestServer};

const PUBLISHERS: usize = 50;
const SUBSCRIBERS: usize = 20;
const EVENTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_event_once_in_broker_order() {
    // A queue as long as the run: this test is about loss, not slowness.
    let server = TestServer::start(&["--queue", "20000", "--history", "20000"]).await;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        readers.push(EventReader::open(&server.url("/sse?topic=load"), None).await);
    }
    let consumers: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(EVENTS);
                while got.len() < EVENTS {
                    let event = reader.expect(Duration::from_secs(60)).await;
                    got.push((event.id, event.data));
                }
                got
            })
        })
        .collect();
    let client = reqwest::Client::new();
    let publishers = (0..PUBLISHERS).map(|p| {
        let client = client.clone();
        let url = server.url("/publish?topic=load");
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..EVENTS / PUBLISHERS {
                let data = format!("{p}:{i}");
                let response = client
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body(data.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                let body: serde_json::Value = response.json().await.unwrap();
                acked.push((body["id"].as_str().unwrap().to_owned(), data));
            }
            acked
        })
    });
    let acked: Vec<(String, String)> = join_all(publishers)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    assert_eq!(acked.len(), EVENTS);
    let acked_set: HashSet<_> = acked.iter().cloned().collect();
    // Within one publisher, acknowledged order is delivery order.
    for got in join_all(consumers).await {
        let got = got.unwrap();
        assert_eq!(got.len(), EVENTS);
        let unique: HashSet<_> = got.iter().cloned().collect();
        assert_eq!(unique, acked_set, "every acknowledged event exactly once");
        let ids: Vec<sse_server::EventId> = got.iter().map(|(id, _)| id.parse().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "in the order the broker assigned"
        );
        // Each publisher waited for its 202 before the next publish, so its
        // events arrive in the order it sent them: 0, 1, 2, ...
        let mut next = [0usize; PUBLISHERS];
        for (_, data) in &got {
            let (p, i) = data.split_once(':').expect("p:i");
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[p], "publisher {p}'s events out of order");
            next[p] += 1;
        }
    }
    server.stop().await;
}
