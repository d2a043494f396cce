//! Compartment search: `GET [base]/[Compartment]/[id]/[type]?params`
//! (<http://hl7.org/fhir/R4/http.html#vsearch>, <http://hl7.org/fhir/R4/compartmentdefinition.html>),
//! e.g. `Patient/123/Observation?code=...`: a type search limited to the resources linked
//! to the compartment's owner. The Service adds the compartment filter; the response is
//! the ordinary searchset Bundle of `search`.

use crate::caller::Caller;
use crate::error::ApiError;
use crate::negotiation::prefer;
use crate::request::{check_id, check_type, query_pairs};
use crate::search::{searchset, take_subsetting};
use crate::{St, operations};
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::response::Response;
use domain::ErrorKind;
use http::HeaderMap;

/// `GET [base]/[Compartment]/[id]/[type]`, and `GET [base]/Patient/[id]/$everything`,
/// which shares the path's shape. 404 when the first segment is not a compartment type
/// or the last not a resource type (or a supported operation); 400 when the type is not
/// in the compartment.
pub(crate) async fn search(
    state: St, Caller(access): Caller,
    Path((compartment, id, target)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if target.starts_with('$') {
        return operations::instance_get(state, Caller(access), compartment, id, target, query, headers).await;
    }
    check_type(&compartment)?;
    check_type(&target)?;
    check_id(&id)?;
    let mut params = query_pairs(query.as_deref());
    let subsetting = take_subsetting(&mut params)?;
    let handling = prefer(&headers).handling;
    let result = state.service.compartment_search(&access, &compartment, &id, &target, &params, handling).await?;
    let path = format!("{}/{compartment}/{id}/{target}", state.base);
    searchset(&state.base, &path, &result, &subsetting)
}

/// `POST [base]/[type]/[id]/[target]`: only operations (`Patient/[id]/$everything`) take a
/// POST at this depth; anything else is not an endpoint.
pub(crate) async fn post(
    state: St, Caller(access): Caller,
    Path((resource_type, id, target)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if target.starts_with('$') {
        return operations::instance_post(state, Caller(access), resource_type, id, target, query, headers, body).await;
    }
    Err(ApiError::new(ErrorKind::MethodNotAllowed, "POST is not allowed on a compartment search"))
}
