//! The search parameters in force: the core R4 table plus the custom
//! SearchParameter resources a server has activated
//! (<http://hl7.org/fhir/R4/searchparameter.html>).
//!
//! A [`Registry`] is immutable. A server builds a new one when its custom
//! parameters change (`$reindex`) and swaps it in; requests in flight keep the
//! one they started with. Parsing a search ([`crate::search::query::parse`])
//! and extracting index values ([`Registry::extract`]) both go through it, so a
//! custom parameter is searched exactly as it is indexed.

use super::extract::{extract_core, index_values};
use super::params::{self, ParamType, SearchParamDef};
use super::{IndexEntry, IndexValue};
use crate::fhirpath::Expr;
use crate::outcome::{Issue, IssueType};
use once_cell::sync::Lazy;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A custom parameter compiled for one resource type.
struct CustomExtractor {
    /// Index into `Registry::custom`.
    def: usize,
    expr: Expr,
}

/// Core parameters and custom ones.
pub struct Registry {
    custom: Vec<SearchParamDef>,
    /// base resource type -> code -> index into `custom`.
    by_base: HashMap<String, HashMap<String, usize>>,
    extractors: HashMap<String, Vec<CustomExtractor>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes: Vec<&str> = self.custom.iter().map(|d| d.code.as_str()).collect();
        f.debug_struct("Registry").field("custom", &codes).finish()
    }
}

static CORE: Lazy<Arc<Registry>> = Lazy::new(|| Arc::new(Registry::empty()));

/// A custom SearchParameter that could not be activated, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The SearchParameter's `url` (or its code when it has none).
    pub name: String,
    pub issue: Issue,
}

impl Registry {
    fn empty() -> Registry {
        Registry { custom: Vec::new(), by_base: HashMap::new(), extractors: HashMap::new() }
    }

    /// The core parameters only.
    pub fn core() -> Arc<Registry> {
        Arc::clone(&CORE)
    }

    /// The core parameters plus the custom SearchParameter resources given
    /// (as JSON). Parameters that cannot be used are left out and returned
    /// with the reason: a type Hearth cannot index (composite, special), a
    /// code that a core parameter of the same base already has, a base that
    /// is not a resource type, or an expression outside the FHIRPath subset.
    pub fn with_custom(resources: &[Value]) -> (Registry, Vec<Rejected>) {
        let mut registry = Registry::empty();
        let mut rejected = Vec::new();
        for resource in resources {
            match custom_def(resource) {
                Ok((def, expr)) => registry.add(def, &expr),
                Err((name, issue)) => rejected.push(Rejected { name, issue }),
            }
        }
        (registry, rejected)
    }

    fn add(&mut self, def: SearchParamDef, expr: &Expr) {
        let index = self.custom.len();
        for base in &def.base {
            let specialised = expr.for_resource_type(base);
            if !specialised.is_empty() {
                self.extractors.entry(base.clone()).or_default().push(CustomExtractor { def: index, expr: specialised });
            }
            self.by_base.entry(base.clone()).or_default().insert(def.code.clone(), index);
        }
        self.custom.push(def);
    }

    /// The custom parameters in force.
    pub fn custom(&self) -> &[SearchParamDef] {
        &self.custom
    }

    /// The resource types whose index rows a custom parameter adds to.
    pub fn custom_types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.extractors.keys().cloned().collect();
        types.sort();
        types
    }

    /// The parameter `code` of `resource_type` (`Resource` for a search of
    /// all types), core parameters first.
    pub fn param(&self, resource_type: &str, code: &str) -> Option<&SearchParamDef> {
        params::search_param(resource_type, code).or_else(|| {
            let index = *self.by_base.get(resource_type)?.get(code)?;
            self.custom.get(index)
        })
    }

    /// Every parameter of `resource_type`: the core ones, then the custom ones.
    pub fn params_for(&self, resource_type: &str) -> Vec<&SearchParamDef> {
        let mut custom: Vec<&SearchParamDef> = self
            .by_base
            .get(resource_type)
            .map(|codes| codes.values().filter_map(|&i| self.custom.get(i)).collect())
            .unwrap_or_default();
        custom.sort_by(|a, b| a.code.cmp(&b.code));
        let mut all: Vec<&SearchParamDef> = params::params_for(resource_type).collect();
        all.extend(custom);
        all
    }

    /// All index entries of `resource`, for the core and custom parameters of its type.
    pub fn extract(&self, resource: &Value) -> Vec<IndexEntry> {
        let mut out = extract_core(resource);
        if self.extractors.is_empty() {
            return out;
        }
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else { return out };
        let Some(extractors) = self.extractors.get(resource_type) else { return out };
        let mut values: Vec<IndexValue> = Vec::new();
        for extractor in extractors {
            let Some(def) = self.custom.get(extractor.def) else { continue };
            values.clear();
            index_values(def.kind, &extractor.expr.evaluate(resource), &mut values);
            values.dedup();
            for value in values.drain(..) {
                if !out.iter().any(|e| e.param == def.code && e.value == value) {
                    out.push(IndexEntry { param: def.code.clone(), value });
                }
            }
        }
        out
    }
}

