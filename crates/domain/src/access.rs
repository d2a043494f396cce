//! Who may do what: the access model the Service enforces on every
//! interaction (45 CFR 170.315(d)(1)), deny by default.
//!
//! An [`Access`] is one authenticated actor (a user, an app acting for a
//! user, a backend client, or a named part of Hearth itself) with the
//! [`Policy`] layers that bound it. Every layer must allow an interaction:
//! a user's role is one layer; an OAuth token's scopes are another, so an
//! app never does more than both its scopes and its user's role allow.
//!
//! A policy is a list of [`Grant`]s: resource types, SMART interaction
//! letters (`c r u d s`), and optionally a granular filter (a SMART v2
//! scope's query, `patient/Observation.rs?category=laboratory`): the
//! resource must also match those search parameters.
//!
//! Beyond the layers: a patient restriction (a patient user, or an app
//! launched with `patient/` scopes) limits every access to that patient's
//! compartment plus shared reference data; resources labelled restricted
//! (`meta.security` R or V) need break-the-glass ([`Access::emergency`]);
//! the audit trail (AuditEvent) is never written through the API.

use crate::audit::AuditActor;
use std::sync::Arc;

/// SMART interaction letters, as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Perms(u8);

impl Perms {
    pub const NONE: Perms = Perms(0);
    pub const CREATE: Perms = Perms(1);
    pub const READ: Perms = Perms(2);
    pub const UPDATE: Perms = Perms(4);
    pub const DELETE: Perms = Perms(8);
    pub const SEARCH: Perms = Perms(16);
    pub const ALL: Perms = Perms(31);

    /// Parses SMART v2 letters in order (`cruds`, `rs`, `cud`) or a v1
    /// access mode (`read` = rs, `write` = cud, `*` = cruds).
    pub fn parse(text: &str) -> Option<Perms> {
        match text {
            "read" => return Some(Perms(Perms::READ.0 | Perms::SEARCH.0)),
            "write" => return Some(Perms(Perms::CREATE.0 | Perms::UPDATE.0 | Perms::DELETE.0)),
            "*" => return Some(Perms::ALL),
            _ => {}
        }
        if text.is_empty() {
            return None;
        }
        let mut bits = 0u8;
        let mut last = 0usize;
        for c in text.chars() {
            let (position, bit) = match c {
                'c' => (1, Perms::CREATE.0),
                'r' => (2, Perms::READ.0),
                'u' => (3, Perms::UPDATE.0),
                'd' => (4, Perms::DELETE.0),
                's' => (5, Perms::SEARCH.0),
                _ => return None,
            };
            // SMART v2 requires the letters in this order, each at most once.
            if position <= last {
                return None;
            }
            last = position;
            bits |= bit;
        }
        Some(Perms(bits))
    }

    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }

    pub fn letters(self) -> String {
        [(Perms::CREATE, 'c'), (Perms::READ, 'r'), (Perms::UPDATE, 'u'), (Perms::DELETE, 'd'), (Perms::SEARCH, 's')]
            .iter()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, c)| *c)
            .collect()
    }
}

/// The resource types a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeSet {
    /// Every type except AuditEvent (the trail is only ever granted by name).
    All,
    Only(Vec<String>),
    /// Every type except these (and AuditEvent).
    AllExcept(Vec<String>),
}

impl TypeSet {
    pub fn contains(&self, resource_type: &str) -> bool {
        match self {
            TypeSet::All => resource_type != "AuditEvent",
            TypeSet::Only(types) => types.iter().any(|t| t == resource_type),
            TypeSet::AllExcept(types) => resource_type != "AuditEvent" && !types.iter().any(|t| t == resource_type),
        }
    }

    fn only(types: &[&str]) -> TypeSet {
        TypeSet::Only(types.iter().map(|t| (*t).to_string()).collect())
    }

    fn all_except(types: &[&[&str]]) -> TypeSet {
        TypeSet::AllExcept(types.iter().flat_map(|l| l.iter()).map(|t| (*t).to_string()).collect())
    }
}

/// Some interactions on some types, possibly only on resources matching a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub types: TypeSet,
    pub perms: Perms,
    /// Search parameters (name, value) the resource must also match; empty: any resource.
    pub filter: Vec<(String, String)>,
}

/// A named list of grants: a role's permission table, or a token's scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub grants: Vec<Grant>,
}

