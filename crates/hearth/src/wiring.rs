//! Wiring: the chosen storage backend under the Service, and diagnostic logging.

use crate::config::Config;
use crate::keys::{self, Keys};
use anyhow::Context;
use domain::Service;
use domain::store::Store;
use std::sync::Arc;

/// The keys of encryption at rest and of the audit chain (see `keys.rs`),
/// the key file created on first start.
pub fn keys(config: &Config) -> anyhow::Result<Keys> {
    keys::load(config, &crate::config::hearth_env())
}

/// Opens the configured store with its keys: PostgreSQL when a database URL
/// is set, otherwise SQLite in the data directory (created on first start).
pub async fn store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let keys = keys(config)?;
    store_with(config, &keys).await
}

/// Opens the configured store: SQLite encrypted with the database key; on
/// both backends, Binary bodies sealed with the attachment key.
pub async fn store_with(config: &Config, keys: &Keys) -> anyhow::Result<Arc<dyn Store>> {
    store_for(config, keys, Workload::Interactive).await
}

/// What a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A server or an administrative command: the default page caches, a
    /// cache of current versions sized to the machine.
    Interactive,
    /// `hearth migrate`: millions of writes and reads by id in one
    /// process. The embedded store gets large page caches
    /// (the writer's holds the index B-trees it inserts into; SQLCipher
    /// decrypts every page read from the file and cannot map it), filled
    /// only as far as the database is large.
    BulkLoad,
}

/// Page cache of the writer connection in a bulk load, in KiB, at most.
const BULK_WRITER_CACHE_KIB: u32 = 2 * 1024 * 1024;

/// How long a bulk load waits for the write lock another process holds, in
/// milliseconds: a server that opens the store while a first load has
/// deferred its search indexes builds them, holding the lock for as long as
/// that takes (about 34 s for 1,000 migrated patients), and nobody waits on
/// a bulk load's commits but itself.
const BULK_BUSY_TIMEOUT_MS: u32 = 10 * 60 * 1000;
/// Page cache of each reader connection in a bulk load, in KiB, at most.
const BULK_READER_CACHE_KIB: u32 = 256 * 1024;
/// Current resource versions a bulk load's store keeps in memory, in bytes,
/// at most: what the load's read-back reads, the reconciliation reads again
/// right after (from memory, not decrypted from the file a second time).
const BULK_RESOURCE_CACHE_BYTES: usize = 4 << 30;
/// Current resource versions a server's store keeps in memory, in bytes, at
/// most (a twelfth of the machine's memory below 24 GiB).
const SERVE_RESOURCE_CACHE_BYTES: usize = 2 << 30;
/// Memory assumed when the machine's cannot be read (not Linux).
const ASSUMED_MEMORY_BYTES: u64 = 8 << 30;

/// The bulk load's caches for a machine of `memory` bytes: the caps above on
/// 24 GiB and more, and under 30% of the memory in all below that (writer
/// 1/12, resource versions 1/6, each of four readers 1/96 of it), so a small
/// server is not pushed into swap by a migration.
fn bulk_caches(memory: u64) -> (u32, u32, usize) {
    let kib = memory / 1024;
    let writer = u32::try_from(kib / 12).unwrap_or(u32::MAX).min(BULK_WRITER_CACHE_KIB);
    let reader = u32::try_from(kib / 96).unwrap_or(u32::MAX).min(BULK_READER_CACHE_KIB);
    let resources = usize::try_from(memory / 6).unwrap_or(usize::MAX).min(BULK_RESOURCE_CACHE_BYTES);
    (writer, reader, resources)
}

/// The cache of current versions of a server's store on a machine of
/// `memory` bytes: a twelfth of it, at most [`SERVE_RESOURCE_CACHE_BYTES`].
/// It answers reads by id and the pages of searches without decrypting
/// pages (SQLite empties its readers' page caches at every commit), and
/// fills only with what is read.
fn serve_resource_cache(memory: u64) -> usize {
    usize::try_from(memory / 12).unwrap_or(usize::MAX).min(SERVE_RESOURCE_CACHE_BYTES)
}

