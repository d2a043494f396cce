//! Reopening: what a store acknowledged is there after the store is closed
//! and opened again (SQLite file, PostgreSQL schema), migrations are applied
//! once, and writing continues where it stopped.

use crate::harness::*;
use domain::store::{HistoryQuery, HistoryScope, Store};
use fhir::search::query::{Match, TokenSystem, TotalMode};
use std::sync::Arc;
use store::postgres::PostgresStore;
use store::sqlite::{SqliteOptions, SqliteStore};

const SYSTEM: &str = "urn:test";

/// Writes 40 patients concurrently (group-committed), updates some and
/// deletes others.
async fn fill(store: &Arc<dyn Store>) {
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                create(&store, "Patient", &format!("p{i}"), at(i), vec![token("identifier", Some(SYSTEM), Some(&format!("{i}")), None)])
                    .await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    for i in 0..10 {
        store
            .commit(commit(vec![write("Patient", &format!("p{i}"), 2, at(100 + i), vec![string("name", "Updated")])]))
            .await
            .expect("update");
    }
    for i in 10..15 {
        store.commit(commit(vec![delete("Patient", &format!("p{i}"), 2, at(200 + i))])).await.expect("delete");
    }
}

async fn verify(store: &Arc<dyn Store>) {
    for i in 0..40 {
        let found = store.read("Patient", &format!("p{i}")).await.expect("read").expect("every patient survives");
        match i {
            0..10 => assert_eq!((found.version_id, found.is_deleted()), (2, false), "p{i}"),
            10..15 => assert_eq!((found.version_id, found.is_deleted()), (2, true), "p{i}"),
            _ => assert_eq!((found.version_id, found.is_deleted()), (1, false), "p{i}"),
        }
        assert!(store.vread("Patient", &format!("p{i}"), 1).await.expect("vread").is_some());
    }
    let history = store.history(&HistoryScope::System, &HistoryQuery { count: 1, ..Default::default() }).await;
    assert_eq!(history.expect("history").total, Some(55));
    let mut updated = query("Patient", vec![cond("name", Match::String {
        value: "updated".into(),
        mode: fhir::search::query::StringMode::Prefix,
    })]);
    updated.total = TotalMode::Accurate;
    assert_eq!(store.search(&updated).await.expect("search").total, Some(10));
    let by_identifier = query("Patient", vec![cond("identifier", Match::Token {
        system: TokenSystem::Is(SYSTEM.into()),
        code: Some("30".into()),
        negate: false,
    })]);
    assert_eq!(ids(store, &by_identifier).await, vec!["p30".to_string()]);
    let mut live = query("Patient", vec![]);
    live.total = TotalMode::Accurate;
    assert_eq!(store.search(&live).await.expect("search").total, Some(35));
}

/// Writes after reopening continue versions and the global history order.
async fn continue_writing(store: &Arc<dyn Store>) {
    store.commit(commit(vec![write("Patient", "p20", 2, at(500), vec![])])).await.expect("update after reopen");
    create(store, "Patient", "fresh", at(501), vec![]).await;
    let page = store.history(&HistoryScope::System, &HistoryQuery { count: 2, ..Default::default() }).await;
    let items = page.expect("history").items;
    assert_eq!(items.iter().map(|r| (r.id.as_str(), r.version_id)).collect::<Vec<_>>(), vec![("fresh", 1), ("p20", 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_finds_everything() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("open"));
        fill(&store).await;
        verify(&store).await;
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("reopen"));
    verify(&store).await;
    continue_writing(&store).await;
    drop(store);

    // The file is in WAL mode and the migration was recorded once.
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("journal_mode");
    assert_eq!(mode, "wal");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("schema_version");
    assert!(recorded_once(&versions), "{versions:?}");
}

/// Every migration recorded once, in order, from the first.
fn recorded_once(versions: &[i64]) -> bool {
    versions.first() == Some(&1) && versions.windows(2).all(|pair| pair[0] < pair[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_open_rejects_a_non_database_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("not-a-db");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write junk");
    assert!(SqliteStore::open(&path, SqliteOptions::default()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnect_finds_everything() {
    let url = database_url();
    let schema = unique_schema();
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let store_url = with_search_path(&url, &schema);
    let outcome = tokio::spawn(async move {
        {
            let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&store_url).await.expect("connect"));
            fill(&store).await;
        }
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&store_url).await.expect("reconnect"));
        verify(&store).await;
        continue_writing(&store).await;
    })
    .await;
    let versions = admin
        .query(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>());
    drop_schema(&admin, &schema).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
    let versions = versions.expect("schema_version");
    assert!(recorded_once(&versions), "{versions:?}");
}

/// The bundled SQLite is built as `.cargo/config.toml` asks
/// (`LIBSQLITE3_FLAGS`, ARCHITECTURE.md): no shared page cache behind one
/// mutex, no memory statistics taken under a lock at every allocation, no
/// shared-cache mode. A build that lost the setting fails here, not as a
/// slower load in a benchmark.
#[test]
fn sqlite_is_built_without_its_global_mutexes() {
    let conn = rusqlite::Connection::open_in_memory().expect("open");
    let options: Vec<String> = conn
        .prepare("PRAGMA compile_options")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("compile_options");
    assert!(options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"), "{options:?}");
    assert!(options.iter().any(|o| o == "OMIT_SHARED_CACHE"), "{options:?}");
    assert!(!options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"), "{options:?}");
}
