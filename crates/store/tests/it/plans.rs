//! Query plans: the main search shapes must be served by indexes on both SQL
//! engines, so that a change that falls back to a full scan fails the build
//! rather than a clinic's server on millions of rows. SQLite plans come from
//! `EXPLAIN QUERY PLAN` (a `SCAN` step reads a whole table or index);
//! PostgreSQL plans from `EXPLAIN` with sequential scans disabled (a
//! `Seq Scan` left in the plan means no index can serve the query).

use crate::harness::*;
use domain::store::Store;
use fhir::search::Registry;
use fhir::search::query::SearchQuery;
use serde_json::{Value, json};
use std::sync::Arc;
use store::postgres::PostgresStore;
use store::sqlite::{SqliteOptions, SqliteStore};

/// The query shapes the search benchmark and the clinical screens use.
const SHAPES: &[&str] = &[
    "Patient?family=smi",
    "Patient?name=smi&birthdate=1970-03-15",
    "Patient?identifier=http://hospital.example/mrn|MRN001",
    "Patient?_id=p1",
    "Patient?_count=20",
    "Patient?_lastUpdated=ge2024-01-01",
    "Observation?patient=p1&code=http://loinc.org|2345-7&_sort=-date&_count=20",
    "Observation?patient=Patient/p1&category=laboratory&date=ge2024-01-01",
    "Observation?code=http://loinc.org|2345-7&_summary=count",
    "Observation?subject:Patient.family=smith&code=http://loinc.org|2345-7",
    "Observation?value-quantity=gt100",
    "Patient?_has:Observation:patient:code=2345-7",
    // Chains of depth 2 and 3, untyped, ending with a token; nested _has.
    "Observation?subject.family=smith",
    "Encounter?patient.organization.name=acme",
    "DiagnosticReport?result.code=http://loinc.org|2345-7",
    "Patient?_has:Observation:patient:_has:DiagnosticReport:result:code=24323-8",
    // What _include (targets by _id) and _revinclude (referrers of a page) run.
    "Observation?_id=o1,o2,o3",
    "Observation?subject=Patient/p1,Patient/p2,Patient/p3",
    "Condition?patient=p1&clinical-status=active",
    "Encounter?date=ge2024-01-01&patient=p1",
    // Composites (one element's components together), :of-type, reference
    // :identifier, UCUM quantities in canonical units, and :in once the
    // Service has resolved it into a token set (`parse` below).
    "Observation?code-value-quantity=http://loinc.org|2345-7$gt100",
    "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt140|http://unitsofmeasure.org|mm[Hg]",
    "Observation?combo-code-value-quantity=http://loinc.org|8480-6$gt140",
    "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN001",
    "Observation?subject:identifier=http://hospital.example/mrn|MRN001",
    "Observation?value-quantity=gt1|http://unitsofmeasure.org|g/L",
    "Observation?code:in=http://example.org/vs&patient=p1",
    "Observation?code:not-in=http://example.org/vs&patient=p1",
];

/// The shapes whose plan rightly walks the type's (type, last_updated) index.
const TYPE_WALKS: &[&str] = &["Patient?_count=20", "Patient?_lastUpdated=ge2024-01-01"];

fn parse(shape: &str) -> SearchQuery {
    let (resource_type, query) = shape.split_once('?').unwrap_or((shape, ""));
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut parsed = fhir::search::query::parse(&Registry::core(), Some(resource_type), &params, false)
        .unwrap_or_else(|e| panic!("{shape}: {e:?}"))
        .query;
    for filter in &mut parsed.filters {
        for condition in &mut filter.any_of {
            if let fhir::search::query::Match::InValueSet { negate, .. } = condition.matcher {
                let tokens = vec![
                    ("http://loinc.org".to_string(), Some("2345-7".to_string())),
                    ("http://loinc.org".to_string(), Some("8867-4".to_string())),
                    ("http://snomed.info/sct".to_string(), None),
                ];
                condition.matcher = fhir::search::query::Match::TokenSet { tokens, negate };
            }
        }
    }
    if parsed.count == 0 || shape.contains("_summary=count") {
        parsed.count = 0;
        parsed.total = fhir::search::query::TotalMode::Accurate;
    }
    parsed
}

