//! How long `watch` waits before it reconnects: the one place that decides.
//!
//! - After a stream that ended cleanly: the reconnection time, exactly, as
//!   `EventSource` does (`--retry`, else the server's last `retry:`, else
//!   3 s).
//! - After a failure (the stream broke, went silent past `--idle-timeout`,
//!   the connection was refused or timed out, or a 5xx or 429 answer):
//!   capped exponential backoff from the reconnection time, with "equal
//!   jitter" (half the delay fixed, half random) so that thousands of
//!   clients cut by one proxy restart do not come back in one wave.
//! - A `Retry-After` on a 5xx or 429 is honoured: never earlier than it
//!   says (up to [`MAX_RETRY_AFTER`]).

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;

/// The reconnection time before the server sets one: the standard leaves
/// it to the user agent, and browsers (and our server's default) use 3 s.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// Longest backoff between failed attempts (unless the reconnection time
/// itself is longer): a server that comes back is found within half a
/// minute, and a dead one is not hammered.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Longest `Retry-After` obeyed: a server asking for more (or sending a
/// date far in the future by a clock error) is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 60);

/// `--retry` if given, else the server's last `retry:`, else 3 s.
pub fn reconnect_delay(flag: Option<Duration>, server: Option<Duration>) -> Duration {
    flag.or(server).unwrap_or(DEFAULT_RETRY)
}

/// The wait before attempt number `failures + 1` after `failures`
/// consecutive failures (`failures >= 1`): `base * 2^(failures-1)`, capped
/// at the larger of [`MAX_BACKOFF`] and `base`, then jittered into its
/// upper half by `unit` (a random number in `[0, 1)`), rounded to
/// milliseconds so it reads well on stderr.
pub fn backoff(base: Duration, failures: u32, unit: f64) -> Duration {
    let cap = MAX_BACKOFF.max(base);
    let doublings = failures.saturating_sub(1).min(31);
    let full = base.saturating_mul(1 << doublings).min(cap);
    let jittered = full.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0));
    Duration::from_millis(u64::try_from(jittered.as_millis()).unwrap_or(u64::MAX))
}

/// The wait after a failure: the backoff, or the server's `Retry-After` if
/// that is longer.
pub fn after_failure(base: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = backoff(base, failures, fastrand::f64());
    retry_after.map_or(backoff, |asked| asked.max(backoff))
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 10.2.3),
/// as a wait from `now`, capped at [`MAX_RETRY_AFTER`]. `None` when it is
/// neither.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let wait = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is "a very long time".
        Duration::from_secs(text.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(text).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn retry_flag_beats_server_beats_default() {
        assert_eq!(reconnect_delay(Some(S(1)), Some(S(2))), S(1));
        assert_eq!(reconnect_delay(None, Some(S(2))), S(2));
        assert_eq!(reconnect_delay(None, None), DEFAULT_RETRY);
    }

    #[test]
    fn backoff_doubles_is_capped_and_jitters_in_the_upper_half() {
        let base = S(3);
        // unit 1.0 (the top of the range) shows the un-jittered curve.
        let top: Vec<u64> = (1..=6).map(|n| backoff(base, n, 1.0).as_secs()).collect();
        assert_eq!(top, [3, 6, 12, 24, 30, 30]);
        assert_eq!(backoff(base, 1, 0.0), Duration::from_millis(1500));
        assert_eq!(backoff(base, 3, 0.5), Duration::from_millis(9000));
        assert_eq!(backoff(base, u32::MAX, 1.0), MAX_BACKOFF);
        // A reconnection time above the cap is never shortened by it.
        assert_eq!(backoff(S(60), 4, 1.0), S(60));
        assert_eq!(backoff(Duration::ZERO, 5, 1.0), Duration::ZERO);
    }

    #[test]
    fn after_failure_never_undercuts_retry_after() {
        for _ in 0..100 {
            let wait = after_failure(Duration::from_millis(10), 1, Some(S(2)));
            assert_eq!(wait, S(2));
            let wait = after_failure(S(4), 1, None);
            assert!(wait >= S(2) && wait <= S(4), "{wait:?}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + S(1_000_000_000);
        let parse = |text: &'static str| parse_retry_after(&HeaderValue::from_static(text), now);
        assert_eq!(parse("5"), Some(S(5)));
        assert_eq!(parse(" 0 "), Some(S(0)));
        assert_eq!(parse("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        let in_two_minutes = httpdate::fmt_http_date(now + S(120));
        let value = HeaderValue::from_str(&in_two_minutes).unwrap();
        assert_eq!(parse_retry_after(&value, now), Some(S(120)));
        let past = httpdate::fmt_http_date(now - S(120));
        let value = HeaderValue::from_str(&past).unwrap();
        assert_eq!(parse_retry_after(&value, now), Some(Duration::ZERO));
        for bad in ["", "soon", "-5", "1.5"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
