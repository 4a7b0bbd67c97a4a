//! `GET /sse`: the event stream, through axum (HTTP/2, and HTTP/1.1 when
//! the lean path hands a request on). Every rule is in
//! [`crate::subscribe`]; this only adapts it to axum.

use std::convert::Infallible;

use axum::{
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderName, HeaderValue},
    response::{IntoResponse, Response},
    Extension,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::AppState;
pub use crate::subscribe::DEFAULT_TOPIC;
use crate::{error::AppError, serve::ConnectionHandle, subscribe::RESPONSE_HEADERS};

/// Subscribes through [`crate::subscribe::subscribe`] and streams the result.
pub async fn subscribe(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    connection: Option<Extension<ConnectionHandle>>,
) -> Result<Response, AppError> {
    let connection = connection.map_or_else(CancellationToken::new, |Extension(handle)| handle.0);
    let subscribed =
        crate::subscribe::subscribe(&state, query.as_deref().unwrap_or(""), &headers, connection)
            .await?;
    let mut response = Body::from_stream(subscribed.map(Ok::<_, Infallible>)).into_response();
    let response_headers = response.headers_mut();
    for (name, value) in RESPONSE_HEADERS {
        response_headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    Ok(response)
}
