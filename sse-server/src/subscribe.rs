//! The one subscribe function: every rule a new subscription passes
//! (topics, resume id, admission under `--max-clients`, the broker's replay
//! decision) is decided here and nowhere else.
//!
//! Both ways in call [`subscribe`]: the axum route `GET /sse` and the lean
//! HTTP/1 path that answers subscriptions on the socket itself. Each only
//! turns its request into a query string and header look-ups, and the
//! result into bytes on its own connection.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{self, Action},
    broker::{Start, Subscription},
    error::AppError,
    routes::AppState,
    wire,
};

/// The topic of a client that names none.
pub const DEFAULT_TOPIC: &str = "default";
/// Most topics one stream may subscribe to: plenty for a page or a tool,
/// and it bounds the work one request can ask of every publish.
pub const MAX_TOPICS: usize = 64;

/// The headers of every successful `GET /sse` response, besides the
/// framing (`Transfer-Encoding: chunked` on HTTP/1.1).
pub const RESPONSE_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

/// Request headers, by lower-case name, however the caller holds them.
pub trait HeaderLookup {
    /// The value of the first header called `name` (lower case), if any.
    fn header(&self, name: &str) -> Option<&[u8]>;

    /// Calls `each` with every value of the headers called `name` (lower
    /// case), in order: HTTP/2 may split `Cookie` over several.
    fn each_header<'a>(&'a self, name: &str, each: &mut dyn FnMut(&'a [u8])) {
        if let Some(value) = self.header(name) {
            each(value);
        }
    }
}

impl HeaderLookup for axum::http::HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(axum::http::HeaderValue::as_bytes)
    }

    fn each_header<'a>(&'a self, name: &str, each: &mut dyn FnMut(&'a [u8])) {
        for value in self.get_all(name) {
            each(value.as_bytes());
        }
    }
}

/// An admitted subscription: the opening bytes (the `retry:` field), then
/// the broker's stream. Holds its `--max-clients` permit until dropped.
pub struct Subscribed {
    opening: Option<Bytes>,
    subscription: Subscription,
    _permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Subscribed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribed")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

impl Subscribed {
    /// Takes the bytes the stream opens with, so a caller can send them in
    /// the same write as the response head. The stream then starts after
    /// them.
    pub fn take_opening(&mut self) -> Option<Bytes> {
        self.opening.take()
    }
}

impl Stream for Subscribed {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if let Some(opening) = this.opening.take() {
            return Poll::Ready(Some(opening));
        }
        this.subscription.poll_next_unpin(cx)
    }
}

/// Subscribes to `?topic=` (repeatable; `default` when absent), resuming
/// after `Last-Event-ID` (header) or `?lastEventId=`.
///
/// `query` is the raw query string (without `?`); `connection` is
/// cancelled to drop the client's connection when it falls behind.
///
/// Authorization is decided here too ([`crate::auth`]): the token (header,
/// `?access_token=`, cookie) must cover every topic unless all are
/// `--anonymous-topics`, `--auth-url` must allow it, and the stream ends
/// when the token expires. The `Host` is checked here as well as in the
/// router's guard, for callers that bypass the router.
///
/// # Errors
/// A bad topic or too many topics (400), no or a bad token (401), a token
/// or `--auth-url` that does not allow a topic (403), a Host not served
/// (403), `--max-clients` reached (503) or `--auth-url` failing (503).
pub async fn subscribe(
    state: &AppState,
    query: &str,
    headers: &(impl HeaderLookup + ?Sized),
    connection: CancellationToken,
) -> Result<Subscribed, AppError> {
    let (topics, query_last_id) = parse_query(query)?;
    // The header wins: a browser's EventSource sends it on reconnection,
    // with a newer id than the one in the URL it was first opened with.
    let last_event_id = match headers.header("last-event-id") {
        Some(value) => Some(String::from_utf8_lossy(value).into_owned()),
        None => query_last_id,
    }
    // EventSource sends no id until it has one; an empty one means the same.
    .filter(|id| !id.is_empty());
    if !state.hosts.allows_name(headers.header("host")) {
        return Err(AppError::Forbidden(auth::HOST_REFUSED.to_owned()));
    }
    let grant = {
        let query_token = auth::query_value(Some(query), auth::TOKEN_QUERY);
        state.auth.subscribe(
            auth::request_token(headers, query_token.as_deref()),
            &topics,
        )?
    };
    if grant.ask_hook {
        let names: Vec<&str> = topics.iter().map(|t| &**t).collect();
        state
            .auth
            .ask_hook(Action::Subscribe, &names, headers)
            .await?;
    }
    let permit = match &state.admission {
        Some(semaphore) => Some(Arc::clone(semaphore).try_acquire_owned().map_err(|_| {
            state.broker.hub().metrics().rejected.inc();
            AppError::Full {
                retry_after_secs: state.config.retry.as_secs().max(1),
            }
        })?),
        None => None,
    };
    let start = Start::from_request(last_event_id.as_deref(), last_param(query)?);
    let mut subscription = state.broker.subscribe(topics, start, connection).await;
    if let Some(at) = grant.ends_at {
        subscription.end_at(at);
    }
    Ok(Subscribed {
        // The retry field goes first, before any notice or replay.
        opening: Some(wire::encode_retry(state.config.retry)),
        subscription,
        _permit: permit,
    })
}

/// The topics (deduplicated, `default` when none) and `lastEventId` of a
/// query string.
fn parse_query(query: &str) -> Result<(Vec<Arc<str>>, Option<String>), AppError> {
    let mut topics: Vec<Arc<str>> = Vec::new();
    let mut last_id = None;
    for (key, value) in wire::parse_query(query)? {
        match &*key {
            "topic" => {
                wire::check_name("topic", &value)?;
                if !topics.iter().any(|t| **t == *value) {
                    topics.push(Arc::from(&*value));
                }
            }
            "lastEventId" => last_id = Some(value.into_owned()),
            _ => {}
        }
    }
    if topics.len() > MAX_TOPICS {
        return Err(AppError::BadRequest(format!(
            "at most {MAX_TOPICS} topics per stream"
        )));
    }
    if topics.is_empty() {
        topics.push(Arc::from(DEFAULT_TOPIC));
    }
    Ok((topics, last_id))
}

/// `?last=N`: replay the newest N retained events of the topics first.
fn last_param(query: &str) -> Result<Option<usize>, AppError> {
    let mut last = None;
    for (key, value) in wire::parse_query(query)? {
        if key == "last" {
            let n = value.parse::<usize>().map_err(|_| {
                AppError::BadRequest(format!("last must be a whole number, not {value:?}"))
            })?;
            last = Some(n);
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(topics: &[Arc<str>]) -> Vec<&str> {
        topics.iter().map(|t| &**t).collect()
    }

    #[test]
    fn topics_are_deduplicated_and_default_when_absent() {
        let (topics, last) = parse_query("").unwrap();
        assert_eq!(names(&topics), [DEFAULT_TOPIC]);
        assert_eq!(last, None);
        let (topics, last) = parse_query("topic=a&topic=b&topic=a&lastEventId=1-2").unwrap();
        assert_eq!(names(&topics), ["a", "b"]);
        assert_eq!(last.as_deref(), Some("1-2"));
    }

    #[test]
    fn bad_topics_and_too_many_are_refused() {
        assert!(parse_query("topic=a%0Ab").is_err());
        assert!(parse_query("topic=").is_err());
        let many: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("topic=t{i}")).collect();
        assert!(parse_query(&many.join("&")).is_err());
    }
}
