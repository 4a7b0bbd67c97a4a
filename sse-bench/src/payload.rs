//! The event payload the publisher sends and every client decodes: the
//! sequence number and the intended send time, padded to `--payload` bytes.
//!
//! Format: `<seq> <intended unix time in ns> <padding x...>`, ASCII only, so
//! it needs no escaping in any publish body template (JSON included).

use std::time::{SystemTime, UNIX_EPOCH};

/// Smallest payload that holds a sequence number (up to 20 digits), a
/// nanosecond timestamp (19 digits) and the separators, with room to spare.
pub const MIN_PAYLOAD: usize = 48;

/// Builds the payload for event `seq` intended to be sent at `intended_ns`
/// (unix time in nanoseconds), padded with `x` to `size` bytes (at least the
/// digits themselves).
pub fn encode(seq: u64, intended_ns: u64, size: usize) -> String {
    let mut s = format!("{seq} {intended_ns} ");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Reads `(seq, intended_ns)` back from a payload; `None` for events that
/// are not ours (a server's own clock, greetings, keep-alives with data).
pub fn decode(data: &str) -> Option<(u64, u64)> {
    let mut parts = data.splitn(3, ' ');
    let seq = parse_u64(parts.next()?)?;
    let ts = parse_u64(parts.next()?)?;
    Some((seq, ts))
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Current wall-clock time in nanoseconds since the unix epoch: the one
/// clock publisher and clients share, even across worker processes.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let p = encode(42, 1_700_000_000_123_456_789, 128);
        assert_eq!(p.len(), 128);
        assert_eq!(decode(&p), Some((42, 1_700_000_000_123_456_789)));
    }

    #[test]
    fn foreign_data_is_not_ours() {
        assert_eq!(decode("the time is 12:00"), None);
        assert_eq!(decode(""), None);
        assert_eq!(decode("1"), None);
        assert_eq!(decode("99999999999999999999999 1 x"), None);
    }
}
