//! Commit checks and atomicity: a commit applies entirely or not at all, and
//! concurrent commits (group-committed on SQLite) do not affect each other.

use crate::harness::*;
use domain::store::{Check, HistoryQuery, HistoryScope, Store, StoreError};
use fhir::search::query::{Match, SearchQuery, TokenSystem};
use std::sync::Arc;

const MRN: &str = "urn:oid:1.2.3";

fn by_identifier(value: &str) -> SearchQuery {
    query("Patient", vec![cond("identifier", Match::Token {
        system: TokenSystem::Is(MRN.into()),
        code: Some(value.into()),
        negate: false,
    })])
}

fn identifier(value: &str) -> fhir::search::IndexEntry {
    token("identifier", Some(MRN), Some(value), None)
}

fn matches(query: SearchQuery, ids: &[&str]) -> Check {
    Check::Matches { query, ids: ids.iter().map(|s| s.to_string()).collect() }
}

pub(crate) async fn failed_check_writes_nothing(store: Arc<dyn Store>) {
    let result = store
        .commit(checked(
            vec![Check::Version { resource_type: "Patient".into(), id: "ghost".into(), expected: Some(1) }],
            vec![write("Patient", "a", 1, at(1), vec![identifier("1")]), write("Patient", "b", 1, at(1), vec![])],
        ))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(store.read("Patient", "a").await.expect("read"), None);
    assert_eq!(store.read("Patient", "b").await.expect("read"), None);
    let history = store.history(&HistoryScope::System, &HistoryQuery { count: 10, ..Default::default() }).await;
    assert_eq!(history.expect("history").total, Some(0));
}

pub(crate) async fn failed_write_rolls_back_earlier_writes(store: Arc<dyn Store>) {
    create(&store, "Patient", "b", at(1), vec![]).await;
    // The first write is fine, the second is not the next version of b.
    let result = store
        .commit(commit(vec![
            write("Patient", "a", 1, at(2), vec![identifier("A")]),
            write("Patient", "b", 3, at(2), vec![]),
        ]))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(store.read("Patient", "a").await.expect("read"), None);
    assert!(ids(&store, &by_identifier("A")).await.is_empty(), "no index rows of the rolled back write");
    let history = store.history(&HistoryScope::System, &HistoryQuery { count: 10, ..Default::default() }).await;
    assert_eq!(history.expect("history").total, Some(1));
    // The store is still usable and the same ids can be written.
    store.commit(commit(vec![write("Patient", "a", 1, at(3), vec![identifier("A")])])).await.expect("retry");
    assert_eq!(ids(&store, &by_identifier("A")).await, vec!["a".to_string()]);
}

pub(crate) async fn matches_check_accepts_same_set(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![identifier("42")]).await;
    create(&store, "Patient", "p2", at(2), vec![identifier("42")]).await;
    store
        .commit(checked(vec![matches(by_identifier("42"), &["p2", "p1"])], vec![write("Patient", "p3", 1, at(3), vec![])]))
        .await
        .expect("the matching set is unchanged");
    store
        .commit(checked(vec![matches(by_identifier("absent"), &[])], vec![write("Patient", "p4", 1, at(4), vec![])]))
        .await
        .expect("nothing matches, as expected");
    // Paging of the query does not limit the check.
    let mut paged = by_identifier("42");
    paged.count = 1;
    store
        .commit(checked(vec![matches(paged, &["p1", "p2"])], vec![write("Patient", "p5", 1, at(5), vec![])]))
        .await
        .expect("count does not apply to checks");
}

pub(crate) async fn matches_check_detects_a_new_match(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![identifier("42")]).await;
    let result = store
        .commit(checked(vec![matches(by_identifier("42"), &[])], vec![write("Patient", "p2", 1, at(2), vec![identifier("42")])]))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(store.read("Patient", "p2").await.expect("read"), None);
}