/// What one policy (or a whole [`Access`]) decides for an interaction on a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Denied,
    /// Allowed; each inner list is one layer's alternatives (OR), and the
    /// resource must satisfy every layer (AND). Empty: any resource.
    Allowed(Vec<Vec<Vec<(String, String)>>>),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }

    /// Allowed on every resource of the type, with no filter.
    pub fn is_unrestricted(&self) -> bool {
        matches!(self, Decision::Allowed(layers) if layers.is_empty())
    }
}

impl Policy {
    /// Everything (the system actor's policy).
    pub fn everything() -> Policy {
        Policy {
            name: "system".into(),
            grants: vec![
                Grant { types: TypeSet::All, perms: Perms::ALL, filter: Vec::new() },
                Grant { types: TypeSet::only(&["AuditEvent"]), perms: Perms(Perms::READ.0 | Perms::SEARCH.0), filter: Vec::new() },
            ],
        }
    }

    /// A permission table as configuration writes it: resource type (or
    /// `*` for every type but AuditEvent) to SMART letters.
    pub fn from_table(name: &str, table: &[(String, String)]) -> Result<Policy, String> {
        let mut grants = Vec::new();
        for (resource_type, letters) in table {
            let perms = Perms::parse(letters)
                .ok_or_else(|| format!("role {name}: {letters:?} for {resource_type} is not SMART letters (c r u d s, in that order)"))?;
            let types = if resource_type == "*" {
                TypeSet::All
            } else if fhir::definitions::is_resource_type(resource_type) {
                TypeSet::Only(vec![resource_type.clone()])
            } else {
                return Err(format!("role {name}: {resource_type:?} is not an R4 resource type"));
            };
            grants.push(Grant { types, perms, filter: Vec::new() });
        }
        Ok(Policy { name: name.to_string(), grants })
    }

    /// Whether this policy allows `perm` (one letter) on `resource_type`, and on which resources.
    pub fn decide(&self, perm: Perms, resource_type: &str) -> Decision {
        let mut alternatives: Vec<Vec<(String, String)>> = Vec::new();
        for grant in &self.grants {
            if grant.perms.contains(perm) && grant.types.contains(resource_type) {
                if grant.filter.is_empty() {
                    return Decision::Allowed(Vec::new());
                }
                alternatives.push(grant.filter.clone());
            }
        }
        if alternatives.is_empty() { Decision::Denied } else { Decision::Allowed(vec![alternatives]) }
    }

    /// The (type, letters) rows of the table, for `hearth admin role list`.
    pub fn rows(&self) -> Vec<(String, String)> {
        self.grants
            .iter()
            .map(|g| {
                let types = match &g.types {
                    TypeSet::All => "*".to_string(),
                    TypeSet::Only(t) => t.join(","),
                    TypeSet::AllExcept(t) => format!("* except {}", t.join(",")),
                };
                let mut letters = g.perms.letters();
                if !g.filter.is_empty() {
                    let query: Vec<String> = g.filter.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    letters = format!("{letters}?{}", query.join("&"));
                }
                (types, letters)
            })
            .collect()
    }
}

/// Definitional resources: readable by every clinical role, written by admins.
pub const CONFORMANCE_TYPES: &[&str] = &[
    "CapabilityStatement",
    "CodeSystem",
    "CompartmentDefinition",
    "ConceptMap",
    "GraphDefinition",
    "ImplementationGuide",
    "MessageDefinition",
    "NamingSystem",
    "OperationDefinition",
    "SearchParameter",
    "StructureDefinition",
    "StructureMap",
    "TerminologyCapabilities",
    "ValueSet",
];

/// Who works where: the directory of the organisation.
pub const DIRECTORY_TYPES: &[&str] =
    &["Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService", "Endpoint"];

/// Money: coverage, claims, payments.
pub const FINANCIAL_TYPES: &[&str] = &[
    "Account",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "ExplanationOfBenefit",
    "Invoice",
    "PaymentNotice",
    "PaymentReconciliation",
];

/// Types that hold no one patient's data and that a patient-restricted
/// access may read (the practitioners, places and drugs its record refers to).
pub const SHARED_REFERENCE_TYPES: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "HealthcareService",
    "Endpoint",
    "Medication",
    "Substance",
    "CodeSystem",
    "ValueSet",
    "ConceptMap",
    "SearchParameter",
    "StructureDefinition",
    "Questionnaire",
];

