//! Full-text search, `_text` (narrative) and `_content` (every string):
//! words, phrases, prefixes, alternatives, combination with other filters,
//! chains, and the words following updates, deletes and reindexing.
//! The words are given as `TextIndex` makes them (normalized, space-separated).

use crate::harness::*;
use domain::store::{Check, Commit, Reindex, Store, Write};
use fhir::search::IndexEntry;
use fhir::search::query::{Condition, Filter, Match, SearchQuery, TextField, TextPhrase};
use fhir::search::text::{TextIndex, parse_query};
use std::sync::Arc;

fn words(narrative: &str, content: &str) -> TextIndex {
    TextIndex { narrative: narrative.into(), content: content.into() }
}

/// A write of `resource_type/id` at `version` with these words.
fn with_text(resource_type: &str, id: &str, version: u64, text: TextIndex, index: Vec<IndexEntry>) -> Write {
    Write { text, ..write(resource_type, id, version, at(version as i64), index) }
}

async fn put(store: &Arc<dyn Store>, resource_type: &str, id: &str, text: TextIndex) {
    store.commit(commit(vec![with_text(resource_type, id, 1, text, vec![])])).await.expect("create");
}

/// The conditions (OR) of one `_text` / `_content` value, as the parser makes them.
fn text_conditions(field: TextField, value: &str) -> Vec<Condition> {
    let param = if field == TextField::Narrative { "_text" } else { "_content" };
    parse_query(value)
        .unwrap_or_else(|| panic!("no words in {value:?}"))
        .into_iter()
        .map(|phrases| cond(param, Match::Text { field, phrases }))
        .collect()
}

fn text_query(resource_type: Option<&str>, field: TextField, value: &str) -> SearchQuery {
    SearchQuery {
        resource_type: resource_type.map(str::to_string),
        filters: vec![Filter { any_of: text_conditions(field, value) }],
        count: 1000,
        ..SearchQuery::default()
    }
}

async fn narrative(store: &Arc<dyn Store>, value: &str) -> Vec<String> {
    id_set(store, &text_query(Some("Condition"), TextField::Narrative, value)).await
}

async fn content(store: &Arc<dyn Store>, value: &str) -> Vec<String> {
    id_set(store, &text_query(Some("Condition"), TextField::Content, value)).await
}

async fn conditions(store: &Arc<dyn Store>) {
    put(store, "Condition", "c1", words("type 2 diabetes mellitus", "type 2 diabetes mellitus active smith")).await;
    put(store, "Condition", "c2", words("asthma since childhood", "asthma since childhood resolved jones")).await;
    put(store, "Condition", "c3", words("", "heart disease diabetes screening")).await;
}

pub(crate) async fn every_word_must_occur(store: Arc<dyn Store>) {
    conditions(&store).await;
    assert_eq!(narrative(&store, "diabetes").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "mellitus type").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "diabetes asthma").await, strs(&[]));
    assert_eq!(narrative(&store, "DIABÈTES").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "diabete").await, strs(&[]), "whole words unless a prefix is asked for");
    assert_eq!(narrative(&store, "2").await, strs(&["c1"]));
}

pub(crate) async fn phrases_keep_their_order(store: Arc<dyn Store>) {
    conditions(&store).await;
    assert_eq!(narrative(&store, "\"type 2 diabetes\"").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "\"diabetes type\"").await, strs(&[]));
    assert_eq!(narrative(&store, "\"type diabetes\"").await, strs(&[]), "adjacent words only");
    assert_eq!(narrative(&store, "\"since childhood\" asthma").await, strs(&["c2"]));
}

pub(crate) async fn a_star_makes_the_last_word_a_prefix(store: Arc<dyn Store>) {
    conditions(&store).await;
    assert_eq!(narrative(&store, "diab*").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "child*").await, strs(&["c2"]));
    assert_eq!(narrative(&store, "\"type 2 diab\"*").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "\"2 diab\"* mell*").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "diabetes*").await, strs(&["c1"]), "a prefix matches the whole word too");
    assert_eq!(narrative(&store, "zzz*").await, strs(&[]));
}

