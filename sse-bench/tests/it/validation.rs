//! The measurements are right: known delays, drops, duplicates, late events
//! and refusals come out of the report exactly.

use std::time::Duration;

use crate::support::{bench, closed_port_url, num, Behaviour, FakeServer};

/// The injected delay: large against loopback and scheduling noise on a
/// shared 2-core machine, so the band below can be tolerant and still prove
/// the latency is measured end to end.
const DELAY_MS: f64 = 200.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_percentiles_land_on_an_injected_delay() {
    let server = FakeServer::start(Behaviour {
        delay: Duration::from_millis(DELAY_MS as u64),
        ..Default::default()
    })
    .await;
    let url = server.url();
    let run = bench(&[
        "--url",
        &url,
        "--clients",
        "20",
        "--rate",
        "20",
        "--duration",
        "2s",
    ])
    .await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/latency_ms/count"), 40.0 * 20.0);
    // Measured from the intended send time, so never below the delay. The
    // upper bounds leave room for a loaded CI box: the bulk must sit on the
    // delay, the tail may stray further.
    for (p, slack) in [
        ("p50", 100.0),
        ("p90", 100.0),
        ("p99", 400.0),
        ("p999", 400.0),
        ("max", 400.0),
    ] {
        let v = num(j, &format!("/latency_ms/{p}"));
        assert!(
            (DELAY_MS - 1.0..DELAY_MS + slack).contains(&v),
            "{p} = {v} ms, expected {DELAY_MS} ms + up to {slack} ms"
        );
    }
    assert_eq!(num(j, "/events/lost"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_delay_latency_is_small() {
    let server = FakeServer::start(Behaviour::default()).await;
    let url = server.url();
    let run = bench(&[
        "--url",
        &url,
        "--clients",
        "20",
        "--rate",
        "20",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let p50 = num(&run.json, "/latency_ms/p50");
    assert!(
        p50 < DELAY_MS / 2.0,
        "p50 {p50} ms on an undelayed loopback server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_duplicates_and_late_events_are_counted_exactly() {
    const CLIENTS: f64 = 10.0;
    let server = FakeServer::start(Behaviour {
        drop: [3, 7, 19].into(),
        duplicate: [5, 11].into(),
        // Held 600 ms: arrives after every later event (50 ms apart), even
        // if the publisher stalls for a while on a busy machine.
        hold: [(8, Duration::from_millis(600))].into(),
        ..Default::default()
    })
    .await;
    let url = server.url();
    let run = bench(&[
        "--url",
        &url,
        "--clients",
        "10",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--drain",
        "1s",
    ])
    .await;
    assert_eq!(
        run.code, 1,
        "losses must fail the run\n{}\n{:#}",
        run.stderr, run.json
    );
    let j = &run.json;
    assert_eq!(num(j, "/events/published"), 20.0);
    assert_eq!(num(j, "/events/expected"), 20.0 * CLIENTS);
    assert_eq!(num(j, "/events/lost"), 3.0 * CLIENTS);
    assert_eq!(num(j, "/events/duplicated"), 2.0 * CLIENTS);
    assert_eq!(num(j, "/events/out_of_order"), CLIENTS);
    assert_eq!(num(j, "/events/delivered"), 17.0 * CLIENTS);
    assert_eq!(j["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_reported_as_refused() {
    let url = closed_port_url().await;
    let run = bench(&[
        "--url",
        &url,
        "--clients",
        "5",
        "--rate",
        "5",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(run.code, 1, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/connections/connected"), 0.0);
    assert_eq!(num(j, "/connections/failed"), 5.0);
    assert_eq!(num(j, "/connections/errors/refused"), 5.0, "{j:#}");
    assert_eq!(j["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_reported_by_status() {
    let server = FakeServer::start(Behaviour {
        reject_status: Some(503),
        ..Default::default()
    })
    .await;
    let url = server.url();
    let run = bench(&[
        "--url",
        &url,
        "--clients",
        "4",
        "--rate",
        "5",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(
        num(&run.json, "/connections/errors/http 503"),
        4.0,
        "{:#}",
        run.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_fit_is_refused_before_connecting() {
    let server = FakeServer::start(Behaviour::default()).await;
    let url = server.url();
    let run = bench(&["--url", &url, "--clients", "10000000", "--duration", "1s"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("open files") && run.stderr.contains("--workers"),
        "{}",
        run.stderr
    );
    assert!(run.json.is_null(), "no report for a run that never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_sent_on_subscribe_and_publish() {
    let server = FakeServer::start(Behaviour {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let url = server.url();
    let base = [
        "--url",
        &url,
        "--clients",
        "4",
        "--rate",
        "10",
        "--duration",
        "1s",
    ];
    let run = bench(&[&base[..], &["--token", "s3cret"]].concat()).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    assert_eq!(num(&run.json, "/events/delivered"), 40.0);
    let run = bench(&base).await;
    assert_eq!(run.code, 1);
    assert_eq!(num(&run.json, "/connections/errors/http 401"), 4.0);
    assert_eq!(num(&run.json, "/events/publish_errors/http 401"), 10.0);
}