/// The built-in roles, in the order `hearth admin role list` shows them.
pub const BUILTIN_ROLES: &[&str] = &["physician", "nurse", "front-desk", "biller", "lab", "admin", "auditor", "patient"];

fn grant(types: TypeSet, letters: &str) -> Grant {
    Grant { types, perms: Perms::parse(letters).unwrap_or(Perms::NONE), filter: Vec::new() }
}

/// A built-in role's permission table.
pub fn builtin_role(name: &str) -> Option<Policy> {
    let grants = match name {
        "physician" => vec![
            grant(TypeSet::all_except(&[CONFORMANCE_TYPES]), "cruds"),
            grant(TypeSet::only(CONFORMANCE_TYPES), "rs"),
        ],
        "nurse" => vec![
            grant(TypeSet::all_except(&[CONFORMANCE_TYPES, FINANCIAL_TYPES]), "crus"),
            grant(TypeSet::only(CONFORMANCE_TYPES), "rs"),
        ],
        "front-desk" => vec![
            grant(
                TypeSet::only(&[
                    "Patient",
                    "RelatedPerson",
                    "Person",
                    "Appointment",
                    "AppointmentResponse",
                    "Schedule",
                    "Slot",
                    "Coverage",
                    "Encounter",
                    "Communication",
                ]),
                "crus",
            ),
            grant(TypeSet::only(DIRECTORY_TYPES), "rs"),
        ],
        "biller" => vec![
            grant(TypeSet::only(FINANCIAL_TYPES), "crus"),
            grant(
                TypeSet::only(&[
                    "Patient",
                    "RelatedPerson",
                    "Encounter",
                    "Condition",
                    "Procedure",
                    "ServiceRequest",
                    "Organization",
                    "Practitioner",
                    "PractitionerRole",
                    "Location",
                ]),
                "rs",
            ),
        ],
        "lab" => vec![
            grant(TypeSet::only(&["Observation", "DiagnosticReport", "Specimen", "Media"]), "crus"),
            grant(TypeSet::only(&["ServiceRequest", "Task"]), "rus"),
            grant(TypeSet::only(&["Patient", "Encounter", "Device"]), "rs"),
            grant(TypeSet::only(DIRECTORY_TYPES), "rs"),
            grant(TypeSet::only(CONFORMANCE_TYPES), "rs"),
        ],
        "admin" => vec![
            grant(TypeSet::only(DIRECTORY_TYPES), "cruds"),
            grant(TypeSet::only(CONFORMANCE_TYPES), "cruds"),
        ],
        "auditor" => vec![grant(TypeSet::only(&["AuditEvent"]), "rs")],
        // Restricted to the patient's own compartment by Access::patient;
        // the AuditEvent grant shows who accessed their record.
        "patient" => vec![grant(TypeSet::All, "rs"), grant(TypeSet::only(&["AuditEvent"]), "rs")],
        _ => return None,
    };
    Some(Policy { name: name.to_string(), grants })
}

/// Break-the-glass in effect for an access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emergency {
    /// The reason the user gave.
    pub reason: String,
}

/// One authenticated actor and what bounds it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Access {
    pub actor: AuditActor,
    /// The network address of the request.
    pub from: Option<String>,
    /// Every layer must allow (role table, token scopes).
    pub layers: Vec<Arc<Policy>>,
    /// Restricts every access to this patient's compartment (Patient id).
    pub patient: Option<String>,
    /// Break-the-glass in effect: restricted records may be opened.
    pub emergency: Option<Emergency>,
    /// May run system operations (`$reindex`) and change configuration resources.
    pub administer: bool,
}

impl Access {
    /// A named part of Hearth acting for itself (import, migration, demo
    /// data, benchmarks): every interaction is allowed and still audited
    /// under this name.
    pub fn system(component: &str) -> Access {
        Access {
            actor: AuditActor { kind: "system".into(), id: component.to_string(), role: None, client: None },
            from: None,
            layers: vec![Arc::new(Policy::everything())],
            patient: None,
            emergency: Some(Emergency { reason: format!("system component {component}") }),
            administer: true,
        }
    }

    /// A user acting in a role (no app in between).
    pub fn user(username: &str, role: Arc<Policy>) -> Access {
        let administer = role.name == "admin";
        Access {
            actor: AuditActor { kind: "user".into(), id: username.to_string(), role: Some(role.name.clone()), client: None },
            from: None,
            layers: vec![role],
            patient: None,
            emergency: None,
            administer,
        }
    }

