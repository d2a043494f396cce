//! `patch`: `PATCH [base]/[type]/[id]` and `PATCH [base]/[type]?criteria`, with
//! JSON Patch or FHIRPath Patch (<http://hl7.org/fhir/R4/http.html#patch>,
//! <http://hl7.org/fhir/R4/fhirpatch.html>).

use crate::caller::Caller;
use crate::error::ApiError;
use crate::negotiation::{BodyMedia, body_media, if_match, prefer};
use crate::request::{check_id, check_type, criteria, parse_json, read_body};
use crate::{St, respond};
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use domain::ErrorKind;
use domain::service::PatchDocument;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

/// 200 with the patched version.
pub(crate) async fn patch(
    state: St, Caller(access): Caller,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_id(&id)?;
    let document = read_patch(&state, &headers, body).await?;
    let version = if_match(&headers)?;
    let prefer = prefer(&headers);
    let stored = state.service.patch(&access, &resource_type, &id, document, version).await?;
    Ok(respond::written(StatusCode::OK, &stored, prefer.r#return, None, "patched"))
}

/// `PATCH [base]/[type]?criteria`: the query string is the criteria.
pub(crate) async fn conditional(
    state: St, Caller(access): Caller,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    let criteria = criteria(query.as_deref())?;
    let document = read_patch(&state, &headers, body).await?;
    let version = if_match(&headers)?;
    let prefer = prefer(&headers);
    let stored = state.service.conditional_patch(&access, &resource_type, &criteria, document, version).await?;
    Ok(respond::written(StatusCode::OK, &stored, prefer.r#return, None, "patched"))
}

/// `application/json-patch+json` is a JSON Patch (an array of operations);
/// FHIR JSON must be a Parameters resource (FHIRPath Patch). A JSON array
/// sent as plain `application/json` is read as a JSON Patch too, since some
/// clients label it so.
async fn read_patch(state: &St, headers: &HeaderMap, body: Body) -> Result<PatchDocument, ApiError> {
    let media = body_media(headers)?;
    if media == BodyMedia::Form {
        return Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            "PATCH takes application/json-patch+json or application/fhir+json (FHIRPath Patch)",
        ));
    }
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let value = parse_json(&bytes)?;
    match (media, &value) {
        (_, Value::Array(_)) => Ok(PatchDocument::Json(value)),
        (BodyMedia::JsonPatch, _) => Err(ApiError::bad_request("a JSON Patch document must be a JSON array")),
        (_, Value::Object(o)) if o.get("resourceType").and_then(Value::as_str) == Some("Parameters") => {
            Ok(PatchDocument::FhirPath(value))
        }
        _ => Err(ApiError::bad_request(
            "a FHIRPath Patch must be a Parameters resource; JSON Patch needs application/json-patch+json",
        )),
    }
}
