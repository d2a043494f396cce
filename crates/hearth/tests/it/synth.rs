//! `hearth generate`: the synthetic patients are valid FHIR R4 (checked with
//! the core validator), their references resolve, and the same seed writes
//! the same bytes.

use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

fn generate(out: &Path, seed: u64, patients: usize, ndjson: bool) {
    let mut command = Command::new(BIN);
    command
        .arg("generate")
        .arg("--out")
        .arg(out)
        .args(["--patients", &patients.to_string(), "--seed", &seed.to_string()]);
    if ndjson {
        command.arg("--ndjson");
    }
    let output = command.output().expect("hearth generate runs");
    assert!(output.status.success(), "hearth generate failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
}

fn errors_of(resource: &Value) -> Vec<String> {
    fhir::validation::validate(resource)
        .into_iter()
        .filter(|issue| issue.is_error())
        .map(|issue| format!("{:?} at {:?}: {}", issue.code, issue.expression, issue.diagnostics))
        .collect()
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("reference", Value::String(s)) => out.push(s.clone()),
                    _ => collect_references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        _ => {}
    }
}

#[test]
fn generated_ndjson_is_valid_fhir_r4_with_resolved_references() {
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(tmp.path(), 21, 8, true);
    let mut checked = 0;
    let mut ids = HashSet::new();
    let mut references = Vec::new();
    let mut types = HashSet::new();
    for path in files(tmp.path()) {
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("ndjson"));
        let text = std::fs::read_to_string(&path).expect("read");
        for line in text.lines() {
            let resource: Value = serde_json::from_str(line).expect("one JSON resource per line");
            let errors = errors_of(&resource);
            assert!(errors.is_empty(), "{} is invalid: {errors:?}", resource["resourceType"]);
            let resource_type = resource["resourceType"].as_str().expect("resourceType").to_string();
            ids.insert(format!("{resource_type}/{}", resource["id"].as_str().expect("id")));
            collect_references(&resource, &mut references);
            types.insert(resource_type);
            checked += 1;
        }
    }
    assert!(checked >= 300, "only {checked} resources");
    for expected in [
        "Patient", "Practitioner", "Organization", "Encounter", "Condition", "Observation", "MedicationRequest",
        "Immunization", "Procedure", "DiagnosticReport",
    ] {
        assert!(types.contains(expected), "no {expected} among {types:?}");
    }
    for reference in references {
        assert!(ids.contains(&reference), "unresolved reference {reference}");
    }
}

#[test]
fn generated_transaction_bundles_are_valid_fhir_r4() {
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(tmp.path(), 5, 4, false);
    let bundles = files(tmp.path());
    assert_eq!(bundles.len(), 4);
    for path in bundles {
        let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        assert_eq!(bundle["type"], "transaction");
        let errors = errors_of(&bundle);
        assert!(errors.is_empty(), "{} is invalid: {errors:?}", path.display());
        let entries = bundle["entry"].as_array().expect("entries");
        assert!((40..=60).contains(&entries.len()), "{} entries", entries.len());
    }
}

#[test]
fn the_same_seed_writes_the_same_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    generate(&a, 42, 3, true);
    generate(&b, 42, 3, true);
    generate(&c, 43, 3, true);
    let read = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        files(dir)
            .into_iter()
            .map(|p| (p.file_name().map(PathBuf::from).unwrap_or_default(), std::fs::read(&p).expect("read")))
            .collect()
    };
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
}
