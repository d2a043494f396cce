//! Acceptance: the official R4 instance examples are valid, except the committed list of
//! genuinely invalid ones (`test_data/examples/known-invalid.txt`, each with its reason).
//!
//! The examples are the instance files of the npm package `hl7.fhir.r4.examples@4.0.1`
//! (CC0), gzipped one per file under `test_data/examples/r4/`. Left out: the conformance and
//! terminology resources (StructureDefinition, SearchParameter, ValueSet, CodeSystem,
//! ConceptMap, OperationDefinition, CapabilityStatement, CompartmentDefinition, NamingSystem,
//! ImplementationGuide, StructureMap, TerminologyCapabilities), which are definitions rather
//! than instance data, and the examples over 1 MiB (listed with the reason "size").

use fhir::Issue;
use fhir::validation::validate;
use flate2::read::GzDecoder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub(crate) fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/examples")
}

/// Every committed example as (file name without `.gz`, parsed JSON), sorted by name.
pub(crate) fn load_examples() -> Vec<(String, Value)> {
    let dir = examples_dir().join("r4");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    names.sort();
    names.iter().map(|path| (file_stem(path), read_gz_json(path))).collect()
}

fn file_stem(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default().trim_end_matches(".gz").to_string()
}

pub(crate) fn read_gz_json(path: &Path) -> Value {
    let mut text = String::new();
    GzDecoder::new(std::fs::File::open(path).expect("open example"))
        .read_to_string(&mut text)
        .expect("gunzip example");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `known-invalid.txt`: `FILE: reason` per line; `#` comments.
fn known_invalid() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(examples_dir().join("known-invalid.txt")).expect("known-invalid.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, reason) = l.split_once(": ").unwrap_or_else(|| panic!("bad line {l:?}"));
            assert!(!reason.trim().is_empty(), "{name}: no reason");
            (name.to_string(), reason.to_string())
        })
        .collect()
}

fn describe(issues: &[Issue]) -> String {
    issues
        .iter()
        .filter(|i| i.is_error())
        .map(|i| format!("    {} [{}] {}", i.expression.as_deref().unwrap_or("-"), i.code.code(), i.diagnostics))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn official_examples_are_valid_except_the_known_invalid() {
    let known = known_invalid();
    let examples = load_examples();
    assert!(examples.len() >= 700, "only {} examples", examples.len());
    let mut unexpected = Vec::new();
    let mut stale = Vec::new();
    for (name, resource) in &examples {
        let issues = validate(resource);
        let failed = issues.iter().any(Issue::is_error);
        match (failed, known.get(name)) {
            (true, None) => unexpected.push(format!("{name}:\n{}", describe(&issues))),
            (false, Some(reason)) => stale.push(format!("{name} (listed as: {reason})")),
            (true, Some(reason)) if reason == "size" => stale.push(format!("{name} is committed but listed as size")),
            _ => {}
        }
    }
    let committed: Vec<&String> = examples.iter().map(|(n, _)| n).collect();
    for (name, reason) in &known {
        if reason != "size" && !committed.contains(&name) {
            stale.push(format!("{name} is listed but not committed"));
        }
    }
    assert!(unexpected.is_empty(), "{} examples rejected:\n{}", unexpected.len(), unexpected.join("\n"));
    assert!(stale.is_empty(), "known-invalid.txt is out of date:\n{}", stale.join("\n"));
}

/// The core definitions vendored for code generation (StructureDefinitions, ValueSets,
/// CodeSystems, SearchParameters) are themselves valid R4 resources: a check of the
/// conformance resource types, which the instance examples leave out. The exceptions are
/// genuinely invalid core SearchParameters: extension parameters published without `base`
/// (SearchParameter.base is 1..*), and one whose id is 67 characters (ids are at most 64).
const INVALID_CORE_SEARCH_PARAMETERS: &[&str] = &[
    "codesystem-extensions-CodeSystem-author",
    "codesystem-extensions-CodeSystem-effective",
    "codesystem-extensions-CodeSystem-end",
    "codesystem-extensions-CodeSystem-keyword",
    "codesystem-extensions-CodeSystem-workflow",
    "questionnaireresponse-extensions-QuestionnaireResponse-item-subject",
    "valueset-extensions-ValueSet-author",
    "valueset-extensions-ValueSet-effective",
    "valueset-extensions-ValueSet-end",
    "valueset-extensions-ValueSet-keyword",
    "valueset-extensions-ValueSet-workflow",
];

#[test]
fn vendored_core_definitions_are_valid() {
    let vendor = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../xtask/vendor");
    let mut checked = 0;
    let mut rejected = Vec::new();
    for file in ["structure-definitions.json.gz", "value-sets.json.gz", "code-systems.json.gz", "search-parameters.json.gz"] {
        let list = read_gz_json(&vendor.join(file));
        for resource in list.as_array().expect("a JSON array") {
            let issues = validate(resource);
            let id = resource.get("id").and_then(Value::as_str).unwrap_or("?");
            let known = file == "search-parameters.json.gz" && INVALID_CORE_SEARCH_PARAMETERS.contains(&id);
            if issues.iter().any(Issue::is_error) != known {
                rejected.push(format!("{file} {id} (listed invalid: {known}):\n{}", describe(&issues)));
            }
            checked += 1;
        }
    }
    assert!(checked > 2000, "only {checked} definitions");
    assert!(rejected.is_empty(), "{} definitions not as expected:\n{}", rejected.len(), rejected.join("\n"));
}