pub(crate) async fn narrative_and_content_are_separate(store: Arc<dyn Store>) {
    conditions(&store).await;
    assert_eq!(narrative(&store, "heart").await, strs(&[]));
    assert_eq!(content(&store, "heart").await, strs(&["c3"]));
    assert_eq!(content(&store, "diabetes").await, strs(&["c1", "c3"]));
    assert_eq!(narrative(&store, "smith").await, strs(&[]));
    assert_eq!(content(&store, "smith").await, strs(&["c1"]));
}

pub(crate) async fn alternatives_and_other_filters(store: Arc<dyn Store>) {
    put(&store, "Condition", "c1", words("diabetes", "diabetes")).await;
    store
        .commit(commit(vec![with_text(
            "Condition",
            "c2",
            1,
            words("asthma", "asthma"),
            vec![string("code-text", "lung")],
        )]))
        .await
        .expect("create");
    put(&store, "Condition", "c3", words("asthma attack", "asthma attack")).await;
    assert_eq!(narrative(&store, "diabetes OR asthma").await, strs(&["c1", "c2", "c3"]));
    assert_eq!(narrative(&store, "diabetes OR asthma attack").await, strs(&["c1", "c3"]));
    // A comma gives alternatives too: several conditions in one filter.
    let mut any_of = text_conditions(TextField::Narrative, "diabetes");
    any_of.extend(text_conditions(TextField::Narrative, "attack"));
    let query = SearchQuery {
        resource_type: Some("Condition".into()),
        filters: vec![Filter { any_of }],
        count: 1000,
        ..SearchQuery::default()
    };
    assert_eq!(id_set(&store, &query).await, strs(&["c1", "c3"]));
    // AND with another parameter.
    let mut query = text_query(Some("Condition"), TextField::Content, "asthma");
    query.filters.push(Filter {
        any_of: vec![cond(
            "code-text",
            Match::String { value: "lung".into(), mode: fhir::search::query::StringMode::Prefix },
        )],
    });
    assert_eq!(id_set(&store, &query).await, strs(&["c2"]));
    // Two text filters: both must hold.
    let mut query = text_query(Some("Condition"), TextField::Narrative, "asthma");
    query.filters.push(Filter { any_of: text_conditions(TextField::Content, "attack") });
    assert_eq!(id_set(&store, &query).await, strs(&["c3"]));
}

pub(crate) async fn system_search_spans_types(store: Arc<dyn Store>) {
    put(&store, "Condition", "x1", words("kidney stone", "kidney stone")).await;
    put(&store, "Observation", "x2", words("", "kidney function panel")).await;
    put(&store, "Patient", "x3", words("liver", "liver")).await;
    assert_eq!(id_set(&store, &text_query(None, TextField::Content, "kidney")).await, strs(&["x1", "x2"]));
    assert_eq!(id_set(&store, &text_query(None, TextField::Narrative, "kidney")).await, strs(&["x1"]));
    assert_eq!(id_set(&store, &text_query(Some("Observation"), TextField::Content, "kidney")).await, strs(&["x2"]));
}

pub(crate) async fn words_beyond_ascii(store: Arc<dyn Store>) {
    put(&store, "Patient", "p1", words("zoe 北京市 ⓐbc n2o", "zoe 北京市 ⓐbc n2o")).await;
    put(&store, "Patient", "p2", words("zoey", "zoey")).await;
    let patients = |value: &str| text_query(Some("Patient"), TextField::Narrative, value);
    assert_eq!(id_set(&store, &patients("北京市")).await, strs(&["p1"]));
    assert_eq!(id_set(&store, &patients("北京*")).await, strs(&["p1"]));
    assert_eq!(id_set(&store, &patients("Ⓐbc")).await, strs(&["p1"]));
    assert_eq!(id_set(&store, &patients("N2O")).await, strs(&["p1"]));
    assert_eq!(id_set(&store, &patients("zoë")).await, strs(&["p1"]));
    assert_eq!(id_set(&store, &patients("zo*")).await, strs(&["p1", "p2"]));
}

