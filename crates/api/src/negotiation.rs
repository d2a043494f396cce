//! Content negotiation and the FHIR HTTP headers: Accept/`_format`,
//! request Content-Type, `Prefer`, `If-Match`, and the ETag/Last-Modified/
//! Location headers of resource responses.
//!
//! See <http://hl7.org/fhir/R4/http.html#mime-type> (formats),
//! <http://hl7.org/fhir/R4/http.html#versioning> (ETag, If-Match) and
//! <http://hl7.org/fhir/R4/http.html#ops> (Prefer). Hearth speaks JSON only:
//! XML is refused with 415 (bodies) or 406 (responses).

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use domain::ErrorKind;
use domain::service::Handling;
use domain::store::StoredResource;
use http::header::{CONTENT_TYPE, ETAG, LAST_MODIFIED, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;

/// The Content-Type of every FHIR response.
pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// `Prefer` (RFC 7240) and `If-None-Exist` are not in the `http` crate's list.
pub(crate) const PREFER: HeaderName = HeaderName::from_static("prefer");
pub(crate) const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");

/// A response with a FHIR JSON body.
pub(crate) fn fhir_json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// A stored resource text as a response body, without copying it.
pub(crate) fn shared_text(text: Arc<str>) -> Bytes {
    /// `Arc<str>` is not `AsRef<[u8]>`; this wrapper lets `Bytes` borrow it.
    struct SharedText(Arc<str>);
    impl AsRef<[u8]> for SharedText {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    Bytes::from_owner(SharedText(text))
}

/// Media types a request body may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyMedia {
    /// `application/fhir+json` or `application/json` (or no Content-Type at all).
    Json,
    /// `application/json-patch+json` (RFC 6902), for PATCH.
    JsonPatch,
    /// `application/x-www-form-urlencoded`, for `POST _search`.
    Form,
}

fn is_xml(essence: &str) -> bool {
    essence == "application/fhir+xml"
        || essence == "application/xml"
        || essence == "text/xml"
        || essence == "application/xml+fhir"
        || essence == "xml"
}

fn is_json(essence: &str) -> bool {
    essence == "application/fhir+json" || essence == "application/json" || essence == "application/json+fhir"
}

/// Classifies the request body's Content-Type: XML → 415 (Hearth has no XML
/// parser), anything else unknown → 415. A missing Content-Type is read as
/// JSON, the only format we speak.
pub(crate) fn body_media(headers: &HeaderMap) -> Result<BodyMedia, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(BodyMedia::Json);
    };
    let text = value.to_str().map_err(|_| unsupported_body("an unreadable media type"))?;
    let mime: mime::Mime = text.parse().map_err(|_| unsupported_body("an unparsable media type"))?;
    let essence = mime.essence_str().to_ascii_lowercase();
    if is_json(&essence) {
        Ok(BodyMedia::Json)
    } else if essence == "application/json-patch+json" {
        Ok(BodyMedia::JsonPatch)
    } else if essence == "application/x-www-form-urlencoded" {
        Ok(BodyMedia::Form)
    } else if is_xml(&essence) {
        Err(unsupported_body("XML"))
    } else {
        Err(unsupported_body("this media type"))
    }
}

fn unsupported_body(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::UnsupportedMediaType,
        format!("request body in {what} is not supported; send application/fhir+json"),
    )
}

/// Requires a JSON body (create, update, batch): the JSON Patch and form
/// media types are refused here.
pub(crate) fn require_json_body(headers: &HeaderMap) -> Result<(), ApiError> {
    match body_media(headers)? {
        BodyMedia::Json => Ok(()),
        BodyMedia::JsonPatch => Err(unsupported_body("application/json-patch+json (only PATCH takes it)")),
        BodyMedia::Form => Err(unsupported_body("application/x-www-form-urlencoded (only _search takes it)")),
    }
}

/// Middleware: refuses with 406 a request whose `_format` or `Accept` asks
/// for anything but JSON (<http://hl7.org/fhir/R4/http.html#mime-type>).
pub(crate) async fn negotiate(request: Request, next: Next) -> Response {
    if let Err(e) = check_acceptable(request.headers(), request.uri().query()) {
        return e.into_response();
    }
    next.run(request).await
}

