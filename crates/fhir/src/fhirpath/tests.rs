//! Tests of the FHIRPath subset over the forms used by the core search parameters.

use super::*;
use serde_json::json;

fn eval_json(expr: &str, resource: &Value) -> Vec<Value> {
    let compiled = compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    compiled
        .evaluate(resource)
        .into_iter()
        .map(|item| match item {
            Item::Node { value, .. } => value.clone(),
            Item::Boolean(b) => json!(b),
            Item::Integer(i) => json!(i),
            Item::String(s) => json!(s),
            Item::Decimal(d) | Item::DateTime(d) => json!(d),
            Item::Resolved { type_name } => json!({ "resolved": type_name }),
        })
        .collect()
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "extension": [{"url": "http://example.org/race", "valueString": "x"}],
        "identifier": [{"system": "urn:mrn", "value": "1"}, {"system": "urn:ssn", "value": "2"}],
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"]}, {"use": "nickname", "given": ["JD"]}],
        "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "j@x.org"}],
        "deceasedBoolean": false,
        "generalPractitioner": [{"reference": "Practitioner/9"}, {"reference": "#org1"}],
        "managingOrganization": {"reference": "http://other.org/fhir/Organization/7/_history/2"},
        "contained": [{"resourceType": "Organization", "id": "org1", "name": "Clinic"}]
    })
}

#[test]
fn navigates_paths_and_flattens_arrays() {
    let p = patient();
    assert_eq!(eval_json("Patient.name.given", &p), vec![json!("Jane"), json!("Q"), json!("JD")]);
    assert_eq!(eval_json("name.family", &p), vec![json!("Doe")]);
    assert_eq!(eval_json("Observation.code", &p), Vec::<Value>::new());
    assert_eq!(eval_json("Resource.id", &p), vec![json!("p1")]);
    assert_eq!(eval_json("DomainResource.id", &p), vec![json!("p1")]);
}

#[test]
fn unions_deduplicate_and_keep_order() {
    let p = patient();
    assert_eq!(eval_json("Patient.name.family | Patient.name.family | Patient.id", &p), vec![json!("Doe"), json!("p1")]);
    assert_eq!(eval_json("Observation.code | Patient.id", &p), vec![json!("p1")]);
}

#[test]
fn large_unions_stay_linear() {
    let members: Vec<Value> = (0..20_000).map(|i| json!({"entity": {"reference": format!("Patient/{i}")}})).collect();
    let group = json!({"resourceType": "Group", "member": members});
    let start = std::time::Instant::now();
    let expr = compile("Group.member.entity | Group.member.entity | Group.id").unwrap();
    let items = expr.evaluate(&group);
    assert_eq!(items.len(), 20_000);
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
}

#[test]
fn where_with_equality_and_string_literals() {
    let p = patient();
    assert_eq!(eval_json("Patient.telecom.where(system='email').value", &p), vec![json!("j@x.org")]);
    assert_eq!(eval_json("Patient.name.where(use = 'official' and given.exists()).family", &p), vec![json!("Doe")]);
    assert_eq!(eval_json("Patient.name.where(family.empty()).given", &p), vec![json!("JD")]);
}

#[test]
fn resolve_is_type_uses_reference_text_and_contained() {
    let p = patient();
    assert_eq!(
        eval_json("Patient.generalPractitioner.where(resolve() is Practitioner)", &p),
        vec![json!({"reference": "Practitioner/9"})]
    );
    assert_eq!(
        eval_json("Patient.generalPractitioner.where(resolve() is Organization)", &p),
        vec![json!({"reference": "#org1"})]
    );
    assert_eq!(eval_json("Patient.generalPractitioner[1].resolve().name", &p), vec![json!("Clinic")]);
    assert_eq!(
        eval_json("Patient.managingOrganization.where(resolve() is Organization)", &p).len(),
        1,
        "absolute URLs with _history resolve to their type"
    );
    let by_type = json!({"resourceType": "Observation", "subject": {"type": "Patient", "identifier": {"value": "1"}}});
    assert_eq!(eval_json("Observation.subject.where(resolve() is Patient)", &by_type).len(), 1);
    let unknown = json!({"resourceType": "Observation", "subject": {"reference": "urn:uuid:1234"}});
    assert!(eval_json("Observation.subject.where(resolve() is Patient)", &unknown).is_empty());
}

