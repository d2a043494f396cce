//! Search modifiers and parameter types that need more than one plain value:
//! token `:of-type`, `:in`/`:not-in` stored ValueSets, `:above`/`:below`
//! stored CodeSystem hierarchies, reference `:identifier`, composite
//! parameters, and UCUM quantities in canonical units
//! (<http://hl7.org/fhir/R4/search.html>).

use crate::support::*;
use serde_json::{Value, json};

per_backend!(
    token_of_type_and_reference_identifier,
    token_in_and_not_in_stored_value_sets,
    token_above_and_below_a_code_system_hierarchy,
    unknown_terminology_is_a_bad_request,
    composite_components_match_within_one_element,
    quantities_compare_in_canonical_ucum_units,
);

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const CS: &str = "http://example.org/fhir/CodeSystem/findings";

fn ids(bundle: &Value) -> Vec<String> {
    let mut out: Vec<String> = bundle["entry"]
        .as_array()
        .map(|e| e.iter().map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

async fn found(s: &Server, path: &str) -> Vec<String> {
    let response = s.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    ids(&fhir_body(response).await)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn observation(system: &str, code: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": system, "code": code}]}})
}

async fn token_of_type_and_reference_identifier(s: Server) {
    let typed = s
        .create(json!({"resourceType": "Patient", "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:mrn", "value": "12345"
        }]}))
        .await;
    s.create(json!({"resourceType": "Patient", "identifier": [{
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "DL"}]},
        "system": "urn:dl", "value": "12345"
    }]}))
    .await;
    assert_eq!(
        found(&s, "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345").await,
        vec![typed.clone()]
    );
    assert!(
        found(&s, "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|999").await.is_empty()
    );
    assert_eq!(found(&s, "Patient?identifier=12345").await.len(), 2);
    expect_outcome(s.get("Patient?identifier:of-type=MR|12345").await, 400).await;

    let by_identifier = s
        .create(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"identifier": {"system": "urn:mrn", "value": "12345"}}}))
        .await;
    s.create(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": format!("Patient/{typed}")}}))
        .await;
    assert_eq!(found(&s, "Observation?subject:identifier=urn:mrn|12345").await, vec![by_identifier.clone()]);
    assert_eq!(found(&s, "Observation?subject:identifier=12345").await, vec![by_identifier]);
    assert!(found(&s, "Observation?subject:identifier=urn:other|12345").await.is_empty());
}

/// A CodeSystem with a hierarchy: disorder > {infection > {pneumonia, sepsis}, fracture};
/// `cough` names `infection` as parent by property.
async fn code_system(s: &Server) -> String {
    s.create(json!({
        "resourceType": "CodeSystem", "url": CS, "status": "active", "content": "complete",
        "hierarchyMeaning": "is-a",
        "concept": [
            {"code": "disorder", "concept": [
                {"code": "infection", "concept": [{"code": "pneumonia"}, {"code": "sepsis"}]},
                {"code": "fracture"}
            ]},
            {"code": "cough", "property": [{"code": "parent", "valueCode": "infection"}]},
            {"code": "healthy"}
        ]
    }))
    .await
}

async fn findings(s: &Server) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for code in ["pneumonia", "sepsis", "fracture", "cough", "healthy", "infection"] {
        out.push((s.create(observation(CS, code)).await, code));
    }
    out.push((s.create(observation(LOINC, "8867-4")).await, "heart-rate"));
    out
}

fn having(all: &[(String, &str)], codes: &[&str]) -> Vec<String> {
    sorted(all.iter().filter(|(_, c)| codes.contains(c)).map(|(id, _)| id.clone()).collect())
}

