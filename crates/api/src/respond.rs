//! Responses that carry one resource: reads (with `_summary`/`_elements`) and
//! the results of writes (with `Prefer: return=`). See
//! <http://hl7.org/fhir/R4/http.html#read> and <http://hl7.org/fhir/R4/http.html#ops>.

use crate::error::{ApiError, outcome_response};
use crate::negotiation::{Return, ResourceHeaders, add_resource_headers, fhir_json_response, shared_text};
use crate::summary::Subsetting;
use axum::response::{IntoResponse, Response};
use domain::ErrorKind;
use domain::store::StoredResource;
use fhir::{Issue, IssueType};
use http::StatusCode;

/// 200 with a stored version (read, vread): ETag and Last-Modified set; 410
/// when the version is a delete.
pub(crate) fn resource(stored: &StoredResource, subsetting: &Subsetting) -> Result<Response, ApiError> {
    let Some(text) = &stored.body else {
        return Err(ApiError::new(
            ErrorKind::Gone,
            format!("{} was deleted (version {})", stored.resource_type, stored.version_id),
        ));
    };
    let body = if subsetting.is_full() {
        shared_text(text.clone())
    } else {
        subsetting.apply(&stored.resource_type, text)?.into()
    };
    let mut response = fhir_json_response(StatusCode::OK, body);
    add_resource_headers(&mut response, &ResourceHeaders { resource: stored, location_base: None });
    Ok(response)
}

/// The response to a create, update or patch: `status`, ETag, Last-Modified,
/// Location when `location_base` is given, and the body `Prefer: return=` asks for.
pub(crate) fn written(
    status: StatusCode,
    stored: &StoredResource,
    r#return: Return,
    location_base: Option<&str>,
    what: &str,
) -> Response {
    let mut response = match (r#return, &stored.body) {
        (Return::Representation, Some(text)) => fhir_json_response(status, shared_text(text.clone())),
        (Return::OperationOutcome, _) => outcome_response(
            status,
            &[Issue::information(
                IssueType::Informational,
                format!("{what} {}/{} version {}", stored.resource_type, stored.id, stored.version_id),
            )],
        ),
        _ => status.into_response(),
    };
    add_resource_headers(&mut response, &ResourceHeaders { resource: stored, location_base });
    response
}
