//! `cargo xtask test`: every test, with the programs they need.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::deps;

/// Installs what the tests need, then runs the whole workspace's tests with
/// the external ones (Redis, nginx, Chromium) turned on.
pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    deps::ensure(sh, deps::TEST_PROGRAMS)?;
    cmd!(
        sh,
        "cargo test --workspace --features sse-server/external-tests {args...}"
    )
    .run()?;
    Ok(())
}