async fn token_in_and_not_in_stored_value_sets(s: Server) {
    code_system(&s).await;
    let all = findings(&s).await;
    // Explicit concepts plus a LOINC code.
    let explicit = s
        .create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/explicit", "status": "active",
        "compose": {"include": [
            {"system": CS, "concept": [{"code": "fracture"}, {"code": "healthy"}]},
            {"system": LOINC, "concept": [{"code": "8867-4"}]}
        ]}}))
        .await;
    // An is-a filter over the stored hierarchy, minus one code.
    s.create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/infections", "status": "active",
    "compose": {
        "include": [{"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "infection"}]}],
        "exclude": [{"system": CS, "concept": [{"code": "sepsis"}]}]
    }}))
    .await;
    // Imports, a whole system, and a precomputed expansion.
    s.create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/imports", "status": "active",
    "compose": {"include": [
        {"valueSet": ["http://example.org/vs/infections"]},
        {"valueSet": ["http://example.org/vs/explicit"], "system": LOINC}
    ]}}))
    .await;
    s.create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/loinc", "status": "active",
        "compose": {"include": [{"system": LOINC}]}}))
        .await;
    s.create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/expanded", "status": "active",
    "expansion": {"timestamp": "2024-01-01T00:00:00Z", "contains": [
        {"system": CS, "code": "cough"},
        {"abstract": true, "display": "group", "contains": [{"system": CS, "code": "healthy"}]}
    ]}}))
    .await;

    let code_in = |vs: &str| format!("Observation?code:in={vs}");
    assert_eq!(
        found(&s, &code_in("http://example.org/vs/explicit")).await,
        having(&all, &["fracture", "healthy", "heart-rate"])
    );
    assert_eq!(
        found(&s, &code_in(&format!("ValueSet/{explicit}"))).await,
        having(&all, &["fracture", "healthy", "heart-rate"]),
        "a ValueSet by id"
    );
    assert_eq!(
        found(&s, &code_in("http://example.org/vs/infections")).await,
        having(&all, &["infection", "pneumonia", "cough"]),
        "is-a includes the code itself and descendants by nesting and by parent property; sepsis is excluded"
    );
    assert_eq!(
        found(&s, &code_in("http://example.org/vs/imports")).await,
        having(&all, &["infection", "pneumonia", "cough", "heart-rate"]),
        "an import intersected with a system keeps that system's codes only"
    );
    assert_eq!(found(&s, &code_in("http://example.org/vs/loinc")).await, having(&all, &["heart-rate"]));
    assert_eq!(found(&s, &code_in("http://example.org/vs/expanded")).await, having(&all, &["cough", "healthy"]));
    // Two value sets in one parameter are OR.
    assert_eq!(
        found(&s, &code_in("http://example.org/vs/loinc,http://example.org/vs/expanded")).await,
        having(&all, &["cough", "healthy", "heart-rate"])
    );
    assert_eq!(
        found(&s, "Observation?code:not-in=http://example.org/vs/infections").await,
        having(&all, &["sepsis", "fracture", "healthy", "heart-rate"])
    );
    // AND with a plain token search.
    assert_eq!(
        found(&s, "Observation?code:in=http://example.org/vs/explicit&code=8867-4").await,
        having(&all, &["heart-rate"])
    );
}

async fn token_above_and_below_a_code_system_hierarchy(s: Server) {
    code_system(&s).await;
    let all = findings(&s).await;
    assert_eq!(
        found(&s, &format!("Observation?code:below={CS}|infection")).await,
        having(&all, &["infection", "pneumonia", "sepsis", "cough"])
    );
    assert_eq!(
        found(&s, &format!("Observation?code:below={CS}|disorder")).await,
        having(&all, &["infection", "pneumonia", "sepsis", "cough", "fracture"])
    );
    assert_eq!(
        found(&s, &format!("Observation?code:above={CS}|pneumonia")).await,
        having(&all, &["pneumonia", "infection"])
    );
    assert_eq!(found(&s, &format!("Observation?code:above={CS}|cough")).await, having(&all, &["cough", "infection"]));
    assert_eq!(found(&s, &format!("Observation?code:below={CS}|healthy")).await, having(&all, &["healthy"]));
    // A code the CodeSystem does not define subsumes only itself.
    assert!(found(&s, &format!("Observation?code:below={CS}|unknown")).await.is_empty());
}

