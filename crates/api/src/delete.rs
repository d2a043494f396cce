//! `delete`: `DELETE [base]/[type]/[id]` and conditional delete
//! `DELETE [base]/[type]?criteria` (<http://hl7.org/fhir/R4/http.html#delete>,
//! <http://hl7.org/fhir/R4/http.html#3.1.0.7.1>).

use crate::caller::Caller;
use crate::error::{ApiError, outcome_response};
use crate::negotiation::{Return, etag, prefer};
use crate::request::{check_id, check_type, criteria};
use crate::St;
use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use fhir::{Issue, IssueType};
use http::{HeaderMap, HeaderValue, StatusCode};

/// 204, also when there was nothing to delete (the spec allows either 200 or
/// 204 for a repeated delete); 200 with an OperationOutcome under
/// `Prefer: return=OperationOutcome`. ETag names the delete's version.
pub(crate) async fn delete(
    state: St, Caller(access): Caller,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_id(&id)?;
    let version = state.service.delete(&access, &resource_type, &id).await?;
    let message = match version {
        Some(v) => format!("deleted {resource_type}/{id} (version {v})"),
        None => format!("{resource_type}/{id} had nothing to delete"),
    };
    let mut response = deleted_response(&headers, message);
    if let Some(v) = version.and_then(|v| HeaderValue::try_from(etag(v)).ok()) {
        response.headers_mut().insert(http::header::ETAG, v);
    }
    Ok(response)
}

/// `DELETE [base]/[type]?criteria`: the Service refuses (412) when the
/// criteria match more than one resource (single-delete only).
pub(crate) async fn conditional(
    state: St, Caller(access): Caller,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    let criteria = criteria(query.as_deref())?;
    let count = state.service.conditional_delete(&access, &resource_type, &criteria).await?;
    Ok(deleted_response(&headers, format!("deleted {count} {resource_type} resource(s)")))
}

fn deleted_response(headers: &HeaderMap, message: String) -> Response {
    if prefer(headers).r#return == Return::OperationOutcome {
        outcome_response(StatusCode::OK, &[Issue::information(IssueType::Informational, message)])
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}
