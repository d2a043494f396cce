//! OAuth 2 / SMART App Launch 2.0 / SMART Backend Services, without HTTP:
//! the authorization request, codes bound to PKCE S256, the token endpoint
//! (authorization code, rotating refresh tokens, client credentials with
//! signed assertions), revocation (RFC 7009), introspection (RFC 7662),
//! EHR launch contexts and the discovery documents. The `api` crate turns
//! requests into these calls and their answers into responses.
//!
//! Every token issued or refused is audited (event `token`) in the same
//! commit as the token records.

use crate::clients::{self, Client, ClientKind};
use crate::scopes::{Context, Flow, Scope, Scopes};
use crate::tokens::{
    CODE_KIND, CodeRecord, FAMILY_KIND, FamilyRecord, JTI_KIND, JtiRecord, LAUNCH_KIND, LaunchRecord, TOKEN_KIND, TokenRecord,
    TokenType, UsedCode, new_secret, pkce_challenge, sha256_hex,
};
use crate::users::User;
use crate::{Auth, MICROS};
use domain::access::Access;
use domain::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
use domain::store::{Commit, StoreError, SysRecord, SysWrite};
use serde_json::{Value, json};
use std::sync::Arc;

/// `client_assertion_type` of a signed JWT assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth 2 error answer (RFC 6749 section 5.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `invalid_scope`, `server_error`...
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError { error, description: description.into() }
    }

    fn request(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_request", description)
    }

    fn grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_grant", description)
    }

    fn client(description: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_client", description)
    }

    fn server(error: StoreError) -> OAuthError {
        tracing::error!(error = %error, "oauth store failure");
        OAuthError::new("server_error", "the server could not complete the request")
    }

    /// 401 for a client or token that failed to authenticate, 403 for a refusal, 500 for the server's failures, else 400.
    pub fn status(&self) -> u16 {
        match self.error {
            "invalid_client" | "invalid_token" => 401,
            "access_denied" | "insufficient_scope" => 403,
            "server_error" => 500,
            "temporarily_unavailable" => 503,
            _ => 400,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }

    fn outcome(&self) -> AuditOutcome {
        match self.error {
            "invalid_client" | "invalid_grant" | "unauthorized_client" | "access_denied" => AuditOutcome::Denied,
            "server_error" => AuditOutcome::Failed,
            _ => AuditOutcome::Refused,
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> OAuthError {
        OAuthError::server(error)
    }
}

/// The credentials a client presented at the token, revocation or introspection endpoint.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// `Authorization: Basic` (client_secret_basic), already decoded.
    pub basic: Option<(String, String)>,
    /// The `client_id` form parameter.
    pub client_id: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
}

impl ClientAuth {
    /// Reads the form's client parameters; `basic` comes from the header.
    pub fn from_form(form: &[(String, String)], basic: Option<(String, String)>) -> ClientAuth {
        ClientAuth {
            basic,
            client_id: param(form, "client_id").map(String::from),
            assertion_type: param(form, "client_assertion_type").map(String::from),
            assertion: param(form, "client_assertion").map(String::from),
        }
    }

    /// The client id claimed, before any check (for the audit of a refusal).
    fn claimed(&self) -> Option<String> {
        if let Some((id, _)) = &self.basic {
            return Some(id.clone());
        }
        if let Some(assertion) = &self.assertion
            && let Some(iss) = unverified_issuer(assertion)
        {
            return Some(iss);
        }
        self.client_id.clone()
    }
}

/// Decodes an `Authorization: Basic` value into client id and secret
/// (RFC 6749 section 2.3.1: both form-urlencoded before base64).
pub fn decode_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| {
        let escaped = s.replace('&', "%26").replace('=', "%3D");
        form_urlencoded::parse(format!("x={escaped}").as_bytes()).next().map_or(Some(String::new()), |(_, v)| Some(v.into_owned()))
    };
    Some((decode(id)?, decode(secret)?))
}

/// The `iss` of a JWT, read without checking anything (to find the client's keys).
fn unverified_issuer(assertion: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(String::from)
}

/// The first value of a form parameter; repeated parameters are refused by [`check_form`].
pub fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// RFC 6749 section 3.1: parameters must not be repeated.
fn check_form(form: &[(String, String)]) -> Result<(), OAuthError> {
    for (i, (name, _)) in form.iter().enumerate() {
        if form[..i].iter().any(|(k, _)| k == name) {
            return Err(OAuthError::request(format!("parameter {name} is repeated")));
        }
    }
    Ok(())
}

/// A client that proved who it is (or a public client that named itself).
#[derive(Debug, Clone)]
struct Authenticated {
    client: Client,
    /// A used assertion id to record (replay protection) in the commit.
    jti: Option<SysWrite>,
}

/// A valid authorization request, ready for the user to sign in.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub client: Client,
    pub redirect_uri: String,
    pub state: Option<String>,
    /// Granted scopes (requested, narrowed by the client's registration).
    pub scopes: Scopes,
    pub challenge: String,
    pub nonce: Option<String>,
    /// The EHR launch context named by `launch`, and its key.
    pub launch: Option<LaunchRecord>,
}