pub(crate) async fn updates_deletes_and_reindex_replace_words(store: Arc<dyn Store>) {
    put(&store, "Condition", "c1", words("old words", "old words")).await;
    put(&store, "Condition", "c2", words("keep", "keep")).await;
    store
        .commit(commit(vec![with_text("Condition", "c1", 2, words("new words", "new words"), vec![])]))
        .await
        .expect("update");
    assert_eq!(narrative(&store, "old").await, strs(&[]));
    assert_eq!(narrative(&store, "new").await, strs(&["c1"]));
    assert_eq!(narrative(&store, "words").await, strs(&["c1"]));

    // An update without words leaves none.
    store.commit(commit(vec![with_text("Condition", "c1", 3, TextIndex::default(), vec![])])).await.expect("update");
    assert_eq!(content(&store, "words").await, strs(&[]));

    store.commit(commit(vec![with_text("Condition", "c1", 4, words("back", "back"), vec![])])).await.expect("update");
    store.commit(commit(vec![delete("Condition", "c1", 5, at(5))])).await.expect("delete");
    assert_eq!(content(&store, "back").await, strs(&[]));
    store
        .commit(commit(vec![with_text("Condition", "c1", 6, words("again", "again"), vec![])]))
        .await
        .expect("recreate");
    assert_eq!(content(&store, "again").await, strs(&["c1"]));

    // Two versions in one commit: the last one's words count.
    let both = vec![
        with_text("Condition", "c2", 2, words("first", "first"), vec![]),
        with_text("Condition", "c2", 3, words("second", "second"), vec![]),
    ];
    store.commit(commit(both)).await.expect("two versions");
    assert_eq!(content(&store, "first").await, strs(&[]));
    assert_eq!(content(&store, "second").await, strs(&["c2"]));
    assert_eq!(content(&store, "keep").await, strs(&[]));

    // Reindex replaces the words of the version it was made from, and skips
    // a resource that moved on.
    let reindex = |id: &str, version: u64, text: TextIndex| Reindex {
        resource_type: "Condition".into(),
        id: id.into(),
        version_id: version,
        index: vec![],
        text,
        contained: Vec::new(),
    };
    let rows = vec![reindex("c1", 6, words("reindexed", "reindexed")), reindex("c2", 2, words("stale", "stale"))];
    store.commit(Commit { reindex: rows, ..Commit::default() }).await.expect("reindex");
    assert_eq!(content(&store, "again").await, strs(&[]));
    assert_eq!(content(&store, "reindexed").await, strs(&["c1"]));
    assert_eq!(content(&store, "stale").await, strs(&[]));
    assert_eq!(content(&store, "second").await, strs(&["c2"]));
}

pub(crate) async fn chains_and_conditional_checks_see_words(store: Arc<dyn Store>) {
    put(&store, "Patient", "p1", words("peter chalmers", "peter chalmers")).await;
    put(&store, "Patient", "p2", words("anna smith", "anna smith")).await;
    create(&store, "Observation", "o1", at(2), vec![reference("subject", "Patient", "p1")]).await;
    create(&store, "Observation", "o2", at(3), vec![reference("subject", "Patient", "p2")]).await;
    let chain = cond(
        "subject",
        Match::Chain { target_types: vec!["Patient".into()], inner: text_conditions(TextField::Narrative, "chalmers") },
    );
    assert_eq!(id_set(&store, &query("Observation", vec![chain])).await, strs(&["o1"]));

    // A conditional create keyed on words: the set it saw must still hold.
    let smiths = text_query(Some("Patient"), TextField::Content, "smith");
    let check = Check::Matches { query: smiths.clone(), ids: vec!["p2".into()] };
    let created = with_text("Patient", "p3", 1, words("", "john smith"), vec![]);
    store.commit(checked(vec![check.clone()], vec![created])).await.expect("conditional create");
    let again = with_text("Patient", "p4", 1, words("", "jane smith"), vec![]);
    assert!(store.commit(checked(vec![check], vec![again])).await.is_err(), "p3 now matches too");
    assert_eq!(id_set(&store, &smiths).await, strs(&["p2", "p3"]));
}

