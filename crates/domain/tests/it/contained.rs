//! `_contained` and `_containedType` through the Service (search.html#contained):
//! stable paging over contained matches, batch searches, conditional
//! operations, and access rules judged on the container.

use crate::sys;
use domain::access::{Access, builtin_role};
use domain::memory::MemoryStore;
use domain::service::{Handling, SearchResult};
use domain::{ErrorKind, Service};
use serde_json::{Value, json};
use std::sync::Arc;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn put(svc: &Service, mut body: Value, id: &str) {
    let rt = body["resourceType"].as_str().expect("resourceType").to_string();
    body["id"] = json!(id);
    svc.update(&sys(), &rt, id, body, None).await.expect("write");
}

/// A MedicationRequest for `patient` containing Medication `#m1` coded `code`.
fn request(patient: &str, code: &str) -> Value {
    json!({
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "subject": {"reference": format!("Patient/{patient}")},
        "contained": [{"resourceType": "Medication", "id": "m1",
                       "code": {"coding": [{"system": "http://example.org/med", "code": code}]}}],
        "medicationReference": {"reference": "#m1"}
    })
}

fn keys(result: &SearchResult) -> Vec<String> {
    result.page.items.iter().map(|r| format!("{}/{}", r.resource_type, r.id)).collect()
}

#[tokio::test]
async fn contained_matches_page_stably() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    for id in ["r1", "r2", "r3"] {
        put(&svc, request("p1", "A"), id).await;
    }
    let params = pairs(&[("code", "A"), ("_contained", "true"), ("_containedType", "contained"), ("_sort", "_id"), ("_count", "2")]);
    let first = svc.search(&sys(), Some("Medication"), &params, Handling::Strict).await.expect("search");
    assert_eq!(keys(&first), ["MedicationRequest/r1#m1", "MedicationRequest/r2#m1"]);
    let token = first.page_token.clone().expect("a kept result list");
    // A container written since still answers from its current version.
    put(&svc, request("p1", "B"), "r3").await;
    let mut later = params.clone();
    later.push(("_page".into(), token));
    later.push(("_offset".into(), "2".into()));
    let second = svc.search(&sys(), Some("Medication"), &later, Handling::Strict).await.expect("page 2");
    assert_eq!(keys(&second), ["MedicationRequest/r3#m1"]);
    assert_eq!(second.page.items[0].version_id, 2);
    // Plain searches of the type never see them.
    let plain = svc.search(&sys(), Some("Medication"), &pairs(&[("code", "A")]), Handling::Strict).await.expect("search");
    assert!(plain.page.items.is_empty());
    // `_include` and `_revinclude` follow resources of their own only.
    put(&svc, json!({"resourceType": "Organization", "name": "Acme"}), "org1").await;
    put(&svc, json!({"resourceType": "Medication", "manufacturer": {"reference": "Organization/org1"}}), "med1").await;
    let mut contained = request("p1", "C");
    contained["contained"][0]["manufacturer"] = json!({"reference": "Organization/org1"});
    put(&svc, contained, "r4").await;
    for include in ["_include", "_revinclude"] {
        let directive = if include == "_include" { "Medication:manufacturer" } else { "MedicationRequest:medication" };
        let params = pairs(&[("_contained", "true"), ("_containedType", "contained"), ("code", "C"), (include, directive)]);
        let result = svc.search(&sys(), Some("Medication"), &params, Handling::Strict).await.expect("search");
        assert_eq!(keys(&result), ["MedicationRequest/r4#m1"]);
        assert!(result.included.resources.is_empty(), "{include}");
    }
    let params = pairs(&[("_contained", "both"), ("_containedType", "contained"), ("_include", "Medication:manufacturer")]);
    let result = svc.search(&sys(), Some("Medication"), &params, Handling::Strict).await.expect("search");
    assert_eq!(result.page.items.len(), 5);
    let included: Vec<String> = result.included.resources.iter().map(|r| format!("{}/{}", r.resource_type, r.id)).collect();
    assert_eq!(included, ["Organization/org1"]);
}

#[tokio::test]
async fn batch_searches_answer_the_contained_resource() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    put(&svc, request("p1", "A"), "r1").await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Medication?code=A&_contained=true&_containedType=contained"}},
        {"request": {"method": "GET", "url": "Medication?code=A&_contained=true"}}
    ]});
    let response = svc.bundle(&sys(), batch, "http://h/fhir", None).await.expect("batch");
    let contained = &response["entry"][0]["resource"]["entry"][0];
    assert_eq!(contained["fullUrl"], "http://h/fhir/MedicationRequest/r1#m1");
    assert_eq!(contained["resource"]["resourceType"], "Medication");
    assert_eq!(contained["resource"]["id"], "m1");
    let container = &response["entry"][1]["resource"]["entry"][0];
    assert_eq!(container["fullUrl"], "http://h/fhir/MedicationRequest/r1");
    assert_eq!(container["resource"]["resourceType"], "MedicationRequest");
}

