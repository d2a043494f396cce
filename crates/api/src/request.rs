//! Reading a request: path segments (resource type, id), the query string,
//! and JSON bodies within the size limit.
//!
//! Every failure here is the client's: 400 for syntax, 404 for an unknown
//! resource type, 413 for a body over the limit
//! (<http://hl7.org/fhir/R4/http.html#summary>).

use crate::error::ApiError;
use axum::body::Body;
use bytes::Bytes;
use domain::ErrorKind;
use fhir::{Issue, IssueType};
use serde_json::Value;

/// Whether `[base]/[type]` exists for a resource type. Parameters is only
/// the input and output of operations and "has no RESTful endpoint"
/// (<http://hl7.org/fhir/R4/parameters.html>), so it has none here either;
/// the CapabilityStatement lists exactly the types this admits.
pub(crate) fn has_rest_endpoint(resource_type: &str) -> bool {
    resource_type != "Parameters"
}

/// `[base]/[type]`: an unknown type is 404 (the endpoint does not exist).
pub(crate) fn check_type(resource_type: &str) -> Result<(), ApiError> {
    if !has_rest_endpoint(resource_type) {
        Err(ApiError::new(
            ErrorKind::NotFound,
            format!("{resource_type} has no REST endpoint: it is used only as the input and output of operations"),
        ))
    } else if fhir::definitions::is_resource_type(resource_type) {
        Ok(())
    } else {
        // The type comes from the URL path, never from patient data; it is
        // clipped so a hostile path cannot flood the response.
        let shown: String = resource_type.chars().take(64).collect();
        Err(ApiError::new(ErrorKind::NotFound, format!("unknown resource type '{shown}'")))
    }
}

/// `[A-Za-z0-9\-\.]{1,64}` (<http://hl7.org/fhir/R4/datatypes.html#id>).
pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// 400 unless `id` is a valid logical id.
pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid id: expected 1 to 64 characters of A-Z, a-z, 0-9, '-' and '.'"))
    }
}

/// The query string as decoded pairs, in order, repeats kept.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// Parameters about the response format, not the query: they never reach the Service.
pub(crate) fn is_format_param(name: &str) -> bool {
    name == "_format" || name == "_pretty"
}

/// Conditional-operation criteria: the query string without format
/// parameters, re-encoded. 400 when nothing is left, since an unconditional
/// "conditional" operation would hit every resource of the type.
pub(crate) fn criteria(query: Option<&str>) -> Result<String, ApiError> {
    let pairs: Vec<(String, String)> =
        query_pairs(query).into_iter().filter(|(k, _)| !is_format_param(k)).collect();
    if pairs.is_empty() {
        return Err(ApiError::bad_request(
            "a conditional operation needs search criteria in the query string",
        ));
    }
    Ok(encode_pairs(&pairs))
}

/// `a=1&b=2`, percent-encoded.
pub(crate) fn encode_pairs(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large(limit)
        } else {
            // The client went away or sent a broken chunked body.
            ApiError::bad_request("the request body could not be read")
        }
    })
}

/// 413 with the limit stated.
pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(ErrorKind::PayloadTooLarge, format!("request body larger than {limit} bytes"))
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Parses JSON; syntax errors (including serde_json's nesting limit) are 400
/// naming the line and column. serde_json's messages describe the syntax
/// only, never the content, so they are safe to return.
///
/// A key repeated within one object is 400 too, located by a FHIRPath-style
/// expression (`Patient.gender`): serde_json would keep only the last value,
/// and FHIR JSON allows each property once (<http://hl7.org/fhir/R4/json.html>).
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let value = parse_syntax(bytes)?;
    match crate::json_keys::first_duplicate(bytes) {
        None => Ok(value),
        Some(duplicate) => {
            let root = value.get("resourceType").and_then(Value::as_str);
            let issue = Issue::error(
                IssueType::Structure,
                format!(
                    "malformed JSON: duplicate object key at line {} column {}; each property may appear only once",
                    duplicate.line, duplicate.column
                ),
            )
            .at(duplicate.expression(root));
            Err(ApiError(domain::Error::with_issues(ErrorKind::BadRequest, vec![issue])))
        }
    }
}

fn parse_syntax(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C" unless the position is unknown.
        let diagnostics = if message.contains(" at line ") {
            format!("malformed JSON: {message}")
        } else {
            format!("malformed JSON: {message} at line {} column {}", e.line(), e.column())
        };
        ApiError::bad_request(diagnostics)
    })
}

/// Parses a resource body and checks that its `resourceType` is the type
/// named in the URL (<http://hl7.org/fhir/R4/http.html#create>).
pub(crate) fn parse_resource(bytes: &[u8], resource_type: &str) -> Result<Value, ApiError> {
    let value = parse_json(bytes)?;
    match value.get("resourceType") {
        _ if !value.is_object() => Err(ApiError::bad_request("the body must be a JSON object (a FHIR resource)")),
        Some(Value::String(t)) if t == resource_type => Ok(value),
        Some(Value::String(_)) => Err(ApiError::bad_request(format!(
            "the body's resourceType does not match the URL's resource type {resource_type}"
        ))
        .at("resourceType")),
        Some(_) => Err(ApiError::bad_request("resourceType must be a string").at("resourceType")),
        None => Err(ApiError::bad_request("the body has no resourceType").at("resourceType")),
    }
}

impl ApiError {
    /// Sets the FHIRPath location of the first issue.
    pub(crate) fn at(self, expression: &str) -> ApiError {
        ApiError(self.0.at(expression))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("a/b"));
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let e = parse_json(b"{\n  \"a\": ,\n}").unwrap_err();
        let text = e.0.message();
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("column"), "{text}");
        let deep = "[".repeat(10_000);
        assert_eq!(parse_json(deep.as_bytes()).unwrap_err().status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn duplicate_keys_are_400_with_their_location() {
        let e = parse_json(br#"{"resourceType":"Patient","gender":"male","gender":"female"}"#).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(e.0.issues[0].expression.as_deref(), Some("Patient.gender"));
        assert_eq!(e.0.issues[0].code, IssueType::Structure);
        assert!(e.0.message().contains("duplicate"), "{}", e.0.message());
        assert!(e.0.message().contains("line 1 column"), "{}", e.0.message());
        // Syntax errors still come first and keep their own message.
        let e = parse_json(br#"{"a":1,"a":}"#).unwrap_err();
        assert!(!e.0.message().contains("duplicate"), "{}", e.0.message());
        // Exact numbers survive the extra pass.
        assert_eq!(parse_json(br#"{"v":1.50}"#).unwrap().to_string(), r#"{"v":1.50}"#);
    }

    #[test]
    fn resource_type_must_match() {
        assert!(parse_resource(br#"{"resourceType":"Patient"}"#, "Patient").is_ok());
        assert!(parse_resource(br#"{"resourceType":"Observation"}"#, "Patient").is_err());
        assert!(parse_resource(br#"[1]"#, "Patient").is_err());
        assert!(parse_resource(br#"{}"#, "Patient").is_err());
    }

    #[test]
    fn criteria_drop_format_parameters() {
        assert_eq!(criteria(Some("identifier=a%7Cb&_format=json")).unwrap(), "identifier=a%7Cb");
        assert!(criteria(Some("_format=json")).is_err());
        assert!(criteria(None).is_err());
    }
}
