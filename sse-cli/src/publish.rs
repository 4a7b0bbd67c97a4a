//! `sse-cli publish`: sends events to an sse-server's `POST /publish` as
//! JSON `{"topic", "event", "data"}` and prints the id the server assigns.
//!
//! With `-` or no DATA it publishes each line of stdin as one event, one
//! request after the other as the lines arrive, so
//! `tail -f app.log | sse-cli publish --topic logs -` streams a log live and
//! in order. The first failure stops it: a line that cannot be published is
//! reported rather than skipped.
//!
//! Every event carries its own `Idempotency-Key`, so a publish that timed
//! out, got no answer, or got a `5xx` or `429` is retried with the same key
//! (backoff, honouring `Retry-After`) without storing the event twice on an
//! sse-server.

use std::{
    io::{self, IsTerminal, Write},
    time::Duration,
};

use reqwest::{Client, Url};
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::{cli::PublishArgs, http};

/// A publish is one short request, so unlike a stream it can have a total
/// deadline: the server answers as soon as its broker has the event, and 30 s
/// covers a heavily loaded server while not hanging forever on a stuck one.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle pooled connections are dropped after this long. Many servers close
/// idle keep-alive connections after 5 s; a publish sent on a connection
/// the server is closing at that moment fails without an answer, which in
/// stdin mode (`tail -f`, with pauses between lines) would be common. 4 s
/// keeps the connection for bursts of lines and lets it go before then.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Attempts per event, the first included, before the failure is reported.
pub const PUBLISH_ATTEMPTS: u32 = 8;
/// Delay before the first retry; doubled for each further one, up to
/// [`RETRY_MAX`] (about 17 s of retrying in all). A `Retry-After` longer
/// than the delay is waited instead.
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest delay between two attempts, `Retry-After` included.
pub const RETRY_MAX: Duration = Duration::from_secs(4);

