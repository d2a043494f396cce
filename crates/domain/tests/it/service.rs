//! The Service's FHIR semantics, checked through its public API.

use crate::sys;
use domain::memory::MemoryStore;
use domain::service::{Created, Handling, HistoryParams, PatchDocument};
use domain::store::HistoryScope;
use domain::{ErrorKind, Service};
use serde_json::{Value, json};
use std::sync::Arc;

fn service() -> Service {
    Service::new(Arc::new(MemoryStore::new()))
}

fn body(r: &domain::store::StoredResource) -> Value {
    serde_json::from_str(r.body.as_deref().expect("has a body")).expect("stored JSON parses")
}

fn patient(family: &str, mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://hearth.example/mrn", "value": mrn}],
        "name": [{"family": family, "given": ["Alex"]}],
        "birthDate": "1980-02-29"
    })
}

#[tokio::test]
async fn create_read_update_delete_keeps_every_version() {
    let svc = service();
    let Created::Created(created) = svc.create(&sys(), "Patient", patient("Smith", "1"), None).await.expect("create") else {
        panic!("expected a new resource");
    };
    assert_eq!(created.version_id, 1);
    let read = svc.read(&sys(), "Patient", &created.id).await.expect("read");
    assert_eq!(body(&read)["name"][0]["family"], "Smith");
    assert_eq!(body(&read)["meta"]["versionId"], "1");

    let mut changed = body(&read);
    changed["name"][0]["family"] = json!("Smythe");
    let updated = svc.update(&sys(), "Patient", &created.id, changed, Some(1)).await.expect("update");
    assert!(!updated.created);
    assert_eq!(updated.resource.version_id, 2);

    // A stale If-Match is refused with 412 and writes nothing.
    let stale = svc.update(&sys(), "Patient", &created.id, body(&read), Some(1)).await.expect_err("stale");
    assert_eq!(stale.kind, ErrorKind::PreconditionFailed);

    assert_eq!(svc.delete(&sys(), "Patient", &created.id).await.expect("delete"), Some(3));
    assert_eq!(svc.read(&sys(), "Patient", &created.id).await.expect_err("gone").kind, ErrorKind::Gone);
    assert_eq!(svc.delete(&sys(), "Patient", &created.id).await.expect("repeat delete"), None);
    let v1 = svc.vread(&sys(), "Patient", &created.id, "1").await.expect("vread 1");
    assert_eq!(body(&v1)["name"][0]["family"], "Smith");
    assert_eq!(svc.vread(&sys(), "Patient", &created.id, "3").await.expect_err("deleted version").kind, ErrorKind::Gone);

    let history = svc
        .history(&sys(), &HistoryScope::Instance { resource_type: "Patient".into(), id: created.id.clone() }, &HistoryParams::default())
        .await
        .expect("history");
    let versions: Vec<u64> = history.items.iter().map(|r| r.version_id).collect();
    assert_eq!(versions, vec![3, 2, 1]);
    assert_eq!(history.total, Some(3));
}

