//! `cargo xtask test`: every test, with the programs they need.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::{deps, fuzz};

/// Set for the whole test run. Tests must not read the developer's `SSE_*`
/// environment (they build configurations without it and clear it from
/// the binaries they start); these values would break any test that did:
/// a publish token refuses unauthenticated publishes, a history of one
/// loses replays, one client refuses the second, a clock adds events.
pub const HERMETIC_CHECK_ENV: &[(&str, &str)] = &[
    ("SSE_PUBLISH_TOKEN", "set-by-xtask-tests-must-ignore-it"),
    ("SSE_TOKEN", "set-by-xtask-tests-must-ignore-it"),
    ("SSE_TICK", "50ms"),
    ("SSE_HISTORY", "1"),
    ("SSE_MAX_CLIENTS", "1"),
    ("SSE_RETRY", "1ms"),
    ("SSE_URL", "http://127.0.0.1:9/"),
    ("SSE_WATCH_URL", "http://127.0.0.1:9/sse"),
];

/// Installs what the tests need, then runs the whole workspace's tests with
/// the external ones (Redis, nginx, Chromium, the interop clients) turned
/// on, and, when no test filter is given, a short pass of every fuzz
/// target.
pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    deps::ensure(sh, deps::TEST_PROGRAMS)?;
    deps::ensure_interop(sh)?;
    let _env: Vec<_> = HERMETIC_CHECK_ENV
        .iter()
        .map(|(name, value)| sh.push_env(name, value))
        .collect();
    cmd!(
        sh,
        "cargo test --workspace --features sse-server/external-tests {args...}"
    )
    .run()?;
    if args.is_empty() {
        fuzz::fuzz_all(sh, fuzz::SHORT_PASS_SECONDS)?;
    }
    Ok(())
}
