//! Identity for Hearth: who is asking, proven how, and what that lets them do.
//!
//! Users sign in with a password (argon2id) and, where their role requires
//! it, a TOTP code; repeated failures lock the account for a while without
//! revealing whether it exists. OAuth 2 clients (SMART App Launch 2.0 apps,
//! and SMART Backend Services with signed JWT assertions) obtain tokens
//! whose scopes narrow what their user may do. Everything here ends in a
//! [`domain::access::Access`], which the Service enforces and audits.
//!
//! All state lives in the store as system records ([`domain::store::SysWrite`]),
//! written together with the audit records of the event (sign-in, token
//! issue, privilege change) in one commit.

pub mod break_glass;
pub mod clients;
pub mod jwt;
pub mod oauth;
pub mod password;
pub mod roles;
pub mod scopes;
pub mod sessions;
pub mod tokens;
pub mod totp;
pub mod users;

use crate::clients::{Client, ClientError, NewClient};
use crate::jwt::SigningKey;
use crate::roles::Roles;
use crate::scopes::{Context, Scopes};
use crate::sessions::{SessionSettings, Sessions};
use crate::tokens::{FAMILY_KIND, FamilyRecord, TOKEN_KIND, TokenCache, TokenRecord, TokenType, sha256_hex};
use crate::users::Users;
use domain::access::{Access, Emergency, Perms, Policy, TypeSet};
use domain::audit::AuditActor;
use domain::service::Clock;
use domain::store::{Commit, Store, StoreError, SysWrite};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Microseconds per second ([`fhir::instant::Instant`] counts microseconds).
pub(crate) const MICROS: i64 = 1_000_000;

/// Lifetimes and addresses of the OAuth 2 server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The public FHIR base URL (`http://host:8080/fhir`): the `aud` an
    /// authorization request must name and the issuer of id_tokens. The
    /// OAuth endpoints live beside it, under `/oauth2` at the same root.
    pub base_url: String,
    pub access_token_seconds: i64,
    pub code_seconds: i64,
    pub launch_seconds: i64,
    /// Refresh tokens of `offline_access`.
    pub offline_refresh_seconds: i64,
    /// Refresh tokens of `online_access`.
    pub online_refresh_seconds: i64,
    /// How long a checked token is trusted from the cache before it is read
    /// again (bounds how late a revocation made by another process sharing
    /// the database is seen; revocations in this process take effect at once).
    pub cache_recheck_seconds: i64,
    /// Web sessions of the sign-in page (idle and absolute limits).
    pub sessions: SessionSettings,
}

impl AuthConfig {
    /// The defaults: access tokens 1 h, codes 60 s, launch contexts 10 min,
    /// offline refresh tokens 90 days, online ones 12 h, cache re-check 30 s,
    /// the default session limits.
    pub fn new(base_url: &str) -> AuthConfig {
        AuthConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            access_token_seconds: 3600,
            code_seconds: 60,
            launch_seconds: 600,
            offline_refresh_seconds: 90 * 24 * 3600,
            online_refresh_seconds: 12 * 3600,
            cache_recheck_seconds: 30,
            sessions: SessionSettings::default(),
        }
    }
}

/// The absolute URLs of the OAuth 2 endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub issuer: String,
    pub authorize: String,
    pub token: String,
    pub revoke: String,
    pub introspect: String,
    pub jwks: String,
    pub launch: String,
}

