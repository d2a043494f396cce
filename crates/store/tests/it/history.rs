//! History: newest first by the global write order, scoped, filtered by time
//! and paged, always with a total.

use crate::harness::*;
use domain::store::{HistoryQuery, HistoryScope, Method, Store, StoredResource};
use std::sync::Arc;

fn all(count: usize) -> HistoryQuery {
    HistoryQuery { count, ..Default::default() }
}

fn keys(items: &[StoredResource]) -> Vec<(String, String, u64)> {
    items.iter().map(|r| (r.resource_type.clone(), r.id.clone(), r.version_id)).collect()
}

fn key(resource_type: &str, id: &str, version: u64) -> (String, String, u64) {
    (resource_type.into(), id.into(), version)
}

pub(crate) async fn instance_history_newest_first(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    create(&store, "Patient", "p2", at(2), vec![]).await;
    store.commit(commit(vec![write("Patient", "p1", 2, at(3), vec![])])).await.expect("update");
    store.commit(commit(vec![delete("Patient", "p1", 3, at(4))])).await.expect("delete");
    let scope = HistoryScope::Instance { resource_type: "Patient".into(), id: "p1".into() };
    let page = store.history(&scope, &all(10)).await.expect("history");
    assert_eq!(page.total, Some(3));
    assert_eq!(keys(&page.items), vec![key("Patient", "p1", 3), key("Patient", "p1", 2), key("Patient", "p1", 1)]);
    assert_eq!(page.items[0].method, Method::Delete);
    assert!(page.items[0].body.is_none());
    assert_eq!(page.items[2].body.as_deref(), Some(&*body("Patient", "p1", 1)));
}

pub(crate) async fn type_and_system_history(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    create(&store, "Observation", "o1", at(2), vec![]).await;
    store.commit(commit(vec![write("Patient", "p1", 2, at(3), vec![])])).await.expect("update");
    // A commit with several writes keeps their order.
    store
        .commit(commit(vec![write("Observation", "o2", 1, at(4), vec![]), write("Patient", "p2", 1, at(4), vec![])]))
        .await
        .expect("bundle");
    let patients = store.history(&HistoryScope::Type("Patient".into()), &all(10)).await.expect("history");
    assert_eq!(patients.total, Some(3));
    assert_eq!(keys(&patients.items), vec![key("Patient", "p2", 1), key("Patient", "p1", 2), key("Patient", "p1", 1)]);
    let system = store.history(&HistoryScope::System, &all(10)).await.expect("history");
    assert_eq!(system.total, Some(5));
    assert_eq!(keys(&system.items), vec![
        key("Patient", "p2", 1),
        key("Observation", "o2", 1),
        key("Patient", "p1", 2),
        key("Observation", "o1", 1),
        key("Patient", "p1", 1),
    ]);
}

pub(crate) async fn history_paging(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    for version in 2..=5 {
        store.commit(commit(vec![write("Patient", "p1", version, at(version as i64), vec![])])).await.expect("update");
    }
    let scope = HistoryScope::Instance { resource_type: "Patient".into(), id: "p1".into() };
    let page = store.history(&scope, &HistoryQuery { count: 2, offset: 2, ..Default::default() }).await.expect("page");
    assert_eq!(page.total, Some(5));
    assert_eq!(page.items.iter().map(|r| r.version_id).collect::<Vec<_>>(), vec![3, 2]);
    let last = store.history(&scope, &HistoryQuery { count: 2, offset: 4, ..Default::default() }).await.expect("page");
    assert_eq!(last.items.iter().map(|r| r.version_id).collect::<Vec<_>>(), vec![1]);
    let beyond = store.history(&scope, &HistoryQuery { count: 2, offset: 9, ..Default::default() }).await.expect("page");
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, Some(5));
    let none = store.history(&scope, &HistoryQuery { count: 0, ..Default::default() }).await.expect("count 0");
    assert!(none.items.is_empty());
    assert_eq!(none.total, Some(5));
}

pub(crate) async fn history_since_and_not_after(store: Arc<dyn Store>) {
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        create(&store, "Patient", id, at(10 * (i as i64 + 1)), vec![]).await;
    }
    // Versions at 10, 20, 30, 40 seconds: since is inclusive, not_after too.
    let since = HistoryQuery { since: Some(at(20)), count: 10, ..Default::default() };
    let page = store.history(&HistoryScope::System, &since).await.expect("since");
    assert_eq!(page.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["d", "c", "b"]);
    assert_eq!(page.total, Some(3));
    let window = HistoryQuery { since: Some(at(15)), not_after: Some(at(30)), count: 10, ..Default::default() };
    let page = store.history(&HistoryScope::Type("Patient".into()), &window).await.expect("window");
    assert_eq!(page.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["c", "b"]);
    assert_eq!(page.total, Some(2));
}

pub(crate) async fn history_of_unknown_is_empty(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    let scope = HistoryScope::Instance { resource_type: "Patient".into(), id: "nope".into() };
    let page = store.history(&scope, &all(10)).await.expect("history");
    assert!(page.items.is_empty());
    assert_eq!(page.total, Some(0));
    let page = store.history(&HistoryScope::Type("Encounter".into()), &all(10)).await.expect("history");
    assert_eq!(page.total, Some(0));
}