/// The body of `POST /publish`; absent topic and event take the server's
/// defaults.
#[derive(Debug, Serialize)]
struct PublishBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    data: &'a str,
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The request did not get an answer.
    #[error("cannot publish to {url}: {cause}")]
    Connect {
        /// The publish endpoint.
        url: Url,
        /// The innermost cause, e.g. "connection refused".
        cause: String,
    },
    /// The server refused the event.
    #[error("{url} refused the event: {status}")]
    Rejected {
        /// The publish endpoint.
        url: Url,
        /// The status, with the server's `{"error"}` text if it sent one.
        status: String,
    },
    /// Reading stdin failed.
    #[error("cannot read stdin: {0}")]
    Input(#[source] io::Error),
    /// Printing the id failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Publishes events to one server, topic and event type.
#[derive(Debug)]
pub struct Publisher {
    client: Client,
    endpoint: Url,
    topic: Option<String>,
    event: Option<String>,
    token: Option<String>,
}

impl Publisher {
    /// A publisher for what the flags say.
    ///
    /// # Errors
    ///
    /// [`PublishError::Client`] if the HTTP client cannot be built.
    pub fn new(args: &PublishArgs) -> Result<Self, PublishError> {
        let client = http::client_builder()
            .timeout(PUBLISH_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(PublishError::Client)?;
        Ok(Self {
            client,
            endpoint: publish_url(&args.url),
            topic: args.topic.clone(),
            event: args.event.clone(),
            token: args.token.clone(),
        })
    }

    /// Publishes one event; returns the id the server gave it (`None` if a
    /// server accepted it without saying which id).
    ///
    /// The event gets a fresh `Idempotency-Key`; a timeout, a connection
    /// lost before the answer, a `5xx` or a `429` is retried with that key up to [`PUBLISH_ATTEMPTS`] times in
    /// all (saying so on stderr), so the server stores it once.
    ///
    /// # Errors
    ///
    /// [`PublishError::Connect`] with no answer, [`PublishError::Rejected`]
    /// for a status other than 2xx (after the retries, for retryable ones).
    pub async fn publish(&self, data: &str) -> Result<Option<String>, PublishError> {
        let body = PublishBody {
            topic: self.topic.as_deref(),
            event: self.event.as_deref(),
            data,
        };
        let key = idempotency_key();
        let mut delay = RETRY_MIN;
        let mut attempt = 1;
        let response = loop {
            let mut request = self
                .client
                .post(self.endpoint.clone())
                .header("idempotency-key", &key)
                .json(&body);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let (failure, wait) = match request.send().await {
                Ok(response) if response.status().is_success() => break response,
                Ok(response) => {
                    let status = response.status();
                    let retryable = status.is_server_error() || status.as_u16() == 429;
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let failure = PublishError::Rejected {
                        url: self.endpoint.clone(),
                        status: http::describe_status(response).await,
                    };
                    if !retryable {
                        return Err(failure);
                    }
                    (failure, retry_after.map_or(delay, |after| after.max(delay)))
                }
                Err(err) => {
                    let failure = PublishError::Connect {
                        url: self.endpoint.clone(),
                        cause: http::describe(&err),
                    };
                    // A connection never made (refused, no route) sent
                    // nothing: the server is not there, say so at once.
                    if err.is_connect() && !err.is_timeout() {
                        return Err(failure);
                    }
                    (failure, delay)
                }
            };
            if attempt >= PUBLISH_ATTEMPTS {
                return Err(failure);
            }
            let wait = wait.min(RETRY_MAX);
            eprintln!(
                "sse-cli: {failure}; retrying in {:.1} s (attempt {} of {PUBLISH_ATTEMPTS}, same Idempotency-Key)",
                wait.as_secs_f64(),
                attempt + 1
            );
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(RETRY_MAX);
            attempt += 1;
        };
        // The event is in; an unreadable answer only costs us its id.
        let answer: Option<serde_json::Value> = response.json().await.ok();
        Ok(answer.and_then(|v| match v.get("id")? {
            serde_json::Value::String(id) => Some(id.clone()),
            serde_json::Value::Number(id) => Some(id.to_string()),
            _ => None,
        }))
    }
}

/// A key no other event gets: this process, the time, a counter and
/// random bits.
fn idempotency_key() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "sse-cli-{}-{now:x}-{n}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )
}

/// `<base>/publish`, keeping any path prefix of the base URL (a server
/// behind a proxy at `https://host/events/` publishes at `/events/publish`).
pub fn publish_url(base: &Url) -> Url {
    let mut url = base.clone();
    let path = format!("{}/publish", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// Publishes each line of `input` (without its `\n` or `\r\n`; invalid
/// UTF-8 replaced with U+FFFD) as one event, in order, printing each id to
/// `out` as it comes back. Returns how many were published.
///
/// # Errors
///
/// The first [`PublishError`]; lines after it are not published.
pub async fn publish_lines(
    publisher: &Publisher,
    mut input: impl AsyncBufRead + Unpin,
    out: &mut impl Write,
) -> Result<u64, PublishError> {
    let mut line = Vec::new();
    let mut published = 0;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .await
            .map_err(PublishError::Input)?
            == 0
        {
            return Ok(published);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let id = publisher.publish(&String::from_utf8_lossy(&line)).await?;
        print_id(out, id.as_deref())?;
        published += 1;
    }
}

fn print_id(out: &mut impl Write, id: Option<&str>) -> Result<(), PublishError> {
    match id {
        Some(id) => writeln!(out, "{id}").and_then(|()| out.flush()),
        None => {
            eprintln!("sse-cli: published, but the server did not say which id it gave the event");
            Ok(())
        }
    }
    .map_err(PublishError::Output)
}

/// `sse-cli publish`: one event from DATA, or one per stdin line.
///
/// # Errors
///
/// See [`Publisher::publish`] and [`publish_lines`].
pub async fn run(args: PublishArgs) -> Result<(), PublishError> {
    let publisher = Publisher::new(&args)?;
    let mut stdout = io::stdout();
    match args.data.as_deref() {
        Some(data) if data != "-" => {
            let id = publisher.publish(data).await?;
            print_id(&mut stdout, id.as_deref())
        }
        _ => {
            if io::stdin().is_terminal() {
                eprintln!("sse-cli: publishing each line typed as an event; end with Ctrl-D");
            }
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            match publish_lines(&publisher, stdin, &mut stdout).await {
                Ok(_) => Ok(()),
                Err(PublishError::Output(err)) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                Err(err) => Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_url_keeps_the_base_path() {
        for (base, expected) in [
            ("http://localhost:3000", "http://localhost:3000/publish"),
            ("http://localhost:3000/", "http://localhost:3000/publish"),
            ("https://h/events/", "https://h/events/publish"),
            ("https://h/events", "https://h/events/publish"),
        ] {
            assert_eq!(publish_url(&Url::parse(base).unwrap()).as_str(), expected);
        }
    }

    #[test]
    fn body_leaves_out_absent_topic_and_event() {
        let body = PublishBody {
            topic: None,
            event: None,
            data: "x",
        };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"data":"x"}"#);
        let body = PublishBody {
            topic: Some("t"),
            event: Some("e"),
            data: "a\nb",
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"topic":"t","event":"e","data":"a\nb"}"#
        );
    }
}