impl AuthorizeRequest {
    /// True when the app needs a patient in context (`launch/patient`, or
    /// `patient/` scopes without `user/` ones).
    pub fn needs_patient(&self) -> bool {
        self.scopes.contains(&Scope::LaunchPatient)
            || (self.scopes.has_context(Context::Patient) && !self.scopes.has_context(Context::User))
    }

    pub fn wants_encounter(&self) -> bool {
        self.scopes.contains(&Scope::LaunchEncounter)
    }

    /// The URL that sends the browser back to the app with an error.
    pub fn error_redirect(&self, error: &str, description: &str) -> String {
        redirect_with(&self.redirect_uri, &[("error", error), ("error_description", description)], self.state.as_deref())
    }
}

/// Why an authorization request fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: tell the user, never redirect.
    Show(String),
    /// Send the browser back to the app with `error` (RFC 6749 section 4.1.2.1).
    Redirect(String),
    Server(String),
}

/// `uri` with the parameters (and `state`) appended to its query.
pub fn redirect_with(uri: &str, params: &[(&str, &str)], state: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        query.append_pair(k, v);
    }
    if let Some(state) = state {
        query.append_pair("state", state);
    }
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{}", query.finish())
}

/// The context chosen for a code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchContext {
    pub patient: Option<String>,
    pub encounter: Option<String>,
}

fn now_seconds(now: i64) -> i64 {
    now.div_euclid(MICROS)
}