fn check_acceptable(headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    // `_format` overrides Accept, so it is checked first.
    if let Some(query) = query.filter(|q| q.contains("_format")) {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == "_format" {
                return check_format_param(&value);
            }
        }
    }
    for value in headers.get_all(http::header::ACCEPT) {
        let Ok(text) = value.to_str() else {
            return Err(not_acceptable("an unreadable Accept header"));
        };
        if !accept_allows_json(text) {
            return Err(not_acceptable(if text.to_ascii_lowercase().contains("xml") { "XML" } else { "these media types" }));
        }
    }
    Ok(())
}

/// `_format` values: the short forms `json`/`xml` or a media type.
fn check_format_param(value: &str) -> Result<(), ApiError> {
    let lowered = value.trim().to_ascii_lowercase();
    let essence = lowered.split(';').next().unwrap_or("").trim();
    if essence == "json" || is_json(essence) || essence == "text/json" {
        Ok(())
    } else if is_xml(essence) {
        Err(not_acceptable("XML"))
    } else {
        Err(not_acceptable("this _format"))
    }
}

/// True when one of the Accept header's ranges admits a JSON response.
fn accept_allows_json(accept: &str) -> bool {
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|range| {
        let Ok(mime) = range.trim().parse::<mime::Mime>() else {
            return false;
        };
        let refused = mime.get_param("q").is_some_and(|q| q.as_str().trim_end_matches(['0', '.']).is_empty());
        if refused {
            return false;
        }
        let essence = mime.essence_str().to_ascii_lowercase();
        essence == "*/*" || essence == "application/*" || is_json(&essence)
    })
}

fn not_acceptable(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotAcceptable,
        format!("cannot respond in {what}: this server produces application/fhir+json only"),
    )
}

/// `Prefer: return=` (<http://hl7.org/fhir/R4/http.html#ops>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Return {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// The preferences Hearth honours.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Prefer {
    pub(crate) r#return: Return,
    /// Whether the client stated `return=` at all: batch and transaction
    /// entries default to minimal, single writes to the representation.
    pub(crate) return_stated: bool,
    pub(crate) handling: Handling,
    /// `respond-async`: run a long operation in the background
    /// (<http://hl7.org/fhir/R4/async.html>).
    pub(crate) respond_async: bool,
}

impl Return {
    /// The same preference in the Service's terms.
    pub(crate) fn to_domain(self) -> domain::service::Return {
        match self {
            Return::Minimal => domain::service::Return::Minimal,
            Return::Representation => domain::service::Return::Representation,
            Return::OperationOutcome => domain::service::Return::OperationOutcome,
        }
    }
}

/// Parses every `Prefer` header. Unknown preferences are ignored, as RFC 7240 asks.
pub(crate) fn prefer(headers: &HeaderMap) -> Prefer {
    let mut prefer = Prefer::default();
    for value in headers.get_all(PREFER) {
        let Ok(text) = value.to_str() else { continue };
        for preference in text.split(',') {
            let token = preference.split(';').next().unwrap_or("");
            let (name, value) = token.split_once('=').unwrap_or((token, ""));
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "return" => {
                    let stated = match value.to_ascii_lowercase().as_str() {
                        "minimal" => Some(Return::Minimal),
                        "representation" => Some(Return::Representation),
                        "operationoutcome" => Some(Return::OperationOutcome),
                        _ => None,
                    };
                    if let Some(r#return) = stated {
                        prefer.r#return = r#return;
                        prefer.return_stated = true;
                    }
                }
                "handling" => match value.to_ascii_lowercase().as_str() {
                    "strict" => prefer.handling = Handling::Strict,
                    "lenient" => prefer.handling = Handling::Lenient,
                    _ => {}
                },
                "respond-async" => prefer.respond_async = true,
                _ => {}
            }
        }
    }
    prefer
}

/// `If-Match: W/"n"` (also `"n"` and a bare `n`) → the version the client last saw.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("If-Match must be a version ETag such as W/\"3\"");
    let text = value.to_str().map_err(|_| bad())?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    text.parse::<u64>().map(Some).map_err(|_| bad())
}

