//! The core R4 search parameters (<http://hl7.org/fhir/R4/searchparameter-registry.html>)
//! as a table, loaded once from `definitions/search-parameters.json`, which
//! `cargo xtask codegen` generates from the vendored core package.

use once_cell::sync::Lazy;
use serde::Deserialize;
use std::collections::HashMap;

/// `SearchParameter.type` (<http://hl7.org/fhir/R4/valueset-search-param-type.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    pub fn code(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

/// One part of a composite parameter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Component {
    /// Canonical URL of the component's SearchParameter.
    pub definition: String,
    /// FHIRPath relative to the composite's expression.
    pub expression: String,
}

/// A core search parameter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchParamDef {
    pub code: String,
    pub url: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Resource types it applies to (`Resource` / `DomainResource` for all).
    pub base: Vec<String>,
    /// FHIRPath over all base types; `None` for `_text`, `_content`, `_query`, `_filter`.
    #[serde(default)]
    pub expression: Option<String>,
    /// Resource types a reference parameter may point to.
    #[serde(default, rename = "target")]
    pub targets: Vec<String>,
    #[serde(default)]
    pub multiple_or: Option<bool>,
    #[serde(default)]
    pub multiple_and: Option<bool>,
    #[serde(default, rename = "modifier")]
    pub modifiers: Vec<String>,
    #[serde(default, rename = "comparator")]
    pub comparators: Vec<String>,
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default, rename = "component")]
    pub components: Vec<Component>,
}

pub(crate) struct Table {
    pub(crate) params: Vec<SearchParamDef>,
    /// base type -> code -> index in `params`.
    by_base: HashMap<String, HashMap<String, usize>>,
}

/// The generated table, committed in the repository.
const TABLE_JSON: &str = include_str!("../../definitions/search-parameters.json");

pub(crate) static TABLE: Lazy<Table> = Lazy::new(|| {
    // The file is generated and tested (tests/it/search.rs); a broken file
    // yields an empty table rather than a panic in production.
    let params: Vec<SearchParamDef> = serde_json::from_str(TABLE_JSON).unwrap_or_default();
    let mut by_base: HashMap<String, HashMap<String, usize>> = HashMap::new();
    for (i, param) in params.iter().enumerate() {
        for base in &param.base {
            by_base.entry(base.clone()).or_default().insert(param.code.clone(), i);
        }
    }
    Table { params, by_base }
});

/// Whether parameters of `base` apply to resources of `resource_type`
/// (Resource and DomainResource parameters apply to every resource; the
/// DomainResource exceptions are Bundle, Binary and Parameters).
fn applies(base: &str, resource_type: &str) -> bool {
    base == resource_type
        || base == "Resource"
        || (base == "DomainResource" && !matches!(resource_type, "Bundle" | "Binary" | "Parameters"))
}

/// The bases whose parameters apply to `resource_type`, most specific first.
fn bases(resource_type: &str) -> Vec<&str> {
    let mut out = vec![resource_type];
    for base in ["DomainResource", "Resource"] {
        if base != resource_type && applies(base, resource_type) && resource_type != "Resource" {
            out.push(base);
        }
    }
    out
}

/// The parameter `code` of `resource_type`, including the parameters of all
/// resources (`_tag`, `_profile`, ...).
pub fn search_param(resource_type: &str, code: &str) -> Option<&'static SearchParamDef> {
    let table = &*TABLE;
    bases(resource_type).into_iter().find_map(|b| table.by_base.get(b)?.get(code)).and_then(|&i| table.params.get(i))
}

/// Every parameter that applies to `resource_type`: its own, in code order,
/// then those of DomainResource and Resource.
pub fn params_for(resource_type: &str) -> impl Iterator<Item = &'static SearchParamDef> {
    let table: &'static Table = &TABLE;
    let mut indexes: Vec<usize> = Vec::new();
    // Resource and DomainResource asked for directly get only their own.
    let own = table.by_base.get(resource_type);
    let mut own_sorted: Vec<(&String, &usize)> = own.map(|m| m.iter().collect()).unwrap_or_default();
    own_sorted.sort();
    indexes.extend(own_sorted.into_iter().map(|(_, i)| *i));
    for base in bases(resource_type).into_iter().skip(1) {
        if let Some(map) = table.by_base.get(base) {
            let mut list: Vec<(&String, &usize)> = map.iter().collect();
            list.sort();
            indexes.extend(list.into_iter().map(|(_, i)| *i));
        }
    }
    indexes.into_iter().filter_map(move |i| table.params.get(i))
}

/// The parameter with canonical `url` (composite components refer to these).
pub fn search_param_by_url(url: &str) -> Option<&'static SearchParamDef> {
    TABLE.params.iter().find(|p| p.url == url)
}

/// The resource types that have search parameters of their own.
pub fn resource_types() -> impl Iterator<Item = &'static str> {
    let table: &'static Table = &TABLE;
    let mut types: Vec<&'static str> =
        table.by_base.keys().map(String::as_str).filter(|b| !matches!(*b, "Resource" | "DomainResource")).collect();
    types.sort_unstable();
    types.into_iter()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_loads_every_core_parameter() {
        assert!(TABLE.params.len() >= 1375, "{}", TABLE.params.len());
        assert!(resource_types().count() > 130);
    }

    #[test]
    fn looks_up_own_and_resource_parameters() {
        let family = search_param("Patient", "family").unwrap();
        assert_eq!(family.kind, ParamType::String);
        // Shared definitions keep the expression of every base type.
        assert_eq!(family.expression.as_deref(), Some("Patient.name.family | Practitioner.name.family"));
        let subject = search_param("Observation", "subject").unwrap();
        assert_eq!(subject.kind, ParamType::Reference);
        assert!(subject.targets.iter().any(|t| t == "Patient"));
        assert_eq!(search_param("Patient", "_tag").unwrap().kind, ParamType::Token);
        assert_eq!(search_param("Bundle", "_text"), None, "Bundle is not a DomainResource");
        assert!(search_param("Patient", "_text").is_some());
        assert_eq!(search_param("Patient", "nope"), None);
        let composite = search_param("Observation", "code-value-quantity").unwrap();
        assert_eq!(composite.kind, ParamType::Composite);
        assert_eq!(composite.components.len(), 2);
        assert_eq!(search_param_by_url(&composite.components[0].definition).unwrap().code, "code");
    }

    #[test]
    fn params_for_lists_own_then_common() {
        let codes: Vec<&str> = params_for("Patient").map(|p| p.code.as_str()).collect();
        assert!(codes.contains(&"birthdate") && codes.contains(&"_id") && codes.contains(&"_text"));
        assert_eq!(codes.first(), Some(&"active"));
        let unique: std::collections::HashSet<&&str> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
    }
}
