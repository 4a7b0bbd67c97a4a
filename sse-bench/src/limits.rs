//! Operating-system limits: the open-file limit (raised to the hard limit at
//! start) and the ephemeral port range, checked before any connection is
//! opened so that a run that cannot fit says why instead of failing half-way.
#![allow(unsafe_code)] // getrlimit/setrlimit/sysconf have no safe std wrapper; each call is commented.

use std::path::Path;

/// File descriptors a process needs besides its client sockets (stdio,
/// epoll, the publisher's connection, /proc reads, runtime internals).
pub const FD_RESERVE: u64 = 64;

/// Ephemeral ports left for everything else on the machine when counting
/// how many client connections one source address can hold.
pub const PORT_RESERVE: u64 = 512;

/// Default Linux ephemeral range, used when /proc cannot be read.
const DEFAULT_PORT_RANGE: (u64, u64) = (32768, 60999);

/// Open-file limit after trying to raise the soft limit to the hard one.
#[derive(Debug, Clone, Copy)]
pub struct NoFile {
    /// Soft limit now in force.
    pub soft: u64,
    /// Hard limit (the ceiling without privileges).
    pub hard: u64,
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit.
///
/// # Errors
/// When the limit cannot be read (it is then unknown).
pub fn raise_nofile() -> std::io::Result<NoFile> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of
    // the call; getrlimit writes only into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit struct read by setrlimit; raising
        // the soft limit up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(NoFile {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Clock ticks per second for /proc CPU times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value; no memory is shared.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(100)
}

/// Asks the kernel to pick the local port of a socket bound to a source
/// address at `connect()` time, from the whole 4-tuple, instead of at
/// `bind()` time (`IP_BIND_ADDRESS_NO_PORT`). Without it every bind searches
/// for a port unused by *any* connection of that address, which at tens of
/// thousands of connections costs seconds of system CPU and times out.
///
/// # Errors
/// When the option cannot be set (the caller may go on without it).
pub fn bind_address_no_port(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller for the duration of
    // the call; the option value points to a live c_int whose size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&one).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The ephemeral port range `(low, high)` inclusive.
pub fn port_range() -> (u64, u64) {
    read_port_range(Path::new("/proc/sys/net/ipv4/ip_local_port_range"))
        .unwrap_or(DEFAULT_PORT_RANGE)
}

fn read_port_range(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    let low = it.next()?.ok()?;
    let high = it.next()?.ok()?;
    (high >= low).then_some((low, high))
}

/// Checks that `per_process` client sockets fit the open-file limit and
/// that `total` connections fit the ports of `sources` source addresses
/// (0 sources: the kernel picks, one range per destination).
///
/// # Errors
/// With a message that says which limit and what to do about it.
pub fn check(
    total: u64,
    per_process: u64,
    workers: u64,
    nofile: NoFile,
    sources: u64,
) -> anyhow::Result<()> {
    let need = per_process + FD_RESERVE;
    if need > nofile.soft {
        let min_workers = total.div_ceil(nofile.soft.saturating_sub(FD_RESERVE).max(1));
        anyhow::bail!(
            "{per_process} clients in one process need about {need} open files, but the limit is {} \
             (hard limit {}; raised as far as allowed). Use --workers {} (or more) to split the \
             clients over processes, or raise the hard limit (ulimit -Hn) as root.",
            nofile.soft,
            nofile.hard,
            min_workers.max(workers + 1),
        );
    }
    let (low, high) = port_range();
    let per_source = (high - low + 1).saturating_sub(PORT_RESERVE);
    let capacity = per_source * sources.max(1);
    if total > capacity {
        let needed = total.div_ceil(per_source.max(1));
        anyhow::bail!(
            "{total} connections need more local ports than {} source address(es) provide \
             (ephemeral range {low}-{high}, about {per_source} usable each). Add source addresses, \
             e.g. --source-ip {}",
            sources.max(1),
            (1..=needed + 1)
                .map(|i| format!("127.0.0.{i}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_can_be_read_and_raised() {
        let n = raise_nofile().unwrap();
        assert!(n.soft <= n.hard);
        assert_eq!(
            n.soft, n.hard,
            "soft limit should be raised to the hard limit"
        );
    }

    #[test]
    fn refuses_what_cannot_fit() {
        let lim = NoFile {
            soft: 1000,
            hard: 1000,
        };
        let err = check(5000, 5000, 1, lim, 0).unwrap_err().to_string();
        assert!(err.contains("--workers"), "{err}");
        assert!(check(900, 900, 1, lim, 0).is_ok());
        let big = NoFile {
            soft: 1_000_000,
            hard: 1_000_000,
        };
        let err = check(200_000, 50_000, 4, big, 1).unwrap_err().to_string();
        assert!(err.contains("--source-ip"), "{err}");
        assert!(check(200_000, 50_000, 4, big, 8).is_ok());
    }
}
