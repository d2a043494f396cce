//! Bounded property tests: arbitrary bytes and arbitrary JSON posted to
//! `POST /fhir/Patient` never panic the server nor produce a 5xx; every
//! refusal is a 4xx OperationOutcome.

use crate::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9 _\\-\\.]{0,12}".prop_map(Value::String),
        Just(Value::String("Patient".into())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (prop_oneof![Just("resourceType".to_string()), Just("id".to_string()), Just("name".to_string()), "[a-z_]{1,8}"], inner),
                0..6
            )
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Posts `body` and checks the answer: 201 (a valid Patient) or a 4xx OperationOutcome.
async fn check(s: &Server, body: Vec<u8>, allow_created: bool) -> Result<(), TestCaseError> {
    let response = s
        .request(reqwest::Method::POST, "Patient")
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    if allow_created && status == 201 {
        return Ok(());
    }
    prop_assert!((400..500).contains(&status), "status {status}");
    let content_type = header(&response, "content-type").unwrap_or_default();
    prop_assert_eq!(content_type.as_str(), "application/fhir+json; charset=utf-8");
    let outcome: Value = response.json().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&outcome["resourceType"], "OperationOutcome");
    Ok(())
}

#[test]
fn arbitrary_bodies_get_4xx_outcomes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(Server::start());
    let mut runner = TestRunner::new(Config { cases: 128, failure_persistence: None, ..Config::default() });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            // Arbitrary bytes are essentially never a valid Patient object.
            let is_patient = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.get("resourceType") == Some(&Value::from("Patient")));
            rt.block_on(check(&s, bytes, is_patient))
        })
        .unwrap();
    runner
        .run(&arbitrary_json(), |value| rt.block_on(check(&s, value.to_string().into_bytes(), true)))
        .unwrap();
}
