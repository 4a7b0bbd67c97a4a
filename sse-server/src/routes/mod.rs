//! HTTP routes: each handler turns a request into broker calls and the
//! result into a response.

pub mod publish;
mod sse;
mod status;

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::{
    auth::{self, Auth, Hosts, Origins},
    broker::Broker,
    config::Config,
    error::AppError,
};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The event log.
    pub broker: Arc<Broker>,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// One permit per allowed subscriber (`--max-clients`).
    pub admission: Option<Arc<Semaphore>>,
    /// Who may subscribe and publish on which topics.
    pub auth: Arc<Auth>,
    /// Browser origins allowed across sites (`--cors-origin`).
    pub origins: Arc<Origins>,
    /// `Host` names served (`--allowed-hosts`).
    pub hosts: Arc<Hosts>,
}

impl AppState {
    /// State for a broker and configuration.
    pub fn new(broker: Arc<Broker>, config: Config) -> Self {
        let admission = config.max_clients.map(|n| Arc::new(Semaphore::new(n)));
        let auth = Arc::new(Auth::new(&config, Arc::clone(broker.hub().metrics())));
        let origins = Arc::new(Origins::new(&config.cors_origin));
        let hosts = Arc::new(Hosts::new(&config.allowed_hosts, config.addr));
        Self {
            broker,
            config: Arc::new(config),
            admission,
            auth,
            origins,
            hosts,
        }
    }
}

/// The server's routes, apart from serving them.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/sse", get(sse::subscribe))
        .route("/publish", post(publish::publish).put(publish::publish))
        .route("/healthz", get(status::healthz))
        .route("/metrics", get(status::metrics))
        .route("/stats", get(status::stats))
        .route("/openapi.json", get(status::openapi))
        .method_not_allowed_fallback(method_not_allowed);
    let router = match &state.config.static_dir {
        Some(dir) => router.fallback_service(tower_http::services::ServeDir::new(dir).fallback(
            axum::handler::HandlerWithoutStateExt::into_service(not_found),
        )),
        None => router.fallback(crate::assets::serve),
    };
    let router = if state.origins.is_empty() {
        router
    } else {
        router.layer(state.origins.layer())
    };
    router
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Refuses (403) a request whose `Host` is not served (DNS rebinding), and
/// a state-changing one from a browser on a foreign origin (cross-site
/// publishing through a form or a no-cors POST). Requests without `Origin`
/// (curl, sse-cli, servers) are not browsers' cross-site requests.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    // HTTP/2 carries the host in the URI (`:authority`), not in `Host`.
    let authority = request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let host = headers.get(header::HOST).or(authority.as_ref());
    if !state.hosts.allows(host) {
        return AppError::Forbidden(auth::HOST_REFUSED.to_owned()).into_response();
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let forwarded = headers.get("x-forwarded-host");
            let own = auth::is_same_origin(origin, host)
                || forwarded.is_some_and(|f| auth::is_same_origin(origin, Some(f)));
            if !own && !state.origins.allows(origin) {
                return AppError::Forbidden(
                    "cross-origin requests from this origin are not allowed (see --cors-origin)"
                        .to_owned(),
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

async fn not_found() -> AppError {
    AppError::NotFound
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Longest error text from axum or tower-http that is carried over into
/// the JSON error (their rejections are one short sentence).
const MAX_ERROR_TEXT: usize = 1024;

/// Gives every error response a JSON `{"error"}` body, also those that axum
/// and tower-http make themselves (extractor rejections, `ServeDir`), which
/// are plain text or empty. Headers such as `Allow` are kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, MAX_ERROR_TEXT)
        .collect()
        .await
    {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut json = (status, Json(serde_json::json!({ "error": message }))).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    json
}
