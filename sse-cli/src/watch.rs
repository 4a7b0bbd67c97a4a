//! `sse-cli watch`: follows an event stream as a browser's `EventSource`
//! does, and prints each event once.
//!
//! The connection rules are the WHATWG standard's: send
//! `Accept: text/event-stream` (and `Cache-Control: no-cache`); a 200 with
//! any `text/event-stream` Content-Type is the stream; a 204 means "stop,
//! do not reconnect"; any other status or content type fails for good. When
//! an established stream ends or breaks, wait the reconnection time (the
//! server's `retry:`, or `--retry`, or 3 s) and reconnect with
//! `Last-Event-ID`, so the server resumes after the last event we printed.
//!
//! Where real deployments need more than the standard, after the first
//! successful connection (so a typo'd URL or a server that is not running
//! is still reported at once):
//! - a reconnect that cannot connect, or is answered 5xx or 429 (a proxy
//!   restarting, nginx's 502 while upstreams come back, `--max-clients`),
//!   is retried with capped, jittered backoff, honouring `Retry-After`
//!   (see [`crate::reconnect`]), and said on stderr;
//! - no answer within `--connect-timeout` counts as "cannot connect", and a
//!   stream on which nothing (not even a heartbeat comment) arrived for
//!   `--idle-timeout` counts as broken, so watch never hangs silently.

use std::{
    fmt,
    io::{self, Write},
    time::Duration,
};

use reqwest::{
    header::{
        HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE,
        RETRY_AFTER,
    },
    Client, StatusCode, Url,
};

pub use crate::reconnect::{reconnect_delay, DEFAULT_RETRY};
use crate::{
    cli::{Header, WatchArgs},
    http,
    output::{self, Format, Printer},
    parse::{ParseError, Parser},
    reconnect,
};

/// The `Last-Event-ID` request header.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The stream's URL, topics included.
    pub url: Url,
    /// Extra request headers; they replace the defaults of the same name.
    pub headers: Vec<Header>,
    /// Resume after this id on the first connection.
    pub last_event_id: Option<String>,
    /// Reconnection time that overrides the server's `retry:`.
    pub retry: Option<Duration>,
    /// Stop after printing this many events.
    pub count: Option<u64>,
    /// Reconnect when the stream ends or breaks.
    pub reconnect: bool,
    /// The parser's limit on a line or an event, in bytes.
    pub max_event_size: usize,
    /// Sent as `Authorization: Bearer TOKEN` (an `-H Authorization`
    /// replaces it).
    pub token: Option<String>,
    /// Longest wait for a connection and the response's headers.
    pub connect_timeout: Duration,
    /// Reconnect when nothing at all arrived on the stream for this long.
    pub idle_timeout: Option<Duration>,
}

impl WatchConfig {
    /// The configuration the flags ask for.
    pub fn from_args(args: &WatchArgs) -> Self {
        Self {
            url: with_topics(&args.url, &args.topics),
            headers: args.headers.clone(),
            last_event_id: args.last_event_id.clone(),
            retry: args.retry,
            count: args.count,
            reconnect: !args.no_reconnect,
            max_event_size: args.max_event_size,
            token: args.token.clone(),
            connect_timeout: args.connect_timeout,
            idle_timeout: args.idle_timeout,
        }
    }
}

/// Why a watch ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `--count` events were printed.
    CountReached,
    /// The server ended the stream and reconnecting was off.
    StreamEnded,
    /// The server answered 204 No Content: the standard's "do not reconnect".
    NoContent,
}

