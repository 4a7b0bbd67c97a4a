//! Human output and colour: plain when piped or when `NO_COLOR` is set,
//! coloured on a real terminal (a pty from util-linux `script`).

use std::process::Stdio;

use crate::support::{run_cli_with, Reply, TestServer};

const ESC: char = '\u{1b}';

async fn stream_server() -> TestServer {
    TestServer::start(|_, _| {
        Reply::sse(vec![
            b"id: 1\nevent: tick\ndata: hello\n\ndata: two\ndata: lines \x1b[31mred\x1b[0m\n\n"
                .to_vec(),
        ])
    })
    .await
}

/// Runs `sse-cli ARGS` on a pty and returns what the terminal showed.
async fn run_on_terminal(args: &[&str], no_color: Option<&str>) -> String {
    let command = std::iter::once(env!("CARGO_BIN_EXE_sse-cli"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = crate::support::hermetic("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match no_color {
        Some(value) => script.env("NO_COLOR", value),
        None => script.env_remove("NO_COLOR"),
    };
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), script.output())
        .await
        .expect("script finishes")
        .expect("run script (util-linux)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn piped_human_output_is_plain_and_escapes_control_characters() {
    let server = stream_server().await;
    let run = run_cli_with(
        &["watch", "--no-reconnect", &server.url("/")],
        b"",
        &[("NO_COLOR", None)],
    )
    .await;
    assert!(run.status.success(), "{run:?}");
    assert!(!run.stdout.contains(ESC), "{:?}", run.stdout);
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "one line per event: {:?}", run.stdout);
    assert!(lines[0].ends_with("  tick  id=1  hello"), "{lines:?}");
    assert!(
        lines[1].ends_with("  message  id=1  two\\nlines \\u{1b}[31mred\\u{1b}[0m"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn terminal_output_is_coloured() {
    let server = stream_server().await;
    let shown = run_on_terminal(&["watch", "--no-reconnect", &server.url("/")], None).await;
    assert!(shown.contains("\u{1b}[1;36mtick\u{1b}[0m"), "{shown:?}");
    // The data's own escape sequences are still not passed through.
    assert!(!shown.contains("\u{1b}[31m"), "{shown:?}");
}

#[tokio::test]
async fn no_color_turns_colour_off_on_a_terminal() {
    let server = stream_server().await;
    let shown = run_on_terminal(&["watch", "--no-reconnect", &server.url("/")], Some("1")).await;
    assert!(shown.contains("tick  id=1  hello"), "{shown:?}");
    assert!(!shown.contains(ESC), "{shown:?}");
}

#[tokio::test]
async fn json_is_never_coloured() {
    let server = stream_server().await;
    let shown = run_on_terminal(
        &["watch", "--json", "--no-reconnect", &server.url("/")],
        None,
    )
    .await;
    assert!(
        shown.starts_with(r#"{"event": "tick", "data": "hello", "id": "1"}"#),
        "{shown:?}"
    );
    assert!(!shown.replace("\\u001b", "").contains(ESC), "{shown:?}");
}
