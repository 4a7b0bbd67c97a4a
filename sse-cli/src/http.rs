//! HTTP plumbing shared by `watch` and `publish`: the client settings and
//! turning reqwest errors and error responses into one readable line.

use std::{error::Error as _, time::Duration};

use reqwest::{header::CONTENT_TYPE, Response};

/// How long to wait for a TCP (and TLS) connection before giving up: long
/// enough for a slow network, short enough that a dead host is reported
/// while the user still waits for an answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keep-alive probes find a peer that vanished without closing (a
/// dropped laptop, a NAT that forgot us) on a stream that may legitimately
/// be silent for a long time. A total request timeout cannot be used for
/// streams: it would cut every stream after that time.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Largest error body read to show the server's message; error bodies are
/// short, and a huge one is not worth waiting for.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long to wait for an error body before reporting the status alone.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// The user agent sent with every request.
pub const USER_AGENT: &str = concat!("sse-cli/", env!("CARGO_PKG_VERSION"));

/// Whether a `Content-Type` value is `text/event-stream`, whatever its case
/// and parameters (`Text/Event-Stream; charset=utf-8`), as a browser's
/// EventSource decides. Takes a `HeaderValue`, a `&str` or raw bytes, so
/// `watch`, `check` and `sse-bench` (which reads raw heads) share it.
///
/// # Examples
///
/// ```
/// use sse_cli::http::is_event_stream;
///
/// assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
/// assert!(!is_event_stream(b"text/html".as_slice()));
/// ```
pub fn is_event_stream(content_type: impl AsRef<[u8]>) -> bool {
    let value = content_type.as_ref();
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

/// A client builder with the settings both commands share.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(TCP_KEEPALIVE)
        .user_agent(USER_AGENT)
}

/// A short description of why a request failed: the innermost cause
/// ("connection refused", "dns error: ...") rather than reqwest's outer
/// "error sending request for url (...)".
pub fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_string();
    }
    let mut cause: &dyn std::error::Error = err;
    let mut source = err.source();
    while let Some(next) = source {
        cause = next;
        source = next.source();
    }
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        match io.kind() {
            std::io::ErrorKind::ConnectionRefused => return "connection refused".to_string(),
            std::io::ErrorKind::ConnectionReset => return "connection reset".to_string(),
            _ => {}
        }
    }
    cause.to_string()
}

/// `404 Not Found`, or `404 Not Found: <the server's {"error"} text>` when
/// the response carries one; the body (if any) is consumed.
pub async fn describe_status(response: Response) -> String {
    let status = response.status();
    let mut text = status.to_string();
    if let Some(message) = error_message(response).await {
        text.push_str(": ");
        // The server's words go to the user's terminal: no escape sequences.
        text.push_str(&crate::output::escaped(&message));
    }
    text
}

/// The `error` of a JSON `{"error": "..."}` body, or a short plain-text
/// body, if the response has one that arrives promptly.
async fn error_message(response: Response) -> Option<String> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_ERROR_BODY as u64)
    {
        return None;
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = tokio::time::timeout(ERROR_BODY_TIMEOUT, response.bytes())
        .await
        .ok()?
        .ok()?;
    if body.len() > MAX_ERROR_BODY {
        return None;
    }
    if content_type.contains("json") {
        let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
        return value.get("error")?.as_str().map(str::to_string);
    }
    if content_type.starts_with("text/plain") {
        let text = String::from_utf8_lossy(&body);
        let text = text.trim();
        // One line of plain text is a message; a page of it is not.
        if !text.is_empty() && text.len() <= 200 && !text.contains('\n') {
            return Some(text.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn content_type_is_matched_on_its_essence() {
        for ok in [
            "text/event-stream",
            "Text/Event-Stream",
            "text/event-stream; charset=utf-8",
            " text/event-stream ;x=y",
        ] {
            assert!(is_event_stream(ok), "{ok}");
            assert!(is_event_stream(HeaderValue::from_static(ok)), "{ok}");
            assert!(is_event_stream(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "text/html",
            "text/event-streams",
            "text/plain; x=text/event-stream",
            "text/event-stream-x",
            "",
        ] {
            assert!(!is_event_stream(bad), "{bad}");
        }
        assert!(!is_event_stream(b"text/event-stream\xff".as_slice()));
    }
}
