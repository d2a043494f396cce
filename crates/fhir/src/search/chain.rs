//! Chained parameters and reverse chaining (`_has`), parsed into
//! [`Match::Chain`] and [`Match::Has`] conditions
//! (<http://hl7.org/fhir/R4/search.html#chaining>,
//! <http://hl7.org/fhir/R4/search.html#has>).
//!
//! - `subject:Patient.name=smith`: the reference parameter `subject` points at
//!   a Patient whose `name` matches. Chains nest (`patient.organization.name`)
//!   and end with any parameter, modifier and value of the last type.
//! - `subject.name=smith` without a type tries every target type of `subject`
//!   that has a `name` parameter (the spec lets a server do so); types whose
//!   inner conditions come out the same share one condition.
//! - `_has:Observation:patient:code=1234-5`: some Observation whose `patient`
//!   refers to the resource has code 1234-5. `_has` nests too, and its last
//!   part may itself be a chain.

use super::params::ParamType;
use super::query::{Condition, Match, conditions};
use super::registry::Registry;
use crate::outcome::{Issue, IssueType};

/// How many (link, target type) pairs one parameter may expand to. An untyped
/// chain through a reference that may point at any of 145 types, nested,
/// multiplies quickly; beyond this the search answers `too-costly`.
const MAX_EXPANSION: usize = 2048;

/// Whether a parameter name is a chain or a reverse chain.
pub(crate) fn is_chained(name: &str) -> bool {
    name == "_has" || name.starts_with("_has:") || name.contains('.')
}

/// The OR-ed conditions of a chained or `_has` parameter of `resource_type`.
pub(crate) fn parse(
    registry: &Registry,
    resource_type: Option<&str>,
    name: &str,
    value: &str,
) -> Result<Vec<Condition>, Issue> {
    let mut budget = MAX_EXPANSION;
    parse_link(registry, resource_type, name, value, &mut budget)
}

fn invalid(message: impl Into<String>) -> Issue {
    Issue::error(IssueType::Invalid, message)
}

fn spend(budget: &mut usize) -> Result<(), Issue> {
    *budget = budget.checked_sub(1).ok_or_else(|| {
        Issue::error(IssueType::TooCostly, "the chain may refer to too many resource types; name the types with :Type")
    })?;
    Ok(())
}

fn parse_link(
    registry: &Registry,
    resource_type: Option<&str>,
    name: &str,
    value: &str,
    budget: &mut usize,
) -> Result<Vec<Condition>, Issue> {
    if name == "_has" {
        return Err(invalid("_has is written _has:Type:parameter:parameter"));
    }
    if let Some(rest) = name.strip_prefix("_has:") {
        return has(registry, resource_type, rest, value, budget);
    }
    let Some((head, tail)) = name.split_once('.') else {
        return conditions(registry, resource_type, name, value);
    };
    let (code, type_modifier) = match head.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (head, None),
    };
    let def = registry.param(resource_type.unwrap_or("Resource"), code).ok_or_else(|| match resource_type {
        Some(rt) => invalid(format!("unknown search parameter {code} for {rt}")),
        None => invalid(format!("unknown search parameter {code} for a search of all resource types")),
    })?;
    if def.kind != ParamType::Reference {
        return Err(invalid(format!("{code} is not a reference parameter, so it cannot be chained")));
    }
    if tail.is_empty() {
        return Err(invalid(format!("the chain after {code} names no parameter")));
    }
    let types: Vec<String> = match type_modifier {
        Some(t) if crate::definitions::is_resource_type(t) => {
            if !def.targets.is_empty() && !def.targets.iter().any(|target| target == t) {
                return Err(invalid(format!("{t} is not a target type of {code}")));
            }
            vec![t.to_string()]
        }
        Some(m) => {
            return Err(invalid(format!("only a resource type can qualify a chained reference, not :{m}")));
        }
        None if def.targets.is_empty() => {
            return Err(invalid(format!("{code} may refer to any type: name one with {code}:Type")));
        }
        None => def.targets.clone(),
    };
    let tail_code = tail.split([':', '.']).next().unwrap_or(tail);
    let mut groups: Vec<(Vec<String>, Vec<Condition>)> = Vec::new();
    let mut first_error = None;
    for target in types {
        if !has_param(registry, &target, tail_code) {
            continue;
        }
        spend(budget)?;
        match parse_link(registry, Some(&target), tail, value, budget) {
            Ok(inner) => match groups.iter_mut().find(|(_, existing)| *existing == inner) {
                Some((targets, _)) => targets.push(target),
                None => groups.push((vec![target], inner)),
            },
            // A value can be fine for one target type and wrong for another
            // (an untyped chain): the chain fails only when no type takes it.
            Err(issue) if issue.code == IssueType::TooCostly => return Err(issue),
            Err(issue) => {
                first_error.get_or_insert(issue);
            }
        }
    }
    if groups.is_empty() {
        return Err(first_error.unwrap_or_else(|| {
            invalid(format!("unknown chained parameter {tail_code}: no target type of {code} has it"))
        }));
    }
    Ok(groups
        .into_iter()
        .map(|(target_types, inner)| Condition {
            param: code.to_string(),
            matcher: Match::Chain { target_types, inner },
        })
        .collect())
}