pub(crate) async fn matches_check_detects_a_removed_match(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![identifier("42")]).await;
    store.commit(commit(vec![delete("Patient", "p1", 2, at(2))])).await.expect("delete");
    let result = store
        .commit(checked(vec![matches(by_identifier("42"), &["p1"])], vec![write("Patient", "p2", 1, at(3), vec![])]))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
}

/// Two conditional creates racing on the same identifier: exactly one wins.
pub(crate) async fn racing_conditional_creates_one_wins(store: Arc<dyn Store>) {
    create(&store, "Patient", "unrelated", at(0), vec![identifier("other")]).await;
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .commit(checked(
                        vec![matches(by_identifier("7"), &[])],
                        vec![write("Patient", &format!("c{i}"), 1, at(1 + i), vec![identifier("7")])],
                    ))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(ids(&store, &by_identifier("7")).await.len(), 1);
}

pub(crate) async fn concurrent_creates_all_land(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .commit(commit(vec![write("Observation", &format!("o{i}"), 1, at(i), vec![identifier(&i.to_string())])]))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("create");
    }
    for i in 0..64 {
        assert!(store.read("Observation", &format!("o{i}")).await.expect("read").is_some());
    }
    let mut all = query("Observation", vec![]);
    all.total = fhir::search::query::TotalMode::Accurate;
    assert_eq!(store.search(&all).await.expect("search").total, Some(64));
}

/// Commits that fail their checks, queued together with good ones, are
/// answered Conflict alone.
pub(crate) async fn conflicts_do_not_affect_concurrent_commits(store: Arc<dyn Store>) {
    create(&store, "Patient", "taken", at(0), vec![]).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let good = i % 2 == 0;
                let mut writes =
                    vec![write("Patient", &format!("n{i}"), 1, at(1 + i), vec![identifier(&format!("n{i}"))])];
                if !good {
                    // Odd commits also try to create "taken" again: their whole commit fails.
                    writes.push(write("Patient", "taken", 1, at(1 + i), vec![]));
                }
                (good, store.commit(commit(writes)).await)
            })
        })
        .collect();
    for task in tasks {
        let (good, result) = task.await.expect("task");
        if good {
            result.expect("a good commit succeeds");
        } else {
            assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
        }
    }
    for i in 0..40 {
        let found = store.read("Patient", &format!("n{i}")).await.expect("read");
        assert_eq!(found.is_some(), i % 2 == 0, "n{i}");
        let indexed = ids(&store, &by_identifier(&format!("n{i}"))).await;
        assert_eq!(indexed.len(), usize::from(i % 2 == 0), "index rows of n{i}");
    }
    assert_eq!(store.read("Patient", "taken").await.expect("read").expect("exists").version_id, 1);
}

/// Large commits (a migration's or an import's batches, which the SQLite
/// writer applies in groups of their own) queued among small ones: each
/// lands whole or, when one of its checks fails, not at all.
pub(crate) async fn large_and_small_commits_queued_together_land_whole(store: Arc<dyn Store>) {
    create(&store, "Patient", "taken", at(0), vec![]).await;
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let large = i % 3 == 0;
                let failing = i == 6;
                let size = if large { 150 } else { 2 };
                let mut writes: Vec<_> = (0..size)
                    .map(|k| write("Patient", &format!("c{i}-{k}"), 1, at(1 + i), vec![identifier(&format!("c{i}"))]))
                    .collect();
                if failing {
                    // Creates "taken" again at its end: the whole commit fails.
                    writes.push(write("Patient", "taken", 1, at(1 + i), vec![]));
                }
                (size, failing, store.commit(commit(writes)).await)
            })
        })
        .collect();
    let mut expected = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (size, failing, result) = task.await.expect("task");
        if failing {
            assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
            expected.push((i, 0));
        } else {
            result.expect("commit");
            expected.push((i, size));
        }
    }
    for (i, size) in expected {
        assert_eq!(ids(&store, &by_identifier(&format!("c{i}"))).await.len(), size, "commit {i}");
    }
    assert_eq!(store.read("Patient", "taken").await.expect("read").expect("exists").version_id, 1);
}

