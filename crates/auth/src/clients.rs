//! OAuth 2 clients (system records of kind `client`): SMART apps that are
//! public (PKCE only), confidential (a secret, stored as an argon2id hash,
//! or a registered JWK set for `private_key_jwt`), and backend services
//! (a JWK set of RS384 or ES384 public keys, client credentials only).

use crate::scopes::{Context, Scopes};
use domain::audit::{AuditAction, AuditActor, AuditRecord};
use domain::store::{Commit, Store, StoreError, SysWrite};
use fhir::instant::Instant;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The system-record kind of clients.
pub const CLIENT_KIND: &str = "client";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// A browser or native app that cannot keep a secret: PKCE only.
    Public,
    /// An app with a server side: a secret or a signed assertion.
    Confidential,
    /// SMART Backend Services: client credentials with a signed assertion.
    Backend,
}

impl ClientKind {
    pub fn parse(text: &str) -> Option<ClientKind> {
        match text {
            "public" => Some(ClientKind::Public),
            "confidential" => Some(ClientKind::Confidential),
            "backend" => Some(ClientKind::Backend),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Public => "public",
            ClientKind::Confidential => "confidential",
            ClientKind::Backend => "backend",
        }
    }
}

/// A registered client as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub kind: ClientKind,
    /// Redirect URIs, matched exactly.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// The scopes the client may be granted (space-separated).
    pub scopes: String,
    /// PHC string of the argon2id hash of the secret (`client_secret_basic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// The client's public keys (`private_key_jwt`, backend services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    pub created: String,
    #[serde(default)]
    pub disabled: bool,
    /// A backend client that may also run system operations (`$reindex`)
    /// and change configuration resources.
    #[serde(default)]
    pub administer: bool,
    /// A backend client cleared to open restricted records (`meta.security`
    /// R or V) without a break-the-glass step; every such access is audited
    /// as emergency access.
    #[serde(default)]
    pub restricted_access: bool,
}

/// What `hearth admin client add` (or the demo set-up) registers.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub client_id: String,
    pub kind: Option<ClientKind>,
    pub scopes: String,
    pub redirect_uris: Vec<String>,
    pub secret: Option<String>,
    pub jwks: Option<Value>,
    /// Backend clients only: may administer (see [`Client::administer`]).
    pub administer: bool,
    /// Backend clients only: see [`Client::restricted_access`].
    pub restricted_access: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Invalid(String),
    #[error("client {0:?} already exists")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Client {
    /// The scopes the client was registered with.
    pub fn allowed_scopes(&self) -> Scopes {
        // Validated at registration; a record edited by hand into nonsense allows nothing.
        Scopes::parse(&self.scopes).unwrap_or_default()
    }

    /// True when the client must authenticate at the token endpoint.
    pub fn is_confidential(&self) -> bool {
        self.kind != ClientKind::Public
    }

    /// Checks a `client_secret_basic` secret against the stored hash.
    pub fn verify_secret(&self, secret: &str) -> bool {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let Some(stored) = &self.secret_hash else { return false };
        let Ok(parsed) = PasswordHash::new(stored) else { return false };
        argon2::Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok()
    }
}

/// Reads a client.
pub async fn get(store: &dyn Store, client_id: &str) -> Result<Option<Client>, StoreError> {
    let Some(record) = store.sys_get(CLIENT_KIND, client_id).await? else { return Ok(None) };
    serde_json::from_str(&record.json)
        .map(Some)
        .map_err(|e| StoreError::Internal(format!("client record {client_id:?} is unreadable: {e}")))
}

/// Every registered client, by id.
pub async fn list(store: &dyn Store) -> Result<Vec<Client>, StoreError> {
    let mut out = Vec::new();
    for record in store.sys_list(CLIENT_KIND).await? {
        match serde_json::from_str(&record.json) {
            Ok(client) => out.push(client),
            Err(e) => return Err(StoreError::Internal(format!("client record {:?} is unreadable: {e}", record.key))),
        }
    }
    Ok(out)
}

