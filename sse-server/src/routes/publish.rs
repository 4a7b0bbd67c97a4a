//! `POST /publish` and `PUT /publish`.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    Json,
};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::{sse::DEFAULT_TOPIC, AppState};
use crate::{
    auth::{self, Action},
    error::AppError,
    wire,
};

/// Largest accepted body. SSE is for notifications, not file transfer;
/// 64 KiB bounds the copy every subscriber's queue may reference.
pub const MAX_BODY: usize = 64 * 1024;

/// Longest accepted `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Most events one batch (a JSON array) may hold.
pub const MAX_BATCH: usize = 1_000;

/// The JSON body: ours, or the short `{"message": ...}` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishJson {
    topic: Option<String>,
    event: Option<String>,
    /// Any JSON value: a string is the data itself, anything else is
    /// published as its compact JSON text (`null` counts as missing).
    data: Option<serde_json::Value>,
    message: Option<String>,
}

/// Publishes one event; answers 202 `{"id"}` once the broker has it.
pub async fn publish(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, AppError> {
    // Who may publish is known before the body is read; which topics, after.
    let publisher = {
        let query_token = auth::query_value(query.as_deref(), auth::TOKEN_QUERY);
        state
            .auth
            .publisher(auth::request_token(&headers, query_token.as_deref()))?
    };
    let kind = BodyKind::of(&headers)?;
    let key = idempotency_key(&headers)?;
    let query = query.unwrap_or_default();
    let bytes = read_body(body, &headers, state.config.body_timeout).await?;
    if kind == BodyKind::Json && bytes.trim_ascii_start().starts_with(b"[") {
        if key.is_some() {
            return Err(AppError::BadRequest(
                "Idempotency-Key applies to one event, not to a batch".to_owned(),
            ));
        }
        let events = decode_batch(&query, &bytes)?;
        let mut topics: Vec<&str> = events.iter().map(|(topic, _, _)| topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        publisher.check(topics.iter().copied())?;
        if publisher.ask_hook() {
            state
                .auth
                .ask_hook(Action::Publish, &topics, &headers)
                .await?;
        }
        let ids = state.broker.publish_batch(&events).await?;
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "ids": ids })),
        ));
    }
    let (topic, event, data) = decode(kind, &query, &bytes)?;
    publisher.check([topic.as_str()])?;
    if publisher.ask_hook() {
        state
            .auth
            .ask_hook(Action::Publish, &[&topic], &headers)
            .await?;
    }
    let id = match &key {
        Some(key) => {
            state
                .broker
                .publish_once(key, &topic, &event, &data)
                .await?
        }
        None => state.broker.publish(&topic, &event, &data).await?,
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id.to_string() })),
    ))
}

/// Turns a body of `kind` and the request's query string into the topic,
/// event type and data to publish, with the defaults applied and the names
/// checked. Public so the fuzz targets reach it.
///
/// # Errors
/// 400 for invalid JSON, missing data, bad UTF-8 or a bad name.
pub fn decode(
    kind: BodyKind,
    query: &str,
    bytes: &[u8],
) -> Result<(String, String, String), AppError> {
    let mut query_topic = None;
    let mut query_event = None;
    for (key, value) in wire::parse_query(query)? {
        match &*key {
            "topic" => query_topic = Some(value.into_owned()),
            "event" => query_event = Some(value.into_owned()),
            _ => {}
        }
    }
    let (topic, event, data) = match kind {
        BodyKind::Json => {
            let json: PublishJson = serde_json::from_slice(bytes)
                .map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?;
            let data = match (json.data, json.message) {
                (Some(_), Some(_)) => {
                    return Err(AppError::BadRequest(
                        "give either \"data\" or \"message\", not both".to_owned(),
                    ))
                }
                (Some(serde_json::Value::String(data)), None) | (None, Some(data)) => data,
                (Some(value), None) => value.to_string(),
                (None, None) => {
                    return Err(AppError::BadRequest(
                        "missing \"data\" (or \"message\", its short form)".to_owned(),
                    ))
                }
            };
            (json.topic.or(query_topic), json.event.or(query_event), data)
        }
        BodyKind::Text => {
            let data = String::from_utf8(bytes.to_vec())
                .map_err(|_| AppError::BadRequest("body is not valid UTF-8".to_owned()))?;
            (query_topic, query_event, data)
        }
    };
    let topic = topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    let event = event.unwrap_or_else(|| wire::DEFAULT_EVENT.to_owned());
    wire::check_name("topic", &topic)?;
    wire::check_name("event", &event)?;
    Ok((topic, event, data))
}

