//! `cargo xtask bench`: placeholder until sse-bench lands.

use anyhow::{bail, Result};
use xshell::Shell;

pub fn run(_sh: &Shell, _args: &[String]) -> Result<()> {
    bail!("not yet")
}
