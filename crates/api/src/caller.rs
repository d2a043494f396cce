//! The caller of a FHIR request: the [`Access`] the bearer-token middleware
//! put into the request's extensions. A handler that takes a [`Caller`]
//! cannot run for an unauthenticated request.

use crate::ApiError;
use axum::extract::FromRequestParts;
use domain::ErrorKind;
use domain::access::Access;
use http::request::Parts;

/// The authenticated caller of this request.
pub(crate) struct Caller(pub(crate) Access);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        parts
            .extensions
            .get::<Access>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::new(ErrorKind::Unauthorized, "this request needs a bearer token"))
    }
}