/// The request's `Idempotency-Key`, if any.
///
/// # Errors
/// 400 for an empty key, one over [`MAX_IDEMPOTENCY_KEY`] bytes, one that
/// is not text, or more than one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AppError::BadRequest(
            "give one Idempotency-Key, not several".to_owned(),
        ));
    }
    let key = value.to_str().map_err(|_| {
        AppError::BadRequest("Idempotency-Key must be visible ASCII text".to_owned())
    })?;
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(AppError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes long"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// A JSON array of event objects (a batch): each decoded as [`decode`]
/// decodes one, with the query's defaults.
///
/// # Errors
/// 400 for invalid JSON, an empty array, more than [`MAX_BATCH`] events,
/// or an invalid element (the message names its index, from 0).
pub fn decode_batch(query: &str, bytes: &[u8]) -> Result<Vec<(String, String, String)>, AppError> {
    let elements: Vec<serde_json::Value> = serde_json::from_slice(bytes)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?;
    if elements.is_empty() {
        return Err(AppError::BadRequest(
            "an empty batch: give at least one event".to_owned(),
        ));
    }
    if elements.len() > MAX_BATCH {
        return Err(AppError::BadRequest(format!(
            "a batch holds at most {MAX_BATCH} events; this one has {}",
            elements.len()
        )));
    }
    elements
        .iter()
        .enumerate()
        .map(|(n, element)| {
            let bytes = serde_json::to_vec(element)
                .map_err(|e| AppError::BadRequest(format!("event {n}: {e}")))?;
            decode(BodyKind::Json, query, &bytes).map_err(|err| match err {
                AppError::BadRequest(message) => {
                    AppError::BadRequest(format!("event {n}: {message}"))
                }
                other => AppError::BadRequest(format!("event {n}: {other}")),
            })
        })
        .collect()
}

/// The body forms `/publish` reads, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json`: an event object or `{"message": ...}`.
    Json,
    /// `text/plain`: the body is the data.
    Text,
}

impl BodyKind {
    /// The kind a request's `Content-Type` names.
    ///
    /// # Errors
    /// 415 for a missing or other content type.
    pub fn of(headers: &HeaderMap) -> Result<Self, AppError> {
        let Some(value) = headers.get(header::CONTENT_TYPE) else {
            return Err(AppError::UnsupportedMediaType("none".to_owned()));
        };
        let text = String::from_utf8_lossy(value.as_bytes());
        let essence = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(Self::Json),
            "text/plain" => Ok(Self::Text),
            _ => Err(AppError::UnsupportedMediaType(text.into_owned())),
        }
    }
}

/// Reads the whole body into one buffer, within [`MAX_BODY`] bytes and
/// `timeout`.
///
/// A declared `Content-Length` over the limit is refused before anything is
/// read, so a client that sent `Expect: 100-continue` never gets the go-ahead
/// (hyper sends `100 Continue` only when the body is first polled). Frames
/// are copied as they come: keeping them would pin one of hyper's read
/// buffers per frame, kilobytes for a byte trickled per TCP segment.
async fn read_body(
    mut body: Body,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<Bytes, AppError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(AppError::TooLarge(MAX_BODY));
    }
    let mut buf = BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|err| AppError::BadRequest(format!("could not read the body: {err}")))?;
            if let Some(data) = frame.data_ref() {
                if buf.len() + data.len() > MAX_BODY {
                    return Err(AppError::TooLarge(MAX_BODY));
                }
                buf.extend_from_slice(data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result?,
        Err(_) => return Err(AppError::BodyTimeout(timeout.as_secs().max(1))),
    }
    Ok(buf.freeze())
}
