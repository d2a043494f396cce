//! `POST /oauth2/token`, `/oauth2/revoke` (RFC 7009), `/oauth2/introspect`
//! (RFC 7662), `GET /oauth2/jwks`, and `POST /oauth2/launch` (the EHR side
//! of an EHR launch: a user's token makes an opaque `launch` value naming
//! a patient and encounter).

use super::{basic, json, oauth_error, read_form};
use crate::St;
use crate::bearer::{bearer_token, peer};
use auth::oauth::OAuthError;
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json as j};

/// `POST /oauth2/token`.
pub(crate) async fn token(state: St, request: Request) -> Response {
    let from = peer(request.extensions());
    let credentials = basic(request.headers());
    let basic_tried = credentials.is_some();
    let form = match read_form(request).await {
        Ok(f) => f,
        Err(e) => return oauth_error(&e, basic_tried),
    };
    match state.auth.token(&form, credentials, from.as_deref()).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(e) => oauth_error(&e, basic_tried),
    }
}

/// `POST /oauth2/revoke`: 200 whether or not the token was known.
pub(crate) async fn revoke(state: St, request: Request) -> Response {
    let from = peer(request.extensions());
    let credentials = basic(request.headers());
    let basic_tried = credentials.is_some();
    let form = match read_form(request).await {
        Ok(f) => f,
        Err(e) => return oauth_error(&e, basic_tried),
    };
    match state.auth.revoke(&form, credentials, from.as_deref()).await {
        Ok(()) => json(StatusCode::OK, &j!({})),
        Err(e) => oauth_error(&e, basic_tried),
    }
}

/// `POST /oauth2/introspect`.
pub(crate) async fn introspect(state: St, request: Request) -> Response {
    let from = peer(request.extensions());
    let credentials = basic(request.headers());
    let basic_tried = credentials.is_some();
    let bearer = bearer_token(request.headers()).map(String::from);
    let form = match read_form(request).await {
        Ok(f) => f,
        Err(e) => return oauth_error(&e, basic_tried),
    };
    match state.auth.introspect(&form, credentials, bearer.as_deref(), from.as_deref()).await {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(e) => oauth_error(&e, basic_tried),
    }
}

/// `GET /oauth2/jwks`: the public key of id_tokens.
pub(crate) async fn jwks(state: St) -> Response {
    match state.auth.jwks().await {
        Ok(keys) => json(StatusCode::OK, &keys),
        Err(e) => oauth_error(&OAuthError::new("server_error", e.to_string()), false),
    }
}

/// `POST /oauth2/launch` with a user's bearer token and a body naming
/// `patient` (and optionally `encounter`), as JSON or a form: answers
/// `{"launch": value, "expires_in": seconds}`. The user must be able to
/// read the patient (and the encounter, which must be the patient's).
pub(crate) async fn launch(state: St, request: Request) -> Response {
    let from = peer(request.extensions());
    let Some(token) = bearer_token(request.headers()).map(String::from) else {
        return oauth_error(&OAuthError::new("invalid_token", "a user's bearer token is required"), false);
    };
    let access = match state.auth.authenticate_bearer(&token, from.as_deref()).await {
        Ok(a) => a,
        Err(e) => return oauth_error(&OAuthError::new("invalid_token", e.to_string()), false),
    };
    let is_json = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let (patient, encounter) = if is_json {
        let Ok(bytes) = axum::body::to_bytes(request.into_body(), super::FORM_LIMIT).await else {
            return oauth_error(&OAuthError::new("invalid_request", "the body is too large"), false);
        };
        let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
            return oauth_error(&OAuthError::new("invalid_request", "the body is not JSON"), false);
        };
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(String::from);
        (text("patient"), text("encounter"))
    } else {
        match read_form(request).await {
            Ok(form) => (
                auth::oauth::param(&form, "patient").map(String::from),
                auth::oauth::param(&form, "encounter").map(String::from),
            ),
            Err(e) => return oauth_error(&e, false),
        }
    };
    let Some(patient_id) = patient.as_deref() else {
        return oauth_error(&OAuthError::new("invalid_request", "patient is missing"), false);
    };
    let denied = |what: &str| oauth_error(&OAuthError::new("access_denied", format!("{what} cannot be read by this user")), false);
    if state.service.read(&access, "Patient", patient_id).await.is_err() {
        return denied("the patient");
    }
    if let Some(encounter_id) = encounter.as_deref() {
        match state.service.read(&access, "Encounter", encounter_id).await {
            Ok(stored) => {
                let subject = stored
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<Value>(b).ok())
                    .and_then(|v| v.pointer("/subject/reference").and_then(Value::as_str).map(String::from));
                if subject.as_deref() != Some(format!("Patient/{patient_id}").as_str()) {
                    return oauth_error(&OAuthError::new("invalid_request", "the encounter is not the patient's"), false);
                }
            }
            Err(_) => return denied("the encounter"),
        }
    }
    match state.auth.create_launch(&access, patient, encounter).await {
        Ok((launch, expires_in)) => json(StatusCode::OK, &j!({"launch": launch, "expires_in": expires_in})),
        Err(e) => oauth_error(&e, false),
    }
}
