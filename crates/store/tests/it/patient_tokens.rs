//! A patient's coded records (`Observation?patient=X&code=S|C&_sort=-date`,
//! `subject:Patient.family=..&code=..`), which the SQL stores answer from
//! `idx_patient_token`, and counts of one lookup, which they answer from the
//! index rows alone: the answers must be those of the memory store, the
//! reference, in every corner (no date, ties, two patients on one record, a
//! Group with a patient's id, no system, updates and deletes, parameters
//! shared by several resource types).

use crate::harness::*;
use fhir::search::query::{Condition, Match, SearchQuery, SortKey, StringMode, TokenSystem, TotalMode};
use std::sync::Arc;
use domain::store::Store;

const LOINC: &str = "http://loinc.org";

fn patient(id: &str) -> Condition {
    cond("patient", Match::Reference { target_type: None, id: id.into() })
}

fn loinc(code: &str) -> Condition {
    cond("code", Match::Token { system: TokenSystem::Is(LOINC.into()), code: Some(code.into()), negate: false })
}

/// The ids a search lists as keys (what a first page keeps for paging),
/// checked against the ids its page statement returns.
async fn keys(store: &Arc<dyn Store>, q: &SearchQuery) -> Vec<String> {
    let listed: Vec<String> = store.search_keys(q).await.expect("search_keys").into_iter().map(|(_, id)| id).collect();
    assert_eq!(listed, ids(store, q).await, "keys and page differ");
    listed
}

fn newest_first(mut q: SearchQuery) -> SearchQuery {
    q.sort = vec![SortKey { param: "date".into(), descending: true }];
    q
}

fn oldest_first(mut q: SearchQuery) -> SearchQuery {
    q.sort = vec![SortKey { param: "date".into(), descending: false }];
    q
}

/// An Observation of `patients` (by subject, so also by patient) with a LOINC code and a date.
fn observation(patients: &[&str], code: &str, when: Option<(i64, i64)>) -> Vec<fhir::search::IndexEntry> {
    let mut index = Vec::new();
    for p in patients {
        index.push(reference("subject", "Patient", p));
        index.push(reference("patient", "Patient", p));
    }
    index.push(token("code", Some(LOINC), Some(code), None));
    index.push(token("status", None, Some("final"), None));
    if let Some((low, high)) = when {
        index.push(date("date", low, high));
    }
    index
}

