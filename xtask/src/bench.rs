//! `cargo xtask bench [--compare] [--runs N] [--peers LIST] [--no-build] [sse-bench args]`
//!
//! Builds `sse-server` and `sse-bench` in release, starts our server on a
//! free loopback port (`--tick 0`, so only the bench's events flow), runs
//! the bench against it with `--server-pid`, and stops the server.
//!
//! `--compare` runs the same load on Nchan (nginx + libnginx-mod-nchan),
//! Pushpin (with a private zurl and a GRIP origin served by
//! `sse-bench --grip-origin`) and our server, each a fresh private instance
//! per run with the configurations in `bench/peers/`, and prints one table
//! side by side (medians and spread when `--runs` > 1), and draws them on
//! shared axes (`report.svg`, `report.html`). Every `--scenario` of the bench
//! works here too. Reports, logs, the table and the pictures are kept under
//! `target/bench/<timestamp>/`. `--no-build` reuses
//! the release binaries already built (a long measurement series then runs
//! one build throughout, even while the work tree changes).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use xshell::{cmd, Shell};

use crate::deps::{self, Program};

/// How long a freshly started server or peer may take to accept connections
/// (nginx and Pushpin start in well under a second here).
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a stopped process may take to exit after SIGTERM before it is
/// killed (our server's own shutdown grace is 3 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(6);

/// Connection rate used for `--compare` unless one is given: Pushpin's
/// proxy answers 502/500 to part of a faster ramp (seen from 2,000/s), and
/// the peers should all get every client.
const COMPARE_CONNECT_RATE: &str = "1000";

/// Peers `--compare` runs, in table order.
const ALL_PEERS: &[&str] = &["ours", "nchan", "pushpin"];

/// What the peers need installed (Debian packages).
const PEER_PROGRAMS: &[Program] = &[
    Program {
        path: "/usr/sbin/nginx",
        package: "nginx",
    },
    Program {
        path: "/usr/lib/nginx/modules/ngx_nchan_module.so",
        package: "libnginx-mod-nchan",
    },
    Program {
        path: "/usr/bin/pushpin",
        package: "pushpin",
    },
    Program {
        path: "/usr/bin/zurl",
        package: "zurl",
    },
];

/// Flags that `--compare` sets per target, so the user may not.
const PER_TARGET_FLAGS: &[&str] = &[
    "--url",
    "--sub-url",
    "--pub-url",
    "--pub-body",
    "--pub-content-type",
    "--server-pid",
    "--label",
    "--json",
];

struct Options {
    compare: bool,
    no_build: bool,
    runs: usize,
    peers: Vec<String>,
    bench_args: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        compare: false,
        no_build: false,
        runs: 1,
        peers: ALL_PEERS.iter().map(|s| s.to_string()).collect(),
        bench_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--compare" => o.compare = true,
            "--no-build" => o.no_build = true,
            "--runs" => {
                let v = it.next().context("--runs needs a number")?;
                o.runs = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--runs {v:?}: expected a positive number"))?;
            }
            "--peers" => {
                let v = it.next().context("--peers needs a list, e.g. ours,nchan")?;
                o.peers = v.split(',').map(str::to_string).collect();
                if let Some(bad) = o.peers.iter().find(|p| !ALL_PEERS.contains(&p.as_str())) {
                    bail!("unknown peer {bad:?}; known: {}", ALL_PEERS.join(", "));
                }
            }
            "--" => {}
            _ => o.bench_args.push(a.clone()),
        }
    }
    if (o.runs > 1 || o.peers.len() != ALL_PEERS.len()) && !o.compare {
        bail!("--runs and --peers go with --compare");
    }
    Ok(o)
}

/// Entry point for `cargo xtask bench`.
pub fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    if !opts.no_build {
        cmd!(sh, "cargo build --release -p sse-server -p sse-bench").run()?;
    }
    let root = sh.current_dir();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = root.join("target/bench").join(stamp.to_string());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if opts.compare {
        compare(sh, &root, &out, &opts)
    } else {
        single(&root, &out, &opts.bench_args)
    }
}

/// Our server, the bench against it, stop.
fn single(root: &Path, out: &Path, bench_args: &[String]) -> Result<()> {
    let target = start_ours(root, &out.join("ours"))?;
    let mut cmd = bench_command(root, &target, bench_args);
    let status = cmd.status().context("running sse-bench")?;
    drop(target);
    if !status.success() {
        bail!("sse-bench exited with {status}");
    }
    Ok(())
}

