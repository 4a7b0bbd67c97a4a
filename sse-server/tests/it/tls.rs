//! HTTPS: HTTP/2 and HTTP/1.1 by ALPN with a certificate made in the test,
//! and clear errors for a missing or bad certificate or key.

use std::{net::SocketAddr, time::Duration};

use futures::future::join_all;
use reqwest::{Certificate, Client, Version};

use crate::support::{BinaryServer, EventReader, TestCert, TestServer};

const WAIT: Duration = Duration::from_secs(20);

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://localhost:{}{path}", addr.port())
}

/// Established TCP connections whose local port is `port` (the server's
/// side of each connection to it).
fn server_connections(port: u16) -> usize {
    let local_port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3 && fields[1].ends_with(&local_port) && fields[3] == "01"
                })
                .count()
                .checked_add(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_carries_100_concurrent_streams_on_one_connection() {
    let cert = TestCert::new();
    let server = TestServer::start(&cert.args()).await;
    let client = cert.client(server.addr);
    let health = client
        .get(url(server.addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), Version::HTTP_2, "ALPN chose h2");

    let responses = join_all((0..100).map(|_| {
        client
            .get(url(server.addr, "/sse?topic=h2"))
            .header("accept", "text/event-stream")
            .send()
    }))
    .await;
    let mut readers = Vec::new();
    for response in responses {
        let response = response.expect("stream opens");
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        readers.push(EventReader::from_response(response));
    }
    assert_eq!(
        server_connections(server.addr.port()),
        1,
        "all 100 streams share one connection"
    );

    let published = client
        .post(url(server.addr, "/publish"))
        .json(&serde_json::json!({"topic": "h2", "data": "over h2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 202);
    let id: serde_json::Value = published.json().await.unwrap();
    let events = join_all(readers.iter_mut().map(|reader| reader.expect(WAIT))).await;
    for event in events {
        assert_eq!(event.data, "over h2");
        assert_eq!(event.id, id["id"].as_str().unwrap());
    }
    drop(readers);
    server.stop().await;
}

#[tokio::test]
async fn http1_over_tls_streams_the_same_bytes() {
    let cert = TestCert::new();
    let server = TestServer::start(&[&cert.args()[..], &["--retry", "5s"]].concat()).await;
    let client = Client::builder()
        .add_root_certificate(Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .resolve("localhost", server.addr)
        .http1_only()
        .build()
        .unwrap();
    let mut response = client
        .get(url(server.addr, "/sse?topic=t"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let opening = tokio::time::timeout(WAIT, response.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&opening[..], b"retry: 5000\n");
    server.stop().await;
}

#[tokio::test]
async fn plain_http_to_a_tls_server_gets_no_answer_but_tls_still_works() {
    let cert = TestCert::new();
    let server = TestServer::start(&cert.args()).await;
    let plain = reqwest::get(format!("http://{}/healthz", server.addr)).await;
    assert!(plain.is_err(), "no plain HTTP on a TLS port");
    let client = cert.client(server.addr);
    let health = client
        .get(url(server.addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}

/// The binary's exit status and log when started with `args`.
async fn start_fails(args: &[&str]) -> String {
    let output = crate::support::server_command()
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .output();
    let output = tokio::time::timeout(WAIT, output)
        .await
        .expect("exits at once")
        .unwrap();
    assert!(!output.status.success(), "refused to start: {args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_missing_or_bad_certificate_or_key_is_a_clear_error_at_start() {
    let cert = TestCert::new();
    let dir = cert.dir.path();
    let missing = dir.join("nope.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let other = TestCert::new();
    let (cert_path, key_path) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());

    let log = start_fails(&[
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        key_path,
    ])
    .await;
    assert!(
        log.contains("cannot use the TLS certificate") && log.contains("nope.pem"),
        "{log}"
    );
    let log = start_fails(&[
        "--tls-cert",
        cert_path,
        "--tls-key",
        missing.to_str().unwrap(),
    ])
    .await;
    assert!(
        log.contains("cannot use the TLS key") && log.contains("nope.pem"),
        "{log}"
    );
    let log = start_fails(&[
        "--tls-cert",
        garbage.to_str().unwrap(),
        "--tls-key",
        key_path,
    ])
    .await;
    assert!(log.contains("no PEM certificate"), "{log}");
    // A key file holding only a certificate has no key in it.
    let log = start_fails(&["--tls-cert", cert_path, "--tls-key", cert_path]).await;
    assert!(log.contains("cannot use the TLS key"), "{log}");
    // Each half of a pair is fine alone, but they do not belong together.
    let log = start_fails(&[
        "--tls-cert",
        cert_path,
        "--tls-key",
        other.key.to_str().unwrap(),
    ])
    .await;
    assert!(
        log.contains("cannot use the TLS certificate") || log.contains("with the key"),
        "{log}"
    );
    // One flag without the other.
    let log = start_fails(&["--tls-cert", cert_path]).await;
    assert!(log.contains("--tls-key"), "{log}");
}

#[tokio::test]
async fn tls_flags_come_from_the_environment() {
    let cert = TestCert::new();
    let server = BinaryServer::start_with_env(
        "127.0.0.1:0",
        &[],
        &[
            ("SSE_TLS_CERT", cert.cert.to_str().unwrap()),
            ("SSE_TLS_KEY", cert.key.to_str().unwrap()),
        ],
    )
    .await;
    let health = cert
        .client(server.addr)
        .get(url(server.addr, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), Version::HTTP_2);
    server.terminate().await;
}