pub(crate) async fn a_patients_coded_records_in_date_order(store: Arc<dyn Store>) {
    create(&store, "Observation", "old", at(1), observation(&["p1"], "2345-7", Some((100, 200)))).await;
    create(&store, "Observation", "new", at(2), observation(&["p1"], "2345-7", Some((500, 600)))).await;
    create(&store, "Observation", "undated", at(3), observation(&["p1"], "2345-7", None)).await;
    // The same highest bound as `new`: ties are broken newest first by last update, then by id.
    create(&store, "Observation", "tie_b", at(4), observation(&["p1"], "2345-7", Some((550, 600)))).await;
    create(&store, "Observation", "tie_a", at(4), observation(&["p1"], "2345-7", Some((550, 600)))).await;
    // Another code, another patient, and a record of two patients.
    create(&store, "Observation", "other_code", at(5), observation(&["p1"], "8867-4", Some((700, 700)))).await;
    create(&store, "Observation", "other_patient", at(6), observation(&["p2"], "2345-7", Some((700, 700)))).await;
    create(&store, "Observation", "both", at(7), observation(&["p1", "p2"], "2345-7", Some((300, 300)))).await;
    // A Group with the patient's id is not the patient.
    create(&store, "Observation", "group", at(8), vec![
        reference("subject", "Group", "p1"),
        token("code", Some(LOINC), Some("2345-7"), None),
        date("date", 800, 800),
    ])
    .await;
    // The same code on a Condition of the patient is not an Observation.
    create(&store, "Condition", "condition", at(9), observation(&["p1"], "2345-7", Some((900, 900)))).await;

    let q = query("Observation", vec![patient("p1"), loinc("2345-7")]);
    assert_eq!(keys(&store, &newest_first(q.clone())).await, vec!["tie_a", "tie_b", "new", "both", "old", "undated"]);
    assert_eq!(keys(&store, &oldest_first(q.clone())).await, vec!["old", "both", "new", "tie_a", "tie_b", "undated"]);
    assert_eq!(keys(&store, &q).await, vec!["both", "tie_a", "tie_b", "undated", "new", "old"]);
    // Paged: the second page of two continues the order.
    let mut page = newest_first(q.clone());
    page.count = 2;
    page.offset = 2;
    page.total = TotalMode::Accurate;
    let found = store.search(&page).await.expect("search");
    assert_eq!(found.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["new", "both"]);
    assert_eq!(found.total, Some(6));
    assert_eq!(keys(&store, &page).await, vec!["new", "both"]);
    // By subject typed Patient, in the default order (newest update first).
    let by_subject = query("Observation", vec![
        cond("subject", Match::Reference { target_type: Some("Patient".into()), id: "p1".into() }),
        loinc("2345-7"),
    ]);
    assert_eq!(keys(&store, &by_subject).await, vec!["both", "tie_a", "tie_b", "undated", "new", "old"]);
    // Untyped subject also finds the Group's record.
    let untyped = query("Observation", vec![cond("subject", Match::Reference { target_type: None, id: "p1".into() }), loinc("2345-7")]);
    assert_eq!(id_set(&store, &untyped).await, strs(&["both", "group", "new", "old", "tie_a", "tie_b", "undated"]));
    // With a third condition, probed per row.
    let with_status = query("Observation", vec![
        patient("p1"),
        loinc("2345-7"),
        cond("status", Match::Token { system: TokenSystem::Any, code: Some("final".into()), negate: false }),
    ]);
    assert_eq!(ids(&store, &newest_first(with_status)).await, vec!["tie_a", "tie_b", "new", "both", "old", "undated"]);
    // A code without system, and any system.
    let any_system = query("Observation", vec![
        patient("p2"),
        cond("code", Match::Token { system: TokenSystem::Any, code: Some("2345-7".into()), negate: false }),
    ]);
    assert_eq!(keys(&store, &newest_first(any_system)).await, vec!["other_patient", "both"]);
    let no_system = query("Observation", vec![
        patient("p1"),
        cond("status", Match::Token { system: TokenSystem::NoSystem, code: Some("final".into()), negate: false }),
    ]);
    assert_eq!(ids(&store, &newest_first(no_system)).await.len(), 7);

    // `patient` pointing at a Group with the id: found untyped, not as a Patient.
    create(&store, "Observation", "group_by_patient", at(12), vec![
        reference("patient", "Group", "p1"),
        token("code", Some(LOINC), Some("9999-9"), None),
        date("date", 100, 100),
    ])
    .await;
    let untyped = query("Observation", vec![patient("p1"), loinc("9999-9")]);
    assert_eq!(keys(&store, &newest_first(untyped)).await, vec!["group_by_patient"]);
    let typed = query("Observation", vec![
        cond("patient", Match::Reference { target_type: Some("Patient".into()), id: "p1".into() }),
        loinc("9999-9"),
    ]);
    assert!(keys(&store, &newest_first(typed)).await.is_empty());

    // An update that changes the code, and a delete, leave the patient's list.
    store.commit(commit(vec![write("Observation", "new", 2, at(10), observation(&["p1"], "8867-4", Some((500, 600))))])).await.expect("update");
    store.commit(commit(vec![delete("Observation", "old", 2, at(11))])).await.expect("delete");
    assert_eq!(keys(&store, &newest_first(q.clone())).await, vec!["tie_a", "tie_b", "both", "undated"]);
    let codes = query("Observation", vec![patient("p1"), loinc("8867-4")]);
    assert_eq!(keys(&store, &newest_first(codes)).await, vec!["other_code", "new"]);
}