fn is_unreserved(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn record_of<T: serde::de::DeserializeOwned>(record: &SysRecord, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(&record.json).map_err(|e| StoreError::Internal(format!("{what} record is unreadable: {e}")))
}

fn json_of<T: serde::Serialize>(value: &T) -> Arc<str> {
    Arc::from(serde_json::to_string(value).unwrap_or_default())
}

impl Auth {
    // ----- authorization endpoint -------------------------------------------------

    /// Checks an authorization request (`GET` query or `POST` form).
    pub async fn authorize_request(&self, params: &[(String, String)]) -> Result<AuthorizeRequest, AuthorizeError> {
        let show = |m: String| Err(AuthorizeError::Show(m));
        if let Err(e) = check_form(params) {
            return show(e.description);
        }
        let Some(client_id) = param(params, "client_id") else { return show("the request has no client_id".into()) };
        let client = match clients::get(self.store.as_ref(), client_id).await {
            Ok(Some(c)) if !c.disabled => c,
            Ok(_) => return show(format!("no application is registered as {client_id:?}")),
            Err(e) => return Err(AuthorizeError::Server(e.to_string())),
        };
        if client.kind == ClientKind::Backend {
            return show(format!("{client_id:?} is a backend client: it uses client credentials, not sign-in"));
        }
        let Some(redirect_uri) = param(params, "redirect_uri") else { return show("the request has no redirect_uri".into()) };
        if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
            return show(format!("redirect_uri is not one registered for {client_id:?}"));
        }
        let state = param(params, "state").map(String::from);
        let redirect = |error: &str, description: String| {
            Err(AuthorizeError::Redirect(redirect_with(
                redirect_uri,
                &[("error", error), ("error_description", &description)],
                state.as_deref(),
            )))
        };
        match param(params, "response_type") {
            Some("code") => {}
            Some(other) => return redirect("unsupported_response_type", format!("response_type {other:?}: only code is supported")),
            None => return redirect("invalid_request", "response_type is missing".into()),
        }
        let base = self.config.base_url.trim_end_matches('/');
        match param(params, "aud") {
            Some(aud) if aud.trim_end_matches('/') == base => {}
            Some(_) => return redirect("invalid_request", format!("aud must be this server's FHIR base URL {base}")),
            None => return redirect("invalid_request", format!("aud is missing (this server's FHIR base URL is {base})")),
        }
        let Some(challenge) = param(params, "code_challenge") else {
            return redirect("invalid_request", "PKCE is required: code_challenge is missing".into());
        };
        match param(params, "code_challenge_method") {
            Some("S256") => {}
            Some(other) => return redirect("invalid_request", format!("code_challenge_method {other:?} is refused: use S256")),
            None => return redirect("invalid_request", "code_challenge_method is missing: use S256".into()),
        }
        if challenge.len() != 43 || !is_unreserved(challenge) {
            return redirect("invalid_request", "code_challenge is not a base64url SHA-256 digest".into());
        }
        let requested = match Scopes::parse(param(params, "scope").unwrap_or("")) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return redirect("invalid_scope", "scope is missing".into()),
            Err(e) => return redirect("invalid_scope", e.to_string()),
        };
        let scopes = match Scopes::grant(&requested, &client.allowed_scopes(), Flow::User) {
            Ok(s) => s,
            Err(e) => return redirect("invalid_scope", e.reason),
        };
        let launch = match param(params, "launch") {
            None => None,
            Some(_) if !scopes.contains(&Scope::Launch) => {
                return redirect("invalid_scope", "an EHR launch needs the launch scope".into());
            }
            Some(value) => match self.store.sys_get(LAUNCH_KIND, &sha256_hex(value)).await {
                Ok(Some(record)) => match record_of::<LaunchRecord>(&record, "launch") {
                    Ok(l) if l.expires > self.clock.now().0 => Some(l),
                    Ok(_) => return redirect("invalid_request", "the launch context has expired".into()),
                    Err(e) => return Err(AuthorizeError::Server(e.to_string())),
                },
                Ok(None) => return redirect("invalid_request", "unknown launch context".into()),
                Err(e) => return Err(AuthorizeError::Server(e.to_string())),
            },
        };
        Ok(AuthorizeRequest {
            client,
            redirect_uri: redirect_uri.to_string(),
            state,
            scopes,
            challenge: challenge.to_string(),
            nonce: param(params, "nonce").map(String::from),
            launch,
        })
    }

    /// The context the signed-in user's authorization gets without asking:
    /// the EHR launch's (which must have been made for this user), the
    /// patient user's own record. `Ok(None)` for the patient: the picker must ask.
    pub fn launch_context(&self, request: &AuthorizeRequest, user: &User) -> Result<LaunchContext, AuthorizeError> {
        let mut context = LaunchContext::default();
        if let Some(launch) = &request.launch {
            if launch.user != user.username {
                return Err(AuthorizeError::Redirect(
                    request.error_redirect("access_denied", "the launch context was made for another user"),
                ));
            }
            context.patient = launch.patient.clone();
            context.encounter = launch.encounter.clone();
        }
        if user.role == "patient" {
            match (&context.patient, &user.patient) {
                (Some(p), Some(own)) if p != own => {
                    return Err(AuthorizeError::Redirect(request.error_redirect("access_denied", "a patient may only share their own record")));
                }
                (_, own) => context.patient = own.clone(),
            }
        }
        Ok(context)
    }

    /// Issues a code for the signed-in user and the chosen context; returns
    /// the URL that sends the browser back to the app.
    pub async fn issue_code(
        &self,
        request: &AuthorizeRequest,
        user: &User,
        context: LaunchContext,
        from: Option<&str>,
    ) -> Result<String, AuthorizeError> {
        if request.needs_patient() && context.patient.is_none() {
            return Err(AuthorizeError::Redirect(request.error_redirect("invalid_request", "no patient was selected")));
        }
        let now = self.clock.now();
        let code = new_secret();
        let record = CodeRecord {
            client_id: request.client.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            challenge: request.challenge.clone(),
            scope: request.scopes.to_string(),
            user: user.username.clone(),
            patient: context.patient.clone(),
            encounter: context.encounter.clone(),
            fhir_user: user.fhir_user.clone(),
            nonce: request.nonce.clone(),
            expires: now.0 + self.config.code_seconds * MICROS,
            used: None,
        };
        let mut audit = AuditRecord::new(now, "token", AuditAction::Execute, user_actor(user, &request.client.client_id));
        audit.detail = Some("authorization code issued".into());
        audit.from = from.map(String::from);
        audit.patients = context.patient.iter().cloned().collect();
        let commit = Commit {
            sys: vec![SysWrite { kind: CODE_KIND.into(), key: sha256_hex(&code), expected: None, json: Some(json_of(&record)) }],
            audit: vec![audit],
            ..Commit::default()
        };
        self.store.commit(commit).await.map_err(|e| AuthorizeError::Server(e.to_string()))?;
        Ok(redirect_with(&request.redirect_uri, &[("code", &code)], request.state.as_deref()))
    }

    /// Makes an EHR launch context for the calling user (`POST /oauth2/launch`).
    pub async fn create_launch(&self, access: &Access, patient: Option<String>, encounter: Option<String>) -> Result<(String, i64), OAuthError> {
        if access.actor.kind != "user" {
            return Err(OAuthError::new("access_denied", "only a user's token may create a launch context"));
        }
        let now = self.clock.now();
        let launch = new_secret();
        let record = LaunchRecord {
            user: access.actor.id.clone(),
            patient,
            encounter,
            expires: now.0 + self.config.launch_seconds * MICROS,
        };
        let write = SysWrite { kind: LAUNCH_KIND.into(), key: sha256_hex(&launch), expected: None, json: Some(json_of(&record)) };
        self.store.commit(Commit { sys: vec![write], ..Commit::default() }).await?;
        Ok((launch, self.config.launch_seconds))
    }

    // ----- token endpoint --------------------------------------------------------

    /// `POST /oauth2/token`: answers the token response, or an error; both audited.
    pub async fn token(&self, form: &[(String, String)], basic: Option<(String, String)>, from: Option<&str>) -> Result<Value, OAuthError> {
        let auth = ClientAuth::from_form(form, basic);
        let result = match check_form(form) {
            Err(e) => Err(Refusal::from(e)),
            Ok(()) => match param(form, "grant_type") {
                Some("authorization_code") => self.code_grant(form, &auth, from).await,
                Some("refresh_token") => self.refresh_grant(form, &auth, from).await,
                Some("client_credentials") => self.client_credentials_grant(form, &auth, from).await,
                Some(other) => Err(OAuthError::new("unsupported_grant_type", format!("grant_type {other:?} is not supported")).into()),
                None => Err(OAuthError::request("grant_type is missing").into()),
            },
        };
        match result {
            Ok(answer) => Ok(answer),
            Err(Refusal { error, who }) => {
                let who = who.unwrap_or_else(|| client_actor(auth.claimed().as_deref().unwrap_or("unknown")));
                self.audit_refusal(who, &error, from).await;
                Err(error)
            }
        }
    }

    async fn audit_refusal(&self, who: AuditActor, error: &OAuthError, from: Option<&str>) {
        let mut record = AuditRecord::new(self.clock.now(), "token", AuditAction::Execute, who);
        record.outcome = error.outcome();
        record.detail = Some(format!("{}: {}", error.error, error.description));
        record.from = from.map(String::from);
        if let Err(e) = self.store.commit(Commit { audit: vec![record], ..Commit::default() }).await {
            tracing::error!(error = %e, "could not audit a refused token request");
        }
    }

    /// Authenticates the client: Basic secret, signed assertion, or (public clients) just `client_id`.
    async fn authenticate_client(&self, auth: &ClientAuth) -> Result<Authenticated, OAuthError> {
        let now = self.clock.now();
        if let Some((id, secret)) = &auth.basic {
            if auth.assertion.is_some() {
                return Err(OAuthError::request("use one client authentication method, not two"));
            }
            if auth.client_id.as_deref().is_some_and(|c| c != id) {
                return Err(OAuthError::client("client_id does not match the Basic credentials"));
            }
            let client = self.active_client(id).await?;
            if client.secret_hash.is_none() {
                return Err(OAuthError::client(format!("client {id:?} does not authenticate with a secret")));
            }
            let verified = {
                let client = client.clone();
                let secret = secret.clone();
                tokio::task::spawn_blocking(move || client.verify_secret(&secret)).await.unwrap_or(false)
            };
            if !verified {
                return Err(OAuthError::client("client authentication failed"));
            }
            return Ok(Authenticated { client, jti: None });
        }
        if let Some(assertion) = &auth.assertion {
            if auth.assertion_type.as_deref() != Some(JWT_BEARER) {
                return Err(OAuthError::request(format!("client_assertion_type must be {JWT_BEARER}")));
            }
            let id = unverified_issuer(assertion).ok_or_else(|| OAuthError::client("the client assertion has no iss"))?;
            if auth.client_id.as_deref().is_some_and(|c| c != id) {
                return Err(OAuthError::client("client_id does not match the assertion's issuer"));
            }
            let client = self.active_client(&id).await?;
            if client.jwks.is_none() {
                return Err(OAuthError::client(format!("client {id:?} has no registered keys")));
            }
            let token_url = self.endpoints().token;
            let verified = crate::jwt::verify_assertion(assertion, &client, &token_url, now_seconds(now.0))
                .map_err(OAuthError::client)?;
            let key = sha256_hex(format!("{}\n{}", client.client_id, verified.jti));
            if self.store.sys_get(JTI_KIND, &key).await?.is_some() {
                return Err(OAuthError::client("the assertion's jti was already used"));
            }
            let record = JtiRecord { expires: verified.exp * MICROS };
            let jti = SysWrite { kind: JTI_KIND.into(), key, expected: None, json: Some(json_of(&record)) };
            return Ok(Authenticated { client, jti: Some(jti) });
        }
        if auth.assertion_type.is_some() {
            return Err(OAuthError::request("client_assertion is missing"));
        }
        let Some(id) = &auth.client_id else {
            return Err(OAuthError::client("no client authentication and no client_id"));
        };
        let client = self.active_client(id).await?;
        if client.is_confidential() {
            return Err(OAuthError::client(format!(
                "client {id:?} is confidential: authenticate with client_secret_basic or private_key_jwt"
            )));
        }
        Ok(Authenticated { client, jti: None })
    }

    async fn active_client(&self, id: &str) -> Result<Client, OAuthError> {
        match clients::get(self.store.as_ref(), id).await? {
            Some(c) if !c.disabled => Ok(c),
            Some(_) => Err(OAuthError::client(format!("client {id:?} is disabled"))),
            None => Err(OAuthError::client(format!("unknown client {id:?}"))),
        }
    }

    async fn code_grant(&self, form: &[(String, String)], auth: &ClientAuth, from: Option<&str>) -> Result<Value, Refusal> {
        let client = self.authenticate_client(auth).await?;
        if client.client.kind == ClientKind::Backend {
            return Err(OAuthError::new("unauthorized_client", "a backend client uses client_credentials").into());
        }
        let code = param(form, "code").ok_or_else(|| OAuthError::request("code is missing"))?;
        let redirect_uri = param(form, "redirect_uri").ok_or_else(|| OAuthError::request("redirect_uri is missing"))?;
        let verifier = param(form, "code_verifier").ok_or_else(|| OAuthError::request("code_verifier is missing (PKCE)"))?;
        let key = sha256_hex(code);
        let Some(stored) = self.store.sys_get(CODE_KIND, &key).await? else {
            return Err(OAuthError::grant("unknown or expired authorization code").into());
        };
        let record: CodeRecord = record_of(&stored, "code")?;
        let now = self.clock.now();
        let refuse = |description: &str| Refusal {
            error: OAuthError::grant(description),
            who: Some(AuditActor { kind: "user".into(), id: record.user.clone(), role: None, client: Some(record.client_id.clone()) }),
        };
        if record.client_id != client.client.client_id {
            return Err(OAuthError::grant("the code was issued to another client").into());
        }
        if let Some(used) = &record.used {
            // RFC 6749 section 4.1.2: a code used twice revokes what it gave.
            self.revoke_issued(used).await?;
            return Err(refuse("the code was already used; the tokens it gave are revoked"));
        }
        if record.expires <= now.0 {
            return Err(refuse("the authorization code has expired"));
        }
        if record.redirect_uri != redirect_uri {
            return Err(refuse("redirect_uri differs from the authorization request's"));
        }
        if !(43..=128).contains(&verifier.len()) || !is_unreserved(verifier) || pkce_challenge(verifier) != record.challenge {
            return Err(refuse("code_verifier does not match the code_challenge"));
        }
        let user = self
            .users
            .get(&record.user)
            .await?
            .filter(|u| !u.disabled)
            .ok_or_else(|| OAuthError::grant("the user who authorized is no longer active"))?;
        let scopes = Scopes::parse(&record.scope).unwrap_or_default();
        let grant = Grant {
            client: client.client.clone(),
            user: Some(user),
            scopes,
            patient: record.patient.clone(),
            encounter: record.encounter.clone(),
            nonce: record.nonce.clone(),
            family: None,
        };
        if grant.scopes.contains(&Scope::OpenId) {
            self.signing_key().await?;
        }
        let mut issued = self.issue(&grant, now)?;
        let used = UsedCode { access: issued.access_hash.clone(), family: issued.family_key.clone() };
        let updated = CodeRecord { used: Some(used), ..record };
        issued.commit.sys.push(SysWrite {
            kind: CODE_KIND.into(),
            key,
            expected: Some(stored.version),
            json: Some(json_of(&updated)),
        });
        issued.commit.sys.extend(client.jti);
        issued.commit.audit[0].from = from.map(String::from);
        match self.store.commit(issued.commit).await {
            Ok(()) => Ok(issued.response),
            Err(StoreError::Conflict(_)) => Err(OAuthError::grant("the code was already used").into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn refresh_grant(&self, form: &[(String, String)], auth: &ClientAuth, from: Option<&str>) -> Result<Value, Refusal> {
        let client = self.authenticate_client(auth).await?;
        let token = param(form, "refresh_token").ok_or_else(|| OAuthError::request("refresh_token is missing"))?;
        let hash = sha256_hex(token);
        let now = self.clock.now();
        let record = match self.store.sys_get(TOKEN_KIND, &hash).await? {
            Some(r) => record_of::<TokenRecord>(&r, "token")?,
            None => return Err(OAuthError::grant("unknown refresh token").into()),
        };
        if record.token_type != TokenType::Refresh || record.client_id != client.client.client_id {
            return Err(OAuthError::grant("unknown refresh token").into());
        }
        if record.expires <= now.0 {
            return Err(OAuthError::grant("the refresh token has expired").into());
        }
        let family_key = record.family.clone().ok_or_else(|| OAuthError::grant("unknown refresh token"))?;
        let Some(family_record) = self.store.sys_get(FAMILY_KIND, &family_key).await? else {
            return Err(OAuthError::grant("the refresh token was revoked").into());
        };
        let family: FamilyRecord = record_of(&family_record, "token family")?;
        if family.revoked {
            return Err(OAuthError::grant("the refresh token was revoked").into());
        }
        if family.current != hash {
            // A rotated-out refresh token came back: someone holds a copy. Revoke everything of this grant.
            self.revoke_family(&family_key).await?;
            return Err(Refusal {
                error: OAuthError::grant("the refresh token was already used; every token of this authorization is revoked"),
                who: Some(token_actor(&record)),
            });
        }
        let original = Scopes::parse(&record.scope).unwrap_or_default();
        let scopes = match param(form, "scope") {
            None => original,
            Some(text) => {
                let asked = Scopes::parse(text).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
                if let Some(extra) = asked.0.iter().find(|s| !original.contains(s)) {
                    return Err(OAuthError::new("invalid_scope", format!("{extra} was not granted originally")).into());
                }
                asked
            }
        };
        let user = match &record.user {
            Some(name) => Some(
                self.users
                    .get(name)
                    .await?
                    .filter(|u| !u.disabled)
                    .ok_or_else(|| OAuthError::grant("the user who authorized is no longer active"))?,
            ),
            None => None,
        };
        let grant = Grant {
            client: client.client.clone(),
            user,
            scopes,
            patient: record.patient.clone(),
            encounter: record.encounter.clone(),
            nonce: None,
            family: Some((family_key, family, family_record.version)),
        };
        if grant.scopes.contains(&Scope::OpenId) {
            self.signing_key().await?;
        }
        let mut issued = self.issue(&grant, now)?;
        issued.commit.sys.extend(client.jti);
        issued.commit.audit[0].from = from.map(String::from);
        issued.commit.audit[0].detail = Some("tokens refreshed".into());
        match self.store.commit(issued.commit).await {
            Ok(()) => Ok(issued.response),
            Err(StoreError::Conflict(_)) => Err(OAuthError::grant("the refresh token was used concurrently").into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn client_credentials_grant(&self, form: &[(String, String)], auth: &ClientAuth, from: Option<&str>) -> Result<Value, Refusal> {
        if auth.assertion.is_none() {
            return Err(OAuthError::client("client_credentials needs a signed client assertion (private_key_jwt)").into());
        }
        let client = self.authenticate_client(auth).await?;
        if client.client.kind != ClientKind::Backend {
            return Err(OAuthError::new("unauthorized_client", "only backend clients may use client_credentials").into());
        }
        let text = param(form, "scope").ok_or_else(|| OAuthError::new("invalid_scope", "scope is missing"))?;
        let requested = Scopes::parse(text).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
        let scopes = Scopes::grant(&requested, &client.client.allowed_scopes(), Flow::Backend)
            .map_err(|e| OAuthError::new("invalid_scope", e.reason))?;
        let grant = Grant { client: client.client.clone(), user: None, scopes, patient: None, encounter: None, nonce: None, family: None };
        let mut issued = self.issue(&grant, self.clock.now())?;
        issued.commit.sys.extend(client.jti);
        issued.commit.audit[0].from = from.map(String::from);
        match self.store.commit(issued.commit).await {
            Ok(()) => Ok(issued.response),
            Err(StoreError::Conflict(_)) => Err(OAuthError::client("the assertion's jti was already used").into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Builds the token records, the response and the commit (with its audit record) of a grant.
    fn issue(&self, grant: &Grant, now: fhir::instant::Instant) -> Result<Issued, OAuthError> {
        let access = new_secret();
        let access_hash = sha256_hex(&access);
        let expires_in = self.config.access_token_seconds;
        let fhir_user = grant.user.as_ref().and_then(|u| u.fhir_user.clone());
        let scope_text = grant.scopes.to_string();
        let offline = grant.scopes.contains(&Scope::OfflineAccess);
        let wants_refresh = grant.user.is_some() && (offline || grant.scopes.contains(&Scope::OnlineAccess));
        let mut sys = Vec::new();
        let mut response = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope_text,
        });
        let (family_key, refresh) = if wants_refresh {
            let refresh = new_secret();
            let refresh_hash = sha256_hex(&refresh);
            let lifetime = if offline { self.config.offline_refresh_seconds } else { self.config.online_refresh_seconds };
            let refresh_expires = now.0 + lifetime * MICROS;
            let (key, mut family, expected) = match &grant.family {
                Some((key, family, version)) => (key.clone(), family.clone(), Some(*version)),
                None => (
                    new_secret(),
                    FamilyRecord { client_id: grant.client.client_id.clone(), current: String::new(), access: Vec::new(), revoked: false, expires: 0 },
                    None,
                ),
            };
            family.current = refresh_hash.clone();
            family.access.push(access_hash.clone());
            family.expires = refresh_expires;
            sys.push(SysWrite { kind: FAMILY_KIND.into(), key: key.clone(), expected, json: Some(json_of(&family)) });
            let record = self.token_record(grant, TokenType::Refresh, &scope_text, &fhir_user, now.0, refresh_expires, Some(key.clone()));
            sys.push(SysWrite { kind: TOKEN_KIND.into(), key: refresh_hash, expected: None, json: Some(json_of(&record)) });
            response["refresh_token"] = json!(refresh);
            (Some(key), Some(refresh))
        } else {
            (None, None)
        };
        let _ = refresh;
        let record = self.token_record(
            grant,
            TokenType::Access,
            &scope_text,
            &fhir_user,
            now.0,
            now.0 + expires_in * MICROS,
            family_key.clone(),
        );
        sys.push(SysWrite { kind: TOKEN_KIND.into(), key: access_hash.clone(), expected: None, json: Some(json_of(&record)) });
        if let Some(patient) = &grant.patient {
            response["patient"] = json!(patient);
        }
        if let Some(encounter) = &grant.encounter {
            response["encounter"] = json!(encounter);
        }
        if let Some(user) = &grant.user
            && grant.scopes.contains(&Scope::OpenId)
        {
            let key = self.signing_key_now().ok_or_else(|| OAuthError::new("server_error", "the signing key is not loaded"))?;
            let seconds = now_seconds(now.0);
            let mut claims = json!({
                "iss": self.config.base_url.trim_end_matches('/'),
                "sub": user.username,
                "aud": grant.client.client_id,
                "iat": seconds,
                "exp": seconds + expires_in,
            });
            if let Some(nonce) = &grant.nonce {
                claims["nonce"] = json!(nonce);
            }
            if let Some(fhir_user) = &fhir_user
                && (grant.scopes.contains(&Scope::FhirUser) || grant.scopes.contains(&Scope::Profile))
            {
                let absolute = format!("{}/{fhir_user}", self.config.base_url.trim_end_matches('/'));
                claims["fhirUser"] = json!(absolute);
                if grant.scopes.contains(&Scope::Profile) {
                    claims["profile"] = json!(absolute);
                }
            }
            let id_token = key.sign(&claims).map_err(|e| OAuthError::new("server_error", e))?;
            response["id_token"] = json!(id_token);
        }
        let who = match &grant.user {
            Some(user) => user_actor(user, &grant.client.client_id),
            None => client_actor(&grant.client.client_id),
        };
        let mut audit = AuditRecord::new(now, "token", AuditAction::Execute, who);
        audit.detail = Some(format!("access token issued: {scope_text}"));
        audit.patients = grant.patient.iter().cloned().collect();
        Ok(Issued { response, access_hash, family_key, commit: Commit { sys, audit: vec![audit], ..Commit::default() } })
    }

    #[allow(clippy::too_many_arguments)]
    fn token_record(
        &self,
        grant: &Grant,
        token_type: TokenType,
        scope: &str,
        fhir_user: &Option<String>,
        issued: i64,
        expires: i64,
        family: Option<String>,
    ) -> TokenRecord {
        TokenRecord {
            token_type,
            client_id: grant.client.client_id.clone(),
            user: grant.user.as_ref().map(|u| u.username.clone()),
            scope: scope.to_string(),
            patient: grant.patient.clone(),
            encounter: grant.encounter.clone(),
            fhir_user: fhir_user.clone(),
            issued,
            expires,
            family,
            nonce: None,
        }
    }

    /// Revokes what a used code gave.
    async fn revoke_issued(&self, used: &UsedCode) -> Result<(), StoreError> {
        if let Some(family) = &used.family {
            self.revoke_family(family).await?;
        }
        self.delete_token(&used.access).await
    }

    /// Marks a refresh family revoked and deletes its access tokens.
    pub(crate) async fn revoke_family(&self, key: &str) -> Result<(), StoreError> {
        self.note_revocation();
        self.cache.remove_family(key);
        for _ in 0..8 {
            let Some(record) = self.store.sys_get(FAMILY_KIND, key).await? else { return Ok(()) };
            let mut family: FamilyRecord = record_of(&record, "token family")?;
            if family.revoked {
                return Ok(());
            }
            family.revoked = true;
            let mut sys = vec![SysWrite { kind: FAMILY_KIND.into(), key: key.to_string(), expected: Some(record.version), json: Some(json_of(&family)) }];
            for hash in &family.access {
                if let Some(token) = self.store.sys_get(TOKEN_KIND, hash).await? {
                    sys.push(SysWrite { kind: TOKEN_KIND.into(), key: hash.clone(), expected: Some(token.version), json: None });
                }
            }
            match self.store.commit(Commit { sys, ..Commit::default() }).await {
                Ok(()) => {
                    for hash in &family.access {
                        self.cache.remove(hash);
                    }
                    return Ok(());
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict("the token family kept changing while being revoked".into()))
    }

    async fn delete_token(&self, hash: &str) -> Result<(), StoreError> {
        self.note_revocation();
        self.cache.remove(hash);
        for _ in 0..8 {
            let Some(record) = self.store.sys_get(TOKEN_KIND, hash).await? else { return Ok(()) };
            let write = SysWrite { kind: TOKEN_KIND.into(), key: hash.to_string(), expected: Some(record.version), json: None };
            match self.store.commit(Commit { sys: vec![write], ..Commit::default() }).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    // ----- revocation and introspection ------------------------------------------

    /// `POST /oauth2/revoke` (RFC 7009): revokes an access token, or a
    /// refresh token with every token of its authorization. Unknown tokens
    /// and other clients' tokens are answered the same (success, nothing done).
    pub async fn revoke(&self, form: &[(String, String)], basic: Option<(String, String)>, from: Option<&str>) -> Result<(), OAuthError> {
        check_form(form)?;
        let auth = ClientAuth::from_form(form, basic);
        let client = match self.authenticate_client(&auth).await {
            Ok(c) => c,
            Err(e) => {
                self.audit_refusal(client_actor(auth.claimed().as_deref().unwrap_or("unknown")), &e, from).await;
                return Err(e);
            }
        };
        self.record_jti(client.jti.clone()).await?;
        let token = param(form, "token").ok_or_else(|| OAuthError::request("token is missing"))?;
        let hash = sha256_hex(token);
        let Some(stored) = self.store.sys_get(TOKEN_KIND, &hash).await? else { return Ok(()) };
        let record: TokenRecord = record_of(&stored, "token")?;
        if record.client_id != client.client.client_id {
            return Ok(());
        }
        match (&record.token_type, &record.family) {
            (TokenType::Refresh, Some(family)) => self.revoke_family(family).await?,
            _ => self.delete_token(&hash).await?,
        }
        let mut audit = AuditRecord::new(self.clock.now(), "token", AuditAction::Delete, token_actor(&record));
        audit.detail = Some(format!("{} token revoked", if record.token_type == TokenType::Refresh { "refresh" } else { "access" }));
        audit.from = from.map(String::from);
        self.store.commit(Commit { audit: vec![audit], ..Commit::default() }).await?;
        Ok(())
    }

    /// `POST /oauth2/introspect` (RFC 7662). The caller is a confidential or
    /// backend client (`basic`/assertion in the form) or holds a valid
    /// bearer token (`bearer`).
    pub async fn introspect(
        &self,
        form: &[(String, String)],
        basic: Option<(String, String)>,
        bearer: Option<&str>,
        from: Option<&str>,
    ) -> Result<Value, OAuthError> {
        check_form(form)?;
        let auth = ClientAuth::from_form(form, basic);
        let authorised = match bearer {
            Some(token) => self.authenticate_bearer(token, from).await.is_ok(),
            None if auth.basic.is_some() || auth.assertion.is_some() => {
                let client = self.authenticate_client(&auth).await?;
                self.record_jti(client.jti.clone()).await?;
                client.client.is_confidential()
            }
            None => false,
        };
        if !authorised {
            return Err(OAuthError::client("introspection needs a confidential client's credentials or a valid bearer token"));
        }
        let token = param(form, "token").ok_or_else(|| OAuthError::request("token is missing"))?;
        let hash = sha256_hex(token);
        let inactive = json!({"active": false});
        let Some(stored) = self.store.sys_get(TOKEN_KIND, &hash).await? else { return Ok(inactive) };
        let record: TokenRecord = record_of(&stored, "token")?;
        let now = self.clock.now().0;
        if record.expires <= now {
            return Ok(inactive);
        }
        if let Some(family) = &record.family {
            let revoked = match self.store.sys_get(FAMILY_KIND, family).await? {
                Some(f) => record_of::<FamilyRecord>(&f, "token family")?.revoked,
                None => true,
            };
            if revoked || (record.token_type == TokenType::Refresh && !self.is_current_refresh(family, &hash).await?) {
                return Ok(inactive);
            }
        }
        let mut answer = json!({
            "active": true,
            "scope": record.scope,
            "client_id": record.client_id,
            "token_type": if record.token_type == TokenType::Access { "Bearer" } else { "refresh_token" },
            "exp": record.expires.div_euclid(MICROS),
            "iat": record.issued.div_euclid(MICROS),
            "iss": self.config.base_url.trim_end_matches('/'),
            "aud": self.config.base_url.trim_end_matches('/'),
            "sub": record.user.clone().unwrap_or_else(|| record.client_id.clone()),
        });
        if let Some(user) = &record.user {
            answer["username"] = json!(user);
        }
        if let Some(patient) = &record.patient {
            answer["patient"] = json!(patient);
        }
        if let Some(encounter) = &record.encounter {
            answer["encounter"] = json!(encounter);
        }
        if let Some(fhir_user) = &record.fhir_user {
            answer["fhirUser"] = json!(format!("{}/{fhir_user}", self.config.base_url.trim_end_matches('/')));
        }
        Ok(answer)
    }

    /// Records a used assertion id, refusing a replay.
    async fn record_jti(&self, jti: Option<SysWrite>) -> Result<(), OAuthError> {
        let Some(write) = jti else { return Ok(()) };
        match self.store.commit(Commit { sys: vec![write], ..Commit::default() }).await {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict(_)) => Err(OAuthError::client("the assertion's jti was already used")),
            Err(e) => Err(e.into()),
        }
    }

    async fn is_current_refresh(&self, family: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(match self.store.sys_get(FAMILY_KIND, family).await? {
            Some(f) => record_of::<FamilyRecord>(&f, "token family")?.current == hash,
            None => false,
        })
    }

    // ----- discovery -------------------------------------------------------------

    /// `/.well-known/smart-configuration` (SMART App Launch 2.0).
    pub fn smart_configuration(&self) -> Value {
        let e = self.endpoints();
        json!({
            "issuer": e.issuer,
            "jwks_uri": e.jwks,
            "authorization_endpoint": e.authorize,
            "token_endpoint": e.token,
            "revocation_endpoint": e.revoke,
            "introspection_endpoint": e.introspect,
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": SCOPES_SUPPORTED,
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": CAPABILITIES,
        })
    }

    /// `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0).
    pub fn openid_configuration(&self) -> Value {
        let e = self.endpoints();
        json!({
            "issuer": e.issuer,
            "jwks_uri": e.jwks,
            "authorization_endpoint": e.authorize,
            "token_endpoint": e.token,
            "revocation_endpoint": e.revoke,
            "introspection_endpoint": e.introspect,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": SCOPES_SUPPORTED,
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser", "profile"],
            "code_challenge_methods_supported": ["S256"],
            "request_parameter_supported": false,
        })
    }
}

/// The scopes `scopes_supported` lists.
pub const SCOPES_SUPPORTED: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "system/*.cruds",
    "system/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
];

/// SMART capabilities (App Launch 2.0, section 2.5).
pub const CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "context-standalone-encounter",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
    "authorize-post",
];

/// One grant being turned into tokens.
struct Grant {
    client: Client,
    user: Option<User>,
    scopes: Scopes,
    patient: Option<String>,
    encounter: Option<String>,
    nonce: Option<String>,
    /// The refresh family being rotated: key, record, version.
    family: Option<(String, FamilyRecord, u64)>,
}

/// What [`Auth::issue`] made.
struct Issued {
    response: Value,
    access_hash: String,
    family_key: Option<String>,
    commit: Commit,
}

pub(crate) fn user_actor(user: &User, client_id: &str) -> AuditActor {
    AuditActor { kind: "user".into(), id: user.username.clone(), role: Some(user.role.clone()), client: Some(client_id.to_string()) }
}

/// The actor of a stored token: its user through its client, or the backend client.
fn token_actor(record: &TokenRecord) -> AuditActor {
    match &record.user {
        Some(u) => AuditActor { kind: "user".into(), id: u.clone(), role: None, client: Some(record.client_id.clone()) },
        None => client_actor(&record.client_id),
    }
}

/// A refused token request, with the actor to audit it against when known
/// better than the client claimed (the user of a code or refresh token).
struct Refusal {
    error: OAuthError,
    who: Option<AuditActor>,
}

impl From<OAuthError> for Refusal {
    fn from(error: OAuthError) -> Refusal {
        Refusal { error, who: None }
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Refusal {
        Refusal { error: OAuthError::server(error), who: None }
    }
}

pub(crate) fn client_actor(client_id: &str) -> AuditActor {
    AuditActor { kind: "client".into(), id: client_id.to_string(), role: None, client: None }
}
