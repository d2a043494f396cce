//! `POST [base]/$break-the-glass`: emergency access (45 CFR 170.315(d)(6)).
//!
//! A signed-in user of the break-the-glass group gives a reason (a
//! Parameters resource with `reason`); for a limited time their requests may
//! open records labelled restricted. The grant, and every access made under
//! it, is audited as emergency access, and the privacy officer is notified
//! (see `auth::break_glass`). Answers a Parameters with `until`.

use crate::caller::Caller;
use crate::error::ApiError;
use crate::negotiation::{fhir_json_response, require_json_body};
use crate::request::{parse_resource, read_body};
use crate::St;
use auth::break_glass::BreakGlassError;
use axum::body::Body;
use axum::response::Response;
use domain::ErrorKind;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

pub(crate) async fn break_the_glass(
    state: St,
    Caller(access): Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if access.actor.kind != "user" {
        return Err(ApiError::new(ErrorKind::Forbidden, "break-the-glass is for signed-in users, not apps acting alone"));
    }
    require_json_body(&headers)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let parameters = parse_resource(&bytes, "Parameters")?;
    let reason = parameters
        .get("parameter")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|p| p.get("name").and_then(Value::as_str) == Some("reason")))
        .and_then(|p| p.get("valueString"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let grant = state.auth.users().break_glass(&access.actor.id, reason, access.from.as_deref()).await.map_err(|e| match e {
        BreakGlassError::ReasonRequired => {
            ApiError(domain::Error::new(ErrorKind::BadRequest, "break-the-glass needs a reason").at("Parameters.parameter"))
        }
        BreakGlassError::NotInGroup => ApiError::new(ErrorKind::Forbidden, "you are not in the break-the-glass group"),
        BreakGlassError::Busy => ApiError::new(ErrorKind::Conflict, e.to_string()),
        BreakGlassError::Store(e) => ApiError::from(domain::Error::from(e)),
    })?;
    // Live tokens carry the user's access as it was: they pick the grant up now.
    state.auth.clear_token_cache();
    let answer = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "until", "valueInstant": grant.until.to_fhir()},
            {"name": "reason", "valueString": grant.reason}
        ]
    });
    Ok(fhir_json_response(StatusCode::OK, answer.to_string().into()))
}
