//! Encryption at rest: SQLCipher database files (the key, a wrong key, no
//! plaintext in any file, WAL included), Binary bodies sealed by
//! `EncryptedBinaries` on every backend, and key rotation.

use crate::harness::*;
use domain::store::{HistoryQuery, HistoryScope, Method, Store, Write};
use fhir::search::query::{Filter, Match, SearchQuery, TextField};
use fhir::search::text::{TextIndex, parse_query};
use std::path::Path;
use std::sync::Arc;
use store::cipher::{BinaryCipher, DbKey, DbRotation, EncryptedBinaries, Secret};
use store::sqlite::{SqliteOptions, SqliteStore};

/// Text that must never be found in clear at rest.
const FAMILY: &str = "Qwertyfamilyzyx";
const DATA: &str = "SGVhcnRoIGF0dGFjaG1lbnQgc2VjcmV0IDQ3MTE=";
const WORD: &str = "attachmentwordzyx";

fn patient_body(id: &str) -> Arc<str> {
    Arc::from(format!(r#"{{"resourceType":"Patient","id":"{id}","name":[{{"family":"{FAMILY}"}}]}}"#))
}

fn binary_body(id: &str, version: u64) -> String {
    format!(
        r#"{{"resourceType":"Binary","id":"{id}","meta":{{"versionId":"{version}"}},"contentType":"text/plain","data":"{DATA}"}}"#
    )
}

fn binary_write(id: &str, version: u64) -> Write {
    Write {
        body: Some(Arc::from(binary_body(id, version))),
        text: TextIndex { narrative: String::new(), content: format!("text plain {WORD}") },
        ..write("Binary", id, version, at(version as i64), vec![])
    }
}

fn keyed(key: &DbKey) -> SqliteOptions {
    SqliteOptions { key: Some(key.clone()), readers: 2, ..SqliteOptions::default() }
}

/// Every file under `dir` (the database, its WAL and shared memory, and
/// anything else SQLite made) as bytes.
fn every_file(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(every_file(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).expect("read file")));
        }
    }
    out
}

