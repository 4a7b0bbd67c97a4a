//! Durable history (`--data-dir`) on the real binary: `kill -9` during
//! publishing, damaged files, a second instance, restarts under load.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use sse_cli::parse::{Event, Parser};
use sse_server::{
    durable::record::{self, Decoded, Topics},
    wire::EventId,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};

/// Generous: two shared cores, debug builds, several processes.
const WAIT: Duration = Duration::from_secs(30);

/// The binary with `--data-dir`, its log collected.
struct Durable {
    addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Durable {
    /// Starts the binary on `addr` with `--data-dir dir` and `args`, and
    /// waits until it serves.
    async fn start(addr: &str, dir: &Path, args: &[&str]) -> Self {
        let (child, lines) = spawn(addr, dir, args);
        let log = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&log);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut lines = lines;
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                collected.lock().unwrap().push(line);
            }
        });
        let addr = tokio::time::timeout(WAIT, rx)
            .await
            .expect("sse-server started in time")
            .unwrap_or_else(|_| panic!("sse-server exited: {:?}", log.lock().unwrap()));
        let server = Self {
            addr: addr.parse().expect("an address"),
            child,
            log,
        };
        // The address is logged before the log is read back; wait until
        // the server answers (and so handles signals).
        let healthz = server.url("/healthz");
        tokio::time::timeout(WAIT, async {
            while !reqwest::get(&healthz)
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("sse-server answers /healthz");
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("wait");
    }

    async fn terminate(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits on SIGTERM")
            .expect("wait");
        assert!(exit.success(), "{exit}");
    }
}

fn spawn(
    addr: &str,
    dir: &Path,
    args: &[&str],
) -> (
    Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
) {
    let mut child = crate::support::server_command()
        .args(["--addr", addr, "--tick", "0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sse-server");
    let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    (child, lines)
}

/// Runs the binary expecting it to refuse to start; returns its log.
async fn refuses_to_start(dir: &Path, args: &[&str]) -> String {
    let (mut child, mut lines) = spawn("127.0.0.1:0", dir, args);
    let mut log = String::new();
    let exit = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
        }
        child.wait().await.expect("wait")
    })
    .await
    .expect("sse-server exits in time");
    assert!(!exit.success(), "sse-server started: {log}");
    log
}

async fn publish(client: &reqwest::Client, base: &str, data: &str) -> reqwest::Result<String> {
    let response = client
        .post(format!("{base}/publish?topic=t"))
        .header("content-type", "text/plain")
        .body(data.to_owned())
        .send()
        .await?
        .error_for_status()?;
    let body: serde_json::Value = response.json().await?;
    Ok(body["id"].as_str().expect("an id").to_owned())
}

/// Every retained event on topic `t`, in the order the server replays
/// them: resumes from an id older than all, then reads up to a marker.
async fn retained(server: &Durable) -> Vec<Event> {
    let client = reqwest::Client::new();
    let mut response = client
        .get(server.url("/sse?topic=t"))
        .header("last-event-id", "0-0")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(response.status(), 200);
    let marker = format!("marker {}", server.addr);
    let marker_id = publish(&client, &server.url(""), &marker)
        .await
        .expect("marker");
    let mut parser = Parser::new();
    let mut events = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let chunk = response.chunk().await.expect("read").expect("stream open");
            let mut done = false;
            parser
                .feed(&chunk, |event| {
                    if event.data == marker {
                        done = true;
                    } else if !done && event.event != "too-old" {
                        events.push(event.clone());
                    }
                })
                .expect("a valid stream");
            if done {
                return;
            }
        }
    })
    .await
    .expect("the replay reached the marker");
    let marker_id: EventId = marker_id.parse().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.id.parse::<EventId>().unwrap() < marker_id),
        "a new id sorts before an old one"
    );
    events
}

