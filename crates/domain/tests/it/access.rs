//! Access control and audit through the Service: the role matrix, the patient
//! restriction on every route, restricted records and break-the-glass,
//! granular filters, and the audit trail (what is recorded, who may read it,
//! and that tampering is detected).

use crate::sys;
use domain::access::{Access, BUILTIN_ROLES, Emergency, Grant, Perms, Policy, TypeSet, builtin_role};
use domain::audit::{self, AuditAction, AuditChain, AuditOutcome, AuditRecord, Checkpoint, Verdict};
use domain::memory::MemoryStore;
use domain::service::{Handling, HistoryParams, PatchDocument};
use domain::store::{HistoryScope, Store};
use domain::{ErrorKind, Service};
use serde_json::{Value, json};
use std::sync::Arc;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn role(name: &str) -> Access {
    Access::user(&format!("{name}-user"), Arc::new(builtin_role(name).expect("built-in role")))
}

fn patient_user(id: &str) -> Access {
    let mut access = role("patient");
    access.patient = Some(id.to_string());
    access
}

async fn put(svc: &Service, mut body: Value, id: &str) {
    let rt = body["resourceType"].as_str().expect("resourceType").to_string();
    body["id"] = json!(id);
    svc.update(&sys(), &rt, id, body, None).await.expect("write");
}

fn observation(subject: &str, category: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": subject},
        "performer": [{"reference": "Practitioner/dr"}]
    })
}

/// Two patients with an Observation each, a practitioner, a Condition of p1.
async fn two_patients(svc: &Service) {
    put(svc, json!({"resourceType": "Patient", "name": [{"family": "Alpha"}]}), "p1").await;
    put(svc, json!({"resourceType": "Patient", "name": [{"family": "Beta"}]}), "p2").await;
    put(svc, json!({"resourceType": "Practitioner", "name": [{"family": "Doctor"}]}), "dr").await;
    put(svc, observation("Patient/p1", "laboratory"), "o1").await;
    put(svc, observation("Patient/p1", "vital-signs"), "o1v").await;
    put(svc, observation("Patient/p2", "laboratory"), "o2").await;
    put(
        svc,
        json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}, "code": {"text": "asthma"}}),
        "c1",
    )
    .await;
}

fn ids(result: &domain::service::SearchResult) -> Vec<String> {
    let mut all: Vec<String> = result
        .page
        .items
        .iter()
        .chain(result.included.resources.iter())
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    all.sort();
    all
}

/// Every built-in role against a sample of types and every interaction:
/// the Service allows exactly what the role's table allows.
#[tokio::test]
async fn role_matrix() {
    let types = ["Patient", "Observation", "Condition", "Claim", "Organization", "ValueSet", "AuditEvent", "Appointment"];
    for name in BUILTIN_ROLES.iter().filter(|r| **r != "patient") {
        let policy = builtin_role(name).expect("role");
        let access = role(name);
        for rt in types {
            let svc = Service::new(Arc::new(MemoryStore::new()));
            let body = minimal(rt);
            if rt != "AuditEvent" {
                put(&svc, body.clone(), "x").await;
            }
            let expect = |perm: Perms| policy.decide(perm, rt).is_allowed() && !(rt == "AuditEvent" && perm != Perms::READ && perm != Perms::SEARCH);

            let created = svc.create(&access, rt, body.clone(), None).await;
            assert_eq!(created.is_ok(), expect(Perms::CREATE), "{name} create {rt}: {:?}", created.err());
            if rt == "AuditEvent" {
                let searched = svc.search(&access, Some(rt), &[], Handling::Strict).await;
                assert_eq!(searched.is_ok(), expect(Perms::SEARCH), "{name} search {rt}");
                continue;
            }
            let read = svc.read(&access, rt, "x").await;
            assert_eq!(read.is_ok(), expect(Perms::READ), "{name} read {rt}");
            if let Err(e) = read {
                assert_eq!(e.kind, ErrorKind::Forbidden);
            }
            let searched = svc.search(&access, Some(rt), &[], Handling::Strict).await;
            assert_eq!(searched.is_ok(), expect(Perms::SEARCH), "{name} search {rt}");
            let history = svc.history(&access, &HistoryScope::Type(rt.into()), &HistoryParams::default()).await;
            assert_eq!(history.is_ok(), expect(Perms::SEARCH), "{name} history {rt}");
            let mut changed = body.clone();
            changed["id"] = json!("x");
            changed["meta"] = json!({"tag": [{"code": "changed"}]});
            let updated = svc.update(&access, rt, "x", changed, None).await;
            assert_eq!(updated.is_ok(), expect(Perms::UPDATE), "{name} update {rt}: {:?}", updated.err());
            let patched = svc
                .patch(&access, rt, "x", PatchDocument::Json(json!([{"op": "add", "path": "/language", "value": "en"}])), None)
                .await;
            assert_eq!(patched.is_ok(), expect(Perms::UPDATE), "{name} patch {rt}: {:?}", patched.err());
            let deleted = svc.delete(&access, rt, "x").await;
            assert_eq!(deleted.is_ok(), expect(Perms::DELETE), "{name} delete {rt}");
        }
    }
}

