//! The validation corpus (`test_data/validation/{ok,err}`), robustness under arbitrary input,
//! and the validator's speed.
//!
//! Each `err/NAME.json` breaks exactly one rule; `err/NAME.expect` holds the FHIRPath
//! expression and the issue code expected (`Patient.name[0].given[1] structure`). The test
//! requires an error with that code at that expression, and no error anywhere else.

use crate::examples::load_examples;
use fhir::Issue;
use fhir::validation::validate;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn corpus(kind: &str) -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/validation").join(kind);
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string(), p))
        .collect();
    out.sort();
    out
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read case");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn describe(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("{} [{}] {}", i.expression.as_deref().unwrap_or("-"), i.code.code(), i.diagnostics))
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn invalid_corpus_is_rejected_at_the_expected_expression() {
    let cases = corpus("err");
    assert!(cases.len() >= 60, "only {} invalid cases", cases.len());
    let mut failures = Vec::new();
    let mut codes = std::collections::BTreeSet::new();
    for (name, path) in &cases {
        let expect = std::fs::read_to_string(path.with_extension("expect")).unwrap_or_else(|_| panic!("{name}.expect"));
        let (expression, code) = expect.trim().split_once(' ').unwrap_or_else(|| panic!("{name}.expect: EXPRESSION CODE"));
        codes.insert(code.to_string());
        let issues: Vec<Issue> = validate(&read_json(path)).into_iter().filter(Issue::is_error).collect();
        let hit = issues.iter().any(|i| i.expression.as_deref() == Some(expression) && i.code.code() == code);
        let elsewhere = issues.iter().any(|i| i.expression.as_deref() != Some(expression));
        if !hit || elsewhere {
            failures.push(format!("{name}: expected {expression} [{code}], got: {}", describe(&issues)));
        }
    }
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
    for code in ["structure", "value", "required", "code-invalid", "invalid"] {
        assert!(codes.contains(code), "no case for issue code {code}");
    }
}

#[test]
fn valid_corpus_is_accepted() {
    let cases = corpus("ok");
    assert!(cases.len() >= 5);
    for (name, path) in &cases {
        let issues = validate(&read_json(path));
        assert!(!issues.iter().any(Issue::is_error), "{name}: {}", describe(&issues));
    }
}

#[test]
fn diagnostics_do_not_echo_values() {
    let secret = "Zebediah-Quixote-1970";
    let patient = json!({"resourceType": "Patient", "name": [{"family": secret, "given": [secret, ""]}],
                         "birthDate": secret, "telecom": [{"system": "phone", "value": secret, "use": "home"}], "active": secret,
                         "text": {"status": "generated", "div": secret}, "managingOrganization": {"reference": secret}});
    let issues = validate(&patient);
    assert!(issues.len() >= 4, "{}", describe(&issues));
    for issue in issues {
        assert!(!issue.diagnostics.contains("Zebediah"), "{}", issue.diagnostics);
    }
}

/// Validation of a ~1 KB resource takes on the order of microseconds in an optimised build.
/// This prints the measured time (run `cargo test -p fhir --release --test it speed -- --nocapture`)
/// and, in every build, bounds it loosely so a gross regression fails.
#[test]
fn validation_speed() {
    let observation = json!({
        "resourceType": "Observation", "id": "bp-1", "meta": {"versionId": "1", "lastUpdated": "2024-01-01T10:00:00Z"},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}], "text": "Blood pressure"},
        "subject": {"reference": "Patient/example"}, "encounter": {"reference": "Encounter/e1"},
        "effectiveDateTime": "2024-01-01T09:30:00+01:00", "issued": "2024-01-01T10:00:00.000Z",
        "performer": [{"reference": "Practitioner/pr1"}],
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N"}]}],
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 80.5, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    });
    let size = observation.to_string().len();
    assert!((900..1400).contains(&size), "sample is {size} bytes");
    assert!(validate(&observation).is_empty());
    let rounds: u32 = std::env::var("VALIDATION_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2000);
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(validate(std::hint::black_box(&observation)));
    }
    let per = start.elapsed() / rounds;
    eprintln!("validate: {per:?} per {size}-byte Observation");
    assert!(per.as_micros() < 2000, "validation takes {per:?}");
}

/// A constructed value can nest deeper than any parsed JSON (serde_json stops at 128 levels):
/// the validator stops following it instead of exhausting a worker thread's stack.
#[test]
fn deep_nesting_is_bounded() {
    let mut extension = json!({"url": "http://example.org/leaf", "valueString": "x"});
    // Built by hand: json! would serialise the interpolated value recursively.
    for _ in 0..5000 {
        let mut map = serde_json::Map::new();
        map.insert("url".into(), Value::String("http://example.org/n".into()));
        map.insert("extension".into(), Value::Array(vec![extension]));
        extension = Value::Object(map);
    }
    let mut map = serde_json::Map::new();
    map.insert("resourceType".into(), Value::String("Patient".into()));
    map.insert("extension".into(), Value::Array(vec![extension]));
    let patient = Value::Object(map);
    let issues = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let issues = validate(&patient);
            // Dropping a 5000-level value recursively needs a deep stack too; leak it here.
            std::mem::forget(patient);
            issues
        })
        .expect("spawn")
        .join()
        .expect("validation does not overflow the stack");
    assert!(issues.iter().any(|i| i.is_error() && i.diagnostics.contains("nested too deeply")));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9#:/ _.-]{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["Patient", "Observation", "Bundle", "#", "Patient/1", "2020-01-01", "final", "<div>"])
            .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let keys = prop::sample::select(vec![
            "resourceType", "id", "name", "_name", "given", "_given", "contained", "entry", "resource", "valueString",
            "value", "extension", "url", "reference", "text", "div", "status", "code", "coding", "meta", "versionId",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// Replaces the value at the `pick`-th node (pre-order) of `value` with `replacement`.
fn mutate(value: &mut Value, pick: &mut usize, replacement: &Value) -> bool {
    if *pick == 0 {
        *value = replacement.clone();
        return true;
    }
    *pick -= 1;
    match value {
        Value::Array(items) => items.iter_mut().any(|v| mutate(v, pick, replacement)),
        Value::Object(map) => map.values_mut().any(|v| mutate(v, pick, replacement)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics(value in arb_json(), resource_type in prop::sample::select(vec!["Patient", "Bundle", "Observation", "Questionnaire"])) {
        let _ = validate(&value);
        let mut wrapped = value;
        if let Value::Object(map) = &mut wrapped {
            map.insert("resourceType".into(), Value::String(resource_type.to_string()));
        }
        let _ = validate(&wrapped);
    }

    #[test]
    fn mutated_examples_never_panic(index in 0usize..10_000, node in 0usize..400, replacement in arb_json()) {
        let examples = EXAMPLES.with(|e| e.clone());
        let (_, example) = &examples[index % examples.len()];
        let mut mutated = example.clone();
        let mut pick = node;
        mutate(&mut mutated, &mut pick, &replacement);
        let _ = validate(&mutated);
    }
}

thread_local! {
    static EXAMPLES: std::rc::Rc<Vec<(String, Value)>> = std::rc::Rc::new(
        load_examples().into_iter().filter(|(_, v)| v.to_string().len() < 20_000).collect()
    );
}
