//! The one error type handlers return; it always answers JSON `{"error"}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use crate::{
    broker::BrokerError,
    wire::{NameError, QueryError},
};

/// Everything a request can get wrong, or the server cannot do now.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request was malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A topic or event name was invalid (400).
    #[error(transparent)]
    BadName(#[from] NameError),
    /// A query parameter was not text (400).
    #[error(transparent)]
    BadQuery(#[from] QueryError),
    /// Missing or wrong bearer token (401).
    #[error("missing or wrong publish token (send Authorization: Bearer TOKEN)")]
    Unauthorized,
    /// Authorization refused the request: 401 (with `WWW-Authenticate:
    /// Bearer`), 403, or 503 when `--auth-url` cannot answer.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The request is refused for what it is, not who sent it (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such route (404).
    #[error("not found")]
    NotFound,
    /// The route exists, but not for this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body did not arrive in time (408).
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// The body was over the limit (413).
    #[error("body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body's content type is not one we read (415).
    #[error("unsupported content type {0:?}: send application/json or text/plain")]
    UnsupportedMediaType(String),
    /// `--max-clients` subscribers are connected (503, with Retry-After).
    #[error("too many subscribers connected; retry later")]
    Full {
        /// Seconds the client should wait.
        retry_after_secs: u64,
    },
    /// The broker cannot take requests now (503).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadName(_) | Self::BadQuery(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Auth(err) => err.status(),
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Broker(BrokerError::Uncertain(_)) => StatusCode::GATEWAY_TIMEOUT,
            Self::Full { .. } | Self::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request refused");
        }
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            Self::Full { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Broker(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Auth(err) => {
                if err.status() == StatusCode::UNAUTHORIZED {
                    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                } else if err.status() == StatusCode::SERVICE_UNAVAILABLE {
                    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
            }
            // The rest of the body may still be on its way: close rather
            // than read it to find the next request.
            Self::BodyTimeout(_) | Self::TooLarge(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
