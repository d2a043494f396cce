//! `_include` and `_revinclude` (<http://hl7.org/fhir/R4/search.html#include>):
//! which referenced or referring resources a searchset carries beside its
//! matches. The Service resolves them once the page is known.

use super::params::ParamType;
use super::registry::Registry;
use crate::outcome::{Issue, IssueType};

/// One `_include` or `_revinclude` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// `_revinclude`: resources of `source_type` that refer to the results.
    /// Otherwise (`_include`) the resources the results of `source_type` refer to.
    pub reverse: bool,
    /// `:iterate` (R4; `:recurse` in earlier versions): applies to included
    /// resources too, until nothing new is found.
    pub iterate: bool,
    /// The type holding the reference; `None` for `*` (any type).
    pub source_type: Option<String>,
    /// The reference parameter of `source_type`; `None` for `*` (every
    /// reference parameter).
    pub param: Option<String>,
    /// Only references to this type.
    pub target_type: Option<String>,
}

fn invalid(message: impl Into<String>) -> Issue {
    Issue::error(IssueType::Invalid, message)
}

/// Parses `name=value` when `name` is `_include` or `_revinclude`, with an
/// optional `:iterate` or `:recurse`; `Ok(None)` for any other name.
/// `resource_type` is the searched type (`None`: all types).
pub(crate) fn parse(
    registry: &Registry,
    resource_type: Option<&str>,
    name: &str,
    value: &str,
) -> Result<Option<Include>, Issue> {
    let (base, modifier) = match name.split_once(':') {
        Some((base, modifier)) => (base, Some(modifier)),
        None => (name, None),
    };
    let reverse = match base {
        "_include" => false,
        "_revinclude" => true,
        _ => return Ok(None),
    };
    let iterate = match modifier {
        None => false,
        Some("iterate" | "recurse") => true,
        Some(other) => return Err(invalid(format!("unknown modifier :{other} for {base}"))),
    };
    let value = value.trim();
    if value == "*" {
        // `_include=*`: every resource the results refer to; `_revinclude=*`:
        // every resource of any type that refers to a result.
        return Ok(Some(Include { reverse, iterate, source_type: None, param: None, target_type: None }));
    }
    let mut parts = value.split(':');
    let (Some(source), Some(param)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("{base} is written Type:parameter or Type:parameter:TargetType")));
    };
    let target = parts.next();
    if parts.next().is_some() {
        return Err(invalid(format!("{base} is written Type:parameter or Type:parameter:TargetType")));
    }
    if !crate::definitions::is_resource_type(source) {
        return Err(invalid(format!("{base} names {source}, which is not a resource type")));
    }
    if let Some(t) = target
        && !crate::definitions::is_resource_type(t)
    {
        return Err(invalid(format!("{base} names the target {t}, which is not a resource type")));
    }
    let param = if param == "*" {
        None
    } else {
        let def = registry
            .param(source, param)
            .ok_or_else(|| invalid(format!("unknown search parameter {param} for {source}")))?;
        if def.kind != ParamType::Reference {
            return Err(invalid(format!("{param} of {source} is not a reference parameter")));
        }
        if let Some(t) = target
            && !def.targets.is_empty()
            && !def.targets.iter().any(|d| d == t)
        {
            return Err(invalid(format!("{t} is not a target type of {param} of {source}")));
        }
        // Without :iterate an include applies to the matches only, so it must
        // start from (or, reversed, point at) the searched type.
        if !iterate && let Some(rt) = resource_type {
            if !reverse && source != rt {
                return Err(invalid(format!(
                    "{base}={value} does not apply to {rt}; add :iterate to follow included resources"
                )));
            }
            if reverse && !def.targets.is_empty() && !def.targets.iter().any(|d| d == rt) {
                return Err(invalid(format!("{param} of {source} does not refer to {rt}")));
            }
        }
        Some(param.to_string())
    };
    if param.is_none() && !iterate && !reverse && resource_type.is_some_and(|rt| rt != source) {
        return Err(invalid(format!("{base}={value} does not apply to a search of another type; add :iterate")));
    }
    Ok(Some(Include {
        reverse,
        iterate,
        source_type: Some(source.to_string()),
        param,
        target_type: target.map(str::to_string),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Include;
    use crate::outcome::IssueType;
    use crate::search::Registry;
    use crate::search::query::parse;

    fn includes(rt: &str, list: &[(&str, &str)]) -> Vec<Include> {
        let params: Vec<(String, String)> = list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let parsed = parse(&Registry::core(), Some(rt), &params, false).unwrap_or_else(|e| panic!("{list:?}: {e:?}"));
        assert_eq!(parsed.applied, params, "includes appear in the self link");
        assert!(parsed.query.filters.is_empty());
        parsed.includes
    }

    fn error(rt: &str, name: &str, value: &str) -> IssueType {
        let params = vec![(name.to_string(), value.to_string())];
        parse(&Registry::core(), Some(rt), &params, false).expect_err("should fail")[0].code
    }

    fn include(reverse: bool, iterate: bool, source: &str, param: Option<&str>, target: Option<&str>) -> Include {
        Include {
            reverse,
            iterate,
            source_type: Some(source.into()),
            param: param.map(Into::into),
            target_type: target.map(Into::into),
        }
    }

    #[test]
    fn every_form() {
        assert_eq!(
            includes(
                "Observation",
                &[
                    ("_include", "Observation:subject"),
                    ("_include", "Observation:subject:Patient"),
                    ("_include", "Observation:*"),
                    ("_include:iterate", "Patient:organization"),
                    ("_include:recurse", "Patient:general-practitioner:Practitioner"),
                    ("_revinclude", "Provenance:target"),
                    ("_revinclude:iterate", "Encounter:patient"),
                ]
            ),
            vec![
                include(false, false, "Observation", Some("subject"), None),
                include(false, false, "Observation", Some("subject"), Some("Patient")),
                include(false, false, "Observation", None, None),
                include(false, true, "Patient", Some("organization"), None),
                include(false, true, "Patient", Some("general-practitioner"), Some("Practitioner")),
                include(true, false, "Provenance", Some("target"), None),
                include(true, true, "Encounter", Some("patient"), None),
            ]
        );
        assert_eq!(
            includes("Patient", &[("_include", "*")]),
            vec![Include { reverse: false, iterate: false, source_type: None, param: None, target_type: None }]
        );
    }

    #[test]
    fn bad_directives() {
        assert_eq!(error("Observation", "_include", "Observation"), IssueType::Invalid);
        assert_eq!(error("Observation", "_include", "Observation:nonsense"), IssueType::Invalid);
        assert_eq!(error("Observation", "_include", "Observation:code"), IssueType::Invalid);
        assert_eq!(error("Observation", "_include", "Nonsense:subject"), IssueType::Invalid);
        assert_eq!(error("Observation", "_include", "Observation:subject:Medication"), IssueType::Invalid);
        assert_eq!(error("Observation", "_include", "Observation:subject:Patient:x"), IssueType::Invalid);
        assert_eq!(error("Observation", "_include:deep", "Observation:subject"), IssueType::Invalid);
        // Without :iterate an _include starts from the searched type.
        assert_eq!(error("Observation", "_include", "Patient:organization"), IssueType::Invalid);
        // and a _revinclude points at it.
        assert_eq!(error("Practitioner", "_revinclude", "Observation:patient"), IssueType::Invalid);
        assert_eq!(
            includes("Patient", &[("_revinclude", "*")]),
            vec![Include { reverse: true, iterate: false, source_type: None, param: None, target_type: None }]
        );
    }
}
