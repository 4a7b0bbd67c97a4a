//! `sse-bench completions bash|zsh|fish`: scripts that name every flag, and
//! that the shell itself accepts.

use std::process::{Command, Output, Stdio};

fn sse_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sse-bench"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sse-bench")
}

#[test]
fn each_shell_gets_a_script_naming_the_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let out = sse_bench(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for word in [
            "clients",
            "scenario",
            "storm-fraction",
            "slow-read-rate",
            "churn-rate",
            "token",
            "reconnect-storm",
        ] {
            assert!(text.contains(word), "{shell} script lacks {word}");
        }
    }
}

/// What the loaded bash script offers for `words` (the last one being
/// completed), asked as bash does on TAB.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let current = words.len() - 1;
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let probe = format!(
        "set -e; source '{}'; f=$(complete -p sse-bench | sed -E 's/.* -F ([^ ]+) .*/\\1/'); \
         COMP_WORDS=({}); COMP_CWORD={current}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; \
         \"$f\" sse-bench '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[current],
        words[current - 1],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_bash_script_completes_flags_and_scenarios() {
    let out = sse_bench(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("sse-bench.bash");
    std::fs::write(&script, &out.stdout).expect("write script");
    assert_eq!(
        bash_completes(&script, &["sse-bench", "--scen"]),
        ["--scenario"]
    );
    assert_eq!(
        bash_completes(&script, &["sse-bench", "--scenario", "reco"]),
        ["reconnect-storm"]
    );
    assert_eq!(
        bash_completes(&script, &["sse-bench", "comp"]),
        ["completions"]
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = sse_bench(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}
