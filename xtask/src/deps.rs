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
    // The interop tests' clients (Python's httpx-sse, npm's eventsource)
    // and schemathesis, installed with these under target/interop.
    Program {
        path: "/usr/bin/pip3",
        package: "python3-pip",
    },
    Program {
        path: "/usr/bin/npm",
        package: "npm",
    },
];

/// Where the interop tests find their clients (see
/// sse-server/tests/external/interop.rs).
const INTEROP_DIR: &str = "target/interop";
/// Python packages of the interop tests: httpx-sse at the version whose
/// empty-event behaviour the server works around, and schemathesis.
const PYTHON_PACKAGES: &[&str] = &["httpx-sse==0.4.3", "httpx", "schemathesis"];
/// npm packages of the interop tests. eventsource 3 runs on Debian 12's
/// Node 18 (4 needs Node 20).
const NPM_PACKAGES: &[&str] = &["eventsource@3"];

/// Installs the interop tests' Python and npm packages under
/// `target/interop/` (never system-wide), unless already there.
pub fn ensure_interop(sh: &Shell) -> Result<()> {
    let python = format!("{INTEROP_DIR}/python");
    if !sh.path_exists(format!("{python}/httpx_sse"))
        || !sh.path_exists(format!("{python}/schemathesis"))
    {
        eprintln!(
            "xtask: installing {} into {python}",
            PYTHON_PACKAGES.join(" ")
        );
        cmd!(
            sh,
            "python3 -m pip install --quiet --disable-pip-version-check --target {python} {PYTHON_PACKAGES...}"
        )
        .run()?;
    }
    let node = format!("{INTEROP_DIR}/node");
    if !sh.path_exists(format!("{node}/node_modules/eventsource")) {
        eprintln!("xtask: installing {} into {node}", NPM_PACKAGES.join(" "));
        cmd!(
            sh,
            "npm install --silent --no-audit --no-fund --prefix {node} {NPM_PACKAGES...}"
        )
        .run()?;
    }
    Ok(())
}

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