/// Something worth telling a human about while watching (on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The stream is gone; waiting `delay` before trying again.
    Reconnecting {
        /// What happened, e.g. "stream ended" or "reconnect failed: ...".
        reason: String,
        /// The reconnection time about to be waited.
        delay: Duration,
        /// Something went wrong (not the routine end of a stream): worth
        /// telling even a script reading `--json`.
        failure: bool,
    },
    /// A reconnect succeeded.
    Reconnected {
        /// The id sent as `Last-Event-ID` (`""` if none).
        last_event_id: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reconnecting { reason, delay, .. } => {
                write!(
                    f,
                    "{reason}; reconnecting in {}",
                    humantime::format_duration(*delay)
                )
            }
            Self::Reconnected { last_event_id } if last_event_id.is_empty() => {
                write!(f, "reconnected")
            }
            Self::Reconnected { last_event_id } => {
                write!(f, "reconnected, resuming after id {last_event_id}")
            }
        }
    }
}

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The first connection could not be made.
    #[error("cannot connect to {url}: {cause}")]
    Connect {
        /// The stream's URL.
        url: Url,
        /// The innermost cause, e.g. "connection refused".
        cause: String,
    },
    /// The server answered something other than 200 or 204.
    #[error("{url} answered {status} (expected 200 OK with an event stream)")]
    Status {
        /// The stream's URL.
        url: Url,
        /// The status, with the server's error message if it sent one.
        status: String,
    },
    /// The server answered 200 with something other than an event stream.
    #[error("{url} did not send an event stream: Content-Type is {content_type} (expected text/event-stream)")]
    ContentType {
        /// The stream's URL.
        url: Url,
        /// The Content-Type received, quoted, or "missing".
        content_type: String,
    },
    /// The stream broke and reconnecting was off.
    #[error("the stream from {url} broke: {cause}")]
    Broken {
        /// The stream's URL.
        url: Url,
        /// The innermost cause.
        cause: String,
    },
    /// The stream broke a parser limit.
    #[error("the stream from {url} was refused: {source}")]
    Parse {
        /// The stream's URL.
        url: Url,
        /// The limit exceeded.
        source: ParseError,
    },
    /// Printing failed (stdout closed, disk full...).
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// How one connection ended, short of a fatal error.
enum Outcome {
    Stopped(Stopped),
    /// The server closed the stream cleanly.
    Ended,
    /// The stream broke (or went silent) after it had started.
    Broke(String),
    /// No connection (or no response) at all.
    NoConnection(String),
    /// A reconnect was answered 5xx or 429: try again later.
    Unavailable {
        /// The status, with the server's message if any.
        status: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// Watches the stream, printing every event through `printer` and telling
/// `on_notice` about reconnects, until a [`Stopped`] reason or an error.
///
/// # Errors
///
/// [`WatchError`]: the first connection failing, a status other than 200 or
/// 204, a wrong content type (on any connection), a parser limit, a broken
/// stream when not reconnecting, or failing to print.
pub async fn watch<W: Write>(
    config: &WatchConfig,
    printer: &mut Printer<W>,
    mut on_notice: impl FnMut(&Notice),
) -> Result<Stopped, WatchError> {
    let client = http::client_builder()
        .connect_timeout(config.connect_timeout)
        .build()
        .map_err(WatchError::Client)?;
    let mut parser = Parser::with_max_event_size(config.max_event_size);
    if let Some(id) = &config.last_event_id {
        parser.set_last_event_id(id);
    }
    let mut printed = 0;
    let mut connected_once = false;
    // Consecutive failed attempts; a stream that opens resets it.
    let mut failures = 0;
    loop {
        let outcome = connect_once(
            &client,
            config,
            &mut parser,
            printer,
            &mut printed,
            connected_once,
            &mut failures,
            &mut on_notice,
        )
        .await?;
        let base = reconnect_delay(config.retry, parser.retry());
        let (reason, delay) = match outcome {
            Outcome::Stopped(stopped) => return Ok(stopped),
            Outcome::NoConnection(cause) if !connected_once => {
                return Err(WatchError::Connect {
                    url: config.url.clone(),
                    cause,
                });
            }
            Outcome::Ended if !config.reconnect => return Ok(Stopped::StreamEnded),
            Outcome::Broke(cause) if !config.reconnect => {
                return Err(WatchError::Broken {
                    url: config.url.clone(),
                    cause,
                });
            }
            Outcome::Ended => ("stream ended".to_string(), None),
            Outcome::Broke(cause) => (format!("connection lost: {cause}"), Some(None)),
            Outcome::NoConnection(cause) => (format!("reconnect failed: {cause}"), Some(None)),
            Outcome::Unavailable {
                status,
                retry_after,
            } => {
                let mut reason = format!("reconnect answered {status}");
                if let Some(wait) = retry_after {
                    reason.push_str(&format!(
                        " (Retry-After {})",
                        humantime::format_duration(wait)
                    ));
                }
                (reason, Some(retry_after))
            }
        };
        connected_once = true;
        let (delay, failure) = match delay {
            None => (base, false),
            Some(retry_after) => {
                failures += 1;
                (reconnect::after_failure(base, failures, retry_after), true)
            }
        };
        on_notice(&Notice::Reconnecting {
            reason,
            delay,
            failure,
        });
        tokio::time::sleep(delay).await;
        parser.reset_for_reconnect();
    }
}

/// One connection: request, check the response, print events until the
/// stream ends, breaks, or `--count` is reached.
#[allow(clippy::too_many_arguments)] // one caller; a struct would only rename them
async fn connect_once<W: Write>(
    client: &Client,
    config: &WatchConfig,
    parser: &mut Parser,
    printer: &mut Printer<W>,
    printed: &mut u64,
    reconnecting: bool,
    failures: &mut u32,
    on_notice: &mut impl FnMut(&Notice),
) -> Result<Outcome, WatchError> {
    let response = match open(client, config, parser.last_event_id(), reconnecting).await? {
        Ok(response) => response,
        Err(outcome) => return Ok(outcome),
    };
    *failures = 0;
    if reconnecting {
        on_notice(&Notice::Reconnected {
            last_event_id: parser.last_event_id().to_string(),
        });
    }
    print_events(response, config, parser, printer, printed).await
}

/// Requests the stream and applies the browser's rules (and ours, on a
/// reconnect) to the answer: `Ok(Ok(response))` is a stream to read,
/// `Ok(Err(outcome))` a reason to stop or retry, `Err` a fatal answer.
async fn open(
    client: &Client,
    config: &WatchConfig,
    last_event_id: &str,
    reconnecting: bool,
) -> Result<Result<reqwest::Response, Outcome>, WatchError> {
    let request = client.get(config.url.clone()).headers(request_headers(
        &config.headers,
        config.token.as_deref(),
        last_event_id,
    ));
    let response = match tokio::time::timeout(config.connect_timeout, request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Ok(Err(Outcome::NoConnection(http::describe(&err)))),
        Err(_) => {
            return Ok(Err(Outcome::NoConnection(format!(
                "no response within {}",
                humantime::format_duration(config.connect_timeout)
            ))))
        }
    };
    let status = response.status();
    if status == StatusCode::NO_CONTENT {
        return Ok(Err(Outcome::Stopped(Stopped::NoContent)));
    }
    if reconnecting && is_retryable(status) {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| reconnect::parse_retry_after(v, std::time::SystemTime::now()));
        return Ok(Err(Outcome::Unavailable {
            status: http::describe_status(response).await,
            retry_after,
        }));
    }
    if status != StatusCode::OK {
        return Err(WatchError::Status {
            url: config.url.clone(),
            status: http::describe_status(response).await,
        });
    }
    let content_type = response.headers().get(CONTENT_TYPE);
    if !content_type.is_some_and(http::is_event_stream) {
        return Err(WatchError::ContentType {
            url: config.url.clone(),
            content_type: content_type.map_or_else(
                || "missing".to_string(),
                |v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())),
            ),
        });
    }
    Ok(Ok(response))
}