/// Validates and stores a new client, audited (`privilege-change`) by `who`
/// in the same commit.
pub async fn register(store: &dyn Store, now: Instant, who: AuditActor, new: NewClient) -> Result<Client, ClientError> {
    let client = validate(now, new)?;
    let json = serde_json::to_string(&client).map_err(|e| ClientError::Invalid(e.to_string()))?;
    let mut record = AuditRecord::new(now, "privilege-change", AuditAction::Create, who);
    record.detail = Some(format!("OAuth client {} registered ({})", client.client_id, client.kind.as_str()));
    record.entities = vec![format!("client/{}", client.client_id)];
    let commit = Commit {
        sys: vec![SysWrite { kind: CLIENT_KIND.into(), key: client.client_id.clone(), expected: None, json: Some(Arc::from(json)) }],
        audit: vec![record],
        ..Commit::default()
    };
    match store.commit(commit).await {
        Ok(()) => Ok(client),
        Err(StoreError::Conflict(_)) => Err(ClientError::Exists(client.client_id)),
        Err(e) => Err(e.into()),
    }
}

fn validate(now: Instant, new: NewClient) -> Result<Client, ClientError> {
    let bad = |m: String| Err(ClientError::Invalid(m));
    let id = new.client_id.trim().to_string();
    if id.is_empty() || id.len() > 100 || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return bad(format!("client id {id:?}: use 1 to 100 letters, digits, '-', '_' or '.'"));
    }
    let Some(kind) = new.kind else { return bad("the client kind is public, confidential or backend".into()) };
    let scopes = Scopes::parse(&new.scopes).map_err(|e| ClientError::Invalid(e.to_string()))?;
    if scopes.resources().next().is_none() {
        return bad("a client needs at least one resource scope (patient/, user/ or system/)".into());
    }
    let has_system = scopes.has_context(Context::System);
    match kind {
        ClientKind::Backend => {
            if scopes.0.iter().any(|s| s.as_resource().is_none_or(|r| r.context != Context::System)) {
                return bad("a backend client may only have system/ scopes".into());
            }
            if !new.redirect_uris.is_empty() {
                return bad("a backend client has no redirect URIs (it uses client credentials)".into());
            }
            if new.jwks.is_none() {
                return bad("a backend client needs a JWK set of public keys (--jwks-file)".into());
            }
            if new.secret.is_some() {
                return bad("a backend client authenticates with signed assertions, not a secret".into());
            }
        }
        ClientKind::Public | ClientKind::Confidential => {
            if has_system {
                return bad("system/ scopes are for backend clients".into());
            }
            if new.redirect_uris.is_empty() {
                return bad("an app needs at least one redirect URI (--redirect-uri)".into());
            }
            for uri in &new.redirect_uris {
                check_redirect_uri(uri).map_err(ClientError::Invalid)?;
            }
            if kind == ClientKind::Public && (new.secret.is_some() || new.jwks.is_some()) {
                return bad("a public client has neither secret nor keys (it uses PKCE)".into());
            }
            if kind == ClientKind::Confidential && new.secret.is_none() && new.jwks.is_none() {
                return bad("a confidential client needs a secret (--secret-stdin) or a JWK set (--jwks-file)".into());
            }
            if new.secret.is_some() && new.jwks.is_some() {
                return bad("give a confidential client a secret or a JWK set, not both".into());
            }
            if new.administer || new.restricted_access {
                return bad("only a backend client may administer or open restricted records".into());
            }
        }
    }
    let secret_hash = match &new.secret {
        None => None,
        Some(secret) if secret.len() < 16 => return bad("a client secret has at least 16 characters".into()),
        Some(secret) => Some(hash_secret(secret)?),
    };
    if let Some(jwks) = &new.jwks {
        check_jwks(jwks).map_err(ClientError::Invalid)?;
    }
    Ok(Client {
        client_id: id,
        kind,
        redirect_uris: new.redirect_uris,
        scopes: scopes.to_string(),
        secret_hash,
        jwks: new.jwks,
        created: now.to_fhir(),
        disabled: false,
        administer: new.administer,
        restricted_access: new.restricted_access,
    })
}