#[test]
fn choice_types_with_as_and_of_type() {
    let obs = json!({
        "resourceType": "Observation",
        "valueQuantity": {"value": 1.5, "unit": "mg"},
        "component": [
            {"valueCodeableConcept": {"text": "a"}},
            {"valueQuantity": {"value": 2}},
            {"valueString": "s"}
        ]
    });
    assert_eq!(eval_json("Observation.value as Quantity", &obs), vec![json!({"value": 1.5, "unit": "mg"})]);
    assert_eq!(eval_json("(Observation.value as Quantity).unit", &obs), vec![json!("mg")]);
    assert!(eval_json("Observation.value as CodeableConcept", &obs).is_empty());
    assert_eq!(eval_json("Observation.value.as(Quantity).value", &obs), vec![json!(1.5)]);
    assert_eq!(eval_json("Observation.component.value.ofType(Quantity).value", &obs), vec![json!(2)]);
    assert_eq!(eval_json("(Observation.component.value as CodeableConcept).text", &obs), vec![json!("a")]);
    assert_eq!(eval_json("Observation.component.value.as(string)", &obs), vec![json!("s")]);
    assert_eq!(eval_json("Observation.value is Quantity", &obs), vec![json!(true)]);
    assert_eq!(eval_json("Observation.value.is(FHIR.Age)", &obs), vec![json!(false)]);
    // An Age is a Quantity (datatypes.html#Age).
    let age = json!({"resourceType": "Condition", "onsetAge": {"value": 40}});
    assert_eq!(eval_json("Condition.onset.as(Quantity).value", &age), vec![json!(40)]);
    // valueSet is not value of type "Set".
    let vs = json!({"resourceType": "X", "valueSet": "http://vs"});
    assert!(eval_json("value", &vs).is_empty());
    // dateTime written as the JSON suffix DateTime.
    let c = json!({"resourceType": "Condition", "onsetDateTime": "2020"});
    assert_eq!(eval_json("Condition.onset.as(dateTime) | Condition.onset.as(Period)", &c), vec![json!("2020")]);
    assert_eq!(eval_json("value.as(DateTime)", &json!({"valueDateTime": "2021"})), vec![json!("2021")]);
}

#[test]
fn deceased_expression_three_valued_logic() {
    let expr = "Patient.deceased.exists() and Patient.deceased != false";
    assert_eq!(eval_json(expr, &json!({"resourceType": "Patient"})), vec![json!(false)]);
    assert_eq!(eval_json(expr, &json!({"resourceType": "Patient", "deceasedBoolean": false})), vec![json!(false)]);
    assert_eq!(eval_json(expr, &json!({"resourceType": "Patient", "deceasedBoolean": true})), vec![json!(true)]);
    assert_eq!(eval_json(expr, &json!({"resourceType": "Patient", "deceasedDateTime": "2020"})), vec![json!(true)]);
}

#[test]
fn extension_indexers_and_collection_functions() {
    let p = patient();
    assert_eq!(eval_json("Patient.extension('http://example.org/race').value", &p), vec![json!("x")]);
    assert_eq!(eval_json("Patient.extension.where(url='http://example.org/race').valueString", &p), vec![json!("x")]);
    assert_eq!(eval_json("Patient.identifier[1].value", &p), vec![json!("2")]);
    assert!(eval_json("Patient.identifier[5]", &p).is_empty());
    assert_eq!(eval_json("Patient.name.first().family", &p), vec![json!("Doe")]);
    assert_eq!(eval_json("Patient.name.last().given", &p), vec![json!("JD")]);
    assert_eq!(eval_json("Patient.name.given.count()", &p), vec![json!(3)]);
    assert_eq!(eval_json("Patient.name.given.skip(1).take(1)", &p), vec![json!("Q")]);
    assert_eq!(eval_json("Patient.name.given.tail().first()", &p), vec![json!("Q")]);
    assert_eq!(eval_json("Patient.birthDate.empty()", &p), vec![json!(true)]);
    assert_eq!(eval_json("Patient.birthDate.exists().not()", &p), vec![json!(true)]);
    assert_eq!(eval_json("Patient.name.exists(use = 'nickname')", &p), vec![json!(true)]);
    assert_eq!(eval_json("Patient.name.all(given.exists())", &p), vec![json!(true)]);
    assert_eq!(eval_json("Patient.name.select(given.first())", &p), vec![json!("Jane"), json!("JD")]);
    assert_eq!(eval_json("'phone' in Patient.telecom.system", &p), vec![json!(true)]);
    assert_eq!(eval_json("Patient.telecom.system contains 'fax'", &p), vec![json!(false)]);
    assert_eq!(eval_json("Patient.id.startsWith('p') and Patient.id.endsWith('1')", &p), vec![json!(true)]);
    assert_eq!(eval_json("Patient.name.given.where($this ~ 'jane')", &p), vec![json!("Jane")]);
    assert_eq!(eval_json("%resource.id", &p), vec![json!("p1")]);
    assert_eq!(eval_json("Patient.identifier.count() > 1", &p), vec![json!(true)]);
    assert_eq!(eval_json("{}", &p), Vec::<Value>::new());
    assert_eq!(eval_json("Patient.`id`", &p), vec![json!("p1")]);
    assert_eq!(eval_json("-1.50", &p), vec![json!("-1.50")]);
}

