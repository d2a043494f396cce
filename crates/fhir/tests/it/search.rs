//! Search: the generated SearchParameter table is not stale, every core
//! expression compiles, extraction over the official examples, agreement of
//! index values with parsed queries, and extraction speed.
#![allow(clippy::unwrap_used)]

#[path = "../../../../xtask/src/search_params.rs"]
#[allow(dead_code, unreachable_pub)]
mod search_params;

use crate::examples::load_examples;
use fhir::fhirpath;
use fhir::search::query::{Match, parse};
use fhir::search::{IndexEntry, IndexValue, ParamType, Registry, extract, params_for, search_param};
use serde_json::Value;
use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fails when `crates/fhir/definitions/search-parameters.json` differs from
/// what `cargo xtask codegen` writes from `xtask/vendor/search-parameters.json.gz`.
#[test]
fn search_parameter_table_is_not_stale() {
    let root = workspace_root();
    let rendered = search_params::render_from_vendor(&root).expect("the generator runs on the vendored input");
    let committed = std::fs::read_to_string(root.join(search_params::OUTPUT)).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is stale: run `cargo xtask codegen` and commit the result",
        search_params::OUTPUT
    );
    // Every core parameter of the package (1,375 with a standards status, plus _filter).
    assert_eq!(rendered.lines().count() - 2, 1376);
}

/// Every expression of every core parameter (and of every composite
/// component) compiles, and applies to each of its base types.
#[test]
fn every_core_expression_compiles_for_each_base() {
    let table: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join(search_params::OUTPUT)).unwrap_or_default())
            .expect("table parses");
    let mut failures = Vec::new();
    let mut compiled = 0;
    for param in &table {
        let url = param["url"].as_str().unwrap_or_default();
        let mut expressions: Vec<&str> = param["expression"].as_str().into_iter().collect();
        expressions.extend(param["component"].as_array().into_iter().flatten().filter_map(|c| c["expression"].as_str()));
        for text in expressions {
            match fhirpath::compile(text) {
                Ok(expr) => {
                    compiled += 1;
                    for base in param["base"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if expr.for_resource_type(base).is_empty() {
                            failures.push(format!("{url}: nothing applies to {base}"));
                        }
                    }
                }
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(compiled > 1400, "{compiled}");
}

fn values<'a>(entries: &'a [IndexEntry], param: &str) -> Vec<&'a IndexValue> {
    entries.iter().filter(|e| e.param == param).map(|e| &e.value).collect()
}

fn example(name: &str) -> Value {
    crate::examples::read_gz_json(&crate::examples::examples_dir().join("r4").join(format!("{name}.gz")))
}

#[test]
fn extraction_over_the_official_examples() {
    let mut total = 0;
    for (name, resource) in load_examples() {
        let entries = extract(&resource);
        let rt = resource["resourceType"].as_str().unwrap_or_default();
        for entry in &entries {
            // Derived values (`code:of-type`, `code:identifier`,
            // `code:canonical`) are indexed beside the parameter's own.
            let (code, derived) = match entry.param.split_once(':') {
                Some((code, derived)) => (code, Some(derived)),
                None => (entry.param.as_str(), None),
            };
            let def = search_param(rt, code).unwrap_or_else(|| panic!("{name}: {} is not a {rt} parameter", entry.param));
            let derived_matches = matches!(
                (derived, def.kind, &entry.value),
                (Some("of-type"), ParamType::Token, IndexValue::Token { .. })
                    | (Some("identifier"), ParamType::Reference, IndexValue::Token { .. })
                    | (Some("canonical"), ParamType::Quantity, IndexValue::Quantity { .. })
                    | (Some("canonical"), ParamType::Composite, IndexValue::Composite(_))
            );
            assert!(derived.is_none() || derived_matches, "{name}: {} indexed as {:?}", entry.param, entry.value);
            let kind_matches = derived.is_some() || matches!(
                (def.kind, &entry.value),
                (ParamType::Composite, IndexValue::Composite(_))
                    | (ParamType::String, IndexValue::String { .. })
                    | (ParamType::Token, IndexValue::Token { .. })
                    | (ParamType::Reference, IndexValue::Reference { .. })
                    | (ParamType::Date, IndexValue::Date { .. })
                    | (ParamType::Number, IndexValue::Number { .. })
                    | (ParamType::Quantity, IndexValue::Quantity { .. })
                    | (ParamType::Uri, IndexValue::Uri { .. })
            );
            assert!(kind_matches, "{name}: {} indexed as {:?}", entry.param, entry.value);
            if let IndexValue::Date { low, high } = entry.value {
                assert!(low <= high, "{name}: {} range", entry.param);
            }
        }
        total += entries.len();
    }
    assert!(total > 5_000, "{total}");

    let obs = extract(&example("Observation-example.json"));
    assert!(values(&obs, "code").iter().any(|v| matches!(v,
        IndexValue::Token { system: Some(s), code: Some(c), .. } if s == "http://loinc.org" && c == "29463-7")));
    assert!(values(&obs, "subject").iter().any(|v| matches!(v,
        IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } if t == "Patient" && id == "example")));
    assert_eq!(values(&obs, "patient"), values(&obs, "subject"));
    assert!(matches!(values(&obs, "value-quantity").as_slice(),
        [IndexValue::Quantity { low, high, code: Some(code), .. }, ..] if *low == 184.5 && *high == 185.5 && code == "[lb_av]"));

    let patient = extract(&example("Patient-example.json"));
    assert!(values(&patient, "family").iter().any(|v| matches!(v, IndexValue::String { exact, .. } if exact == "Chalmers")));
    assert!(values(&patient, "identifier").iter().any(|v| matches!(v, IndexValue::Token { code: Some(c), .. } if c == "12345")));
}