/// Prints the stream's events until it ends, breaks, or `--count` is
/// reached.
async fn print_events<W: Write>(
    mut response: reqwest::Response,
    config: &WatchConfig,
    parser: &mut Parser,
    printer: &mut Printer<W>,
    printed: &mut u64,
) -> Result<Outcome, WatchError> {
    loop {
        let chunk = match next_chunk(&mut response, config.idle_timeout).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(Outcome::Ended),
            Err(cause) => return Ok(Outcome::Broke(cause)),
        };
        let mut write_error = None;
        let mut done = false;
        let parsed = parser.feed(&chunk, |event| {
            if done || write_error.is_some() {
                return;
            }
            match printer.print(event) {
                Ok(()) => {
                    *printed += 1;
                    done = config.count.is_some_and(|n| *printed >= n);
                }
                Err(err) => write_error = Some(err),
            }
        });
        if done {
            return Ok(Outcome::Stopped(Stopped::CountReached));
        }
        if let Some(err) = write_error {
            return Err(WatchError::Output(err));
        }
        if let Err(source) = parsed {
            return Err(WatchError::Parse {
                url: config.url.clone(),
                source,
            });
        }
    }
}

/// Statuses that, on a reconnect, mean "not now" rather than "never": any
/// 5xx (a proxy whose upstream is restarting, an overloaded server) and
/// 429 Too Many Requests.
fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// The next piece of the body; `Err` says why the stream broke, including
/// silence longer than `idle`.
async fn next_chunk(
    response: &mut reqwest::Response,
    idle: Option<Duration>,
) -> Result<Option<bytes::Bytes>, String> {
    let chunk = match idle {
        None => response.chunk().await,
        Some(idle) => match tokio::time::timeout(idle, response.chunk()).await {
            Ok(chunk) => chunk,
            Err(_) => {
                return Err(format!(
                    "nothing received for {}",
                    humantime::format_duration(idle)
                ))
            }
        },
    };
    chunk.map_err(|err| http::describe(&err))
}

