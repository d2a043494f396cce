//! Break-the-glass: emergency access to restricted records (45 CFR
//! 170.315(d)(6)). A member of the group (by role, or by the account's own
//! flag) gives a reason and receives a grant for a limited time; the grant
//! is kept in the user's record (so [`crate::users::Users::access_for`] sees it
//! without another read), audited, and announced to the privacy officer, all
//! in one commit. Everyone else is refused, and the refusal is audited.

use crate::users::{KIND, User, Users, instant_text, normalise_username};
use domain::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
use domain::store::{Commit, StoreError, SysWrite};
use fhir::instant::Instant;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The system-record kind of notifications.
pub const NOTIFICATION_KIND: &str = "notification";
/// Who break-the-glass notifications are addressed to.
pub const PRIVACY_OFFICER: &str = "privacy-officer";
/// Default length of a grant.
pub const DEFAULT_MINUTES: u32 = 60;

const RETRIES: usize = 8;

/// A break-the-glass grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyGrant {
    pub reason: String,
    #[serde(with = "instant_text")]
    pub at: Instant,
    /// The grant no longer counts from this instant.
    #[serde(with = "instant_text")]
    pub until: Instant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A message for a role (the privacy officer), kept as a system record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Addressed to this role.
    pub to: String,
    /// What happened (`break-glass`).
    pub event: String,
    pub username: String,
    pub role: String,
    pub reason: String,
    #[serde(with = "instant_text")]
    pub at: Instant,
    #[serde(with = "instant_text")]
    pub until: Instant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// Why break-the-glass was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BreakGlassError {
    #[error("break-the-glass needs a reason")]
    ReasonRequired,
    #[error("you are not in the break-the-glass group")]
    NotInGroup,
    #[error("the account changed while break-the-glass was being recorded; try again")]
    Busy,
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Users {
    /// Whether the account may break the glass (its role is in the group, or
    /// the account itself is), and is enabled.
    pub fn may_break_glass(&self, user: &User) -> bool {
        !user.disabled && (user.break_glass || self.roles().in_break_glass_group(&user.role))
    }

    /// Breaks the glass for `username` with `reason`: a grant for the
    /// configured minutes, an audit record and a notification to the
    /// privacy officer in one commit. A refusal is audited too.
    pub async fn break_glass(
        &self,
        username: &str,
        reason: &str,
        from: Option<&str>,
    ) -> Result<EmergencyGrant, BreakGlassError> {
        let username = normalise_username(username);
        let reason = reason.trim();
        for _ in 0..RETRIES {
            let now = self.now();
            let loaded = self.load(&username).await?;
            let role = loaded.as_ref().map(|(u, _)| u.role.clone());
            let actor = AuditActor { kind: "user".into(), id: username.clone(), role, client: None };
            let mut record = AuditRecord::new(now, "break-glass", AuditAction::Execute, actor);
            record.from = from.map(str::to_string);
            record.emergency = true;
            let refusal = match &loaded {
                _ if reason.is_empty() => {
                    Some((AuditOutcome::Refused, "no reason given".to_string(), BreakGlassError::ReasonRequired))
                }
                Some((user, _)) if self.may_break_glass(user) => None,
                _ => Some((
                    AuditOutcome::Denied,
                    format!("not in the break-the-glass group: {reason}"),
                    BreakGlassError::NotInGroup,
                )),
            };
            if let Some((outcome, detail, error)) = refusal {
                record.outcome = outcome;
                record.detail = Some(detail);
                self.store().commit(Commit { audit: vec![record], ..Commit::default() }).await?;
                return Err(error);
            }
            let Some((user, version)) = loaded else {
                return Err(BreakGlassError::NotInGroup);
            };
            let minutes = self.settings().break_glass_minutes;
            let grant = EmergencyGrant {
                reason: reason.to_string(),
                at: now,
                until: Instant(now.0 + i64::from(minutes) * 60_000_000),
                from: from.map(str::to_string),
            };
            let mut changed = user.clone();
            changed.emergency = Some(grant.clone());
            let notification = Notification {
                to: PRIVACY_OFFICER.into(),
                event: "break-glass".into(),
                username: user.username.clone(),
                role: user.role.clone(),
                reason: grant.reason.clone(),
                at: now,
                until: grant.until,
                from: grant.from.clone(),
            };
            record.detail = Some(grant.reason.clone());
            let mut suffix = [0u8; 4];
            rand::rng().fill_bytes(&mut suffix);
            let key = format!("{:020}-{:08x}", now.0.max(0), u32::from_be_bytes(suffix));
            let json =
                serde_json::to_string(&notification).map_err(|e| StoreError::Internal(format!("notification: {e}")))?;
            let commit = Commit {
                sys: vec![
                    SysWrite {
                        kind: KIND.into(),
                        key: user.username.clone(),
                        expected: Some(version),
                        json: Some(changed.to_json()),
                    },
                    SysWrite { kind: NOTIFICATION_KIND.into(), key, expected: None, json: Some(Arc::from(json)) },
                ],
                audit: vec![record],
                ..Commit::default()
            };
            match self.store().commit(commit).await {
                Ok(()) => return Ok(grant),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BreakGlassError::Busy)
    }

    /// Every notification, newest first.
    pub async fn notifications(&self) -> Result<Vec<Notification>, StoreError> {
        let mut out = Vec::new();
        for record in self.store().sys_list(NOTIFICATION_KIND).await?.iter().rev() {
            let notification: Notification = serde_json::from_str(&record.json)
                .map_err(|e| StoreError::Internal(format!("notification {:?} is unreadable: {e}", record.key)))?;
            out.push(notification);
        }
        Ok(out)
    }
}
