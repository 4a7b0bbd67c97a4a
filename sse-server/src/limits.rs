//! The open-file limit: raised to the hard limit at start, and the default
//! of `--max-clients` derived from it, so the server refuses subscriber
//! N+1 with a fast `503` instead of running out of file descriptors (when
//! `/publish` and `/healthz` would stop being answered too).
#![allow(unsafe_code)] // getrlimit/setrlimit have no safe std wrapper; each call is commented.

/// File descriptors kept for everything but subscribers: at least this
/// many (stdio, epoll, the listener, Redis and data-dir files, publishers,
/// health checks, a burst of connections still being refused).
pub const FD_RESERVE_MIN: u64 = 32;
/// ... and at most this many, so that a limit of 20,000 still admits
/// 19,000 subscribers.
pub const FD_RESERVE_MAX: u64 = 1_000;
/// ... and otherwise this share of the limit (1/20 = 5%).
const FD_RESERVE_DIVISOR: u64 = 20;

/// The open-file limit before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    /// The soft limit the process started with.
    pub was: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (the ceiling without privileges).
    pub hard: u64,
}

fn get_nofile() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of
    // the call; getrlimit writes only into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit (or to the
/// kernel's `nr_open` when the hard limit is unlimited).
///
/// # Errors
/// When the limit cannot be read or raised.
pub fn raise_nofile() -> std::io::Result<NoFile> {
    let lim = get_nofile()?;
    let was = lim.rlim_cur;
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    if was < target {
        let want = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit struct read by setrlimit; raising
        // the soft limit up to the hard limit needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(NoFile {
        was,
        soft: get_nofile()?.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// The soft open-file limit in force, if it can be read.
pub fn nofile_soft() -> Option<u64> {
    get_nofile().ok().map(|lim| lim.rlim_cur)
}

/// `--max-clients` when the flag is not given: the open-file limit minus a
/// reserve (5% of it, between [`FD_RESERVE_MIN`] and [`FD_RESERVE_MAX`]).
pub fn default_max_clients(nofile: u64) -> usize {
    let reserve = (nofile / FD_RESERVE_DIVISOR).clamp(FD_RESERVE_MIN, FD_RESERVE_MAX);
    usize::try_from(nofile.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_five_percent_within_bounds() {
        assert_eq!(default_max_clients(20_000), 19_000);
        assert_eq!(default_max_clients(1_024), 1_024 - 51);
        assert_eq!(default_max_clients(128), 96);
        assert_eq!(default_max_clients(1_048_576), 1_048_576 - 1_000);
        assert_eq!(default_max_clients(10), 1);
    }
}