fn minimal(rt: &str) -> Value {
    match rt {
        "Observation" => observation("Patient/p1", "laboratory"),
        "Condition" => json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}),
        "Claim" => json!({
            "resourceType": "Claim", "status": "active", "use": "claim",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "patient": {"reference": "Patient/p1"}, "created": "2026-01-01",
            "provider": {"reference": "Organization/o"}, "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/c"}}]
        }),
        "ValueSet" => json!({"resourceType": "ValueSet", "status": "draft"}),
        "AuditEvent" => json!({
            "resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}
        }),
        "Appointment" => json!({"resourceType": "Appointment", "status": "proposed", "participant": [{"status": "accepted", "actor": {"reference": "Patient/p1"}}]}),
        other => json!({"resourceType": other}),
    }
}

/// A patient user cannot reach another patient's data by any route.
#[tokio::test]
async fn a_patient_sees_only_their_own_record() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    two_patients(&svc).await;
    let me = patient_user("p1");

    assert!(svc.read(&me, "Patient", "p1").await.is_ok());
    assert!(svc.read(&me, "Observation", "o1").await.is_ok());
    assert!(svc.read(&me, "Practitioner", "dr").await.is_ok(), "shared reference data");
    for (rt, id) in [("Patient", "p2"), ("Observation", "o2")] {
        let e = svc.read(&me, rt, id).await.expect_err("another patient's");
        assert_eq!(e.kind, ErrorKind::Forbidden, "{rt}/{id}");
        assert!(svc.vread(&me, rt, id, "1").await.is_err());
        let e = svc
            .history(&me, &HistoryScope::Instance { resource_type: rt.into(), id: id.into() }, &HistoryParams::default())
            .await
            .expect_err("history of another patient's");
        assert_eq!(e.kind, ErrorKind::Forbidden);
    }

    // Searches: restricted to the compartment whatever the parameters.
    let all_obs = svc.search(&me, Some("Observation"), &[], Handling::Strict).await.expect("search");
    assert_eq!(ids(&all_obs), ["Observation/o1", "Observation/o1v"]);
    let aimed = svc.search(&me, Some("Observation"), &pairs(&[("subject", "Patient/p2")]), Handling::Strict).await.expect("search");
    assert!(ids(&aimed).is_empty(), "{:?}", ids(&aimed));
    let patients = svc.search(&me, Some("Patient"), &[], Handling::Strict).await.expect("search");
    assert_eq!(ids(&patients), ["Patient/p1"]);
    // Includes and reverse includes leave out other patients' resources.
    let included = svc
        .search(&me, Some("Patient"), &pairs(&[("_id", "p1,p2"), ("_revinclude", "Observation:subject")]), Handling::Strict)
        .await
        .expect("search");
    assert_eq!(ids(&included), ["Observation/o1", "Observation/o1v", "Patient/p1"]);
    // A chain that aims at the other patient finds nothing.
    let chained = svc
        .search(&me, Some("Observation"), &pairs(&[("subject:Patient.family", "Beta")]), Handling::Strict)
        .await
        .expect("search");
    assert!(ids(&chained).is_empty());
    // _has from the other side cannot reveal p2 either.
    let has = svc
        .search(&me, Some("Patient"), &pairs(&[("_has:Observation:subject:code", "2345-7")]), Handling::Strict)
        .await
        .expect("search");
    assert_eq!(ids(&has), ["Patient/p1"]);
    // Compartment search and $everything of the other patient are refused.
    assert_eq!(
        svc.compartment_search(&me, "Patient", "p2", "Observation", &[], Handling::Strict).await.expect_err("other").kind,
        ErrorKind::Forbidden
    );
    assert_eq!(svc.patient_everything(&me, "p2", &[], Handling::Strict).await.expect_err("other").kind, ErrorKind::Forbidden);
    let everything = svc.patient_everything(&me, "p1", &[], Handling::Strict).await.expect("own $everything");
    assert!(ids(&everything).iter().all(|r| !r.ends_with("p2") && r != "Observation/o2"));
    // System-wide search and history are not for a patient.
    assert!(svc.search(&me, None, &[], Handling::Strict).await.is_err());
    assert!(svc.history(&me, &HistoryScope::System, &HistoryParams::default()).await.is_err());
    let type_history = svc.history(&me, &HistoryScope::Type("Observation".into()), &HistoryParams::default()).await.expect("history");
    assert!(type_history.items.iter().all(|r| r.id != "o2"));
    // Writes: a patient role has none.
    assert!(svc.create(&me, "Observation", observation("Patient/p1", "survey"), None).await.is_err());
    // Bundles go entry by entry through the same checks.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o2"}},
        {"request": {"method": "GET", "url": "Observation/o1"}}
    ]});
    let response = svc.bundle(&me, batch, "http://h/fhir", None).await.expect("batch");
    assert_eq!(response["entry"][0]["response"]["status"], "403");
    assert!(response["entry"][1]["response"]["status"].as_str().is_some_and(|s| s.starts_with("200")));
}

