//! `read`: `GET [base]/[type]/[id]` (<http://hl7.org/fhir/R4/http.html#read>).

use crate::caller::Caller;
use crate::error::ApiError;
use crate::request::{check_id, check_type};
use crate::summary::Subsetting;
use crate::{St, respond};
use axum::extract::{Path, RawQuery};
use axum::response::Response;

/// 200 with the current version, 404 if it never existed, 410 if deleted.
pub(crate) async fn read(
    state: St, Caller(access): Caller,
    Path((resource_type, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_id(&id)?;
    let subsetting = Subsetting::from_query(query.as_deref())?.for_single_resource()?;
    let stored = state.service.read(&access, &resource_type, &id).await?;
    respond::resource(&stored, &subsetting)
}
