//! Compartment search, `Patient/[id]/$everything` and `Observation/$lastn` through the
//! Service over the in-memory reference store.

use crate::sys;
use domain::memory::MemoryStore;
use domain::service::{Clock, Handling, SearchResult, ServiceConfig, UuidIds};
use domain::{ErrorKind, Service};
use fhir::instant::Instant;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A clock that moves one second per reading, so every write has its own lastUpdated.
struct StepClock(AtomicI64);

impl Clock for StepClock {
    fn now(&self) -> Instant {
        Instant(self.0.fetch_add(1_000_000, Ordering::SeqCst))
    }
}

fn service() -> Service {
    let clock = Arc::new(StepClock(AtomicI64::new(1_700_000_000_000_000)));
    Service::with(Arc::new(MemoryStore::new()), clock, Arc::new(UuidIds), ServiceConfig::default())
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `Type/id` of each entry, in order.
fn refs(result: &SearchResult) -> Vec<String> {
    result.page.items.iter().map(|r| format!("{}/{}", r.resource_type, r.id)).collect()
}

async fn put(svc: &Service, mut body: Value, id: &str) {
    let rt = body["resourceType"].as_str().expect("resourceType").to_string();
    body["id"] = json!(id);
    svc.update(&sys(), &rt, id, body, None).await.expect("write");
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "active": true, "gender": "unknown"})
}

fn observation(subject: &str, code: &str, date: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": date
    })
}

/// p1's record: a Condition, an Encounter (ongoing since 2020-05), a Goal (a type with no
/// `date` parameter), three Observations (one linked only as performer), a Procedure in
/// 2019; and p2 with an Observation of its own.
async fn record(svc: &Service) {
    put(svc, patient(), "p1").await;
    put(svc, patient(), "p2").await;
    put(svc, json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"}, "code": {"text": "x"}}), "c1").await;
    let encounter = json!({
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"}, "period": {"start": "2020-05-01"}
    });
    put(svc, encounter, "e1").await;
    let goal = json!({"resourceType": "Goal", "lifecycleStatus": "active", "description": {"text": "walk"},
                      "subject": {"reference": "Patient/p1"}});
    put(svc, goal, "g1").await;
    let mut o1 = observation("Patient/p1", "1-8", "2020-01-01");
    o1["encounter"] = json!({"reference": "Encounter/e1"});
    put(svc, o1, "o1").await;
    put(svc, observation("Patient/p1", "2-6", "2021-06-01"), "o2").await;
    let mut o3 = observation("Patient/p2", "1-8", "2022-02-02");
    o3["performer"] = json!([{"reference": "Patient/p1"}]);
    put(svc, o3, "o3").await;
    put(svc, observation("Patient/p2", "1-8", "2022-03-03"), "o4").await;
    let procedure = json!({"resourceType": "Procedure", "status": "completed",
                           "subject": {"reference": "Patient/p1"}, "performedDateTime": "2019-01-01"});
    put(svc, procedure, "x1").await;
}

#[tokio::test]
async fn compartment_search_adds_the_compartment_to_the_search() {
    let svc = service();
    record(&svc).await;
    let mut found = refs(&svc.compartment_search(&sys(), "Patient", "p1", "Observation", &[], Handling::Strict).await.unwrap());
    found.sort();
    // Linked as subject (o1, o2) or as performer (o3); o4 is p2's.
    assert_eq!(found, ["Observation/o1", "Observation/o2", "Observation/o3"]);

    let coded = svc
        .compartment_search(&sys(), "Patient", "p1", "Observation", &pairs(&[("code", "1-8"), ("_sort", "_id")]), Handling::Strict)
        .await
        .unwrap();
    assert_eq!(refs(&coded), ["Observation/o1", "Observation/o3"]);
    assert_eq!(coded.applied, pairs(&[("code", "1-8"), ("_sort", "_id")]));

    let paged = svc
        .compartment_search(&sys(), "Patient", "p1", "Observation", &pairs(&[("_sort", "_id"), ("_count", "2"), ("_offset", "1")]), Handling::Strict)
        .await
        .unwrap();
    assert_eq!((refs(&paged), paged.count, paged.offset), (vec!["Observation/o2".into(), "Observation/o3".into()], 2, 1));

    // `{def}`: an Encounter is in its own compartment; Observations by their encounter.
    let own = svc.compartment_search(&sys(), "Encounter", "e1", "Encounter", &[], Handling::Strict).await.unwrap();
    assert_eq!(refs(&own), ["Encounter/e1"]);
    let in_encounter = svc.compartment_search(&sys(), "Encounter", "e1", "Observation", &[], Handling::Strict).await.unwrap();
    assert_eq!(refs(&in_encounter), ["Observation/o1"]);

    // An owner that does not exist has an empty compartment.
    let none = svc.compartment_search(&sys(), "Patient", "nobody", "Observation", &[], Handling::Strict).await.unwrap();
    assert!(none.page.items.is_empty());
}

#[tokio::test]
async fn compartment_search_errors() {
    let svc = service();
    let kind = |r: Result<SearchResult, domain::Error>| r.expect_err("must fail").kind;
    // Organization is in no Patient compartment: 400.
    let e = svc.compartment_search(&sys(), "Patient", "p1", "Organization", &[], Handling::Strict).await.expect_err("not in");
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message().contains("not in the Patient compartment"), "{}", e.message());
    assert_eq!(kind(svc.compartment_search(&sys(), "Observation", "o1", "Patient", &[], Handling::Strict).await), ErrorKind::NotFound);
    assert_eq!(kind(svc.compartment_search(&sys(), "Patient", "p1", "Nope", &[], Handling::Strict).await), ErrorKind::NotFound);
    assert_eq!(kind(svc.compartment_search(&sys(), "Patient", "bad id!", "Observation", &[], Handling::Strict).await), ErrorKind::BadRequest);
    let unknown = pairs(&[("nonsense", "1")]);
    assert_eq!(kind(svc.compartment_search(&sys(), "Patient", "p1", "Observation", &unknown, Handling::Strict).await), ErrorKind::BadRequest);
    assert!(svc.compartment_search(&sys(), "Patient", "p1", "Observation", &unknown, Handling::Lenient).await.is_ok());
}