#[tokio::test]
async fn conditional_operations_refuse_contained_criteria() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    put(&svc, request("p1", "A"), "r1").await;
    let e = svc.conditional_delete(&sys(), "Medication", "code=A&_contained=true").await.expect_err("refused");
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let e = svc
        .create(&sys(), "Medication", json!({"resourceType": "Medication"}), Some("code=A&_contained=both"))
        .await
        .expect_err("refused");
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(svc.read(&sys(), "MedicationRequest", "r1").await.is_ok(), "nothing was deleted");
}

#[tokio::test]
async fn access_is_judged_on_the_container() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    for (id, family) in [("p1", "Alpha"), ("p2", "Beta")] {
        put(&svc, json!({"resourceType": "Patient", "name": [{"family": family}]}), id).await;
    }
    put(&svc, request("p1", "A"), "r1").await;
    put(&svc, request("p2", "A"), "r2").await;
    let mut me = Access::user("patient-user", Arc::new(builtin_role("patient").expect("role")));
    me.patient = Some("p1".into());
    for contained_type in ["container", "contained"] {
        let params = pairs(&[("code", "A"), ("_contained", "true"), ("_containedType", contained_type)]);
        let result = svc.search(&me, Some("Medication"), &params, Handling::Strict).await.expect("search");
        let expected = if contained_type == "container" { "MedicationRequest/r1" } else { "MedicationRequest/r1#m1" };
        assert_eq!(keys(&result), [expected]);
        let all = svc.search(&sys(), Some("Medication"), &params, Handling::Strict).await.expect("search");
        assert_eq!(all.page.items.len(), 2, "{contained_type}");
    }
}

#[tokio::test]
async fn reindex_indexes_what_older_versions_contain() {
    use domain::store::Store as _;
    let store = Arc::new(MemoryStore::new());
    let svc = Service::new(store.clone());
    put(&svc, request("p1", "A"), "r1").await;
    // As a store written before contained resources were indexed holds it.
    let current = store.read("MedicationRequest", "r1").await.expect("read").expect("r1");
    let bare = domain::store::Reindex {
        resource_type: "MedicationRequest".into(),
        id: "r1".into(),
        version_id: current.version_id,
        index: Vec::new(),
        text: Default::default(),
        contained: Vec::new(),
    };
    store.commit(domain::store::Commit { reindex: vec![bare], ..Default::default() }).await.expect("strip");
    let params = pairs(&[("code", "A"), ("_contained", "true")]);
    assert!(svc.search(&sys(), Some("Medication"), &params, Handling::Strict).await.expect("search").page.items.is_empty());
    let report = svc.reindex(&sys(), Some("MedicationRequest"), &Default::default()).await.expect("reindex");
    assert_eq!(report.reindexed, 1);
    let found = svc.search(&sys(), Some("Medication"), &params, Handling::Strict).await.expect("search");
    assert_eq!(keys(&found), ["MedicationRequest/r1"]);
}

#[tokio::test]
async fn compartments_search_contained_resources_and_lastn_refuses_them() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    put(&svc, json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]}), "p1").await;
    let mut container = json!({"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "panel"},
        "subject": {"reference": "Patient/p1"}, "result": [{"reference": "#o1"}],
        "contained": [{"resourceType": "Observation", "id": "o1", "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
                       "subject": {"reference": "Patient/p1"}}]});
    put(&svc, container.clone(), "dr1").await;
    container["subject"] = json!({"reference": "Patient/p2"});
    container["contained"][0]["subject"] = json!({"reference": "Patient/p2"});
    put(&svc, container, "dr2").await;
    // The compartment's condition holds for the contained Observation.
    let params = pairs(&[("code", "2345-7"), ("_contained", "true"), ("_containedType", "contained")]);
    let result = svc.compartment_search(&sys(), "Patient", "p1", "Observation", &params, Handling::Strict).await.expect("search");
    assert_eq!(keys(&result), ["DiagnosticReport/dr1#o1"]);
    let e = svc
        .observation_lastn(&sys(), &pairs(&[("patient", "p1"), ("_contained", "true")]), Handling::Strict)
        .await
        .expect_err("refused");
    assert_eq!(e.kind, ErrorKind::BadRequest);
}
