//! `sse-cli` against the real deployment shape: three instances on one
//! Redis behind a private nginx running the sample configuration
//! (`deploy/nginx/sse.conf`), and that configuration broken the two ways
//! operators most often break it.
//!
//! - `watch` rides out every instance being restarted (nginx answers 502
//!   meanwhile) and prints every event once, in order;
//! - `check` passes the sample, and fails buffering (`proxy_buffering on`)
//!   and compression (`gzip on` for `text/event-stream`) for what they are.

use std::{
    io::{self, Write},
    time::Duration,
};

use sse_cli::{
    check::{self, CheckConfig, Level},
    output::{Format, Printer},
    watch::{self, Stopped, WatchConfig},
};
use tokio::sync::mpsc;

use crate::{
    nginx::Nginx,
    redis::{instances, RedisServer, WAIT},
    support::{metric, publish, BinaryServer},
};

/// Instances' flags: no clock (the tests publish what they expect) and a
/// short heartbeat, so `check` sees one quickly.
const INSTANCE_ARGS: [&str; 2] = ["--heartbeat", "1s"];

/// A writer that hands each printed line to a channel.
struct Lines(mpsc::UnboundedSender<String>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn deployment(redis_dir: &std::path::Path) -> (RedisServer, Vec<BinaryServer>) {
    let redis = RedisServer::start(redis_dir, &[]).await;
    let servers = instances(3, &redis.url(), &INSTANCE_ARGS).await;
    (redis, servers)
}

/// The data of the next `--json` line watch prints.
async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>) -> String {
    let line = tokio::time::timeout(WAIT, lines.recv())
        .await
        .expect("an event in time")
        .expect("watch running");
    let value: serde_json::Value = serde_json::from_str(&line).expect("json line");
    value["data"].as_str().unwrap().to_owned()
}

