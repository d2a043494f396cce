//! Contained resources (search.html#contained): `_contained=true|both` and
//! `_containedType`, chains through `#id` references, and that nothing else
//! (type and system searches, counts, history, scans) ever sees them.
//! Versions are made from JSON by the Service's own `prepare::stamp`, so the
//! contained resources are indexed as the Service indexes them.

use crate::harness::*;
use domain::service::prepare;
use domain::store::{Commit, HistoryQuery, HistoryScope, Method, Reindex, Store, Write};
use fhir::search::Registry;
use fhir::search::query::{ContainedMode, ContainedType, SearchQuery, SortKey, TotalMode};
use serde_json::{Value, json};
use std::sync::Arc;

fn stamped(resource: &Value, version: u64, when: i64) -> Write {
    let rt = resource["resourceType"].as_str().unwrap_or_default();
    let id = resource["id"].as_str().unwrap_or_default();
    let method = if version == 1 { Method::Post } else { Method::Put };
    prepare::stamp(&Registry::core(), rt, id, version, at(when), method, resource)
}

async fn put(store: &Arc<dyn Store>, resource: Value, version: u64, when: i64) {
    store.commit(commit(vec![stamped(&resource, version, when)])).await.expect("write");
}

fn medication(id: &str, code: &str, form: &str) -> Value {
    json!({"resourceType": "Medication", "id": id,
           "code": {"coding": [{"system": "http://example.org/med", "code": code}]},
           "form": {"coding": [{"system": "http://example.org/form", "code": form}]}})
}

fn request(id: &str, contained: Vec<Value>) -> Value {
    let first = contained.first().and_then(|c| c["id"].as_str()).unwrap_or("none").to_string();
    json!({"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
           "subject": {"reference": "Patient/p1"}, "contained": contained,
           "medicationReference": {"reference": format!("#{first}")}})
}

/// Medication/med1 (A, tablet) of its own; MedicationRequest/mr1 contains
/// #m1 (A, tablet) and #m2 (B, capsule); mr2 contains #m1 (A, capsule).
async fn seed(store: &Arc<dyn Store>) {
    put(store, medication("med1", "A", "tablet"), 1, 1).await;
    put(store, request("mr1", vec![medication("m1", "A", "tablet"), medication("m2", "B", "capsule")]), 1, 2).await;
    put(store, request("mr2", vec![medication("m1", "A", "capsule")]), 1, 3).await;
}

fn search(params: &[(&str, &str)]) -> SearchQuery {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut query = fhir::search::query::parse(&Registry::core(), Some("Medication"), &params, false)
        .unwrap_or_else(|e| panic!("{params:?}: {e:?}"))
        .query;
    query.count = 100;
    query
}

/// `Type/id` of the matches, in order.
async fn found(store: &Arc<dyn Store>, query: &SearchQuery) -> Vec<String> {
    let page = store.search(query).await.expect("search");
    let keys = store.search_keys(query).await.expect("search keys");
    let listed: Vec<String> = page.items.iter().map(|r| format!("{}/{}", r.resource_type, r.id)).collect();
    let keyed: Vec<String> = keys.iter().map(|(t, id)| format!("{t}/{id}")).collect();
    assert_eq!(listed, keyed, "search and search_keys agree");
    listed
}

async fn total(store: &Arc<dyn Store>, query: &SearchQuery) -> u64 {
    let counting = SearchQuery { count: 0, total: TotalMode::Accurate, ..query.clone() };
    store.search(&counting).await.expect("count").total.unwrap_or(u64::MAX)
}

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

