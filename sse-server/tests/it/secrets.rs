//! Secrets from files, and secrets never printed: the real binary.

use std::{process::Stdio, time::Duration};

use tokio::io::AsyncReadExt;

use crate::support::BinaryServer;

/// Runs the binary with only `env`, gives it up to `wait` to exit, and
/// returns its exit code (None if it was still running) and stderr.
async fn run_briefly(args: &[&str], env: &[(&str, &str)], wait: Duration) -> (Option<i32>, String) {
    let mut child = crate::support::server_command()
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sse-server");
    let code = match tokio::time::timeout(wait, child.wait()).await {
        Ok(status) => status.expect("wait").code(),
        Err(_) => {
            child.kill().await.expect("kill");
            None
        }
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    (code, stderr)
}

#[tokio::test]
async fn publish_token_file_keeps_the_token_out_of_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "t0k3n-from-a-file\n").unwrap();
    let server = BinaryServer::start(
        "127.0.0.1:0",
        &["--publish-token-file", file.to_str().unwrap()],
    )
    .await;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("t0k3n"));
    let client = reqwest::Client::new();
    let publish = |token: Option<&str>| {
        let mut request = client
            .post(server.url("/publish"))
            .header("content-type", "text/plain")
            .body("x");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(publish(None).await.unwrap().status(), 401);
    assert_eq!(
        publish(Some("t0k3n-from-a-fil")).await.unwrap().status(),
        401
    );
    assert_eq!(
        publish(Some("t0k3n-from-a-file")).await.unwrap().status(),
        202
    );
    server.terminate().await;
}

#[tokio::test]
async fn a_redis_password_with_a_slash_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker");
    // Port 1: nothing listens; whatever the server does about that, its
    // log must not show the password.
    std::fs::write(&file, "redis://:pa/ss@w0rd@127.0.0.1:1/0\n").unwrap();
    let args = ["--addr", "127.0.0.1:0", "--tick", "0"];
    let (_, stderr) = run_briefly(
        &[&args[..], &["--broker-file", file.to_str().unwrap()]].concat(),
        &[("RUST_LOG", "debug")],
        Duration::from_secs(5),
    )
    .await;
    assert!(stderr.contains(":***@127.0.0.1:1"), "{stderr}");
    for secret in ["pa/ss", "w0rd", "pa%2F"] {
        assert!(!stderr.contains(secret), "{secret} in {stderr}");
    }
}

#[tokio::test]
async fn a_malformed_broker_is_refused_without_echoing_it() {
    let bad = "postgres://admin:hunter2@db:5432";
    let (code, stderr) = run_briefly(&["--broker", bad], &[], Duration::from_secs(10)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--broker") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    let (code, stderr) = run_briefly(&[], &[("SSE_BROKER", bad)], Duration::from_secs(10)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // A broker file that does not hold a URL is named, its content is not.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker");
    std::fs::write(&file, bad).unwrap();
    let (code, stderr) = run_briefly(
        &["--broker-file", file.to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("broker") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreadable_secret_file_is_one_clear_line() {
    let (code, stderr) = run_briefly(
        &[
            "--addr",
            "127.0.0.1:0",
            "--publish-token-file",
            "/nonexistent/token",
        ],
        &[("RUST_BACKTRACE", "1")],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read /nonexistent/token: No such file"),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[tokio::test]
async fn help_lists_the_endpoints_and_the_duration_syntax() {
    let output = crate::support::server_command()
        .arg("--help")
        .env_clear()
        .output()
        .await
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "GET  /sse",
        "POST /publish",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "500ms",
        "a bare number is seconds",
        "redis://[[USER]:PASSWORD@]HOST:PORT[/DB]",
        "--publish-token-file",
        "--broker-file",
    ] {
        assert!(help.contains(needle), "{needle} in --help");
    }
    assert!(!help.contains("seed"), "--help names the seed");
}
