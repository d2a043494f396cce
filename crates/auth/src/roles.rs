//! Roles: the built-in permission tables of [`domain::access::builtin_role`]
//! plus custom roles from configuration, with the per-role settings that
//! sign-in and break-the-glass consult (second factor required, member of
//! the break-the-glass group).

use domain::access::{BUILTIN_ROLES, Policy, builtin_role};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Role settings as configuration gives them (`[security]` in hearth.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSettings {
    /// Custom roles: name to (resource type or `*`, SMART letters) rows.
    pub custom: BTreeMap<String, Vec<(String, String)>>,
    /// Roles whose users must give a TOTP code at sign-in.
    pub mfa_roles: Vec<String>,
    /// Roles whose users may break the glass.
    pub break_glass_roles: Vec<String>,
}

impl Default for RoleSettings {
    fn default() -> RoleSettings {
        RoleSettings {
            custom: BTreeMap::new(),
            mfa_roles: vec!["admin".into()],
            break_glass_roles: vec!["physician".into(), "nurse".into()],
        }
    }
}

/// One role and its settings.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub policy: Arc<Policy>,
    pub builtin: bool,
    pub mfa_required: bool,
    pub break_glass: bool,
}

/// A configuration of roles that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("custom role {0:?} has the name of a built-in role")]
    Builtin(String),
    #[error("custom role name {0:?} must be lower-case letters, digits and '-'")]
    BadName(String),
    #[error("{0}")]
    BadTable(String),
    #[error("{setting} names role {role:?}, which is neither built in nor configured")]
    Unknown { setting: &'static str, role: String },
}

/// Every role in force, built-in ones first in their documented order, then custom ones by name.
#[derive(Debug, Clone)]
pub struct Roles {
    roles: Vec<Role>,
}

impl Default for Roles {
    fn default() -> Roles {
        Roles::builtin()
    }
}

impl Roles {
    /// The built-in roles with the default settings (MFA for admin; physician and nurse may break the glass).
    pub fn builtin() -> Roles {
        // The defaults name only built-in roles, so this cannot fail; fall back to no settings if it ever did.
        Roles::from_settings(&RoleSettings::default()).unwrap_or_else(|_| Roles {
            roles: BUILTIN_ROLES
                .iter()
                .filter_map(|name| builtin_role(name))
                .map(|policy| Role {
                    name: policy.name.clone(),
                    policy: Arc::new(policy),
                    builtin: true,
                    mfa_required: false,
                    break_glass: false,
                })
                .collect(),
        })
    }

    pub fn from_settings(settings: &RoleSettings) -> Result<Roles, RoleError> {
        let mut roles = Vec::new();
        for name in BUILTIN_ROLES {
            if let Some(policy) = builtin_role(name) {
                roles.push(Role {
                    name: (*name).to_string(),
                    policy: Arc::new(policy),
                    builtin: true,
                    mfa_required: false,
                    break_glass: false,
                });
            }
        }
        for (name, table) in &settings.custom {
            if BUILTIN_ROLES.contains(&name.as_str()) {
                return Err(RoleError::Builtin(name.clone()));
            }
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err(RoleError::BadName(name.clone()));
            }
            let policy = Policy::from_table(name, table).map_err(RoleError::BadTable)?;
            roles.push(Role {
                name: name.clone(),
                policy: Arc::new(policy),
                builtin: false,
                mfa_required: false,
                break_glass: false,
            });
        }
        for role in &settings.mfa_roles {
            let found = roles.iter_mut().find(|r| &r.name == role);
            let found =
                found.ok_or_else(|| RoleError::Unknown { setting: "security.mfa_roles", role: role.clone() })?;
            found.mfa_required = true;
        }
        for role in &settings.break_glass_roles {
            let found = roles.iter_mut().find(|r| &r.name == role);
            let found = found
                .ok_or_else(|| RoleError::Unknown { setting: "security.break_glass_roles", role: role.clone() })?;
            found.break_glass = true;
        }
        Ok(Roles { roles })
    }

    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// The permission table of a role, shared.
    pub fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.get(name).map(|r| r.policy.clone())
    }

    /// Whether users of the role must give a TOTP code (false for an unknown role).
    pub fn mfa_required(&self, name: &str) -> bool {
        self.get(name).is_some_and(|r| r.mfa_required)
    }

    /// Whether the role belongs to the break-the-glass group.
    pub fn in_break_glass_group(&self, name: &str) -> bool {
        self.get(name).is_some_and(|r| r.break_glass)
    }

    /// Every role, in display order.
    pub fn list(&self) -> &[Role] {
        &self.roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::access::Perms;

    #[test]
    fn builtin_roles_and_default_settings() {
        let roles = Roles::builtin();
        let names: Vec<&str> = roles.list().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, BUILTIN_ROLES);
        assert!(roles.mfa_required("admin"));
        assert!(!roles.mfa_required("nurse"));
        assert!(roles.in_break_glass_group("physician") && roles.in_break_glass_group("nurse"));
        assert!(!roles.in_break_glass_group("biller"));
        let nurse = roles.policy("nurse").expect("nurse");
        assert!(nurse.decide(Perms::UPDATE, "Observation").is_allowed());
        assert!(roles.policy("nobody").is_none());
    }

    #[test]
    fn custom_roles_from_configuration() {
        let mut settings = RoleSettings::default();
        settings
            .custom
            .insert("scheduler".into(), vec![("Appointment".into(), "crus".into()), ("Patient".into(), "rs".into())]);
        settings.mfa_roles.push("scheduler".into());
        let roles = Roles::from_settings(&settings).expect("valid");
        let scheduler = roles.get("scheduler").expect("custom role");
        assert!(!scheduler.builtin && scheduler.mfa_required && !scheduler.break_glass);
        assert!(scheduler.policy.decide(Perms::CREATE, "Appointment").is_allowed());
        assert!(!scheduler.policy.decide(Perms::CREATE, "Patient").is_allowed());
        assert_eq!(roles.list().last().map(|r| r.name.as_str()), Some("scheduler"));
    }

    #[test]
    fn bad_configurations_name_the_problem() {
        let mut settings = RoleSettings::default();
        settings.custom.insert("nurse".into(), vec![]);
        assert_eq!(Roles::from_settings(&settings).err(), Some(RoleError::Builtin("nurse".into())));
        let mut settings = RoleSettings::default();
        settings.custom.insert("x".into(), vec![("Observaton".into(), "rs".into())]);
        let err = Roles::from_settings(&settings).expect_err("bad type");
        assert!(err.to_string().contains("Observaton"), "{err}");
        let mut settings = RoleSettings::default();
        settings.custom.insert("x".into(), vec![("Observation".into(), "sr".into())]);
        assert!(Roles::from_settings(&settings).is_err());
        let settings = RoleSettings { mfa_roles: vec!["chief".into()], ..RoleSettings::default() };
        let err = Roles::from_settings(&settings).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "security.mfa_roles names role \"chief\", which is neither built in nor configured"
        );
        let mut settings = RoleSettings::default();
        settings.custom.insert("Bad Name".into(), vec![]);
        assert_eq!(Roles::from_settings(&settings).err(), Some(RoleError::BadName("Bad Name".into())));
    }
}