pub(crate) async fn same_resource_twice_in_one_commit(store: Arc<dyn Store>) {
    store
        .commit(commit(vec![
            write("Patient", "p1", 1, at(1), vec![identifier("first")]),
            write("Patient", "p1", 2, at(1), vec![identifier("second")]),
        ]))
        .await
        .expect("commit");
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("exists").version_id, 2);
    assert!(ids(&store, &by_identifier("first")).await.is_empty());
    assert_eq!(ids(&store, &by_identifier("second")).await, vec!["p1".to_string()]);
}

/// A commit of thousands of resources, as a bulk load makes: every index
/// row of every resource is stored (the SQLite writer inserts the rows of
/// many resources per statement, and in several rounds), and a patient's
/// coded records are found.
pub(crate) async fn a_large_commit_indexes_every_row(store: Arc<dyn Store>) {
    const LOINC: &str = "http://loinc.org";
    const RECORDS: usize = 2_500;
    let writes = (0..RECORDS)
        .map(|i| {
            let patient = format!("p{}", i % 11);
            write("Observation", &format!("o{i}"), 1, at(1), vec![
                token("code", Some(LOINC), Some(&format!("c{}", i % 7)), None),
                token("status", None, Some("final"), None),
                reference("subject", "Patient", &patient),
                reference("patient", "Patient", &patient),
                date("date", i as i64, i as i64),
            ])
        })
        .collect();
    store.commit(commit(writes)).await.expect("commit");
    let code = |c: usize| {
        cond("code", Match::Token { system: TokenSystem::Is(LOINC.into()), code: Some(format!("c{c}")), negate: false })
    };
    let patient = |p: usize| cond("patient", Match::Reference { target_type: None, id: format!("p{p}") });
    let expected = |keep: &dyn Fn(usize) -> bool| {
        let mut ids: Vec<String> = (0..RECORDS).filter(|i| keep(*i)).map(|i| format!("o{i}")).collect();
        ids.sort();
        ids
    };
    for c in [0, 6] {
        assert_eq!(id_set(&store, &query("Observation", vec![code(c)])).await, expected(&|i| i % 7 == c), "code c{c}");
    }
    assert_eq!(
        id_set(&store, &query("Observation", vec![patient(3), code(2)])).await,
        expected(&|i| i % 11 == 3 && i % 7 == 2),
        "a patient's records with a code"
    );
    let last = query("Observation", vec![cond("date", Match::Date { prefix: fhir::search::query::Prefix::Ge, low: 2_490, high: 2_490 })]);
    assert_eq!(id_set(&store, &last).await, expected(&|i| i >= 2_490), "the last rows of the commit");
}

pub(crate) async fn update_replaces_index_rows(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![identifier("old"), string("name", "Ann")]).await;
    store.commit(commit(vec![write("Patient", "p1", 2, at(2), vec![identifier("new")])])).await.expect("update");
    assert!(ids(&store, &by_identifier("old")).await.is_empty());
    assert_eq!(ids(&store, &by_identifier("new")).await, vec!["p1".to_string()]);
    let by_name = query("Patient", vec![cond("name", Match::String {
        value: "ann".into(),
        mode: fhir::search::query::StringMode::Prefix,
    })]);
    assert!(ids(&store, &by_name).await.is_empty());
}

pub(crate) async fn delete_removes_index_rows(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![identifier("42")]).await;
    store.commit(commit(vec![delete("Patient", "p1", 2, at(2))])).await.expect("delete");
    assert!(ids(&store, &by_identifier("42")).await.is_empty());
    // Missing=true holds for nothing: deleted resources are not searchable at all.
    let missing = query("Patient", vec![cond("identifier", Match::Missing(true))]);
    assert!(ids(&store, &missing).await.is_empty());
}
