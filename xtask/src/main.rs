//! `cargo xtask <task>`: the project's commands, in Rust so they run
//! wherever cargo does.
//!
//! - `serve [ARGS]`  builds and runs the server (release) on :3000
//! - `test`          everything the project checks (installs what tests need)
//! - `lint`          formatting and clippy with warnings denied
//! - `ci`            `lint`, then `test` (what .ci/run runs, in two steps)
//! - `watch [ARGS]`  runs `sse-cli watch`
//! - `bench [ARGS]`  release build, a server, sse-bench against it
//! - `fuzz [SECONDS]` every fuzz target in `fuzz/` for SECONDS each

mod bench;
mod deps;
mod fuzz;
mod test;

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

const USAGE: &str = "\
usage: cargo xtask <task> [args]

tasks:
  serve [sse-server args]   build (release) and run the server on http://localhost:3000
  test                      run every test; installs redis-server, nginx, chromium and
                            chromium-driver with apt-get when root and missing
  lint                      cargo fmt --check and clippy -D warnings
  ci                        lint, then test
  watch [sse-cli args]      run `sse-cli watch` (default http://localhost:3000/sse)
  bench [sse-bench args]    release build, start a server, run sse-bench, stop the server
                            (--compare: the same load on Nchan, Pushpin and ours)
  fuzz [SECONDS]            run every cargo-fuzz target for SECONDS each (default 60;
                            installs nightly and cargo-fuzz when missing)
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    // `cargo xtask serve -- --tick 1s` and `cargo xtask serve --tick 1s`
    // mean the same.
    let rest: Vec<String> = args.skip_while(|arg| arg == "--").collect();
    forget_outer_cargo();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match task.as_deref() {
        Some("serve") => cmd!(sh, "cargo run --release -p sse-server -- {rest...}").run()?,
        Some("watch") => cmd!(sh, "cargo run --release -p sse-cli -- watch {rest...}").run()?,
        Some("test") => test::run(&sh, &rest)?,
        Some("lint") => lint(&sh)?,
        Some("ci") => {
            lint(&sh)?;
            test::run(&sh, &rest)?;
        }
        Some("bench") => bench::run(&sh, &rest)?,
        Some("fuzz") => fuzz::run(&sh, &rest)?,
        Some("help" | "--help" | "-h") | None => print!("{USAGE}"),
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
    Ok(())
}

/// Formatting and clippy with warnings denied, over every target.
fn lint(sh: &Shell) -> Result<()> {
    cmd!(sh, "cargo fmt --all -- --check").run()?;
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --features sse-server/external-tests -- -D warnings"
    )
    .run()?;
    Ok(())
}

/// Removes what `cargo run` told xtask about the xtask package itself.
///
/// Build scripts (ring's, for one) rerun when variables such as
/// `CARGO_PKG_NAME` change; leaving xtask's values in the environment of
/// the cargo commands it runs would rebuild those crates every time one
/// alternates between `cargo xtask ...` and plain `cargo ...`.
fn forget_outer_cargo() {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let about_xtask = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE";
        if about_xtask {
            // Single-threaded here: nothing else reads the environment.
            std::env::remove_var(name);
        }
    }
}

/// The workspace root (this crate lives in `xtask/`).
fn project_root() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}
