//! `update`: `PUT [base]/[type]/[id]`, and conditional update
//! `PUT [base]/[type]?criteria` (<http://hl7.org/fhir/R4/http.html#update>,
//! <http://hl7.org/fhir/R4/http.html#cond-update>).

use crate::caller::Caller;
use crate::error::ApiError;
use crate::negotiation::{Prefer, if_match, prefer, require_json_body};
use crate::request::{check_id, check_type, criteria, parse_resource, read_body};
use crate::{St, respond};
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use domain::service::Updated;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

/// 200 with the new version, or 201 when the update created the resource.
/// The body's `id` must equal the URL's (400 otherwise, as the spec requires).
pub(crate) async fn update(
    state: St, Caller(access): Caller,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_id(&id)?;
    require_json_body(&headers)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let resource = parse_resource(&bytes, &resource_type)?;
    match resource.get("id") {
        Some(Value::String(body_id)) if *body_id == id => {}
        Some(_) => return Err(ApiError::bad_request("the body's id does not match the id in the URL").at("id")),
        None => return Err(ApiError::bad_request("an update body must carry the id of the URL").at("id")),
    }
    let version = if_match(&headers)?;
    let prefer = prefer(&headers);
    let updated = state.service.update(&access, &resource_type, &id, resource, version).await?;
    Ok(respond_updated(&state, &updated, prefer))
}

/// `PUT [base]/[type]?criteria`: the query string is the criteria.
pub(crate) async fn conditional(
    state: St, Caller(access): Caller,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    let criteria = criteria(query.as_deref())?;
    require_json_body(&headers)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let resource = parse_resource(&bytes, &resource_type)?;
    let version = if_match(&headers)?;
    let prefer = prefer(&headers);
    let updated = state.service.conditional_update(&access, &resource_type, &criteria, resource, version).await?;
    Ok(respond_updated(&state, &updated, prefer))
}

fn respond_updated(state: &St, updated: &Updated, prefer: Prefer) -> Response {
    if updated.created {
        respond::written(StatusCode::CREATED, &updated.resource, prefer.r#return, Some(&state.base), "created")
    } else {
        respond::written(StatusCode::OK, &updated.resource, prefer.r#return, None, "updated")
    }
}
