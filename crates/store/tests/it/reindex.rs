//! `Store::scan` (the walk `$reindex` and exports use) and `Commit::reindex`
//! (index rows rewritten without a new version).

use crate::harness::*;
use domain::store::{Commit, Reindex, Store};
use fhir::search::query::{Match, StringMode};
use fhir::search::text::TextIndex;
use std::sync::Arc;

fn by_name(name: &str) -> fhir::search::query::SearchQuery {
    query("Patient", vec![cond("name", Match::String { value: name.into(), mode: StringMode::Prefix })])
}

fn reindex(id: &str, version: u64, name: &str) -> Reindex {
    Reindex {
        resource_type: "Patient".into(),
        id: id.into(),
        version_id: version,
        index: vec![string("name", name)],
        text: TextIndex::default(),
        contained: Vec::new(),
    }
}

async fn keys(store: &Arc<dyn Store>, resource_type: Option<&str>, step: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let batch = store.scan(resource_type, after.as_ref(), step).await.expect("scan");
        assert!(batch.len() <= step);
        let Some(last) = batch.last() else { break };
        after = Some((last.resource_type.clone(), last.id.clone()));
        out.extend(batch.iter().map(|r| format!("{}/{}/{}", r.resource_type, r.id, r.version_id)));
        if batch.len() < step {
            break;
        }
    }
    out
}

pub(crate) async fn scan_walks_current_resources_in_key_order(store: Arc<dyn Store>) {
    for (rt, id) in [("Patient", "b"), ("Observation", "z"), ("Patient", "a"), ("Patient", "c"), ("Encounter", "m")] {
        create(&store, rt, id, at(1), vec![]).await;
    }
    store.commit(commit(vec![write("Patient", "b", 2, at(2), vec![])])).await.expect("update");
    store.commit(commit(vec![delete("Patient", "c", 2, at(3))])).await.expect("delete");
    let all = ["Encounter/m/1", "Observation/z/1", "Patient/a/1", "Patient/b/2"];
    for step in [1, 2, 10] {
        assert_eq!(keys(&store, None, step).await, all, "step {step}");
        assert_eq!(keys(&store, Some("Patient"), step).await, ["Patient/a/1", "Patient/b/2"], "step {step}");
    }
    assert!(keys(&store, Some("Condition"), 5).await.is_empty());
    // Bodies come with the rows.
    let first = store.scan(Some("Observation"), None, 1).await.expect("scan");
    assert!(first[0].body.as_deref().is_some_and(|b| b.contains("1.50")));
}

pub(crate) async fn reindex_replaces_rows_without_a_new_version(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![string("name", "Old")]).await;
    let commit = Commit { reindex: vec![reindex("p1", 1, "New")], ..Commit::default() };
    store.commit(commit).await.expect("reindex");
    assert!(ids(&store, &by_name("old")).await.is_empty());
    assert_eq!(ids(&store, &by_name("new")).await, strs(&["p1"]));
    let current = store.read("Patient", "p1").await.expect("read").expect("exists");
    assert_eq!(current.version_id, 1, "reindexing makes no version");
    let history = store
        .history(&domain::store::HistoryScope::System, &domain::store::HistoryQuery { count: 10, ..Default::default() })
        .await
        .expect("history");
    assert_eq!(history.items.len(), 1);
}

pub(crate) async fn reindex_skips_resources_that_moved_on(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![string("name", "First")]).await;
    store.commit(commit(vec![write("Patient", "p1", 2, at(2), vec![string("name", "Second")])])).await.expect("update");
    create(&store, "Patient", "p2", at(1), vec![]).await;
    store.commit(commit(vec![delete("Patient", "p2", 2, at(2))])).await.expect("delete");
    // Made from version 1 (stale), of a deleted resource, and of one that never existed.
    let stale = vec![reindex("p1", 1, "Stale"), reindex("p2", 1, "Gone"), reindex("p3", 1, "Never")];
    store.commit(Commit { reindex: stale, ..Commit::default() }).await.expect("skipped, not failed");
    assert_eq!(ids(&store, &by_name("second")).await, strs(&["p1"]));
    for name in ["stale", "gone", "never"] {
        assert!(ids(&store, &by_name(name)).await.is_empty(), "{name}");
    }
    assert!(store.read("Patient", "p3").await.expect("read").is_none());
}
