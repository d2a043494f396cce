//! Extraction tests: one resource per data-type mapping of search.html.

use super::*;
use crate::search::ranges::date_range;
use serde_json::json;

fn entries(resource: &Value, param: &str) -> Vec<IndexValue> {
    extract(resource).into_iter().filter(|e| e.param == param).map(|e| e.value).collect()
}

fn s(exact: &str) -> IndexValue {
    IndexValue::String { normalized: normalize_string(exact), exact: exact.to_string() }
}

fn tok(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
    IndexValue::Token {
        system: system.map(str::to_string),
        code: code.map(str::to_string),
        text: text.map(str::to_string),
    }
}

fn date(text: &str) -> IndexValue {
    let (low, high) = date_range(text).unwrap();
    IndexValue::Date { low, high }
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "meta": {
            "lastUpdated": "2024-01-01T00:00:00Z",
            "tag": [{"system": "http://t", "code": "t1", "display": "Tag One"}],
            "security": [{"system": "http://s", "code": "R"}],
            "profile": ["http://example.org/StructureDefinition/p"],
            "source": "http://source.example.org"
        },
        "identifier": [{"system": "urn:mrn", "value": "12345", "type": {"text": "Medical Record Number"}}],
        "active": true,
        "name": [{"use": "official", "family": "Núñez", "given": ["María", "José"], "prefix": ["Dr."], "text": "Dr. María José Núñez"}],
        "telecom": [{"system": "phone", "value": "555-1234"}, {"system": "email", "value": "m@example.org"}],
        "gender": "female",
        "birthDate": "1980-05",
        "address": [{"line": ["1 Main St", "Apt 2"], "city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US"}],
        "deceasedDateTime": "2024-02-03T10:00:00+01:00",
        "generalPractitioner": [{"reference": "Practitioner/dr-1"}, {"reference": "http://other.org/fhir/Practitioner/9"}],
        "managingOrganization": {"reference": "Organization/org-1/_history/3"},
        "link": [{"other": {"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}, "type": "seealso"}]
    })
}

#[test]
fn strings_from_human_name_and_address() {
    let p = patient();
    assert_eq!(entries(&p, "family"), vec![s("Núñez")]);
    assert_eq!(entries(&p, "given"), vec![s("María"), s("José")]);
    assert_eq!(
        entries(&p, "name"),
        vec![s("Núñez"), s("María"), s("José"), s("Dr."), s("Dr. María José Núñez")],
        "name covers family, given, prefix, suffix and text"
    );
    assert_eq!(entries(&p, "family")[0], IndexValue::String { normalized: "nunez".into(), exact: "Núñez".into() });
    assert_eq!(
        entries(&p, "address"),
        vec![s("1 Main St"), s("Apt 2"), s("Springfield"), s("IL"), s("62701"), s("US")]
    );
    assert_eq!(entries(&p, "address-city"), vec![s("Springfield")]);
    assert_eq!(entries(&p, "address-postalcode"), vec![s("62701")]);
}

#[test]
fn tokens_from_identifier_contact_point_code_and_boolean() {
    let p = patient();
    assert_eq!(entries(&p, "identifier"), vec![tok(Some("urn:mrn"), Some("12345"), Some("medical record number"))]);
    assert_eq!(entries(&p, "phone"), vec![tok(Some("phone"), Some("555-1234"), None)]);
    assert_eq!(entries(&p, "email"), vec![tok(Some("email"), Some("m@example.org"), None)]);
    assert_eq!(entries(&p, "telecom").len(), 2);
    assert_eq!(entries(&p, "gender"), vec![tok(None, Some("female"), None)]);
    assert_eq!(entries(&p, "active"), vec![tok(None, Some("true"), None)]);
    assert_eq!(entries(&p, "deceased"), vec![tok(None, Some("true"), None)]);
    let alive = json!({"resourceType": "Patient"});
    assert_eq!(entries(&alive, "deceased"), vec![tok(None, Some("false"), None)]);
}

#[test]
fn common_resource_parameters_are_indexed_but_not_id_or_last_updated() {
    let p = patient();
    assert_eq!(entries(&p, "_tag"), vec![tok(Some("http://t"), Some("t1"), Some("tag one"))]);
    assert_eq!(entries(&p, "_security"), vec![tok(Some("http://s"), Some("R"), None)]);
    assert_eq!(entries(&p, "_profile"), vec![IndexValue::Uri { value: "http://example.org/StructureDefinition/p".into() }]);
    assert_eq!(entries(&p, "_source"), vec![IndexValue::Uri { value: "http://source.example.org".into() }]);
    assert!(entries(&p, "_id").is_empty());
    assert!(entries(&p, "_lastUpdated").is_empty());
}

#[test]
fn references_relative_absolute_and_urn() {
    let p = patient();
    assert_eq!(
        entries(&p, "general-practitioner"),
        vec![
            IndexValue::Reference {
                target_type: Some("Practitioner".into()),
                target_id: Some("dr-1".into()),
                url: "Practitioner/dr-1".into()
            },
            IndexValue::Reference { target_type: None, target_id: None, url: "http://other.org/fhir/Practitioner/9".into() },
        ]
    );
    assert_eq!(
        entries(&p, "organization"),
        vec![IndexValue::Reference {
            target_type: Some("Organization".into()),
            target_id: Some("org-1".into()),
            url: "Organization/org-1".into()
        }],
        "the version of a versioned reference is dropped"
    );
    assert_eq!(
        entries(&p, "link"),
        vec![IndexValue::Reference {
            target_type: None,
            target_id: None,
            url: "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0".into()
        }]
    );
}

#[test]
fn reference_where_resolve_is_type_selects_by_target_type() {
    let obs = json!({"resourceType": "Observation", "subject": {"reference": "Group/g1"}});
    assert!(entries(&obs, "patient").is_empty());
    assert_eq!(entries(&obs, "subject").len(), 1);
    let obs = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}});
    assert_eq!(entries(&obs, "patient"), entries(&obs, "subject"));
}

