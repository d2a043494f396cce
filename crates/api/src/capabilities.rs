//! `capabilities`: `GET [base]/metadata`, the CapabilityStatement, built once
//! at startup (<http://hl7.org/fhir/R4/http.html#capabilities>,
//! <http://hl7.org/fhir/R4/capabilitystatement.html>). It states only what
//! this server implements.

use crate::error::ApiError;
use crate::negotiation::fhir_json_response;
use crate::St;
use axum::extract::RawQuery;
use axum::response::Response;
use bytes::Bytes;
use fhir::search::{ParamType, Registry, SearchParamDef};
use std::collections::HashMap;
use std::sync::Arc;
use http::StatusCode;
use serde_json::{Value, json};

/// The type-level interactions every resource type supports.
const INTERACTIONS: &[&str] =
    &["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"];

/// `GET [base]/metadata` (also `?mode=full`, the same statement).
pub(crate) async fn metadata(state: St, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    for (key, value) in crate::request::query_pairs(query.as_deref()) {
        if key == "mode" && value != "full" && value != "normative" {
            return Err(ApiError::bad_request("metadata mode must be full or normative").at("mode"));
        }
    }
    Ok(fhir_json_response(StatusCode::OK, current(&state)))
}

/// The statement built for one set of search parameters.
pub(crate) struct Cached {
    registry: Arc<Registry>,
    statement: Bytes,
}

impl Cached {
    pub(crate) fn new(backend: &str, registry: Arc<Registry>, oauth: &auth::Endpoints) -> Cached {
        Cached { statement: build(backend, &registry, oauth), registry }
    }
}

/// The statement for the search parameters in force, rebuilt when `$reindex`
/// or start-up activated other custom parameters.
fn current(state: &St) -> Bytes {
    let registry = state.service.registry();
    let mut cached = match state.capabilities.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if !Arc::ptr_eq(&cached.registry, &registry) {
        *cached = Cached::new(state.service.store().backend(), registry, &state.auth.endpoints());
    }
    cached.statement.clone()
}

/// The CapabilityStatement as JSON text.
pub(crate) fn build(backend: &str, registry: &Registry, oauth: &auth::Endpoints) -> Bytes {
    let rev_includes = rev_includes(registry);
    let resources: Vec<Value> = fhir::definitions::resource_types()
        .iter()
        .filter(|t| crate::request::has_rest_endpoint(t))
        .map(|t| resource_entry(t, registry, rev_includes.get(t.as_str()).map_or(&[][..], Vec::as_slice)))
        .collect();
    let now = fhir::instant::Instant::now().to_fhir();
    let date = now.get(..10).unwrap_or("1970-01-01");
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        // Required (1..1): the statement is (re)published at each start.
        "date": date,
        "publisher": "Hearth",
        "kind": "instance",
        "software": { "name": "Hearth", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": format!("Hearth FHIR R4 server ({backend} store)") },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": security(oauth),
            "resource": resources,
            // Compartment search, `[base]/[Compartment]/[id]/[type]` (http.html#vsearch),
            // on each base compartment.
            "compartment": fhir::compartments::compartment_types()
                .filter_map(fhir::compartments::definition_url)
                .collect::<Vec<_>>(),
            "interaction": [
                { "code": "transaction" },
                { "code": "batch" },
                { "code": "history-system" },
                { "code": "search-system" },
            ],
        }],
    });
    Bytes::from(statement.to_string())
}

/// SMART on FHIR: every request but this statement needs an OAuth 2 bearer
/// token; the `oauth-uris` extension names the endpoints (SMART App Launch
/// 2.0 also publishes them at `.well-known/smart-configuration`).
fn security(oauth: &auth::Endpoints) -> Value {
    json!({
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
                "display": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": oauth.authorize},
                {"url": "token", "valueUri": oauth.token},
                {"url": "revoke", "valueUri": oauth.revoke},
                {"url": "introspect", "valueUri": oauth.introspect}
            ]
        }]
    })
}

/// `_revinclude` values per target type: `Source:param` for every reference
/// parameter (of a type with an endpoint) that may point at the type.
fn rev_includes(registry: &Registry) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for source in fhir::definitions::resource_types().iter().filter(|t| crate::request::has_rest_endpoint(t)) {
        for param in registry.params_for(source) {
            if param.kind != ParamType::Reference || !is_supported(param) {
                continue;
            }
            for target in &param.targets {
                out.entry(target.clone()).or_default().push(format!("{source}:{}", param.code));
            }
        }
    }
    out
}

