//! The passive checks: one connection made as a browser makes it, its
//! status and headers, how soon the headers came, then the stream watched
//! (up to `--timeout`) for `retry:`, a heartbeat and ids.

use reqwest::{
    header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE},
    Client, Response, StatusCode,
};
use tokio::time::Instant;

use super::{
    human,
    stream::{self, Read, Stream},
    Check, CheckConfig, Level, Report, HEADERS_DEADLINE, HEARTBEAT_MIN_AGE,
};
use crate::{http, parse::Event};

/// The passive checks, in report order.
const CHECKS: [&str; 9] = [
    "status",
    "content-type",
    "cache-control",
    "content-encoding",
    "content-length",
    "headers-flushed",
    "retry",
    "heartbeat",
    "ids",
];

/// The events the checks have seen, for the `ids` verdict.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub events: usize,
    pub without_id: usize,
    pub last_id: String,
}

impl Seen {
    pub(super) fn add(&mut self, event: &Event) {
        self.events += 1;
        if event.id.is_empty() {
            self.without_id += 1;
        } else {
            self.last_id.clone_from(&event.id);
        }
    }
}

/// Runs the passive checks into `report`. `Some` when the stream is usable
/// for the active checks.
pub(super) async fn run(
    client: &Client,
    config: &CheckConfig,
    report: &mut Report,
) -> Option<Seen> {
    let start = Instant::now();
    let response = match connect(client, config, start).await {
        Ok(response) => response,
        Err(NoResponse::Connect(cause)) => {
            report.checks.push(Check::new("status", Level::Fail, cause));
            skip_rest(report, "not run: no response");
            return None;
        }
        Err(NoResponse::Headers) => {
            // Connected, but the headers never came: the same fault as
            // slow headers, at its worst.
            report.connected = true;
            let waited = human(config.timeout);
            report.checks.push(Check::new(
                "status",
                Level::Fail,
                format!("no response within {waited}"),
            ));
            report.checks.push(Check::new(
                "headers-flushed",
                Level::Fail,
                format!(
                    "connected, but no headers within {waited}: held back, e.g. by a \
                     buffering proxy (nginx: proxy_buffering off, or let the server's \
                     X-Accel-Buffering: no through)"
                ),
            ));
            skip_rest(report, "not run: no response");
            return None;
        }
    };
    report.connected = true;
    let headers_after = start.elapsed();
    let usable = header_checks(response, headers_after, report).await?;
    Some(observe(Stream::new(usable), config, report).await)
}

/// The `ids` verdict from the events seen.
pub(super) fn ids_check(seen: &Seen, config: &CheckConfig) -> Check {
    match seen {
        Seen { events: 0, .. } => Check::new(
            "ids",
            Level::Warn,
            format!(
                "no event arrived within {}, so ids were not checked (give --publish-url)",
                human(config.timeout)
            ),
        ),
        Seen {
            events,
            without_id: 0,
            last_id,
        } => Check::new(
            "ids",
            Level::Pass,
            if *events == 1 {
                format!("the event seen carried an id ({last_id})")
            } else {
                format!("all {events} events seen carried an id (last: {last_id})")
            },
        ),
        Seen {
            events, without_id, ..
        } => Check::new(
            "ids",
            Level::Warn,
            format!(
                "{without_id} of {events} events had no id: a client that reconnects \
                 cannot resume, and misses what was sent meanwhile"
            ),
        ),
    }
}

/// Why there is no response to check.
enum NoResponse {
    /// No connection at all (refused, unresolvable, unreachable).
    Connect(String),
    /// A connection, but no response headers within `--timeout`.
    Headers,
}

/// The response, or why there was none within `--timeout`.
async fn connect(
    client: &Client,
    config: &CheckConfig,
    start: Instant,
) -> Result<Response, NoResponse> {
    let send = stream::request(client, config, None).send();
    match tokio::time::timeout_at(start + config.timeout, send).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => Err(NoResponse::Connect(format!(
            "cannot connect: {}",
            http::describe(&err)
        ))),
        Err(_) if reachable(&config.url).await => Err(NoResponse::Headers),
        Err(_) => Err(NoResponse::Connect(format!(
            "cannot connect within {}",
            human(config.timeout)
        ))),
    }
}

/// Whether a TCP connection to the URL's host and port can be made: tells
/// "nothing there" from "something there that does not answer".
async fn reachable(url: &reqwest::Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(
        tokio::time::timeout(http::CONNECT_TIMEOUT, connect).await,
        Ok(Ok(_))
    )
}

fn skip_rest(report: &mut Report, reason: &str) {
    for name in CHECKS {
        if report.get(name).is_none() {
            report.checks.push(Check::new(name, Level::Skip, reason));
        }
    }
}