#[tokio::test]
async fn everything_lists_the_patient_then_the_compartment_by_type_and_id() {
    let svc = service();
    record(&svc).await;
    let all = svc.patient_everything(&sys(), "p1", &[], Handling::Strict).await.unwrap();
    let expected = [
        "Patient/p1", "Condition/c1", "Encounter/e1", "Goal/g1", "Observation/o1", "Observation/o2", "Observation/o3",
        "Procedure/x1",
    ];
    assert_eq!(refs(&all), expected);
    assert_eq!(all.page.total, Some(8));
    assert_eq!((all.count, all.offset), (ServiceConfig::default().max_page_size, 0));

    // Pages of 3 walk the same list, across type boundaries.
    let mut walked = Vec::new();
    for offset in [0, 3, 6, 9] {
        let params = pairs(&[("_count", "3"), ("_offset", &offset.to_string())]);
        let page = svc.patient_everything(&sys(), "p1", &params, Handling::Strict).await.unwrap();
        assert_eq!(page.page.total, Some(8));
        assert_eq!((page.count, page.offset), (3, offset));
        assert!(page.page.items.len() <= 3);
        walked.extend(refs(&page));
    }
    assert_eq!(walked, expected);

    // _count=0 counts only.
    let counted = svc.patient_everything(&sys(), "p1", &pairs(&[("_count", "0")]), Handling::Strict).await.unwrap();
    assert!(counted.page.items.is_empty());
    assert_eq!(counted.page.total, Some(8));
}

