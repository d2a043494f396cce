//! FHIR R4 REST API over axum. Only this crate (and later `ui`) knows HTTP.

use axum::Router;
use domain::Service;
use std::sync::Arc;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// The public base URL of the FHIR endpoint, e.g. `http://127.0.0.1:8080/fhir`.
    pub base_url: String,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub config: Arc<ApiConfig>,
}

/// The whole HTTP application: `/fhir/...`, `/healthz`, `/readyz`.
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
