//! Version numbering and the Version check (optimistic concurrency).

use crate::harness::*;
use domain::store::{Check, Store, StoreError};
use std::sync::Arc;

fn version_check(id: &str, expected: Option<u64>) -> Check {
    Check::Version { resource_type: "Patient".into(), id: id.into(), expected }
}

pub(crate) async fn first_version_must_be_1(store: Arc<dyn Store>) {
    let result = store.commit(commit(vec![write("Patient", "p1", 2, at(1), vec![])])).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(store.read("Patient", "p1").await.expect("read"), None);
}

pub(crate) async fn write_must_be_the_next_version(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    for version in [1, 3] {
        let result = store.commit(commit(vec![write("Patient", "p1", version, at(2), vec![])])).await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "version {version}: {result:?}");
    }
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("exists").version_id, 1);
}

pub(crate) async fn version_check_none_rejects_existing(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    let result = store
        .commit(checked(vec![version_check("p1", None)], vec![write("Patient", "other", 1, at(2), vec![])]))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(store.read("Patient", "other").await.expect("read"), None);
}

pub(crate) async fn version_check_accepts_current(store: Arc<dyn Store>) {
    store
        .commit(checked(vec![version_check("p1", None)], vec![write("Patient", "p1", 1, at(1), vec![])]))
        .await
        .expect("create with expected None");
    store
        .commit(checked(vec![version_check("p1", Some(1))], vec![write("Patient", "p1", 2, at(2), vec![])]))
        .await
        .expect("update with expected 1");
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("exists").version_id, 2);
}

pub(crate) async fn version_check_rejects_stale(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    store.commit(commit(vec![write("Patient", "p1", 2, at(2), vec![])])).await.expect("update");
    // A check on another resource than the one written still guards the commit.
    let result = store
        .commit(checked(vec![version_check("p1", Some(1))], vec![write("Patient", "p2", 1, at(3), vec![])]))
        .await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(store.read("Patient", "p2").await.expect("read"), None);
}

pub(crate) async fn version_check_on_the_written_resource_rejects_stale(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    store.commit(commit(vec![write("Patient", "p1", 2, at(2), vec![])])).await.expect("update");
    // The check and the write agree with each other but not with the store
    // (the SQLite writer lets the write's own version rule enforce them).
    for (expected, version) in [(Some(1), 2), (None, 1), (Some(1), 3)] {
        let result = store
            .commit(checked(vec![version_check("p1", expected)], vec![write("Patient", "p1", version, at(3), vec![])]))
            .await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "expected {expected:?}, version {version}: {result:?}");
    }
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("exists").version_id, 2);
    store
        .commit(checked(vec![version_check("p1", Some(2))], vec![write("Patient", "p1", 3, at(4), vec![])]))
        .await
        .expect("update with expected 2");
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("exists").version_id, 3);
}

pub(crate) async fn concurrent_updates_one_wins(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    let attempts = (0..8).map(|i| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .commit(checked(vec![version_check("p1", Some(1))], vec![write("Patient", "p1", 2, at(2 + i), vec![])]))
                .await
        })
    });
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("exists").version_id, 2);
    assert_eq!(store.vread("Patient", "p1", 3).await.expect("vread"), None);
}

pub(crate) async fn recreate_after_delete_continues_versions(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    store.commit(commit(vec![delete("Patient", "p1", 2, at(2))])).await.expect("delete");
    let result = store.commit(commit(vec![write("Patient", "p1", 1, at(3), vec![])])).await;
    assert!(matches!(result, Err(StoreError::Conflict(_))), "version 1 again: {result:?}");
    store.commit(commit(vec![write("Patient", "p1", 3, at(3), vec![])])).await.expect("recreate");
    let current = store.read("Patient", "p1").await.expect("read").expect("exists");
    assert_eq!(current.version_id, 3);
    assert!(!current.is_deleted());
    assert_eq!(ids(&store, &query("Patient", vec![])).await, vec!["p1".to_string()]);
}
