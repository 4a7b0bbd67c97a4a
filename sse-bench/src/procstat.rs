//! CPU time and resident memory of processes, from /proc: the bench's own,
//! and the server's (with its descendants, for multi-process servers such as
//! nginx or Pushpin).

use std::path::PathBuf;

use crate::limits;

/// CPU seconds and resident KiB of a set of processes at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Sample {
    /// User plus system CPU seconds.
    pub cpu_s: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Processes that could be read.
    pub processes: usize,
}

/// Reads one process; `None` when it does not exist (any more).
pub fn read(pid: u32) -> Option<Sample> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(base.join("stat")).ok()?;
    let (utime, stime, _) = parse_stat(&stat)?;
    let status = std::fs::read_to_string(base.join("status")).ok()?;
    let rss_kib = parse_vm_rss(&status).unwrap_or(0);
    let ticks = limits::clock_ticks() as f64;
    Some(Sample {
        cpu_s: (utime + stime) as f64 / ticks,
        rss_kib,
        processes: 1,
    })
}

/// This process.
pub fn this() -> Sample {
    read(std::process::id()).unwrap_or_default()
}

/// `pids` and all their descendants, summed.
pub fn tree(pids: &[u32]) -> Sample {
    let mut all: Vec<u32> = pids.to_vec();
    // Parent links of every process, to find descendants.
    let mut links = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((_, _, ppid)) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                links.push((pid, ppid));
            }
        }
    }
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for &(pid, ppid) in &links {
            if ppid == parent && !all.contains(&pid) {
                all.push(pid);
            }
        }
        i += 1;
    }
    let mut sum = Sample::default();
    for pid in all {
        if let Some(s) = read(pid) {
            sum.cpu_s += s.cpu_s;
            sum.rss_kib += s.rss_kib;
            sum.processes += 1;
        }
    }
    sum
}

/// `(utime, stime, ppid)` from /proc/PID/stat; the command name may hold
/// spaces and parentheses, so fields are counted after the last ')'.
fn parse_stat(stat: &str) -> Option<(u64, u64, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    Some((utime, stime, ppid))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let stat =
            "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 5 1000 200";
        assert_eq!(parse_stat(stat), Some((250, 30, 1)));
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t  1234 kB\n"), Some(1234));
    }

    #[test]
    fn reads_this_process_and_its_tree() {
        let me = this();
        assert!(me.rss_kib > 0);
        assert_eq!(me.processes, 1);
        let t = tree(&[std::process::id()]);
        // Other test threads allocate meanwhile: compare presence, not bytes.
        assert!(t.processes >= 1 && t.rss_kib > 0);
        assert!(read(u32::MAX).is_none());
    }
}
