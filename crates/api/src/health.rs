//! Liveness and readiness probes for orchestrators: plain text, outside `/fhir`.

use crate::St;
use axum::response::IntoResponse;
use http::StatusCode;

/// `GET /healthz`: the process answers.
pub(crate) async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// `GET /readyz`: the store answers (`Store::ping`), else 503.
pub(crate) async fn readyz(state: St) -> impl IntoResponse {
    match state.service.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(backend = state.service.store().backend(), error = %e, "store not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}