/// `If-None-Exist` criteria of a conditional create, as text.
pub(crate) fn if_none_exist(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(IF_NONE_EXIST) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|t| Some(t.trim().to_string()))
            .map_err(|_| ApiError::bad_request("If-None-Exist must be a visible-ASCII query string")),
    }
}

/// The weak ETag of a version (<http://hl7.org/fhir/R4/http.html#versioning>).
pub(crate) fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Which extra headers a resource response carries.
pub(crate) struct ResourceHeaders<'a> {
    pub(crate) resource: &'a StoredResource,
    /// `Some(base)` adds `Location: [base]/Type/id/_history/v`.
    pub(crate) location_base: Option<&'a str>,
}

/// Adds ETag, Last-Modified and, when asked, Location to a response.
pub(crate) fn add_resource_headers(response: &mut Response, h: &ResourceHeaders<'_>) {
    let r = h.resource;
    let headers = response.headers_mut();
    insert(headers, ETAG, &etag(r.version_id));
    insert(headers, LAST_MODIFIED, &r.last_updated.to_http_date());
    if let Some(base) = h.location_base {
        let location = format!("{base}/{}/{}/_history/{}", r.resource_type, r.id, r.version_id);
        insert(headers, LOCATION, &location);
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::try_from(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        // Ids and versions are validated, so only a misconfigured base URL gets here.
        Err(_) => tracing::warn!(header = %name, "header value not representable; omitted"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn accept_ranges() {
        assert!(accept_allows_json("application/fhir+json"));
        assert!(accept_allows_json("application/json;q=0.9, text/html"));
        assert!(accept_allows_json("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(accept_allows_json("application/fhir+json; fhirVersion=4.0"));
        assert!(!accept_allows_json("application/fhir+xml"));
        assert!(!accept_allows_json("application/json;q=0, application/xml"));
        assert!(!accept_allows_json("text/plain"));
    }

    #[test]
    fn format_parameter() {
        assert!(check_format_param("json").is_ok());
        assert!(check_format_param("application/fhir+json").is_ok());
        assert_eq!(check_format_param("xml").unwrap_err().status(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(check_format_param("turtle").unwrap_err().status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn body_media_types() {
        assert_eq!(body_media(&headers(&[("content-type", "application/fhir+json;charset=utf-8")])).unwrap(), BodyMedia::Json);
        assert_eq!(body_media(&headers(&[])).unwrap(), BodyMedia::Json);
        assert_eq!(body_media(&headers(&[("content-type", "application/json-patch+json")])).unwrap(), BodyMedia::JsonPatch);
        let xml = body_media(&headers(&[("content-type", "application/fhir+xml")])).unwrap_err();
        assert_eq!(xml.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let text = body_media(&headers(&[("content-type", "text/plain")])).unwrap_err();
        assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn prefer_header() {
        let p = prefer(&headers(&[("prefer", "return=minimal, handling=lenient")]));
        assert_eq!(p.r#return, Return::Minimal);
        assert_eq!(p.handling, Handling::Lenient);
        assert!(p.return_stated);
        let p = prefer(&headers(&[("prefer", "return=OperationOutcome")]));
        assert_eq!(p.r#return, Return::OperationOutcome);
        assert!(p.return_stated);
        assert!(!prefer(&headers(&[("prefer", "handling=strict")])).return_stated);
        assert!(!prefer(&headers(&[("prefer", "return=everything")])).return_stated);
        let p = prefer(&headers(&[("prefer", "respond-async")]));
        assert_eq!(p.r#return, Return::Representation);
        assert_eq!(p.handling, Handling::Strict);
        assert!(p.respond_async);
        assert!(!prefer(&headers(&[("prefer", "return=minimal")])).respond_async);
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(&headers(&[("if-match", "W/\"3\"")])).unwrap(), Some(3));
        assert_eq!(if_match(&headers(&[("if-match", "\"4\"")])).unwrap(), Some(4));
        assert_eq!(if_match(&headers(&[])).unwrap(), None);
        assert!(if_match(&headers(&[("if-match", "W/\"x\"")])).is_err());
        assert!(if_match(&headers(&[("if-match", "*")])).is_err());
    }
}
