//! JSON Patch and FHIRPath Patch through the public API, with the examples of
//! <http://hl7.org/fhir/R4/fhirpatch.html>.
#![allow(clippy::unwrap_used)]

use fhir::IssueType;
use fhir::patch::{apply_fhirpath_patch, apply_json_patch};
use serde_json::{Value, json};

/// One FHIRPath Patch operation from (part name, part JSON) pairs.
fn operation(parts: &[(&str, Value)]) -> Value {
    let parts: Vec<Value> = parts
        .iter()
        .map(|(name, body)| {
            let mut part = json!({ "name": name });
            if let (Some(obj), Some(extra)) = (part.as_object_mut(), body.as_object()) {
                obj.extend(extra.clone());
            }
            part
        })
        .collect();
    json!({"name": "operation", "part": parts})
}

fn patch(operations: Vec<Value>) -> Value {
    json!({"resourceType": "Parameters", "parameter": operations})
}

fn ty(code: &str) -> (&'static str, Value) {
    ("type", json!({ "valueCode": code }))
}

fn path(p: &str) -> (&'static str, Value) {
    ("path", json!({ "valueString": p }))
}

fn name(n: &str) -> (&'static str, Value) {
    ("name", json!({ "valueString": n }))
}

fn int(part: &'static str, n: u64) -> (&'static str, Value) {
    (part, json!({ "valueInteger": n }))
}

fn value(v: Value) -> (&'static str, Value) {
    ("value", v)
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "example",
        "identifier": [{"system": "http://a", "value": "1"}, {"system": "http://b", "value": "2"}, {"system": "http://c", "value": "3"}],
        "active": true,
        "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
        "telecom": [{"system": "phone", "value": "555"}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "deceasedBoolean": false,
        "contained": [{"resourceType": "Organization", "id": "o1", "name": "Clinic"}],
        "managingOrganization": {"reference": "#o1"}
    })
}

fn apply(ops: Vec<Value>) -> Value {
    apply_fhirpath_patch(&patient(), &patch(ops)).unwrap_or_else(|e| panic!("{e:?}"))
}

fn fails(ops: Vec<Value>) -> fhir::Issue {
    let mut issues = apply_fhirpath_patch(&patient(), &patch(ops)).expect_err("the patch should fail");
    assert_eq!(issues.len(), 1);
    issues.remove(0)
}

#[test]
fn add_a_primitive_element() {
    let mut p = patient();
    p.as_object_mut().map(|o| o.remove("birthDate"));
    let out = apply_fhirpath_patch(
        &p,
        &patch(vec![operation(&[ty("add"), path("Patient"), name("birthDate"), value(json!({"valueDate": "1930-01-01"}))])]),
    )
    .unwrap();
    assert_eq!(out["birthDate"], json!("1930-01-01"));
}

#[test]
fn add_to_a_repeating_element_appends_and_creates_arrays() {
    let out = apply(vec![operation(&[
        ty("add"),
        path("Patient"),
        name("identifier"),
        value(json!({"valueIdentifier": {"system": "http://d", "value": "4"}})),
    ])]);
    assert_eq!(out["identifier"].as_array().map(Vec::len), Some(4));
    assert_eq!(out["identifier"][3]["value"], json!("4"));
    // An absent repeating element is created as an array (the definitions say it repeats).
    let out = apply(vec![operation(&[ty("add"), path("Patient"), name("address"), value(json!({"valueAddress": {"city": "X"}}))])]);
    assert_eq!(out["address"], json!([{"city": "X"}]));
    // A list inside a list element.
    let out = apply(vec![operation(&[ty("add"), path("Patient.name[0]"), name("given"), value(json!({"valueString": "Jim"}))])]);
    assert_eq!(out["name"][0]["given"], json!(["Peter", "James", "Jim"]));
}

#[test]
fn add_a_complex_value_from_parts() {
    // fhirpatch.html "Add a complex element": contact with nested parts.
    let out = apply(vec![operation(&[
        ty("add"),
        path("Patient"),
        name("contact"),
        value(json!({"part": [
            {"name": "name", "valueHumanName": {"text": "a name"}},
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "555"}},
            {"name": "gender", "valueCode": "female"}
        ]})),
    ])]);
    assert_eq!(
        out["contact"],
        json!([{"name": {"text": "a name"}, "telecom": [{"system": "phone", "value": "555"}], "gender": "female"}])
    );
}

