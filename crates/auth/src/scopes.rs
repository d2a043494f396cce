//! SMART App Launch scopes, v1 (`patient/Observation.read`, `user/*.*`,
//! `system/*.read`) and v2 (`patient/Observation.rs`, `user/*.cruds`,
//! granular `patient/Observation.rs?category=...|laboratory`), plus the
//! launch and identity scopes (`openid fhirUser profile launch
//! launch/patient launch/encounter offline_access online_access`).
//!
//! A token's resource scopes become one [`Policy`] layer of its
//! [`domain::access::Access`]: its user's role is another, so an app never
//! does more than both allow.

use domain::access::{Grant, Perms, Policy, TypeSet};
use std::fmt;

/// Whose data a resource scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// The patient in context (launch or picker).
    Patient,
    /// Whatever the signed-in user may reach.
    User,
    /// A backend client acting for itself.
    System,
}

impl Context {
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// `context/Type.perms[?filter]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub context: Context,
    /// `None`: every type (`*`).
    pub resource_type: Option<String>,
    pub perms: Perms,
    /// Granular (v2) search parameters the resources must match.
    pub filter: Vec<(String, String)>,
    /// Written in v1 syntax (`read`, `write`, `*`).
    pub v1: bool,
}

/// One scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Resource(ResourceScope),
    OpenId,
    FhirUser,
    Profile,
    /// EHR launch: the `launch` parameter names a context.
    Launch,
    /// Standalone launch: ask for a patient to be selected.
    LaunchPatient,
    LaunchEncounter,
    OfflineAccess,
    OnlineAccess,
}

/// A scope that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {scope:?}: {reason}")]
pub struct ScopeError {
    pub scope: String,
    pub reason: String,
}

fn invalid(scope: &str, reason: impl Into<String>) -> ScopeError {
    ScopeError { scope: scope.to_string(), reason: reason.into() }
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        Ok(match text {
            "openid" => Scope::OpenId,
            "fhirUser" => Scope::FhirUser,
            "profile" => Scope::Profile,
            "launch" => Scope::Launch,
            "launch/patient" => Scope::LaunchPatient,
            "launch/encounter" => Scope::LaunchEncounter,
            "offline_access" => Scope::OfflineAccess,
            "online_access" => Scope::OnlineAccess,
            _ => Scope::Resource(parse_resource(text)?),
        })
    }

    pub fn as_resource(&self) -> Option<&ResourceScope> {
        match self {
            Scope::Resource(r) => Some(r),
            _ => None,
        }
    }
}