pub(crate) async fn chained_patients_with_a_code(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![string("family", "Smith")]).await;
    create(&store, "Patient", "p2", at(2), vec![string("family", "Smithers")]).await;
    create(&store, "Patient", "p3", at(3), vec![string("family", "Jones")]).await;
    create(&store, "Observation", "o1", at(4), observation(&["p1"], "2345-7", Some((100, 100)))).await;
    create(&store, "Observation", "o2", at(5), observation(&["p2"], "2345-7", Some((200, 200)))).await;
    create(&store, "Observation", "o3", at(6), observation(&["p3"], "2345-7", Some((300, 300)))).await;
    create(&store, "Observation", "o12", at(7), observation(&["p1", "p2"], "2345-7", Some((400, 400)))).await;
    create(&store, "Observation", "o1_other", at(8), observation(&["p1"], "8867-4", Some((500, 500)))).await;
    let chain = |family: &str| {
        cond("subject", Match::Chain {
            target_types: vec!["Patient".into()],
            inner: vec![cond("family", Match::String { value: family.into(), mode: StringMode::Prefix })],
        })
    };
    let q = query("Observation", vec![chain("smith"), loinc("2345-7")]);
    // Each match once, although o12 is a record of two matching patients.
    assert_eq!(keys(&store, &q).await, vec!["o12", "o2", "o1"]);
    assert_eq!(keys(&store, &newest_first(q.clone())).await, vec!["o12", "o2", "o1"]);
    assert_eq!(keys(&store, &oldest_first(q.clone())).await, vec!["o1", "o2", "o12"]);
    let mut counted = q.clone();
    counted.count = 0;
    counted.total = TotalMode::Accurate;
    assert_eq!(store.search(&counted).await.expect("count").total, Some(3));
    // A deleted patient's records are no longer found through the chain.
    store.commit(commit(vec![delete("Patient", "p2", 2, at(9))])).await.expect("delete");
    assert_eq!(keys(&store, &q).await, vec!["o12", "o1"]);
}

pub(crate) async fn counts_of_one_lookup_are_per_type(store: Arc<dyn Store>) {
    create(&store, "Observation", "o1", at(1), observation(&["p1"], "2345-7", None)).await;
    create(&store, "Observation", "o2", at(2), vec![
        token("code", Some(LOINC), Some("2345-7"), None),
        token("code", Some(LOINC), Some("2345-7"), Some("twice")),
    ])
    .await;
    create(&store, "Observation", "o3", at(3), observation(&["p1"], "8867-4", None)).await;
    create(&store, "Condition", "c1", at(4), vec![token("code", Some(LOINC), Some("2345-7"), None)]).await;
    create(&store, "Observation", "gone", at(5), vec![token("code", Some(LOINC), Some("2345-7"), None)]).await;
    store.commit(commit(vec![delete("Observation", "gone", 2, at(6))])).await.expect("delete");
    let count = |q: SearchQuery| {
        let store = Arc::clone(&store);
        async move {
            let mut q = q;
            q.count = 0;
            q.total = TotalMode::Accurate;
            store.search(&q).await.expect("count").total
        }
    };
    // A resource with the code twice counts once; the Condition and the deleted one not at all.
    assert_eq!(count(query("Observation", vec![loinc("2345-7")])).await, Some(2));
    assert_eq!(count(query("Condition", vec![loinc("2345-7")])).await, Some(1));
    assert_eq!(count(query("Observation", vec![loinc("nothing")])).await, Some(0));
    assert_eq!(count(query("Observation", vec![patient("p1")])).await, Some(2));
    // A system-wide search still spans the types.
    let mut everywhere = query("Observation", vec![loinc("2345-7")]);
    everywhere.resource_type = None;
    assert_eq!(count(everywhere.clone()).await, Some(3));
    assert_eq!(id_set(&store, &everywhere).await, strs(&["c1", "o1", "o2"]));
}