/// Restricted records need break-the-glass; its use is audited as emergency access.
#[tokio::test]
async fn restricted_records_need_break_the_glass() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    put(
        &svc,
        json!({"resourceType": "Patient", "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}}),
        "vip",
    )
    .await;
    let doctor = role("physician");
    let e = svc.read(&doctor, "Patient", "vip").await.expect_err("restricted");
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert!(e.message().contains("break-the-glass"), "{}", e.message());
    let found = svc.search(&doctor, Some("Patient"), &[], Handling::Strict).await.expect("search");
    assert!(found.page.items.is_empty(), "restricted records are left out of searches");

    let mut emergency = doctor.clone();
    emergency.emergency = Some(Emergency { reason: "unconscious in the ED".into() });
    assert!(svc.read(&emergency, "Patient", "vip").await.is_ok());

    svc.flush_audit().await.expect("the queued read entries are written");
    let trail = svc.store().audit_scan(0, 1000).await.expect("trail");
    let records: Vec<_> = trail.iter().map(|e| e.parse().expect("record")).collect();
    let denied = records.iter().find(|r| r.event == "read" && r.outcome == AuditOutcome::Denied).expect("denied read audited");
    assert_eq!(denied.who.id, "physician-user");
    let opened = records.iter().find(|r| r.event == "read" && r.outcome == AuditOutcome::Success).expect("read audited");
    assert!(opened.emergency);
    assert_eq!(opened.patients, ["vip"]);
}

/// A SMART v2 granular scope (`patient/Observation.rs?category=laboratory`):
/// searches and reads see only matching resources.
#[tokio::test]
async fn granular_filters_narrow_reads_and_searches() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    two_patients(&svc).await;
    let mut app = role("physician");
    app.layers.push(Arc::new(Policy {
        name: "scopes".into(),
        grants: vec![Grant {
            types: TypeSet::Only(vec!["Observation".into()]),
            perms: Perms::parse("rs").expect("letters"),
            filter: vec![("category".into(), "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".into())],
        }],
    }));
    let found = svc.search(&app, Some("Observation"), &[], Handling::Strict).await.expect("search");
    assert_eq!(ids(&found), ["Observation/o1", "Observation/o2"]);
    assert!(svc.read(&app, "Observation", "o1").await.is_ok());
    assert_eq!(svc.read(&app, "Observation", "o1v").await.expect_err("vital signs").kind, ErrorKind::Forbidden);
    assert_eq!(svc.read(&app, "Condition", "c1").await.expect_err("not in scope").kind, ErrorKind::Forbidden);
    assert!(svc.create(&app, "Observation", observation("Patient/p1", "laboratory"), None).await.is_err(), "no c in scope");
}