#[tokio::test]
async fn decimals_and_primitive_extensions_survive() {
    let svc = service();
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},
        "valueQuantity":{"value":1.50,"unit":"kg"},
        "_status":{"extension":[{"url":"http://example.org/x","valueString":"y"}]}}"#;
    let value: Value = serde_json::from_str(text).expect("parses");
    let Created::Created(created) = svc.create(&sys(), "Observation", value, None).await.expect("create") else {
        panic!("expected a new resource");
    };
    let stored = svc.read(&sys(), "Observation", &created.id).await.expect("read");
    let stored_text = stored.body.as_deref().unwrap_or_default();
    assert!(stored_text.contains(r#""value":1.50"#), "{stored_text}");
    assert!(stored_text.contains(r#""_status":{"extension""#), "{stored_text}");
}

#[tokio::test]
async fn update_creates_and_revives() {
    let svc = service();
    let mut p = patient("Jones", "2");
    p["id"] = json!("p-2");
    let created = svc.update(&sys(), "Patient", "p-2", p.clone(), None).await.expect("create on update");
    assert!(created.created);
    svc.delete(&sys(), "Patient", "p-2").await.expect("delete");
    let revived = svc.update(&sys(), "Patient", "p-2", p.clone(), None).await.expect("revive");
    assert!(revived.created);
    assert_eq!(revived.resource.version_id, 3);
    let mismatched = svc.update(&sys(), "Patient", "other", p, None).await.expect_err("id mismatch");
    assert_eq!(mismatched.kind, ErrorKind::BadRequest);
}

#[tokio::test]
async fn conditional_create_update_and_delete() {
    let svc = service();
    let criteria = "identifier=https://hearth.example/mrn|77";
    let Created::Created(first) = svc.create(&sys(), "Patient", patient("Lee", "77"), Some(criteria)).await.expect("create") else {
        panic!("expected a new resource");
    };
    let Created::Existing(again) = svc.create(&sys(), "Patient", patient("Lee", "77"), Some(criteria)).await.expect("again") else {
        panic!("expected the existing resource");
    };
    assert_eq!(again.id, first.id);

    let updated = svc.conditional_update(&sys(), "Patient", criteria, patient("Leigh", "77"), None).await.expect("cond update");
    assert_eq!(updated.resource.id, first.id);
    assert_eq!(updated.resource.version_id, 2);

    svc.create(&sys(), "Patient", patient("Lee", "78"), None).await.expect("second");
    svc.create(&sys(), "Patient", patient("Lee", "78"), None).await.expect("third");
    let many = svc
        .conditional_delete(&sys(), "Patient", "identifier=https://hearth.example/mrn|78")
        .await
        .expect_err("several matches");
    assert_eq!(many.kind, ErrorKind::PreconditionFailed);
    assert_eq!(svc.conditional_delete(&sys(), "Patient", criteria).await.expect("cond delete"), 1);
    assert_eq!(svc.read(&sys(), "Patient", &first.id).await.expect_err("gone").kind, ErrorKind::Gone);
}

#[tokio::test]
async fn concurrent_conditional_creates_make_one_resource() {
    let svc = Arc::new(service());
    let criteria = "identifier=https://hearth.example/mrn|race";
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let svc = Arc::clone(&svc);
        tasks.push(tokio::spawn(async move { svc.create(&sys(), "Patient", patient("Race", "race"), Some(criteria)).await }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        match t.await.expect("task").expect("create") {
            Created::Created(r) | Created::Existing(r) => ids.insert(r.id),
        };
    }
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn transaction_resolves_urn_uuid_and_conditional_references() {
    let svc = service();
    svc.create(&sys(), "Practitioner", json!({"resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}]}), None)
        .await
        .expect("practitioner");
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
                          "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                          "performer": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567893"}]},
             "request": {"method": "POST", "url": "Observation"}},
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": patient("Garcia", "500"),
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=https://hearth.example/mrn|500"}}
        ]
    });
    let response = svc.bundle(&sys(), bundle, "http://h/fhir", None).await.expect("transaction");
    assert_eq!(response["type"], "transaction-response");
    let obs_location = response["entry"][0]["response"]["location"].as_str().expect("location");
    let patient_location = response["entry"][1]["response"]["location"].as_str().expect("location");
    assert_eq!(response["entry"][0]["response"]["status"], "201 Created");
    let obs_id = obs_location.split('/').nth(1).expect("id");
    let patient_id = patient_location.split('/').nth(1).expect("id");
    let obs = body(&svc.read(&sys(), "Observation", obs_id).await.expect("observation"));
    assert_eq!(obs["subject"]["reference"], format!("Patient/{patient_id}"));
    assert!(obs["performer"][0]["reference"].as_str().expect("ref").starts_with("Practitioner/"));
}

#[tokio::test]
async fn a_failed_transaction_leaves_nothing_behind() {
    let svc = service();
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": patient("Kept", "900"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}},
             "request": {"method": "POST", "url": "Observation"}}
        ]
    });
    let err = svc.bundle(&sys(), bundle, "", None).await.expect_err("dangling reference");
    assert_eq!(err.kind, ErrorKind::BadRequest);
    let expr = err.issues[0].expression.clone().unwrap_or_default();
    assert!(expr.starts_with("Bundle.entry[1].resource"), "{expr}");
    let all = svc.search(&sys(), Some("Patient"), &[], Handling::Strict).await.expect("search");
    assert!(all.page.items.is_empty(), "nothing may be written");

    // An invalid resource fails the transaction with its location.
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"resource": patient("Kept", "901"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "birthDate": "not-a-date"}, "request": {"method": "POST", "url": "Patient"}}
        ]
    });
    let err = svc.bundle(&sys(), bundle, "", None).await.expect_err("invalid resource");
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert_eq!(err.issues[0].expression.as_deref(), Some("Bundle.entry[1].resource.birthDate"));
    let all = svc.search(&sys(), Some("Patient"), &[], Handling::Strict).await.expect("search");
    assert!(all.page.items.is_empty(), "nothing may be written");
}

