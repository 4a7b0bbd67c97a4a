//! `--report FILE.svg|FILE.html`: the picture of a run, and of saved runs
//! side by side, self-contained.

use crate::support::{bench, Behaviour, FakeServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_run_draws_svg_and_html_and_saved_runs_share_the_axes() {
    // A server per run: the test server's history does not tell runs apart.
    let servers = [
        FakeServer::start(Behaviour {
            retry_ms: 200,
            ..Default::default()
        })
        .await,
        FakeServer::start(Behaviour {
            retry_ms: 200,
            ..Default::default()
        })
        .await,
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("run.svg");
    let args = |label: &'static str, report: &std::path::Path| {
        let url = servers[usize::from(label == "beta")].url();
        vec![
            "--url".to_string(),
            url,
            "--clients".into(),
            "10".into(),
            "--rate".into(),
            "20".into(),
            "--duration".into(),
            "2s".into(),
            "--scenario".into(),
            "reconnect-storm".into(),
            "--label".into(),
            label.into(),
            "--report".into(),
            report.display().to_string(),
        ]
    };
    let a = args("alpha", &svg);
    let run = bench(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(run.code, 0, "{}\n{:#}", run.stderr, run.json);
    let text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(text.contains("<svg"), "not an SVG");
    for part in [
        "Delivery latency per second",
        "Delivered events per second",
        "Latency histogram",
        "storm: 5 cut",
        "alpha p99",
    ] {
        assert!(text.contains(part), "the SVG lacks {part:?}");
    }
    assert!(!text.contains("<script") && !text.contains("<image"));

    // A second run, then both drawn from their saved JSON on shared axes.
    let html = dir.path().join("run.html");
    let b = args("beta", &html);
    let second = bench(&b.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(page.starts_with("<!doctype html>") && page.contains("<svg"));
    // Self-contained: nothing fetched from elsewhere.
    for outside in ["<script", "<link", "src=", "@import", "url("] {
        assert!(
            !page.contains(outside),
            "the page loads something: {outside}"
        );
    }
    let saved: Vec<std::path::PathBuf> = ["a.json", "b.json"]
        .iter()
        .zip([&run.json, &second.json])
        .map(|(name, json)| {
            let path = dir.path().join(name);
            std::fs::write(&path, json.to_string()).expect("save report");
            path
        })
        .collect();
    let both = dir.path().join("both.svg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sse-bench"))
        .arg("--table")
        .args(&saved)
        .arg("--report")
        .arg(&both)
        .output()
        .expect("run --table");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&both).expect("compare svg written");
    assert!(text.contains("alpha p99") && text.contains("beta p99"));
    assert!(text.contains("alpha: storm") && text.contains("beta: storm"));
}

#[tokio::test]
async fn a_report_name_without_svg_or_html_is_refused_at_once() {
    let run = bench(&["--report", "run.png", "--clients", "1"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(".svg or .html"), "{}", run.stderr);
}