    /// The decision of every layer together, plus the patient restriction's
    /// limit on types.
    pub fn decide(&self, perm: Perms, resource_type: &str) -> Decision {
        if self.layers.is_empty() {
            return Decision::Denied;
        }
        if self.patient.is_some() && !patient_may_reach(resource_type) {
            return Decision::Denied;
        }
        let mut all = Vec::new();
        for layer in &self.layers {
            match layer.decide(perm, resource_type) {
                Decision::Denied => return Decision::Denied,
                Decision::Allowed(layers) => all.extend(layers),
            }
        }
        Decision::Allowed(all)
    }

    /// Whether `perm` is allowed on at least some resources of the type.
    pub fn allows(&self, perm: Perms, resource_type: &str) -> bool {
        self.decide(perm, resource_type).is_allowed()
    }

    pub fn with_from(mut self, from: Option<String>) -> Access {
        self.from = from;
        self
    }
}

/// Types a patient-restricted access can reach at all: the Patient
/// compartment's types (filtered to the patient), Patient itself (only
/// theirs), shared reference data, and the audit of their own record.
pub fn patient_may_reach(resource_type: &str) -> bool {
    resource_type == "Patient"
        || resource_type == "AuditEvent"
        || SHARED_REFERENCE_TYPES.contains(&resource_type)
        || fhir::compartments::params("Patient", resource_type).is_some()
}

/// True when a resource carries a restricted confidentiality label
/// (`meta.security` R or V of v3 Confidentiality): opening it needs break-the-glass.
pub fn is_restricted(resource: &serde_json::Value) -> bool {
    resource
        .pointer("/meta/security")
        .and_then(|v| v.as_array())
        .is_some_and(|labels| {
            labels.iter().any(|label| {
                label.get("system").and_then(|s| s.as_str())
                    == Some("http://terminology.hl7.org/CodeSystem/v3-Confidentiality")
                    && matches!(label.get("code").and_then(|c| c.as_str()), Some("R" | "V"))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_parse_in_smart_order_only() {
        assert_eq!(Perms::parse("rs"), Some(Perms(Perms::READ.0 | Perms::SEARCH.0)));
        assert_eq!(Perms::parse("cruds"), Some(Perms::ALL));
        assert_eq!(Perms::parse("sr"), None);
        assert_eq!(Perms::parse("rr"), None);
        assert_eq!(Perms::parse("x"), None);
        assert_eq!(Perms::parse("read"), Perms::parse("rs"));
        assert_eq!(Perms::parse("write"), Perms::parse("cud"));
    }

    #[test]
    fn layers_intersect() {
        let role = Arc::new(builtin_role("nurse").expect("nurse"));
        let mut access = Access::user("n", role);
        assert!(access.allows(Perms::UPDATE, "Observation"));
        assert!(!access.allows(Perms::DELETE, "Observation"));
        assert!(!access.allows(Perms::READ, "AuditEvent"));
        access.layers.push(Arc::new(Policy {
            name: "scopes".into(),
            grants: vec![Grant {
                types: TypeSet::Only(vec!["Observation".into()]),
                perms: Perms::parse("rs").expect("rs"),
                filter: vec![("category".into(), "laboratory".into())],
            }],
        }));
        assert!(!access.allows(Perms::UPDATE, "Observation"));
        assert_eq!(
            access.decide(Perms::READ, "Observation"),
            Decision::Allowed(vec![vec![vec![("category".into(), "laboratory".into())]]])
        );
        assert!(!access.allows(Perms::READ, "Condition"));
    }

    #[test]
    fn the_audit_trail_is_granted_only_by_name() {
        for role in BUILTIN_ROLES {
            let policy = builtin_role(role).expect("built-in");
            let reads_audit = policy.decide(Perms::READ, "AuditEvent").is_allowed();
            assert_eq!(reads_audit, *role == "auditor" || *role == "patient", "{role}");
            assert!(!policy.decide(Perms::UPDATE, "AuditEvent").is_allowed(), "{role}");
        }
    }

    #[test]
    fn restricted_labels() {
        let labelled = serde_json::json!({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}});
        assert!(is_restricted(&labelled));
        assert!(!is_restricted(&serde_json::json!({"meta": {}})));
    }
}