#[tokio::test]
async fn batch_answers_each_entry() {
    let svc = service();
    let bundle = json!({
        "resourceType": "Bundle", "type": "batch",
        "entry": [
            {"resource": patient("Ok", "1"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "gender": "sometimes"}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}}
        ]
    });
    let response = svc.bundle(&sys(), bundle, "", None).await.expect("batch");
    assert_eq!(response["type"], "batch-response");
    assert_eq!(response["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(response["entry"][1]["response"]["status"], "422");
    assert_eq!(response["entry"][2]["response"]["status"], "404");
    assert_eq!(response["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn patches_apply_and_are_validated() {
    let svc = service();
    let Created::Created(p) = svc.create(&sys(), "Patient", patient("Patch", "3"), None).await.expect("create") else {
        panic!("expected a new resource");
    };
    let ops = json!([{"op": "replace", "path": "/birthDate", "value": "1990-01-01"}]);
    let patched = svc.patch(&sys(), "Patient", &p.id, PatchDocument::Json(ops), Some(1)).await.expect("json patch");
    assert_eq!(body(&patched)["birthDate"], "1990-01-01");
    let bad = json!([{"op": "replace", "path": "/birthDate", "value": "yesterday"}]);
    let err = svc.patch(&sys(), "Patient", &p.id, PatchDocument::Json(bad), None).await.expect_err("invalid result");
    assert_eq!(err.kind, ErrorKind::Invalid);
    let fhirpath = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": "Patient.birthDate"},
        {"name": "value", "valueDate": "1991-02-03"}]}]});
    let patched = svc.patch(&sys(), "Patient", &p.id, PatchDocument::FhirPath(fhirpath), Some(2)).await.expect("fhirpath patch");
    assert_eq!(body(&patched)["birthDate"], "1991-02-03");
    assert_eq!(patched.version_id, 3);
}

#[tokio::test]
async fn bulk_load_accepts_valid_and_reports_invalid() {
    let svc = service();
    let mut good = patient("Bulk", "10");
    good["id"] = json!("bulk-1");
    let results = svc
        .load(&sys(), vec![good, json!({"resourceType": "Patient", "id": "bad id"}), json!({"resourceType": "Nope"})])
        .await;
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().expect_err("bad id").kind, ErrorKind::Invalid);
    assert_eq!(results[2].as_ref().expect_err("bad type").kind, ErrorKind::NotFound);
    assert_eq!(svc.read(&sys(), "Patient", "bulk-1").await.expect("loaded").version_id, 1);
}