fn hash_secret(secret: &str) -> Result<String, ClientError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ClientError::Invalid(format!("cannot hash the secret: {e}")))
}

/// A redirect URI: absolute, no fragment; `https`, or `http` on the loopback host only.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.contains('#') {
        return Err(format!("redirect URI {uri:?} has a fragment"));
    }
    let rest = if let Some(rest) = uri.strip_prefix("https://") {
        rest
    } else if let Some(rest) = uri.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return Err(format!("redirect URI {uri:?}: http is only allowed on localhost; use https"));
        }
        rest
    } else {
        return Err(format!("redirect URI {uri:?} is not an absolute http(s) URI"));
    };
    if rest.split(['/', '?']).next().unwrap_or("").is_empty() {
        return Err(format!("redirect URI {uri:?} has no host"));
    }
    Ok(())
}

/// A client's JWK set: public RSA keys (RS384) or EC P-384 keys (ES384) only.
pub fn check_jwks(jwks: &Value) -> Result<(), String> {
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or("a JWK set is {\"keys\": [...]}")?;
    if keys.is_empty() {
        return Err("the JWK set has no keys".into());
    }
    for (i, key) in keys.iter().enumerate() {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            if key.get(private).is_some() {
                return Err(format!("key {i} holds private material ({private:?}); register public keys only"));
            }
        }
        match (key.get("kty").and_then(Value::as_str), key.get("crv").and_then(Value::as_str)) {
            (Some("RSA"), _) => {}
            (Some("EC"), Some("P-384")) => {}
            (Some("EC"), crv) => return Err(format!("key {i}: EC keys must be on P-384 (ES384), not {crv:?}")),
            (kty, _) => return Err(format!("key {i}: key type {kty:?} is not RSA or EC")),
        }
        let parsed: Result<jsonwebtoken::jwk::Jwk, _> = serde_json::from_value(key.clone());
        match parsed {
            Ok(jwk) => {
                jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {i} is not a usable public key: {e}"))?;
            }
            Err(e) => return Err(format!("key {i} is not a JWK: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        assert!(check_redirect_uri("https://app.example/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1:9999/cb").is_ok());
        assert!(check_redirect_uri("http://localhost/cb").is_ok());
        assert!(check_redirect_uri("http://app.example/cb").is_err());
        assert!(check_redirect_uri("https://app.example/cb#x").is_err());
        assert!(check_redirect_uri("app://cb").is_err());
    }

    #[test]
    fn kinds_need_their_credentials() {
        let now = Instant::now();
        let base = NewClient {
            client_id: "app".into(),
            kind: Some(ClientKind::Public),
            scopes: "launch patient/*.rs".into(),
            redirect_uris: vec!["https://app.example/cb".into()],
            ..NewClient::default()
        };
        assert!(validate(now, base.clone()).is_ok());
        assert!(validate(now, NewClient { secret: Some("0123456789abcdef".into()), ..base.clone() }).is_err());
        let confidential = NewClient { kind: Some(ClientKind::Confidential), secret: Some("0123456789abcdef".into()), ..base.clone() };
        let client = validate(now, confidential).expect("confidential");
        assert!(client.verify_secret("0123456789abcdef"));
        assert!(!client.verify_secret("0123456789abcdeX"));
        assert!(!client.secret_hash.as_deref().unwrap_or("").contains("0123456789abcdef"));
        let backend = NewClient { kind: Some(ClientKind::Backend), scopes: "system/*.rs".into(), redirect_uris: vec![], ..base.clone() };
        assert!(validate(now, backend).is_err(), "no keys");
        assert!(validate(now, NewClient { scopes: "system/*.rs".into(), ..base }).is_err(), "system scopes on an app");
    }
}