#[tokio::test]
async fn everything_filters_by_type_care_dates_and_since() {
    let svc = service();
    record(&svc).await;
    let types = svc
        .patient_everything(&sys(), "p1", &pairs(&[("_type", "Observation,Goal"), ("_type", "Encounter")]), Handling::Strict)
        .await
        .unwrap();
    assert_eq!(refs(&types), ["Encounter/e1", "Goal/g1", "Observation/o1", "Observation/o2", "Observation/o3"]);
    assert_eq!(types.applied, pairs(&[("_type", "Observation,Goal"), ("_type", "Encounter")]));
    let with_patient = svc.patient_everything(&sys(), "p1", &pairs(&[("_type", "Patient,Goal")]), Handling::Strict).await.unwrap();
    assert_eq!(refs(&with_patient), ["Patient/p1", "Goal/g1"]);

    // Care dates overlap [start, end]: o2 (2021-06) and the ongoing encounter are in;
    // o1 (2020-01), o3 (2022) and the 2019 procedure are out; Condition and Goal have
    // no `date` parameter and stay, as does the Patient.
    let dated = svc
        .patient_everything(&sys(), "p1", &pairs(&[("start", "2021-01-01"), ("end", "2021-12-31")]), Handling::Strict)
        .await
        .unwrap();
    assert_eq!(refs(&dated), ["Patient/p1", "Condition/c1", "Encounter/e1", "Goal/g1", "Observation/o2"]);
    let open_end = svc.patient_everything(&sys(), "p1", &pairs(&[("start", "2022")]), Handling::Strict).await.unwrap();
    assert_eq!(refs(&open_end), ["Patient/p1", "Condition/c1", "Encounter/e1", "Goal/g1", "Observation/o3"]);
    let open_start = svc.patient_everything(&sys(), "p1", &pairs(&[("end", "2019-06")]), Handling::Strict).await.unwrap();
    assert_eq!(refs(&open_start), ["Patient/p1", "Condition/c1", "Goal/g1", "Procedure/x1"]);

    // _since: what changed at or after o2's write (the step clock orders the writes).
    let o2 = svc.read(&sys(), "Observation", "o2").await.unwrap();
    let since = o2.last_updated.to_fhir();
    let changed = svc.patient_everything(&sys(), "p1", &pairs(&[("_since", &since)]), Handling::Strict).await.unwrap();
    assert_eq!(refs(&changed), ["Observation/o2", "Observation/o3", "Procedure/x1"]);
    // An update brings the Patient back into the _since window.
    put(&svc, json!({"resourceType": "Patient", "active": false}), "p1").await;
    let changed = svc.patient_everything(&sys(), "p1", &pairs(&[("_since", &since)]), Handling::Strict).await.unwrap();
    assert_eq!(refs(&changed)[0], "Patient/p1");
    assert_eq!(changed.page.total, Some(4));
}

#[tokio::test]
async fn everything_errors() {
    let svc = service();
    record(&svc).await;
    let kind = |r: Result<SearchResult, domain::Error>| r.expect_err("must fail").kind;
    assert_eq!(kind(svc.patient_everything(&sys(), "nobody", &[], Handling::Strict).await), ErrorKind::NotFound);
    svc.delete(&sys(), "Patient", "p2").await.unwrap();
    assert_eq!(kind(svc.patient_everything(&sys(), "p2", &[], Handling::Strict).await), ErrorKind::Gone);
    for bad in [("_type", "Medication"), ("start", "yesterday"), ("_count", "-1"), ("_offset", "x"), ("foo", "1")] {
        let e = svc.patient_everything(&sys(), "p1", &pairs(&[bad]), Handling::Strict).await.expect_err("bad parameter");
        assert_eq!(e.kind, ErrorKind::BadRequest, "{bad:?}");
        assert_eq!(e.issues[0].expression.as_deref(), Some(bad.0), "{bad:?}");
    }
    let reversed = pairs(&[("start", "2022"), ("end", "2021")]);
    assert_eq!(kind(svc.patient_everything(&sys(), "p1", &reversed, Handling::Strict).await), ErrorKind::BadRequest);
    // Lenient handling skips unknown parameters.
    let lenient = svc.patient_everything(&sys(), "p1", &pairs(&[("foo", "1")]), Handling::Lenient).await.unwrap();
    assert_eq!(lenient.page.total, Some(8));
    assert!(lenient.applied.is_empty());
}

fn coded(subject: &str, coding: Value, category: &str, date: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": coding,
        "subject": {"reference": subject},
        "effectiveDateTime": date
    })
}

fn loinc(code: &str) -> Value {
    json!({"coding": [{"system": "http://loinc.org", "code": code}]})
}

