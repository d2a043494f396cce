//! Operations answered with a searchset Bundle (<http://hl7.org/fhir/R4/operations.html>):
//! `GET|POST [base]/Patient/[id]/$everything`
//! (<http://hl7.org/fhir/R4/patient-operation-everything.html>) and
//! `GET|POST [base]/Observation/$lastn`
//! (<http://hl7.org/fhir/R4/observation-operation-lastn.html>).
//!
//! GET takes the inputs from the query string. POST takes them from a `Parameters`
//! resource (each parameter with a primitive `value[x]`) or a form body, after those of
//! the query string. The Service runs the operation; the Bundle and its paging links
//! (GET URLs, whichever method asked) come from `search`.

use crate::caller::Caller;
use domain::access::Access;
use crate::St;
use crate::error::ApiError;
use crate::negotiation::{BodyMedia, body_media, prefer};
use crate::request::{check_id, parse_resource, query_pairs, read_body};
use crate::search::{searchset, take_subsetting};
use axum::body::Body;
use axum::extract::RawQuery;
use axum::response::Response;
use domain::ErrorKind;
use http::HeaderMap;
use serde_json::Value;

/// An instance-level operation (`[type]/[id]/$name`) by GET.
pub(crate) async fn instance_get(
    state: St, Caller(access): Caller,
    resource_type: String,
    id: String,
    operation: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = query_pairs(query.as_deref());
    instance(state, &access, &resource_type, &id, &operation, params, &headers).await
}

/// An instance-level operation (`[type]/[id]/$name`) by POST.
// An axum handler: one argument per extractor.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn instance_post(
    state: St, Caller(access): Caller,
    resource_type: String,
    id: String,
    operation: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Refuse an unknown operation before reading its body.
    known_instance_operation(&resource_type, &operation)?;
    let params = with_body_params(&state, query.as_deref(), &headers, body).await?;
    instance(state, &access, &resource_type, &id, &operation, params, &headers).await
}

fn known_instance_operation(resource_type: &str, operation: &str) -> Result<(), ApiError> {
    if resource_type == "Patient" && operation == "$everything" {
        Ok(())
    } else {
        crate::request::check_type(resource_type)?;
        // The name comes from the URL path, clipped as resource types are.
        let shown: String = operation.chars().take(64).collect();
        Err(ApiError::new(ErrorKind::NotFound, format!("unknown operation {shown} on {resource_type}")))
    }
}

async fn instance(
    state: St, access: &Access,
    resource_type: &str,
    id: &str,
    operation: &str,
    mut params: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    known_instance_operation(resource_type, operation)?;
    check_id(id)?;
    let subsetting = take_subsetting(&mut params)?;
    let result = state.service.patient_everything(access, id, &params, prefer(headers).handling).await?;
    let path = format!("{}/Patient/{id}/$everything", state.base);
    searchset(&state.base, &path, &result, &subsetting)
}

/// `GET [base]/Observation/$lastn?patient=...`.
pub(crate) async fn lastn_get(state: St, Caller(access): Caller, RawQuery(query): RawQuery, headers: HeaderMap) -> Result<Response, ApiError> {
    lastn(state, &access, query_pairs(query.as_deref()), &headers).await
}

/// `POST [base]/Observation/$lastn` with a Parameters or form body.
pub(crate) async fn lastn_post(
    state: St, Caller(access): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = with_body_params(&state, query.as_deref(), &headers, body).await?;
    lastn(state, &access, params, &headers).await
}

async fn lastn(state: St, access: &Access, mut params: Vec<(String, String)>, headers: &HeaderMap) -> Result<Response, ApiError> {
    let subsetting = take_subsetting(&mut params)?;
    let result = state.service.observation_lastn(access, &params, prefer(headers).handling).await?;
    let path = format!("{}/Observation/$lastn", state.base);
    searchset(&state.base, &path, &result, &subsetting)
}

/// The query string's parameters followed by the body's: a form, or a Parameters
/// resource (operations.html#executing). An empty body adds nothing.
async fn with_body_params(
    state: &St,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut params = query_pairs(query);
    let media = if headers.contains_key(http::header::CONTENT_TYPE) { Some(body_media(headers)?) } else { None };
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    match media {
        Some(BodyMedia::Form) => params.extend(form_urlencoded::parse(&bytes).into_owned()),
        _ if bytes.iter().all(u8::is_ascii_whitespace) => {}
        Some(BodyMedia::Json) | None => params.extend(parameters_pairs(&parse_resource(&bytes, "Parameters")?)?),
        Some(BodyMedia::JsonPatch) => {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "an operation takes a Parameters resource or a form body",
            ));
        }
    }
    Ok(params)
}

/// `Parameters.parameter` as (name, value) pairs: every input of these operations is a
/// primitive (`valueDate`, `valueInstant`, `valueCode`, `valueString`, `valueInteger`...),
/// whose JSON text is the value as a URL would carry it. Numbers keep their written text.
fn parameters_pairs(parameters: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let Some(list) = parameters.get("parameter") else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| ApiError::bad_request("parameter must be a list").at("Parameters.parameter"))?;
    let mut pairs = Vec::with_capacity(list.len());
    for (i, parameter) in list.iter().enumerate() {
        let at = format!("Parameters.parameter[{i}]");
        let name = parameter
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("a parameter needs a name").at(&format!("{at}.name")))?;
        let mut values = parameter
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.len() > 5 && key.starts_with("value"))
            .map(|(_, value)| value);
        let text = match (values.next(), values.next()) {
            (Some(Value::String(text)), None) => text.clone(),
            (Some(Value::Number(number)), None) => number.to_string(),
            (Some(Value::Bool(flag)), None) => flag.to_string(),
            _ => {
                return Err(ApiError::bad_request("each parameter of this operation takes one primitive value[x]").at(&at));
            }
        };
        pairs.push((name.to_string(), text));
    }
    Ok(pairs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_become_pairs_with_their_written_text() {
        let body: Value = serde_json::from_str(
            r#"{"resourceType":"Parameters","parameter":[
                {"name":"start","valueDate":"2020-01"},{"name":"_count","valueInteger":10},
                {"name":"_type","valueCode":"Observation,Condition"},{"name":"x","valueDecimal":1.50}]}"#,
        )
        .unwrap();
        let pairs = parameters_pairs(&body).unwrap();
        let expected = [("start", "2020-01"), ("_count", "10"), ("_type", "Observation,Condition"), ("x", "1.50")];
        assert_eq!(pairs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(parameters_pairs(&json!({"resourceType": "Parameters"})).unwrap().is_empty());
    }

    #[test]
    fn refuses_parameters_without_one_primitive_value() {
        for bad in [
            json!({"parameter": [{"name": "start"}]}),
            json!({"parameter": [{"name": "p", "resource": {"resourceType": "Patient"}}]}),
            json!({"parameter": [{"name": "p", "valueDate": "2020", "valueString": "x"}]}),
            json!({"parameter": [{"valueDate": "2020"}]}),
            json!({"parameter": {"name": "p"}}),
        ] {
            assert_eq!(parameters_pairs(&bad).unwrap_err().status(), http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