/// A query for a value as written in a resource covers the indexed range.
#[test]
fn query_ranges_agree_with_index_ranges() {
    let patient = extract(&example("Patient-example.json"));
    let birth = patient.iter().find(|e| e.param == "birthdate").map(|e| e.value.clone());
    let parsed = parse(&Registry::core(), Some("Patient"), &[("birthdate".into(), "1974-12-25".into())], false).expect("parses");
    let Match::Date { low, high, .. } = parsed.query.filters[0].any_of[0].matcher else { panic!("a date") };
    assert_eq!(birth, Some(IndexValue::Date { low, high }));

    let obs = extract(&example("Observation-example.json"));
    let parsed = parse(&Registry::core(), Some("Observation"), &[("value-quantity".into(), "185|http://unitsofmeasure.org|[lb_av]".into())], false)
        .expect("parses");
    // UCUM units are searched among the values indexed in canonical units.
    let condition = &parsed.query.filters[0].any_of[0];
    assert_eq!(condition.param, "value-quantity:canonical");
    let Match::Quantity { low, high, .. } = condition.matcher else { panic!("a quantity") };
    assert!(values(&obs, &condition.param).iter().any(|v| matches!(v, IndexValue::Quantity { low: l, high: h, .. } if *l == low && *h == high)));
    let parsed = parse(&Registry::core(), Some("Observation"), &[("value-quantity".into(), "185||[lb_av]".into())], false)
        .expect("parses");
    let condition = &parsed.query.filters[0].any_of[0];
    let Match::Quantity { low, high, .. } = condition.matcher else { panic!("a quantity") };
    assert!(values(&obs, &condition.param).iter().any(|v| matches!(v, IndexValue::Quantity { low: l, high: h, .. } if *l == low && *h == high)));
}

#[test]
fn every_parameter_of_a_type_parses_in_a_query() {
    for def in params_for("Observation") {
        let value = match def.kind {
            ParamType::String => "x",
            ParamType::Token => "http://loinc.org|1",
            ParamType::Reference => "Patient/1",
            ParamType::Date => "ge2024-01",
            ParamType::Number => "1.5",
            ParamType::Quantity => "5.4|http://unitsofmeasure.org|mg",
            ParamType::Uri => "http://x",
            ParamType::Composite | ParamType::Special => continue,
        };
        if def.expression.is_none() || def.code == "_id" {
            continue;
        }
        let result = parse(&Registry::core(), Some("Observation"), &[(def.code.clone(), value.into())], false);
        assert!(result.is_ok(), "{}: {result:?}", def.code);
    }
}

/// Extraction speed. Debug builds are far slower than release, so the bound
/// is generous; the measured time is printed (`cargo test --release -- --nocapture`).
#[test]
fn extraction_is_fast() {
    for name in ["Patient-example.json", "Observation-example.json"] {
        let resource = example(name);
        let _ = extract(&resource); // compile the extractors first
        let rounds = 200u32;
        let start = std::time::Instant::now();
        let mut n = 0;
        for _ in 0..rounds {
            n += extract(&resource).len();
        }
        let each = start.elapsed() / rounds;
        eprintln!("extract({name}): {each:?} per resource, {} entries", n / rounds as usize);
        assert!(each.as_millis() < 5, "{name}: {each:?}");
    }
}