#[test]
fn add_a_choice_element_takes_the_value_type() {
    let mut p = patient();
    p.as_object_mut().map(|o| o.remove("deceasedBoolean"));
    let out = apply_fhirpath_patch(
        &p,
        &patch(vec![operation(&[ty("add"), path("Patient"), name("deceased"), value(json!({"valueDateTime": "2020-01-01"}))])]),
    )
    .unwrap();
    assert_eq!(out["deceasedDateTime"], json!("2020-01-01"));
}

#[test]
fn add_fails_on_existing_single_element_and_unknown_names() {
    let issue = fails(vec![operation(&[ty("add"), path("Patient"), name("gender"), value(json!({"valueCode": "female"}))])]);
    assert_eq!(issue.code, IssueType::Processing);
    assert_eq!(issue.expression.as_deref(), Some("Parameters.parameter[0]"));
    let issue = fails(vec![operation(&[ty("add"), path("Patient"), name("favouriteColour"), value(json!({"valueString": "x"}))])]);
    assert_eq!(issue.code, IssueType::Invalid);
    let issue = fails(vec![operation(&[ty("add"), path("Patient.nothing"), name("x"), value(json!({"valueString": "x"}))])]);
    assert_eq!(issue.code, IssueType::Processing);
}

#[test]
fn insert_at_an_index() {
    let out = apply(vec![operation(&[
        ty("insert"),
        path("Patient.identifier"),
        int("index", 1),
        value(json!({"valueIdentifier": {"system": "http://x", "value": "9"}})),
    ])]);
    let systems: Vec<&str> = out["identifier"].as_array().into_iter().flatten().filter_map(|i| i["system"].as_str()).collect();
    assert_eq!(systems, ["http://a", "http://x", "http://b", "http://c"]);
    // At the end, and into an absent list.
    let out = apply(vec![operation(&[ty("insert"), path("Patient.identifier"), int("index", 3), value(json!({"valueIdentifier": {"value": "z"}}))])]);
    assert_eq!(out["identifier"][3]["value"], json!("z"));
    let out = apply(vec![operation(&[ty("insert"), path("Patient.photo"), int("index", 0), value(json!({"valueAttachment": {"title": "t"}}))])]);
    assert_eq!(out["photo"], json!([{"title": "t"}]));
    let issue = fails(vec![operation(&[ty("insert"), path("Patient.identifier"), int("index", 4), value(json!({"valueIdentifier": {"value": "z"}}))])]);
    assert_eq!(issue.code, IssueType::Processing);
    let issue = fails(vec![operation(&[ty("insert"), path("Patient.gender"), int("index", 0), value(json!({"valueCode": "male"}))])]);
    assert_eq!(issue.code, IssueType::Processing, "gender is not a list");
    let issue = fails(vec![operation(&[ty("insert"), path("Patient.identifier"), value(json!({"valueIdentifier": {}}))])]);
    assert_eq!(issue.code, IssueType::Invalid, "index is mandatory");
}

#[test]
fn delete_an_element_if_found() {
    let out = apply(vec![operation(&[ty("delete"), path("Patient.birthDate")])]);
    assert!(out.get("birthDate").is_none());
    // A list entry selected by where(); the list disappears when emptied.
    let out = apply(vec![operation(&[ty("delete"), path("Patient.telecom.where(system = 'phone')")])]);
    assert!(out.get("telecom").is_none());
    let out = apply(vec![operation(&[ty("delete"), path("Patient.identifier[1]")])]);
    assert_eq!(out["identifier"].as_array().map(Vec::len), Some(2));
    assert_eq!(out["identifier"][1]["value"], json!("3"));
    // Nothing found: no change, no error.
    assert_eq!(apply(vec![operation(&[ty("delete"), path("Patient.photo")])]), patient());
    let issue = fails(vec![operation(&[ty("delete"), path("Patient.identifier")])]);
    assert_eq!(issue.code, IssueType::Processing, "only a single element can be deleted");
    let issue = fails(vec![operation(&[ty("delete"), path("Patient")])]);
    assert_eq!(issue.code, IssueType::Invalid);
}