#[test]
fn specialization_prunes_other_resource_types() {
    let expr = compile("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | Resource.id").unwrap();
    let care_plan = expr.for_resource_type("CarePlan");
    assert!(!care_plan.is_empty());
    let p = json!({"resourceType": "CarePlan", "id": "c", "subject": {"reference": "Patient/1"}});
    assert_eq!(care_plan.evaluate(&p).len(), 2);
    assert_eq!(expr.evaluate(&p).len(), 2);
    assert!(compile("Observation.code | Condition.code").unwrap().for_resource_type("Patient").is_empty());
    // exists() of nothing is still false, not nothing.
    let e = compile("Observation.code.exists()").unwrap().for_resource_type("Patient");
    assert_eq!(e.evaluate(&json!({"resourceType": "Patient"})), vec![Item::Boolean(false)]);
}

#[test]
fn hostile_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(compile(&deep).is_err());
    assert!(compile(&"+".repeat(100_000)).is_err());
    assert!(compile(&vec!["a"; 10_000].join(".")).is_err());
    assert!(compile(&vec!["a"; 10_000].join(" and ")).is_err());
    let path = vec!["a"; 50].join(".");
    assert!(compile(&path).unwrap().evaluate(&json!({"a": {"a": 1}})).is_empty());
    let chained = format!("x{}", " | x".repeat(10_000));
    assert!(compile(&chained).is_ok(), "long flat unions are fine");
    assert!(compile(&format!("{}1", "-".repeat(5))).is_err());
}

#[test]
fn compile_errors_are_values() {
    for bad in ["", "Patient.", "Patient.name.where(", "a + b", "foo()", "Patient.name[", "1 'mg'", "$index", "%x", "a b", "(a"] {
        assert!(compile(bad).is_err(), "{bad:?} should not compile");
    }
}

#[test]
fn locate_finds_paths_for_patch() {
    let p = patient();
    let expr = compile("Patient.telecom.where(system='email').value").unwrap();
    let found = expr.locate(&p).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].location.steps,
        vec![Step::Key("telecom".into()), Step::Index(1), Step::Key("value".into())]
    );
    let found = compile("Patient.name[0].given.last()").unwrap().locate(&p).unwrap();
    assert_eq!(found[0].location.get(&p), Some(&json!("Q")));
    let found = compile("Patient.deceased").unwrap().locate(&p).unwrap();
    assert_eq!(found[0].location.steps, vec![Step::Key("deceasedBoolean".into())]);
    let found = compile("Patient.generalPractitioner[1].resolve().name").unwrap().locate(&p).unwrap();
    assert_eq!(found[0].location.steps, vec![Step::Key("contained".into()), Step::Index(0), Step::Key("name".into())]);
    assert!(compile("Patient.name.count()").unwrap().locate(&p).is_err());
    assert!(compile("Patient.id | Patient.name").unwrap().locate(&p).is_err());
}

#[test]
fn every_core_search_expression_compiles() {
    let table: Value = serde_json::from_str(include_str!("../../definitions/search-parameters.json")).unwrap();
    let mut count = 0;
    for param in table.as_array().unwrap() {
        let mut exprs: Vec<&str> = param.get("expression").and_then(Value::as_str).into_iter().collect();
        if let Some(components) = param.get("component").and_then(Value::as_array) {
            exprs.extend(components.iter().filter_map(|c| c.get("expression").and_then(Value::as_str)));
        }
        for expr in exprs {
            compile(expr).unwrap_or_else(|e| panic!("{}: {expr}: {e}", param["url"]));
            count += 1;
        }
    }
    assert!(count > 1400, "{count}");
}

#[test]
fn never_panics_on_arbitrary_text() {
    use proptest::prelude::*;
    proptest!(|(text in "[A-Za-z().|'=!\\[\\]0-9 ,$%`{}<>~-]{0,40}")| {
        if let Ok(expr) = compile(&text) {
            let _ = expr.evaluate(&patient());
            let _ = expr.locate(&patient());
        }
    });
}