async fn unknown_terminology_is_a_bad_request(s: Server) {
    s.create(observation(LOINC, "8867-4")).await;
    let outcome = expect_outcome(s.get("Observation?code:in=http://example.org/vs/nowhere").await, 400).await;
    assert_eq!(outcome["issue"][0]["expression"][0], "code:in", "{outcome}");
    expect_outcome(s.get("Observation?code:not-in=ValueSet/nowhere").await, 400).await;
    expect_outcome(s.get("Observation?code:below=http://example.org/no-such-system|1").await, 400).await;
    expect_outcome(s.get("Observation?code:below=1").await, 400).await;
    // An unsupported filter operator.
    s.create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/regex", "status": "active",
        "compose": {"include": [{"system": LOINC, "filter": [{"property": "COMPONENT", "op": "regex", "value": ".*"}]}]}}))
    .await;
    let outcome = expect_outcome(s.get("Observation?code:in=http://example.org/vs/regex").await, 400).await;
    assert_eq!(outcome["issue"][0]["code"], "not-supported", "{outcome}");
    // A value set importing itself.
    s.create(json!({"resourceType": "ValueSet", "url": "http://example.org/vs/loop", "status": "active",
        "compose": {"include": [{"valueSet": ["http://example.org/vs/loop"]}]}}))
        .await;
    expect_outcome(s.get("Observation?code:in=http://example.org/vs/loop").await, 400).await;
    // Lenient handling does not hide a missing value set (the value is bad, not the parameter).
    let response = s
        .request(reqwest::Method::GET, "Observation?code:in=http://example.org/vs/nowhere")
        .header("Prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

fn blood_pressure(systolic: u32, diastolic: u32) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
             "valueQuantity": {"value": systolic, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
             "valueQuantity": {"value": diastolic, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}}
        ]
    })
}

async fn composite_components_match_within_one_element(s: Server) {
    let high = s.create(blood_pressure(150, 95)).await;
    // Systolic low, diastolic 150: the code 8480-6 and a value above 140
    // occur, but on different components.
    let crossed = s.create(blood_pressure(90, 150)).await;
    let weight = s
        .create(json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
            "valueQuantity": {"value": 80, "unit": "kg", "system": UCUM, "code": "kg"}}))
        .await;
    let positive = s
        .create(json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "94500-6"}]},
            "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "10828004"}]}}))
        .await;

    let sys = format!("{LOINC}|8480-6");
    assert_eq!(found(&s, &format!("Observation?component-code-value-quantity={sys}$gt140")).await, vec![high.clone()]);
    assert_eq!(
        found(&s, &format!("Observation?component-code-value-quantity={sys}$lt100")).await,
        vec![crossed.clone()]
    );
    assert_eq!(
        found(&s, &format!("Observation?component-code-value-quantity={sys}$150|{UCUM}|mm[Hg]")).await,
        vec![high.clone()]
    );
    // In kPa: 150 mmHg is about 20.0 kPa.
    assert_eq!(
        found(&s, &format!("Observation?component-code-value-quantity={sys}$gt19|{UCUM}|kPa")).await,
        vec![high.clone()],
        "component quantities compare in canonical units too"
    );
    assert_eq!(
        found(&s, &format!("Observation?combo-code-value-quantity={sys}$gt140,{LOINC}|29463-7$ge80")).await,
        sorted(vec![high.clone(), weight.clone()])
    );
    assert_eq!(found(&s, &format!("Observation?code-value-quantity={LOINC}|29463-7$gt79")).await, vec![weight.clone()]);
    assert!(
        found(&s, &format!("Observation?code-value-quantity={LOINC}|8480-6$gt1")).await.is_empty(),
        "not a component"
    );
    assert_eq!(
        found(&s, &format!("Observation?code-value-concept={LOINC}|94500-6$http://snomed.info/sct|10828004")).await,
        vec![positive.clone()]
    );
    // :missing on a composite.
    assert_eq!(
        found(&s, "Observation?component-code-value-quantity:missing=true").await,
        sorted(vec![weight.clone(), positive.clone()])
    );
    assert_eq!(
        found(&s, "Observation?component-code-value-quantity:missing=false").await,
        sorted(vec![high.clone(), crossed.clone()])
    );
    expect_outcome(s.get(&format!("Observation?component-code-value-quantity={sys}")).await, 400).await;
    expect_outcome(s.get("Observation?_sort=code-value-quantity").await, 400).await;

    let group = s
        .create(json!({"resourceType": "Group", "type": "person", "actual": true, "characteristic": [
            {"code": {"coding": [{"system": "http://example.org/c", "code": "gender"}]},
             "valueCodeableConcept": {"coding": [{"system": "http://hl7.org/fhir/administrative-gender", "code": "female"}]},
             "exclude": false}
        ]}))
        .await;
    assert_eq!(
        found(
            &s,
            "Group?characteristic-value=http://example.org/c|gender$http://hl7.org/fhir/administrative-gender|female"
        )
        .await,
        vec![group]
    );
    assert!(found(&s, "Group?characteristic-value=http://example.org/c|gender$male").await.is_empty());
}

