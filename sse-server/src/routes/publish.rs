//! `POST /publish` and `PUT /publish`.

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    Json,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use super::{sse::DEFAULT_TOPIC, AppState};
use crate::{error::AppError, wire};

/// Largest accepted body. SSE is for notifications, not file transfer;
/// 64 KiB bounds the copy every subscriber's queue may reference.
pub const MAX_BODY: usize = 64 * 1024;

/// The JSON body: ours, or the seed's `{"message": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishJson {
    topic: Option<String>,
    event: Option<String>,
    data: Option<String>,
    message: Option<String>,
}

/// Publishes one event; answers 202 `{"id"}` once the broker has it.
pub async fn publish(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, AppError> {
    if let Some(token) = &state.config.publish_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes())) {
            return Err(AppError::Unauthorized);
        }
    }
    let kind = BodyKind::of(&headers)?;
    let mut query_topic = None;
    let mut query_event = None;
    for (key, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match &*key {
            "topic" => query_topic = Some(value.into_owned()),
            "event" => query_event = Some(value.into_owned()),
            _ => {}
        }
    }
    let bytes = read_body(body).await?;
    let (topic, event, data) = match kind {
        BodyKind::Json => {
            let json: PublishJson = serde_json::from_slice(&bytes)
                .map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?;
            let data = match (json.data, json.message) {
                (Some(_), Some(_)) => {
                    return Err(AppError::BadRequest(
                        "give either \"data\" or \"message\", not both".to_owned(),
                    ))
                }
                (Some(data), None) | (None, Some(data)) => data,
                (None, None) => {
                    return Err(AppError::BadRequest(
                        "missing \"data\" (or the seed's \"message\")".to_owned(),
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
    let id = state.broker.publish(&topic, &event, &data).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id.to_string() })),
    ))
}

enum BodyKind {
    Json,
    Text,
}

impl BodyKind {
    fn of(headers: &HeaderMap) -> Result<Self, AppError> {
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

async fn read_body(body: Body) -> Result<bytes::Bytes, AppError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(AppError::TooLarge(MAX_BODY))
        }
        Err(err) => Err(AppError::BadRequest(format!(
            "could not read the body: {err}"
        ))),
    }
}

/// Compares without stopping at the first difference, so response time
/// does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