/// Every interaction leaves an audit record: who, what, which patient,
/// outcome; writes carry theirs in the same commit.
#[tokio::test]
async fn interactions_are_audited() {
    let svc = Service::new(Arc::new(MemoryStore::new()));
    let nurse = role("nurse").with_from(Some("10.0.0.7".into()));
    svc.update(&nurse, "Patient", "p9", json!({"resourceType": "Patient", "id": "p9"}), None).await.expect("create by PUT");
    svc.create(&nurse, "Observation", observation("Patient/p9", "vital-signs"), None).await.expect("create");
    svc.read(&nurse, "Patient", "p9").await.expect("read");
    svc.search(&nurse, Some("Observation"), &pairs(&[("subject", "Patient/p9")]), Handling::Strict).await.expect("search");
    assert!(svc.delete(&nurse, "Patient", "p9").await.is_err(), "a nurse may not delete");

    svc.flush_audit().await.expect("the queued read entries are written");
    let trail = svc.store().audit_scan(0, 100).await.expect("trail");
    let mut records: Vec<AuditRecord> = trail.iter().map(|e| e.parse().expect("record")).collect();
    // Reads' entries reach the trail in their batch, after the refusal
    // committed at once: in time order they are as they happened.
    records.sort_by_key(|r| r.at);
    let events: Vec<(&str, AuditAction, AuditOutcome)> =
        records.iter().map(|r| (r.event.as_str(), r.action, r.outcome)).collect();
    assert_eq!(
        events,
        [
            ("create", AuditAction::Create, AuditOutcome::Success),
            ("create", AuditAction::Create, AuditOutcome::Success),
            ("read", AuditAction::Read, AuditOutcome::Success),
            ("search", AuditAction::Read, AuditOutcome::Success),
            ("delete", AuditAction::Delete, AuditOutcome::Denied),
        ]
    );
    for r in &records {
        assert_eq!(r.who.id, "nurse-user");
        assert_eq!(r.who.role.as_deref(), Some("nurse"));
        assert_eq!(r.from.as_deref(), Some("10.0.0.7"));
        assert_eq!(r.patients, ["p9"], "{r:?}");
    }
    assert!(records[3].query.as_deref().is_some_and(|q| q.contains("subject=Patient%2Fp9")));

    // The AuditEvent view: the auditor reads it, others may not, nobody writes it.
    let auditor = role("auditor");
    let events = svc
        .search(&auditor, Some("AuditEvent"), &pairs(&[("patient", "p9"), ("_sort", "-date"), ("action", "R")]), Handling::Strict)
        .await
        .expect("auditor searches the trail");
    assert_eq!(events.page.items.len(), 2);
    let first: Value = serde_json::from_str(events.page.items[0].body.as_deref().expect("body")).expect("json");
    assert_eq!(first["resourceType"], "AuditEvent");
    assert_eq!(first["subtype"][0]["code"], "search");
    let issues = fhir::validation::validate(&first);
    assert!(issues.iter().all(|i| i.severity != fhir::Severity::Error), "{issues:?}");
    assert_eq!(svc.search(&nurse, Some("AuditEvent"), &[], Handling::Strict).await.expect_err("nurse").kind, ErrorKind::Forbidden);
    let id = events.page.items[0].id.clone();
    assert!(svc.read(&auditor, "AuditEvent", &id).await.is_ok());
    for access in [sys(), auditor.clone()] {
        let e = svc.delete(&access, "AuditEvent", &id).await.expect_err("the trail is append-only");
        assert_eq!(e.kind, ErrorKind::Forbidden);
        let e = svc.create(&access, "AuditEvent", minimal("AuditEvent"), None).await.expect_err("no writes");
        assert_eq!(e.kind, ErrorKind::Forbidden);
    }

    // A patient lists who accessed their own record, and nobody else's.
    let me = patient_user("p9");
    let mine = svc.search(&me, Some("AuditEvent"), &[], Handling::Strict).await.expect("own audit");
    assert!(mine.page.items.len() >= 4);
    assert!(svc.search(&me, Some("AuditEvent"), &pairs(&[("patient", "p1")]), Handling::Strict).await.is_err());
}