/// Status and header checks; the response back when the stream can be
/// read (200, an event stream, not compressed).
async fn header_checks(
    response: Response,
    headers_after: std::time::Duration,
    report: &mut Report,
) -> Option<Response> {
    let status = response.status();
    if status != StatusCode::OK {
        let reason = if status == StatusCode::NO_CONTENT {
            "204 No Content: browsers close the stream and never reconnect".to_string()
        } else {
            format!(
                "{} (expected 200 OK)",
                http::describe_status(response).await
            )
        };
        report
            .checks
            .push(Check::new("status", Level::Fail, reason));
        skip_rest(report, "not run: no event stream");
        return None;
    }
    report
        .checks
        .push(Check::new("status", Level::Pass, "200 OK"));
    let headers = response.headers();
    let text = |name| {
        headers.get(name).map(|v: &reqwest::header::HeaderValue| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        })
    };
    let event_stream = headers.get(CONTENT_TYPE).is_some_and(http::is_event_stream);
    let encoding = text(CONTENT_ENCODING).filter(|e| !e.trim().eq_ignore_ascii_case("identity"));
    report.checks.extend([
        content_type(text(CONTENT_TYPE), event_stream),
        cache_control(text(CACHE_CONTROL)),
        content_encoding(encoding.as_deref()),
        content_length(text(CONTENT_LENGTH)),
        headers_flushed(headers_after),
    ]);
    if !event_stream {
        skip_rest(report, "not run: not an event stream");
        return None;
    }
    if encoding.is_some() {
        skip_rest(
            report,
            "not run: the stream is compressed (see content-encoding)",
        );
        return None;
    }
    Some(response)
}

fn content_type(value: Option<String>, event_stream: bool) -> Check {
    match value {
        Some(value) if event_stream => Check::new("content-type", Level::Pass, value),
        Some(value) => Check::new(
            "content-type",
            Level::Fail,
            format!("{value:?}: browsers accept only text/event-stream"),
        ),
        None => Check::new(
            "content-type",
            Level::Fail,
            "missing: browsers accept only text/event-stream",
        ),
    }
}

fn content_encoding(encoding: Option<&str>) -> Check {
    match encoding {
        None => Check::new("content-encoding", Level::Pass, "none"),
        Some(value) => Check::new(
            "content-encoding",
            Level::Fail,
            format!(
                "{value}: compression holds events back until its buffer fills; \
                 exclude text/event-stream from compression (nginx: gzip_types)"
            ),
        ),
    }
}

fn content_length(value: Option<String>) -> Check {
    match value {
        None => Check::new("content-length", Level::Pass, "none: the body is streamed"),
        Some(value) => Check::new(
            "content-length",
            Level::Fail,
            format!("{value}: a fixed-length body ends the stream after that many bytes"),
        ),
    }
}

fn headers_flushed(after: std::time::Duration) -> Check {
    if after <= HEADERS_DEADLINE {
        Check::new(
            "headers-flushed",
            Level::Pass,
            format!("headers after {}", human(after)),
        )
    } else {
        Check::new(
            "headers-flushed",
            Level::Fail,
            format!(
                "headers took {}: held back (until the first event?), and EventSource \
                 stays \"connecting\" meanwhile",
                human(after)
            ),
        )
    }
}

fn cache_control(value: Option<String>) -> Check {
    match value {
        Some(value)
            if value.split(',').any(|d| {
                matches!(
                    d.trim().to_ascii_lowercase().as_str(),
                    "no-cache" | "no-store"
                )
            }) =>
        {
            Check::new("cache-control", Level::Pass, value)
        }
        Some(value) => Check::new(
            "cache-control",
            Level::Fail,
            format!("{value:?}: without no-cache a cache or proxy may store or replay the stream"),
        ),
        None => Check::new(
            "cache-control",
            Level::Fail,
            "missing: without no-cache a cache or proxy may store or replay the stream",
        ),
    }
}

/// Watches the stream until `retry:`, a heartbeat and (unless events will
/// be published) an event have been seen, or `--timeout`.
async fn observe(mut stream: Stream, config: &CheckConfig, report: &mut Report) -> Seen {
    let opened = Instant::now();
    let deadline = opened + config.timeout;
    let mut seen = Seen::default();
    let mut spoke = None;
    let end = loop {
        match stream.read(deadline).await {
            Read::Chunk { at, events } => {
                events.iter().for_each(|e| seen.add(e));
                if spoke.is_none() && at - opened >= HEARTBEAT_MIN_AGE {
                    spoke = Some(at - opened);
                }
                if spoke.is_some() && (seen.events > 0 || config.publish_url.is_some()) {
                    break None;
                }
            }
            Read::Ended => {
                break Some(format!(
                    "the server ended the stream after {}",
                    human(opened.elapsed())
                ))
            }
            Read::Broke(cause) => {
                break Some(format!(
                    "the stream broke after {}: {cause}",
                    human(opened.elapsed())
                ))
            }
            Read::TimedOut => break None,
        }
    };
    report.checks.push(match stream.retry() {
        Some(retry) => Check::new(
            "retry",
            Level::Pass,
            format!("retry: {} ms", retry.as_millis()),
        ),
        None => Check::new(
            "retry",
            Level::Warn,
            "no retry: field: browsers reconnect after their own default (about 3 s)",
        ),
    });
    report.checks.push(match (spoke, end) {
        (Some(age), _) => Check::new(
            "heartbeat",
            Level::Pass,
            format!(
                "the stream spoke again {} after it opened: proxies see it alive",
                human(age)
            ),
        ),
        (None, Some(end)) => Check::new(
            "heartbeat",
            Level::Warn,
            format!("{end}: clients reconnect after every retry interval"),
        ),
        (None, None) => Check::new(
            "heartbeat",
            Level::Warn,
            format!(
                "nothing arrived for {} after the first bytes: no heartbeat, and proxies \
                 cut idle streams (nginx after 60 s by default)",
                human(config.timeout)
            ),
        ),
    });
    seen
}
