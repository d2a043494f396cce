//! `_include` and `_revinclude` through the Service over the in-memory
//! reference store: the cap on included resources and `:iterate` rounds
//! (<http://hl7.org/fhir/R4/search.html#include>).

use crate::sys;
use domain::Service;
use domain::memory::MemoryStore;
use domain::service::{Handling, MAX_INCLUDED};
use serde_json::{Value, json};
use std::sync::Arc;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn observation(i: usize, patient: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": format!("o{i}"),
        "status": "final",
        "code": {"text": "many"},
        "subject": {"reference": format!("Patient/{patient}")},
    })
}

#[tokio::test]
async fn included_resources_are_capped_and_the_cap_is_reported() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    let mut resources = vec![json!({"resourceType": "Patient", "id": "p1"})];
    resources.extend((0..=MAX_INCLUDED).map(|i| observation(i, "p1")));
    for result in svc.load(&sys(), resources).await {
        assert!(result.is_ok(), "{result:?}");
    }
    let result = svc
        .search(&sys(), Some("Patient"), &pairs(&[("_id", "p1"), ("_revinclude", "Observation:subject")]), Handling::Strict)
        .await
        .expect("search");
    assert_eq!(result.page.items.len(), 1);
    assert_eq!(result.included.resources.len(), MAX_INCLUDED);
    assert!(result.included.truncated);

    let result = svc
        .search(&sys(), Some("Observation"), &pairs(&[("_id", "o1"), ("_include", "Observation:subject")]), Handling::Strict)
        .await
        .expect("search");
    assert_eq!(result.included.resources.len(), 1);
    assert!(!result.included.truncated);
}

#[tokio::test]
async fn iterate_rounds_come_in_order_and_stop_at_a_cycle() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    // org-a is part of org-b, which is part of org-a: a cycle.
    let resources = vec![
        json!({"resourceType": "Organization", "id": "org-a", "partOf": {"reference": "Organization/org-b"}}),
        json!({"resourceType": "Organization", "id": "org-b", "partOf": {"reference": "Organization/org-a"}}),
        json!({"resourceType": "Patient", "id": "p1", "managingOrganization": {"reference": "Organization/org-a"}}),
        observation(1, "p1"),
    ];
    for result in svc.load(&sys(), resources).await {
        assert!(result.is_ok(), "{result:?}");
    }
    let params = pairs(&[
        ("_id", "o1"),
        ("_include", "Observation:subject"),
        ("_include:iterate", "Patient:organization"),
        ("_include:iterate", "Organization:partof"),
    ]);
    let result = svc.search(&sys(), Some("Observation"), &params, Handling::Strict).await.expect("search");
    let included: Vec<String> =
        result.included.resources.iter().map(|r| format!("{}/{}", r.resource_type, r.id)).collect();
    assert_eq!(included, vec!["Patient/p1", "Organization/org-a", "Organization/org-b"]);
    assert!(!result.included.truncated);
}
