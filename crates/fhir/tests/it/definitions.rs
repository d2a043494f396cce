//! The generated definition tables: not stale, and consistent with the spec's primitive regexes.

#[path = "../../../../xtask/src/structures.rs"]
#[allow(dead_code, unreachable_pub)]
mod structures;

use fhir::validation::validate;
use serde_json::{Value, json};
use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Fails when `crates/fhir/definitions/{structures,valuesets}.json` differ from what
/// `cargo xtask codegen` would write from the vendored inputs now.
#[test]
fn generated_tables_are_not_stale() {
    let root = workspace_root();
    let rendered = structures::render_from_vendor(&root).expect("the generator runs on the vendored inputs");
    assert_eq!(rendered.len(), 2);
    for (name, text) in rendered {
        let path = root.join(structures::OUTPUT_DIR).join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: run `cargo run -p xtask -- codegen` and commit the result",
            path.display()
        );
    }
}

#[test]
fn resource_types_are_the_146_of_r4() {
    let types = fhir::definitions::resource_types();
    assert_eq!(types.len(), 146);
    assert!(types.windows(2).all(|w| w[0] < w[1]));
    assert!(fhir::definitions::is_resource_type("Patient"));
    assert!(!fhir::definitions::is_resource_type("DomainResource"));
}

/// Wraps `value` as the value of an extension of type `ty` on a Basic resource.
fn with_value(ty: &str, value: Value) -> Value {
    let mut ext = serde_json::Map::new();
    ext.insert("url".into(), json!("http://example.org/x"));
    let mut name = String::from("value");
    let mut chars = ty.chars();
    if let Some(first) = chars.next() {
        name.extend(first.to_uppercase());
        name.push_str(chars.as_str());
    }
    ext.insert(name, value);
    json!({"resourceType": "Basic", "code": {"text": "t"}, "extension": [Value::Object(ext)]})
}

fn accepted(ty: &str, value: Value) -> bool {
    !validate(&with_value(ty, value)).iter().any(fhir::Issue::is_error)
}

/// Samples that exercise the edges of each primitive's lexical space.
fn samples(ty: &str) -> Vec<&'static str> {
    let dates = vec![
        "2018", "0000", "0001", "1000", "2018-01", "2018-1", "2018-00", "2018-13", "2018-12-31", "2018-12-32",
        "2018-02-28", "2018-02-29", "2000-02-29", "2018-04-30", "2018-11-00", "2018-06-15T10:00:00Z",
        "2018-06-15T10:00:00", "2018-06-15T10:00Z", "2018-06-15T23:59:60.123+14:00", "2018-06-15T10:00:00+14:01",
        "2018-06-15T10:00:00-13:59", "2018-06-15T24:00:00Z", "2018-06-15T10:00:00.Z", "2018-06-15 10:00:00Z",
        "20180615", "2018-06-15T10:00:00z", "2018-06T10:00:00Z", "-2018", " 2018", "2018 ",
    ];
    match ty {
        "date" | "dateTime" | "instant" => dates,
        "time" => vec!["10:00:00", "23:59:60", "24:00:00", "10:00", "10:00:00.5", "10:00:00.", "9:00:00", "10:60:00", "10:00:00Z"],
        "code" => vec!["a", "a b", "a  b", " a", "a ", "a\tb", "a\u{0B}b", "ab-c_d", "Ü", "a\nb", "\u{A0}"],
        "id" => vec!["a", "A-b.9", "a_b", "a b", "0123456789012345678901234567890123456789012345678901234567890123",
                     "01234567890123456789012345678901234567890123456789012345678901234", "é"],
        "uri" | "url" | "canonical" => vec!["http://a/b", "urn:x", "a b", "#x", "http://a/b|1.0", "\u{A0}", "a\tb"],
        "oid" => vec!["urn:oid:1.2.3", "urn:oid:0.0", "urn:oid:3.1", "urn:oid:1", "urn:oid:1.02", "urn:oid:1.0", "1.2.3", "urn:oid:1.2."],
        "uuid" => vec!["urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7", "urn:uuid:53FEFA32-fcbb-4ff8-8a92-55ee120877b7",
                       "53fefa32-fcbb-4ff8-8a92-55ee120877b7", "urn:uuid:53fefa32fcbb4ff88a9255ee120877b7"],
        "base64Binary" => vec!["aGVsbG8=", "aGVsbG8", "aGVs bG8=", "aGVsbG8=\n", "a===", "aGk/", "aGk-", "YQ==YQ=="],
        "string" | "markdown" => vec!["a", " a ", "a\u{0B}b", "a\u{0C}b", "a\tb\r\n", "\u{A0}x"],
        _ => vec![],
    }
}

/// For every string primitive, the hand-written check agrees with the regex the core
/// StructureDefinition declares (anchored, as XML Schema patterns are), except where the
/// spec's prose is stricter than its regex: calendar-invalid dates (datatypes.html#date),
/// base64 padding inside the text (RFC 4648), strings of whitespace only (json.html).
#[test]
fn primitive_checks_agree_with_the_spec_regexes() {
    let table: Value =
        serde_json::from_str(include_str!("../../definitions/structures.json")).expect("structures.json parses");
    let primitives = table["primitives"].as_array().expect("primitives");
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for p in primitives {
        let (Some(name), Some(regex)) = (p["name"].as_str(), p["regex"].as_str()) else { continue };
        if matches!(name, "boolean" | "integer" | "decimal" | "positiveInt" | "unsignedInt") {
            continue; // JSON numbers and booleans: covered by the unit tests
        }
        // The spec's \s and \S are Java's ASCII classes.
        let regex = regex.replace("\\s", "[ \\t\\n\\x0B\\f\\r]").replace("\\S", "[^ \\t\\n\\x0B\\f\\r]");
        let re = regex::Regex::new(&format!("^(?:{regex})$")).expect("spec regex compiles");
        for sample in samples(name) {
            let by_regex = re.is_match(sample);
            let by_us = accepted(name, json!(sample));
            let calendar_invalid = matches!(name, "date" | "dateTime" | "instant")
                && ["-02-29", "-04-31", "-02-30", "-11-31"].iter().any(|d| sample.contains(d))
                && !sample.starts_with("2000-02-29");
            let stricter = (by_regex && !by_us)
                && (calendar_invalid || (name == "base64Binary" && matches!(sample, "YQ==YQ==" | "a===")));
            if by_regex != by_us && !stricter {
                mismatches.push(format!("{name} {sample:?}: regex {by_regex}, validator {by_us}"));
            }
            checked += 1;
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(checked > 100, "only {checked} samples checked");
}
