//! OAuth 2 / SMART App Launch 2.0 over HTTP: discovery
//! (`/.well-known/smart-configuration`, `/.well-known/openid-configuration`,
//! also under `/fhir`), the authorization endpoint with its sign-in and
//! patient picker pages (`authorize`), and the token, revocation,
//! introspection, JWKS and EHR-launch endpoints (`endpoints`). The rules
//! live in [`auth::Auth`]; this module only speaks HTTP.

mod authorize;
mod discovery;
mod endpoints;
mod html;

use crate::Shared;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use tower_http::limit::RequestBodyLimitLayer;

/// Largest form accepted by the OAuth endpoints.
const FORM_LIMIT: usize = 64 * 1024;

/// The OAuth and discovery routes (no bearer token needed).
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/smart-configuration", get(discovery::smart))
        .route("/fhir/.well-known/smart-configuration", get(discovery::smart))
        .route("/.well-known/openid-configuration", get(discovery::openid))
        .route("/fhir/.well-known/openid-configuration", get(discovery::openid))
        .route("/oauth2/authorize", get(authorize::get).post(authorize::post))
        .route("/oauth2/token", post(endpoints::token))
        .route("/oauth2/revoke", post(endpoints::revoke))
        .route("/oauth2/introspect", post(endpoints::introspect))
        .route("/oauth2/jwks", get(endpoints::jwks))
        .route("/oauth2/launch", post(endpoints::launch))
        .route("/oauth2/sign-out", post(authorize::sign_out))
        .layer(RequestBodyLimitLayer::new(FORM_LIMIT))
        .with_state(shared)
}

/// A JSON answer that no cache keeps (RFC 6749 section 5.1), readable from
/// browser apps on other origins.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, Body::from(value.to_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    response
}

/// An RFC 6749 error answer.
pub(crate) fn oauth_error(error: &auth::oauth::OAuthError, basic_tried: bool) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json(status, &error.to_json());
    if status == StatusCode::UNAUTHORIZED {
        let challenge = if basic_tried { "Basic realm=\"hearth\"" } else { "Bearer realm=\"hearth\"" };
        response.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    response
}

/// The form of a POST (`application/x-www-form-urlencoded`).
pub(crate) async fn read_form(request: Request) -> Result<Vec<(String, String)>, auth::oauth::OAuthError> {
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(auth::oauth::OAuthError::new("invalid_request", "the body must be application/x-www-form-urlencoded"));
    }
    let bytes = axum::body::to_bytes(request.into_body(), FORM_LIMIT)
        .await
        .map_err(|_| auth::oauth::OAuthError::new("invalid_request", format!("the form is larger than {FORM_LIMIT} bytes")))?;
    Ok(form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
}

/// The client credentials of `Authorization: Basic`, if given.
pub(crate) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(auth::oauth::decode_basic)
}

/// A cookie of the request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}
