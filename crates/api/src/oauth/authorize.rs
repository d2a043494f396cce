//! `GET`/`POST /oauth2/authorize`: the authorization request (also posted
//! by the app, SMART `authorize-post`), the sign-in page (username,
//! password, and a TOTP code when the account needs one), then for a
//! standalone launch that needs a patient a simple patient picker (by
//! name, among the patients the user may see) and, for `launch/encounter`,
//! an encounter picker; finally the redirect back to the app with a code.
//!
//! Each page is a form that posts back to this endpoint, carrying the
//! authorization parameters as hidden fields plus its own fields (see
//! [`OWN`]). The sign-in form is protected by a double-submit cookie; the
//! later forms by the web session's CSRF token.

use super::html::{self, escape, hidden};
use super::{cookie, read_form};
use crate::St;
use crate::bearer::peer;
use auth::oauth::{AuthorizeError, AuthorizeRequest};
use auth::sessions::{self, COOKIE_NAME};
use auth::users::SignInError;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use domain::access::Access;
use domain::service::Handling;
use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

/// Which form was posted.
const STEP: &str = "hearth_step";
/// The double-submit cookie and field of the sign-in form.
const LOGIN_COOKIE: &str = "hearth_login";
const LOGIN_FIELD: &str = "login_csrf";
/// Fields of Hearth's own forms, never taken as authorization parameters.
const OWN: &[&str] = &[STEP, "username", "password", "totp", sessions::CSRF_FIELD, LOGIN_FIELD, "patient", "patient_name", "encounter"];
/// How many patients or encounters a picker lists.
const PICKER_SIZE: &str = "20";

/// What the pages need to know about the request.
struct Ctx {
    headers: HeaderMap,
    from: Option<String>,
    /// Cookies get `Secure` when the server is reached over TLS.
    secure: bool,
}

impl Ctx {
    fn of(state: &St, request: &Request) -> Ctx {
        Ctx {
            headers: request.headers().clone(),
            from: peer(request.extensions()),
            secure: state.base.starts_with("https://"),
        }
    }

    fn cookie_header(&self, name: &str, value: &str, path: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; HttpOnly; SameSite=Lax; Path={path}{secure}")
    }
}

/// `GET /oauth2/authorize?...`.
pub(crate) async fn get(state: St, request: Request) -> Response {
    let ctx = Ctx::of(&state, &request);
    let fields = crate::request::query_pairs(request.uri().query());
    flow(&state, &ctx, fields).await
}

/// `POST /oauth2/authorize` (the app's authorization request, or one of Hearth's forms).
pub(crate) async fn post(state: St, request: Request) -> Response {
    let ctx = Ctx::of(&state, &request);
    match read_form(request).await {
        Ok(fields) => flow(&state, &ctx, fields).await,
        Err(e) => html::error_page(StatusCode::BAD_REQUEST, &e.description),
    }
}

/// Form fields or query parameters, in order.
type Pairs = Vec<(String, String)>;

/// The form's own fields, and the authorization parameters.
fn split(fields: Pairs) -> (Pairs, Pairs) {
    fields.into_iter().partition(|(k, _)| OWN.contains(&k.as_str()))
}

fn own<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

fn refused(error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Show(message) => html::error_page(StatusCode::BAD_REQUEST, &message),
        AuthorizeError::Redirect(location) => redirect(&location, &[]),
        AuthorizeError::Server(message) => {
            tracing::error!(error = %message, "authorization failed");
            html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "the server could not complete the authorization")
        }
    }
}

