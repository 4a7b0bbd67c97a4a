//! Redis persistence gives the Redis broker the guarantee `--data-dir
//! --fsync always` gives the embedded one: with `appendonly yes` and
//! `appendfsync always`, Redis answers `XADD` only after the entry is in
//! its fsynced append-only file, and the server answers `202` only after
//! `XADD` answered. So `kill -9` of Redis loses no acknowledged event.

use std::{
    collections::HashSet,
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::process::{Child, Command};

use crate::{
    redis::{free_port, program, WAIT},
    support::{BinaryServer, EventReader},
};

/// Publishers publishing at once, as in the embedded broker's crash test.
const PUBLISHERS: usize = 8;
/// Acknowledged events before Redis is killed.
const BEFORE_KILL: usize = 400;

/// `redis-server` with the persistence the README recommends, in `dir`.
fn start_redis(dir: &Path, port: u16) -> Child {
    Command::new(program(
        "redis-server",
        "/usr/bin/redis-server",
        "redis-server",
    ))
    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
    .arg("--dir")
    .arg(dir)
    .args(["--appendonly", "yes", "--appendfsync", "always"])
    .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
    .args(["--logfile", "redis.log"])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .kill_on_drop(true)
    .spawn()
    .expect("start redis-server")
}

async fn wait_for_health(server: &BinaryServer, status: u16) {
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(response) = reqwest::get(server.url("/healthz")).await {
                if response.status().as_u16() == status {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "/healthz never answered {status}");
}

/// Publishes `p/n` for n = 0, 1, ... until `stop`; returns what got 202.
async fn publisher(base: String, p: usize, stop: Arc<AtomicBool>) -> Vec<(String, String)> {
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let data = format!("{p}/{n}");
        n += 1;
        let response = client
            .post(format!("{base}/publish"))
            .json(&serde_json::json!({"topic": "crash", "data": data}))
            .send()
            .await;
        let Ok(response) = response else { continue };
        if response.status() == 202 {
            let body: serde_json::Value = response.json().await.expect("a JSON body");
            acknowledged.push((body["id"].as_str().expect("an id").to_owned(), data));
        } else {
            // Refused while Redis is down; nothing was acknowledged.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_appendfsync_always_killed_during_publishing_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = start_redis(dir.path(), port);
    let url = format!("redis://127.0.0.1:{port}");
    // The server waits for Redis at start, so this also waits until it serves.
    let server = BinaryServer::start("127.0.0.1:0", &["--broker", &url, "--tick", "0"]).await;
    wait_for_health(&server, 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publisher(server.url(""), p, Arc::clone(&stop))))
        .collect();
    // Kill Redis once enough events are in.
    tokio::time::timeout(WAIT, async {
        let client = ::redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        loop {
            let len: usize = ::redis::cmd("XLEN")
                .arg("sse:events")
                .query_async(&mut connection)
                .await
                .unwrap_or(0);
            if len >= BEFORE_KILL {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("publishing reached Redis");
    let pid = redis.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    redis.wait().await.expect("wait for redis-server");
    wait_for_health(&server, 503).await;
    stop.store(true, Ordering::Release);
    let mut acknowledged = Vec::new();
    for publisher in publishers {
        acknowledged.extend(publisher.await.expect("publisher"));
    }
    assert!(
        acknowledged.len() >= BEFORE_KILL / 2,
        "{}",
        acknowledged.len()
    );

    let _redis = start_redis(dir.path(), port);
    wait_for_health(&server, 200).await;
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let stored: ::redis::streams::StreamRangeReply = ::redis::cmd("XRANGE")
        .arg("sse:events")
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("XRANGE");
    let stored: Vec<(String, String)> = stored
        .ids
        .into_iter()
        .map(|entry| (entry.id.clone(), entry.get("data").expect("a data field")))
        .collect();
    let stored_set: HashSet<&(String, String)> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "an entry is stored twice");
    for event in &acknowledged {
        assert!(
            stored_set.contains(event),
            "acknowledged {event:?} is not in Redis after kill -9 and restart"
        );
    }
    // Each publisher's events are in Redis in the order it published them.
    let mut next_n = [0usize; PUBLISHERS];
    for (_, data) in &stored {
        let (p, n) = data.split_once('/').expect("p/n");
        let (p, n): (usize, usize) = (p.parse().unwrap(), n.parse().unwrap());
        assert!(n >= next_n[p], "publisher {p}'s events out of order");
        next_n[p] = n + 1;
    }
    // And the server replays them from the first acknowledged id.
    acknowledged.sort_by_key(|(id, _)| id.parse::<sse_server::wire::EventId>().unwrap());
    let stored_after_first: Vec<&String> = stored
        .iter()
        .skip_while(|(id, _)| *id != acknowledged[0].0)
        .skip(1)
        .map(|(_, data)| data)
        .collect();
    let mut replay = EventReader::open(
        &server.url("/sse?topic=crash"),
        Some(acknowledged[0].0.as_str()),
    )
    .await;
    for expected in stored_after_first {
        assert_eq!(&replay.expect(WAIT).await.data, expected);
    }
}
