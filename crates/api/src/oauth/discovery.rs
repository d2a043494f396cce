//! SMART and OpenID discovery documents.

use crate::St;
use axum::response::Response;
use http::StatusCode;

/// `GET /.well-known/smart-configuration`.
pub(crate) async fn smart(state: St) -> Response {
    super::json(StatusCode::OK, &state.auth.smart_configuration())
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn openid(state: St) -> Response {
    super::json(StatusCode::OK, &state.auth.openid_configuration())
}