/// Chains and reverse chains end with any supported parameter of the
/// referenced type (`fhir::search::chain`).
const CHAIN_DOCUMENTATION: &str =
    "Chaining is supported at any depth ([param]:[Type].[param], or [param].[param] across every target type that has the parameter), and so is reverse chaining with _has, nested.";

/// Full-text search syntax (`fhir::search::text`).
const TEXT_DOCUMENTATION: &str = "Full-text search: _text in the narrative, _content in every text of the resource (not in code systems, URLs, references or profiles). Words (case and accents ignored) must all occur; \"quoted words\" must be adjacent and in order; a trailing * makes the last word a prefix; OR or a comma gives alternatives.";

fn resource_entry(resource_type: &str, registry: &Registry, rev_includes: &[String]) -> Value {
    let params = registry.params_for(resource_type);
    let search_params: Vec<Value> = params
        .iter()
        .filter(|p| is_supported(p))
        .map(|p| {
            let mut param = json!({ "name": p.code, "definition": p.url, "type": p.kind.code() });
            if p.kind == ParamType::Reference
                && let Some(o) = param.as_object_mut()
            {
                o.insert("documentation".into(), Value::from(CHAIN_DOCUMENTATION));
            }
            if matches!(p.code.as_str(), "_text" | "_content")
                && let Some(o) = param.as_object_mut()
            {
                o.insert("documentation".into(), Value::from(TEXT_DOCUMENTATION));
            }
            param
        })
        .collect();
    // `_include` (search.html#include): every reference parameter, and `*`.
    let mut includes: Vec<String> = params
        .iter()
        .filter(|p| p.kind == ParamType::Reference && is_supported(p))
        .map(|p| format!("{resource_type}:{}", p.code))
        .collect();
    if !includes.is_empty() {
        includes.push("*".to_string());
    }
    let mut entry = json!({
        "type": resource_type,
        "interaction": INTERACTIONS.iter().map(|c| json!({ "code": c })).collect::<Vec<_>>(),
        // Updates honour If-Match (412 on a stale version), which is what
        // `versioned-update` states beyond `versioned`.
        "versioning": "versioned-update",
        "readHistory": true,
        "updateCreate": true,
        "conditionalCreate": true,
        "conditionalRead": "not-supported",
        "conditionalUpdate": true,
        "conditionalDelete": "single",
    });
    if let Some(o) = entry.as_object_mut().filter(|_| !includes.is_empty()) {
        o.insert("searchInclude".into(), json!(includes));
    }
    if let Some(o) = entry.as_object_mut().filter(|_| !rev_includes.is_empty()) {
        o.insert("searchRevInclude".into(), json!(rev_includes));
    }
    if let Some(o) = entry.as_object_mut().filter(|_| !search_params.is_empty()) {
        o.insert("searchParam".into(), Value::Array(search_params));
    }
    let operations: Vec<Value> = OPERATIONS
        .iter()
        .filter(|(t, ..)| *t == resource_type)
        .map(|(_, name, definition)| json!({ "name": name, "definition": definition }))
        .collect();
    if let Some(o) = entry.as_object_mut().filter(|_| !operations.is_empty()) {
        o.insert("operation".into(), Value::Array(operations));
    }
    entry
}

/// The operations implemented (`crates/api/src/operations.rs`): resource type, name, and
/// the canonical OperationDefinition of the core specification.
const OPERATIONS: &[(&str, &str, &str)] = &[
    ("Patient", "everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything"),
    ("Observation", "lastn", "http://hl7.org/fhir/OperationDefinition/Observation-lastn"),
];

/// The parameters `fhir::search::query::parse` evaluates: the full-text
/// `_text` and `_content` (`fhir::search::text`), and otherwise not special
/// ones, not those without an expression, nor the result and filter
/// parameters it refuses (`_list`, `_query`, `_filter`).
/// `phonetic` (Patient, Person, Practitioner, RelatedPerson, Organization,
/// InsurancePlan) promises "some kind of phonetic matching algorithm"; a
/// plain string match is not that, so it is not advertised.
fn is_supported(param: &SearchParamDef) -> bool {
    if matches!(param.code.as_str(), "_text" | "_content") {
        return true;
    }
    param.kind != ParamType::Special
        && param.expression.is_some()
        && !matches!(param.code.as_str(), "_list" | "_query" | "_filter" | "phonetic")
}