pub(crate) async fn only_asked_for_contained_resources_are_searched(store: Arc<dyn Store>) {
    seed(&store).await;
    let plain = search(&[("code", "A")]);
    assert_eq!(found(&store, &plain).await, ["Medication/med1"]);
    assert_eq!(found(&store, &search(&[("code", "A"), ("_contained", "false")])).await, ["Medication/med1"]);

    // true: the containers, newest first, once each.
    let only = search(&[("code", "A"), ("_contained", "true")]);
    assert_eq!(found(&store, &only).await, ["MedicationRequest/mr2", "MedicationRequest/mr1"]);
    assert_eq!(total(&store, &only).await, 2);
    // both: and the Medications of their own.
    let both = search(&[("code", "A"), ("_contained", "both")]);
    assert_eq!(found(&store, &both).await, ["MedicationRequest/mr2", "MedicationRequest/mr1", "Medication/med1"]);
    assert_eq!(total(&store, &both).await, 3);

    // contained: each contained match under `<container id>#<id>`.
    let contained = search(&[("code", "A"), ("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &contained).await, ["MedicationRequest/mr2#m1", "MedicationRequest/mr1#m1"]);
    let page = store.search(&contained).await.expect("search");
    assert!(page.items.iter().all(|r| r.version_id == 1 && r.body.as_deref().is_some_and(|b| b.contains("\"contained\""))));
    let both = search(&[("code", "A"), ("_contained", "both"), ("_containedType", "contained")]);
    assert_eq!(
        found(&store, &both).await,
        ["MedicationRequest/mr2#m1", "MedicationRequest/mr1#m1", "Medication/med1"]
    );
    assert_eq!(total(&store, &both).await, 3);

    // Without conditions: every contained Medication.
    let all = search(&[("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(
        sorted(found(&store, &all).await),
        ["MedicationRequest/mr1#m1", "MedicationRequest/mr1#m2", "MedicationRequest/mr2#m1"]
    );
    assert_eq!(found(&store, &search(&[("_contained", "true")])).await, ["MedicationRequest/mr2", "MedicationRequest/mr1"]);
    // A type nothing contains.
    let none = fhir::search::query::parse(
        &Registry::core(),
        Some("Patient"),
        &[("_contained".to_string(), "true".to_string())],
        false,
    )
    .expect("parse")
    .query;
    assert!(store.search(&none).await.expect("search").items.is_empty());
}

pub(crate) async fn every_condition_holds_for_one_contained_resource(store: Arc<dyn Store>) {
    seed(&store).await;
    // mr1's #m1 has code A and its #m2 form capsule: no one resource has both.
    let query = search(&[("code", "A"), ("form", "capsule"), ("_contained", "true")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2"]);
    let query = search(&[("code", "A"), ("form", "capsule"), ("_contained", "both"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2#m1"]);
    // Two contained matches of one container: the container once, or each.
    let query = search(&[("code", "A,B"), ("_contained", "true")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2", "MedicationRequest/mr1"]);
    assert_eq!(total(&store, &query).await, 2);
    let query = search(&[("code", "A,B"), ("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(
        found(&store, &query).await,
        ["MedicationRequest/mr2#m1", "MedicationRequest/mr1#m1", "MedicationRequest/mr1#m2"]
    );
    assert_eq!(total(&store, &query).await, 3);
    // `_id` is the id in the container; `_lastUpdated` the container's.
    let query = search(&[("_id", "m2"), ("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr1#m2"]);
    let query = search(&[("_id", "med1,m2"), ("_contained", "both"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr1#m2", "Medication/med1"]);
    let since = at(3).to_fhir();
    let query = search(&[("_lastUpdated", &format!("ge{since}")), ("_contained", "both")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2"]);
    // `:missing`, `:not`, and the words of a contained resource.
    let query = search(&[("form:missing", "true"), ("_contained", "true")]);
    assert!(found(&store, &query).await.is_empty());
    let query = search(&[("code:not", "A"), ("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr1#m2"]);
    let query = search(&[("_content", "capsule"), ("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(sorted(found(&store, &query).await), ["MedicationRequest/mr1#m2", "MedicationRequest/mr2#m1"]);
}

pub(crate) async fn contained_matches_sort_by_their_own_values(store: Arc<dyn Store>) {
    seed(&store).await;
    let query = search(&[("_contained", "both"), ("_containedType", "contained"), ("_sort", "-code,_id")]);
    assert_eq!(
        found(&store, &query).await,
        ["MedicationRequest/mr1#m2", "Medication/med1", "MedicationRequest/mr1#m1", "MedicationRequest/mr2#m1"]
    );
    let query = search(&[("_contained", "true"), ("_containedType", "contained"), ("_sort", "_id")]);
    assert_eq!(
        found(&store, &query).await,
        ["MedicationRequest/mr1#m1", "MedicationRequest/mr1#m2", "MedicationRequest/mr2#m1"]
    );
    // Containers by their own id or last update.
    let mut query = search(&[("_contained", "both"), ("_sort", "_id")]);
    assert_eq!(found(&store, &query).await, ["Medication/med1", "MedicationRequest/mr1", "MedicationRequest/mr2"]);
    query.sort = vec![SortKey { param: "_lastUpdated".into(), descending: false }];
    assert_eq!(found(&store, &query).await, ["Medication/med1", "MedicationRequest/mr1", "MedicationRequest/mr2"]);
    // Paging through contained matches.
    let mut query = search(&[("_contained", "true"), ("_containedType", "contained"), ("_sort", "_id")]);
    query.count = 2;
    query.offset = 1;
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr1#m2", "MedicationRequest/mr2#m1"]);
}

pub(crate) async fn contained_resources_follow_their_container(store: Arc<dyn Store>) {
    seed(&store).await;
    // mr1 now contains only #m1, recoded C.
    put(&store, request("mr1", vec![medication("m1", "C", "tablet")]), 2, 10).await;
    let query = search(&[("code", "A,B"), ("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2#m1"]);
    let query = search(&[("code", "C"), ("_contained", "true")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr1"]);
    let page = store.search(&query).await.expect("search");
    assert_eq!(page.items[0].version_id, 2, "the container's current version");
    // A version without `contained` leaves none.
    let mut bare = request("mr1", vec![]);
    bare.as_object_mut().map(|o| o.remove("contained"));
    put(&store, bare, 3, 11).await;
    assert!(found(&store, &search(&[("code", "C"), ("_contained", "true")])).await.is_empty());
    // A deleted container takes its contained resources with it.
    store.commit(commit(vec![delete("MedicationRequest", "mr2", 2, at(12))])).await.expect("delete");
    assert!(found(&store, &search(&[("_contained", "true")])).await.is_empty());
    assert_eq!(found(&store, &search(&[("_contained", "both")])).await, ["Medication/med1"]);
    // Written again after the delete, it contains again.
    put(&store, request("mr2", vec![medication("m9", "A", "tablet")]), 3, 13).await;
    let query = search(&[("code", "A"), ("_contained", "true"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2#m9"]);

    // $reindex rewrites them (here: as if they had never been indexed).
    let mr2 = store.read("MedicationRequest", "mr2").await.expect("read").expect("mr2");
    let body: Value = serde_json::from_str(mr2.body.as_deref().unwrap_or("{}")).expect("json");
    let bare = Reindex {
        resource_type: "MedicationRequest".into(),
        id: "mr2".into(),
        version_id: 3,
        index: Registry::core().extract(&body),
        text: Default::default(),
        contained: Vec::new(),
    };
    store.commit(Commit { reindex: vec![bare.clone()], ..Commit::default() }).await.expect("reindex");
    assert!(found(&store, &query).await.is_empty());
    let full = Reindex { contained: prepare::contained_index(&Registry::core(), &body), ..bare.clone() };
    store.commit(Commit { reindex: vec![full.clone()], ..Commit::default() }).await.expect("reindex");
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2#m9"]);
    // A reindex of a version that moved on is skipped, contained ones too.
    let stale = Reindex { version_id: 2, contained: Vec::new(), ..full };
    store.commit(Commit { reindex: vec![stale], ..Commit::default() }).await.expect("reindex");
    assert_eq!(found(&store, &query).await, ["MedicationRequest/mr2#m9"]);
}

pub(crate) async fn other_searches_never_see_contained_resources(store: Arc<dyn Store>) {
    seed(&store).await;
    // Type searches, one-lookup counts (from the index on SQL stores), no filter.
    assert_eq!(found(&store, &search(&[("code", "A")])).await, ["Medication/med1"]);
    assert_eq!(total(&store, &search(&[("code", "A")])).await, 1);
    assert_eq!(total(&store, &search(&[("form", "capsule")])).await, 0);
    assert_eq!(total(&store, &search(&[("code", "B")])).await, 0);
    assert_eq!(found(&store, &search(&[])).await, ["Medication/med1"]);
    assert_eq!(total(&store, &search(&[])).await, 1);
    assert_eq!(total(&store, &search(&[("_id", "m1")])).await, 0);
    // A system search, and `:missing` across types.
    let everything = SearchQuery { count: 100, total: TotalMode::Accurate, ..SearchQuery::default() };
    let page = store.search(&everything).await.expect("search");
    assert_eq!(page.total, Some(3));
    assert!(page.items.iter().all(|r| !r.resource_type.starts_with('#') && !r.id.contains('#')));
    // History and scans list the three resources' versions only.
    let all = HistoryQuery { count: 100, ..HistoryQuery::default() };
    let history = store.history(&HistoryScope::System, &all).await.expect("history");
    assert_eq!(history.total, Some(3));
    let medications = store.history(&HistoryScope::Type("Medication".into()), &all).await.expect("history");
    assert_eq!(medications.total, Some(1));
    let scanned = store.scan(None, None, 100).await.expect("scan");
    let keys: Vec<String> = scanned.iter().map(|r| format!("{}/{}", r.resource_type, r.id)).collect();
    assert_eq!(keys, ["Medication/med1", "MedicationRequest/mr1", "MedicationRequest/mr2"]);
    assert!(store.read("Medication", "m1").await.expect("read").is_none());
    // A reverse chain cannot reach a contained resource (nothing refers to
    // it by type and id), and a chain from a stand-alone resource only
    // through its own `#id`.
    let query = search(&[("_has:MedicationRequest:medication:status", "active"), ("_contained", "both")]);
    assert!(found(&store, &query).await.is_empty());
}

pub(crate) async fn chains_go_into_contained_resources(store: Arc<dyn Store>) {
    let observation = |id: &str, subject: &str, contained: Vec<Value>| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
               "subject": {"reference": subject}, "contained": contained})
    };
    let patient = |id: &str, family: &str| json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]});
    put(&store, patient("pt1", "Taylor"), 1, 1).await;
    put(&store, observation("o1", "#p1", vec![patient("p1", "Taylor")]), 1, 2).await;
    put(&store, observation("o2", "Patient/pt1", vec![]), 1, 3).await;
    // o3 contains a Taylor that its subject does not refer to.
    put(&store, observation("o3", "Patient/pt2", vec![patient("p1", "Taylor")]), 1, 4).await;
    put(&store, observation("o4", "#p1", vec![patient("p1", "Jones")]), 1, 5).await;
    let chained = |value: &str| {
        let params = vec![("subject.family".to_string(), value.to_string())];
        let mut query =
            fhir::search::query::parse(&Registry::core(), Some("Observation"), &params, false).expect("parse").query;
        query.count = 100;
        query
    };
    assert_eq!(sorted(ids(&store, &chained("Taylor")).await), ["o1", "o2"]);
    assert_eq!(ids(&store, &chained("Jones")).await, ["o4"]);
    assert_eq!(total(&store, &chained("Taylor")).await, 2);
    let typed = {
        let params = vec![("subject:Patient.family".to_string(), "Jon".to_string())];
        fhir::search::query::parse(&Registry::core(), Some("Observation"), &params, false).expect("parse").query
    };
    assert_eq!(ids(&store, &SearchQuery { count: 100, ..typed }).await, ["o4"]);
    // With a code, a chain to patients reads the patients' coded records
    // (idx_patient_token on SQL stores): contained Patients are among them.
    for param in ["subject:Patient", "patient"] {
        let params = vec![(format!("{param}.family"), "Taylor".to_string()), ("code".into(), "http://loinc.org|1234-5".into())];
        let query = fhir::search::query::parse(&Registry::core(), Some("Observation"), &params, false).expect("parse").query;
        let query = SearchQuery { count: 100, ..query };
        assert_eq!(sorted(ids(&store, &query).await), ["o1", "o2"], "{param}");
        let keys = store.search_keys(&query).await.expect("keys");
        assert_eq!(sorted(keys.into_iter().map(|(_, id)| id).collect()), ["o1", "o2"], "{param}");
        assert_eq!(total(&store, &query).await, 2, "{param}");
    }
    // The contained Patients are not Patients of their own.
    let patients = {
        let params = vec![("family".to_string(), "Taylor".to_string())];
        fhir::search::query::parse(&Registry::core(), Some("Patient"), &params, false).expect("parse").query
    };
    assert_eq!(ids(&store, &SearchQuery { count: 100, ..patients.clone() }).await, ["pt1"]);
    let contained = SearchQuery { count: 100, contained: ContainedMode::Only, contained_type: ContainedType::Contained, ..patients };
    assert_eq!(sorted(ids(&store, &contained).await), ["o1#p1", "o3#p1"]);
    // Rewritten without the contained Patient, o1 no longer matches.
    put(&store, observation("o1", "#p1", vec![]), 2, 6).await;
    assert_eq!(ids(&store, &chained("Taylor")).await, ["o2"]);
    let params = vec![("patient.family".to_string(), "Taylor".to_string()), ("code".into(), "1234-5".into())];
    let query = fhir::search::query::parse(&Registry::core(), Some("Observation"), &params, false).expect("parse").query;
    assert_eq!(ids(&store, &SearchQuery { count: 100, ..query.clone() }).await, ["o2"]);
    assert_eq!(store.search_keys(&SearchQuery { count: 100, ..query }).await.expect("keys").len(), 1);
}

pub(crate) async fn a_resource_can_match_itself_and_contain_a_match(store: Arc<dyn Store>) {
    let mut med2 = medication("med2", "A", "tablet");
    med2["contained"] = json!([medication("ing", "A", "powder")]);
    med2["ingredient"] = json!([{"itemReference": {"reference": "#ing"}}]);
    put(&store, med2.clone(), 1, 1).await;
    let query = search(&[("code", "A"), ("_contained", "both")]);
    assert_eq!(found(&store, &query).await, ["Medication/med2"]);
    assert_eq!(total(&store, &query).await, 1);
    let query = search(&[("code", "A"), ("_contained", "both"), ("_containedType", "contained")]);
    assert_eq!(found(&store, &query).await, ["Medication/med2", "Medication/med2#ing"]);
    assert_eq!(total(&store, &query).await, 2);
    assert_eq!(found(&store, &search(&[("code", "A"), ("_contained", "true")])).await, ["Medication/med2"]);
    assert_eq!(found(&store, &search(&[("form", "powder"), ("_contained", "both")])).await, ["Medication/med2"]);
    assert_eq!(found(&store, &search(&[("form", "powder")])).await, Vec::<String>::new());
    // Written again without it, then with it again.
    med2.as_object_mut().map(|o| o.remove("contained"));
    put(&store, med2.clone(), 2, 2).await;
    assert!(found(&store, &search(&[("_contained", "true")])).await.is_empty());
    assert_eq!(found(&store, &search(&[("_contained", "both")])).await, ["Medication/med2"]);
    med2["contained"] = json!([medication("ing", "B", "powder")]);
    put(&store, med2, 3, 3).await;
    assert_eq!(found(&store, &search(&[("code", "B"), ("_contained", "true")])).await, ["Medication/med2"]);
}