/// Phrases as the parser makes them, for a direct check of the IR.
pub(crate) async fn phrase_ir_is_what_stores_evaluate(store: Arc<dyn Store>) {
    put(&store, "Condition", "c1", words("a b c", "a b c")).await;
    let phrase =
        |words: &[&str], prefix: bool| TextPhrase { words: words.iter().map(|w| w.to_string()).collect(), prefix };
    let matcher =
        Match::Text { field: TextField::Narrative, phrases: vec![phrase(&["b", "c"], false), phrase(&["a"], true)] };
    assert_eq!(id_set(&store, &query("Condition", vec![cond("_text", matcher)])).await, strs(&["c1"]));
    let matcher = Match::Text { field: TextField::Narrative, phrases: vec![phrase(&["c", "b"], false)] };
    assert_eq!(id_set(&store, &query("Condition", vec![cond("_text", matcher)])).await, strs(&[]));
}

/// More writes than the SQLite writer keeps pending (fulltext.rs moves them
/// into FTS5 at 512; a commit that large writes them there itself): words
/// are found wherever they are kept, and updates and deletes of resources
/// already moved replace them there too.
pub(crate) async fn words_are_found_before_and_after_the_index_catches_up(store: Arc<dyn Store>) {
    let bulk: Vec<Write> = (0..600)
        .map(|i| {
            with_text("Condition", &format!("b{i}"), 1, words("", &format!("bulk item n{i} lot{}", i % 7)), vec![])
        })
        .collect();
    store.commit(commit(bulk)).await.expect("bulk");
    for i in 0..5 {
        put(&store, "Observation", &format!("late{i}"), words("late bulk", "late bulk")).await;
    }
    let count = |field: TextField, value: &str| {
        let store = Arc::clone(&store);
        let query = text_query(None, field, value);
        async move { ids(&store, &query).await.len() }
    };
    assert_eq!(count(TextField::Content, "bulk").await, 605);
    assert_eq!(count(TextField::Content, "lot3").await, 86);
    assert_eq!(count(TextField::Content, "n599").await, 1);
    assert_eq!(count(TextField::Content, "n59*").await, 11);
    assert_eq!(count(TextField::Narrative, "late").await, 5);
    assert_eq!(count(TextField::Content, "\"bulk item n7\"").await, 1);
    // A resource long written gets new words, another is deleted.
    store.commit(commit(vec![with_text("Condition", "b7", 2, words("", "renamed"), vec![])])).await.expect("update");
    store.commit(commit(vec![delete("Condition", "b8", 2, at(2))])).await.expect("delete");
    assert_eq!(count(TextField::Content, "bulk").await, 603);
    assert_eq!(count(TextField::Content, "renamed").await, 1);
    assert_eq!(count(TextField::Content, "n7").await, 0);
    assert_eq!(count(TextField::Content, "n8").await, 0);
}

/// SQLite: a large commit (a migration's batch) writes its words into FTS5
/// in its own transaction, not as pending rows; small commits keep theirs
/// pending until enough gather (fulltext.rs). Both are found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_large_commits_write_words_into_fts5_directly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let store: Arc<dyn Store> =
        Arc::new(store::sqlite::SqliteStore::open(&path, store::sqlite::SqliteOptions::default()).expect("open"));
    let bulk: Vec<Write> =
        (0..300).map(|i| with_text("Condition", &format!("b{i}"), 1, words("", &format!("bulk n{i}")), vec![])).collect();
    store.commit(commit(bulk)).await.expect("bulk");
    for i in 0..3 {
        put(&store, "Condition", &format!("s{i}"), words("", "single bulk")).await;
    }
    assert_eq!(id_set(&store, &text_query(None, TextField::Content, "bulk")).await.len(), 303);
    assert_eq!(id_set(&store, &text_query(None, TextField::Content, "n299")).await, strs(&["b299"]));
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql);
    assert_eq!(count("SELECT COUNT(*) FROM idx_text_pending"), 3, "only the small commits' words wait");
    assert_eq!(count("SELECT COUNT(*) FROM idx_text"), 300, "the large commit's words are in FTS5");
}