#[test]
fn dates_from_primitives_periods_and_timing() {
    let p = patient();
    assert_eq!(entries(&p, "birthdate"), vec![date("1980-05")]);
    assert_eq!(entries(&p, "death-date"), vec![date("2024-02-03T10:00:00+01:00")]);
    let enc = json!({"resourceType": "Encounter", "period": {"start": "2024-01-01", "end": "2024-01-03T12:00:00Z"}});
    assert_eq!(
        entries(&enc, "date"),
        vec![IndexValue::Date { low: date_range("2024-01-01").unwrap().0, high: date_range("2024-01-03T12:00:00Z").unwrap().1 }]
    );
    let open = json!({"resourceType": "Encounter", "period": {"start": "2024-01-01"}});
    assert_eq!(entries(&open, "date"), vec![IndexValue::Date { low: date_range("2024-01-01").unwrap().0, high: i64::MAX }]);
    let sr = json!({"resourceType": "ServiceRequest", "occurrenceTiming": {
        "event": ["2024-03-05", "2024-03-01"],
        "repeat": {"boundsPeriod": {"start": "2024-03-02", "end": "2024-04-01"}}
    }});
    assert_eq!(
        entries(&sr, "occurrence"),
        vec![IndexValue::Date { low: date_range("2024-03-01").unwrap().0, high: date_range("2024-04-01").unwrap().1 }]
    );
    let bad = json!({"resourceType": "Patient", "birthDate": "not a date"});
    assert!(entries(&bad, "birthdate").is_empty());
}

#[test]
fn observation_quantity_codeable_concept_and_choice_types() {
    let obs = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}], "text": "Weight"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T10:15:00Z",
        "valueQuantity": {"value": 72.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"text": "note"}, "valueString": "fine"}
        ]
    });
    assert_eq!(
        entries(&obs, "code"),
        vec![tok(Some("http://loinc.org"), Some("29463-7"), Some("body weight")), tok(None, None, Some("weight"))]
    );
    assert_eq!(entries(&obs, "status"), vec![tok(None, Some("final"), None)]);
    assert_eq!(entries(&obs, "date"), vec![date("2024-03-01T10:15:00Z")]);
    // json! would turn 72.50 into 72.5: parse text to keep the written precision.
    let mut obs = obs;
    obs["valueQuantity"] = serde_json::from_str(
        r#"{"value": 72.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}"#,
    )
    .unwrap();
    let quantities = entries(&obs, "value-quantity");
    let [IndexValue::Quantity { low, high, system, code }] = quantities.as_slice() else {
        panic!("one quantity expected: {quantities:?}")
    };
    assert!((low - 72.495).abs() < 1e-9 && (high - 72.505).abs() < 1e-9, "precision of 72.50 is kept");
    assert_eq!((system.as_deref(), code.as_deref()), (Some("http://unitsofmeasure.org"), Some("kg")));
    // In canonical units, apart.
    let canonical = entries(&obs, "value-quantity:canonical");
    let [IndexValue::Quantity { low, high, system, code }] = canonical.as_slice() else { panic!("{canonical:?}") };
    assert!((low - 72_495.0).abs() < 1e-6 && (high - 72_505.0).abs() < 1e-6, "kg in grams");
    assert_eq!((system.as_deref(), code.as_deref()), (Some("http://unitsofmeasure.org"), Some("g")));
    // The component's unit differs from its code, so both are searchable,
    // and mm[Hg] is also indexed in base units.
    let component = entries(&obs, "component-value-quantity");
    assert_eq!(component.len(), 2);
    assert!(matches!(&component[1], IndexValue::Quantity { system: None, code: Some(c), .. } if c == "mmHg"));
    let canonical = entries(&obs, "component-value-quantity:canonical");
    assert!(matches!(canonical.as_slice(), [IndexValue::Quantity { code: Some(c), .. }] if c == "g.m-1.s-2"));
    assert_eq!(entries(&obs, "component-code").len(), 2);
    assert!(entries(&obs, "value-concept").is_empty());
    let string_obs = json!({"resourceType": "Observation", "valueCodeableConcept": {"text": "Positive"}});
    assert_eq!(entries(&string_obs, "value-string"), vec![s("Positive")]);
    assert_eq!(entries(&string_obs, "value-concept"), vec![tok(None, None, Some("positive"))]);
}

