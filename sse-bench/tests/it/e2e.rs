//! End to end against the real `sse-server`, in this process.

use crate::support::{bench, num, RealServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_against_the_real_server_get_every_event() {
    let server = RealServer::start(&[]).await;
    let url = format!("http://{}", server.addr);
    let pid = std::process::id().to_string();
    let run = bench(&[
        "--url",
        &url,
        "--clients",
        "150",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--server-pid",
        &pid,
    ])
    .await;
    server.stop().await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/connections/connected"), 150.0);
    assert_eq!(num(j, "/events/delivered"), 40.0 * 150.0);
    assert_eq!(num(j, "/events/lost"), 0.0);
    assert_eq!(num(j, "/events/duplicated"), 0.0);
    assert_eq!(num(j, "/connect_ms/count"), 150.0);
    assert!(num(j, "/server/rss_connected_kib") > 0.0);
    assert!(num(j, "/bench/cpu_s") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_split_clients_and_merge_their_histograms() {
    let server = RealServer::start(&[]).await;
    let url = format!("http://{}", server.addr);
    let run = bench(&[
        "--url",
        &url,
        "--clients",
        "60",
        "--workers",
        "3",
        "--rate",
        "20",
        "--duration",
        "1s",
        "--source-ip",
        "127.0.0.1,127.0.0.2",
    ])
    .await;
    server.stop().await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let j = &run.json;
    assert_eq!(num(j, "/workers"), 3.0);
    assert_eq!(num(j, "/connections/connected"), 60.0);
    assert_eq!(num(j, "/latency_ms/count"), 20.0 * 60.0);
    assert_eq!(num(j, "/connect_ms/count"), 60.0);
    assert_eq!(num(j, "/events/lost"), 0.0);
}
