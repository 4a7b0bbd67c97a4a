//! Stand-ins for helpers `sse-cli` is about to export (its content-type
//! check and duration syntax); replaced by re-exports once they land.

use std::time::Duration;

/// Whether a `Content-Type` value is `text/event-stream`, whatever its case
/// and parameters.
pub fn is_event_stream(content_type: impl AsRef<[u8]>) -> bool {
    let value = content_type.as_ref();
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

/// Parses `500ms`, `2s`, `1m`.
///
/// # Errors
/// A message for clap.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 2m, 500ms)"))
}
