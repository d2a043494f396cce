//! FHIR R4 REST API over axum (<http://hl7.org/fhir/R4/http.html>). Only this
//! crate (and later `ui`) knows HTTP; every interaction goes through
//! [`domain::Service`].
//!
//! One module per interaction (`create`, `read`, `vread`, `update`, `patch`,
//! `delete`, `history`, `search`, `compartment`, `operations`, `bundle`, `capabilities`), plus `error`
//! (OperationOutcome responses), `negotiation` (formats and FHIR headers),
//! `request` (paths, query strings, bodies), `summary` (`_summary`/`_elements`),
//! `response_bundle` (searchset/history Bundles written as text) and `health`.

mod bearer;
mod bundle;
mod caller;
mod capabilities;
mod reindex;
mod compartment;
mod create;
mod emergency;
mod delete;
mod error;
mod health;
mod history;
mod json_keys;
mod listener;
mod negotiation;
mod oauth;
mod operations;
mod patch;
mod read;
mod request;
mod respond;
mod response_bundle;
mod search;
mod security_headers;
mod summary;
mod update;
mod vread;

pub use bearer::Peer;
pub use error::ApiError;
pub use listener::{FhirListener, OutcomeIo};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use domain::Service;
use fhir::Issue;
use http::StatusCode;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

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
    /// Users, OAuth clients and tokens: the bearer check of `/fhir` and the `/oauth2` endpoints.
    pub auth: Arc<auth::Auth>,
}

/// What handlers share: the public state plus what is computed once at startup.
pub(crate) struct Shared {
    pub(crate) service: Arc<Service>,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) auth: Arc<auth::Auth>,
    /// `config.base_url` without a trailing slash.
    pub(crate) base: String,
    /// The CapabilityStatement JSON, rebuilt when the search parameters change.
    pub(crate) capabilities: std::sync::Mutex<capabilities::Cached>,
    /// `$reindex` runs started with `Prefer: respond-async`.
    pub(crate) jobs: reindex::Jobs,
}

pub(crate) type St = State<Arc<Shared>>;

/// The whole HTTP application: `/fhir/...`, `/healthz`, `/readyz`.
pub fn router(state: AppState) -> Router {
    let base = state.config.base_url.trim_end_matches('/').to_string();
    let capabilities =
        std::sync::Mutex::new(capabilities::Cached::new(state.service.store().backend(), state.service.registry(), &state.auth.endpoints()));
    let limit = state.config.max_body_bytes;
    let https = state.config.base_url.starts_with("https://");
    let shared = Arc::new(Shared {
        service: state.service,
        config: state.config,
        auth: state.auth,
        base,
        capabilities,
        jobs: reindex::Jobs::default(),
    });

    let fhir = Router::new()
        .route("/fhir/metadata", get(capabilities::metadata))
        .route("/fhir", get(search::system).post(bundle::batch_or_transaction))
        .route("/fhir/", get(search::system).post(bundle::batch_or_transaction))
        .route("/fhir/_search", post(search::system_post))
        .route("/fhir/_history", get(history::system))
        .route("/fhir/$reindex", post(reindex::system))
        .route("/fhir/$break-the-glass", post(emergency::break_the_glass))
        .route("/fhir/$reindex-status/{job}", get(reindex::status))
        .route("/fhir/{type}/$reindex", post(reindex::type_level))
        .route(
            "/fhir/{type}",
            get(search::type_get)
                .post(create::create)
                .put(update::conditional)
                .patch(patch::conditional)
                .delete(delete::conditional),
        )
        .route("/fhir/{type}/_search", post(search::type_post))
        .route("/fhir/{type}/_history", get(history::type_level))
        .route("/fhir/{type}/{id}", get(read::read).put(update::update).patch(patch::patch).delete(delete::delete))
        .route("/fhir/{type}/{id}/_history", get(history::instance))
        .route("/fhir/Observation/$lastn", get(operations::lastn_get).post(operations::lastn_post))
        .route("/fhir/{type}/{id}/{target}", get(compartment::search).post(compartment::post))
        .route("/fhir/{type}/{id}/_history/{vid}", get(vread::vread))
        .fallback(not_found)
        .layer(middleware::from_fn(negotiation::negotiate))
        // Every /fhir request but the CapabilityStatement carries a bearer token.
        .layer(middleware::from_fn_with_state(shared.clone(), bearer::require))
        // Refuses a declared Content-Length over the limit before any handler
        // runs; handlers also stop reading at the limit (chunked bodies).
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(trace_layer())
        .with_state(shared.clone());

    let oauth = oauth::routes(shared.clone()).layer(trace_layer());

    let health = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(shared);

    // axum and tower answer some errors (405, 413, bad path encoding) with
    // plain text or nothing, and the probes answer in plain text; FHIR wants
    // an OperationOutcome on every error. (hyper's own 400/414/431 are
    // handled by `FhirListener`.)
    // The OAuth endpoints answer JSON (RFC 6749) or HTML, never an OperationOutcome.
    fhir.merge(health)
        .layer(middleware::map_response_with_state(limit, outcome_for_bare_errors))
        .merge(oauth)
        .layer(middleware::map_response_with_state(https, security_headers::add))
}

/// One span per request with the method and route template only: the URI
/// is not logged, since query strings can carry names and identifiers.
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&Request) -> tracing::Span,
> {
    fn span(request: &Request) -> tracing::Span {
        let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
        tracing::info_span!("request", method = %request.method(), route = %route)
    }
    TraceLayer::new_for_http().make_span_with(span as fn(&Request) -> tracing::Span)
}

async fn not_found() -> Response {
    ApiError::new(domain::ErrorKind::NotFound, "no such endpoint").into_response()
}

/// Turns an error response without a FHIR body into an OperationOutcome.
async fn outcome_for_bare_errors(State(limit): State<usize>, response: Response) -> Response {
    let status = response.status();
    let is_fhir = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == negotiation::FHIR_JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_fhir {
        return response;
    }
    let kind = error::kind_for_status(status);
    let diagnostics = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body larger than {limit} bytes"),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this endpoint".to_string(),
        _ => status.canonical_reason().unwrap_or("request failed").to_string(),
    };
    let mut out = error::outcome_response(status, &[Issue::error(kind.issue_type(), diagnostics)]);
    if let Some(allow) = response.headers().get(http::header::ALLOW) {
        out.headers_mut().insert(http::header::ALLOW, allow.clone());
    }
    out
}

/// A panic in a handler is a bug: answer 500 without its message (which
/// could hold request data) and log only that it happened.
fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(domain::ErrorKind::Internal, "handler panicked").into_response()
}
