//! `/healthz`, `/metrics` and `/stats`.

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};

use super::AppState;

/// 200 while serving and the broker is reachable, 503 when it is not (or,
/// with `--data-dir`, cannot store events: the body's `error` says why).
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    if state.broker.is_up() {
        (
            StatusCode::OK,
            Json(serde_json::json!({"status": "ok", "broker": "up"})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(match state.broker.problem() {
                // A full disk under --data-dir: the broker runs, but
                // cannot store events.
                Some(problem) => {
                    serde_json::json!({"status": "degraded", "broker": "down", "error": problem})
                }
                None => serde_json::json!({"status": "degraded", "broker": "down"}),
            }),
        )
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.broker.hub().metrics().render(),
    )
}

/// Counters as JSON, for the web page's chart.
pub async fn stats(State(state): State<AppState>) -> impl IntoResponse {
    Json(state.broker.hub().metrics().stats())
}

/// The OpenAPI 3.1 description of the HTTP API, kept beside the crate
/// (`sse-server/openapi.json`) and checked against the real server by a
/// schemathesis run in `cargo xtask test`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// `GET /openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}