async fn flow(state: &St, ctx: &Ctx, fields: Vec<(String, String)>) -> Response {
    let (own_fields, params) = split(fields);
    let request = match state.auth.authorize_request(&params).await {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let step = own(&own_fields, STEP);
    let mut cookies = Vec::new();
    let session_token = cookie(&ctx.headers, COOKIE_NAME);
    let session = match session_token {
        Some(token) => state.auth.sessions().check(token).await.ok(),
        None => None,
    };
    let (user, csrf) = if step == Some("signin") {
        let login_cookie = cookie(&ctx.headers, LOGIN_COOKIE);
        let login_field = own(&own_fields, LOGIN_FIELD);
        let (Some(expected), Some(given)) = (login_cookie, login_field) else {
            return sign_in_page(ctx, &request, &params, None, false, Some("Your browser must accept cookies to sign in."));
        };
        if !same(expected, given) {
            return sign_in_page(ctx, &request, &params, None, false, Some("The sign-in form expired. Please try again."));
        }
        let username = own(&own_fields, "username").unwrap_or("");
        let password = own(&own_fields, "password").unwrap_or("");
        let totp = own(&own_fields, "totp");
        match state.auth.users().sign_in(username, password, totp, ctx.from.as_deref()).await {
            Ok(signed) => match state.auth.sessions().create(&signed.user, ctx.from.as_deref()).await {
                Ok(new) => {
                    cookies.push(ctx.cookie_header(COOKIE_NAME, &new.token, "/"));
                    (signed.user, new.csrf)
                }
                Err(e) => return refused(AuthorizeError::Server(e.to_string())),
            },
            Err(SignInError::MfaRequired) => {
                let message = if totp.is_some() { Some("That code was not accepted. Enter the current code.") } else { None };
                return sign_in_page(ctx, &request, &params, Some(username), true, message);
            }
            Err(SignInError::Store(e)) => return refused(AuthorizeError::Server(e.to_string())),
            Err(other) => return sign_in_page(ctx, &request, &params, Some(username), false, Some(&other.to_string())),
        }
    } else {
        match (session, session_token) {
            (Some(active), Some(token)) => {
                if step.is_some() && !own(&own_fields, sessions::CSRF_FIELD).is_some_and(|c| sessions::csrf_matches(token, c)) {
                    return html::error_page(StatusCode::FORBIDDEN, "The form expired or did not come from this page. Start again from the app.");
                }
                (active.user, active.csrf)
            }
            _ => return sign_in_page(ctx, &request, &params, None, false, None),
        }
    };
    let mut context = match state.auth.launch_context(&request, &user) {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let access = state.auth.users().access_for(&user, state.auth.roles()).with_from(ctx.from.clone());
    if request.needs_patient() && context.patient.is_none() {
        match own(&own_fields, "patient") {
            Some(id) if state.service.read(&access, "Patient", id).await.is_ok() => context.patient = Some(id.to_string()),
            chosen => {
                let message = chosen.map(|_| "That patient cannot be selected.");
                let name = own(&own_fields, "patient_name");
                return patient_picker(state, &request, &params, &csrf, &access, name, message, &cookies).await;
            }
        }
    }
    if request.wants_encounter() && context.encounter.is_none()
        && let Some(patient) = context.patient.clone()
    {
        match own(&own_fields, "encounter") {
            Some("none") => {}
            Some(id) if encounter_of(state, &access, id).await.as_deref() == Some(patient.as_str()) => {
                context.encounter = Some(id.to_string());
            }
            chosen => {
                let message = chosen.map(|_| "That encounter cannot be selected.");
                return encounter_picker(state, &request, &params, &csrf, &access, &patient, message, &cookies).await;
            }
        }
    }
    match state.auth.issue_code(&request, &user, context, ctx.from.as_deref()).await {
        Ok(location) => redirect(&location, &cookies),
        Err(e) => refused(e),
    }
}

/// Constant-time equality of two short secrets.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The patient id of an encounter the user may read.
async fn encounter_of(state: &St, access: &Access, id: &str) -> Option<String> {
    let stored = state.service.read(access, "Encounter", id).await.ok()?;
    let body: Value = serde_json::from_str(stored.body.as_deref()?).ok()?;
    body.pointer("/subject/reference")?.as_str()?.strip_prefix("Patient/").map(String::from)
}

/// The authorization parameters as hidden fields, plus the session's CSRF token.
fn carried(params: &[(String, String)], csrf: Option<&str>) -> String {
    let mut out: String = params.iter().map(|(k, v)| hidden(k, v)).collect();
    if let Some(csrf) = csrf {
        out.push_str(&hidden(sessions::CSRF_FIELD, csrf));
    }
    out
}

fn intro(request: &AuthorizeRequest) -> String {
    format!(
        "<p>The application <strong>{}</strong> asks to access Hearth on your behalf.</p>\n<p class=\"scopes\">Access requested: {}</p>\n",
        escape(&request.client.client_id),
        escape(&request.scopes.to_string())
    )
}

fn sign_in_page(
    ctx: &Ctx,
    request: &AuthorizeRequest,
    params: &[(String, String)],
    username: Option<&str>,
    totp: bool,
    message: Option<&str>,
) -> Response {
    let login = auth::tokens::new_secret();
    let cookie = ctx.cookie_header(LOGIN_COOKIE, &login, "/oauth2");
    let mut body = intro(request);
    if let Some(message) = message {
        body.push_str(&format!("<p class=\"error\">{}</p>\n", escape(message)));
    }
    body.push_str("<form method=\"post\" action=\"/oauth2/authorize\">\n");
    body.push_str(&carried(params, None));
    body.push_str(&hidden(STEP, "signin"));
    body.push_str(&hidden(LOGIN_FIELD, &login));
    body.push_str(&format!(
        "<label for=\"username\">Username</label><input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required value=\"{}\">\n\
         <label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\n",
        escape(username.unwrap_or(""))
    ));
    if totp {
        body.push_str(
            "<label for=\"totp\">Code from your authenticator app</label>\
             <input type=\"text\" id=\"totp\" name=\"totp\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{6}\" required>\n",
        );
    }
    body.push_str("<button type=\"submit\">Sign in</button>\n</form>\n");
    html::page(StatusCode::OK, "Sign in to Hearth", &body, &[cookie])
}

#[allow(clippy::too_many_arguments)]
async fn patient_picker(
    state: &St,
    request: &AuthorizeRequest,
    params: &[(String, String)],
    csrf: &str,
    access: &Access,
    name: Option<&str>,
    message: Option<&str>,
    cookies: &[String],
) -> Response {
    let mut body = intro(request);
    if let Some(message) = message {
        body.push_str(&format!("<p class=\"error\">{}</p>\n", escape(message)));
    }
    body.push_str("<form method=\"post\" action=\"/oauth2/authorize\">\n");
    body.push_str(&carried(params, Some(csrf)));
    body.push_str(&hidden(STEP, "patient"));
    body.push_str(&format!(
        "<label for=\"patient_name\">Find the patient by name</label>\
         <input type=\"text\" id=\"patient_name\" name=\"patient_name\" value=\"{}\">\n<button type=\"submit\">Search</button>\n",
        escape(name.unwrap_or(""))
    ));
    if let Some(name) = name {
        let query = vec![("name".to_string(), name.to_string()), ("_count".to_string(), PICKER_SIZE.to_string())];
        match state.service.search(access, Some("Patient"), &query, Handling::Lenient).await {
            Ok(found) if !found.page.items.is_empty() => {
                body.push_str("<ul class=\"choices\">\n");
                for stored in &found.page.items {
                    let Some(resource) = stored.body.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()) else { continue };
                    body.push_str(&format!(
                        "<li><label><input type=\"radio\" name=\"patient\" value=\"{}\"> {}</label></li>\n",
                        escape(&stored.id),
                        escape(&patient_label(&resource))
                    ));
                }
                body.push_str("</ul>\n<button type=\"submit\">Select this patient</button>\n");
            }
            Ok(_) => body.push_str("<p>No patient you may see has that name.</p>\n"),
            Err(e) => body.push_str(&format!("<p class=\"error\">The search failed: {}</p>\n", escape(&e.message()))),
        }
    }
    body.push_str("</form>\n");
    html::page(StatusCode::OK, "Select a patient", &body, cookies)
}

#[allow(clippy::too_many_arguments)]
async fn encounter_picker(
    state: &St,
    request: &AuthorizeRequest,
    params: &[(String, String)],
    csrf: &str,
    access: &Access,
    patient: &str,
    message: Option<&str>,
    cookies: &[String],
) -> Response {
    let mut body = intro(request);
    if let Some(message) = message {
        body.push_str(&format!("<p class=\"error\">{}</p>\n", escape(message)));
    }
    body.push_str("<form method=\"post\" action=\"/oauth2/authorize\">\n");
    body.push_str(&carried(params, Some(csrf)));
    body.push_str(&hidden(STEP, "encounter"));
    body.push_str(&hidden("patient", patient));
    body.push_str("<ul class=\"choices\">\n");
    let query = vec![
        ("patient".to_string(), patient.to_string()),
        ("_sort".to_string(), "-date".to_string()),
        ("_count".to_string(), PICKER_SIZE.to_string()),
    ];
    if let Ok(found) = state.service.search(access, Some("Encounter"), &query, Handling::Lenient).await {
        for stored in &found.page.items {
            let Some(resource) = stored.body.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()) else { continue };
            body.push_str(&format!(
                "<li><label><input type=\"radio\" name=\"encounter\" value=\"{}\"> {}</label></li>\n",
                escape(&stored.id),
                escape(&encounter_label(&resource))
            ));
        }
    }
    body.push_str("<li><label><input type=\"radio\" name=\"encounter\" value=\"none\" checked> No encounter</label></li>\n</ul>\n");
    body.push_str("<button type=\"submit\">Continue</button>\n</form>\n");
    html::page(StatusCode::OK, "Select an encounter", &body, cookies)
}

