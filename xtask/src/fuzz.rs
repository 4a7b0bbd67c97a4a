//! `cargo xtask fuzz [SECONDS]`: every cargo-fuzz target in `fuzz/`, each
//! for a bounded time, starting from the committed corpus.

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The fuzz targets (`fuzz/fuzz_targets/NAME.rs`). Adding one is adding its
/// name here (and a `[[bin]]` in `fuzz/Cargo.toml`).
pub const TARGETS: &[&str] = &["publish_body", "query", "last_event_id", "http_head"];

/// Seconds per target when none are given.
const DEFAULT_SECONDS: u64 = 60;
/// Seconds per target in the short pass `cargo xtask test` runs: enough to
/// replay the corpus and explore a little, and CI stays fast.
pub const SHORT_PASS_SECONDS: u64 = 10;

/// Parses `[SECONDS]` and fuzzes every target for that long.
pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let seconds = match args {
        [] => DEFAULT_SECONDS,
        [seconds] => seconds
            .parse()
            .with_context(|| format!("`{seconds}`: expected a number of seconds per target"))?,
        _ => bail!("usage: cargo xtask fuzz [SECONDS]"),
    };
    fuzz_all(sh, seconds)
}

/// Fuzzes every target for `seconds`; fails on the first crash (libFuzzer
/// leaves the input in `fuzz/artifacts/TARGET/`).
pub fn fuzz_all(sh: &Shell, seconds: u64) -> Result<()> {
    ensure_tools(sh)?;
    let max_time = format!("-max_total_time={seconds}");
    for target in TARGETS {
        // New inputs go to the first directory, under target/, so the
        // committed seeds (the second) stay as they are.
        let scratch = format!("target/fuzz-corpus/{target}");
        let seeds = format!("corpus/{target}");
        sh.create_dir(format!("fuzz/{scratch}"))?;
        let _dir = sh.push_dir("fuzz");
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        cmd!(
            sh,
            "cargo +nightly fuzz run {target} {scratch} {seeds} -- {max_time} -rss_limit_mb=2048"
        )
        .run()
        .with_context(|| format!("fuzz target {target} failed; see fuzz/artifacts/{target}/"))?;
    }
    Ok(())
}

/// Installs the nightly toolchain and cargo-fuzz when they are missing.
fn ensure_tools(sh: &Shell) -> Result<()> {
    if cmd!(sh, "cargo +nightly --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        eprintln!("xtask: installing the nightly toolchain (cargo fuzz needs it)");
        cmd!(sh, "rustup toolchain install nightly --profile minimal").run()?;
    }
    if cmd!(sh, "cargo fuzz --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_err()
    {
        eprintln!("xtask: installing cargo-fuzz");
        cmd!(sh, "cargo install cargo-fuzz --locked").run()?;
    }
    Ok(())
}