async fn observations(svc: &Service) {
    put(svc, patient(), "p1").await;
    put(svc, patient(), "p2").await;
    let p1 = "Patient/p1";
    put(svc, coded(p1, loinc("glucose"), "laboratory", "2024-01-01"), "g1").await;
    put(svc, coded(p1, loinc("glucose"), "laboratory", "2024-03-01"), "g3").await;
    put(svc, coded(p1, loinc("glucose"), "laboratory", "2024-02-01"), "g2a").await;
    put(svc, coded(p1, loinc("glucose"), "laboratory", "2024-02-01"), "g2b").await;
    put(svc, coded(p1, json!({"text": "Mood"}), "survey", "2024-01-05"), "m1").await;
    put(svc, coded(p1, loinc("pulse"), "vital-signs", "2024-04-01"), "v2").await;
    put(svc, coded(p1, loinc("pulse"), "vital-signs", "2023-04-01"), "v1").await;
    // Coded both as pulse and heart-rate: joins heart-rate's group to pulse's.
    let both = json!({"coding": [{"system": "http://loinc.org", "code": "heart-rate"}, {"system": "http://loinc.org", "code": "pulse"}]});
    put(svc, coded(p1, both, "vital-signs", "2022-01-01"), "v0").await;
    put(svc, coded(p1, loinc("heart-rate"), "vital-signs", "2024-05-01"), "h1").await;
    put(svc, coded("Patient/p2", loinc("glucose"), "laboratory", "2025-01-01"), "other").await;
}

#[tokio::test]
async fn lastn_keeps_the_newest_per_code() {
    let svc = service();
    observations(&svc).await;
    let ids = |r: &SearchResult| r.page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    // Groups in order of their newest: pulse+heart-rate (h1, 2024-05), glucose (g3), Mood (m1).
    let one = svc.observation_lastn(&sys(), &pairs(&[("patient", "p1")]), Handling::Strict).await.unwrap();
    assert_eq!(ids(&one), ["h1", "g3", "m1"]);
    assert_eq!(one.page.total, Some(3));

    // max=2: g2a and g2b tie for second place, so both come back (equal dates: the
    // store's tie-break, most recently written first).
    let two = svc.observation_lastn(&sys(), &pairs(&[("subject", "Patient/p1"), ("max", "2")]), Handling::Strict).await.unwrap();
    assert_eq!(ids(&two), ["h1", "v2", "g3", "g2b", "g2a", "m1"]);
    assert_eq!(two.applied[0], ("max".to_string(), "2".to_string()));

    let lab = svc
        .observation_lastn(&sys(), &pairs(&[("patient", "p1"), ("category", "laboratory"), ("max", "10")]), Handling::Strict)
        .await
        .unwrap();
    assert_eq!(ids(&lab), ["g3", "g2b", "g2a", "g1"]);
    let dated = svc
        .observation_lastn(&sys(), &pairs(&[("patient", "p1"), ("code", "glucose"), ("date", "lt2024-02-15")]), Handling::Strict)
        .await
        .unwrap();
    assert_eq!(ids(&dated), ["g2b", "g2a"]);

    let paged = svc
        .observation_lastn(&sys(), &pairs(&[("patient", "p1"), ("max", "2"), ("_count", "2"), ("_offset", "2")]), Handling::Strict)
        .await
        .unwrap();
    assert_eq!((ids(&paged), paged.page.total), (vec!["g3".to_string(), "g2b".to_string()], Some(6)));
}

#[tokio::test]
async fn lastn_errors() {
    let svc = service();
    observations(&svc).await;
    for bad in [
        pairs(&[("category", "laboratory")]),
        pairs(&[("patient", "p1"), ("max", "0")]),
        pairs(&[("patient", "p1"), ("max", "many")]),
        pairs(&[("patient", "p1"), ("_sort", "date")]),
        pairs(&[("patient", "p1"), ("nonsense", "1")]),
    ] {
        let e = svc.observation_lastn(&sys(), &bad, Handling::Strict).await.expect_err("bad request");
        assert_eq!(e.kind, ErrorKind::BadRequest, "{bad:?}");
    }
    let none = svc.observation_lastn(&sys(), &pairs(&[("patient", "nobody")]), Handling::Strict).await.unwrap();
    assert!(none.page.items.is_empty());
}

/// The per-type searches of `$everything` run concurrently on a multi-threaded runtime;
/// the page keeps the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_order_holds_under_parallel_searches() {
    let svc = service();
    record(&svc).await;
    for _ in 0..20 {
        let page = svc.patient_everything(&sys(), "p1", &pairs(&[("_count", "5"), ("_offset", "2")]), Handling::Strict).await.unwrap();
        assert_eq!(refs(&page), ["Encounter/e1", "Goal/g1", "Observation/o1", "Observation/o2", "Observation/o3"]);
    }
}