fn quantity(value: &str, code: &str) -> Value {
    let text = format!(
        r#"{{"resourceType": "Observation", "status": "final", "code": {{"text": "dose"}},
            "valueQuantity": {{"value": {value}, "unit": "{code}", "system": "{UCUM}", "code": "{code}"}}}}"#
    );
    serde_json::from_str(&text).unwrap()
}

async fn quantities_compare_in_canonical_ucum_units(s: Server) {
    let mg500 = s.create(quantity("500", "mg")).await;
    let g2 = s.create(quantity("2", "g")).await;
    let kg1 = s.create(quantity("1.0", "kg")).await;
    let celsius = s.create(quantity("37", "Cel")).await;
    let v = |q: &str| format!("Observation?value-quantity={q}");
    assert_eq!(found(&s, &v(&format!("0.5|{UCUM}|g"))).await, vec![mg500.clone()], "0.5 g finds 500 mg");
    assert_eq!(found(&s, &v(&format!("500|{UCUM}|mg"))).await, vec![mg500.clone()]);
    assert_eq!(
        found(&s, &v(&format!("2000|{UCUM}|mg"))).await,
        Vec::<String>::new(),
        "2 g is [1.5, 2.5] g: wider than 2000 mg"
    );
    assert_eq!(found(&s, &v(&format!("2|{UCUM}|g"))).await, vec![g2.clone()]);
    assert_eq!(found(&s, &v(&format!("gt1|{UCUM}|g"))).await, sorted(vec![g2.clone(), kg1.clone()]));
    assert_eq!(found(&s, &v(&format!("lt0.001|{UCUM}|kg"))).await, vec![mg500.clone()]);
    assert_eq!(found(&s, &v(&format!("ge1000|{UCUM}|g"))).await, vec![kg1.clone()]);
    assert_eq!(
        found(&s, &v(&format!("ne0.5|{UCUM}|g"))).await,
        sorted(vec![g2.clone(), kg1.clone()]),
        "ne in canonical units: not 500 mg, and not the Celsius value"
    );
    assert_eq!(found(&s, &v(&format!("37|{UCUM}|Cel"))).await, vec![celsius.clone()], "non-linear units as written");
    assert_eq!(found(&s, &v("500||mg")).await, vec![mg500.clone()], "without a system, the code as written");
    assert_eq!(found(&s, "Observation?value-quantity:missing=false").await.len(), 4);
}