fn assert_no_plaintext(dir: &Path, needles: &[&str]) {
    let files = every_file(dir);
    assert!(!files.is_empty());
    for (name, bytes) in &files {
        for needle in needles {
            assert!(!contains(bytes, needle.as_bytes()), "{name} holds {needle:?} in clear");
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn content_query(word: &str) -> SearchQuery {
    let phrases = parse_query(word).expect("words").into_iter().next().expect("one alternative");
    SearchQuery {
        resource_type: Some("Binary".into()),
        filters: vec![Filter { any_of: vec![cond("_content", Match::Text { field: TextField::Content, phrases })] }],
        count: 100,
        ..SearchQuery::default()
    }
}

/// Writes two versions of a Binary (and a Patient) through the wrapper and
/// reads them back on every path; the wrapped store holds envelopes only.
async fn binaries_round_trip(inner: Arc<dyn Store>) {
    let cipher = BinaryCipher::new(&Secret::random());
    let sealed: Arc<dyn Store> = Arc::new(EncryptedBinaries::new(Arc::clone(&inner), cipher.clone()));
    sealed.commit(commit(vec![binary_write("b1", 1), write("Patient", "p1", 1, at(1), vec![])])).await.expect("create");
    sealed.commit(commit(vec![binary_write("b1", 2)])).await.expect("update");

    let read = sealed.read("Binary", "b1").await.expect("read").expect("found");
    assert_eq!(read.body.as_deref(), Some(binary_body("b1", 2).as_str()));
    let old = sealed.vread("Binary", "b1", 1).await.expect("vread").expect("found");
    assert_eq!(old.body.as_deref(), Some(binary_body("b1", 1).as_str()));
    let scope = HistoryScope::Instance { resource_type: "Binary".into(), id: "b1".into() };
    let history =
        sealed.history(&scope, &HistoryQuery { count: 10, ..HistoryQuery::default() }).await.expect("history");
    let bodies: Vec<_> = history.items.iter().map(|v| v.body.as_deref().map(str::to_string)).collect();
    assert_eq!(bodies, vec![Some(binary_body("b1", 2)), Some(binary_body("b1", 1))]);
    let ten = HistoryQuery { count: 10, ..HistoryQuery::default() };
    let system = sealed.history(&HistoryScope::System, &ten).await.expect("system history");
    assert_eq!(system.items.len(), 3);
    assert!(system.items.iter().all(|v| !v.body.as_deref().unwrap_or("").contains("hearth-aead")));
    let found = sealed.search(&query("Binary", vec![])).await.expect("search");
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].body.as_deref(), Some(binary_body("b1", 2).as_str()));
    let scanned = sealed.scan(Some("Binary"), None, 10).await.expect("scan");
    assert_eq!(scanned[0].body.as_deref(), Some(binary_body("b1", 2).as_str()));

    // As stored: an envelope of this key, no data in clear; other types untouched.
    for version in [1, 2] {
        let raw = inner.vread("Binary", "b1", version).await.expect("raw").expect("found");
        let raw = raw.body.expect("body");
        assert!(raw.starts_with(&format!("hearth-aead:1:{}:", cipher.key_id())), "{raw}");
        assert!(!raw.contains(DATA) && !raw.contains("text/plain"), "{raw}");
    }
    let patient = inner.read("Patient", "p1").await.expect("raw").expect("found");
    assert_eq!(patient.body, Some(body("Patient", "p1", 1)));
    // The Binary's words were not indexed.
    assert!(ids(&inner, &content_query(WORD)).await.is_empty());

    // Another key fails loudly, naming the key the body was sealed with.
    let wrong: Arc<dyn Store> =
        Arc::new(EncryptedBinaries::new(Arc::clone(&inner), BinaryCipher::new(&Secret::random())));
    let error = wrong.read("Binary", "b1").await.expect_err("wrong key").to_string();
    assert!(error.contains(cipher.key_id()) && error.contains("wrong key"), "{error}");
    assert!(wrong.search(&query("Binary", vec![])).await.is_err());
    // A Patient does not need the key.
    assert!(wrong.read("Patient", "p1").await.expect("patient").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_are_sealed_on_memory() {
    memory(binaries_round_trip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_are_sealed_on_sqlite() {
    sqlite(binaries_round_trip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_are_sealed_on_postgres() {
    postgres(binaries_round_trip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_hold_no_plaintext_and_open_only_with_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hearth.db");
    let key = Secret::random();
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, keyed(&key)).expect("open"));
        let words = TextIndex { narrative: String::new(), content: FAMILY.to_lowercase() };
        let patient = Write { body: Some(patient_body("p1")), text: words, ..write("Patient", "p1", 1, at(1), vec![]) };
        store.commit(commit(vec![patient])).await.expect("create");
        // Open, with the commit in the WAL: nothing in clear there either.
        assert_no_plaintext(dir.path(), &[FAMILY, &FAMILY.to_lowercase()]);
    }
    assert_no_plaintext(dir.path(), &[FAMILY, &FAMILY.to_lowercase()]);

    let store = SqliteStore::open(&path, keyed(&key)).expect("reopen");
    let read = store.read("Patient", "p1").await.expect("read").expect("found");
    assert_eq!(read.body, Some(patient_body("p1")));
    drop(store);

    let wrong = SqliteStore::open(&path, keyed(&Secret::random())).err().expect("a wrong key fails").to_string();
    assert!(wrong.contains(&format!("the database key does not open {}", path.display())), "{wrong}");
    let none = SqliteStore::open(&path, SqliteOptions::default()).err().expect("no key fails").to_string();
    assert!(none.contains("no database key was given"), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rekeys_the_database_and_reseals_binaries_and_can_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hearth.db");
    let (old_key, new_key) = (Secret::random(), Secret::random());
    let (old, new) = (BinaryCipher::new(&Secret::random()), BinaryCipher::new(&Secret::random()));
    {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, keyed(&old_key)).expect("open"));
        let sealed = EncryptedBinaries::new(inner, old.clone());
        sealed.commit(commit(vec![binary_write("b1", 1)])).await.expect("v1");
        sealed.commit(commit(vec![binary_write("b1", 2), binary_write("b2", 1)])).await.expect("v2");
    }
    let options = SqliteOptions::default();
    let done = store::cipher::rotate_sqlite(&path, &options, &old_key, &new_key, &old, &new).expect("rotate");
    assert_eq!(done.database, DbRotation::Rekeyed);
    assert_eq!((done.binaries.resealed, done.binaries.already), (3, 0));

    let error = SqliteStore::open(&path, keyed(&old_key)).err().expect("old key fails").to_string();
    assert!(error.contains("does not open"), "{error}");
    {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, keyed(&new_key)).expect("new key opens"));
        let sealed = EncryptedBinaries::new(Arc::clone(&inner), new.clone());
        let v1 = sealed.vread("Binary", "b1", 1).await.expect("vread").expect("found");
        assert_eq!(v1.body.as_deref(), Some(binary_body("b1", 1).as_str()));
        let stale = EncryptedBinaries::new(inner, old.clone());
        assert!(stale.read("Binary", "b2").await.is_err(), "the old attachment key no longer opens");
    }
    // Run again (as after an interruption): nothing left to do.
    let again = store::cipher::rotate_sqlite(&path, &options, &old_key, &new_key, &old, &new).expect("resume");
    assert_eq!(again.database, DbRotation::AlreadyDone);
    assert_eq!((again.binaries.resealed, again.binaries.already), (0, 3));
    assert_no_plaintext(dir.path(), &[DATA]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_encrypts_a_database_written_without_a_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hearth.db");
    {
        // An older Hearth: no database key, Binary bodies in clear.
        let plain: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("open"));
        let patient = Write { body: Some(patient_body("p1")), ..write("Patient", "p1", 1, at(1), vec![]) };
        plain.commit(commit(vec![patient, binary_write("b1", 1)])).await.expect("create");
    }
    let key = Secret::random();
    let error = SqliteStore::open(&path, keyed(&key)).err().expect("plaintext refuses a key").to_string();
    assert!(error.contains("is not encrypted") && error.contains("rotate-key"), "{error}");

    let (old, new) = (BinaryCipher::new(&Secret::random()), BinaryCipher::new(&Secret::random()));
    let done = store::cipher::rotate_sqlite(&path, &SqliteOptions::default(), &Secret::random(), &key, &old, &new)
        .expect("encrypt");
    assert_eq!(done.database, DbRotation::Encrypted);
    assert_eq!(done.binaries.resealed, 1);
    assert_no_plaintext(dir.path(), &[FAMILY, DATA]);

    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, keyed(&key)).expect("encrypted opens"));
    let sealed = EncryptedBinaries::new(Arc::clone(&inner), new);
    let binary = sealed.read("Binary", "b1").await.expect("read").expect("found");
    assert_eq!(binary.body.as_deref(), Some(binary_body("b1", 1).as_str()));
    let patient = inner.read("Patient", "p1").await.expect("read").expect("found");
    assert_eq!(patient.body, Some(patient_body("p1")));
    assert_eq!(patient.method, Method::Post);
    // Full-text search still works on the copy (FTS5 tables came along).
    let mut words = Write { body: Some(patient_body("p2")), ..write("Patient", "p2", 1, at(2), vec![]) };
    words.text = TextIndex { narrative: String::new(), content: "findable".into() };
    inner.commit(commit(vec![words])).await.expect("write after encryption");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rotation_reseals_binaries() {
    in_postgres_schema(|url| async move {
        let (old, new) = (BinaryCipher::new(&Secret::random()), BinaryCipher::new(&Secret::random()));
        let inner: Arc<dyn Store> = Arc::new(store::postgres::PostgresStore::connect(&url).await.expect("connect"));
        let sealed = EncryptedBinaries::new(Arc::clone(&inner), old.clone());
        sealed.commit(commit(vec![binary_write("b1", 1)])).await.expect("v1");
        sealed.commit(commit(vec![binary_write("b1", 2)])).await.expect("v2");
        let done = store::cipher::reseal_postgres(&url, &old, &new).await.expect("reseal");
        assert_eq!((done.resealed, done.already), (2, 0));
        let again = store::cipher::reseal_postgres(&url, &old, &new).await.expect("resume");
        assert_eq!((again.resealed, again.already), (0, 2));
        let fresh = EncryptedBinaries::new(Arc::clone(&inner), new);
        let v1 = fresh.vread("Binary", "b1", 1).await.expect("vread").expect("found");
        assert_eq!(v1.body.as_deref(), Some(binary_body("b1", 1).as_str()));
        assert!(sealed.read("Binary", "b1").await.is_err(), "the old key no longer opens");
    })
    .await;
}

/// Pages of 8 KiB authenticated with HMAC-SHA256 (what a new key file gives).
fn keyed_8k_sha256(key: &DbKey) -> SqliteOptions {
    SqliteOptions { page_size: 8192, page_hmac: store::sqlite::PageHmac::Sha256, ..keyed(key) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_opens_only_in_the_format_it_was_made_in_and_rotation_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hearth.db");
    let (key, new_key) = (Secret::random(), Secret::random());
    {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, keyed_8k_sha256(&key)).expect("create"));
        let patient = Write { body: Some(patient_body("p1")), ..write("Patient", "p1", 1, at(1), vec![]) };
        store.commit(commit(vec![patient])).await.expect("create");
    }
    // The right key in the other format does not open it; in its own, it does.
    let error = SqliteStore::open(&path, keyed(&key)).err().expect("another format fails").to_string();
    assert!(error.contains("does not open"), "{error}");
    let sha512 = SqliteOptions { page_hmac: store::sqlite::PageHmac::Sha512, ..keyed_8k_sha256(&key) };
    assert!(SqliteStore::open(&path, sha512).is_err(), "the page size alone is not enough");
    let store = SqliteStore::open(&path, keyed_8k_sha256(&key)).expect("its format opens");
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("found").body, Some(patient_body("p1")));
    drop(store);

    // Re-keyed, the file keeps its format.
    let cipher = BinaryCipher::new(&Secret::random());
    let done = store::cipher::rotate_sqlite(&path, &keyed_8k_sha256(&key), &key, &new_key, &cipher, &cipher).expect("rotate");
    assert_eq!(done.database, DbRotation::Rekeyed);
    let store = SqliteStore::open(&path, keyed_8k_sha256(&new_key)).expect("the new key in the same format");
    assert_eq!(store.read("Patient", "p1").await.expect("read").expect("found").body, Some(patient_body("p1")));
    drop(store);
    assert!(SqliteStore::open(&path, keyed(&new_key)).is_err());

    // A plaintext file encrypted into this format opens in it only.
    let plain_path = dir.path().join("plain.db");
    {
        let plain: Arc<dyn Store> = Arc::new(SqliteStore::open(&plain_path, SqliteOptions::default()).expect("open"));
        let patient = Write { body: Some(patient_body("p2")), ..write("Patient", "p2", 1, at(1), vec![]) };
        plain.commit(commit(vec![patient])).await.expect("create");
    }
    let done = store::cipher::rotate_sqlite(&plain_path, &keyed_8k_sha256(&key), &Secret::random(), &key, &cipher, &cipher)
        .expect("encrypt");
    assert_eq!(done.database, DbRotation::Encrypted);
    assert!(SqliteStore::open(&plain_path, keyed(&key)).is_err());
    let store = SqliteStore::open(&plain_path, keyed_8k_sha256(&key)).expect("encrypted in the format");
    assert_eq!(store.read("Patient", "p2").await.expect("read").expect("found").body, Some(patient_body("p2")));
}
