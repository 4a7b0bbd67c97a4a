//! `sse-cli publish` against the scripted test server: the request it
//! sends, stdin line mode, and its error messages.

use serde_json::{json, Value};

use crate::support::{closed_port, run_cli, run_cli_with, Reply, TestServer};

/// A server that accepts every publish and answers with ids `id-1`, `id-2`...
async fn accepting_server() -> TestServer {
    TestServer::start(|connection, _| {
        Reply::status(
            202,
            "application/json",
            &format!(r#"{{"id": "id-{}"}}"#, connection + 1),
        )
    })
    .await
}

fn body(request: &crate::support::Request) -> Value {
    serde_json::from_slice(&request.body).expect("JSON body")
}

#[tokio::test]
async fn publishes_json_with_bearer_token_and_prints_the_id() {
    let server = accepting_server().await;
    let run = run_cli(&[
        "publish",
        "--url",
        &server.url(""),
        "--topic",
        "news",
        "--event",
        "headline",
        "--token",
        "s3cret",
        "line 1\nline 2",
    ])
    .await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "id-1\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/publish");
    assert_eq!(request.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        body(request),
        json!({"topic": "news", "event": "headline", "data": "line 1\nline 2"})
    );
}

#[tokio::test]
async fn leaves_topic_event_and_token_to_the_server_when_not_given() {
    let server = accepting_server().await;
    let run = run_cli_with(
        &["publish", "--url", &server.url("/"), "hello"],
        b"",
        &[("SSE_PUBLISH_TOKEN", None), ("SSE_URL", None)],
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    let request = &server.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(body(request), json!({"data": "hello"}));
}

#[tokio::test]
async fn token_and_url_come_from_the_environment() {
    let server = accepting_server().await;
    let url = server.url("");
    let run = run_cli_with(
        &["publish", "x"],
        b"",
        &[
            ("SSE_PUBLISH_TOKEN", Some("from-env")),
            ("SSE_URL", Some(&url)),
        ],
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer from-env")
    );
}

#[tokio::test]
async fn each_stdin_line_is_one_event_in_order() {
    let server = accepting_server().await;
    let url = server.url("");
    for args in [
        vec!["publish", "--url", url.as_str(), "--topic", "logs", "-"],
        vec!["publish", "--url", url.as_str(), "--topic", "logs"],
    ] {
        let before = server.requests().len();
        let run = run_cli_with(&args, b"first\r\nsecond\n\nlast, no newline", &[]).await;
        assert!(run.status.success(), "{run:?}");
        assert_eq!(run.lines().len(), 4, "{:?}", run.stdout);
        let data: Vec<Value> = server.requests()[before..]
            .iter()
            .map(|r| body(r)["data"].clone())
            .collect();
        assert_eq!(
            data,
            [
                json!("first"),
                json!("second"),
                json!(""),
                json!("last, no newline")
            ]
        );
        assert!(server.requests()[before..]
            .iter()
            .all(|r| body(r)["topic"] == json!("logs")));
    }
}

#[tokio::test]
async fn rejection_shows_the_servers_error_and_fails() {
    let server = TestServer::start(|_, _| {
        Reply::status(
            401,
            "application/json",
            r#"{"error": "missing or wrong bearer token"}"#,
        )
    })
    .await;
    let run = run_cli(&["publish", "--url", &server.url(""), "x"]).await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(
        run.stderr
            .contains("401 Unauthorized: missing or wrong bearer token"),
        "{:?}",
        run.stderr
    );
}

#[tokio::test]
async fn stdin_mode_stops_at_the_first_rejected_line() {
    let server = TestServer::start(|connection, _| match connection {
        0 => Reply::status(202, "application/json", r#"{"id": "1-1"}"#),
        _ => Reply::status(413, "application/json", r#"{"error": "body over 64 KiB"}"#),
    })
    .await;
    let run = run_cli_with(
        &["publish", "--url", &server.url("")],
        b"ok\ntoo big\nnever\n",
        &[],
    )
    .await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "1-1\n");
    assert!(
        run.stderr
            .contains("413 Payload Too Large: body over 64 KiB"),
        "{:?}",
        run.stderr
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn connection_refused_is_one_clear_error() {
    let url = format!("http://127.0.0.1:{}", closed_port().await);
    let run = run_cli(&["publish", "--url", &url, "x"]).await;
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
    assert!(
        run.stderr.contains("connection refused"),
        "{:?}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("{url}/publish")),
        "{:?}",
        run.stderr
    );
}
