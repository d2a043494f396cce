//! Upgrading a database written before search parameters were interned per
//! resource type (schema 7) to schema 8: every index row is given its
//! resource type's parameter id and a patient's coded records are indexed
//! by patient, so the searches answer as on a new database. And one written
//! before contained resources were indexed (schema 10) to schema 11: its
//! containers are found by `_contained` once reindexed or written again.

use crate::harness::*;
use domain::store::Store;
use fhir::search::query::{Match, SortKey, StringMode, TokenSystem, TotalMode};
use std::sync::Arc;
use store::postgres::PostgresStore;
use store::sqlite::{SqliteOptions, SqliteStore};

const SCHEMA_7: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (3, include_str!("../../migrations/sqlite/0003_composite.sql")),
    (4, include_str!("../../migrations/sqlite/0004_text.sql")),
    (5, include_str!("../../migrations/sqlite/0005_audit.sql")),
    (6, include_str!("../../migrations/sqlite/0006_resource_writer.sql")),
    (7, include_str!("../../migrations/sqlite/0007_audit_patient_index.sql")),
];

/// Rows as a schema-7 writer left them: parameter ids shared by every type
/// (`code` of the Observation and of the Condition is pid 1).
const OLD_ROWS: &str = r#"
INSERT INTO search_param (pid, code, kind) VALUES (1, 'code', 2), (2, 'subject', 3), (3, 'patient', 3), (4, 'date', 4), (5, 'family', 1);
INSERT INTO term_system (sid, uri) VALUES (1, 'http://loinc.org');
INSERT INTO resource (rid, type, id, version, last_updated, deleted) VALUES
    (1, 'Patient', 'p1', 1, 1000, 0), (2, 'Observation', 'o1', 1, 2000, 0), (3, 'Condition', 'c1', 1, 3000, 0),
    (4, 'Observation', 'gone', 2, 4000, 1);
INSERT INTO resource_version (rid, type, version, last_updated, method, body) VALUES
    (1, 'Patient', 1, 1000, 1, '{"resourceType":"Patient","id":"p1"}'),
    (2, 'Observation', 1, 2000, 1, '{"resourceType":"Observation","id":"o1"}'),
    (3, 'Condition', 1, 3000, 1, '{"resourceType":"Condition","id":"c1"}'),
    (4, 'Observation', 1, 3500, 1, '{"resourceType":"Observation","id":"gone"}'),
    (4, 'Observation', 2, 4000, 4, NULL);
INSERT INTO idx_string (rid, pid, n, normalized, exact) VALUES (1, 5, 0, 'smith', 'Smith');
INSERT INTO idx_token (rid, pid, n, sid, code, text) VALUES (2, 1, 0, 1, '2345-7', NULL), (3, 1, 0, 1, '2345-7', NULL);
INSERT INTO idx_reference (rid, pid, n, target_type, target_id, url) VALUES
    (2, 2, 1, 'Patient', 'p1', 'Patient/p1'), (2, 3, 2, 'Patient', 'p1', 'Patient/p1'),
    (3, 2, 1, 'Patient', 'p1', 'Patient/p1'), (3, 3, 2, 'Patient', 'p1', 'Patient/p1');
INSERT INTO idx_date (rid, pid, n, low, high) VALUES (2, 4, 3, 100, 200);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_7_database_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    old_sqlite_database(&path, SCHEMA_7, OLD_ROWS);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("open and upgrade"));
    answers_as_a_new_database(store).await;
}

/// A SQLite file at `path` as an older Hearth left it: `migrations` applied
/// and recorded, then `rows`.
fn old_sqlite_database(path: &std::path::Path, migrations: &[(i64, &str)], rows: &str) {
    let conn = rusqlite::Connection::open(path).expect("create the old database");
    conn.execute_batch("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .expect("schema_version");
    for (version, script) in migrations {
        conn.execute_batch(script).expect("old migration");
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)", [version]).expect("record");
    }
    conn.execute_batch(rows).expect("old rows");
}

/// A PostgreSQL schema at `store_url` as an older Hearth left it.
async fn old_postgres_schema(store_url: &str, migrations: &[(i64, &str)], rows: &str) {
    let (client, connection) = tokio_postgres::connect(store_url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .await
        .expect("schema_version");
    for (version, script) in migrations {
        client.batch_execute(script).await.expect("old migration");
        client.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, 0)", &[version]).await.expect("record");
    }
    client.batch_execute(rows).await.expect("old rows");
}

