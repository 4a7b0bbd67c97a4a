//! The programs from outside Rust that tests and benchmarks run.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

/// A program and the Debian package that provides it.
pub struct Program {
    pub path: &'static str,
    pub package: &'static str,
}

/// What `cargo xtask test` needs: Redis and nginx for the scale-out tests,
/// Chromium and its WebDriver for the page.
pub const TEST_PROGRAMS: &[Program] = &[
    Program {
        path: "/usr/bin/redis-server",
        package: "redis-server",
    },
    Program {
        path: "/usr/sbin/nginx",
        package: "nginx",
    },
    Program {
        path: "/usr/bin/chromium",
        package: "chromium",
    },
    Program {
        path: "/usr/bin/chromedriver",
        package: "chromium-driver",
    },
];

/// Installs the missing programs with apt-get when running as root;
/// otherwise says exactly what to install and fails.
pub fn ensure(sh: &Shell, programs: &[Program]) -> Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|p| !std::path::Path::new(p.path).exists())
        .map(|p| p.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root(sh) {
        bail!(
            "missing programs; install them with:\n    sudo apt-get install -y {}",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let _env = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    cmd!(sh, "apt-get update -q").run()?;
    cmd!(
        sh,
        "apt-get install -y -q --no-install-recommends {missing...}"
    )
    .run()?;
    Ok(())
}

fn is_root(sh: &Shell) -> bool {
    cmd!(sh, "id -u")
        .quiet()
        .read()
        .is_ok_and(|uid| uid.trim() == "0")
}
