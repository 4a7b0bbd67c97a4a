//! Authorization over real HTTP against the real server: tokens and their
//! sources, expiry, algorithm pinning, anonymous topics, publish rights,
//! the `--auth-url` hook, CORS, Origin and Host checks, and secrets kept
//! out of the logs.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::support::{metric, EventReader, TestServer};

const SECRET: &str = "integration-test-secret-5d1f";
const WAIT: Duration = Duration::from_secs(10);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token signed with [`SECRET`].
fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn subscriber(topics: &[&str]) -> String {
    token(json!({"sse": {"subscribe": topics}}))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("an answer in time")
        .expect("an answer")
}

async fn status(url: &str, headers: &[(&str, &str)]) -> u16 {
    get(url, headers).await.status().as_u16()
}

async fn error_of(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("a JSON error");
    body["error"].as_str().expect("an error text").to_owned()
}

async fn publish(base: &str, topic: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/publish"))
        .json(&json!({"topic": topic, "data": "x"}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("an answer in time")
        .expect("an answer")
}

/// Sends `request` on a raw socket and returns the status and the head.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a head");
            head.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("a head in time");
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head)
}

#[tokio::test]
async fn no_token_is_401_and_a_token_not_covering_a_topic_is_403() {
    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let response = get(&server.url("/sse?topic=news"), &[]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(error_of(response).await.contains("token"));

    let wrong = encode(
        &Header::default(),
        &json!({"sse": {"subscribe": ["*"]}}),
        &EncodingKey::from_secret(b"not the secret"),
    )
    .unwrap();
    let response = get(
        &server.url("/sse?topic=news"),
        &[("authorization", &format!("Bearer {wrong}"))],
    )
    .await;
    assert_eq!(response.status(), 401, "badly signed");

    let news = subscriber(&["news", "orders/*"]);
    let bearer = format!("Bearer {news}");
    let response = get(
        &server.url("/sse?topic=news&topic=secret"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("www-authenticate").is_none());
    assert!(
        error_of(response).await.contains("\"secret\""),
        "the error names the topic"
    );
    let response = get(
        &server.url("/sse?topic=news&topic=orders/7"),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn each_token_source_works_and_the_header_comes_first() {
    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let good = subscriber(&["news"]);
    let url = server.url("/sse?topic=news");
    assert_eq!(
        status(&url, &[("authorization", &format!("Bearer {good}"))]).await,
        200,
        "Authorization: Bearer"
    );
    assert_eq!(
        status(&format!("{url}&access_token={good}"), &[]).await,
        200,
        "?access_token="
    );
    assert_eq!(
        status(
            &url,
            &[("cookie", &format!("theme=dark; sse_token={good}"))]
        )
        .await,
        200,
        "the sse_token cookie"
    );
    // Order: the header, then the query, then the cookie. The first one
    // found decides; a bad one is not skipped for a good one further down.
    let cookie = format!("sse_token={good}");
    assert_eq!(
        status(
            &format!("{url}&access_token=bad"),
            &[("cookie", cookie.as_str())]
        )
        .await,
        401,
        "the query comes before the cookie"
    );
    assert_eq!(
        status(
            &format!("{url}&access_token={good}"),
            &[("authorization", "Bearer bad")]
        )
        .await,
        401,
        "the header comes before the query"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stream_ends_cleanly_when_its_token_expires() {
    let server = TestServer::start(&[
        "--jwt-secret",
        SECRET,
        "--jwt-leeway",
        "0s",
        "--publish-token",
        "pub",
    ])
    .await;
    let publisher = [("authorization", "Bearer pub")];
    let expiring = token(json!({"sse": {"subscribe": ["t"]}, "exp": now() + 3}));
    let lasting = token(json!({"sse": {"subscribe": ["t"]}, "exp": now() + 3600}));
    let mut short = EventReader::open(
        &server.url(&format!("/sse?topic=t&access_token={expiring}")),
        None,
    )
    .await;
    let mut long = EventReader::open(
        &server.url(&format!("/sse?topic=t&access_token={lasting}")),
        None,
    )
    .await;
    let base = server.url("");
    assert_eq!(publish(&base, "t", &publisher).await.status(), 202);
    assert_eq!(short.expect(WAIT).await.data, "x");
    assert_eq!(long.expect(WAIT).await.data, "x");
    // The stream ends by itself, a clean end of the response, not a reset.
    let mut stream = short.into_bytes_stream();
    let end = tokio::time::timeout(Duration::from_secs(15), async {
        use futures::StreamExt;
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the stream ended after its token expired");
    assert!(end.is_ok(), "a clean end: {end:?}");
    assert_eq!(publish(&base, "t", &publisher).await.status(), 202);
    assert_eq!(long.expect(WAIT).await.data, "x", "others stay");
    // Reconnecting with the expired token is refused.
    let url = server.url(&format!("/sse?topic=t&access_token={expiring}"));
    assert_eq!(status(&url, &[]).await, 401);
    server.stop().await;
}

#[tokio::test]
async fn tokens_signed_with_another_algorithm_than_the_key_are_refused() {
    let rsa = format!("{FIXTURES}/jwt-rsa-public.pem");
    let server = TestServer::start(&["--jwt-public-key", &rsa]).await;
    let claims = json!({"sse": {"subscribe": ["*"]}});
    let rs256 = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&fixture("jwt-rsa-private.pem")).unwrap(),
    )
    .unwrap();
    let url = |token: &str| server.url(&format!("/sse?access_token={token}"));
    assert_eq!(status(&url(&rs256), &[]).await, 200);
    // HS256 "signed" with the public key, which an attacker has.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&fixture("jwt-rsa-public.pem")),
    )
    .unwrap();
    assert_eq!(
        status(&url(&confused), &[]).await,
        401,
        "HS256 with the public key"
    );
    // `alg: none`, no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzc2UiOnsic3Vic2NyaWJlIjpbIioiXX19.";
    assert_eq!(status(&url(none), &[]).await, 401, "alg none");
    // RS512 with the right key is still another algorithm.
    let rs512 = encode(
        &Header::new(Algorithm::RS512),
        &claims,
        &EncodingKey::from_rsa_pem(&fixture("jwt-rsa-private.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(status(&url(&rs512), &[]).await, 401, "RS512");
    server.stop().await;

    let ec = format!("{FIXTURES}/jwt-ec-public.pem");
    let server = TestServer::start(&["--jwt-public-key", &ec]).await;
    let es256 = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(&fixture("jwt-ec-private.pem")).unwrap(),
    )
    .unwrap();
    let url = |token: &str| server.url(&format!("/sse?access_token={token}"));
    assert_eq!(status(&url(&es256), &[]).await, 200, "ES256");
    assert_eq!(status(&url(&rs256), &[]).await, 401, "RS256 on an EC key");
    server.stop().await;
}

#[tokio::test]
async fn anonymous_topics_need_no_token_and_only_they() {
    let server = TestServer::start(&[
        "--jwt-secret",
        SECRET,
        "--anonymous-topics",
        "lobby,public/*",
    ])
    .await;
    assert_eq!(status(&server.url("/sse?topic=lobby"), &[]).await, 200);
    assert_eq!(
        status(&server.url("/sse?topic=lobby&topic=public/news"), &[]).await,
        200
    );
    assert_eq!(
        status(&server.url("/sse?topic=lobby&topic=private"), &[]).await,
        401,
        "one topic that is not anonymous needs a token"
    );
    assert_eq!(
        status(&server.url("/sse"), &[]).await,
        401,
        "default is not anonymous"
    );
    let private = subscriber(&["private"]);
    assert_eq!(
        status(
            &server.url(&format!(
                "/sse?topic=lobby&topic=private&access_token={private}"
            )),
            &[]
        )
        .await,
        200,
        "a token and anonymous topics together"
    );
    // Anonymous topics are for reading only.
    assert_eq!(publish(&server.url(""), "lobby", &[]).await.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn publishing_takes_a_covering_jwt_or_the_publish_token() {
    let server =
        TestServer::start(&["--jwt-secret", SECRET, "--publish-token", "static-pub-9"]).await;
    let base = server.url("");
    let orders = token(json!({"sse": {"subscribe": ["*"], "publish": ["orders/*"]}}));
    let bearer = format!("Bearer {orders}");
    let response = publish(&base, "orders/1", &[("authorization", &bearer)]).await;
    assert_eq!(response.status(), 202);
    let response = publish(&base, "news", &[("authorization", &bearer)]).await;
    assert_eq!(response.status(), 403);
    assert!(error_of(response).await.contains("\"news\""));
    let reader_only = subscriber(&["*"]);
    let response = publish(
        &base,
        "orders/1",
        &[("authorization", &format!("Bearer {reader_only}"))],
    )
    .await;
    assert_eq!(response.status(), 403, "a token without publish rights");
    let response = publish(&base, "news", &[]).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = publish(&base, "news", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(response.status(), 401);
    let response = publish(&base, "news", &[("authorization", "Bearer static-pub-9")]).await;
    assert_eq!(response.status(), 202, "--publish-token covers every topic");
    // The 401 comes before the body is read: a bad body still gets 401.
    let response = reqwest::Client::new()
        .post(format!("{base}/publish"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_get_a_prompt_401_never_a_5xx_or_a_stall() {
    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let good = subscriber(&["*"]);
    let bad_claims = [
        json!({"sse": {"subscribe": "news"}}),
        json!({"sse": ["news"]}),
        json!({"sse": {"subscribe": [1, 2]}}),
        json!({"sse": {"subscribe": ["*"]}, "exp": "tomorrow"}),
        json!({"sse": {"subscribe": ["*"]}, "nbf": {"a": 1}}),
    ];
    let mut bad: Vec<String> = bad_claims.into_iter().map(token).collect();
    bad.extend(
        [
            "garbage",
            "a.b.c",
            "....",
            &good[..good.len() / 2],
            &good[..good.len() - 3],
            "eyJhbGciOiJYWTUxMiIsInR5cCI6IkpXVCJ9.e30.AAAA",
            "eyJhbGciOiJIUzI1NiJ9.%%%.%%%",
        ]
        .map(str::to_owned),
    );
    // Just under what fits in a request head, and far over it.
    bad.push(format!("{good}{}", "A".repeat(6 * 1024)));
    for token in &bad {
        let response = get(
            &server.url("/sse"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(response.status(), 401, "{token:.80}");
    }
    let huge = "A".repeat(100 * 1024);
    for request in [
        format!("GET /sse HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {huge}\r\n\r\n"),
        format!("GET /sse?access_token={huge} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ] {
        let (status, _) = raw(server.addr, &request).await;
        assert!(
            status == 401 || status == 431 || status == 414,
            "100 KB token: {status}"
        );
    }
    // And the server still serves.
    let url = server.url(&format!("/sse?access_token={good}"));
    assert_eq!(status(&url, &[]).await, 200);
    server.stop().await;
}

/// What the hook server answers.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Hang,
}

/// A tiny authorization service: answers as told, records what it got.
struct Hook {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
}

impl Hook {
    async fn start() -> Self {
        let answer = Arc::new(Mutex::new(Answer::Status(204)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (answer.clone(), seen.clone());
        let app = axum::Router::new().route(
            "/auth",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let (answer, seen) = (a.clone(), s.clone());
                async move {
                    seen.lock().unwrap().push(headers);
                    let answer = *answer.lock().unwrap();
                    match answer {
                        Answer::Status(code) => axum::http::StatusCode::from_u16(code).unwrap(),
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            axum::http::StatusCode::OK
                        }
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, answer, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/auth", self.addr)
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn last(&self) -> axum::http::HeaderMap {
        self.seen.lock().unwrap().last().cloned().expect("a call")
    }
}

#[tokio::test]
async fn the_hook_allows_denies_fails_and_times_out() {
    let hook = Hook::start().await;
    let server = TestServer::start(&["--auth-url", &hook.url()]).await;
    let base = server.url("");
    let url = server.url("/sse?topic=a%2Cb&topic=orders/1");
    let sent = [
        ("cookie", "session=abc"),
        ("authorization", "Bearer app-token"),
    ];

    assert_eq!(status(&url, &sent).await, 200, "2xx allows");
    let seen = hook.last();
    assert_eq!(seen["x-sse-action"], "subscribe");
    assert_eq!(
        seen["x-sse-topics"], "a%2Cb,orders/1",
        "percent-encoded, comma-separated"
    );
    assert_eq!(seen["cookie"], "session=abc");
    assert_eq!(seen["authorization"], "Bearer app-token");

    hook.answer(Answer::Status(403));
    assert_eq!(status(&url, &sent).await, 403, "403 is passed on");
    hook.answer(Answer::Status(401));
    let response = get(&url, &sent).await;
    assert_eq!(response.status(), 401, "401 is passed on");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    hook.answer(Answer::Status(500));
    assert_eq!(status(&url, &sent).await, 503, "a failing hook is 503");
    hook.answer(Answer::Status(302));
    assert_eq!(status(&url, &sent).await, 503, "anything else is 503");

    hook.answer(Answer::Status(200));
    let response = publish(&base, "orders/2", &sent).await;
    assert_eq!(response.status(), 202);
    let seen = hook.last();
    assert_eq!(seen["x-sse-action"], "publish");
    assert_eq!(seen["x-sse-topics"], "orders/2");
    hook.answer(Answer::Status(403));
    assert_eq!(publish(&base, "orders/2", &sent).await.status(), 403);

    hook.answer(Answer::Hang);
    let response = get(&url, &sent).await;
    assert_eq!(response.status(), 503, "no answer within 5 s is 503");

    assert_eq!(metric(&base, "sse_auth_hook_allowed_total").await, 2);
    assert_eq!(metric(&base, "sse_auth_hook_denied_total").await, 3);
    assert_eq!(metric(&base, "sse_auth_hook_errors_total").await, 3);
    server.stop().await;
}

#[tokio::test]
async fn the_hook_and_the_token_must_both_allow() {
    let hook = Hook::start().await;
    let server = TestServer::start(&["--jwt-secret", SECRET, "--auth-url", &hook.url()]).await;
    let good = subscriber(&["t"]);
    let url = server.url(&format!("/sse?topic=t&access_token={good}"));
    assert_eq!(status(&url, &[]).await, 200);
    hook.answer(Answer::Status(403));
    assert_eq!(
        status(&url, &[]).await,
        403,
        "the token allows, the hook does not"
    );
    let calls = hook.seen.lock().unwrap().len();
    hook.answer(Answer::Status(200));
    assert_eq!(
        status(&server.url("/sse?topic=t"), &[]).await,
        401,
        "the hook allows, no token"
    );
    assert_eq!(
        hook.seen.lock().unwrap().len(),
        calls,
        "an invalid request is refused before asking the application"
    );
    server.stop().await;
}

#[tokio::test]
async fn cors_answers_listed_origins_only() {
    let server = TestServer::start(&["--cors-origin", "https://app.example"]).await;
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, server.url("/publish"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let response = preflight("https://app.example").await.unwrap();
    assert!(response.status().is_success());
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("PUT"),
        "{methods}"
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let response = preflight("https://evil.example").await.unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Simple requests: the stream and a publish.
    let response = get(&server.url("/sse"), &[("origin", "https://app.example")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
    let response = get(&server.url("/sse"), &[("origin", "https://evil.example")]).await;
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let response = publish(&server.url(""), "t", &[("origin", "https://app.example")]).await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    server.stop().await;

    // `*`: any origin, echoed, never with credentials.
    let server = TestServer::start(&["--cors-origin", "*"]).await;
    let response = get(&server.url("/sse"), &[("origin", "https://any.example")]).await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://any.example"
    );
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    server.stop().await;

    // No --cors-origin: no CORS headers at all.
    let server = TestServer::start(&[]).await;
    let response = get(&server.url("/sse"), &[("origin", "https://app.example")]).await;
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_publish_from_a_foreign_origin_is_refused() {
    let server = TestServer::start(&["--cors-origin", "https://app.example"]).await;
    let base = server.url("");
    let own = format!("http://{}", server.addr);
    let response = publish(&base, "t", &[("origin", "https://evil.example")]).await;
    assert_eq!(response.status(), 403);
    assert!(error_of(response).await.contains("origin"));
    // The no-cors form post a foreign page can send without a preflight.
    let response = reqwest::Client::new()
        .post(format!("{base}/publish"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "text/plain from a foreign page");
    let response = publish(&base, "t", &[("origin", "null")]).await;
    assert_eq!(response.status(), 403, "an opaque origin");
    assert_eq!(
        publish(&base, "t", &[("origin", &own)]).await.status(),
        202,
        "ours"
    );
    assert_eq!(
        publish(&base, "t", &[("origin", "https://app.example")])
            .await
            .status(),
        202,
        "listed"
    );
    assert_eq!(
        publish(&base, "t", &[]).await.status(),
        202,
        "not a browser"
    );
    // Reading is not refused: without CORS headers the browser keeps the
    // answer from the foreign page.
    assert_eq!(
        status(&server.url("/sse"), &[("origin", "https://evil.example")]).await,
        200
    );
    server.stop().await;
}

#[tokio::test]
async fn only_allowed_hosts_are_served() {
    // Listening on loopback: loopback names only, by default.
    let server = TestServer::start(&[]).await;
    for (host, expected) in [
        ("localhost", 200),
        (&format!("127.0.0.1:{}", server.addr.port()), 200),
        ("[::1]:3000", 200),
        ("rebound.example:3000", 403),
    ] {
        let (status, _) = raw(
            server.addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, expected, "Host: {host}");
    }
    let (status, _) = raw(
        server.addr,
        "GET /sse HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "the stream too");
    server.stop().await;

    let server = TestServer::start(&["--allowed-hosts", "sse.example,other.example"]).await;
    for (host, expected) in [
        ("sse.example", 200),
        ("other.example:8080", 200),
        ("localhost", 403),
    ] {
        let (status, _) = raw(
            server.addr,
            &format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, expected, "Host: {host}");
    }
    server.stop().await;
}

/// Starts the real binary with `RUST_LOG=trace`, its log going to `log`.
async fn traced_binary(
    args: &[&str],
    log: &std::path::Path,
) -> (tokio::process::Child, SocketAddr) {
    let file = std::fs::File::create(log).unwrap();
    let child = crate::support::server_command()
        .args(["--addr", "127.0.0.1:0", "--tick", "0"])
        .args(args)
        .env_clear()
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start sse-server");
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("sse-server started");
    (child, addr)
}

/// Sends SIGTERM and waits for the process to exit.
async fn terminate(mut child: tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
}

/// Uses every token source, right and wrong tokens, the publish token and
/// the hook: everything that could put a secret in a log line.
async fn exercise_secrets(base: &str, publish_token: &str) {
    let good = subscriber(&["t"]);
    let wrong = format!("{good}x");
    let publisher = token(json!({"sse": {"publish": ["t"]}}));
    for headers in [
        vec![("authorization".to_owned(), format!("Bearer {good}"))],
        vec![("authorization".to_owned(), format!("Bearer {wrong}"))],
        vec![("cookie".to_owned(), format!("sse_token={good}"))],
        vec![("cookie".to_owned(), format!("sse_token={wrong}"))],
    ] {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let response = get(&format!("{base}/sse?topic=t"), &headers).await;
        drop(response);
    }
    for query in [&good, &wrong] {
        drop(get(&format!("{base}/sse?topic=t&access_token={query}"), &[]).await);
    }
    let mut stream =
        EventReader::open(&format!("{base}/sse?topic=t&access_token={good}"), None).await;
    for bearer in [publisher.as_str(), wrong.as_str(), publish_token] {
        let auth = format!("Bearer {bearer}");
        drop(publish(base, "t", &[("authorization", &auth)]).await);
    }
    assert_eq!(stream.expect(WAIT).await.data, "x");
}

#[tokio::test]
async fn secrets_and_tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace.log");
    let hook = Hook::start().await;
    let hook_url = format!("http://hookuser:hook-pass-77@{}/auth", hook.addr);
    let publish_token = "publish-token-3e9a";
    let (child, addr) = traced_binary(
        &[
            "--jwt-secret",
            SECRET,
            "--publish-token",
            publish_token,
            "--auth-url",
            &hook_url,
        ],
        &log,
    )
    .await;
    let base = format!("http://{addr}");
    exercise_secrets(&base, publish_token).await;
    hook.answer(Answer::Status(500));
    drop(
        get(
            &format!("{base}/sse?topic=t&access_token={}", subscriber(&["t"])),
            &[],
        )
        .await,
    );
    terminate(child).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("TRACE"), "the log is at trace level");
    let good = subscriber(&["t"]);
    // A token's signature is the part only its holder knows.
    let signature = good.rsplit('.').next().unwrap();
    for secret in [SECRET, publish_token, "hook-pass-77", signature] {
        assert!(!text.contains(secret), "{secret} is in the log");
    }
}