/// The machine's memory in bytes (`MemTotal` of /proc/meminfo), if known.
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// [`store_with`] for a given workload.
pub async fn store_for(config: &Config, keys: &Keys, workload: Workload) -> anyhow::Result<Arc<dyn Store>> {
    let inner: Arc<dyn Store> = if config.storage.database_url.is_empty() {
        let dir = &config.storage.data_dir;
        keys::create_private_dir(dir)?;
        let path = dir.join("hearth.db");
        let mut options = store::sqlite::SqliteOptions {
            key: Some(keys.database.clone()),
            audit_chain: keys.audit.clone(),
            ..store::sqlite::SqliteOptions::default()
        };
        keys.database_format.apply(&mut options);
        let memory = machine_memory().unwrap_or(ASSUMED_MEMORY_BYTES);
        match workload {
            Workload::Interactive => {
                options.resource_cache_bytes = serve_resource_cache(memory).max(options.resource_cache_bytes);
            }
            Workload::BulkLoad => {
                let (writer, reader, resources) = bulk_caches(memory);
                options.writer_cache_kib = writer.max(options.cache_kib);
                options.cache_kib = reader.max(options.cache_kib);
                options.resource_cache_bytes = resources.max(options.resource_cache_bytes);
                options.checkpoints = store::sqlite::Checkpoints::BULK_LOAD;
                options.busy_timeout_ms = BULK_BUSY_TIMEOUT_MS;
            }
        }
        let store = store::sqlite::SqliteStore::open(&path, options)
            .with_context(|| format!("opening the SQLite store in {}", dir.display()))?;
        Arc::new(store)
    } else {
        let options = store::postgres::PgOptions { audit_chain: keys.audit.clone() };
        let store = store::postgres::PostgresStore::connect_with(&config.storage.database_url, options)
            .await
            .context("connecting to PostgreSQL")?;
        Arc::new(store)
    };
    Ok(Arc::new(store::cipher::EncryptedBinaries::new(inner, keys.attachments.clone())))
}

pub async fn service(config: &Config) -> anyhow::Result<Arc<Service>> {
    service_for(config, Workload::Interactive).await
}

/// [`service`] over a store opened for `workload`.
pub async fn service_for(config: &Config, workload: Workload) -> anyhow::Result<Arc<Service>> {
    let store = store_for(config, &keys(config)?, workload).await?;
    let service = Service::with(
        store,
        Arc::new(domain::service::SystemClock),
        Arc::new(domain::service::UuidIds),
        config.service_config(),
    );
    // Custom SearchParameters activated by an earlier `$reindex` stay in force.
    let rejected = service.activate_search_parameters().await.context("activating custom search parameters")?;
    for r in rejected {
        tracing::warn!(search_parameter = %r.name, reason = %r.issue.diagnostics, "custom search parameter not activated");
    }
    Ok(Arc::new(service))
}

/// Diagnostic logs to stderr. They carry ids, types, counts and durations,
/// never patient data; the audit trail is a separate thing.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_caches_follow_the_machine_memory() {
        // 24 GiB and more: the caps.
        assert_eq!(bulk_caches(24 << 30), (BULK_WRITER_CACHE_KIB, BULK_READER_CACHE_KIB, BULK_RESOURCE_CACHE_BYTES));
        assert_eq!(bulk_caches(256 << 30), (BULK_WRITER_CACHE_KIB, BULK_READER_CACHE_KIB, BULK_RESOURCE_CACHE_BYTES));
        // 4 GiB: under 30% of it with four readers.
        let (writer, reader, resources) = bulk_caches(4 << 30);
        let total = u64::from(writer) * 1024 + 4 * u64::from(reader) * 1024 + resources as u64;
        assert!(total <= (4u64 << 30) * 3 / 10, "{total}");
        assert!(writer >= 300 * 1024 && resources >= 600 << 20, "{writer} {resources}");
    }

    #[test]
    fn a_servers_cache_of_versions_follows_the_machine_memory() {
        assert_eq!(serve_resource_cache(24 << 30), SERVE_RESOURCE_CACHE_BYTES);
        assert_eq!(serve_resource_cache(12 << 30), 1 << 30);
        assert_eq!(serve_resource_cache(1 << 30), (1 << 30) / 12);
    }
}
