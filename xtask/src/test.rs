//! `cargo xtask test`: every test, with the programs they need.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::{deps, fuzz};

/// Installs what the tests need, then runs the whole workspace's tests with
/// the external ones (Redis, nginx, Chromium, the interop clients) turned
/// on, and, when no test filter is given, a short pass of every fuzz
/// target.
pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    deps::ensure(sh, deps::TEST_PROGRAMS)?;
    deps::ensure_interop(sh)?;
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
