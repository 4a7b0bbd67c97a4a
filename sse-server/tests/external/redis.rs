//! Several server instances on one real Redis (`redis-server`, started by
//! the tests on a free loopback port in a temporary directory).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use futures::future::join_all;
use sse_cli::parse::Event;
use sse_server::EventId;
use tokio::process::{Child, Command};

use crate::support::{publish, BinaryServer, EventReader};

/// Generous: two shared cores, debug builds, several processes.
pub const WAIT: Duration = Duration::from_secs(30);

/// Where Debian installs Redis.
const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// Finds `name` on `PATH` or at `fallback`; fails the test with what to
/// install otherwise (tests never skip silently).
pub fn program(name: &str, fallback: &str, package: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    match on_path {
        Some(found) => found,
        None if Path::new(fallback).is_file() => PathBuf::from(fallback),
        None => panic!(
            "`{name}` is not installed: install it with `apt-get install {package}` \
             (or run `cargo xtask test`, which installs it)"
        ),
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A private `redis-server`: append-only file fsynced on every write, so
/// everything acknowledged survives a stop and restart in the same folder.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis in `dir` on a free port, with `extra` configuration
    /// arguments (`--name value` pairs).
    pub async fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: dir.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        server.run().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        assert!(self.child.is_none(), "Redis is already running");
        let child = Command::new(program("redis-server", REDIS_SERVER, "redis-server"))
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(["--logfile", "redis.log"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let client = ::redis::Client::open(self.url()).expect("redis url");
        let ready = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                    let pong: Result<String, ::redis::RedisError> =
                        ::redis::cmd("PING").query_async(&mut connection).await;
                    // An answer, even "authentication required", means it serves.
                    if pong.as_ref().is_ok_and(|pong| pong == "PONG")
                        || pong.is_err_and(|err| !err.is_io_error())
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            ready.is_ok(),
            "redis-server did not answer on port {}; see {}/redis.log",
            self.port,
            self.dir.display()
        );
    }

    /// Stops Redis cleanly (SIGTERM: it flushes its append-only file).
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("Redis is running");
        let pid = child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("redis-server stops on SIGTERM")
            .expect("wait for redis-server");
    }

    /// Starts Redis again on the same port, in the same folder.
    pub async fn restart(&mut self) {
        self.run().await;
    }

    /// A command straight to Redis.
    pub async fn query<T: ::redis::FromRedisValue>(&self, command: &::redis::Cmd) -> T {
        let client = ::redis::Client::open(self.url()).expect("redis url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        command
            .query_async(&mut connection)
            .await
            .expect("redis query")
    }
}

/// `n` server binaries on the Redis at `url`, clock off, plus `args`.
pub async fn instances(n: usize, url: &str, args: &[&str]) -> Vec<BinaryServer> {
    let mut argv = vec!["--broker", url, "--tick", "0"];
    argv.extend_from_slice(args);
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(BinaryServer::start("127.0.0.1:0", &argv).await);
    }
    servers
}

/// Opens a stream on `server` for `topic`.
async fn watch(server: &BinaryServer, topic: &str, last_event_id: Option<&str>) -> EventReader {
    EventReader::open(&server.url(&format!("/sse?topic={topic}")), last_event_id).await
}

/// The next `n` events.
async fn take(reader: &mut EventReader, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(reader.expect(WAIT).await);
    }
    events
}