/// Why a bearer token was not accepted. The message names no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Identity for the server: users, OAuth clients and tokens, over one store.
pub struct Auth {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) users: Users,
    sessions: Sessions,
    pub(crate) config: AuthConfig,
    pub(crate) cache: TokenCache,
    /// Bumped by every revocation, so that a token checked while one ran is not cached.
    revocations: AtomicU64,
    key: tokio::sync::OnceCell<Arc<SigningKey>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, users: Users, config: AuthConfig) -> Auth {
        Auth {
            store,
            clock,
            sessions: Sessions::new(users.clone(), config.sessions.clone()),
            users,
            config,
            cache: TokenCache::default(),
            revocations: AtomicU64::new(0),
            key: tokio::sync::OnceCell::new(),
        }
    }

    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Web sessions (the sign-in page of the authorization endpoint).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    pub fn roles(&self) -> &Arc<Roles> {
        self.users.roles()
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The OAuth endpoints: `/oauth2/...` at the root the FHIR base URL is under.
    pub fn endpoints(&self) -> Endpoints {
        let base = self.config.base_url.trim_end_matches('/');
        let root = base.strip_suffix("/fhir").unwrap_or(base);
        Endpoints {
            issuer: base.to_string(),
            authorize: format!("{root}/oauth2/authorize"),
            token: format!("{root}/oauth2/token"),
            revoke: format!("{root}/oauth2/revoke"),
            introspect: format!("{root}/oauth2/introspect"),
            jwks: format!("{root}/oauth2/jwks"),
            launch: format!("{root}/oauth2/launch"),
        }
    }

    /// The id_token signing key, loaded (or made) on first use.
    pub async fn signing_key(&self) -> Result<Arc<SigningKey>, StoreError> {
        let now = self.clock.now();
        self.key
            .get_or_try_init(|| async { SigningKey::load_or_create(self.store.as_ref(), now).await.map(Arc::new) })
            .await
            .cloned()
    }

    pub(crate) fn signing_key_now(&self) -> Option<Arc<SigningKey>> {
        self.key.get().cloned()
    }

    /// The public keys of id_tokens (`/oauth2/jwks`).
    pub async fn jwks(&self) -> Result<serde_json::Value, StoreError> {
        Ok(self.signing_key().await?.jwks())
    }

    /// Registers an OAuth client (audited as a privilege change by `by`).
    pub async fn register_client(&self, new: NewClient, by: AuditActor) -> Result<Client, ClientError> {
        clients::register(self.store.as_ref(), self.clock.now(), by, new).await
    }

    pub(crate) fn note_revocation(&self) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets every cached token check (after a change of users, roles or clients).
    pub fn clear_token_cache(&self) {
        self.note_revocation();
        self.cache.clear();
    }

    /// The caller's [`Access`] for a bearer token: for an app acting for a
    /// user, the user's role layer (with its patient restriction and
    /// break-the-glass) plus the token's scope layer and launch patient; for
    /// a backend client, the scope layer alone. Served from memory while
    /// cached; unknown, expired or revoked tokens fail.
    pub async fn authenticate_bearer(&self, token: &str, from: Option<&str>) -> Result<Access, AuthError> {
        let hash = sha256_hex(token);
        let now = self.clock.now().0;
        if let Some(cached) = self.cache.get(&hash, now) {
            return Ok(cached.access.clone().with_from(from.map(String::from)));
        }
        let epoch = self.revocations.load(Ordering::SeqCst);
        let record = match self.store.sys_get(TOKEN_KIND, &hash).await? {
            Some(r) => serde_json::from_str::<TokenRecord>(&r.json)
                .map_err(|e| StoreError::Internal(format!("token record is unreadable: {e}")))?,
            None => return Err(AuthError::InvalidToken("unknown or revoked token")),
        };
        if record.token_type != TokenType::Access {
            return Err(AuthError::InvalidToken("a refresh token is not an access token"));
        }
        if record.expires <= now {
            return Err(AuthError::InvalidToken("the token has expired"));
        }
        if let Some(family) = &record.family {
            let revoked = match self.store.sys_get(FAMILY_KIND, family).await? {
                Some(f) => serde_json::from_str::<FamilyRecord>(&f.json).map(|f| f.revoked).unwrap_or(true),
                None => true,
            };
            if revoked {
                return Err(AuthError::InvalidToken("unknown or revoked token"));
            }
        }
        let access = self.access_of(&record).await?;
        if self.revocations.load(Ordering::SeqCst) == epoch {
            let recheck = now + self.config.cache_recheck_seconds * MICROS;
            let cached = tokens::Cached { access: access.clone(), expires: record.expires, family: record.family.clone(), recheck };
            self.cache.insert(hash, cached, now);
        }
        Ok(access.with_from(from.map(String::from)))
    }

    async fn access_of(&self, record: &TokenRecord) -> Result<Access, AuthError> {
        let scopes = Scopes::parse(&record.scope).unwrap_or_default();
        let client = clients::get(self.store.as_ref(), &record.client_id)
            .await?
            .filter(|c| !c.disabled)
            .ok_or(AuthError::InvalidToken("the token's client is no longer active"))?;
        let Some(username) = &record.user else {
            let layer = scopes.policy("scopes", &[Context::System]);
            return Ok(Access {
                actor: AuditActor { kind: "client".into(), id: client.client_id.clone(), role: None, client: None },
                from: None,
                layers: vec![Arc::new(layer)],
                patient: None,
                emergency: client
                    .restricted_access
                    .then(|| Emergency { reason: format!("backend client {} is cleared for restricted records", client.client_id) }),
                administer: client.administer,
            });
        };
        let user = self
            .users
            .get(username)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AuthError::InvalidToken("the token's user is no longer active"))?;
        let mut access = self.users.access_for(&user, self.users.roles());
        access.actor.client = Some(client.client_id.clone());
        let layer = if scopes.has_context(Context::User) {
            // user/ scopes reach what the user may; patient/ scopes beside them add nothing.
            scopes.policy("scopes", &[Context::User])
        } else {
            match (&record.patient, &access.patient) {
                (Some(token_patient), Some(own)) if token_patient != own => {
                    return Err(AuthError::InvalidToken("the token's patient is not the user's"));
                }
                (Some(token_patient), _) => access.patient = Some(token_patient.clone()),
                // patient/ scopes without a patient in context reach nothing.
                (None, _) => return Ok(Access { layers: vec![Arc::new(Policy { name: "scopes".into(), grants: Vec::new() })], ..access }),
            }
            scopes.policy("scopes", &[Context::Patient])
        };
        access.administer = access.administer && grants_everything(&layer);
        access.layers.push(Arc::new(layer));
        Ok(access)
    }

    /// Deletes expired tokens, codes, launch contexts, refresh families and
    /// used assertion ids. Returns how many records went.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        use crate::tokens::{CODE_KIND, JTI_KIND, LAUNCH_KIND};
        let now = self.clock.now().0;
        let mut purged = 0;
        for kind in [TOKEN_KIND, CODE_KIND, LAUNCH_KIND, FAMILY_KIND, JTI_KIND] {
            let records = self.store.sys_list(kind).await?;
            let expired: Vec<SysWrite> = records
                .iter()
                .filter(|r| {
                    serde_json::from_str::<serde_json::Value>(&r.json)
                        .ok()
                        .and_then(|v| v.get("expires").and_then(serde_json::Value::as_i64))
                        .is_some_and(|e| e <= now)
                })
                .map(|r| SysWrite { kind: kind.to_string(), key: r.key.clone(), expected: Some(r.version), json: None })
                .collect();
            for chunk in expired.chunks(500) {
                match self.store.commit(Commit { sys: chunk.to_vec(), ..Commit::default() }).await {
                    Ok(()) => purged += chunk.len(),
                    // Something changed meanwhile; the next purge gets it.
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(purged)
    }
}

/// A layer that allows every interaction on every type (`user/*.cruds`).
fn grants_everything(policy: &Policy) -> bool {
    policy.grants.iter().any(|g| g.types == TypeSet::All && g.perms == Perms::ALL && g.filter.is_empty())
}