/// "Family, Given (born 1970-01-01)".
fn patient_label(patient: &Value) -> String {
    let name = patient.pointer("/name/0");
    let family = name.and_then(|n| n.get("family")).and_then(Value::as_str).unwrap_or("");
    let given: Vec<&str> =
        name.and_then(|n| n.get("given")).and_then(Value::as_array).map(|g| g.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mut label = match (family.is_empty(), given.is_empty()) {
        (false, false) => format!("{family}, {}", given.join(" ")),
        (false, true) => family.to_string(),
        (true, false) => given.join(" "),
        (true, true) => "(no name)".to_string(),
    };
    if let Some(born) = patient.get("birthDate").and_then(Value::as_str) {
        label.push_str(&format!(" (born {born})"));
    }
    label
}

/// "2024-03-01 ambulatory: Checkup".
fn encounter_label(encounter: &Value) -> String {
    let start = encounter.pointer("/period/start").and_then(Value::as_str).map(|s| s.get(..10).unwrap_or(s)).unwrap_or("undated");
    let class = encounter.pointer("/class/display").or_else(|| encounter.pointer("/class/code")).and_then(Value::as_str).unwrap_or("");
    let kind = encounter
        .pointer("/type/0/text")
        .or_else(|| encounter.pointer("/type/0/coding/0/display"))
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{start} {class}{}{kind}", if kind.is_empty() { "" } else { ": " })
}

/// `POST /oauth2/sign-out`: ends the browser's Hearth session (the form
/// carries the session's CSRF token) and clears its cookie; audited as a
/// logout. Tokens already issued to apps stay valid until they expire or are
/// revoked (`/oauth2/revoke`).
pub(crate) async fn sign_out(state: St, request: Request) -> Response {
    let ctx = Ctx::of(&state, &request);
    let fields = match read_form(request).await {
        Ok(fields) => fields,
        Err(e) => return html::error_page(StatusCode::BAD_REQUEST, &e.description),
    };
    let Some(token) = cookie(&ctx.headers, COOKIE_NAME) else {
        return html::error_page(StatusCode::BAD_REQUEST, "there is no session to sign out of");
    };
    if !own(&fields, sessions::CSRF_FIELD).is_some_and(|given| sessions::csrf_matches(token, given)) {
        return html::error_page(StatusCode::FORBIDDEN, "the sign-out form is stale or forged; sign out again from Hearth's page");
    }
    if let Err(e) = state.auth.sessions().sign_out(token, ctx.from.as_deref()).await {
        tracing::error!(error = %e, "sign-out failed");
        return html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "the session could not be ended");
    }
    let secure = if ctx.secure { "; Secure" } else { "" };
    let expired = format!("{COOKIE_NAME}=; Max-Age=0; HttpOnly; SameSite=Lax; Path=/{secure}");
    html::page(StatusCode::OK, "Signed out", "<p>You are signed out of Hearth.</p>", &[expired])
}
