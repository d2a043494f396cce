//! `create`: `POST [base]/[type]`, conditional with `If-None-Exist`
//! (<http://hl7.org/fhir/R4/http.html#create>, <http://hl7.org/fhir/R4/http.html#ccreate>).

use crate::caller::Caller;
use crate::error::ApiError;
use crate::negotiation::{if_none_exist, prefer, require_json_body};
use crate::request::{check_type, parse_resource, read_body};
use crate::{St, respond};
use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use domain::service::Created;
use http::{HeaderMap, StatusCode};

/// 201 with Location, ETag and Last-Modified; 200 with the existing resource
/// when the `If-None-Exist` criteria match exactly one.
pub(crate) async fn create(
    state: St, Caller(access): Caller,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    require_json_body(&headers)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let resource = parse_resource(&bytes, &resource_type)?;
    let criteria = if_none_exist(&headers)?;
    let prefer = prefer(&headers);
    let base = Some(state.base.as_str());
    Ok(match state.service.create(&access, &resource_type, resource, criteria.as_deref()).await? {
        Created::Created(stored) => respond::written(StatusCode::CREATED, &stored, prefer.r#return, base, "created"),
        Created::Existing(stored) => respond::written(StatusCode::OK, &stored, prefer.r#return, base, "matched existing"),
    })
}