/// Every peer, `runs` times, interleaved; then the side-by-side table.
fn compare(sh: &Shell, root: &Path, out: &Path, opts: &Options) -> Result<()> {
    if let Some(f) = opts
        .bench_args
        .iter()
        .find(|a| PER_TARGET_FLAGS.contains(&a.split('=').next().unwrap_or(a)))
    {
        bail!("{f} is set per target by --compare; leave it out");
    }
    if opts.peers.iter().any(|p| p != "ours") {
        deps::ensure(sh, PEER_PROGRAMS)?;
    }
    let mut bench_args = opts.bench_args.clone();
    if !bench_args.iter().any(|a| a.starts_with("--connect-rate")) {
        bench_args.extend(["--connect-rate".into(), COMPARE_CONNECT_RATE.into()]);
    }
    let mut reports = Vec::new();
    let mut unclean = 0;
    for run in 1..=opts.runs {
        for peer in &opts.peers {
            let dir = out.join(format!("{peer}-{run}"));
            eprintln!("xtask: run {run}/{}: {peer}", opts.runs);
            let target = match peer.as_str() {
                "ours" => start_ours(root, &dir)?,
                "nchan" => start_nchan(root, &dir)?,
                _ => start_pushpin(root, &dir)?,
            };
            let report = dir.join("report.json");
            let file = std::fs::File::create(&report)
                .with_context(|| format!("creating {}", report.display()))?;
            let status = bench_command(root, &target, &bench_args)
                .arg("--json")
                .stdout(file)
                .status()
                .context("running sse-bench")?;
            drop(target);
            match status.code() {
                Some(0) => {}
                Some(1) => {
                    unclean += 1;
                    eprintln!("xtask: {peer} run {run} was not clean (see the table)");
                }
                _ => bail!(
                    "sse-bench failed on {peer} ({status}); logs in {}",
                    dir.display()
                ),
            }
            reports.push(report);
        }
    }
    // The table, and the runs drawn on shared axes (SVG for documents,
    // HTML to open in a browser).
    let mut text = String::new();
    for picture in ["report.svg", "report.html"] {
        let table = Command::new(root.join("target/release/sse-bench"))
            .arg("--table")
            .args(&reports)
            .arg("--report")
            .arg(out.join(picture))
            .output()
            .context("running sse-bench --table")?;
        if !table.status.success() {
            bail!(
                "sse-bench --table failed: {}",
                String::from_utf8_lossy(&table.stderr)
            );
        }
        text = String::from_utf8_lossy(&table.stdout).into_owned();
    }
    print!("{text}");
    std::fs::write(out.join("table.md"), text.as_bytes())?;
    eprintln!("xtask: reports and logs in {}", out.display());
    if unclean > 0 {
        bail!("{unclean} run(s) lost deliveries or connections");
    }
    Ok(())
}

/// A process we started; SIGTERM (then SIGKILL) when dropped, so every
/// exit path, errors included, stops it.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process already exited (a bad config, a taken port).
    fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{} exited at start ({status}):\n{text}", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "xtask: {} (pid {pid}) ignored SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running target: its processes (stopped in reverse start order when
/// dropped), what to measure, and how the bench reaches it.
struct Target {
    label: &'static str,
    measure: Vec<u32>,
    flags: Vec<String>,
    procs: Vec<Proc>,
}

impl Drop for Target {
    fn drop(&mut self) {
        while let Some(p) = self.procs.pop() {
            drop(p);
        }
    }
}

fn bench_command(root: &Path, target: &Target, args: &[String]) -> Command {
    let mut cmd = Command::new(root.join("target/release/sse-bench"));
    cmd.args(&target.flags).args(["--label", target.label]);
    for pid in &target.measure {
        cmd.args(["--server-pid", &pid.to_string()]);
    }
    cmd.args(args);
    cmd
}

/// `N` distinct loopback ports, free at the moment of asking: the
/// listeners are held until all are chosen, or the kernel could hand out
/// the same port twice.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        *port = l.local_addr()?.port();
        held.push(l);
    }
    Ok(ports)
}

/// Waits until `GET path` on `port` answers with a 200 status line.
fn wait_ready(port: u16, path: &str, proc: &mut Proc, log: &Path) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        proc.check_alive(log)?;
        if probe(addr, path).unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer GET {path} on {addr} within {READY_TIMEOUT:?}; log: {}",
                proc.name,
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn probe(addr: SocketAddr, path: &str) -> std::io::Result<bool> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    Ok(buf.starts_with(b"HTTP/1.1 200"))
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Copies a peer config from `bench/peers/`, filling in `@NAME@` values.
fn render(root: &Path, src: &str, dest: &Path, vars: &[(&str, String)]) -> Result<()> {
    let path = root.join("bench/peers").join(src);
    let mut text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    std::fs::write(dest, text).with_context(|| format!("writing {}", dest.display()))
}