/// Whether `code` can follow a chain link into `resource_type`.
fn has_param(registry: &Registry, resource_type: &str, code: &str) -> bool {
    matches!(code, "_id" | "_lastUpdated" | "_has") || registry.param(resource_type, code).is_some()
}

/// `_has:Type:reference:rest` (after the `_has:`).
fn has(
    registry: &Registry,
    resource_type: Option<&str>,
    rest: &str,
    value: &str,
    budget: &mut usize,
) -> Result<Vec<Condition>, Issue> {
    let mut parts = rest.splitn(3, ':');
    let (Some(source), Some(reference), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("_has is written _has:Type:parameter:parameter"));
    };
    if tail.is_empty() {
        return Err(invalid("_has is written _has:Type:parameter:parameter"));
    }
    if !crate::definitions::is_resource_type(source) {
        return Err(invalid(format!("_has names {source}, which is not a resource type")));
    }
    let def = registry
        .param(source, reference)
        .ok_or_else(|| invalid(format!("unknown search parameter {reference} for {source}")))?;
    if def.kind != ParamType::Reference {
        return Err(invalid(format!("{reference} of {source} is not a reference parameter")));
    }
    if let Some(rt) = resource_type
        && !def.targets.is_empty()
        && !def.targets.iter().any(|t| t == rt)
    {
        return Err(invalid(format!("{reference} of {source} does not refer to {rt}")));
    }
    spend(budget)?;
    let inner = parse_link(registry, Some(source), tail, value, budget)?;
    Ok(vec![Condition { param: reference.to_string(), matcher: Match::Has { source_type: source.to_string(), inner } }])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::outcome::IssueType;
    use crate::search::Registry;
    use crate::search::query::{Condition, Match, StringMode, TokenSystem, parse};

    fn filter(rt: &str, name: &str, value: &str) -> Vec<Condition> {
        let params = vec![(name.to_string(), value.to_string())];
        let parsed = parse(&Registry::core(), Some(rt), &params, false).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(parsed.applied, params);
        assert_eq!(parsed.query.filters.len(), 1);
        parsed.query.filters[0].any_of.clone()
    }

    fn error(rt: &str, name: &str, value: &str) -> IssueType {
        let params = vec![(name.to_string(), value.to_string())];
        let issues = parse(&Registry::core(), Some(rt), &params, false).expect_err("should fail");
        assert_eq!(issues[0].expression.as_deref(), Some(name));
        issues[0].code
    }

    fn string(param: &str, value: &str) -> Condition {
        Condition { param: param.into(), matcher: Match::String { value: value.into(), mode: StringMode::Prefix } }
    }

    #[test]
    fn typed_chain() {
        let any_of = filter("Observation", "subject:Patient.name", "Smith,Jones");
        assert_eq!(
            any_of,
            vec![Condition {
                param: "subject".into(),
                matcher: Match::Chain {
                    target_types: vec!["Patient".into()],
                    inner: vec![string("name", "smith"), string("name", "jones")],
                },
            }]
        );
        // Modifiers and prefixes belong to the last parameter of the chain.
        let any_of = filter("Observation", "subject:Patient.name:exact", "Smith");
        let Match::Chain { inner, .. } = &any_of[0].matcher else { panic!("{any_of:?}") };
        assert_eq!(inner[0].matcher, Match::String { value: "Smith".into(), mode: StringMode::Exact });
        let any_of = filter("Observation", "subject:Patient.birthdate", "lt2000");
        let Match::Chain { inner, .. } = &any_of[0].matcher else { panic!("{any_of:?}") };
        assert!(matches!(inner[0].matcher, Match::Date { .. }));
    }

    #[test]
    fn untyped_chain_tries_every_target_with_the_parameter() {
        // subject of Observation: Group, Device, Patient, Location. `name` is
        // a string on Location and Patient; Device and Group have none.
        let any_of = filter("Observation", "subject.name", "x");
        assert_eq!(any_of.len(), 1, "one condition for the types that parse alike: {any_of:?}");
        let Match::Chain { target_types, inner } = &any_of[0].matcher else { panic!("{any_of:?}") };
        let mut types = target_types.clone();
        types.sort();
        assert_eq!(types, vec!["Location", "Patient"]);
        assert_eq!(inner, &vec![string("name", "x")]);
        // Encounter.patient has the one target Patient.
        let any_of = filter("Encounter", "patient.family", "x");
        assert!(matches!(&any_of[0].matcher, Match::Chain { target_types, .. } if target_types == &["Patient"]));
    }

    #[test]
    fn chains_nest() {
        let any_of = filter("Encounter", "patient.organization.name", "acme");
        let Match::Chain { target_types, inner } = &any_of[0].matcher else { panic!("{any_of:?}") };
        assert_eq!(target_types, &["Patient"]);
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].param, "organization");
        let Match::Chain { target_types, inner } = &inner[0].matcher else { panic!("{inner:?}") };
        assert_eq!(target_types, &["Organization"]);
        assert_eq!(inner, &vec![string("name", "acme")]);

        let any_of = filter("DiagnosticReport", "result.code", "http://loinc.org|1234-5");
        let Match::Chain { target_types, inner } = &any_of[0].matcher else { panic!("{any_of:?}") };
        assert_eq!(target_types, &["Observation"]);
        assert_eq!(
            inner[0].matcher,
            Match::Token {
                system: TokenSystem::Is("http://loinc.org".into()),
                code: Some("1234-5".into()),
                negate: false
            }
        );
    }

    #[test]
    fn reverse_chains_nest() {
        let any_of = filter("Patient", "_has:Observation:patient:code", "1234-5");
        assert_eq!(any_of.len(), 1);
        assert_eq!(any_of[0].param, "patient");
        let Match::Has { source_type, inner } = &any_of[0].matcher else { panic!("{any_of:?}") };
        assert_eq!(source_type, "Observation");
        assert_eq!(inner[0].param, "code");

        let any_of = filter("Patient", "_has:Observation:patient:_has:AuditEvent:entity:agent", "Practitioner/1");
        let Match::Has { inner, .. } = &any_of[0].matcher else { panic!("{any_of:?}") };
        let Match::Has { source_type, inner } = &inner[0].matcher else { panic!("{inner:?}") };
        assert_eq!(source_type, "AuditEvent");
        assert_eq!(inner[0].matcher, Match::Reference { target_type: Some("Practitioner".into()), id: "1".into() });

        // The last part of a _has may be a chain.
        let any_of = filter("Patient", "_has:Observation:patient:performer:Practitioner.family", "x");
        let Match::Has { inner, .. } = &any_of[0].matcher else { panic!("{any_of:?}") };
        assert!(matches!(inner[0].matcher, Match::Chain { .. }));
    }

    #[test]
    fn bad_chains_are_invalid() {
        assert_eq!(error("Observation", "subject.nonsense", "x"), IssueType::Invalid);
        assert_eq!(error("Observation", "subject:Patient.nonsense", "x"), IssueType::Invalid);
        assert_eq!(error("Observation", "subject:Medication.name", "x"), IssueType::Invalid);
        assert_eq!(error("Observation", "code.name", "x"), IssueType::Invalid);
        assert_eq!(error("Observation", "subject:exact.name", "x"), IssueType::Invalid);
        assert_eq!(error("Observation", "subject.", "x"), IssueType::Invalid);
        assert_eq!(error("Observation", "subject:Patient.birthdate", "notadate"), IssueType::Invalid);
        assert_eq!(error("Patient", "_has", "x"), IssueType::Invalid);
        assert_eq!(error("Patient", "_has:Observation:patient", "x"), IssueType::Invalid);
        assert_eq!(error("Patient", "_has:Nonsense:patient:code", "x"), IssueType::Invalid);
        assert_eq!(error("Patient", "_has:Observation:code:code", "x"), IssueType::Invalid);
        assert_eq!(error("Patient", "_has:Observation:nonsense:code", "x"), IssueType::Invalid);
        assert_eq!(error("Patient", "_has:Observation:patient:nonsense", "x"), IssueType::Invalid);
        // Observation.patient refers to Patient and Group only.
        assert_eq!(error("Practitioner", "_has:Observation:patient:code", "x"), IssueType::Invalid);
    }

    #[test]
    fn lenient_leaves_out_an_unknown_chain() {
        let params = vec![("subject.nonsense".to_string(), "x".to_string()), ("code".to_string(), "1".to_string())];
        let parsed = parse(&Registry::core(), Some("Observation"), &params, true).unwrap();
        assert_eq!(parsed.ignored, vec!["subject.nonsense"]);
        assert_eq!(parsed.applied, vec![("code".to_string(), "1".to_string())]);
    }
}
