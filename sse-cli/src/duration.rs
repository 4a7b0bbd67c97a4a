//! The one duration syntax of the workspace's command lines: `2` (a bare
//! number is seconds, as `sse-server --tick 2` has always read it), `500ms`,
//! `2s`, `1m`, `1h 30m`. `sse-cli` uses it for every duration flag and
//! `sse-bench` reuses it, so the same text means the same time everywhere.

use std::time::Duration;

/// Parses `2` (seconds), `500ms`, `2s`, `1m` or any other
/// [humantime](https://docs.rs/humantime) duration (`1h 30m`, `250us`).
///
/// # Errors
///
/// A message naming the text and giving examples, for clap to show.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sse_cli::duration::parse_duration;
///
/// assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("`{s}`: too many seconds"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{s}`: {e} (examples: 2 (seconds), 500ms, 2s, 1m)"))
}

/// Like [`parse_duration`], but zero is refused: for timeouts and
/// intervals where zero would mean "never wait" or "spin".
///
/// # Errors
///
/// As [`parse_duration`], and when the duration is zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("`{s}`: must be greater than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds_and_units_are_honoured() {
        let cases = [
            ("2", Duration::from_secs(2)),
            ("0", Duration::ZERO),
            (" 7 ", Duration::from_secs(7)),
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h 30m", Duration::from_secs(5400)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn nonsense_is_refused_with_examples() {
        for text in [
            "",
            "soon",
            "-1",
            "1.5",
            "2 parsecs",
            "99999999999999999999999",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(&format!("`{text}`")), "{err}");
        }
        assert!(parse_duration("x").unwrap_err().contains("500ms"));
    }

    #[test]
    fn positive_refuses_zero() {
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_positive_duration("1"), Ok(Duration::from_secs(1)));
    }
}
