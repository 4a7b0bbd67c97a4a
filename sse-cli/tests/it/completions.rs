//! `sse-cli completions bash|zsh|fish`: scripts that name every subcommand
//! and flag, and that the shell itself accepts.

use std::process::Stdio;

use crate::support::run_cli;

#[tokio::test]
async fn each_shell_gets_a_script_naming_every_subcommand_and_flag() {
    for shell in ["bash", "zsh", "fish"] {
        let run = run_cli(&["completions", shell]).await;
        assert!(run.status.success(), "{shell}: {run:?}");
        for word in [
            "watch",
            "publish",
            "completions",
            "check",
            "publish-url",
            "idle-timeout",
            "connect-timeout",
            "token",
        ] {
            assert!(run.stdout.contains(word), "{shell} script lacks {word}");
        }
    }
}

/// What the loaded bash script offers for `words` (the last one being
/// completed), asked as bash does on TAB.
async fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let current = words.len() - 1;
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    // Find the function the script registered for `sse-cli`, then call it
    // with COMP_* set up for `line` and the cursor at its end.
    let probe = format!(
        "set -e; source '{}'; f=$(complete -p sse-cli | sed -E 's/.* -F ([^ ]+) .*/\\1/'); \
         COMP_WORDS=({}); COMP_CWORD={current}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; \
         \"$f\" sse-cli '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[current],
        words[current - 1],
    );
    let output = tokio::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run bash");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_bash_script_completes_subcommands_and_their_flags() {
    let run = run_cli(&["completions", "bash"]).await;
    assert!(run.status.success(), "{run:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("sse-cli.bash");
    std::fs::write(&script, &run.stdout).expect("write script");
    assert_eq!(bash_completes(&script, &["sse-cli", "wa"]).await, ["watch"]);
    assert_eq!(
        bash_completes(&script, &["sse-cli", "watch", "--idle"]).await,
        ["--idle-timeout"]
    );
    assert_eq!(
        bash_completes(&script, &["sse-cli", "publish", "--tok"]).await,
        ["--token"]
    );
}

#[tokio::test]
async fn an_unknown_shell_is_a_usage_error() {
    let run = run_cli(&["completions", "tcsh"]).await;
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(run.stderr.contains("bash"), "{}", run.stderr);
}