/// Waits until nginx proxies `/healthz` to a serving instance again.
async fn wait_until_served(nginx: &Nginx) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(response) = reqwest::get(nginx.url("/healthz")).await {
                if response.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("nginx serves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rides_out_every_instance_restarting_behind_nginx() {
    let (redis_dir, nginx_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (redis, servers) = deployment(redis_dir.path()).await;
    let nginx = Nginx::start(nginx_dir.path(), &servers.iter().collect::<Vec<_>>()).await;

    let (line_tx, mut lines) = mpsc::unbounded_channel();
    let (notice_tx, mut notices) = mpsc::unbounded_channel();
    let config = WatchConfig {
        url: nginx.url("/sse?topic=t").parse().unwrap(),
        headers: Vec::new(),
        last_event_id: None,
        retry: Some(Duration::from_millis(200)),
        count: Some(3),
        reconnect: true,
        max_event_size: sse_cli::parse::DEFAULT_MAX_EVENT_SIZE,
        token: None,
        connect_timeout: Duration::from_secs(10),
        idle_timeout: None,
    };
    let watcher = tokio::spawn(async move {
        let mut printer = Printer::new(Lines(line_tx), Format::Json);
        watch::watch(&config, &mut printer, |notice| {
            let _ = notice_tx.send(notice.to_string());
        })
        .await
    });
    // Publish only once the stream is open on one of the instances: an
    // event published before that is, rightly, not delivered.
    tokio::time::timeout(WAIT, async {
        loop {
            let mut open = 0;
            for server in &servers {
                open += metric(&server.url(""), "sse_clients").await;
            }
            if open > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("watch subscribes through nginx");
    let mut got = Vec::new();
    for data in ["before 1", "before 2"] {
        publish(&nginx.url(""), "t", "message", data).await;
        got.push(next_line(&mut lines).await);
    }

    // Every instance goes away: nginx answers 502 to the reconnects.
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    for server in servers {
        server.terminate().await;
    }
    let saw_502 = tokio::time::timeout(WAIT, async {
        while let Some(notice) = notices.recv().await {
            if notice.contains("reconnect answered 502 Bad Gateway") {
                return notice;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("watch reports nginx's 502 and keeps trying");
    assert!(saw_502.contains("; reconnecting in"), "{saw_502}");

    // Every instance back on its address; an event published as soon as
    // one serves arrives, resumed by Last-Event-ID, with nothing repeated.
    let broker = redis.url();
    let mut argv = vec!["--broker", broker.as_str(), "--tick", "0"];
    argv.extend_from_slice(&INSTANCE_ARGS);
    let mut restarted = Vec::new();
    for addr in &addrs {
        restarted.push(BinaryServer::start(addr, &argv).await);
    }
    wait_until_served(&nginx).await;
    publish(&nginx.url(""), "t", "message", "after").await;
    got.push(next_line(&mut lines).await);
    assert_eq!(got, ["before 1", "before 2", "after"]);
    let stopped = tokio::time::timeout(WAIT, watcher)
        .await
        .expect("watch stops at --count")
        .expect("watch task");
    assert_eq!(stopped.expect("watch succeeds"), Stopped::CountReached);
    let mut rest = Vec::new();
    while let Ok(notice) = notices.try_recv() {
        rest.push(notice);
    }
    assert!(
        rest.iter()
            .any(|n| n.starts_with("reconnected, resuming after id ")),
        "{rest:?}"
    );
}

/// Runs `check` (with publishing) against the sample configuration with
/// `edit` applied.
async fn check_behind_nginx(edit: impl FnOnce(String) -> String) -> check::Report {
    let (redis_dir, nginx_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_redis, servers) = deployment(redis_dir.path()).await;
    let nginx =
        Nginx::start_with(nginx_dir.path(), &servers.iter().collect::<Vec<_>>(), edit).await;
    let config = CheckConfig {
        url: nginx.url("/sse").parse().unwrap(),
        publish_url: Some(nginx.url("/publish").parse().unwrap()),
        publish_body: check::DEFAULT_PUBLISH_BODY.to_owned(),
        headers: Vec::new(),
        timeout: Duration::from_secs(10),
    };
    check::check(&config).await.expect("http client")
}

fn level(report: &check::Report, name: &str) -> Level {
    report
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {report:?}"))
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_the_sample_nginx_config() {
    let report = check_behind_nginx(|site| site).await;
    for c in &report.checks {
        assert_eq!(c.status, Level::Pass, "{}: {}", c.name, c.reason);
    }
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_buffering_when_nginx_buffers() {
    // A plain `proxy_pass` location buffers (nginx's defaults:
    // `proxy_buffering on` and HTTP/1.0 to the upstream, so the response
    // is not chunked and nginx holds it until a buffer fills). Our server
    // defends itself with `X-Accel-Buffering: no`; a config that ignores
    // that header (copied from a caching set-up) gets the buffering.
    let report = check_behind_nginx(|site| {
        assert!(site.contains("proxy_buffering off;") && site.contains("proxy_http_version 1.1;"));
        site.replace("proxy_http_version 1.1;", "").replace(
            "proxy_buffering off;",
            "proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;",
        )
    })
    .await;
    // nginx then holds even the headers (they sit in its output buffer
    // with the first events): the buffering shows at connect, before any
    // event could be published.
    let flushed = report.get("headers-flushed").expect("headers-flushed line");
    assert_eq!(flushed.status, Level::Fail, "{report:?}");
    assert!(flushed.reason.contains("buffering proxy"), "{report:?}");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_compression_when_nginx_gzips_event_streams() {
    let report = check_behind_nginx(|site| {
        site.replace(
            "proxy_buffering off;",
            "proxy_buffering off;\n        gzip on;\n        gzip_types text/event-stream;",
        )
    })
    .await;
    assert_eq!(
        level(&report, "content-encoding"),
        Level::Fail,
        "{report:?}"
    );
    assert!(report
        .get("content-encoding")
        .unwrap()
        .reason
        .starts_with("gzip"));
    assert_eq!(report.exit_code(), 1);
}