/// The request headers: the EventSource defaults and `--token`'s
/// `Authorization`, then the user's `-H` headers (replacing defaults of the
/// same name), then `Last-Event-ID`.
fn request_headers(extra: &[Header], token: Option<&str>, last_event_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The flag's parser checked that the token fits in a header.
    if let Some(Ok(mut value)) = token.map(|t| HeaderValue::from_str(&format!("Bearer {t}"))) {
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    for header in extra {
        headers.remove(&header.name);
    }
    for header in extra {
        headers.append(header.name.clone(), header.value.clone());
    }
    if !last_event_id.is_empty() {
        // Ids come from the stream (no CR, LF or NUL) or from a validated
        // flag; any other control character cannot be sent, so such an id
        // is not sent at all, as if there were none.
        if let Ok(value) = HeaderValue::from_bytes(last_event_id.as_bytes()) {
            headers.insert(LAST_EVENT_ID, value);
        }
    }
    headers
}

/// The URL with one `topic=NAME` query parameter per topic appended,
/// percent-encoded (spaces as `%20`, which every server decodes, unlike `+`).
pub fn with_topics(url: &Url, topics: &[String]) -> Url {
    if topics.is_empty() {
        return url.clone();
    }
    let mut query = url.query().unwrap_or_default().to_string();
    for topic in topics {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str("topic=");
        percent_encode_into(&mut query, topic);
    }
    let mut url = url.clone();
    url.set_query(Some(&query));
    url
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// `sse-cli watch`: prints to stdout, tells a human about reconnects on
/// stderr, and stops quietly when the reader of stdout goes away.
///
/// # Errors
///
/// See [`watch`].
pub async fn run(args: WatchArgs) -> Result<(), WatchError> {
    let config = WatchConfig::from_args(&args);
    let stdout = io::stdout();
    let format = if args.json {
        Format::Json
    } else {
        Format::Human {
            color: output::use_color(&stdout),
        }
    };
    let human = !args.json;
    let mut printer = Printer::new(stdout, format);
    let result = watch(&config, &mut printer, |notice| {
        // `--json` keeps stderr for what went wrong; routine reconnects
        // after a stream ended are for humans only.
        let failure = matches!(notice, Notice::Reconnecting { failure: true, .. });
        if human || failure {
            eprintln!("sse-cli: {notice}");
        }
    })
    .await;
    match result {
        Ok(Stopped::NoContent) if human => {
            eprintln!("sse-cli: the server answered 204 No Content: no more events");
            Ok(())
        }
        Ok(_) => Ok(()),
        // `sse-cli watch | head -3`: the reader has what it wanted.
        Err(WatchError::Output(err)) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_appended_percent_encoded() {
        let url = Url::parse("http://h/sse?x=1").unwrap();
        let topics = ["a b".to_string(), "ü&=+/".to_string()];
        assert_eq!(
            with_topics(&url, &topics).as_str(),
            "http://h/sse?x=1&topic=a%20b&topic=%C3%BC%26%3D%2B%2F"
        );
        let url = Url::parse("http://h/sse").unwrap();
        assert_eq!(
            with_topics(&url, &topics[..1]).as_str(),
            "http://h/sse?topic=a%20b"
        );
        assert_eq!(with_topics(&url, &[]).as_str(), "http://h/sse");
    }

    #[test]
    fn user_headers_replace_defaults_and_last_event_id_is_sent() {
        let accept = crate::cli::parse_header("Accept: text/event-stream, */*").unwrap();
        let extra = crate::cli::parse_header("X-A: 1").unwrap();
        let headers = request_headers(&[accept, extra.clone(), extra], Some("t0k"), "42");
        assert_eq!(headers.get_all(ACCEPT).iter().count(), 1);
        assert_eq!(headers[ACCEPT], "text/event-stream, */*");
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        assert_eq!(headers.get_all("x-a").iter().count(), 2);
        assert_eq!(headers[LAST_EVENT_ID], "42");
        assert_eq!(headers[AUTHORIZATION], "Bearer t0k");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert!(request_headers(&[], None, "").get(LAST_EVENT_ID).is_none());
        assert!(request_headers(&[], None, "").get(AUTHORIZATION).is_none());
        let own = crate::cli::parse_header("Authorization: Basic x").unwrap();
        let headers = request_headers(&[own], Some("t0k"), "");
        assert_eq!(headers.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(headers[AUTHORIZATION], "Basic x", "-H replaces --token");
    }

    #[test]
    fn retryable_statuses_are_5xx_and_429() {
        for code in [500, 502, 503, 504, 429] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 204, 301, 400, 401, 403, 404, 410] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn notices_read_well() {
        let n = Notice::Reconnecting {
            reason: "stream ended".into(),
            delay: Duration::from_millis(1500),
            failure: false,
        };
        assert_eq!(n.to_string(), "stream ended; reconnecting in 1s 500ms");
        let n = Notice::Reconnected {
            last_event_id: "7".into(),
        };
        assert_eq!(n.to_string(), "reconnected, resuming after id 7");
    }
}