fn parse_resource(text: &str) -> Result<ResourceScope, ScopeError> {
    let (context, rest) = text.split_once('/').ok_or_else(|| invalid(text, "not a known scope"))?;
    let context = match context {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        "launch" => return Err(invalid(text, "the launch scopes are launch, launch/patient and launch/encounter")),
        _ => return Err(invalid(text, "a resource scope starts with patient/, user/ or system/")),
    };
    let (body, query) = match rest.split_once('?') {
        Some((body, query)) => (body, Some(query)),
        None => (rest, None),
    };
    let (resource_type, letters) =
        body.rsplit_once('.').ok_or_else(|| invalid(text, "expected Type.permissions, such as Observation.rs"))?;
    let resource_type = match resource_type {
        "*" => None,
        t if fhir::definitions::is_resource_type(t) => Some(t.to_string()),
        _ => return Err(invalid(text, format!("{resource_type:?} is not an R4 resource type"))),
    };
    let (perms, v1) = match letters {
        "read" => (Perms::parse("rs"), true),
        "write" => (Perms::parse("cud"), true),
        "*" => (Some(Perms::ALL), true),
        _ => (Perms::parse(letters), false),
    };
    let perms = perms.ok_or_else(|| invalid(text, "permissions are read, write, * or SMART v2 letters c r u d s in that order"))?;
    let mut filter = Vec::new();
    if let Some(query) = query {
        if v1 {
            return Err(invalid(text, "granular (?parameter) scopes need SMART v2 letters"));
        }
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name.is_empty() || value.is_empty() {
                return Err(invalid(text, "a granular scope's query is name=value pairs"));
            }
            filter.push((name.into_owned(), value.into_owned()));
        }
        if filter.is_empty() {
            return Err(invalid(text, "empty granular query"));
        }
    }
    Ok(ResourceScope { context, resource_type, perms, filter, v1 })
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource_type = self.resource_type.as_deref().unwrap_or("*");
        let letters = if self.v1 && self.filter.is_empty() {
            match self.perms.letters().as_str() {
                "rs" => "read".to_string(),
                "cud" => "write".to_string(),
                "cruds" => "*".to_string(),
                other => other.to_string(),
            }
        } else {
            self.perms.letters()
        };
        write!(f, "{}/{resource_type}.{letters}", self.context.as_str())?;
        if !self.filter.is_empty() {
            let query: Vec<String> = self.filter.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Resource(r) => r.fmt(f),
            Scope::OpenId => f.write_str("openid"),
            Scope::FhirUser => f.write_str("fhirUser"),
            Scope::Profile => f.write_str("profile"),
            Scope::Launch => f.write_str("launch"),
            Scope::LaunchPatient => f.write_str("launch/patient"),
            Scope::LaunchEncounter => f.write_str("launch/encounter"),
            Scope::OfflineAccess => f.write_str("offline_access"),
            Scope::OnlineAccess => f.write_str("online_access"),
        }
    }
}

/// The grant being asked for, which decides the contexts a scope may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Authorization code: a user is present; `patient/` and `user/` scopes.
    User,
    /// Client credentials (SMART Backend Services): `system/` scopes only.
    Backend,
}

/// A set of scopes, in the order first written, without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    /// Parses a space-separated scope list; any invalid scope fails the whole list.
    pub fn parse(text: &str) -> Result<Scopes, ScopeError> {
        let mut out: Vec<Scope> = Vec::new();
        for word in text.split([' ', '\t', '\n', '\r']).filter(|w| !w.is_empty()) {
            let scope = Scope::parse(word)?;
            if !out.contains(&scope) {
                out.push(scope);
            }
        }
        Ok(Scopes(out))
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn resources(&self) -> impl Iterator<Item = &ResourceScope> {
        self.0.iter().filter_map(Scope::as_resource)
    }

    pub fn has_context(&self, context: Context) -> bool {
        self.resources().any(|r| r.context == context)
    }

    /// The scopes granted for a request: each requested scope narrowed to
    /// what the client's registered scopes allow (types, letters and
    /// filters intersected), and to the contexts of the flow. Scopes the
    /// client may not have are left out; nothing left is an error.
    pub fn grant(requested: &Scopes, allowed: &Scopes, flow: Flow) -> Result<Scopes, ScopeError> {
        let mut out: Vec<Scope> = Vec::new();
        for scope in &requested.0 {
            match scope {
                Scope::Resource(wanted) => {
                    let context_ok = match flow {
                        Flow::User => wanted.context != Context::System,
                        Flow::Backend => wanted.context == Context::System,
                    };
                    if !context_ok {
                        continue;
                    }
                    for permitted in allowed.resources() {
                        if let Some(both) = intersect(wanted, permitted) {
                            let both = Scope::Resource(both);
                            if !out.contains(&both) {
                                out.push(both);
                            }
                        }
                    }
                }
                other => {
                    if flow == Flow::User && allowed.contains(other) && !out.contains(other) {
                        out.push(other.clone());
                    }
                }
            }
        }
        if !out.iter().any(|s| s.as_resource().is_some()) {
            let text = requested.to_string();
            return Err(invalid(&text, "none of the requested resource scopes is allowed for this client"));
        }
        Ok(Scopes(out))
    }

    /// The resource scopes of `contexts` as one policy layer.
    pub fn policy(&self, name: &str, contexts: &[Context]) -> Policy {
        let grants = self
            .resources()
            .filter(|r| contexts.contains(&r.context))
            .map(|r| Grant {
                types: match &r.resource_type {
                    None => TypeSet::All,
                    Some(t) => TypeSet::Only(vec![t.clone()]),
                },
                perms: r.perms,
                filter: r.filter.clone(),
            })
            .collect();
        Policy { name: name.to_string(), grants }
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&words.join(" "))
    }
}