#[test]
fn delete_keeps_primitive_extension_arrays_in_step() {
    let p = json!({"resourceType": "Patient", "name": [{"given": ["A", "B"], "_given": [null, {"extension": [{"url": "http://x", "valueString": "y"}]}]}]});
    let out = apply_fhirpath_patch(&p, &patch(vec![operation(&[ty("delete"), path("Patient.name.given[0]")])])).unwrap();
    assert_eq!(out["name"][0]["given"], json!(["B"]));
    assert_eq!(out["name"][0]["_given"], json!([{"extension": [{"url": "http://x", "valueString": "y"}]}]));
    let p = json!({"resourceType": "Patient", "birthDate": "2000", "_birthDate": {"extension": []}});
    let out = apply_fhirpath_patch(&p, &patch(vec![operation(&[ty("delete"), path("Patient.birthDate")])])).unwrap();
    assert_eq!(out, json!({"resourceType": "Patient"}));
}

#[test]
fn replace_values() {
    let out = apply(vec![operation(&[ty("replace"), path("Patient.birthDate"), value(json!({"valueDate": "1930-01-01"}))])]);
    assert_eq!(out["birthDate"], json!("1930-01-01"));
    let out = apply(vec![operation(&[
        ty("replace"),
        path("Patient.name.where(use = 'official').given.first()"),
        value(json!({"valueString": "Pete"})),
    ])]);
    assert_eq!(out["name"][0]["given"], json!(["Pete", "James"]));
    // A choice element changing type changes name.
    let out = apply(vec![operation(&[ty("replace"), path("Patient.deceased"), value(json!({"valueDateTime": "2020"}))])]);
    assert!(out.get("deceasedBoolean").is_none());
    assert_eq!(out["deceasedDateTime"], json!("2020"));
    // Inside a contained resource reached with resolve().
    let out = apply(vec![operation(&[ty("replace"), path("Patient.managingOrganization.resolve().name"), value(json!({"valueString": "New"}))])]);
    assert_eq!(out["contained"][0]["name"], json!("New"));
    // A complex value from parts.
    let out = apply(vec![operation(&[
        ty("replace"),
        path("Patient.name[0]"),
        value(json!({"part": [{"name": "family", "valueString": "X"}, {"name": "given", "valueString": "Y"}]})),
    ])]);
    assert_eq!(out["name"][0], json!({"family": "X", "given": ["Y"]}));
    let issue = fails(vec![operation(&[ty("replace"), path("Patient.photo"), value(json!({"valueAttachment": {}}))])]);
    assert_eq!(issue.code, IssueType::Processing);
}

#[test]
fn move_within_a_list() {
    // fhirpatch.html "Move Element": source 0, destination 2.
    let out = apply(vec![operation(&[ty("move"), path("Patient.identifier"), int("source", 0), int("destination", 2)])]);
    let systems: Vec<&str> = out["identifier"].as_array().into_iter().flatten().filter_map(|i| i["system"].as_str()).collect();
    assert_eq!(systems, ["http://b", "http://c", "http://a"]);
    let issue = fails(vec![operation(&[ty("move"), path("Patient.identifier"), int("source", 0), int("destination", 3)])]);
    assert_eq!(issue.code, IssueType::Processing);
}

#[test]
fn operations_apply_in_order_and_the_first_failure_stops() {
    let out = apply(vec![
        operation(&[ty("delete"), path("Patient.birthDate")]),
        operation(&[ty("add"), path("Patient"), name("birthDate"), value(json!({"valueDate": "2001"}))]),
    ]);
    assert_eq!(out["birthDate"], json!("2001"));
    let issues = apply_fhirpath_patch(
        &patient(),
        &patch(vec![
            operation(&[ty("delete"), path("Patient.birthDate")]),
            operation(&[ty("replace"), path("Patient.birthDate"), value(json!({"valueDate": "2001"}))]),
        ]),
    )
    .unwrap_err();
    assert_eq!(issues[0].expression.as_deref(), Some("Parameters.parameter[1]"));
}

