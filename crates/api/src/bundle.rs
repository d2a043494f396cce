//! `batch` and `transaction`: `POST [base]` with a Bundle
//! (<http://hl7.org/fhir/R4/http.html#transaction>). The Service processes
//! the entries; this module checks the envelope.

use crate::caller::Caller;
use crate::error::ApiError;
use crate::negotiation::{fhir_json_response, prefer, require_json_body};
use crate::request::{parse_json, read_body};
use crate::St;
use axum::body::Body;
use axum::response::Response;
use domain::ErrorKind;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

/// 200 with the batch-response or transaction-response Bundle. Any body
/// other than a Bundle of type batch or transaction is 400. `Prefer:
/// return=` applies to each entry's result (<http://hl7.org/fhir/R4/http.html#ops>):
/// the resource, an OperationOutcome in `response.outcome`, or neither.
pub(crate) async fn batch_or_transaction(state: St, Caller(access): Caller, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    require_json_body(&headers)?;
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let bundle = parse_json(&bytes)?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::bad_request("POST to the base URL takes a Bundle").at("resourceType"));
    }
    match bundle.get("type").and_then(Value::as_str) {
        Some("batch" | "transaction") => {}
        _ => {
            return Err(ApiError::bad_request("the Bundle type must be batch or transaction").at("Bundle.type"));
        }
    }
    let prefer = prefer(&headers);
    let entries = prefer.return_stated.then(|| prefer.r#return.to_domain());
    let response = state.service.bundle(&access, bundle, &state.base, entries).await?;
    let text = serde_json::to_vec(&response)
        .map_err(|_| ApiError::new(ErrorKind::Internal, "could not write the response Bundle"))?;
    Ok(fhir_json_response(StatusCode::OK, text.into()))
}
