//! Errors of the HTTP layer and their one rendering: an OperationOutcome body
//! with the status from the domain's error-kind table.
//!
//! See <http://hl7.org/fhir/R4/http.html#summary>: every error response
//! carries an OperationOutcome. Internal failures never expose their details:
//! the client gets an incident id, the log gets the id and the (PHI-free, by
//! the Store contract) diagnostic.

use crate::negotiation::fhir_json_response;
use axum::response::{IntoResponse, Response};
use domain::{Error, ErrorKind};
use fhir::outcome::operation_outcome;
use fhir::{Issue, IssueType};
use http::StatusCode;

/// A failed request: a domain error (or one the HTTP layer raised with the same kinds).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub Error);

impl ApiError {
    pub(crate) fn new(kind: ErrorKind, diagnostics: impl Into<String>) -> ApiError {
        ApiError(Error::new(kind, diagnostics))
    }

    pub(crate) fn bad_request(diagnostics: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, diagnostics)
    }

    /// The HTTP status of this error, from the domain table.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let issues = match self.0.kind {
            ErrorKind::Internal => {
                // Log the details under an incident id; the client sees only the id.
                let incident = uuid::Uuid::new_v4();
                tracing::error!(
                    incident = %incident,
                    code = self.0.kind.code(),
                    diagnostics = %self.0.message(),
                    "internal error"
                );
                vec![Issue::error(IssueType::Exception, format!("internal error (incident {incident})"))]
            }
            _ => self.0.issues,
        };
        outcome_response(status, &issues)
    }
}

/// An OperationOutcome response with the given status.
pub(crate) fn outcome_response(status: StatusCode, issues: &[Issue]) -> Response {
    let body = operation_outcome(issues).to_string();
    fhir_json_response(status, body.into())
}

/// The error kind a bare HTTP status stands for (for responses produced by
/// axum or tower layers, which know nothing of FHIR).
pub(crate) fn kind_for_status(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        400 => ErrorKind::BadRequest,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        405 => ErrorKind::MethodNotAllowed,
        406 => ErrorKind::NotAcceptable,
        409 => ErrorKind::Conflict,
        410 => ErrorKind::Gone,
        412 => ErrorKind::PreconditionFailed,
        413 => ErrorKind::PayloadTooLarge,
        415 => ErrorKind::UnsupportedMediaType,
        422 => ErrorKind::Invalid,
        501 => ErrorKind::NotImplemented,
        503 => ErrorKind::Unavailable,
        _ if status.is_client_error() => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_details() {
        let response = ApiError::new(ErrorKind::Internal, "disk /var/x failed").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn statuses_come_from_the_domain_table() {
        assert_eq!(ApiError::new(ErrorKind::Gone, "x").status(), StatusCode::GONE);
        assert_eq!(ApiError::new(ErrorKind::PreconditionFailed, "x").status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(kind_for_status(StatusCode::PAYLOAD_TOO_LARGE), ErrorKind::PayloadTooLarge);
    }
}