/// One resource of each type the shapes touch, so that every parameter used
/// is interned (sort keys are resolved through the interned parameters).
async fn seed(store: &Arc<dyn Store>) {
    let resources: [Value; 5] = [
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith"}], "birthDate": "1970-03-15",
               "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN001",
                               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}]}),
        json!({"resourceType": "Observation", "id": "o2", "status": "final",
               "subject": {"identifier": {"system": "http://hospital.example/mrn", "value": "MRN001"}},
               "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
               "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                              "valueQuantity": {"value": 150, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "subject": {"reference": "Patient/p1"},
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
               "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}, "effectiveDateTime": "2024-03-01",
               "valueQuantity": {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}}),
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
               "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}}),
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p1"},
               "class": {"code": "AMB"}, "period": {"start": "2024-03-01"}}),
    ];
    for resource in resources {
        put(store, &resource, 1).await;
    }
}

/// Stores the first version of `resource`, indexed, at `seconds`.
async fn put(store: &Arc<dyn Store>, resource: &Value, seconds: i64) {
    let rt = resource["resourceType"].as_str().unwrap_or_default();
    let id = resource["id"].as_str().unwrap_or_default();
    let mut w = write(rt, id, 1, at(seconds), Registry::core().extract(resource));
    w.body = Some(Arc::from(resource.to_string()));
    store.commit(commit(vec![w])).await.expect("write");
}

/// A SQLite store at `path` holding [`seed`]'s resources.
async fn seeded_sqlite(path: &std::path::Path) -> (Arc<SqliteStore>, Arc<dyn Store>) {
    let sqlite = Arc::new(SqliteStore::open(path, SqliteOptions::default()).expect("open"));
    let store: Arc<dyn Store> = sqlite.clone();
    seed(&store).await;
    (sqlite, store)
}

