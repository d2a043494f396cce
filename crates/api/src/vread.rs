//! `vread`: `GET [base]/[type]/[id]/_history/[vid]` (<http://hl7.org/fhir/R4/http.html#vread>).

use crate::caller::Caller;
use crate::error::ApiError;
use crate::request::{check_id, check_type};
use crate::summary::Subsetting;
use crate::{St, respond};
use axum::extract::{Path, RawQuery};
use axum::response::Response;

/// 200 with that version, 404 if there is no such version, 410 when the
/// version is a delete.
pub(crate) async fn vread(
    state: St, Caller(access): Caller,
    Path((resource_type, id, version)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_id(&id)?;
    check_id(&version)?;
    let subsetting = Subsetting::from_query(query.as_deref())?.for_single_resource()?;
    let stored = state.service.vread(&access, &resource_type, &id, &version).await?;
    respond::resource(&stored, &subsetting)
}