/// Ids strictly increase: in order, none twice.
fn assert_in_id_order(events: &[Event]) {
    let ids: Vec<EventId> = events.iter().map(|e| e.id.parse().unwrap()).collect();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_8_concurrent_publishers_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // A small history with several segments, so retention runs too.
    let args = ["--history", "100000"];
    let server = Durable::start("127.0.0.1:0", dir.path(), &args).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let (base, stop) = (server.url(""), Arc::clone(&stop));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut acknowledged = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    match publish(&client, &base, &format!("{p}/{n}")).await {
                        Ok(id) => acknowledged.push((id, format!("{p}/{n}"))),
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9().await;
    stop.store(true, Ordering::Release);
    let mut acknowledged = Vec::new();
    for publisher in publishers {
        acknowledged.extend(publisher.await.unwrap());
    }
    assert!(
        acknowledged.len() > 50,
        "only {} published",
        acknowledged.len()
    );

    let server = Durable::start("127.0.0.1:0", dir.path(), &args).await;
    let events = retained(&server).await;
    assert_in_id_order(&events);
    let stored: HashSet<(&str, &str)> = events
        .iter()
        .map(|e| (e.id.as_str(), e.data.as_str()))
        .collect();
    for (id, data) in &acknowledged {
        assert!(
            stored.contains(&(id.as_str(), data.as_str())),
            "{id} {data} got 202 but is gone after kill -9"
        );
    }
    // At most the events in flight at the kill are there without a 202.
    assert!(events.len() <= acknowledged.len() + 8);
    server.terminate().await;
}

/// Ends of the records in a segment.
fn record_ends(bytes: &[u8]) -> Vec<usize> {
    let buf = Bytes::copy_from_slice(bytes);
    let mut ends = Vec::new();
    let mut offset = record::MAGIC.len();
    while let Decoded::Record { next, .. } = record::decode(&buf, offset, &mut Topics::default()) {
        ends.push(next);
        offset = next;
    }
    ends
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for file in segments(from) {
        std::fs::copy(&file, to.join(file.file_name().unwrap())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_garbage_tail_is_cut_and_every_whole_record_before_it_survives() {
    let pristine = tempfile::tempdir().unwrap();
    let server = Durable::start("127.0.0.1:0", pristine.path(), &[]).await;
    let client = reqwest::Client::new();
    let mut published = Vec::new();
    for n in 0..12 {
        let data = format!("event {n} {}", "x".repeat(n * 7));
        published.push((
            publish(&client, &server.url(""), &data).await.unwrap(),
            data,
        ));
    }
    server.terminate().await;
    let newest = segments(pristine.path()).pop().expect("a segment");
    let whole = std::fs::read(&newest).unwrap();
    let ends = record_ends(&whole);
    assert_eq!(ends.len(), published.len());
    // Every record boundary, a byte either side of it, the header, mid-record.
    let mut offsets: Vec<usize> = vec![0, 3, record::MAGIC.len()];
    for end in &ends {
        offsets.extend([end - 1, *end, end + 1, end - 9]);
    }
    offsets.retain(|&offset| offset <= whole.len());
    offsets.sort_unstable();
    offsets.dedup();
    for offset in offsets {
        for garbage in [
            &b""[..],
            b"\xde\xad\xbe\xef garbage written after a crash \x00\x01",
        ] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), dir.path());
            let damaged = dir.path().join(newest.file_name().unwrap());
            let mut bytes = whole[..offset].to_vec();
            bytes.extend_from_slice(garbage);
            std::fs::write(&damaged, &bytes).unwrap();

            let server = Durable::start("127.0.0.1:0", dir.path(), &[]).await;
            let kept = ends.iter().filter(|&&end| end <= offset).count();
            let events = retained(&server).await;
            let got: Vec<(String, String)> = events.into_iter().map(|e| (e.id, e.data)).collect();
            assert_eq!(
                got,
                published[..kept],
                "cut at {offset}, garbage {garbage:?}"
            );
            let damaged_tail = bytes.len() > ends.get(kept.wrapping_sub(1)).map_or(8, |e| *e);
            if damaged_tail && offset >= record::MAGIC.len() {
                assert!(
                    server.logged("cut a torn or corrupt tail"),
                    "cut at {offset} not logged"
                );
            }
            server.terminate().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_whole_records_refuses_to_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Durable::start("127.0.0.1:0", dir.path(), &[]).await;
    let client = reqwest::Client::new();
    for n in 0..5 {
        publish(&client, &server.url(""), &format!("event {n}"))
            .await
            .unwrap();
    }
    server.terminate().await;
    let newest = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let ends = record_ends(&bytes);
    bytes[ends[1] + 12] ^= 0x01;
    std::fs::write(&newest, &bytes).unwrap();
    let log = refuses_to_start(dir.path(), &[]).await;
    assert!(log.contains(&newest.display().to_string()), "{log}");
    assert!(log.contains("damaged event log"), "{log}");
    assert_eq!(std::fs::read(&newest).unwrap(), bytes, "left untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_held_by_a_running_server_or_unusable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = Durable::start("127.0.0.1:0", dir.path(), &[]).await;
    let log = refuses_to_start(dir.path(), &[]).await;
    assert!(
        log.contains("in use by another running sse-server"),
        "{log}"
    );
    assert!(
        log.contains(&first.child.id().unwrap().to_string()),
        "{log}"
    );
    first.terminate().await;
    // Free once the first has stopped.
    Durable::start("127.0.0.1:0", dir.path(), &[])
        .await
        .terminate()
        .await;

    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let log = refuses_to_start(&file, &[]).await;
    assert!(log.contains(&file.display().to_string()), "{log}");
    // Durable history is the embedded broker's; Redis has its own.
    let log = refuses_to_start(dir.path(), &["--broker", "redis://127.0.0.1:1"]).await;
    assert!(log.contains("--data-dir"), "{log}");
}

/// One subscriber that reconnects like EventSource (with Last-Event-ID)
/// until it has seen `last`; returns every event it got.
async fn follow(url: String, last: Arc<Mutex<Option<String>>>) -> Vec<Event> {
    let client = reqwest::Client::new();
    let mut parser = Parser::new();
    let mut events: Vec<Event> = Vec::new();
    loop {
        let mut request = client.get(&url);
        if let Some(seen) = events.last() {
            request = request.header("last-event-id", &seen.id);
        }
        if let Ok(mut response) = request.send().await {
            while let Ok(Some(chunk)) = response.chunk().await {
                let mut batch = Vec::new();
                if parser
                    .feed(&chunk, |event| batch.push(event.clone()))
                    .is_err()
                {
                    break;
                }
                events.extend(batch);
                let done = last.lock().unwrap().clone();
                if done.is_some_and(|done| events.iter().any(|e| e.data == done)) {
                    return events;
                }
            }
        }
        parser = Parser::new();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_every_event_exactly_once_across_a_kill_9_restart() {
    const CLIENTS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let server = Durable::start("127.0.0.1:0", dir.path(), &[]).await;
    let addr = server.addr.to_string();
    let url = server.url("/sse?topic=t");
    let last = Arc::new(Mutex::new(None));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(follow(url.clone(), Arc::clone(&last))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let base = server.url("");
    let mut acknowledged = Vec::new();
    for n in 0..100 {
        if let Ok(id) = publish(&client, &base, &format!("before {n}")).await {
            acknowledged.push(id);
        }
    }
    server.kill9().await;
    // Published while the server is down: refused, never acknowledged.
    assert!(publish(&client, &base, "while down").await.is_err());
    let server = Durable::start(&addr, dir.path(), &[]).await;
    for n in 0..100 {
        acknowledged.push(
            publish(&client, &base, &format!("after {n}"))
                .await
                .unwrap(),
        );
    }
    *last.lock().unwrap() = Some("after 99".to_owned());
    // Subscribers that caught up already need one more event to notice.
    let _ = publish(&client, &base, "wake").await;
    let reference = retained(&server).await;
    assert_in_id_order(&reference);
    let stored: HashSet<&str> = reference.iter().map(|e| e.id.as_str()).collect();
    for id in &acknowledged {
        assert!(stored.contains(&id.as_str()), "{id} lost");
    }
    let expected = up_to(&reference, "after 99");
    for (k, client) in clients.into_iter().enumerate() {
        let got = tokio::time::timeout(WAIT, client)
            .await
            .expect("the subscriber caught up")
            .unwrap();
        assert!(
            got.iter().all(|e| e.event != "too-old"),
            "client {k} was told too-old"
        );
        assert_eq!(
            up_to(&got, "after 99"),
            expected,
            "client {k}: every event once, in order, across the restart"
        );
    }
    server.terminate().await;
}

/// (id, data) of `events` up to and with the one whose data is `last`.
fn up_to(events: &[Event], last: &str) -> Vec<(String, String)> {
    let end = events
        .iter()
        .position(|e| e.data == last)
        .unwrap_or_else(|| panic!("{last} never arrived"));
    events[..=end]
        .iter()
        .map(|e| (e.id.clone(), e.data.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_stored_in_order_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Durable::start("127.0.0.1:0", dir.path(), &[]).await;
    let client = reqwest::Client::new();
    let first = publish(&client, &server.url(""), "before").await.unwrap();
    let batch: Vec<serde_json::Value> = (0..50)
        .map(|n| serde_json::json!({"topic": "t", "data": format!("batch {n}")}))
        .collect();
    let response = client
        .post(server.url("/publish"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let ids: Vec<String> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 50);
    server.kill9().await;
    let server = Durable::start("127.0.0.1:0", dir.path(), &[]).await;
    let events = retained(&server).await;
    let mut expected = vec![(first, "before".to_owned())];
    expected.extend(
        ids.into_iter()
            .enumerate()
            .map(|(n, id)| (id, format!("batch {n}"))),
    );
    let got: Vec<(String, String)> = events.into_iter().map(|e| (e.id, e.data)).collect();
    assert_eq!(got, expected);
    server.terminate().await;
}
