//! Web sessions (45 CFR 170.315(d)(5), automatic access time-out): created
//! after a successful sign-in, ended by sign-out, an idle timeout, an
//! absolute lifetime, or revocation.
//!
//! The cookie carries a random 256-bit token; the store keeps only its
//! SHA-256 (system records of kind `session`, keyed by the hex digest), so
//! a copy of the database opens no session. The CSRF token is derived from
//! the session token, so it needs no storage and cannot be guessed without
//! the cookie. Checking a session refreshes its last-seen time, written back
//! at most once a minute so that most checks are a read (the idle timeout
//! is therefore exact to within that minute).

use crate::users::{User, Users, instant_text};
use base64::Engine as _;
use domain::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
use domain::store::{Commit, StoreError, SysRecord, SysWrite};
use fhir::instant::Instant;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The system-record kind of sessions.
pub const KIND: &str = "session";
/// The session cookie's name.
pub const COOKIE_NAME: &str = "hearth_session";
/// The attributes the HTTP layer must give the session cookie.
pub const COOKIE_ATTRIBUTES: &str = "Secure; HttpOnly; SameSite=Lax; Path=/";
/// The form field (or header) that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// Last-seen is written back at most this often.
const TOUCH_MICROS: i64 = 60_000_000;

/// Session lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session unused this long ends.
    pub idle_minutes: u32,
    /// A session ends this long after sign-in, however active.
    pub absolute_hours: u32,
}

impl Default for SessionSettings {
    fn default() -> SessionSettings {
        SessionSettings { idle_minutes: 15, absolute_hours: 12 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SessionRecord {
    username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(with = "instant_text")]
    created: Instant,
    #[serde(with = "instant_text")]
    last_seen: Instant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

/// A stored session, as administrators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The SHA-256 (hex) of the cookie token: names the session for revocation; opens nothing.
    pub id: String,
    pub username: String,
    pub created: Instant,
    /// Last check (to within a minute).
    pub last_seen: Instant,
    /// The address it was created from.
    pub from: Option<String>,
}

/// A session just created: `token` goes into the cookie, once.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    pub token: String,
    pub csrf: String,
    pub session: Session,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession").field("session", &self.session).finish_non_exhaustive()
    }
}