/// What both a requested and a permitted resource scope allow, if anything.
fn intersect(wanted: &ResourceScope, permitted: &ResourceScope) -> Option<ResourceScope> {
    if wanted.context != permitted.context {
        return None;
    }
    let resource_type = match (&wanted.resource_type, &permitted.resource_type) {
        (None, None) => None,
        (Some(t), None) | (None, Some(t)) => Some(t.clone()),
        (Some(a), Some(b)) if a == b => Some(a.clone()),
        _ => return None,
    };
    let perms = Perms::parse(
        &wanted.perms.letters().chars().filter(|c| permitted.perms.letters().contains(*c)).collect::<String>(),
    )?;
    let mut filter = wanted.filter.clone();
    for pair in &permitted.filter {
        if !filter.contains(pair) {
            filter.push(pair.clone());
        }
    }
    Some(ResourceScope { context: wanted.context, resource_type, perms, filter, v1: wanted.v1 && permitted.filter.is_empty() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> Scopes {
        Scopes::parse(text).expect("valid scopes")
    }

    #[test]
    fn v1_and_v2_parse_and_print() {
        for text in [
            "patient/Observation.read",
            "user/*.*",
            "system/*.read",
            "patient/Observation.rs",
            "user/*.cruds",
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            "openid fhirUser profile launch launch/patient launch/encounter offline_access online_access",
        ] {
            assert_eq!(scopes(text).to_string(), text);
        }
        let granular = Scope::parse("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory")
            .expect("granular");
        let r = granular.as_resource().expect("resource");
        assert_eq!(r.filter, vec![("category".to_string(), "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".to_string())]);
        assert_eq!(r.perms, Perms::parse("rs").expect("rs"));
    }

    #[test]
    fn invalid_scopes_name_the_problem() {
        for text in ["patient/Nope.rs", "patient/Observation.sr", "patient/Observation", "admin/*.rs", "launch/practitioner", "bogus", "patient/Observation.read?category=x"] {
            let error = Scope::parse(text).expect_err(text);
            assert_eq!(error.scope, text);
        }
    }

    #[test]
    fn granted_is_requested_narrowed_by_allowed() {
        let allowed = scopes("launch openid fhirUser patient/*.rs user/Observation.cruds offline_access");
        let granted = Scopes::grant(&scopes("launch patient/Observation.cruds user/*.rs system/*.rs openid profile"), &allowed, Flow::User)
            .expect("granted");
        assert_eq!(granted.to_string(), "launch patient/Observation.rs user/Observation.rs openid");
        let error = Scopes::grant(&scopes("patient/*.rs"), &scopes("system/*.rs"), Flow::User).expect_err("nothing grantable");
        assert!(error.reason.contains("none"), "{error}");
        let backend = Scopes::grant(&scopes("system/Patient.read system/Observation.cruds patient/*.rs"), &scopes("system/*.rs"), Flow::Backend)
            .expect("backend");
        assert_eq!(backend.to_string(), "system/Patient.read system/Observation.rs");
    }

    #[test]
    fn policy_keeps_filters() {
        let granted = scopes("patient/Observation.rs?category=laboratory patient/Patient.r");
        let policy = granted.policy("scopes", &[Context::Patient]);
        assert!(policy.decide(Perms::READ, "Observation").is_allowed());
        assert!(!policy.decide(Perms::READ, "Condition").is_allowed());
        assert!(!policy.decide(Perms::SEARCH, "Patient").is_allowed());
        assert!(!policy.decide(Perms::READ, "Observation").is_unrestricted());
    }
}
