//! Users: accounts kept as system records (kind `user`, key = username),
//! sign-in with lockout and TOTP, the [`Access`] a user acts with, and the
//! administration of accounts.
//!
//! Every sign-in attempt is audited in the same commit as the account
//! update it causes (failure counter, lock, last TOTP step). Unknown users,
//! wrong passwords, locked and disabled accounts all answer
//! [`SignInError::Invalid`] after the same argon2 verification, so neither
//! the answer nor its timing tells them apart.

use crate::break_glass::EmergencyGrant;
use crate::password::{self, HashError, PasswordError, PasswordPolicy};
use crate::roles::Roles;
use crate::totp;
use domain::access::{Access, Emergency};
use domain::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
use domain::service::Clock;
use domain::store::{Commit, Store, StoreError, SysRecord, SysWrite};
use fhir::instant::Instant;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The system-record kind of user accounts.
pub const KIND: &str = "user";

/// Attempts of a read-decide-commit cycle before giving up on a record that keeps changing.
const RETRIES: usize = 8;

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// One account, as stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub role: String,
    /// The linked Patient id (role `patient` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The FHIR resource the user is (`Practitioner/x`, `Patient/y`), for SMART's `fhirUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Base32 TOTP secret, once enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
    /// The last TOTP step accepted (codes of this step or earlier are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp_last_step: Option<u64>,
    #[serde(default)]
    pub disabled: bool,
    /// Failed sign-ins since the last success or lock.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_instant_text")]
    pub locked_until: Option<Instant>,
    /// Member of the break-the-glass group whatever the role.
    #[serde(default)]
    pub break_glass: bool,
    /// The latest break-the-glass grant (in force until `until`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency: Option<EmergencyGrant>,
    #[serde(with = "instant_text")]
    pub created: Instant,
    /// Last change by an administrator (or password change).
    #[serde(with = "instant_text")]
    pub updated: Instant,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_instant_text")]
    pub last_sign_in: Option<Instant>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("patient", &self.patient)
            .field("fhir_user", &self.fhir_user)
            .field("mfa_enrolled", &self.totp_secret.is_some())
            .field("disabled", &self.disabled)
            .field("failures", &self.failures)
            .field("locked_until", &self.locked_until)
            .field("break_glass", &self.break_glass)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn mfa_enrolled(&self) -> bool {
        self.totp_secret.is_some()
    }

    /// Locked at `now` (a lock whose time has passed no longer counts).
    pub fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// The break-the-glass grant in force at `now`, if any.
    pub fn active_emergency(&self, now: Instant) -> Option<&EmergencyGrant> {
        self.emergency.as_ref().filter(|g| g.until > now)
    }

    pub(crate) fn to_json(&self) -> Arc<str> {
        // Plain strings, numbers and flags: serialising cannot fail.
        Arc::from(serde_json::to_string(self).unwrap_or_default())
    }

    pub(crate) fn from_record(record: &SysRecord) -> Result<User, StoreError> {
        serde_json::from_str(&record.json)
            .map_err(|e| StoreError::Internal(format!("user record {:?} is unreadable: {e}", record.key)))
    }
}

/// Sign-in and account settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    /// Failed sign-ins that lock an account.
    pub lockout_failures: u32,
    /// How long a lock lasts.
    pub lockout_minutes: u32,
    pub password: PasswordPolicy,
    /// The issuer shown by authenticator apps.
    pub totp_issuer: String,
    /// How long a break-the-glass grant lasts.
    pub break_glass_minutes: u32,
}

impl Default for UserSettings {
    fn default() -> UserSettings {
        UserSettings {
            lockout_failures: 5,
            lockout_minutes: 15,
            password: PasswordPolicy::default(),
            totp_issuer: "Hearth".into(),
            break_glass_minutes: crate::break_glass::DEFAULT_MINUTES,
        }
    }
}

/// A successful sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: User,
    /// What the user may do (role table, patient restriction, break-the-glass).
    pub access: Access,
}

/// Why a sign-in failed. The message is safe to show to the person signing in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// Unknown user, wrong password, locked or disabled account: deliberately one answer.
    #[error("invalid username or password, or the account is locked")]
    Invalid,
    /// The password was right; a TOTP code is needed (none given, or the one given was wrong or used).
    #[error("enter the 6-digit code from your authenticator app")]
    MfaRequired,
    /// The password was right but the role requires a second factor and none is enrolled.
    #[error("your role requires a second factor and none is enrolled: ask an administrator to enrol one")]
    MfaNotEnrolled,
    #[error("sign-in is unavailable: {0}")]
    Store(#[from] StoreError),
}