#[test]
fn malformed_patches_are_issues() {
    let bad = [
        json!({"resourceType": "Patient"}),
        json!({"resourceType": "Parameters", "parameter": {}}),
        patch(vec![json!({"name": "op"})]),
        patch(vec![operation(&[path("Patient")])]),
        patch(vec![operation(&[ty("explode"), path("Patient")])]),
        patch(vec![operation(&[ty("delete")])]),
        patch(vec![operation(&[ty("delete"), path("Patient.("), ])]),
        patch(vec![operation(&[ty("delete"), path("Patient.name.count()")])]),
        patch(vec![operation(&[ty("add"), path("Patient"), name("x")])]),
        patch(vec![operation(&[ty("delete"), path("Patient.a"), path("Patient.b")])]),
        patch(vec![operation(&[ty("delete"), path("Patient.a"), ("colour", json!({"valueString": "red"}))])]),
        patch(vec![operation(&[ty("move"), path("Patient.identifier"), int("source", 0)])]),
        patch(vec![operation(&[ty("add"), path("Patient"), name("contact"), value(json!({"valueFoo": 1}))])]),
    ];
    for (i, p) in bad.iter().enumerate() {
        let issues = apply_fhirpath_patch(&patient(), p).expect_err(&format!("case {i} should fail"));
        assert!(issues.iter().all(|x| x.is_error()), "case {i}");
    }
    assert_eq!(apply_fhirpath_patch(&patient(), &json!({"resourceType": "Parameters"})).ok(), Some(patient()));
}

#[test]
fn json_patch_reports_the_failing_operation() {
    let issues = apply_json_patch(&patient(), &json!([{"op": "remove", "path": "/gender"}, {"op": "remove", "path": "/gender"}]))
        .expect_err("the second remove fails");
    assert_eq!(issues[0].expression.as_deref(), Some("[1]"));
    let out = apply_json_patch(&patient(), &json!([{"op": "replace", "path": "/name/0/family", "value": "X"}])).ok();
    assert_eq!(out.map(|p| p["name"][0]["family"].clone()), Some(json!("X")));
}

#[test]
fn patches_never_panic() {
    use proptest::prelude::*;
    let paths = prop::sample::select(vec![
        "Patient", "Patient.name", "Patient.name[0].given", "Patient.identifier", "Patient.x.y", "Patient.telecom.where(system='phone')",
        "Patient.contained[0].name", "Patient.deceased", "(", "Patient.name.first()", "Patient.managingOrganization.resolve()",
    ]);
    let kinds = prop::sample::select(vec!["add", "insert", "delete", "replace", "move", "nope"]);
    proptest!(ProptestConfig::with_cases(400), |(p in paths, k in kinds, n in "[a-z]{0,6}", i in 0u64..5, j in 0u64..5, v in any::<i32>())| {
        let op = operation(&[ty(k), path(p), name(&n), int("index", i), int("source", i), int("destination", j), value(json!({"valueInteger": v}))]);
        let _ = apply_fhirpath_patch(&patient(), &patch(vec![op]));
        let json_op = json!([{"op": k, "path": format!("/{n}/{i}"), "value": v, "from": "/name/0"}]);
        let _ = apply_json_patch(&patient(), &json_op);
    });
}

#[test]
fn add_inherited_elements_and_extensions() {
    let out = apply(vec![
        operation(&[ty("add"), path("Patient"), name("extension"), value(json!({"part": [
            {"name": "url", "valueUri": "http://example.org/x"},
            {"name": "value", "valueString": "y"}
        ]}))]),
        operation(&[ty("add"), path("Patient"), name("meta"), value(json!({"valueMeta": {"tag": [{"code": "t"}]}}))]),
        operation(&[ty("add"), path("Patient.meta"), name("security"), value(json!({"valueCoding": {"code": "R"}}))]),
    ]);
    assert_eq!(out["extension"], json!([{"url": "http://example.org/x", "valueString": "y"}]));
    assert_eq!(out["meta"], json!({"tag": [{"code": "t"}], "security": [{"code": "R"}]}));
    let issue = fails(vec![operation(&[
        ty("replace"),
        path("Patient.extension('http://example.org/none')"),
        value(json!({"valueString": "z"})),
    ])]);
    assert_eq!(issue.code, IssueType::Processing, "replacing nothing is an error");
}
