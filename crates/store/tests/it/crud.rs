//! Create, read, vread, update and delete through commits.

use crate::harness::*;
use domain::store::{Method, Store};
use std::sync::Arc;

pub(crate) async fn create_then_read(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![string("name", "Ann")]).await;
    let found = store.read("Patient", "p1").await.expect("read").expect("exists");
    assert_eq!(found.resource_type, "Patient");
    assert_eq!(found.id, "p1");
    assert_eq!(found.version_id, 1);
    assert_eq!(found.last_updated, at(1));
    assert_eq!(found.method, Method::Post);
    assert_eq!(found.body.as_deref(), Some(&*body("Patient", "p1", 1)));
    assert!(!found.is_deleted());
}

pub(crate) async fn read_many_answers_in_the_order_asked(store: Arc<dyn Store>) {
    create(&store, "Patient", "a", at(1), vec![]).await;
    create(&store, "Patient", "b", at(2), vec![]).await;
    create(&store, "Observation", "a", at(3), vec![]).await;
    store.commit(commit(vec![write("Patient", "a", 2, at(4), vec![])])).await.expect("update");
    store.commit(commit(vec![delete("Patient", "b", 2, at(5))])).await.expect("delete");
    let key = |t: &str, id: &str| (t.to_string(), id.to_string());
    let keys = [key("Observation", "a"), key("Patient", "missing"), key("Patient", "b"), key("Patient", "a")];
    let found = store.read_many(&keys).await.expect("read_many");
    let seen: Vec<(String, String, u64, bool)> =
        found.into_iter().map(|r| (r.resource_type.clone(), r.id.clone(), r.version_id, r.is_deleted())).collect();
    assert_eq!(seen, vec![
        ("Observation".to_string(), "a".to_string(), 1, false),
        ("Patient".to_string(), "b".to_string(), 2, true),
        ("Patient".to_string(), "a".to_string(), 2, false),
    ]);
    assert!(store.read_many(&[]).await.expect("none").is_empty());
}

pub(crate) async fn read_missing_is_none(store: Arc<dyn Store>) {
    assert_eq!(store.read("Patient", "nope").await.expect("read"), None);
    assert_eq!(store.vread("Patient", "nope", 1).await.expect("vread"), None);
    create(&store, "Patient", "p1", at(1), vec![]).await;
    assert_eq!(store.vread("Patient", "p1", 2).await.expect("vread"), None);
    assert_eq!(store.vread("Patient", "p1", u64::MAX).await.expect("vread"), None);
}

pub(crate) async fn update_then_vread_each_version(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![]).await;
    store.commit(commit(vec![write("Patient", "p1", 2, at(2), vec![])])).await.expect("update");
    let current = store.read("Patient", "p1").await.expect("read").expect("exists");
    assert_eq!(current.version_id, 2);
    assert_eq!(current.method, Method::Put);
    assert_eq!(current.last_updated, at(2));
    assert_eq!(current.body.as_deref(), Some(&*body("Patient", "p1", 2)));
    for version in [1, 2] {
        let old = store.vread("Patient", "p1", version).await.expect("vread").expect("version exists");
        assert_eq!(old.version_id, version);
        assert_eq!(old.last_updated, at(version as i64));
        assert_eq!(old.body.as_deref(), Some(&*body("Patient", "p1", version)));
    }
}

pub(crate) async fn delete_keeps_a_tombstone(store: Arc<dyn Store>) {
    create(&store, "Patient", "p1", at(1), vec![token("gender", None, Some("female"), None)]).await;
    store.commit(commit(vec![delete("Patient", "p1", 2, at(2))])).await.expect("delete");
    let current = store.read("Patient", "p1").await.expect("read").expect("tombstone");
    assert!(current.is_deleted());
    assert_eq!(current.version_id, 2);
    assert_eq!(current.method, Method::Delete);
    let first = store.vread("Patient", "p1", 1).await.expect("vread").expect("v1");
    assert!(!first.is_deleted());
    let q = query("Patient", vec![]);
    assert!(ids(&store, &q).await.is_empty(), "a deleted resource is not found by search");
}

pub(crate) async fn types_are_separate_namespaces(store: Arc<dyn Store>) {
    create(&store, "Patient", "same", at(1), vec![]).await;
    create(&store, "Observation", "same", at(2), vec![]).await;
    let patient = store.read("Patient", "same").await.expect("read").expect("patient");
    let observation = store.read("Observation", "same").await.expect("read").expect("observation");
    assert_eq!(patient.resource_type, "Patient");
    assert_eq!(observation.resource_type, "Observation");
    assert_eq!(patient.last_updated, at(1));
    assert_eq!(observation.last_updated, at(2));
}

pub(crate) async fn body_is_byte_faithful(store: Arc<dyn Store>) {
    let text = "{\"resourceType\":\"Observation\",\"id\":\"o\",\"valueQuantity\":{\"value\":1.50},\n \"_x\":{\"extension\":[]},\"n\":\"\u{1F600} \\u00e9\"}";
    let mut w = write("Observation", "o", 1, at(1), vec![]);
    w.body = Some(Arc::from(text));
    store.commit(commit(vec![w])).await.expect("create");
    let found = store.read("Observation", "o").await.expect("read").expect("exists");
    assert_eq!(found.body.as_deref(), Some(text));
}

pub(crate) async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    assert!(["memory", "sqlite", "postgresql"].contains(&store.backend()));
}