#[tokio::test]
async fn a_failing_read_fails_the_transaction_with_nothing_written() {
    let svc = service();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("Atomic", "a1"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}}]});
    let err = svc.bundle(&sys(), bundle, "", None).await.expect_err("the read fails");
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.issues[0].expression.as_deref(), Some("Bundle.entry[1]"));
    let all = svc.search(&sys(), Some("Patient"), &[], Handling::Strict).await.expect("search");
    assert!(all.page.items.is_empty(), "nothing may be written");

    // A read of a resource the same transaction deletes answers 410 and undoes the delete.
    let mut kept = patient("Kept", "a2");
    kept["id"] = json!("kept");
    svc.update(&sys(), "Patient", "kept", kept, None).await.expect("create");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/kept"}},
        {"request": {"method": "DELETE", "url": "Patient/kept"}}]});
    let err = svc.bundle(&sys(), bundle, "", None).await.expect_err("read of a deleted resource");
    assert_eq!(err.kind, ErrorKind::Gone);
    assert!(svc.read(&sys(), "Patient", "kept").await.is_ok(), "the delete was rolled back");

    // A read of a resource the transaction creates sees it.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/new-one"}},
        {"resource": {"resourceType": "Patient", "id": "new-one", "gender": "other"}, "request": {"method": "PUT", "url": "Patient/new-one"}}]});
    let response = svc.bundle(&sys(), bundle, "", None).await.expect("transaction");
    assert_eq!(response["entry"][0]["resource"]["gender"], "other");
}

#[tokio::test]
async fn bundle_entries_follow_the_return_preference() {
    let svc = service();
    let make = || json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "female"}, "request": {"method": "POST", "url": "Patient"}}]});
    let minimal = svc.bundle(&sys(), make(), "", None).await.expect("minimal");
    assert!(minimal["entry"][0].get("resource").is_none());
    let full = svc.bundle(&sys(), make(), "", Some(domain::service::Return::Representation)).await.expect("representation");
    assert_eq!(full["entry"][0]["resource"]["gender"], "female");
    let outcome = svc.bundle(&sys(), make(), "", Some(domain::service::Return::OperationOutcome)).await.expect("outcome");
    assert_eq!(outcome["entry"][0]["response"]["outcome"]["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn oversized_searches_and_nul_characters_are_refused() {
    let svc = service();
    let many: Vec<(String, String)> = (0..65).map(|i| ("name".to_string(), format!("a{i}"))).collect();
    let err = svc.search(&sys(), Some("Patient"), &many, Handling::Strict).await.expect_err("too many conditions");
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert_eq!(err.issues[0].code, fhir::IssueType::TooCostly);
    let commas = vec![("name".to_string(), vec!["a"; 100].join(","))];
    assert!(svc.search(&sys(), Some("Patient"), &commas, Handling::Strict).await.is_err());
    let nul = vec![("name".to_string(), "a\0b".to_string())];
    assert_eq!(svc.search(&sys(), Some("Patient"), &nul, Handling::Strict).await.expect_err("nul").kind, ErrorKind::BadRequest);
    let err = svc.create(&sys(), "Patient", json!({"resourceType": "Patient", "name": [{"family": "a\u{0}b"}]}), None).await.expect_err("control character");
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert_eq!(err.issues[0].expression.as_deref(), Some("Patient.name[0].family"));
}

#[tokio::test]
async fn criteria_may_carry_the_resource_type() {
    let svc = service();
    let criteria = "Patient?identifier=https://hearth.example/mrn|t1";
    let Created::Created(first) = svc.create(&sys(), "Patient", patient("T", "t1"), Some(criteria)).await.expect("create") else {
        panic!("expected a new resource");
    };
    let Created::Existing(again) = svc.create(&sys(), "Patient", patient("T", "t1"), Some(criteria)).await.expect("again") else {
        panic!("expected the existing resource");
    };
    assert_eq!(first.id, again.id);
}