fn text_of<'a>(resource: &'a Value, key: &str) -> Option<&'a str> {
    resource.get(key).and_then(Value::as_str)
}

/// Reads a SearchParameter resource into a definition and its compiled expression.
fn custom_def(resource: &Value) -> Result<(SearchParamDef, Expr), (String, Issue)> {
    let code = text_of(resource, "code").unwrap_or_default().to_string();
    let name = text_of(resource, "url").map(str::to_string).unwrap_or_else(|| code.clone());
    let fail = |expression: &str, message: String| {
        (name.clone(), Issue::error(IssueType::NotSupported, message).at(format!("SearchParameter.{expression}")))
    };
    if code.is_empty() || code.starts_with('_') || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(fail("code", "a custom search parameter needs a code of letters, digits and '-', not starting with '_'".into()));
    }
    let kind: ParamType = resource
        .get("type")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok())
        .ok_or_else(|| fail("type", "the search parameter type is missing or unknown".into()))?;
    if matches!(kind, ParamType::Composite | ParamType::Special) {
        return Err(fail("type", format!("custom {} search parameters are not supported", kind.code())));
    }
    let base: Vec<String> = resource
        .get("base")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if base.is_empty() {
        return Err(fail("base", "the search parameter names no base resource type".into()));
    }
    for b in &base {
        if !crate::definitions::is_resource_type(b) {
            return Err(fail("base", format!("{b} is not a resource type")));
        }
        if params::search_param(b, &code).is_some() {
            return Err(fail("code", format!("{b} already has a core search parameter {code}")));
        }
    }
    let Some(expression) = text_of(resource, "expression") else {
        return Err(fail("expression", "a custom search parameter needs an expression".into()));
    };
    let expr = Expr::compile(expression).map_err(|e| fail("expression", format!("the expression cannot be used: {e}")))?;
    let targets = resource
        .get("target")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let def = SearchParamDef {
        code,
        url: text_of(resource, "url").unwrap_or_default().to_string(),
        kind,
        base,
        expression: Some(expression.to_string()),
        targets,
        multiple_or: None,
        multiple_and: None,
        modifiers: Vec::new(),
        comparators: Vec::new(),
        chain: Vec::new(),
        components: Vec::new(),
    };
    Ok((def, expr))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eye_colour() -> Value {
        json!({
            "resourceType": "SearchParameter",
            "url": "http://example.org/SearchParameter/eye-colour",
            "name": "eye-colour", "status": "active", "description": "Eye colour",
            "code": "eye-colour", "base": ["Patient"], "type": "token",
            "expression": "Patient.extension.where(url = 'http://example.org/eye-colour').value"
        })
    }

    #[test]
    fn core_registry_has_core_params_only() {
        let core = Registry::core();
        assert!(core.param("Patient", "family").is_some());
        assert!(core.param("Patient", "eye-colour").is_none());
        assert!(core.custom().is_empty());
    }

    #[test]
    fn custom_param_is_looked_up_and_extracted() {
        let (registry, rejected) = Registry::with_custom(&[eye_colour()]);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(registry.param("Patient", "eye-colour").unwrap().kind, ParamType::Token);
        assert!(registry.param("Observation", "eye-colour").is_none());
        assert!(registry.params_for("Patient").iter().any(|p| p.code == "eye-colour"));
        assert_eq!(registry.custom_types(), vec!["Patient".to_string()]);
        let patient = json!({
            "resourceType": "Patient",
            "extension": [{"url": "http://example.org/eye-colour", "valueCode": "blue"}],
            "name": [{"family": "Smith"}]
        });
        let entries = registry.extract(&patient);
        assert!(entries.iter().any(|e| e.param == "family"));
        let custom: Vec<&IndexEntry> = entries.iter().filter(|e| e.param == "eye-colour").collect();
        assert_eq!(custom.len(), 1);
        assert_eq!(custom[0].value, IndexValue::Token { system: None, code: Some("blue".into()), text: None });
        // The core registry does not index it.
        assert!(!Registry::core().extract(&patient).iter().any(|e| e.param == "eye-colour"));
    }

    #[test]
    fn unusable_custom_params_are_rejected_with_reasons() {
        let mut clash = eye_colour();
        clash["code"] = json!("family");
        let mut composite = eye_colour();
        composite["type"] = json!("composite");
        let mut bad_base = eye_colour();
        bad_base["base"] = json!(["Nope"]);
        let mut bad_expr = eye_colour();
        bad_expr["expression"] = json!("Patient.name.(((");
        let (registry, rejected) = Registry::with_custom(&[clash, composite, bad_base, bad_expr]);
        assert!(registry.custom().is_empty());
        let locations: Vec<&str> =
            rejected.iter().map(|r| r.issue.expression.as_deref().unwrap_or_default()).collect();
        assert_eq!(
            locations,
            ["SearchParameter.code", "SearchParameter.type", "SearchParameter.base", "SearchParameter.expression"]
        );
    }
}