fn datas(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// Publishes a marker and checks it is the very next event on every
/// reader: nothing else (no duplicate, no stray event) came before it.
pub async fn expect_nothing_more(readers: &mut [EventReader], server: &BinaryServer, topic: &str) {
    let marker = format!("marker-{}", free_port());
    publish(&server.url(""), topic, "message", &marker).await;
    for (n, reader) in readers.iter_mut().enumerate() {
        let next = reader.expect(WAIT).await;
        assert_eq!(
            next.data, marker,
            "reader {n}: an unexpected event came first: {next:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_one_instance_reaches_every_instance_once() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let servers = instances(3, &redis.url(), &[]).await;
    let mut readers = Vec::new();
    for server in &servers {
        readers.push(watch(server, "t", None).await);
    }
    let mut published = Vec::new();
    for i in 0..9 {
        let server = &servers[i % 3];
        let id = publish(&server.url(""), "t", "message", &format!("e{i}")).await;
        // Another topic, which nobody here subscribed to.
        publish(&server.url(""), "other", "message", "not for t").await;
        published.push((id, format!("e{i}")));
    }
    for (n, reader) in readers.iter_mut().enumerate() {
        let got = take(reader, published.len()).await;
        let got: Vec<(String, String)> = got.into_iter().map(|e| (e.id, e.data)).collect();
        assert_eq!(got, published, "subscriber on instance {n}");
    }
    expect_nothing_more(&mut readers, &servers[1], "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_read_on_one_instance_resumes_on_another_with_exactly_the_missed_events() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let a = instances(1, &redis.url(), &[]).await.remove(0);
    let base_a = a.url("");
    let mut on_a = watch(&a, "t", None).await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        publish(&base_a, "other", "message", "noise").await;
        ids.push(publish(&base_a, "t", "message", &format!("e{i}")).await);
    }
    let seen = take(&mut on_a, 3).await;
    assert_eq!(datas(&seen), ["e1", "e2", "e3"]);
    assert_eq!(seen[2].id, ids[2]);
    drop(on_a);
    // B starts after e1..e3: its ring never held them.
    let b = instances(1, &redis.url(), &[]).await.remove(0);
    for i in 4..=6 {
        publish(&base_a, "other", "message", "noise").await;
        publish(&base_a, "t", "message", &format!("e{i}")).await;
    }
    // C starts after everything: its ring is empty.
    let c = instances(1, &redis.url(), &[]).await.remove(0);
    let cases = [
        (&b, ids[2].as_str(), "the id just before B's ring"),
        (&b, ids[0].as_str(), "an id older than B's ring"),
        (
            &c,
            ids[0].as_str(),
            "an id on an instance that has seen nothing",
        ),
    ];
    let mut readers = Vec::new();
    for (server, id, case) in cases {
        let from = ids.iter().position(|known| known == id).unwrap() + 2;
        let expected: Vec<String> = (from..=6).map(|i| format!("e{i}")).collect();
        let mut reader = watch(server, "t", Some(id)).await;
        let got = take(&mut reader, expected.len()).await;
        assert_eq!(datas(&got), expected, "{case}");
        assert!(got.iter().all(|e| e.event == "message"), "{case}: {got:?}");
        readers.push(reader);
    }
    expect_nothing_more(&mut readers, &a, "t").await;
    // An id inside B's ring.
    let mut on_b = watch(&b, "t", None).await;
    let e7 = publish(&base_a, "t", "message", "e7").await;
    assert_eq!(on_b.expect(WAIT).await.id, e7);
    publish(&base_a, "t", "message", "e8").await;
    let mut resumed = watch(&b, "t", Some(&e7)).await;
    assert_eq!(resumed.expect(WAIT).await.data, "e8");
    expect_nothing_more(std::slice::from_mut(&mut resumed), &c, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_the_stream_no_longer_holds_get_the_notice_then_everything_retained() {
    let dir = tempfile::tempdir().unwrap();
    // Small stream nodes, so that `MAXLEN ~ 5` really trims.
    let redis = RedisServer::start(dir.path(), &["--stream-node-max-entries", "2"]).await;
    let server = instances(1, &redis.url(), &["--history", "5"])
        .await
        .remove(0);
    let base = server.url("");
    let mut ids = Vec::new();
    for i in 1..=30 {
        ids.push(publish(&base, "t", "message", &format!("e{i}")).await);
    }
    for requested in [ids[0].as_str(), "99999999999999-0", "not-an-id"] {
        let retained = stream_entries(&redis).await;
        assert!(
            retained.len() >= 5 && retained.len() < 30,
            "the stream was trimmed to about 5 entries: {}",
            retained.len()
        );
        let mut reader = watch(&server, "t", Some(requested)).await;
        let notice = reader.expect(WAIT).await;
        assert_eq!(notice.event, "too-old", "{requested}");
        let body: serde_json::Value = serde_json::from_str(&notice.data).unwrap();
        assert_eq!(body["lastEventId"], requested);
        assert_eq!(body["oldestId"], retained[0].0.as_str());
        let got = take(&mut reader, retained.len()).await;
        let got: Vec<(String, String)> = got.into_iter().map(|e| (e.id, e.data)).collect();
        assert_eq!(got, retained, "{requested}");
        // Resuming from the notice's id replays the same, without a notice.
        let mut again = watch(&server, "t", Some(&notice.id)).await;
        let got = take(&mut again, retained.len()).await;
        let got: Vec<(String, String)> = got.into_iter().map(|e| (e.id, e.data)).collect();
        assert_eq!(got, retained, "resuming from the notice of {requested}");
        expect_nothing_more(&mut [reader, again], &server, "t").await;
    }
    // The id of the newest trimmed entry: the replay starts at the oldest
    // retained one (the stream cannot tell this id from older trimmed ones,
    // so a notice may come first).
    let retained = stream_entries(&redis).await;
    let trimmed: Vec<&String> = ids
        .iter()
        .filter(|id| id.parse::<EventId>().unwrap() < retained[0].0.parse::<EventId>().unwrap())
        .collect();
    let mut reader = watch(&server, "t", trimmed.last().map(|id| id.as_str())).await;
    let mut first = reader.expect(WAIT).await;
    if first.event == "too-old" {
        first = reader.expect(WAIT).await;
    }
    assert_eq!((first.id, first.data), retained[0].clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_across_entries_written_by_others_is_served_from_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let a = instances(1, &redis.url(), &[]).await.remove(0);
    let first = publish(&a.url(""), "t", "message", "e1").await;
    // More than a page of entries that are not events, written by hand.
    let script: String = (0..1_500)
        .map(|n| format!("XADD sse:events * written-by redis-cli n {n}\n"))
        .collect();
    let mut cli = Command::new(program("redis-cli", "/usr/bin/redis-cli", "redis-tools"))
        .args(["-p", &redis.port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run redis-cli");
    let mut stdin = cli.stdin.take().expect("piped");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, script.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    assert!(cli.wait().await.unwrap().success());
    let length: usize = redis.query(::redis::cmd("XLEN").arg("sse:events")).await;
    assert_eq!(length, 1_501);
    publish(&a.url(""), "t", "message", "e2").await;
    // B's ring starts after all of them: the replay comes from the stream,
    // across the foreign entries, without a notice (which would mean it
    // gave up on Redis) and nothing but our events.
    let b = instances(1, &redis.url(), &[]).await.remove(0);
    let mut reader = watch(&b, "t", Some(&first)).await;
    let got = reader.expect(WAIT).await;
    assert_eq!((got.event.as_str(), got.data.as_str()), ("message", "e2"));
    expect_nothing_more(std::slice::from_mut(&mut reader), &a, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_behind_our_position_resets_and_clients_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path(), &[]).await;
    let server = instances(1, &redis.url(), &[]).await.remove(0);
    let mut reader = watch(&server, "t", None).await;
    // An entry whose id is far ahead of Redis's clock: once Redis forgets
    // it, every new id sorts below what this instance has read.
    const AHEAD: &str = "99999999999999-0";
    let _: String = redis
        .query(
            ::redis::cmd("XADD")
                .arg("sse:events")
                .arg(AHEAD)
                .arg(&["topic", "t", "event", "message", "data", "ahead"][..]),
        )
        .await;
    assert_eq!(reader.expect(WAIT).await.id, AHEAD);
    // Redis comes back empty.
    redis.stop().await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|name| name != "redis.log") {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    redis.restart().await;
    // The open stream ends (cleanly) so its client resumes.
    let ended = tokio::time::timeout(WAIT, reader.next()).await;
    assert!(matches!(ended, Ok(None)), "the stream ended: {ended:?}");
    wait_for_health(&server, 200).await;
    let mut resumed = watch(&server, "t", Some(AHEAD)).await;
    let after = publish(&server.url(""), "t", "message", "after").await;
    let notice = resumed.expect(WAIT).await;
    assert_eq!(notice.event, "too-old");
    let next = resumed.expect(WAIT).await;
    assert_eq!(
        (next.id.as_str(), next.data.as_str()),
        (after.as_str(), "after")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_n_comes_from_the_stream_on_an_instance_that_started_later() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let a = instances(1, &redis.url(), &[]).await.remove(0);
    for i in 1..=5 {
        publish(&a.url(""), "t", "message", &format!("e{i}")).await;
        publish(&a.url(""), "other", "message", "noise").await;
    }
    // B's ring is empty: the newest 3 of `t` come from the stream.
    let b = instances(1, &redis.url(), &[]).await.remove(0);
    let mut reader = EventReader::open(&b.url("/sse?topic=t&last=3"), None).await;
    let got = take(&mut reader, 3).await;
    assert_eq!(datas(&got), ["e3", "e4", "e5"]);
    expect_nothing_more(std::slice::from_mut(&mut reader), &a, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_redis_may_still_store_answers_504() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let server = instances(1, &redis.url(), &[]).await.remove(0);
    // Redis holds writes for 4 s, longer than a publish waits (2 s), and
    // then runs the XADD it was sent.
    let _: String = redis
        .query(::redis::cmd("CLIENT").arg("PAUSE").arg(4_000).arg("WRITE"))
        .await;
    let response = reqwest::Client::new()
        .post(server.url("/publish?topic=t"))
        .header("content-type", "text/plain")
        .body("maybe")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("may or may not"),
        "{body}"
    );
    // It was stored after all: that is why the answer was not 503.
    let stored = tokio::time::timeout(WAIT, async {
        loop {
            if stream_entries(&redis)
                .await
                .iter()
                .any(|(_, data)| data == "maybe")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(stored.is_ok(), "the timed-out publish was stored");
}

/// Every entry of the server's stream, as (id, data).
async fn stream_entries(redis: &RedisServer) -> Vec<(String, String)> {
    redis
        .query::<::redis::streams::StreamRangeReply>(
            ::redis::cmd("XRANGE").arg("sse:events").arg("-").arg("+"),
        )
        .await
        .ids
        .into_iter()
        .map(|entry| {
            let data: String = entry.get("data").expect("a data field");
            (entry.id, data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_publishers_twenty_subscribers_ten_thousand_events_across_instances_lose_nothing() {
    const PUBLISHERS: usize = 50;
    const SUBSCRIBERS: usize = 20;
    const EVENTS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    // A queue as long as the run, so a test client that the two shared
    // cores starve for a while is not dropped as too slow.
    let servers = instances(3, &redis.url(), &["--queue", "10000"]).await;
    let mut readers = Vec::new();
    for n in 0..SUBSCRIBERS {
        readers.push(watch(&servers[n % 3], "load", None).await);
    }
    let bases: Vec<String> = servers.iter().map(|s| s.url("")).collect();
    let client = reqwest::Client::new();
    let publishers = (0..PUBLISHERS).map(|p| {
        let (client, bases) = (client.clone(), bases.clone());
        tokio::spawn(async move {
            for i in 0..EVENTS / PUBLISHERS {
                let response = client
                    .post(format!("{}/publish", bases[(p + i) % bases.len()]))
                    .json(&serde_json::json!({"topic": "load", "data": format!("{p}:{i}")}))
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(response.status(), 202);
            }
        })
    });
    let subscribers = readers.into_iter().enumerate().map(|(n, mut reader)| {
        tokio::spawn(async move {
            let mut next = vec![0usize; PUBLISHERS];
            let mut last_id = String::new();
            for _ in 0..EVENTS {
                let event = tokio::time::timeout(Duration::from_secs(120), reader.next())
                    .await
                    .unwrap_or_else(|_| panic!("subscriber {n} waited too long"))
                    .unwrap_or_else(|| panic!("subscriber {n}'s stream ended"));
                let (p, i) = event.data.split_once(':').expect("p:i");
                let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
                assert_eq!(
                    i, next[p],
                    "subscriber {n}, publisher {p}: lost, duplicated or reordered"
                );
                next[p] += 1;
                let id: EventId = event.id.parse().unwrap();
                if !last_id.is_empty() {
                    assert!(
                        id > last_id.parse().unwrap(),
                        "subscriber {n}: ids out of order"
                    );
                }
                last_id = event.id;
            }
            assert!(next.iter().all(|&n| n == EVENTS / PUBLISHERS));
            reader
        })
    });
    let (published, subscribed) = tokio::join!(join_all(publishers), join_all(subscribers));
    for result in published {
        result.expect("publisher");
    }
    let mut readers = Vec::new();
    for result in subscribed {
        readers.push(result.expect("subscriber"));
    }
    expect_nothing_more(&mut readers, &servers[2], "load").await;
}

/// `/healthz` status of `server`, or `None` when it does not answer.
async fn health(server: &BinaryServer) -> Option<u16> {
    let response = reqwest::get(server.url("/healthz")).await.ok()?;
    Some(response.status().as_u16())
}

async fn wait_for_health(server: &BinaryServer, status: u16) {
    let waited = tokio::time::timeout(WAIT, async {
        while health(server).await != Some(status) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "/healthz never answered {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_loses_nothing_acknowledged_and_subscribers_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path(), &[]).await;
    let servers = instances(2, &redis.url(), &[]).await;
    let mut readers = Vec::new();
    for server in &servers {
        readers.push(watch(server, "t", None).await);
        readers.push(watch(server, "t", None).await);
    }
    let client = reqwest::Client::new();
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let mut refused = 0;
    let attempt = |n: usize| {
        let (client, base) = (client.clone(), servers[n % 2].url("/publish"));
        async move {
            let response = client
                .post(base)
                .json(&serde_json::json!({"topic": "t", "data": format!("e{n}")}))
                .send()
                .await
                .expect("the server answers");
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            let body: serde_json::Value = response.json().await.expect("a JSON body");
            (status, retry_after, body, format!("e{n}"))
        }
    };
    let mut n = 0;
    for _ in 0..20 {
        let (status, _, body, data) = attempt(n).await;
        n += 1;
        assert_eq!(status, 202, "{body}");
        acknowledged.push((body["id"].as_str().unwrap().to_owned(), data));
    }
    redis.stop().await;
    for server in &servers {
        wait_for_health(server, 503).await;
    }
    for _ in 0..6 {
        let (status, retry_after, body, _) = attempt(n).await;
        n += 1;
        assert_eq!(status, 503, "a publish while Redis is down: {body}");
        assert!(retry_after, "503 without Retry-After");
        assert!(body["error"].is_string(), "{body}");
        refused += 1;
    }
    redis.restart().await;
    for server in &servers {
        wait_for_health(server, 200).await;
    }
    for _ in 0..20 {
        let (status, _, body, data) = attempt(n).await;
        n += 1;
        assert_eq!(status, 202, "after Redis is back: {body}");
        acknowledged.push((body["id"].as_str().unwrap().to_owned(), data));
    }
    assert_eq!(refused, 6);
    for (k, reader) in readers.iter_mut().enumerate() {
        let got = take(reader, acknowledged.len()).await;
        let got: Vec<(String, String)> = got.into_iter().map(|e| (e.id, e.data)).collect();
        assert_eq!(got, acknowledged, "subscriber {k} on the same connection");
    }
    expect_nothing_more(&mut readers, &servers[0], "t").await;
    // The log survived the restart: a new subscriber on either instance can
    // replay it from the first acknowledged id.
    let mut replay = watch(&servers[1], "t", Some(&acknowledged[0].0)).await;
    let got = take(&mut replay, acknowledged.len() - 1).await;
    let got: Vec<String> = got.into_iter().map(|e| e.data).collect();
    let expected: Vec<String> = acknowledged[1..].iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_redis_connections_drop_skips_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let servers = instances(2, &redis.url(), &[]).await;
    let mut readers = Vec::new();
    for server in &servers {
        readers.push(watch(server, "t", None).await);
    }
    let client = reqwest::Client::new();
    // Every attempt carries its own data: one that failed with 503 after
    // Redis stored it may be delivered, but nothing acknowledged may be
    // missing and nothing may arrive twice.
    let mut acknowledged = Vec::new();
    let mut failed = std::collections::HashSet::new();
    for n in 0..200 {
        if n % 20 == 10 {
            // Drops every connection of both instances (readers and
            // publishers); they reconnect by themselves.
            let killed: i64 = redis
                .query(
                    ::redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("normal")
                        .arg("SKIPME")
                        .arg("yes"),
                )
                .await;
            assert!(killed >= 4, "each instance has two connections: {killed}");
        }
        let mut attempt = 0;
        loop {
            let data = format!("e{n}-{attempt}");
            let response = client
                .post(servers[n % 2].url("/publish"))
                .json(&serde_json::json!({"topic": "t", "data": data}))
                .send()
                .await
                .expect("the server answers");
            if response.status() == 202 {
                acknowledged.push(data);
                break;
            }
            assert_eq!(response.status(), 503);
            failed.insert(data);
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (k, reader) in readers.iter_mut().enumerate() {
        let mut got = Vec::new();
        let mut ids = std::collections::HashSet::new();
        while got.len() < acknowledged.len() {
            let event = reader.expect(WAIT).await;
            assert!(
                ids.insert(event.id.clone()),
                "reader {k}: {} twice",
                event.id
            );
            if failed.contains(&event.data) {
                continue;
            }
            got.push(event.data);
        }
        assert_eq!(got, acknowledged, "reader {k}");
    }
    expect_nothing_more(&mut readers, &servers[0], "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_in_the_url_is_never_logged() {
    const PASSWORD: &str = "s3cret-never-logged";
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &["--requirepass", PASSWORD]).await;
    let authed = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    // The right password: the server works.
    let server = instances(1, &authed, &[]).await.remove(0);
    let mut reader = watch(&server, "t", None).await;
    publish(&server.url(""), "t", "message", "hello").await;
    assert_eq!(reader.expect(WAIT).await.data, "hello");
    // A wrong one: the server says so and exits, without the password.
    let wrong = format!("redis://:{PASSWORD}-wrong@127.0.0.1:{}", redis.port);
    let output = tokio::time::timeout(
        WAIT,
        crate::support::server_command()
            .args(["--addr", "127.0.0.1:0", "--tick", "0", "--broker", &wrong])
            .env("RUST_LOG", "debug")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the server exits when Redis refuses it")
    .expect("run sse-server");
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    assert!(!log.contains(PASSWORD), "the password was logged:\n{log}");
    assert!(
        log.contains("redis://:***@127.0.0.1"),
        "the error names the redacted URL:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_redis_is_down_serves_degraded_then_works_once_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens on this port yet.
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = instances(1, &url, &[]).await.remove(0);
    assert_eq!(
        health(&server).await,
        Some(503),
        "/healthz while Redis is down"
    );
    let client = reqwest::Client::new();
    let refused = client
        .post(server.url("/publish"))
        .json(&serde_json::json!({"topic": "t", "data": "too early"}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.expect("a JSON body");
    assert!(body["error"].is_string(), "{body}");
    // Redis appears on that port: the server connects by itself.
    let mut redis = RedisServer {
        port,
        dir: dir.path().to_owned(),
        extra: Vec::new(),
        child: None,
    };
    redis.run().await;
    wait_for_health(&server, 200).await;
    let mut reader = watch(&server, "t", None).await;
    let id = publish(&server.url(""), "t", "message", "hello").await;
    let event = reader.expect(WAIT).await;
    assert_eq!((event.id, event.data), (id, "hello".to_owned()));
    let entries = stream_entries(&redis).await;
    assert!(
        entries.iter().all(|(_, data)| data != "too early"),
        "the refused publish was stored: {entries:?}"
    );
    expect_nothing_more(&mut [reader], &server, "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reaches_every_instance_in_order_and_a_bad_one_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let servers = instances(2, &redis.url(), &[]).await;
    let mut readers = Vec::new();
    for server in &servers {
        readers.push(watch(server, "t", None).await);
    }
    let client = reqwest::Client::new();
    let batch: Vec<serde_json::Value> = (0..20)
        .map(|n| serde_json::json!({"topic": "t", "data": format!("b{n}")}))
        .collect();
    let response = client
        .post(servers[0].url("/publish"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let expected: Vec<(String, String)> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str().unwrap().to_owned(), format!("b{n}")))
        .collect();
    assert_eq!(expected.len(), 20);
    for reader in &mut readers {
        let got = take(reader, 20).await;
        let got: Vec<(String, String)> = got.into_iter().map(|e| (e.id, e.data)).collect();
        assert_eq!(got, expected);
    }
    let bad = serde_json::json!([{"topic": "t", "data": "x"}, {"topic": "t"}]);
    let response = client
        .post(servers[1].url("/publish"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(stream_entries(&redis).await.len(), 20);
    expect_nothing_more(&mut readers, &servers[1], "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_holds_across_instances() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &[]).await;
    let servers = instances(2, &redis.url(), &[]).await;
    let mut reader = watch(&servers[1], "t", None).await;
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    for n in 0..4 {
        let response = client
            .post(servers[n % 2].url("/publish"))
            .header("idempotency-key", "payment-42")
            .json(&serde_json::json!({"topic": "t", "data": format!("try {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        answers.push(response.json::<serde_json::Value>().await.unwrap());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let entries = stream_entries(&redis).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].0, answers[0]["id"].as_str().unwrap());
    assert_eq!(reader.expect(WAIT).await.data, "try 0");
    expect_nothing_more(&mut [reader], &servers[0], "t").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_cli_publish_retries_a_503_with_its_key_until_redis_appears() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = instances(1, &format!("redis://127.0.0.1:{port}"), &[])
        .await
        .remove(0);
    assert_eq!(health(&server).await, Some(503));
    let args = sse_cli::cli::PublishArgs {
        url: server.url("").parse().unwrap(),
        topic: Some("t".to_owned()),
        event: None,
        token: None,
        data: None,
    };
    let publisher = sse_cli::publish::Publisher::new(&args).unwrap();
    // The publish starts while Redis is down, so it gets 503s and retries.
    let publishing = tokio::spawn(async move { publisher.publish("retried").await });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!publishing.is_finished(), "the publish gave up on a 503");
    let mut redis = RedisServer {
        port,
        dir: dir.path().to_owned(),
        extra: Vec::new(),
        child: None,
    };
    redis.run().await;
    let id = publishing
        .await
        .unwrap()
        .expect("published once Redis appeared")
        .expect("an id");
    let entries = stream_entries(&redis).await;
    assert_eq!(entries, vec![(id, "retried".to_owned())]);
}
