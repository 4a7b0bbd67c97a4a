//! `POST`/`PUT /publish`: the three body forms, data fidelity, bad input.

use std::time::Duration;

use crate::support::{EventReader, TestServer};

const WAIT: Duration = Duration::from_secs(10);

async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn all_three_body_forms_with_post_and_put() {
    let server = TestServer::start(&[]).await;
    let mut default = EventReader::open(&server.url("/sse"), None).await;
    let mut news = EventReader::open(&server.url("/sse?topic=news"), None).await;
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let json = r#"{"topic": "news", "event": "headline", "data": "full form"}"#;
        let (status, body) = send(
            &server,
            method.clone(),
            "/publish",
            Some("application/json"),
            json,
        )
        .await;
        assert_eq!(status, 202);
        let event = news.expect(WAIT).await;
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            ("headline", "full form")
        );
        assert_eq!(body["id"].as_str(), Some(event.id.as_str()));

        let seed = r#"{"message": "the seed's form"}"#;
        let (status, body) = send(
            &server,
            method.clone(),
            "/publish",
            Some("Application/JSON; charset=utf-8"),
            seed,
        )
        .await;
        assert_eq!(status, 202);
        let event = default.expect(WAIT).await;
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            ("message", "the seed's form")
        );
        assert_eq!(body["id"].as_str(), Some(event.id.as_str()));

        let (status, _) = send(
            &server,
            method.clone(),
            "/publish?topic=news&event=note",
            Some("text/plain"),
            "plain text",
        )
        .await;
        assert_eq!(status, 202);
        let event = news.expect(WAIT).await;
        assert_eq!(
            (event.event.as_str(), event.data.as_str()),
            ("note", "plain text")
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn data_round_trips_line_by_line() {
    let server = TestServer::start(&[]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    let samples = [
        "plain",
        "",
        "two\nlines",
        "trailing newline\n",
        "\n",
        "\n\nempty lines\n\n",
        "  leading spaces and a colon: here",
        ": looks like a comment",
        "data: looks like a field",
        "unicode: héllo wörld — 日本語 🎉",
        "tab\there",
        "nul \0 inside",
        "windows\r\nline endings\r\n",
        "old mac\rline endings",
        "mixed\r\n\r\n\n\r",
    ];
    for data in samples {
        let json = serde_json::json!({ "data": data }).to_string();
        let (status, _) = send(
            &server,
            reqwest::Method::POST,
            "/publish",
            Some("application/json"),
            json,
        )
        .await;
        assert_eq!(status, 202);
        let event = reader.expect(WAIT).await;
        // The event-stream format has one line terminator for a client:
        // CRLF and lone CR arrive as LF (WHATWG HTML 9.2.6). Everything
        // else arrives byte for byte.
        let expected = data.replace("\r\n", "\n").replace('\r', "\n");
        assert_eq!(event.data, expected, "published {data:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let server = TestServer::start(&[]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    let long = "x".repeat(257);
    let json = Some("application/json");
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (json, "{not json".into(), 400, "invalid JSON"),
        (json, "[1, 2]".into(), 400, "invalid JSON"),
        (json, r#"{"topic": "a"}"#.into(), 400, "missing"),
        (json, r#"{"data": null}"#.into(), 400, "missing"),
        (
            json,
            r#"{"data": "x", "message": "y"}"#.into(),
            400,
            "not both",
        ),
        (
            json,
            r#"{"data": "x", "extra": 1}"#.into(),
            400,
            "unknown field",
        ),
        (
            json,
            r#"{"topic": "", "data": "x"}"#.into(),
            400,
            "topic must not be empty",
        ),
        (
            json,
            format!(r#"{{"topic": "{long}", "data": "x"}}"#),
            400,
            "longer than 256",
        ),
        (
            json,
            r#"{"topic": "a\nb", "data": "x"}"#.into(),
            400,
            "CR, LF or NUL",
        ),
        (
            json,
            r#"{"topic": "a\rb", "data": "x"}"#.into(),
            400,
            "CR, LF or NUL",
        ),
        (
            json,
            r#"{"topic": "a\u0000b", "data": "x"}"#.into(),
            400,
            "CR, LF or NUL",
        ),
        (
            json,
            r#"{"event": "", "data": "x"}"#.into(),
            400,
            "event must not be empty",
        ),
        (
            json,
            r#"{"event": "a\nb", "data": "x"}"#.into(),
            400,
            "CR, LF or NUL",
        ),
        (
            json,
            format!(r#"{{"event": "{long}", "data": "x"}}"#),
            400,
            "longer than 256",
        ),
        (
            Some("text/html"),
            "x".into(),
            415,
            "unsupported content type",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "a=b".into(),
            415,
            "unsupported content type",
        ),
        (None, "x".into(), 415, "unsupported content type"),
    ];
    for (content_type, body, status, message) in cases {
        let (got, json) = send(
            &server,
            reqwest::Method::POST,
            "/publish",
            content_type,
            body.clone(),
        )
        .await;
        assert_eq!(got.as_u16(), status, "{body}");
        let error = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no JSON error for {body}: {json}"));
        assert!(error.contains(message), "{body}: {error}");
    }
    let (status, json) = send(
        &server,
        reqwest::Method::POST,
        "/publish?topic=a%0Ab",
        Some("text/plain"),
        "x",
    )
    .await;
    assert_eq!((status.as_u16(), json["error"].is_string()), (400, true));
    let invalid_utf8 = vec![b'a', 0xff, b'b'];
    let (status, json) = send(
        &server,
        reqwest::Method::POST,
        "/publish",
        Some("text/plain"),
        invalid_utf8,
    )
    .await;
    assert_eq!(status, 400);
    assert!(json["error"].as_str().unwrap().contains("UTF-8"));
    // Over 64 KiB: 413, whether announced by Content-Length or streamed.
    let big = "x".repeat(64 * 1024 + 1);
    let (status, json) = send(
        &server,
        reqwest::Method::POST,
        "/publish",
        Some("text/plain"),
        big.clone(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(json["error"].as_str().unwrap().contains("larger than"));
    let chunks = futures::stream::iter(
        big.into_bytes()
            .chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _) = send(
        &server,
        reqwest::Method::POST,
        "/publish",
        Some("text/plain"),
        reqwest::Body::wrap_stream(chunks),
    )
    .await;
    assert_eq!(status, 413);
    // Exactly 64 KiB is fine.
    let (status, _) = send(
        &server,
        reqwest::Method::POST,
        "/publish",
        Some("text/plain"),
        "y".repeat(64 * 1024),
    )
    .await;
    assert_eq!(status, 202);
    // Nothing of the bad requests was published: the first event the
    // subscriber sees is the good one, and the server still serves.
    assert_eq!(reader.expect(WAIT).await.data.len(), 64 * 1024);
    let (status, _) = send(
        &server,
        reqwest::Method::POST,
        "/publish",
        Some("text/plain"),
        "after",
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(reader.expect(WAIT).await.data, "after");
    let stats: serde_json::Value = reqwest::get(server.url("/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["published"], 2);
    server.stop().await;
}

#[tokio::test]
async fn publish_token_is_required_when_configured() {
    let server = TestServer::start(&["--publish-token", "s3cret"]).await;
    let client = reqwest::Client::new();
    let body = r#"{"data": "x"}"#;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Bearer s3cret2"),
        Some("Basic s3cret"),
    ] {
        let mut request = client
            .post(server.url("/publish"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        let json: serde_json::Value = response.json().await.unwrap();
        assert!(json["error"].as_str().unwrap().contains("token"));
    }
    let response = client
        .post(server.url("/publish"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer s3cret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    let response = client.get(server.url("/publish")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let response = client.delete(server.url("/sse")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    server.stop().await;
}

#[tokio::test]
async fn data_may_be_any_json_value_published_as_compact_json() {
    let server = TestServer::start(&[]).await;
    let mut reader = EventReader::open(&server.url("/sse"), None).await;
    let client = reqwest::Client::new();
    for (body, expected) in [
        (
            r#"{"data": {"a": [1, 2.5, true], "b": null}}"#,
            r#"{"a":[1,2.5,true],"b":null}"#,
        ),
        (r#"{"data": [ "x" , 1 ]}"#, r#"["x",1]"#),
        (r#"{"data": 5}"#, "5"),
        (r#"{"data": false}"#, "false"),
        (
            r#"{"data": "a string stays itself"}"#,
            "a string stays itself",
        ),
    ] {
        let response = client
            .post(server.url("/publish"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{body}");
        assert_eq!(reader.expect(WAIT).await.data, expected, "{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_json_array_is_a_batch_stored_in_order_all_or_nothing() {
    let server = TestServer::start(&[]).await;
    let mut a = EventReader::open(&server.url("/sse?topic=a"), None).await;
    let mut both = EventReader::open(&server.url("/sse?topic=a&topic=b"), None).await;
    let batch = r#"[
        {"topic": "a", "data": "one"},
        {"topic": "b", "event": "tick", "data": {"n": 2}},
        {"topic": "a", "data": "three"}
    ]"#;
    let (status, body) = send(
        &server,
        reqwest::Method::POST,
        "/publish",
        Some("application/json"),
        batch,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<String> = body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let got: Vec<(String, String, String)> = {
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = both.expect(WAIT).await;
            got.push((e.id, e.event, e.data));
        }
        got
    };
    assert_eq!(
        got,
        vec![
            (ids[0].clone(), "message".to_owned(), "one".to_owned()),
            (ids[1].clone(), "tick".to_owned(), r#"{"n":2}"#.to_owned()),
            (ids[2].clone(), "message".to_owned(), "three".to_owned()),
        ]
    );
    assert_eq!(a.expect(WAIT).await.data, "one");
    assert_eq!(a.expect(WAIT).await.data, "three");
    // Any bad element: 400 naming it, and nothing of the batch is stored.
    for (bad, index) in [
        (
            r#"[{"topic": "a", "data": "x"}, {"topic": "a"}]"#,
            "event 1",
        ),
        (r#"[{"topic": "a", "data": "x"}, "just text"]"#, "event 1"),
        (
            r#"[{"data": "x"}, {"data": "y"}, {"topic": "", "data": "z"}]"#,
            "event 2",
        ),
        (r#"[{"topic": "a", "data": "x", "extra": 1}]"#, "event 0"),
        ("[]", "empty"),
    ] {
        let (status, body) = send(
            &server,
            reqwest::Method::POST,
            "/publish",
            Some("application/json"),
            bad,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains(index), "{bad}: {error}");
    }
    let too_many: Vec<serde_json::Value> = (0..1_001)
        .map(|_| serde_json::json!({"topic": "a", "data": "x"}))
        .collect();
    let (status, body) = send(
        &server,
        reqwest::Method::POST,
        "/publish",
        Some("application/json"),
        serde_json::to_string(&too_many).unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // The next event on each stream is the marker: nothing was stored.
    let (status, _) = send(
        &server,
        reqwest::Method::POST,
        "/publish?topic=a",
        Some("text/plain"),
        "marker",
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(a.expect(WAIT).await.data, "marker");
    assert_eq!(both.expect(WAIT).await.data, "marker");
    server.stop().await;
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_first_id_and_stores_nothing() {
    let server = TestServer::start(&[]).await;
    let mut reader = EventReader::open(&server.url("/sse?topic=k"), None).await;
    let client = reqwest::Client::new();
    let post = |key: &str, data: &str| {
        client
            .post(server.url("/publish"))
            .header("idempotency-key", key)
            .json(&serde_json::json!({"topic": "k", "data": data}))
            .send()
    };
    let first = post("order-1", "first").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: serde_json::Value = first.json().await.unwrap();
    // Concurrent retries: one stored event between them all.
    let retries = futures::future::join_all((0..5).map(|_| post("order-1", "retry"))).await;
    for retry in retries {
        let retry = retry.unwrap();
        assert_eq!(retry.status(), 202);
        let body: serde_json::Value = retry.json().await.unwrap();
        assert_eq!(body, first, "a retry answers the first body");
    }
    let other = post("order-2", "second").await.unwrap();
    assert_eq!(other.status(), 202);
    let event = reader.expect(WAIT).await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (first["id"].as_str().unwrap(), "first")
    );
    assert_eq!(reader.expect(WAIT).await.data, "second");
    // Bad keys: 400, nothing stored.
    for key in [String::new(), "x".repeat(257)] {
        let bad = post(&key, "bad key").await.unwrap();
        assert_eq!(bad.status(), 400, "a key of {} bytes", key.len());
    }
    let batch = client
        .post(server.url("/publish"))
        .header("idempotency-key", "batch")
        .json(&serde_json::json!([{"topic": "k", "data": "in a batch"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 400);
    assert_eq!(
        post(&"y".repeat(256), "long key").await.unwrap().status(),
        202
    );
    assert_eq!(reader.expect(WAIT).await.data, "long key");
    server.stop().await;
}