/// Why an administrative change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("a user named {0:?} already exists")]
    Exists(String),
    #[error(
        "username {0:?}: use 1 to 64 characters: lower-case letters, digits and . _ - @, starting with a letter or digit"
    )]
    BadUsername(String),
    #[error("no role named {0:?} (see hearth admin role list)")]
    UnknownRole(String),
    #[error("role patient needs the id of the user's Patient resource")]
    PatientRequired,
    #[error("only role patient links a Patient; role {0} does not")]
    PatientNotAllowed(String),
    #[error("fhir user {0:?} must be a reference such as Practitioner/123 or Patient/abc")]
    BadFhirUser(String),
    #[error("{0}")]
    Password(#[from] PasswordError),
    #[error("{0}")]
    Hash(#[from] HashError),
    #[error("the account of {0:?} kept changing while it was being updated; try again")]
    Busy(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A new account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewUser {
    pub username: String,
    pub role: String,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
    pub password: String,
    pub break_glass: bool,
}

/// What an authenticator app needs to enrol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpEnrolment {
    /// Base32 secret, for typing in by hand.
    pub secret: String,
    /// `otpauth://totp/...`, for a QR code.
    pub uri: String,
}

/// Usernames are compared lower case and without surrounding spaces.
pub fn normalise_username(username: &str) -> String {
    username.trim().to_lowercase()
}

fn valid_username(username: &str) -> bool {
    let bytes = username.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn valid_id(id: &str) -> bool {
    // FHIR ids: [A-Za-z0-9\-\.]{1,64}
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn valid_fhir_user(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((kind, id)) => {
            matches!(kind, "Practitioner" | "PractitionerRole" | "Patient" | "RelatedPerson" | "Person") && valid_id(id)
        }
        None => false,
    }
}

/// The account store: sign-in, access and administration.
#[derive(Clone)]
pub struct Users {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    roles: Arc<Roles>,
    settings: UserSettings,
}

impl Users {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, roles: Arc<Roles>, settings: UserSettings) -> Users {
        // Computed once now, so that the first unknown-user sign-in is not slower than the rest.
        let _ = password::dummy_hash();
        Users { store, clock, roles, settings }
    }

    pub fn roles(&self) -> &Arc<Roles> {
        &self.roles
    }

    pub fn settings(&self) -> &UserSettings {
        &self.settings
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// An account and its record version.
    pub(crate) async fn load(&self, username: &str) -> Result<Option<(User, u64)>, StoreError> {
        match self.store.sys_get(KIND, &normalise_username(username)).await? {
            Some(record) => Ok(Some((User::from_record(&record)?, record.version))),
            None => Ok(None),
        }
    }

    /// An account by username.
    pub async fn get(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self.load(username).await?.map(|(user, _)| user))
    }

    /// Every account, by username.
    pub async fn list(&self) -> Result<Vec<User>, StoreError> {
        self.store.sys_list(KIND).await?.iter().map(User::from_record).collect()
    }

    /// What `user` may do now: the role's table as the one layer, the patient
    /// restriction of role patient, break-the-glass while a grant is in force,
    /// and administration for role admin. A disabled account, an unknown role
    /// or a patient user without a patient gets no layer, so nothing is allowed.
    pub fn access_for(&self, user: &User, roles: &Roles) -> Access {
        let now = self.clock.now();
        let policy = roles.policy(&user.role);
        let is_patient = user.role == "patient";
        let usable = !user.disabled && policy.is_some() && (!is_patient || user.patient.is_some());
        Access {
            actor: AuditActor {
                kind: "user".into(),
                id: user.username.clone(),
                role: Some(user.role.clone()),
                client: None,
            },
            from: None,
            layers: if usable { policy.into_iter().collect() } else { Vec::new() },
            patient: if is_patient { user.patient.clone() } else { None },
            emergency: user.active_emergency(now).map(|g| Emergency { reason: g.reason.clone() }),
            administer: usable && user.role == "admin",
        }
    }

    /// Signs a user in with a password and, when the account has TOTP
    /// enrolled or its role requires a second factor, a TOTP code. See the
    /// module documentation for what is answered and audited.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
        totp_code: Option<&str>,
        from: Option<&str>,
    ) -> Result<SignedIn, SignInError> {
        let username = normalise_username(username);
        // The verified (hash, result), reused when a concurrent change makes us retry.
        let mut verified: Option<(String, bool)> = None;
        for _ in 0..RETRIES {
            let now = self.clock.now();
            let loaded = if valid_username(&username) { self.load(&username).await? } else { None };
            let Some((user, version)) = loaded else {
                // Spend the time a real verification takes, then refuse.
                let _ = password::verify_blocking(password::dummy_hash().to_string(), password.to_string()).await;
                let mut who = username.clone();
                who.truncate(who.char_indices().nth(64).map_or(who.len(), |(i, _)| i));
                let actor = AuditActor { kind: "user".into(), id: who, role: None, client: None };
                let record =
                    self.sign_in_record(now, "login-failed", actor, from, AuditOutcome::Denied, "unknown user");
                self.store.commit(Commit { audit: vec![record], ..Commit::default() }).await?;
                return Err(SignInError::Invalid);
            };
            let password_ok = match &verified {
                Some((hash, ok)) if *hash == user.password_hash => *ok,
                _ => {
                    let ok = password::verify_blocking(user.password_hash.clone(), password.to_string()).await;
                    verified = Some((user.password_hash.clone(), ok));
                    ok
                }
            };
            let outcome = self.decide(&user, password_ok, totp_code, now);
            let actor = AuditActor {
                kind: "user".into(),
                id: user.username.clone(),
                role: Some(user.role.clone()),
                client: None,
            };
            let (updated, records, result) = match outcome {
                Decision::Refuse { detail, error } => {
                    let record = self.sign_in_record(now, "login-failed", actor, from, AuditOutcome::Denied, detail);
                    (None, vec![record], Err(error))
                }
                Decision::Fail { detail, error } => {
                    let mut changed = user.clone();
                    changed.failures += 1;
                    let mut records = vec![self.sign_in_record(
                        now,
                        "login-failed",
                        actor.clone(),
                        from,
                        AuditOutcome::Denied,
                        detail,
                    )];
                    let mut error = error;
                    if changed.failures >= self.settings.lockout_failures.max(1) {
                        changed.locked_until =
                            Some(Instant(now.0 + i64::from(self.settings.lockout_minutes) * MICROS_PER_MINUTE));
                        changed.failures = 0;
                        let detail = format!(
                            "account locked for {} minutes after {} failed sign-ins",
                            self.settings.lockout_minutes, self.settings.lockout_failures
                        );
                        records.push(self.sign_in_record(
                            now,
                            "login-failed",
                            actor,
                            from,
                            AuditOutcome::Denied,
                            &detail,
                        ));
                        error = SignInError::Invalid;
                    }
                    (Some(changed), records, Err(error))
                }
                Decision::Succeed { step } => {
                    let mut changed = user.clone();
                    changed.failures = 0;
                    changed.locked_until = None;
                    changed.last_sign_in = Some(now);
                    if step.is_some() {
                        changed.totp_last_step = step;
                    }
                    let detail = if step.is_some() { "password and TOTP code" } else { "password" };
                    let record = self.sign_in_record(now, "login", actor, from, AuditOutcome::Success, detail);
                    let access = self.access_for(&changed, &self.roles).with_from(from.map(str::to_string));
                    (Some(changed.clone()), vec![record], Ok(SignedIn { user: changed, access }))
                }
            };
            let sys = match &updated {
                Some(changed) => vec![SysWrite {
                    kind: KIND.into(),
                    key: user.username.clone(),
                    expected: Some(version),
                    json: Some(changed.to_json()),
                }],
                None => Vec::new(),
            };
            match self.store.commit(Commit { sys, audit: records, ..Commit::default() }).await {
                Ok(()) => return result,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(SignInError::Store(e)),
            }
        }
        Err(SignInError::Store(StoreError::Unavailable("the account kept changing during sign-in".into())))
    }

    fn decide(&self, user: &User, password_ok: bool, code: Option<&str>, now: Instant) -> Decision {
        if user.disabled {
            return Decision::Refuse { detail: "account disabled", error: SignInError::Invalid };
        }
        if user.is_locked(now) {
            return Decision::Refuse { detail: "account locked", error: SignInError::Invalid };
        }
        if !password_ok {
            return Decision::Fail { detail: "wrong password", error: SignInError::Invalid };
        }
        let needs_code = self.roles.mfa_required(&user.role) || user.totp_secret.is_some();
        if !needs_code {
            return Decision::Succeed { step: None };
        }
        let Some(secret) = &user.totp_secret else {
            return Decision::Refuse {
                detail: "password accepted; the role requires a second factor and none is enrolled",
                error: SignInError::MfaNotEnrolled,
            };
        };
        let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
            return Decision::Refuse {
                detail: "password accepted; TOTP code required",
                error: SignInError::MfaRequired,
            };
        };
        let seconds = u64::try_from(now.0 / 1_000_000).unwrap_or(0);
        match totp::verify(secret, code, seconds, user.totp_last_step) {
            Some(step) => Decision::Succeed { step: Some(step) },
            None => Decision::Fail { detail: "wrong or reused TOTP code", error: SignInError::MfaRequired },
        }
    }

    fn sign_in_record(
        &self,
        now: Instant,
        event: &str,
        who: AuditActor,
        from: Option<&str>,
        outcome: AuditOutcome,
        detail: &str,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(now, event, AuditAction::Execute, who);
        record.outcome = outcome;
        record.detail = Some(detail.to_string());
        record.from = from.map(str::to_string);
        record
    }

    fn admin_record(&self, now: Instant, action: AuditAction, by: &AuditActor, detail: String) -> AuditRecord {
        let mut record = AuditRecord::new(now, "privilege-change", action, by.clone());
        record.detail = Some(detail);
        record
    }

    fn check_role(&self, role: &str, patient: Option<&str>) -> Result<(), AdminError> {
        if self.roles.get(role).is_none() {
            return Err(AdminError::UnknownRole(role.to_string()));
        }
        match (role == "patient", patient) {
            (true, None) => Err(AdminError::PatientRequired),
            (true, Some(id)) if !valid_id(id) => Err(AdminError::BadFhirUser(format!("Patient/{id}"))),
            (false, Some(_)) => Err(AdminError::PatientNotAllowed(role.to_string())),
            _ => Ok(()),
        }
    }

    /// Creates an account (audited as a privilege change by `by`).
    pub async fn add(&self, new: NewUser, by: &AuditActor) -> Result<User, AdminError> {
        let username = normalise_username(&new.username);
        if !valid_username(&username) {
            return Err(AdminError::BadUsername(new.username));
        }
        self.check_role(&new.role, new.patient.as_deref())?;
        let fhir_user = match (&new.fhir_user, &new.patient) {
            (Some(reference), _) => Some(reference.clone()),
            (None, Some(patient)) => Some(format!("Patient/{patient}")),
            (None, None) => None,
        };
        if let Some(reference) = &fhir_user
            && !valid_fhir_user(reference)
        {
            return Err(AdminError::BadFhirUser(reference.clone()));
        }
        self.settings.password.check(&username, &new.password)?;
        if self.store.sys_get(KIND, &username).await?.is_some() {
            return Err(AdminError::Exists(username));
        }
        let hash = password::hash_blocking(new.password).await?;
        let now = self.clock.now();
        let user = User {
            username: username.clone(),
            role: new.role.clone(),
            patient: new.patient,
            fhir_user,
            password_hash: hash,
            totp_secret: None,
            totp_last_step: None,
            disabled: false,
            failures: 0,
            locked_until: None,
            break_glass: new.break_glass,
            emergency: None,
            created: now,
            updated: now,
            last_sign_in: None,
        };
        let mut detail = format!("user {username} added with role {}", new.role);
        if new.break_glass {
            detail.push_str(", member of the break-the-glass group");
        }
        let record = self.admin_record(now, AuditAction::Create, by, detail);
        let write = SysWrite { kind: KIND.into(), key: username.clone(), expected: None, json: Some(user.to_json()) };
        match self.store.commit(Commit { sys: vec![write], audit: vec![record], ..Commit::default() }).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict(_)) => Err(AdminError::Exists(username)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads, changes and writes back an account with an audit record of
    /// the change, retrying when it changed meanwhile. `change` returns the
    /// audit detail.
    pub(crate) async fn modify<F>(&self, username: &str, by: &AuditActor, change: F) -> Result<User, AdminError>
    where
        F: Fn(&mut User, Instant) -> Result<String, AdminError>,
    {
        let username = normalise_username(username);
        for _ in 0..RETRIES {
            let Some((user, version)) = self.load(&username).await? else {
                return Err(AdminError::NoSuchUser(username));
            };
            let now = self.clock.now();
            let mut changed = user.clone();
            let detail = change(&mut changed, now)?;
            changed.updated = now;
            let record = self.admin_record(now, AuditAction::Update, by, detail);
            let write = SysWrite {
                kind: KIND.into(),
                key: username.clone(),
                expected: Some(version),
                json: Some(changed.to_json()),
            };
            match self.store.commit(Commit { sys: vec![write], audit: vec![record], ..Commit::default() }).await {
                Ok(()) => return Ok(changed),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AdminError::Busy(username))
    }

    /// Disables or re-enables an account. A disabled account cannot sign in,
    /// and its web sessions stop working at their next check.
    pub async fn set_disabled(&self, username: &str, disabled: bool, by: &AuditActor) -> Result<User, AdminError> {
        self.modify(username, by, |user, _| {
            user.disabled = disabled;
            Ok(format!("user {} {}", user.username, if disabled { "disabled" } else { "enabled" }))
        })
        .await
    }

    /// Removes the enrolled TOTP secret (the user must enrol again; until then
    /// a role that requires MFA cannot sign in).
    pub async fn reset_mfa(&self, username: &str, by: &AuditActor) -> Result<User, AdminError> {
        self.modify(username, by, |user, _| {
            user.totp_secret = None;
            user.totp_last_step = None;
            Ok(format!("second factor of user {} reset", user.username))
        })
        .await
    }

    /// Changes the role (and the linked patient, which role patient needs);
    /// a break-the-glass grant in force ends.
    pub async fn set_role(
        &self,
        username: &str,
        role: &str,
        patient: Option<&str>,
        by: &AuditActor,
    ) -> Result<User, AdminError> {
        self.check_role(role, patient)?;
        self.modify(username, by, |user, _| {
            let detail = format!("role of user {} changed from {} to {role}", user.username, user.role);
            user.role = role.to_string();
            user.patient = patient.map(str::to_string);
            // A grant made under the old role does not carry over.
            user.emergency = None;
            if let Some(patient) = patient {
                user.fhir_user = Some(format!("Patient/{patient}"));
            } else if user.fhir_user.as_deref().is_some_and(|r| r.starts_with("Patient/")) {
                user.fhir_user = None;
            }
            Ok(detail)
        })
        .await
    }

    /// Adds or removes the account from the break-the-glass group (whatever its role).
    pub async fn set_break_glass(&self, username: &str, member: bool, by: &AuditActor) -> Result<User, AdminError> {
        self.modify(username, by, |user, _| {
            user.break_glass = member;
            let verb = if member { "added to" } else { "removed from" };
            Ok(format!("user {} {verb} the break-the-glass group", user.username))
        })
        .await
    }

    /// Enrols a new TOTP secret (replacing any earlier one) and returns what
    /// the authenticator app needs.
    pub async fn enrol_totp(&self, username: &str, by: &AuditActor) -> Result<TotpEnrolment, AdminError> {
        let secret = totp::generate_secret();
        let user = self
            .modify(username, by, |user, _| {
                user.totp_secret = Some(secret.clone());
                user.totp_last_step = None;
                Ok(format!("TOTP second factor enrolled for user {}", user.username))
            })
            .await?;
        let uri = totp::otpauth_uri(&self.settings.totp_issuer, &user.username, &secret);
        Ok(TotpEnrolment { secret, uri })
    }

    /// Lifts a lock and clears the failure counter.
    pub async fn unlock(&self, username: &str, by: &AuditActor) -> Result<User, AdminError> {
        self.modify(username, by, |user, _| {
            user.failures = 0;
            user.locked_until = None;
            Ok(format!("user {} unlocked", user.username))
        })
        .await
    }

    /// Sets a new password (checked against the policy).
    pub async fn set_password(&self, username: &str, new_password: &str, by: &AuditActor) -> Result<User, AdminError> {
        let username = normalise_username(username);
        self.settings.password.check(&username, new_password)?;
        let hash = password::hash_blocking(new_password.to_string()).await?;
        self.modify(&username, by, |user, _| {
            user.password_hash = hash.clone();
            user.failures = 0;
            user.locked_until = None;
            Ok(format!("password of user {} changed", user.username))
        })
        .await
    }
}

/// What one sign-in attempt comes to, before it is written.
enum Decision {
    /// Refused without counting a failure (disabled, locked, second factor still needed).
    Refuse { detail: &'static str, error: SignInError },
    /// A failure that counts towards the lock.
    Fail { detail: &'static str, error: SignInError },
    /// Signed in; `step` is the TOTP step used, if any.
    Succeed { step: Option<u64> },
}

/// Serde for [`Instant`] as FHIR instant text.
pub(crate) mod instant_text {
    use fhir::instant::Instant;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(at: &Instant, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_fhir())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let text = String::deserialize(d)?;
        Instant::parse(&text).ok_or_else(|| serde::de::Error::custom("not a FHIR instant"))
    }
}

/// Serde for `Option<Instant>` as FHIR instant text.
pub(crate) mod opt_instant_text {
    use fhir::instant::Instant;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(at: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_str(&at.to_fhir()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => Instant::parse(&text).map(Some).ok_or_else(|| serde::de::Error::custom("not a FHIR instant")),
            None => Ok(None),
        }
    }
}