/// The chain detects a changed, deleted, reordered or truncated entry.
#[tokio::test]
async fn tampering_with_the_trail_is_detected() {
    async fn trail() -> (Arc<MemoryStore>, AuditChain) {
        let chain = AuditChain::random();
        let store = Arc::new(MemoryStore::with_audit_chain(chain.clone()));
        let svc = Service::new(store.clone());
        for i in 0..6 {
            svc.update(&sys(), "Patient", &format!("p{i}"), json!({"resourceType": "Patient", "id": format!("p{i}")}), None)
                .await
                .expect("write");
        }
        (store, chain)
    }
    let (store, chain) = trail().await;
    assert!(matches!(audit::verify(&*store, &chain, &[], |_| {}).await.expect("verify"), Verdict::Intact { entries: 6, .. }));
    let wrong_key = AuditChain::random();
    assert!(matches!(audit::verify(&*store, &wrong_key, &[], |_| {}).await.expect("verify"), Verdict::Broken { seq: 1, .. }));

    let (store, chain) = trail().await;
    store.tamper_audit(|t| t[2].record = t[2].record.replace("system", "sneaky"));
    assert!(matches!(audit::verify(&*store, &chain, &[], |_| {}).await.expect("verify"), Verdict::Broken { seq: 3, .. }));

    let (store, chain) = trail().await;
    store.tamper_audit(|t| {
        t.remove(3);
    });
    assert!(matches!(audit::verify(&*store, &chain, &[], |_| {}).await.expect("verify"), Verdict::Broken { seq: 4, .. }));

    let (store, chain) = trail().await;
    store.tamper_audit(|t| {
        // Swap the contents of entries 2 and 3, keeping their numbers.
        let (a, b) = (t[1].record.clone(), t[2].record.clone());
        t[1].record = b;
        t[2].record = a;
    });
    assert!(matches!(audit::verify(&*store, &chain, &[], |_| {}).await.expect("verify"), Verdict::Broken { seq: 2, .. }));

    let (store, chain) = trail().await;
    let (seq, hash) = store.audit_head().await.expect("head").expect("entries");
    let checkpoint = Checkpoint { seq, hash, at: fhir::instant::Instant::now() };
    let line = checkpoint.to_line(&chain);
    assert_eq!(Checkpoint::from_line(&line, &chain).expect("sealed"), checkpoint);
    assert!(Checkpoint::from_line(&line.replace(&format!("{seq} "), "2 "), &chain).is_err(), "a forged checkpoint is refused");
    store.tamper_audit(|t| t.truncate(4));
    let verdict = audit::verify(&*store, &chain, &[checkpoint], |_| {}).await.expect("verify");
    assert!(matches!(verdict, Verdict::Broken { seq: 5, .. }), "{verdict:?}");
}
