//! Hostile and malformed requests, over raw sockets against the real
//! binary: bodies that are too big, too slow or trickled, and the JSON
//! error every refusal carries.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{rss_kib, BinaryServer};

const WAIT: Duration = Duration::from_secs(10);

/// A response read off a raw socket.
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}{}", self.head, self.body))
    }
}

/// Reads one response (head, and a body by Content-Length) from `stream`.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a response head");
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    let mut response = RawResponse {
        status,
        head,
        body: String::new(),
    };
    let length: usize = response
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed inside a body");
        bytes.extend_from_slice(&chunk[..n]);
    }
    response.body = String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned();
    response
}

/// Sends `request` on a new connection and reads the response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    tokio::time::timeout(WAIT, read_response(&mut stream))
        .await
        .expect("a response in time")
}

/// Whether the server closed `stream` (EOF or reset) within `WAIT`.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn publish_head(content_length: usize, extra: &str) -> String {
    format!(
        "POST /publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
         Content-Length: {content_length}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn a_big_content_length_is_refused_before_reading_and_without_continue() {
    let server = BinaryServer::start("127.0.0.1:0", &[]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = publish_head(10_000_000, "Expect: 100-continue\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // No body is sent: the answer must not wait for one, and must not be
    // `100 Continue`.
    let response = tokio::time::timeout(WAIT, read_response(&mut stream))
        .await
        .expect("413 without waiting for the body");
    assert_eq!(response.status, 413, "{}", response.head);
    assert!(response.json()["error"]
        .as_str()
        .unwrap()
        .contains("larger than 65536"));
    assert!(closed(&mut stream).await, "connection left open");
    // Without Expect, the same.
    let response = exchange(server.addr, publish_head(65_537, "").as_bytes()).await;
    assert_eq!(response.status, 413);
    server.terminate().await;
}

#[tokio::test]
async fn a_slow_body_gets_408_and_the_connection_closes() {
    let server = BinaryServer::start("127.0.0.1:0", &["--body-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = publish_head(10, "");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"abc").await.unwrap();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(WAIT, read_response(&mut stream))
        .await
        .expect("408 in time");
    assert_eq!(response.status, 408, "{}", response.head);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(response.json()["error"]
        .as_str()
        .unwrap()
        .contains("did not arrive"));
    assert!(closed(&mut stream).await, "connection left open");
    // Nothing was published.
    let stats: serde_json::Value = reqwest::get(server.url("/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["published"], 0);
    server.terminate().await;
}

/// Connections trickling a body one byte per TCP segment.
const TRICKLERS: usize = 300;
/// Bytes each trickler sends after the first, each in its own segment.
const TRICKLE_ROUNDS: usize = 100;

#[tokio::test]
async fn trickled_bodies_cost_little_memory() {
    let server = BinaryServer::start("127.0.0.1:0", &["--body-timeout", "120s"]).await;
    let pid = server.pid();
    let before_connecting = rss_kib(pid);
    let mut streams = Vec::with_capacity(TRICKLERS);
    for _ in 0..TRICKLERS {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut first = publish_head(64 * 1024, "").into_bytes();
        first.push(b'x');
        stream.write_all(&first).await.unwrap();
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = rss_kib(pid);
    for _ in 0..TRICKLE_ROUNDS {
        for stream in &mut streams {
            stream.write_all(b"x").await.unwrap();
        }
        // Long enough for the server to read each byte on its own.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let trickled = rss_kib(pid);
    let growth = trickled.saturating_sub(connected);
    println!(
        "RSS: {before_connecting} KiB idle, {connected} KiB with {TRICKLERS} bodies started, \
         {trickled} KiB after {TRICKLE_ROUNDS} more one-byte segments each \
         (growth {growth} KiB while trickling, {} KiB in all)",
        trickled.saturating_sub(before_connecting)
    );
    assert!(
        growth < 1024,
        "{TRICKLERS} trickling bodies grew RSS by {growth} KiB"
    );
    // The server still answers others while the bodies trickle.
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    drop(streams);
    server.terminate().await;
}

#[tokio::test]
async fn every_refusal_is_a_json_error() {
    let server = BinaryServer::start("127.0.0.1:0", &["--publish-token", "t0ken"]).await;
    let auth = "Authorization: Bearer t0ken\r\n";
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "GET /no-such-page HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            404,
            "not found",
        ),
        (
            "DELETE /sse HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            405,
            "method not allowed",
        ),
        (
            "GET /publish HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            405,
            "method not allowed",
        ),
        (
            "GET /sse?topic=x%FEy HTTP/1.1\r\nHost: localhost\r\n\r\n".into(),
            400,
            "not valid UTF-8",
        ),
        (
            format!(
                "POST /publish?topic=x%FFy HTTP/1.1\r\nHost: localhost\r\n{auth}\
                 Content-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"
            ),
            400,
            "not valid UTF-8",
        ),
        (
            format!(
                "POST /publish HTTP/1.1\r\nHost: localhost\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: 1\r\n\r\n{{"
            ),
            400,
            "invalid JSON",
        ),
        (
            "POST /publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
             Content-Length: 1\r\n\r\nx"
                .into(),
            401,
            "token",
        ),
        (
            format!(
                "POST /publish HTTP/1.1\r\nHost: localhost\r\n{auth}\
                 Content-Type: text/plain\r\nContent-Length: 70000\r\n\r\n"
            ),
            413,
            "larger than",
        ),
        (
            format!(
                "POST /publish HTTP/1.1\r\nHost: localhost\r\n{auth}\
                 Content-Type: image/png\r\nContent-Length: 1\r\n\r\nx"
            ),
            415,
            "content type",
        ),
    ];
    for (request, status, message) in cases {
        let response = exchange(server.addr, request.as_bytes()).await;
        let first_line = request.lines().next().unwrap();
        assert_eq!(response.status, status, "{first_line}");
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{first_line}"
        );
        let error = response.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(message), "{first_line}: {error}");
    }
    let response = exchange(
        server.addr,
        b"POST /sse HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert_eq!(response.header("allow"), Some("GET,HEAD"));
    server.terminate().await;
}