#[test]
fn numbers_uris_and_canonicals() {
    let ra = json!({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 1}, "high": {"value": 2}}}]});
    assert_eq!(
        entries(&ra, "probability"),
        vec![IndexValue::Number { low: 0.245, high: 0.255 }, IndexValue::Number { low: 0.5, high: 2.5 }]
    );
    let vs = json!({"resourceType": "ValueSet", "url": "http://example.org/vs", "version": "1"});
    assert_eq!(entries(&vs, "url"), vec![IndexValue::Uri { value: "http://example.org/vs".into() }]);
    assert_eq!(entries(&vs, "version"), vec![tok(None, Some("1"), None)]);
    let q = json!({"resourceType": "QuestionnaireResponse", "questionnaire": "http://example.org/q|2.0"});
    assert_eq!(
        entries(&q, "questionnaire"),
        vec![
            IndexValue::Reference { target_type: None, target_id: None, url: "http://example.org/q|2.0".into() },
            IndexValue::Reference { target_type: None, target_id: None, url: "http://example.org/q".into() },
        ]
    );
}

#[test]
fn money_range_and_duplicates() {
    let ci = json!({"resourceType": "ChargeItem", "priceOverride": {"value": 10.5, "currency": "USD"}});
    assert_eq!(
        entries(&ci, "price-override"),
        vec![IndexValue::Quantity { low: 10.45, high: 10.55, system: Some("urn:iso:std:iso:4217".into()), code: Some("USD".into()) }]
    );
    let c = json!({"resourceType": "Condition", "code": {"coding": [
        {"system": "http://snomed.info/sct", "code": "1"},
        {"system": "http://snomed.info/sct", "code": "1"}
    ]}});
    assert_eq!(entries(&c, "code").len(), 1, "equal values are indexed once");
}

#[test]
fn odd_input_does_not_panic() {
    for value in [
        json!(null),
        json!([]),
        json!({"resourceType": 5}),
        json!({"resourceType": "Nope", "meta": {"tag": "x"}}),
        json!({"resourceType": "Patient", "name": "x", "birthDate": 5, "telecom": [null, 1, {"value": null}],
               "address": [{"line": 7}], "identifier": {"system": []}}),
        json!({"resourceType": "Observation", "valueQuantity": {"value": "1"}, "effectivePeriod": {"start": 1}}),
    ] {
        let _ = extract(&value);
    }
    assert!(extract(&json!({"resourceType": "Nope"})).is_empty());
}

#[test]
fn every_resource_type_with_parameters_compiles_extractors() {
    for rt in crate::search::params::resource_types() {
        let _ = extract(&json!({"resourceType": rt, "id": "x"}));
    }
    assert!(COMPILED.by_type.len() > 130);
}