/// Plan lines that read a whole table or index.
fn sqlite_full_scans(plan: &[String]) -> Vec<String> {
    plan.iter()
        .filter(|line| {
            let step = line.trim_start();
            // `SCAN CONSTANT ROW` and scans of subquery results or CTEs are not table reads.
            step.starts_with("SCAN ") && !step.starts_with("SCAN CONSTANT ROW") && !step.contains("SUBQUERY")
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn sqlite_search_shapes_use_indexes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (sqlite, _store) = seeded_sqlite(&dir.path().join("hearth.db")).await;
    let failures = sqlite_shapes_not_served_by_indexes(&sqlite).await;
    assert!(failures.is_empty(), "full scans or type walks in SQLite plans:\n{}", failures.join("\n"));
}

/// The [`SHAPES`] whose SQLite plan scans a table or walks a type, with the plan.
async fn sqlite_shapes_not_served_by_indexes(sqlite: &SqliteStore) -> Vec<String> {
    let mut failures = Vec::new();
    for shape in SHAPES {
        let plan = sqlite.explain(&parse(shape)).await.expect("explain");
        assert!(!plan.is_empty(), "{shape}: empty plan");
        let scans = sqlite_full_scans(&plan);
        // Walking every resource of the type is right only when no filter
        // lists its rows through an index.
        let walks_type = plan.first().is_some_and(|l| l.starts_with("SEARCH r USING INDEX resource_type_updated"));
        if !scans.is_empty() || (walks_type && !TYPE_WALKS.contains(shape)) {
            failures.push(format!("{shape}:\n    {}", plan.join("\n    ")));
        }
    }
    failures
}

/// Ids of what `shape` finds.
async fn found(store: &Arc<dyn Store>, shape: &str) -> Vec<String> {
    let mut ids: Vec<String> = store.search(&parse(shape)).await.expect("search").items.into_iter().map(|r| r.id).collect();
    ids.sort();
    ids
}

async fn write_observation(store: &Arc<dyn Store>, id: &str) {
    let resource = json!({"resourceType": "Observation", "id": id, "status": "final", "subject": {"reference": "Patient/p1"},
                          "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}, "effectiveDateTime": "2024-04-01"});
    put(store, &resource, 2).await;
}

const BY_CODE: &str = "Observation?patient=p1&code=http://loinc.org|2345-7";

#[tokio::test]
async fn sqlite_a_bulk_load_into_a_small_store_builds_the_search_indexes_at_its_end() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (sqlite, store) = seeded_sqlite(&dir.path().join("hearth.db")).await;
    // Five resources held: a load of ten may double the store, not more.
    assert!(!store.defer_search_indexes(10).await.expect("defer"), "a load no larger than twice the store keeps its indexes");
    assert!(sqlite_shapes_not_served_by_indexes(&sqlite).await.is_empty());

    assert!(store.defer_search_indexes(1_000).await.expect("defer"));
    assert!(!sqlite_shapes_not_served_by_indexes(&sqlite).await.is_empty(), "the search indexes are gone while deferred");
    // Searches answer the same meanwhile, writes included.
    write_observation(&store, "o3").await;
    assert_eq!(found(&store, BY_CODE).await, ["o1", "o3"]);

    store.restore_search_indexes().await.expect("restore");
    let failures = sqlite_shapes_not_served_by_indexes(&sqlite).await;
    assert!(failures.is_empty(), "after the load:\n{}", failures.join("\n"));
    assert_eq!(found(&store, BY_CODE).await, ["o1", "o3"]);
    // Nothing left to build: a second restore does nothing.
    store.restore_search_indexes().await.expect("restore again");
}

#[tokio::test]
async fn sqlite_indexes_a_stopped_bulk_load_deferred_are_built_when_the_store_opens() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    {
        let (_sqlite, store) = seeded_sqlite(&path).await;
        assert!(store.defer_search_indexes(1_000).await.expect("defer"));
        write_observation(&store, "o3").await;
        // The load stops here, before it builds the indexes.
    }
    let sqlite = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("reopen"));
    let store: Arc<dyn Store> = sqlite.clone();
    let failures = sqlite_shapes_not_served_by_indexes(&sqlite).await;
    assert!(failures.is_empty(), "after reopening:\n{}", failures.join("\n"));
    assert_eq!(found(&store, BY_CODE).await, ["o1", "o3"]);
}

#[tokio::test]
async fn postgres_search_shapes_use_indexes() {
    in_postgres_schema(|store_url| async move {
        let pg = Arc::new(PostgresStore::connect(&store_url).await.expect("connect store"));
        let store: Arc<dyn Store> = pg.clone();
        seed(&store).await;
        let mut failures = Vec::new();
        for shape in SHAPES {
            let plan = pg.explain(&parse(shape)).await.expect("explain");
            assert!(!plan.is_empty(), "{shape}: empty plan");
            if plan.iter().any(|line| line.contains("Seq Scan")) {
                failures.push(format!("{shape}:\n    {}", plan.join("\n    ")));
            }
        }
        assert!(failures.is_empty(), "sequential scans in PostgreSQL plans:\n{}", failures.join("\n"));
    })
    .await;
}

#[test]
fn a_full_scan_is_detected() {
    let plan = vec!["SCAN r".to_string(), "  SEARCH v USING INDEX resource_version_rid (rid=? AND version=?)".to_string()];
    assert_eq!(sqlite_full_scans(&plan), vec!["SCAN r".to_string()]);
    let indexed = vec!["SEARCH r USING INDEX resource_type_updated (type=?)".to_string(), "SCAN CONSTANT ROW".to_string()];
    assert!(sqlite_full_scans(&indexed).is_empty());
}

/// The shapes of the search targets read what they need and no more: a
/// patient's records with a code from one range of `idx_patient_token`
/// (newest first in the index's own order, no sort of all matches), a chain
/// to patients then that range per patient, a count of one code from the
/// code's index rows alone (no `resource` row read).
const TARGET_PLANS: &[(&str, &[&str], &[&str])] = &[
    (
        "Observation?patient=p1&code=http://loinc.org|2345-7&_sort=-date&_count=20",
        &["SEARCH c USING COVERING INDEX idx_patient_token_search"],
        &["TEMP B-TREE FOR ORDER BY", "idx_reference", "idx_token"],
    ),
    (
        "Observation?subject:Patient.family=smith&code=http://loinc.org|2345-7",
        &["USING COVERING INDEX idx_patient_token_search", "idx_string_search"],
        &["idx_reference", "idx_token "],
    ),
    ("Observation?code=http://loinc.org|2345-7&_summary=count", &["idx_token_search"], &["SEARCH r", "SCAN r", "resource"]),
];

#[tokio::test]
async fn sqlite_target_shapes_read_one_index_range() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (sqlite, _store) = seeded_sqlite(&dir.path().join("hearth.db")).await;
    let mut failures = Vec::new();
    for (shape, wanted, unwanted) in TARGET_PLANS {
        let query = parse(shape);
        let plan = sqlite.explain(&query).await.expect("explain");
        // The page statement, then the count (which alone runs for `_summary=count`).
        let split = plan.iter().position(|l| l == store::sqlite::STATEMENT_SEPARATOR).unwrap_or(plan.len());
        let (page, count) = plan.split_at(split);
        let plan: Vec<String> = if query.count == 0 { count.to_vec() } else { page.to_vec() };
        let text = plan.join("\n");
        let missing: Vec<&&str> = wanted.iter().filter(|w| !text.contains(**w)).collect();
        let present: Vec<&&str> = unwanted.iter().filter(|u| text.contains(**u)).collect();
        if !missing.is_empty() || !present.is_empty() {
            failures.push(format!("{shape}: missing {missing:?}, present {present:?}\n    {}", plan.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn postgres_patient_code_shapes_read_the_patient_token_index() {
    in_postgres_schema(|store_url| async move {
        let pg = Arc::new(PostgresStore::connect(&store_url).await.expect("connect store"));
        let store: Arc<dyn Store> = pg.clone();
        seed(&store).await;
        for (shape, _, _) in TARGET_PLANS.iter().take(2) {
            let plan = pg.explain(&parse(shape)).await.expect("explain");
            assert!(
                plan.iter().any(|line| line.contains("idx_patient_token_search")),
                "{shape}:\n    {}",
                plan.join("\n    ")
            );
        }
    })
    .await;
}

/// Membership of a patient's compartment (`$everything`, compartment
/// search) is any of several reference parameters: on PostgreSQL one list
/// of row ids from both lookups, not a walk of every row of the type
/// testing two hashed lists (what `rid IN (a) OR rid IN (b)` was planned
/// as: 130 ms on 2 M resources).
#[tokio::test]
async fn postgres_any_of_several_lookups_reads_the_indexes() {
    use fhir::search::query::{Filter, Match, TotalMode};
    in_postgres_schema(|store_url| async move {
        let pg = Arc::new(PostgresStore::connect(&store_url).await.expect("connect store"));
        let store: Arc<dyn Store> = pg.clone();
        seed(&store).await;
        let patient = |param: &str| cond(param, Match::Reference { target_type: Some("Patient".into()), id: "p1".into() });
        let query = SearchQuery {
            resource_type: Some("Observation".into()),
            filters: vec![Filter { any_of: vec![patient("subject"), patient("performer")] }],
            count: 10,
            total: TotalMode::Accurate,
            ..SearchQuery::default()
        };
        let plan = pg.explain(&query).await.expect("explain");
        let text = plan.join("\n    ");
        // (On so few rows the count may still start from the type's index:
        // what matters is the one list, an Append of both index lookups.)
        assert!(!text.contains("SubPlan"), "{text}");
        assert!(text.contains("Append") && text.contains("idx_reference_search"), "{text}");
        let page = store.search(&query).await.expect("search");
        assert_eq!(page.total, Some(1));
        assert_eq!(page.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["o1"]);
    })
    .await;
}

/// After a bulk load the planner's statistics are refreshed for this
/// store's tables (and only its schema's).
#[tokio::test]
async fn postgres_statistics_are_refreshed_after_a_bulk_load() {
    in_postgres_schema(|store_url| async move {
        let pg = Arc::new(PostgresStore::connect(&store_url).await.expect("connect store"));
        let store: Arc<dyn Store> = pg.clone();
        seed(&store).await;
        let (client, connection) = tokio_postgres::connect(&store_url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        let analyzed = |client: tokio_postgres::Client| async move {
            let row = client
                .query_one(
                    "SELECT COALESCE(sum(analyze_count), 0)::BIGINT FROM pg_stat_user_tables \
                     WHERE schemaname = current_schema() AND relname IN ('resource', 'idx_token', 'idx_reference')",
                    &[],
                )
                .await
                .expect("statistics");
            (row.get::<_, i64>(0), client)
        };
        let (before, client) = analyzed(client).await;
        store.refresh_planner_statistics().await.expect("refresh");
        let (after, _) = analyzed(client).await;
        // (The schema's migrations analysed them once already, on an empty store.)
        assert_eq!(after - before, 3, "{before} -> {after}");
    })
    .await;
}

/// A search across types looks parameter codes up without a type: through
/// `search_param (code, kind)`, not by reading every interned parameter.
#[tokio::test]
async fn sqlite_system_search_finds_parameter_ids_by_code() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (sqlite, _store) = seeded_sqlite(&dir.path().join("hearth.db")).await;
    let mut query = parse("Observation?status=final");
    query.resource_type = None;
    let plan = sqlite.explain(&query).await.expect("explain");
    assert!(plan.iter().any(|l| l.contains("search_param_code")), "{}", plan.join("\n"));
    assert!(sqlite_full_scans(&plan).is_empty(), "{}", plan.join("\n"));
}