fn start_ours(root: &Path, dir: &Path) -> Result<Target> {
    fresh_dir(dir)?;
    let [port] = free_ports()?;
    let log = dir.join("sse-server.log");
    let mut server = Proc::spawn(
        "sse-server",
        Command::new(root.join("target/release/sse-server"))
            .args(["--addr", &format!("127.0.0.1:{port}"), "--tick", "0"])
            .env("RUST_LOG", "warn"),
        &log,
    )?;
    wait_ready(port, "/healthz", &mut server, &log)?;
    Ok(Target {
        label: "ours",
        measure: vec![server.pid()],
        flags: vec!["--url".into(), format!("http://127.0.0.1:{port}")],
        procs: vec![server],
    })
}

fn start_nchan(root: &Path, dir: &Path) -> Result<Target> {
    fresh_dir(dir)?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    let [port] = free_ports()?;
    let conf = dir.join("nginx.conf");
    render(
        root,
        "nchan/nginx.conf",
        &conf,
        &[
            ("DIR", dir.display().to_string()),
            ("PORT", port.to_string()),
        ],
    )?;
    let log = dir.join("nginx.out");
    let mut nginx = Proc::spawn(
        "nginx",
        Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf),
        &log,
    )?;
    wait_ready(port, "/sub?topic=xtask-probe", &mut nginx, &log)?;
    Ok(Target {
        label: "nchan",
        measure: vec![nginx.pid()],
        flags: [
            "--url".to_string(),
            format!("http://127.0.0.1:{port}"),
            "--sub-url".into(),
            "{url}/sub?topic={topic}".into(),
            "--pub-url".into(),
            "{url}/pub?topic={topic}".into(),
            "--pub-body".into(),
            "{payload}".into(),
            "--pub-content-type".into(),
            "text/plain".into(),
        ]
        .into(),
        procs: vec![nginx],
    })
}

fn start_pushpin(root: &Path, dir: &Path) -> Result<Target> {
    fresh_dir(dir)?;
    std::fs::create_dir_all(dir.join("run"))?;
    std::fs::create_dir_all(dir.join("log"))?;
    let [port, pub_port, origin_port] = free_ports()?;
    let vars = [
        ("DIR", dir.display().to_string()),
        ("PORT", port.to_string()),
        ("PUB_PORT", pub_port.to_string()),
        ("ORIGIN_PORT", origin_port.to_string()),
    ];
    for f in ["pushpin.conf", "routes", "zurl.conf"] {
        render(root, &format!("pushpin/{f}"), &dir.join(f), &vars)?;
    }
    let mut procs = Vec::new();
    let zurl_log = dir.join("zurl.log");
    let zurl = Proc::spawn(
        "zurl",
        Command::new("/usr/bin/zurl").arg(format!("--config={}", dir.join("zurl.conf").display())),
        &zurl_log,
    )?;
    let zurl_pid = zurl.pid();
    procs.push(zurl);
    let origin_log = dir.join("origin.log");
    let mut origin = Proc::spawn(
        "grip origin",
        Command::new(root.join("target/release/sse-bench"))
            .args(["--grip-origin", &format!("127.0.0.1:{origin_port}")]),
        &origin_log,
    )?;
    wait_ready(origin_port, "/?topic=probe", &mut origin, &origin_log)?;
    procs.push(origin);
    let log = dir.join("pushpin.out");
    let mut pushpin = Proc::spawn(
        "pushpin",
        Command::new("/usr/bin/pushpin")
            .arg(format!("--config={}", dir.join("pushpin.conf").display())),
        &log,
    )?;
    // Through Pushpin, zurl and the origin: the whole path is up.
    let ready = wait_ready(port, "/sse?topic=xtask-probe", &mut pushpin, &log);
    let pushpin_pid = pushpin.pid();
    procs.push(pushpin);
    ready?;
    Ok(Target {
        label: "pushpin",
        // The origin is the application, not Pushpin: not measured (our
        // server and Nchan have none). zurl is part of Pushpin's stack.
        measure: vec![pushpin_pid, zurl_pid],
        flags: [
            "--url".to_string(),
            format!("http://127.0.0.1:{port}"),
            "--pub-url".into(),
            format!("http://127.0.0.1:{pub_port}/publish/"),
            "--pub-body".into(),
            r#"{"items":[{"channel":"{topic}","formats":{"http-stream":{"content":"event: message\ndata: {payload}\n\n"}}}]}"#.into(),
        ]
        .into(),
        procs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtask_flags_are_separated_from_bench_flags() {
        let args: Vec<String> = [
            "--compare",
            "--runs",
            "3",
            "--peers",
            "ours,nchan",
            "--clients",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse(&args).unwrap();
        assert!(o.compare);
        assert_eq!(o.runs, 3);
        assert_eq!(o.peers, ["ours", "nchan"]);
        assert_eq!(o.bench_args, ["--clients", "10"]);
        assert!(parse(&["--runs".into(), "3".into()]).is_err());
        assert!(parse(&["--compare".into(), "--peers".into(), "caddy".into()]).is_err());
    }
}