#[test]
fn large_resources_extract_in_linear_time() {
    let members: Vec<Value> = (0..20_000).map(|i| json!({"entity": {"reference": format!("Patient/{i}")}})).collect();
    let group = json!({"resourceType": "Group", "id": "g", "member": members});
    let start = std::time::Instant::now();
    assert_eq!(entries(&group, "member").len(), 20_000);
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

fn loinc(code: &str) -> IndexValue {
    tok(Some("http://loinc.org"), Some(code), None)
}

fn ucum(low: f64, high: f64, code: &str) -> IndexValue {
    IndexValue::Quantity { low, high, system: Some("http://unitsofmeasure.org".into()), code: Some(code.into()) }
}

#[test]
fn composites_are_indexed_per_element() {
    let bp: Value = serde_json::from_str(
        r#"{"resourceType": "Observation",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}], "text": "BP"},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 120, "system": "http://unitsofmeasure.org", "code": "g"}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {"value": 80, "system": "http://unitsofmeasure.org", "code": "g"}}
            ]}"#,
    )
    .unwrap();
    // One value per component, pairing each component's own code and value.
    assert_eq!(
        entries(&bp, "component-code-value-quantity"),
        vec![
            IndexValue::Composite(vec![loinc("8480-6"), ucum(119.5, 120.5, "g")]),
            IndexValue::Composite(vec![loinc("8462-4"), ucum(79.5, 80.5, "g")]),
        ]
    );
    // Every combo- is searched through the Observation's parameter and its
    // components' (query.rs, COMBINED): none is indexed itself.
    for combo in ["combo-code", "combo-code-value-quantity", "combo-value-quantity", "combo-value-quantity:canonical"] {
        assert!(entries(&bp, combo).is_empty(), "{combo}");
    }
    assert_eq!(entries(&bp, "component-code").len(), 2);
    assert!(entries(&bp, "code-value-quantity").is_empty(), "the Observation itself has no value");

    // Several values of one component: every combination, canonical units too.
    let weight: Value = serde_json::from_str(
        r#"{"resourceType": "Observation",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}, {"system": "http://s", "code": "w"}]},
            "valueQuantity": {"value": 500, "system": "http://unitsofmeasure.org", "code": "mg"}}"#,
    )
    .unwrap();
    let values = entries(&weight, "code-value-quantity");
    assert_eq!(values.len(), 2, "{values:?}");
    assert!(values.contains(&IndexValue::Composite(vec![loinc("29463-7"), ucum(499.5, 500.5, "mg")])));
    let canonical = entries(&weight, "code-value-quantity:canonical");
    assert_eq!(canonical.len(), 2, "{canonical:?}");
    assert!(canonical.contains(&IndexValue::Composite(vec![loinc("29463-7"), ucum(0.4995, 0.5005, "g")])));

    let group = json!({"resourceType": "Group", "characteristic": [
        {"code": {"text": "gender"}, "valueCodeableConcept": {"coding": [{"system": "http://s", "code": "female"}]}},
        {"code": {"coding": [{"system": "http://s", "code": "age"}]}, "valueBoolean": true}
    ]});
    assert_eq!(
        entries(&group, "characteristic-value"),
        vec![IndexValue::Composite(vec![tok(Some("http://s"), Some("age"), None), tok(None, Some("true"), None)])],
        "a component without a code (text only) indexes nothing"
    );
    let molecular = json!({"resourceType": "MolecularSequence", "referenceSeq": {"chromosome": {"coding": [{"system": "http://c", "code": "1"}]}},
        "variant": [{"start": 10, "end": 20}]});
    assert_eq!(
        entries(&molecular, "chromosome-variant-coordinate"),
        vec![IndexValue::Composite(vec![
            tok(Some("http://c"), Some("1"), None),
            IndexValue::Number { low: 9.5, high: 10.5 },
            IndexValue::Number { low: 19.5, high: 20.5 },
        ])],
        "three components, one of them from %resource"
    );
}

#[test]
fn document_reference_relationship_pairs_target_and_code() {
    // R4 swaps the components' expressions; extraction swaps them back.
    let doc = json!({"resourceType": "DocumentReference", "relatesTo": [
        {"code": "replaces", "target": {"reference": "DocumentReference/old"}},
        {"code": "appends", "target": {"reference": "DocumentReference/other"}}
    ]});
    assert_eq!(
        entries(&doc, "relationship"),
        vec![
            IndexValue::Composite(vec![
                IndexValue::Reference {
                    target_type: Some("DocumentReference".into()),
                    target_id: Some("old".into()),
                    url: "DocumentReference/old".into()
                },
                tok(None, Some("replaces"), None),
            ]),
            IndexValue::Composite(vec![
                IndexValue::Reference {
                    target_type: Some("DocumentReference".into()),
                    target_id: Some("other".into()),
                    url: "DocumentReference/other".into()
                },
                tok(None, Some("appends"), None),
            ]),
        ]
    );
}

#[test]
fn identifier_types_and_reference_identifiers_are_indexed_for_their_modifiers() {
    let p = json!({"resourceType": "Patient", "identifier": [
        {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}, "system": "urn:mrn", "value": "12345"},
        {"type": {"text": "no coding"}, "value": "x"}
    ]});
    assert_eq!(
        entries(&p, "identifier:of-type"),
        vec![tok(Some("http://terminology.hl7.org/CodeSystem/v2-0203"), Some("MR|12345"), None)]
    );
    let obs = json!({"resourceType": "Observation", "subject": {"identifier": {"system": "urn:mrn", "value": "12345"}, "display": "x"},
        "performer": [{"reference": "Practitioner/1"}]});
    assert_eq!(entries(&obs, "subject:identifier"), vec![tok(Some("urn:mrn"), Some("12345"), None)]);
    // `patient` is `subject.where(resolve() is Patient)`: a reference by
    // identifier alone names no type, so it is not a patient reference.
    assert!(entries(&obs, "patient:identifier").is_empty());
    assert!(entries(&obs, "subject").is_empty(), "no literal reference");
    assert!(entries(&obs, "performer:identifier").is_empty());
}
