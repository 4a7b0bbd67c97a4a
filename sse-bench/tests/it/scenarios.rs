//! Scenarios: against test servers whose resumes, refusals, queues and
//! admission are known exactly (so the counts in the report are too), and
//! against the real server.

use crate::support::{bench, num, Behaviour, FakeServer, RealServer};

/// Clients in the storm tests; half are cut.
const CLIENTS: f64 = 40.0;

/// The test servers' `retry:`: short, so tests are quick, and long enough
/// to tell from an immediate reconnect.
const RETRY_MS: u64 = 300;

fn storm_args(url: &str) -> Vec<String> {
    [
        "--url",
        url,
        "--clients",
        "40",
        "--rate",
        "20",
        "--duration",
        "3s",
        "--scenario",
        "reconnect-storm",
        "--storm-at",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn bench_owned(args: &[String]) -> crate::support::Run {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    bench(&refs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_against_an_exact_replay_closes_every_gap() {
    let server = FakeServer::start(Behaviour {
        retry_ms: RETRY_MS,
        ..Default::default()
    })
    .await;
    let run = bench_owned(&storm_args(&server.url())).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(j["scenario"], "reconnect-storm");
    assert_eq!(num(j, "/storm/cut"), CLIENTS / 2.0);
    assert_eq!(num(j, "/storm/resumed_clients"), CLIENTS / 2.0);
    assert_eq!(num(j, "/storm/gaps_closed"), CLIENTS / 2.0);
    assert_eq!(num(j, "/storm/gaps_open"), 0.0);
    assert_eq!(num(j, "/storm/statuses/200"), CLIENTS / 2.0);
    assert_eq!(num(j, "/storm/not_back"), 0.0);
    // The stream's retry: is waited before reconnecting.
    assert!(
        num(j, "/storm/time_to_back_ms/p50") >= RETRY_MS as f64,
        "{j:#}"
    );
    assert!(num(j, "/storm/all_back_s") >= RETRY_MS as f64 / 1000.0);
    assert_eq!(num(j, "/events/lost"), 0.0);
    assert_eq!(num(j, "/events/duplicated"), 0.0);
    assert_eq!(num(j, "/events/delivered"), 60.0 * CLIENTS);
    let marks = j["timeline"]["marks"].as_array().expect("marks");
    assert_eq!(marks.len(), 1, "{j:#}");
    assert!(marks[0]["label"].as_str().unwrap_or("").contains("20 cut"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_what_a_wrong_replay_skips_and_repeats_per_client() {
    let server = FakeServer::start(Behaviour {
        retry_ms: RETRY_MS,
        replay_repeat: 2,
        replay_skip_first: true,
        ..Default::default()
    })
    .await;
    let run = bench_owned(&storm_args(&server.url())).await;
    assert_eq!(run.code, 1, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    let cut = CLIENTS / 2.0;
    assert_eq!(num(j, "/storm/cut"), cut);
    assert_eq!(num(j, "/storm/gaps_closed"), 0.0);
    assert_eq!(num(j, "/storm/gaps_open"), cut);
    // Each cut client is sent two events again and misses one.
    assert_eq!(num(j, "/storm/gap_duplicated"), 2.0 * cut);
    assert_eq!(num(j, "/storm/gap_lost"), cut);
    assert_eq!(num(j, "/events/lost"), cut);
    assert_eq!(num(j, "/events/duplicated"), 2.0 * cut);
    assert_eq!(j["storm"]["open_gaps"].as_array().map(Vec::len), Some(20));
    assert_eq!(j["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reconnects_are_retried_after_retry_after() {
    let server = FakeServer::start(Behaviour {
        retry_ms: RETRY_MS,
        refuse_resumes: 5,
        ..Default::default()
    })
    .await;
    let run = bench_owned(&storm_args(&server.url())).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/storm/statuses/http 503"), 5.0);
    assert_eq!(num(j, "/storm/statuses/200"), CLIENTS / 2.0);
    assert_eq!(num(j, "/storm/gaps_closed"), CLIENTS / 2.0);
    // Refused clients waited the server's Retry-After: 1 on top of retry:.
    assert!(num(j, "/storm/time_to_back_ms/max") >= RETRY_MS as f64 + 1000.0);
    assert_eq!(num(j, "/events/lost"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_against_the_real_server_loses_nothing() {
    let server = RealServer::start(&["--retry", "300ms"]).await;
    let run = bench_owned(&storm_args(&server.url())).await;
    server.stop().await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/storm/cut"), CLIENTS / 2.0);
    assert_eq!(num(j, "/storm/gaps_closed"), CLIENTS / 2.0);
    assert_eq!(num(j, "/events/lost"), 0.0);
    assert_eq!(num(j, "/events/duplicated"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_across_workers_cuts_the_same_share() {
    let server = FakeServer::start(Behaviour {
        retry_ms: RETRY_MS,
        ..Default::default()
    })
    .await;
    let mut args = storm_args(&server.url());
    args.extend(["--workers".into(), "2".into()]);
    let run = bench_owned(&args).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    assert_eq!(num(&run.json, "/storm/cut"), CLIENTS / 2.0);
    assert_eq!(num(&run.json, "/storm/gaps_closed"), CLIENTS / 2.0);
}

fn slow_args(url: &str) -> Vec<String> {
    [
        "--url",
        url,
        "--clients",
        "20",
        "--rate",
        "100",
        "--payload",
        "1024",
        "--duration",
        "8s",
        "--scenario",
        "slow-consumers",
        "--slow-clients",
        "4",
        // Fast enough to read through the socket buffers to the server's
        // reset within the run, far too slow for 100 KB/s.
        "--slow-read-rate",
        "4KB/s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_dropped_by_a_bounded_queue_and_resume_exactly() {
    let server = FakeServer::start(Behaviour {
        retry_ms: RETRY_MS,
        // 1.28 s of slack for healthy readers at 100 events/s; a reader
        // at 4 KB/s overruns it (and the small socket buffers) in ~1.5 s.
        queue: 128,
        send_buffer: Some(4096),
        ..Default::default()
    })
    .await;
    let run = bench_owned(&slow_args(&server.url())).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/slow/clients"), 4.0);
    assert_eq!(num(j, "/slow/dropped_by_server"), 4.0, "{j:#}");
    assert!(num(j, "/slow/resumes") >= 4.0);
    assert_eq!(num(j, "/slow/resumes_exact"), num(j, "/slow/resumes"));
    assert!(num(j, "/slow/from_s") >= 3.9);
    assert!(num(j, "/slow/healthy_baseline_ms/count") > 0.0);
    assert!(num(j, "/slow/healthy_with_slow_ms/count") > 0.0);
    // The 16 healthy clients got everything, undisturbed.
    assert_eq!(num(j, "/events/expected"), 800.0 * 16.0);
    assert_eq!(num(j, "/events/lost"), 0.0);
    assert_eq!(num(j, "/connections/dropped"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_against_the_real_server_leave_the_others_whole() {
    let server = RealServer::start(&["--retry", "300ms"]).await;
    let run = bench_owned(&slow_args(&server.url())).await;
    server.stop().await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/slow/clients"), 4.0);
    assert_eq!(num(j, "/slow/resumes_exact"), num(j, "/slow/resumes"));
    assert_eq!(num(j, "/events/lost"), 0.0);
}

fn churn_args(url: &str) -> Vec<String> {
    [
        "--url",
        url,
        "--clients",
        "10",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--scenario",
        "churn",
        "--churn-rate",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_counts_connects_and_refusals() {
    // The 10 measuring clients and then 5 churning ones are admitted;
    // every later churning client is refused.
    let server = FakeServer::start(Behaviour {
        max_subscriptions: Some(15),
        ..Default::default()
    })
    .await;
    let run = bench_owned(&churn_args(&server.url())).await;
    assert_eq!(run.code, 1, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/churn/connected"), 5.0);
    let refused = num(j, "/churn/errors/http 503");
    let started = num(j, "/churn/started");
    assert!(refused >= 1.0 && refused + 5.0 <= started, "{j:#}");
    // About 20 per second for 2 s.
    assert!((30.0..=45.0).contains(&started), "{j:#}");
    // The measuring clients were not disturbed.
    assert_eq!(num(j, "/events/lost"), 0.0);
    assert_eq!(num(j, "/connections/connected"), 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_against_the_real_server_reports_connects_and_memory() {
    let server = RealServer::start(&[]).await;
    let pid = std::process::id().to_string();
    let mut args = churn_args(&server.url());
    args.extend(["--server-pid".into(), pid]);
    let run = bench_owned(&args).await;
    server.stop().await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert!(num(j, "/churn/connected") >= 30.0, "{j:#}");
    assert!(num(j, "/churn/connects_per_s") > 10.0);
    assert!(num(j, "/server/rss_after_kib") > 0.0);
    assert_eq!(num(j, "/events/lost"), 0.0);
}