/// A session that passed its check, with its user as now stored.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub session: Session,
    pub user: User,
    /// The CSRF token forms of this session must carry.
    pub csrf: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Unknown, expired, revoked, or its account is disabled or gone.
    #[error("no such session, or it has ended: sign in again")]
    Invalid,
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The stored key of a cookie token.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CSRF token of a session token.
pub fn csrf_for(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"hearth-csrf\n");
    hasher.update(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// Whether `given` is the CSRF token of session `token` (constant time).
pub fn csrf_matches(token: &str, given: &str) -> bool {
    let expected = csrf_for(token);
    expected.len() == given.len() && expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn parse(record: &SysRecord) -> Result<SessionRecord, StoreError> {
    serde_json::from_str(&record.json).map_err(|_| StoreError::Internal("a session record is unreadable".into()))
}

fn to_json(record: &SessionRecord) -> Arc<str> {
    Arc::from(serde_json::to_string(record).unwrap_or_default())
}

fn session_of(id: &str, record: &SessionRecord) -> Session {
    Session {
        id: id.to_string(),
        username: record.username.clone(),
        created: record.created,
        last_seen: record.last_seen,
        from: record.from.clone(),
    }
}

/// Web sessions over the users' store.
#[derive(Clone)]
pub struct Sessions {
    users: Users,
    settings: SessionSettings,
}

impl Sessions {
    pub fn new(users: Users, settings: SessionSettings) -> Sessions {
        Sessions { users, settings }
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    fn ended(&self, record: &SessionRecord, now: Instant) -> Option<String> {
        let idle = i64::from(self.settings.idle_minutes) * 60_000_000;
        let absolute = i64::from(self.settings.absolute_hours) * 3_600_000_000;
        if now.0 - record.created.0 >= absolute {
            Some(format!("session ended: its lifetime of {} h is over", self.settings.absolute_hours))
        } else if now.0 - record.last_seen.0 >= idle {
            Some(format!("session timed out after {} minutes without use", self.settings.idle_minutes))
        } else {
            None
        }
    }

    fn logout_record(&self, now: Instant, who: AuditActor, from: Option<&str>, detail: String) -> AuditRecord {
        let mut record = AuditRecord::new(now, "logout", AuditAction::Execute, who);
        record.outcome = AuditOutcome::Success;
        record.detail = Some(detail);
        record.from = from.map(str::to_string);
        record
    }

    fn user_actor(record: &SessionRecord) -> AuditActor {
        AuditActor { kind: "user".into(), id: record.username.clone(), role: record.role.clone(), client: None }
    }

    /// Deletes a session with an audit record, unless it changed meanwhile (then another check handles it).
    async fn end(&self, id: &str, version: u64, record: AuditRecord) -> Result<bool, StoreError> {
        let write = SysWrite { kind: KIND.into(), key: id.to_string(), expected: Some(version), json: None };
        match self.users.store().commit(Commit { sys: vec![write], audit: vec![record], ..Commit::default() }).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A new session for a user who has just signed in.
    pub async fn create(&self, user: &User, from: Option<&str>) -> Result<NewSession, StoreError> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let id = token_hash(&token);
        let now = self.users.now();
        let record = SessionRecord {
            username: user.username.clone(),
            role: Some(user.role.clone()),
            created: now,
            last_seen: now,
            from: from.map(str::to_string),
        };
        let write = SysWrite { kind: KIND.into(), key: id.clone(), expected: None, json: Some(to_json(&record)) };
        self.users.store().commit(Commit { sys: vec![write], ..Commit::default() }).await?;
        Ok(NewSession { csrf: csrf_for(&token), session: session_of(&id, &record), token })
    }

    /// Checks the cookie token of a request: the session must exist, be
    /// within its idle and absolute limits, and belong to an enabled account.
    /// A session found ended is deleted (audited as a logout).
    pub async fn check(&self, token: &str) -> Result<ActiveSession, SessionError> {
        let id = token_hash(token);
        let Some(stored) = self.users.store().sys_get(KIND, &id).await? else {
            return Err(SessionError::Invalid);
        };
        let record = parse(&stored)?;
        let now = self.users.now();
        if let Some(reason) = self.ended(&record, now) {
            let audit = self.logout_record(now, Self::user_actor(&record), None, reason);
            self.end(&id, stored.version, audit).await?;
            return Err(SessionError::Invalid);
        }
        let user = match self.users.get(&record.username).await? {
            Some(user) if !user.disabled => user,
            _ => {
                let audit = self.logout_record(
                    now,
                    Self::user_actor(&record),
                    None,
                    "session ended: account disabled or removed".into(),
                );
                self.end(&id, stored.version, audit).await?;
                return Err(SessionError::Invalid);
            }
        };
        let mut current = record.clone();
        if now.0 - record.last_seen.0 >= TOUCH_MICROS {
            current.last_seen = now;
            let write = SysWrite {
                kind: KIND.into(),
                key: id.clone(),
                expected: Some(stored.version),
                json: Some(to_json(&current)),
            };
            match self.users.store().commit(Commit { sys: vec![write], ..Commit::default() }).await {
                // Another request refreshed (or ended) it meanwhile: this check still stands.
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(ActiveSession { session: session_of(&id, &current), user, csrf: csrf_for(token) })
    }

    /// Ends the session of `token` (the user signing out), audited as a logout.
    /// Signing out of an unknown or ended session does nothing.
    pub async fn sign_out(&self, token: &str, from: Option<&str>) -> Result<(), StoreError> {
        let id = token_hash(token);
        for _ in 0..4 {
            let Some(stored) = self.users.store().sys_get(KIND, &id).await? else {
                return Ok(());
            };
            let record = parse(&stored)?;
            let audit = self.logout_record(self.users.now(), Self::user_actor(&record), from, "signed out".into());
            if self.end(&id, stored.version, audit).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The sessions still within their limits, of one user or of everyone, oldest first.
    pub async fn list(&self, username: Option<&str>) -> Result<Vec<Session>, StoreError> {
        let now = self.users.now();
        let username = username.map(crate::users::normalise_username);
        let mut out = Vec::new();
        for stored in self.users.store().sys_list(KIND).await? {
            let record = parse(&stored)?;
            if username.as_ref().is_some_and(|u| *u != record.username) || self.ended(&record, now).is_some() {
                continue;
            }
            out.push(session_of(&stored.key, &record));
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Ends one session by its id ([`Session::id`]); `by` is audited. False when there was none.
    pub async fn revoke(&self, id: &str, by: &AuditActor) -> Result<bool, StoreError> {
        for _ in 0..4 {
            let Some(stored) = self.users.store().sys_get(KIND, id).await? else {
                return Ok(false);
            };
            let record = parse(&stored)?;
            let detail = format!("session of user {} revoked", record.username);
            let audit = self.logout_record(self.users.now(), by.clone(), None, detail);
            if self.end(id, stored.version, audit).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Ends every session of a user; `by` is audited. Returns how many ended.
    pub async fn revoke_all(&self, username: &str, by: &AuditActor) -> Result<usize, StoreError> {
        let username = crate::users::normalise_username(username);
        let mut ended = 0;
        for stored in self.users.store().sys_list(KIND).await? {
            let record = parse(&stored)?;
            if record.username == username && self.revoke(&stored.key, by).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Deletes every session past its limits (audited as logouts). Returns how many.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = self.users.now();
        let mut purged = 0;
        for stored in self.users.store().sys_list(KIND).await? {
            let record = parse(&stored)?;
            if let Some(reason) = self.ended(&record, now) {
                let audit = self.logout_record(now, Self::user_actor(&record), None, reason);
                if self.end(&stored.key, stored.version, audit).await? {
                    purged += 1;
                }
            }
        }
        Ok(purged)
    }
}