/// The searches an upgraded database answers, then a write next to the upgraded rows.
async fn answers_as_a_new_database(store: Arc<dyn Store>) {

    let loinc = |code: &str| cond("code", Match::Token { system: TokenSystem::Is("http://loinc.org".into()), code: Some(code.into()), negate: false });
    let count = |mut q: fhir::search::query::SearchQuery| {
        let store = Arc::clone(&store);
        async move {
            q.count = 0;
            q.total = TotalMode::Accurate;
            store.search(&q).await.expect("count").total
        }
    };
    // The shared `code` id became one per type.
    assert_eq!(count(query("Observation", vec![loinc("2345-7")])).await, Some(1));
    assert_eq!(count(query("Condition", vec![loinc("2345-7")])).await, Some(1));
    assert_eq!(ids(&store, &query("Patient", vec![cond("family", Match::String { value: "smi".into(), mode: StringMode::Prefix })])).await, vec!["p1"]);
    // The patient's coded records, through the new index.
    let mut by_patient = query("Observation", vec![cond("patient", Match::Reference { target_type: None, id: "p1".into() }), loinc("2345-7")]);
    by_patient.sort = vec![SortKey { param: "date".into(), descending: true }];
    assert_eq!(ids(&store, &by_patient).await, vec!["o1"]);
    let chained = query("Condition", vec![
        cond("subject", Match::Chain {
            target_types: vec!["Patient".into()],
            inner: vec![cond("family", Match::String { value: "smith".into(), mode: StringMode::Prefix })],
        }),
        loinc("2345-7"),
    ]);
    assert_eq!(ids(&store, &chained).await, vec!["c1"]);
    // New writes intern their own ids next to the upgraded ones.
    create(&store, "Observation", "o2", at(1), vec![
        reference("patient", "Patient", "p1"),
        token("code", Some("http://loinc.org"), Some("2345-7"), None),
        date("date", 300, 400),
    ])
    .await;
    assert_eq!(ids(&store, &by_patient).await, vec!["o2", "o1"]);
    assert_eq!(count(query("Observation", vec![loinc("2345-7")])).await, Some(2));
}

const POSTGRES_SCHEMA_5: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (3, include_str!("../../migrations/postgres/0003_composite.sql")),
    (4, include_str!("../../migrations/postgres/0004_text.sql")),
    (5, include_str!("../../migrations/postgres/0005_audit.sql")),
];

/// [`OLD_ROWS`] in PostgreSQL's layout (index rows without `n`).
const POSTGRES_OLD_ROWS: &str = r#"
INSERT INTO search_param (pid, code, kind) VALUES (1, 'code', 2), (2, 'subject', 3), (3, 'patient', 3), (4, 'date', 4), (5, 'family', 1);
SELECT setval(pg_get_serial_sequence('search_param', 'pid'), 5);
INSERT INTO term_system (sid, uri) VALUES (1, 'http://loinc.org');
SELECT setval(pg_get_serial_sequence('term_system', 'sid'), 1);
INSERT INTO resource (rid, type, id, version, last_updated, deleted) VALUES
    (1, 'Patient', 'p1', 1, 1000, 0), (2, 'Observation', 'o1', 1, 2000, 0), (3, 'Condition', 'c1', 1, 3000, 0),
    (4, 'Observation', 'gone', 2, 4000, 1);
SELECT setval(pg_get_serial_sequence('resource', 'rid'), 4);
INSERT INTO resource_version (rid, type, version, last_updated, method, body) VALUES
    (1, 'Patient', 1, 1000, 1, '{"resourceType":"Patient","id":"p1"}'),
    (2, 'Observation', 1, 2000, 1, '{"resourceType":"Observation","id":"o1"}'),
    (3, 'Condition', 1, 3000, 1, '{"resourceType":"Condition","id":"c1"}'),
    (4, 'Observation', 1, 3500, 1, '{"resourceType":"Observation","id":"gone"}'),
    (4, 'Observation', 2, 4000, 4, NULL);
INSERT INTO idx_string (rid, pid, normalized, exact) VALUES (1, 5, 'smith', 'Smith');
INSERT INTO idx_token (rid, pid, sid, code, text) VALUES (2, 1, 1, '2345-7', NULL), (3, 1, 1, '2345-7', NULL);
INSERT INTO idx_reference (rid, pid, target_type, target_id, url) VALUES
    (2, 2, 'Patient', 'p1', 'Patient/p1'), (2, 3, 'Patient', 'p1', 'Patient/p1'),
    (3, 2, 'Patient', 'p1', 'Patient/p1'), (3, 3, 'Patient', 'p1', 'Patient/p1');
