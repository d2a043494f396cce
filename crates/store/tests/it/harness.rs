//! Backend runners and fixtures of the conformance suite: each runner gives a
//! test function a fresh, empty store of one backend.

use domain::store::{Check, Commit, Method, Store, Write};
use fhir::instant::Instant;
use fhir::search::{IndexEntry, IndexValue, normalize_string};
use fhir::search::query::{Condition, Filter, Match, SearchQuery};
use fhir::search::text::TextIndex;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use store::postgres::PostgresStore;
use store::sqlite::{SqliteOptions, SqliteStore};

/// The in-memory reference store.
pub(crate) async fn memory<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    test(Arc::new(domain::memory::MemoryStore::new())).await;
}

/// SQLite in a fresh temporary directory.
pub(crate) async fn sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("hearth.db"), SqliteOptions::default()).expect("open sqlite");
    test(Arc::new(store)).await;
}

/// The PostgreSQL server named by HEARTH_TEST_DATABASE_URL, in a schema of
/// the test's own that is dropped afterwards (so tests run in parallel).
pub(crate) async fn postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    in_postgres_schema(|store_url| async move {
        let store = PostgresStore::connect(&store_url).await.expect("connect PostgresStore");
        test(Arc::new(store)).await;
    })
    .await;
}

/// Runs `test` with the URL of a fresh schema of its own on the
/// HEARTH_TEST_DATABASE_URL server, and drops the schema afterwards.
pub(crate) async fn in_postgres_schema<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let url = database_url();
    let schema = unique_schema();
    let (admin, connection) =
        tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to HEARTH_TEST_DATABASE_URL");
    tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create test schema");
    let store_url = with_search_path(&url, &schema);
    let outcome = tokio::spawn(test(store_url)).await;
    drop_schema(&admin, &schema).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Drops a test schema. Connections of a store that was just dropped may
