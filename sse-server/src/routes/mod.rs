//! HTTP routes: each handler turns a request into broker calls and the
//! result into a response.

mod publish;
mod sse;
mod status;

use std::sync::Arc;

use axum::{
    routing::{get, post},
    Router,
};
use tokio::sync::Semaphore;

use crate::{broker::Broker, config::Config, error::AppError};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The event log.
    pub broker: Arc<Broker>,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// One permit per allowed subscriber (`--max-clients`).
    pub admission: Option<Arc<Semaphore>>,
}

impl AppState {
    /// State for a broker and configuration.
    pub fn new(broker: Arc<Broker>, config: Config) -> Self {
        let admission = config.max_clients.map(|n| Arc::new(Semaphore::new(n)));
        Self {
            broker,
            config: Arc::new(config),
            admission,
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
        .route("/stats", get(status::stats));
    let router = match &state.config.static_dir {
        Some(dir) => router.fallback_service(tower_http::services::ServeDir::new(dir).fallback(
            axum::handler::HandlerWithoutStateExt::into_service(not_found),
        )),
        None => router.fallback(crate::assets::serve),
    };
    router.with_state(state)
}

async fn not_found() -> AppError {
    AppError::NotFound
}
