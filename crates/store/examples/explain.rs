//! The plan and the time of one search on an existing SQLite database (not a
//! test): what SQLite does with a query shape on real data.
//!
//! Run: `cargo run --release -p store --example explain -- DB KEY_HEX 'Type?params' [RUNS]`
//! (`KEY_HEX`: the `database` line of the data directory's `hearth.key`, or
//! `-` for a plaintext file). Prints the plans of the page and count
//! statements and the mean time of the page's key list (what the first page
//! of a search runs), the page of 20 and the count. `EXPLAIN_CACHE_KIB=64`
//! runs with a small page cache.

use domain::Store;
use fhir::search::Registry;
use fhir::search::query::TotalMode;
use std::time::Instant;
use store::sqlite::{SqliteOptions, SqliteStore};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, key, shape, rest @ ..] = args.as_slice() else {
        return Err("usage: explain DB KEY_HEX|- 'Type?params' [RUNS]".into());
    };
    let runs: u32 = rest.first().and_then(|r| r.parse().ok()).unwrap_or(20);
    let mut options = SqliteOptions::default();
    // A small page cache shows what a search costs when other commits have
    // just emptied it (SQLite resets a reader's cache whenever the WAL moved).
    if let Some(kib) = std::env::var("EXPLAIN_CACHE_KIB").ok().and_then(|v| v.parse().ok()) {
        options.cache_kib = kib;
    }
    if key != "-" {
        options.key = Some(store::cipher::Secret::from_hex(key)?);
    }
    let store = SqliteStore::open(std::path::Path::new(db), options)?;
    let (resource_type, query) = shape.split_once('?').unwrap_or((shape, ""));
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let parsed = fhir::search::query::parse(&Registry::core(), Some(resource_type), &params, false)
        .map_err(|e| format!("{e:?}"))?
        .query;
    for line in store.explain(&parsed).await? {
        println!("{line}");
    }
    let keys = fhir::search::query::SearchQuery { count: 5001, offset: 0, total: TotalMode::None, ..parsed.clone() };
    let page = fhir::search::query::SearchQuery { count: 20, total: TotalMode::None, ..parsed.clone() };
    let count = fhir::search::query::SearchQuery { count: 0, total: TotalMode::Accurate, ..parsed.clone() };
    let mut found = 0;
    let started = Instant::now();
    for _ in 0..runs {
        found = store.search_keys(&keys).await?.len();
    }
    println!("key list: {found} keys, {:?} per search", started.elapsed() / runs);
    let started = Instant::now();
    for _ in 0..runs {
        found = store.search(&page).await?.items.len();
    }
    println!("page: {found} resources, {:?} per search", started.elapsed() / runs);
    let started = Instant::now();
    let mut total = None;
    for _ in 0..runs {
        total = store.search(&count).await?.total;
    }
    println!("count: {total:?}, {:?} per search", started.elapsed() / runs);
    Ok(())
}