/// still be finishing a statement, so a deadlock is retried.
pub(crate) async fn drop_schema(admin: &tokio_postgres::Client, schema: &str) {
    for attempt in 1.. {
        match admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await {
            Ok(()) => return,
            Err(error) if attempt < 20 => {
                eprintln!("retrying DROP SCHEMA {schema}: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(error) => panic!("drop test schema {schema}: {error}"),
        }
    }
}

/// The test server's URL; the PostgreSQL tests fail (never skip) without it.
pub(crate) fn database_url() -> String {
    match std::env::var("HEARTH_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "HEARTH_TEST_DATABASE_URL is not set: the PostgreSQL conformance tests need a server, \
             e.g. HEARTH_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
        ),
    }
}

pub(crate) fn unique_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("hearth_test_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos)
}

/// Adds `options=-csearch_path=<schema>` (libpq's startup options) to a URL.
pub(crate) fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

// ---------------------------------------------------------------------------
// Fixtures

/// A fixed point in time plus `seconds`, so tests are deterministic.
pub(crate) fn at(seconds: i64) -> Instant {
    Instant(1_700_000_000_000_000 + seconds * 1_000_000)
}

pub(crate) fn body(resource_type: &str, id: &str, version: u64) -> Arc<str> {
    Arc::from(format!(
        r#"{{"resourceType":"{resource_type}","id":"{id}","meta":{{"versionId":"{version}"}},"valueDecimal":1.50,"note":"Ñúñez"}}"#
    ))
}

pub(crate) fn write(resource_type: &str, id: &str, version: u64, when: Instant, index: Vec<IndexEntry>) -> Write {
    Write {
        resource_type: resource_type.into(),
        id: id.into(),
        version_id: version,
        last_updated: when,
        method: if version == 1 { Method::Post } else { Method::Put },
        body: Some(body(resource_type, id, version)),
        index,
        text: TextIndex::default(),
        contained: Vec::new(),
    }
}

pub(crate) fn delete(resource_type: &str, id: &str, version: u64, when: Instant) -> Write {
    Write {
        resource_type: resource_type.into(),
        id: id.into(),
        version_id: version,
        last_updated: when,
        method: Method::Delete,
        body: None,
        index: Vec::new(),
        text: TextIndex::default(),
        contained: Vec::new(),
    }
}

pub(crate) fn commit(writes: Vec<Write>) -> Commit {
    Commit { checks: Vec::new(), writes, ..Commit::default() }
}

pub(crate) fn checked(checks: Vec<Check>, writes: Vec<Write>) -> Commit {
    Commit { checks, writes, ..Commit::default() }
}

/// Creates version 1 of a resource with the given index rows.
pub(crate) async fn create(store: &Arc<dyn Store>, resource_type: &str, id: &str, when: Instant, index: Vec<IndexEntry>) {
    store.commit(commit(vec![write(resource_type, id, 1, when, index)])).await.expect("create");
}

pub(crate) fn string(param: &str, text: &str) -> IndexEntry {
    IndexEntry {
        param: param.into(),
        value: IndexValue::String { normalized: normalize_string(text), exact: text.into() },
    }
}

pub(crate) fn token(param: &str, system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexEntry {
    IndexEntry {
        param: param.into(),
        value: IndexValue::Token {
            system: system.map(Into::into),
            code: code.map(Into::into),
            text: text.map(Into::into),
        },
    }
}

pub(crate) fn reference(param: &str, target_type: &str, target_id: &str) -> IndexEntry {
    IndexEntry {
        param: param.into(),
        value: IndexValue::Reference {
            target_type: Some(target_type.into()),
            target_id: Some(target_id.into()),
            url: format!("{target_type}/{target_id}"),
        },
    }
}

pub(crate) fn reference_url(param: &str, url: &str) -> IndexEntry {
    IndexEntry {
        param: param.into(),
        value: IndexValue::Reference { target_type: None, target_id: None, url: url.into() },
    }
}

pub(crate) fn date(param: &str, low: i64, high: i64) -> IndexEntry {
    IndexEntry { param: param.into(), value: IndexValue::Date { low, high } }
}

pub(crate) fn number(param: &str, low: f64, high: f64) -> IndexEntry {
    IndexEntry { param: param.into(), value: IndexValue::Number { low, high } }
}

pub(crate) fn quantity(param: &str, low: f64, high: f64, system: Option<&str>, code: Option<&str>) -> IndexEntry {
    IndexEntry {
        param: param.into(),
        value: IndexValue::Quantity { low, high, system: system.map(Into::into), code: code.map(Into::into) },
    }
}

pub(crate) fn uri(param: &str, value: &str) -> IndexEntry {
    IndexEntry { param: param.into(), value: IndexValue::Uri { value: value.into() } }
}

/// One condition.
pub(crate) fn cond(param: &str, matcher: Match) -> Condition {
    Condition { param: param.into(), matcher }
}

/// A query over `resource_type` with one filter per condition (AND), large
/// enough a page to hold every match.
pub(crate) fn query(resource_type: &str, conditions: Vec<Condition>) -> SearchQuery {
    SearchQuery {
        resource_type: Some(resource_type.into()),
        filters: conditions.into_iter().map(|c| Filter { any_of: vec![c] }).collect(),
        count: 1000,
        ..SearchQuery::default()
    }
}

/// The ids a search returns, in order.
pub(crate) async fn ids(store: &Arc<dyn Store>, query: &SearchQuery) -> Vec<String> {
    let page = store.search(query).await.expect("search").items;
    // A first page as the Service reads it (keys listed, the first bodies
    // read with them) must be the same answer.
    // (Not for contained matches, whose keys name no stored resource.)
    let contained_matches = query.contained != fhir::search::query::ContainedMode::No
        && query.contained_type == fhir::search::query::ContainedType::Contained;
    let (keys, read) = store.search_keys_reading(query, 3).await.expect("search_keys_reading");
    let expected: Vec<(String, String)> = page.iter().map(|r| (r.resource_type.clone(), r.id.clone())).collect();
    assert_eq!(keys, expected, "search_keys_reading lists other keys than search");
    if !contained_matches {
        assert_eq!(read, page.iter().take(3).cloned().collect::<Vec<_>>(), "search_keys_reading read other versions");
    }
    page.into_iter().map(|r| r.id).collect()
}

/// The ids a search returns, sorted (for tests where order is not the point).
pub(crate) async fn id_set(store: &Arc<dyn Store>, query: &SearchQuery) -> Vec<String> {
    let mut found = ids(store, query).await;
    found.sort();
    found
}

pub(crate) fn strs(values: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = values.iter().map(|s| s.to_string()).collect();
    out.sort();
    out
}
