//! The SQLite store's cache of current versions (src/cache.rs): a read by
//! id never answers an older version than one already acknowledged by this
//! store, and another store on the same file (another process) sees the
//! first one's writes within its check interval.

use crate::harness::*;
use domain::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant as Clock};
use store::sqlite::{SqliteOptions, SqliteStore};

async fn version_of(store: &Arc<dyn Store>, id: &str) -> Option<u64> {
    store.read("Patient", id).await.expect("read").filter(|r| !r.is_deleted()).map(|r| r.version_id)
}

/// Reads `id` through `store` until it answers `wanted` or `limit` passes;
/// returns how long it took.
async fn until(store: &Arc<dyn Store>, id: &str, wanted: Option<u64>, limit: Duration) -> Duration {
    let started = Clock::now();
    loop {
        let seen = version_of(store, id).await;
        if seen == wanted {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "still {seen:?} after {limit:?}, wanted {wanted:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_file_sees_the_first_ones_writes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hearth.db");
    let server: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("open"));
    let other: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).expect("open again"));
    create(&server, "Patient", "p", at(0), vec![]).await;
    // Read twice: the second answer comes from the cache.
    assert_eq!(version_of(&server, "p").await, Some(1));
    assert_eq!(version_of(&server, "p").await, Some(1));

    other.commit(commit(vec![write("Patient", "p", 2, at(1), vec![])])).await.expect("update elsewhere");
    let took = until(&server, "p", Some(2), Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "another process's update took {took:?} to be seen");

    other.commit(commit(vec![delete("Patient", "p", 3, at(2))])).await.expect("delete elsewhere");
    until(&server, "p", None, Duration::from_secs(3)).await;
    // And the other way round, where the writes are this store's own: at once.
    assert_eq!(version_of(&other, "p").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_never_go_back_to_an_older_version() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("hearth.db"), SqliteOptions::default()).expect("open"));
    create(&store, "Patient", "p", at(0), vec![]).await;
    let acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, acknowledged, done) = (Arc::clone(&store), Arc::clone(&acknowledged), Arc::clone(&done));
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    // Whatever was acknowledged before the read started must show.
                    let floor = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
                    let seen = version_of(&store, "p").await.expect("exists");
                    assert!(seen >= floor, "read version {seen} after version {floor} was acknowledged");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for version in 2..=150 {
        store.commit(commit(vec![write("Patient", "p", version, at(version as i64), vec![])])).await.expect("update");
        acknowledged.store(version, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(version_of(&store, "p").await, Some(version), "a writer reads its own write");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }
    assert!(reads > 150, "the readers ran ({reads} reads)");
    assert_eq!(version_of(&store, "p").await, Some(150));
}