INSERT INTO idx_date (rid, pid, low, high) VALUES (2, 4, 100, 200);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_5_postgres_database_is_upgraded_in_place() {
    in_postgres_schema(|store_url| async move {
        old_postgres_schema(&store_url, POSTGRES_SCHEMA_5, POSTGRES_OLD_ROWS).await;
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&store_url).await.expect("connect and upgrade"));
        answers_as_a_new_database(store).await;
    })
    .await;
}

const SCHEMA_10: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (3, include_str!("../../migrations/sqlite/0003_composite.sql")),
    (4, include_str!("../../migrations/sqlite/0004_text.sql")),
    (5, include_str!("../../migrations/sqlite/0005_audit.sql")),
    (6, include_str!("../../migrations/sqlite/0006_resource_writer.sql")),
    (7, include_str!("../../migrations/sqlite/0007_audit_patient_index.sql")),
    (8, include_str!("../../migrations/sqlite/0008_typed_params.sql")),
    (9, include_str!("../../migrations/sqlite/0009_patient_token_keys.sql")),
    (10, include_str!("../../migrations/sqlite/0010_search_param_code.sql")),
];

const POSTGRES_SCHEMA_10: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (3, include_str!("../../migrations/postgres/0003_composite.sql")),
    (4, include_str!("../../migrations/postgres/0004_text.sql")),
    (5, include_str!("../../migrations/postgres/0005_audit.sql")),
    (8, include_str!("../../migrations/postgres/0008_typed_params.sql")),
    (9, include_str!("../../migrations/postgres/0009_patient_token_keys.sql")),
    (10, include_str!("../../migrations/postgres/0010_search_param_code.sql")),
];

/// A MedicationRequest containing Medication #m1 as a schema-10 writer left
/// it: its version, and no row for what it contains (index rows are not
/// needed here).
const CONTAINER_BODY: &str = r##"{"resourceType":"MedicationRequest","id":"mr1","meta":{"versionId":"1"},"status":"active","intent":"order","subject":{"reference":"Patient/p1"},"contained":[{"resourceType":"Medication","id":"m1","code":{"coding":[{"system":"http://example.org/med","code":"A"}]}}],"medicationReference":{"reference":"#m1"}}"##;

fn old_container_rows() -> String {
    format!(
        "INSERT INTO resource (rid, type, id, version, last_updated, deleted) VALUES (1, 'MedicationRequest', 'mr1', 1, 1000, 0); \
         INSERT INTO resource_version (rid, type, version, last_updated, method, body) VALUES (1, 'MedicationRequest', 1, 1000, 1, '{CONTAINER_BODY}');"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_10_database_indexes_contained_resources_once_reindexed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    old_sqlite_database(&path, SCHEMA_10, &old_container_rows());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("open and upgrade"));
    contained_after_upgrade(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_10_postgres_database_indexes_contained_resources_once_reindexed() {
    in_postgres_schema(|store_url| async move {
        let rows = format!("{}; SELECT setval(pg_get_serial_sequence('resource', 'rid'), 1);", old_container_rows());
        old_postgres_schema(&store_url, POSTGRES_SCHEMA_10, &rows).await;
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&store_url).await.expect("connect and upgrade"));
        contained_after_upgrade(store).await;
    })
    .await;
}

/// What `$reindex` does for the old container, then a new version of it.
async fn contained_after_upgrade(store: Arc<dyn Store>) {
    let registry = fhir::search::Registry::core();
    let contained = |code: &str| {
        let params = [("code", code), ("_contained", "true"), ("_containedType", "contained")];
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut q = fhir::search::query::parse(&registry, Some("Medication"), &params, false).expect("parse").query;
        q.count = 10;
        q
    };
    assert!(ids(&store, &contained("A")).await.is_empty(), "not indexed before a reindex");
    let body: serde_json::Value = serde_json::from_str(CONTAINER_BODY).expect("json");
    let reindex = domain::store::Reindex {
        resource_type: "MedicationRequest".into(),
        id: "mr1".into(),
        version_id: 1,
        index: registry.extract(&body),
        text: fhir::search::text::TextIndex::of(&body),
        contained: domain::service::prepare::contained_index(&registry, &body),
    };
    store.commit(domain::store::Commit { reindex: vec![reindex], ..Default::default() }).await.expect("reindex");
    assert_eq!(ids(&store, &contained("A")).await, ["mr1#m1"]);
    let mut next = body.clone();
    next["contained"][0]["code"]["coding"][0]["code"] = serde_json::json!("B");
    let write = domain::service::prepare::stamp(&registry, "MedicationRequest", "mr1", 2, at(5), domain::store::Method::Put, &next);
    store.commit(commit(vec![write])).await.expect("update");
    assert!(ids(&store, &contained("A")).await.is_empty());
    assert_eq!(ids(&store, &contained("B")).await, ["mr1#m1"]);
}

