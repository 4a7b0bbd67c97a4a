//! `GET /sse`: the event stream.

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue},
    response::{IntoResponse, Response},
    Extension,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::{error::AppError, serve::ConnectionHandle, wire};

/// The topic of a client that names none.
pub const DEFAULT_TOPIC: &str = "default";
/// Most topics one stream may subscribe to: plenty for a page or a tool,
/// and it bounds the work one request can ask of every publish.
pub const MAX_TOPICS: usize = 64;

/// Subscribes to `?topic=` (repeatable; `default` when absent), resuming
/// after `Last-Event-ID` (header) or `?lastEventId=`.
pub async fn subscribe(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionHandle>>,
) -> Result<Response, AppError> {
    let mut topics: Vec<Arc<str>> = Vec::new();
    let mut query_last_id = None;
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match &*key {
            "topic" => {
                wire::check_name("topic", &value)?;
                if !topics.iter().any(|t| **t == *value) {
                    topics.push(Arc::from(&*value));
                }
            }
            "lastEventId" => query_last_id = Some(value.into_owned()),
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
    // The header wins: a browser's EventSource sends it on reconnection,
    // with a newer id than the one in the URL it was first opened with.
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        None => query_last_id,
    }
    // EventSource sends no id until it has one; an empty one means the same.
    .filter(|id| !id.is_empty());
    let permit = match &state.admission {
        Some(semaphore) => Some(Arc::clone(semaphore).try_acquire_owned().map_err(|_| {
            state.broker.hub().metrics().rejected.inc();
            AppError::Full {
                retry_after_secs: state.config.retry.as_secs().max(1),
            }
        })?),
        None => None,
    };
    let connection = connection.map_or_else(CancellationToken::new, |Extension(handle)| handle.0);
    let mut subscription = state
        .broker
        .subscribe(topics, last_event_id.as_deref(), connection)
        .await?;
    // The retry field goes first, before any notice or replay.
    let opening = [wire::encode_retry(state.config.retry)];
    let stream = futures::stream::iter(opening)
        .chain(futures::stream::poll_fn(move |cx| {
            let _admitted = &permit;
            subscription.poll_next_unpin(cx)
        }))
        .map(Ok::<_, Infallible>);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