/// Observation o1's rows as a schema-11 (PostgreSQL: 12) writer left them:
/// `code` and `combo-code` the same, a `combo-value-quantity`, both in the
/// patient's tokens. `n` is the column SQLite's rows have.
fn old_combo_rows(n: bool) -> String {
    let (n_col, n0, n1, n2) = if n { ("n, ", "0, ", "1, ", "2, ") } else { ("", "", "", "") };
    format!(
        "INSERT INTO search_param (pid, type, code, kind) VALUES (1, 'Observation', 'code', 2), (2, 'Observation', 'combo-code', 2), \
             (3, 'Observation', 'combo-value-quantity', 6), (4, 'Condition', 'combo-code', 2); \
         INSERT INTO term_system (sid, uri) VALUES (1, 'http://loinc.org'); \
         INSERT INTO resource (rid, type, id, version, last_updated, deleted) VALUES (1, 'Observation', 'o1', 1, 1000, 0), (2, 'Condition', 'c1', 1, 1000, 0); \
         INSERT INTO resource_version (rid, type, version, last_updated, method, body) VALUES \
             (1, 'Observation', 1, 1000, 1, '{{\"resourceType\":\"Observation\",\"id\":\"o1\"}}'), \
             (2, 'Condition', 1, 1000, 1, '{{\"resourceType\":\"Condition\",\"id\":\"c1\"}}'); \
         INSERT INTO idx_token (rid, pid, {n_col}sid, code, text) VALUES (1, 1, {n0}1, '8480-6', NULL), (1, 2, {n1}1, '8480-6', NULL), \
             (2, 4, {n0}1, 'x', NULL); \
         INSERT INTO idx_quantity (rid, pid, {n_col}low, high, sid, code) VALUES (1, 3, {n2}119.5, 120.5, NULL, NULL); \
         INSERT INTO idx_patient_token (rid, pid, patient, sid, code, via, date_low, date_high, id, last_updated) VALUES \
             (1, 1, 'p1', 1, '8480-6', 1, NULL, NULL, 'o1', 1000), (1, 2, 'p1', 1, '8480-6', 1, NULL, NULL, 'o1', 1000);"
    )
}

/// After the upgrade: the Observation's combo- rows are gone, its `code`
/// rows (which combo-code searches) stay, and so does anything else's.
const COMBO_ROWS_LEFT: &str = "SELECT (SELECT COUNT(*) FROM idx_token WHERE pid = 1), (SELECT COUNT(*) FROM idx_token WHERE pid = 2), \
     (SELECT COUNT(*) FROM idx_token WHERE pid = 4), (SELECT COUNT(*) FROM idx_quantity), \
     (SELECT COUNT(*) FROM idx_patient_token WHERE pid = 1), (SELECT COUNT(*) FROM idx_patient_token WHERE pid = 2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_11_database_drops_the_rows_of_combined_parameters() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let mut schema_11 = SCHEMA_10.to_vec();
    schema_11.push((11, include_str!("../../migrations/sqlite/0011_contained.sql")));
    old_sqlite_database(&path, &schema_11, &old_combo_rows(true));
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open and upgrade");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    let left: [i64; 6] = conn
        .query_row(COMBO_ROWS_LEFT, [], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]))
        .expect("count");
    assert_eq!(left, [1, 0, 1, 0, 1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_12_postgres_database_drops_the_rows_of_combined_parameters() {
    in_postgres_schema(|store_url| async move {
        let mut schema_12 = POSTGRES_SCHEMA_10.to_vec();
        schema_12.push((11, include_str!("../../migrations/postgres/0011_contained.sql")));
        schema_12.push((12, include_str!("../../migrations/postgres/0012_index_only_lookups.sql")));
        old_postgres_schema(&store_url, &schema_12, &old_combo_rows(false)).await;
        let store = PostgresStore::connect(&store_url).await.expect("connect and upgrade");
        drop(store);
        let (client, connection) = tokio_postgres::connect(&store_url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        let row = client.query_one(COMBO_ROWS_LEFT, &[]).await.expect("count");
        let left: Vec<i64> = (0..6).map(|i| row.get(i)).collect();
        assert_eq!(left, [1, 0, 1, 0, 1, 0]);
    })
    .await;
}
