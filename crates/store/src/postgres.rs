//! PostgreSQL backend: a deadpool of tokio-postgres connections; every commit
//! is one READ COMMITTED transaction made race-free by explicit locks.
//!
//! Race freedom:
//! - Version checks and writes lock the resource row (`SELECT ... FOR
//!   UPDATE`), so a concurrent writer waits and then sees the new version; two
//!   creates of the same new resource meet at the unique (type, id) key.
//! - Matches checks (conditional create/update/delete) need more: the
//!   resources that would match may not exist yet. Every commit takes, before
//!   anything else, a transaction-scoped advisory lock per resource type it
//!   writes: shared for plain writes, exclusive for a type a Matches check
//!   queries. So while a conditional commit checks and writes, no other writer
//!   of that type is in flight, and plain writes never wait for each other.
//!   (SERIALIZABLE would do the same, but its page-level predicate locks make
//!   unrelated concurrent creates fail and retry.)
//!
//! - System records are locked (`SELECT ... FOR UPDATE`) before their
//!   compare-and-swap is checked; two creates of one record meet at its
//!   primary key.
//! - Audit entries: a commit that appends locks the one row of `audit_head`
//!   (the last entry's seq and hash) as its last step and moves it on, so
//!   appends from every process sharing the database are numbered 1, 2, 3...
//!   and linked one after another, and a rolled back commit leaves no gap.
//!   That lock is held until the commit is durable, so appends run one
//!   commit (one WAL flush) at a time: audit-only commits (the audit of
//!   reads) are therefore queued to one task per store that appends all
//!   those waiting in one transaction (group commit).
//!
//! A deadlock (two commits locking the same rows in opposite orders) is
//! retried a few times; a unique violation is answered Conflict.

use crate::sql::{self, Dialect, Kind, SearchSql, SortKinds, Sql, SqlValue};
use crate::{ResourceRow, method_code};
use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use domain::audit::{AuditChain, AuditEntry, AuditQuery, AuditRecord};
use domain::store::{
    Check, Commit, ContainedIndex, HistoryQuery, HistoryScope, Page, Reindex, ResourceKey, StoreError, StoredResource,
    SysRecord, SysWrite, Write,
};
use fhir::instant::Instant;
use fhir::search::query::{SearchQuery, TotalMode};
use fhir::search::text::TextIndex;
use fhir::search::{IndexEntry, IndexValue};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{GenericClient, IsolationLevel, NoTls, Row};

/// The schema migrations of this backend, applied in order at connect and
/// recorded in `schema_version`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (3, include_str!("../migrations/postgres/0003_composite.sql")),
    (4, include_str!("../migrations/postgres/0004_text.sql")),
    (5, include_str!("../migrations/postgres/0005_audit.sql")),
    (8, include_str!("../migrations/postgres/0008_typed_params.sql")),
    (9, include_str!("../migrations/postgres/0009_patient_token_keys.sql")),
    (10, include_str!("../migrations/postgres/0010_search_param_code.sql")),
    (11, include_str!("../migrations/postgres/0011_contained.sql")),
    (12, include_str!("../migrations/postgres/0012_index_only_lookups.sql")),
    (13, include_str!("../migrations/postgres/0013_combined_params.sql")),
];

/// `ANALYZE` of the tables searches read, in the store's schema.
const SEARCHED_TABLES_ANALYZE: &str = "ANALYZE resource, resource_version, search_param, term_system, idx_string, \
     idx_token, idx_reference, idx_date, idx_number, idx_quantity, idx_uri, idx_composite, idx_patient_token, idx_text";

/// Connections kept by the pool.
const POOL_SIZE: usize = 16;

/// Attempts of a commit that keeps meeting deadlocks or serialization failures.
const COMMIT_ATTEMPTS: u32 = 10;

/// The most audit-only commits the appender joins into one transaction.
const MAX_AUDIT_BATCH: usize = 512;

/// How a retryable failure's Conflict message starts.
const TRANSIENT_CONFLICT: &str = "transient conflict";

/// Advisory lock key namespaces, mixed into the key hash.
const LOCK_TYPE: &str = "hearth:type";
/// Taken by every commit (shared) and by a system-wide Matches check
/// (exclusive), whose query spans all types.
const LOCK_ALL: &str = "hearth:all";

/// A [`domain::Store`] in a PostgreSQL database (the schema is the first one
/// on the connection's `search_path`).
pub struct PostgresStore {
    pool: Pool,
    /// Interned `search_param` ids per kind, keyed by (resource type, code);
    /// ids are committed before use, so the cache never holds an id that
    /// does not exist.
    params: RwLock<[HashMap<(String, String), i64>; 8]>,
    systems: RwLock<HashMap<String, i64>>,
    /// A snapshot of the two caches for the search builder.
    known: RwLock<Arc<sql::Known>>,
    /// The schema this store lives in: advisory locks are database-wide, so
    /// their keys include it to keep stores in other schemas independent.
    schema: String,
    /// The key of the audit trail's chain digests.
    chain: AuditChain,
    /// Audit-only commits, for the appender task ([`run_appender`]).
    appender: tokio::sync::mpsc::Sender<AuditJob>,
}

/// An audit-only commit waiting for the appender.
struct AuditJob {
    records: Vec<AuditRecord>,
    reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// Settings of a [`PostgresStore`] besides its URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The key of the audit trail's chain digests (domain::audit).
    pub audit_chain: AuditChain,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions { audit_chain: AuditChain::random() }
    }
}

impl PostgresStore {
    /// Connects to `url` (a libpq-style URL, e.g.
    /// `postgres://user@host:5432/db?options=-csearch_path%3Dhearth`) and
    /// applies pending migrations. The audit chain gets a random key: only
    /// for stores whose trail is never verified (tests).
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_with(url, PgOptions::default()).await
    }

    /// [`PostgresStore::connect`] with settings.
    pub async fn connect_with(url: &str, options: PgOptions) -> Result<PostgresStore, StoreError> {
        // The URL may hold a password: never echo it.
        let config: tokio_postgres::Config =
            url.parse().map_err(|_| StoreError::Unavailable("invalid PostgreSQL URL".into()))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the PostgreSQL pool: {e}")))?;
        // The task ends when the store (the only sender) is dropped.
        let (appender, jobs) = tokio::sync::mpsc::channel(MAX_AUDIT_BATCH * 4);
        tokio::spawn(run_appender(pool.clone(), options.audit_chain.clone(), jobs));
        let mut store = PostgresStore {
            pool,
            params: RwLock::new(Default::default()),
            systems: RwLock::new(HashMap::new()),
            known: RwLock::new(Arc::default()),
            schema: String::new(),
            chain: options.audit_chain,
            appender,
        };
        store.migrate().await?;
        store.load_interned().await?;
        let client = store.client().await?;
        let row = client.query_one("SELECT COALESCE(current_schema(), '')", &[]).await.map_err(pg_error)?;
        drop(client);
        store.schema = row.get(0);
        Ok(store)
    }

    /// Fills the interned-id caches from the tables: searches then bind the
    /// ids as values (see [`sql::Known`]) from the first request on.
    async fn load_interned(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let rows = client.query("SELECT pid, type, code, kind FROM search_param", &[]).await.map_err(pg_error)?;
        {
            let mut params = self.params.write();
            for row in rows {
                let (pid, resource_type, code, kind): (i64, String, String, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
                if let Some(kind) = Kind::from_code(kind) {
                    params[kind_slot(kind)].insert((resource_type, code), pid);
                }
            }
        }
        let rows = client.query("SELECT sid, uri FROM term_system", &[]).await.map_err(pg_error)?;
        {
            let mut systems = self.systems.write();
            for row in rows {
                systems.insert(row.get(1), row.get(0));
            }
        }
        self.refresh_known();
        Ok(())
    }

    /// The interned ids this process knows, for the search builder.
    fn known(&self) -> Arc<sql::Known> {
        Arc::clone(&self.known.read())
    }

    /// Rebuilds the snapshot [`PostgresStore::known`] hands out, after the
    /// caches gained ids (rare: a new parameter code or code system).
    fn refresh_known(&self) {
        let mut known = sql::Known::default();
        let params = self.params.read();
        for kind in Kind::ALL {
            for ((resource_type, code), pid) in &params[kind_slot(kind)] {
                known.params.insert((resource_type.clone(), code.clone(), kind), *pid);
            }
        }
        known.systems = self.systems.read().clone();
        *self.known.write() = Arc::new(known);
    }

    /// The plans PostgreSQL chooses for the page and count statements of
    /// `query` (`EXPLAIN`), with sequential scans disabled: a `Seq Scan` in
    /// the answer means no index can serve the query, whatever the table
    /// sizes. What the plan tests check.
    pub async fn explain(&self, query: &SearchQuery) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.build_transaction().read_only(true).start().await.map_err(pg_error)?;
        tx.batch_execute("SET LOCAL enable_seqscan = off").await.map_err(pg_error)?;
        let kinds = resolve_sort_kinds(&*tx, query).await?;
        let statements = sql::search(Dialect::Postgres, query, &kinds, &self.known());
        let mut lines = Vec::new();
        for statement in [&statements.page, &statements.count] {
            let text = format!("EXPLAIN {}", statement.text);
            for row in tx.query(text.as_str(), &bind(statement)).await.map_err(pg_error)? {
                lines.push(row.get::<_, String>(0));
            }
        }
        tx.rollback().await.map_err(pg_error)?;
        Ok(lines)
    }

    /// [`PostgresStore::explain`] for the statements of an audit search.
    pub async fn explain_audit(&self, query: &AuditQuery) -> Result<Vec<String>, StoreError> {
        let (page, count) = crate::audit::search(Dialect::Postgres, query);
        let mut client = self.client().await?;
        let tx = client.build_transaction().read_only(true).start().await.map_err(pg_error)?;
        tx.batch_execute("SET LOCAL enable_seqscan = off").await.map_err(pg_error)?;
        let mut lines = Vec::new();
        for statement in [&page, &count] {
            let text = format!("EXPLAIN {}", statement.text);
            for row in tx.query(text.as_str(), &bind(statement)).await.map_err(pg_error)? {
                lines.push(row.get::<_, String>(0));
            }
        }
        tx.rollback().await.map_err(pg_error)?;
        Ok(lines)
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        // Several processes may start at once: one migrates, the others wait.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('hearth-migrate:' || COALESCE(current_schema(), '')))", &[])
            .await
            .map_err(pg_error)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(pg_error)?;
        let current: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[]).await.map_err(pg_error)?.get(0);
        let latest = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
        if current > latest {
            return Err(StoreError::Internal(format!(
                "database schema version {current} is newer than this build supports ({latest})"
            )));
        }
        for (version, script) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            tx.batch_execute(script).await.map_err(pg_error)?;
            tx.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)", &[
                version,
                &Instant::now().micros(),
            ])
            .await
            .map_err(pg_error)?;
            tracing::info!(version, "applied postgres migration");
        }
        tx.commit().await.map_err(pg_error)
    }

    /// Interns every parameter code and system of `commit`, each in its own
    /// short autocommit statement, before the commit's transaction starts.
    async fn intern(&self, client: &deadpool_postgres::Client, commit: &Commit) -> Result<(), StoreError> {
        let mut grew = false;
        {
            let typed: Vec<(std::borrow::Cow<'_, str>, &IndexEntry)> = sql::typed_index_entries(commit).collect();
            for (resource_type, entry) in typed {
                let kind = Kind::of(&entry.value);
                let key = (resource_type.clone().into_owned(), entry.param.clone());
                let known = self.params.read()[kind_slot(kind)].contains_key(&key);
                if !known {
                    let pid = intern_param(client, &resource_type, &entry.param, kind).await?;
                    self.params.write()[kind_slot(kind)].insert(key, pid);
                    grew = true;
                }
                let system = match &entry.value {
                    IndexValue::Token { system: Some(system), .. } | IndexValue::Quantity { system: Some(system), .. } => {
                        system
                    }
                    _ => continue,
                };
                let known = self.systems.read().contains_key(system);
                if !known {
                    let sid = intern_row(
                        client,
                        "INSERT INTO term_system (uri) VALUES ($1) ON CONFLICT (uri) DO NOTHING RETURNING sid",
                        "SELECT sid FROM term_system WHERE uri = $1",
                        system,
                    )
                    .await?;
                    self.systems.write().insert(system.clone(), sid);
                    grew = true;
                }
            }
        }
        if grew {
            self.refresh_known();
        }
        Ok(())
    }

    fn pid(&self, resource_type: &str, param: &str, kind: Kind) -> Result<i64, StoreError> {
        self.params.read()[kind_slot(kind)]
            .get(&(resource_type.to_owned(), param.to_owned()))
            .copied()
            .ok_or_else(|| StoreError::Internal("search parameter was not interned".into()))
    }

    fn sid(&self, system: Option<&String>) -> Result<Option<i64>, StoreError> {
        match system {
            None => Ok(None),
            Some(system) => self
                .systems
                .read()
                .get(system)
                .copied()
                .map(Some)
                .ok_or_else(|| StoreError::Internal("system was not interned".into())),
        }
    }

    async fn apply(&self, client: &mut deadpool_postgres::Client, commit: &Commit) -> Result<(), StoreError> {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(pg_error)?;
        // A commit of only system records and audit entries touches no
        // resource, so it needs none of the resource locks.
        let touches_resources = !(commit.checks.is_empty() && commit.writes.is_empty() && commit.reindex.is_empty());
        if touches_resources {
            for (key, exclusive) in self.advisory_locks(commit) {
                let statement = if exclusive {
                    "SELECT pg_advisory_xact_lock($1)"
                } else {
                    "SELECT pg_advisory_xact_lock_shared($1)"
                };
                tx.execute(statement, &[&key]).await.map_err(pg_error)?;
            }
        }
        for check in &commit.checks {
            check_holds(&tx, check).await?;
        }
        // Every compare-and-swap is checked before anything is written.
        let sys_versions = check_sys(&tx, &commit.sys).await?;
        // Index rows are written once at the end: the last write of each
        // resource decides them, after the rows of earlier versions are gone.
        let mut replaced: Vec<i64> = Vec::new();
        // (rid, type key, entries, the resource when it has idx_patient_token rows).
        let mut index: Vec<(i64, &str, &[IndexEntry], Option<sql::Owner<'_>>)> = Vec::new();
        // The same for the full-text rows (fulltext.rs), in the same order.
        let mut texts: Vec<(i64, Option<&TextIndex>)> = Vec::new();
        // And for the contained resources (sql.rs), per container.
        let mut contained: Vec<ContainedRows<'_>> = Vec::new();
        // Containers whose previous version had contained rows.
        let mut containing: Vec<i64> = Vec::new();
        for write in &commit.writes {
            let (rid, existed, had_contained) = write_version(&tx, write).await?;
            if existed && !replaced.contains(&rid) {
                replaced.push(rid);
            }
            if had_contained && !containing.contains(&rid) {
                containing.push(rid);
            }
            let entries: &[IndexEntry] = if write.body.is_some() { &write.index } else { &[] };
            let text = write.body.as_ref().map(|_| &write.text);
            let rows = ContainedRows {
                container: rid,
                resource_type: &write.resource_type,
                id: &write.id,
                version: i64::try_from(write.version_id).unwrap_or(i64::MAX),
                last_updated: write.last_updated.micros(),
                contained: if write.body.is_some() { &write.contained } else { &[] },
            };
            match index.iter_mut().position(|(r, _, _, _)| *r == rid) {
                Some(slot) => {
                    index[slot].2 = entries;
                    index[slot].3 = Some(sql::Owner { resource_type: &write.resource_type, id: &write.id, contained: rows.contained });
                    texts[slot].1 = text;
                    contained[slot] = rows;
                }
                None => {
                    let owner = sql::Owner { resource_type: &write.resource_type, id: &write.id, contained: rows.contained };
                    index.push((rid, write.resource_type.as_str(), entries, Some(owner)));
                    texts.push((rid, text));
                    contained.push(rows);
                }
            }
        }
        for reindex in &commit.reindex {
            if let Some((rid, last_updated, container)) = reindexed_rid(&tx, reindex).await?
                && !index.iter().any(|(r, _, _, _)| *r == rid)
            {
                replaced.push(rid);
                if sql::is_containing(container) {
                    containing.push(rid);
                }
                let owner = sql::Owner { resource_type: &reindex.resource_type, id: &reindex.id, contained: &reindex.contained };
                index.push((rid, reindex.resource_type.as_str(), &reindex.index, Some(owner)));
                texts.push((rid, Some(&reindex.text)));
                contained.push(ContainedRows {
                    container: rid,
                    resource_type: &reindex.resource_type,
                    id: &reindex.id,
                    version: i64::try_from(reindex.version_id).unwrap_or(i64::MAX),
                    last_updated,
                    contained: &reindex.contained,
                });
            }
        }
        // The rows of what the replaced versions contained go with them.
        let mut gone: Vec<i64> = replaced.clone();
        if !containing.is_empty() {
            let delete = tx
                .prepare_cached("DELETE FROM resource WHERE container = ANY($1) RETURNING rid")
                .await
                .map_err(pg_error)?;
            gone.extend(tx.query(&delete, &[&containing]).await.map_err(pg_error)?.iter().map(|row| row.get::<_, i64>(0)));
        }
        if !gone.is_empty() {
            for table in Kind::ALL.iter().map(|k| k.table()).chain(["idx_patient_token"]) {
                let statement = format!("DELETE FROM {table} WHERE rid = ANY($1)");
                tx.execute(statement.as_str(), &[&gone]).await.map_err(pg_error)?;
            }
        }
        let keys: Vec<String> =
            contained.iter().flat_map(|rows| rows.contained.iter().map(|c| sql::contained_type_key(&c.resource_type))).collect();
        for (rid, key, resource) in insert_contained(&tx, &contained, &keys).await? {
            index.push((rid, key, &resource.index, None));
            texts.push((rid, Some(&resource.text)));
        }
        self.insert_index(&tx, &index).await?;
        crate::fulltext::postgres_replace(&tx, &gone, &texts).await.map_err(pg_error)?;
        for (write, version) in commit.sys.iter().zip(sys_versions) {
            write_sys(&tx, write, version).await?;
        }
        // Last, so the head stays locked only while the commit finishes.
        append_audit(&tx, &self.chain, commit.audit.iter()).await?;
        tx.commit().await.map_err(pg_error)
    }


    /// The advisory locks a commit takes, in ascending key order (one global
    /// order, so commits cannot deadlock on them), each once, exclusive when
    /// any reason wants it exclusive.
    fn advisory_locks(&self, commit: &Commit) -> Vec<(i64, bool)> {
        let mut locks: Vec<(i64, bool)> = vec![(self.lock_key(LOCK_ALL, ""), false)];
        for write in &commit.writes {
            locks.push((self.lock_key(LOCK_TYPE, &write.resource_type), false));
        }
        for reindex in &commit.reindex {
            locks.push((self.lock_key(LOCK_TYPE, &reindex.resource_type), false));
        }
        for check in &commit.checks {
            match check {
                Check::Matches { query, .. } => match &query.resource_type {
                    Some(resource_type) => locks.push((self.lock_key(LOCK_TYPE, resource_type), true)),
                    None => locks.push((self.lock_key(LOCK_ALL, ""), true)),
                },
                // "Does not exist" cannot be row-locked: hold off creators of
                // the type unless this commit writes the resource itself (then
                // the unique key decides).
                Check::Version { resource_type, id, expected: None }
                    if !commit.writes.iter().any(|w| &w.resource_type == resource_type && &w.id == id) =>
                {
                    locks.push((self.lock_key(LOCK_TYPE, resource_type), true));
                }
                Check::Version { .. } => {}
            }
        }
        // Exclusive sorts after shared for the same key; keep the last.
        locks.sort_unstable();
        let mut merged: Vec<(i64, bool)> = Vec::with_capacity(locks.len());
        for (key, exclusive) in locks {
            match merged.last_mut() {
                Some(last) if last.0 == key => last.1 |= exclusive,
                _ => merged.push((key, exclusive)),
            }
        }
        merged
    }

    /// A 64-bit advisory lock key (FNV-1a) of the schema, namespace and name.
    /// A collision only makes two unrelated commits wait for each other.
    fn lock_key(&self, namespace: &str, name: &str) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [self.schema.as_str(), namespace, name] {
            for byte in part.bytes().chain(std::iter::once(0)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }

    /// Inserts all index rows of a commit, one UNNEST statement per table.
    async fn insert_index(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        index: &[(i64, &str, &[IndexEntry], Option<sql::Owner<'_>>)],
    ) -> Result<(), StoreError> {
        let mut strings = Columns::default();
        let mut tokens = Columns::default();
        let mut references = Columns::default();
        let mut dates = Columns::default();
        let mut numbers = Columns::default();
        let mut quantities = Columns::default();
        let mut uris = Columns::default();
        let mut composites = CompositeColumns::default();
        let mut patient_tokens = PatientTokenColumns::default();
        for (rid, resource_type, entries, owner) in index {
            let patient_rows = owner.as_ref().map(|owner| sql::patient_tokens(entries, owner)).unwrap_or_default();
            for row in patient_rows {
                patient_tokens.rid.push(*rid);
                patient_tokens.pid.push(self.pid(resource_type, row.param, Kind::Token)?);
                patient_tokens.patient.push(row.patient.into_owned());
                patient_tokens.sid.push(match row.system {
                    Some(system) => self.sid(Some(&system.to_owned()))?.unwrap_or(0),
                    None => 0,
                });
                patient_tokens.code.push(row.code.to_owned());
                patient_tokens.via.push(row.via);
                patient_tokens.date_low.push(row.date_low);
                patient_tokens.date_high.push(row.date_high);
            }
            for entry in *entries {
                let pid = self.pid(resource_type, &entry.param, Kind::of(&entry.value))?;
                match &entry.value {
                    IndexValue::String { normalized, exact } => {
                        strings.key(*rid, pid);
                        strings.text_a.push(Some(normalized.clone()));
                        strings.text_b.push(Some(exact.clone()));
                    }
                    IndexValue::Token { system, code, text } => {
                        tokens.key(*rid, pid);
                        tokens.sid.push(self.sid(system.as_ref())?);
                        tokens.text_a.push(code.clone());
                        tokens.text_b.push(text.as_deref().map(fhir::search::normalize_string));
                    }
                    IndexValue::Reference { target_type, target_id, url } => {
                        references.key(*rid, pid);
                        references.text_a.push(target_type.clone());
                        references.text_b.push(target_id.clone());
                        references.text_c.push(Some(url.clone()));
                    }
                    IndexValue::Date { low, high } => {
                        dates.key(*rid, pid);
                        dates.int_low.push(*low);
                        dates.int_high.push(*high);
                    }
                    IndexValue::Number { low, high } => {
                        numbers.key(*rid, pid);
                        numbers.real_low.push(*low);
                        numbers.real_high.push(*high);
                    }
                    IndexValue::Quantity { low, high, system, code } => {
                        quantities.key(*rid, pid);
                        quantities.real_low.push(*low);
                        quantities.real_high.push(*high);
                        quantities.sid.push(self.sid(system.as_ref())?);
                        quantities.text_a.push(code.clone());
                    }
                    IndexValue::Uri { value } => {
                        uris.key(*rid, pid);
                        uris.text_a.push(Some(value.clone()));
                    }
                    IndexValue::Composite(parts) => composites.push(*rid, pid, parts),
                }
            }
        }
        let batches: [(&Columns, &str, Vec<&(dyn ToSql + Sync)>); 7] = [
            (
                &strings,
                "INSERT INTO idx_string (rid, pid, normalized, exact) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[])",
                vec![&strings.rid, &strings.pid, &strings.text_a, &strings.text_b],
            ),
            (
                &tokens,
                "INSERT INTO idx_token (rid, pid, sid, code, text) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[])",
                vec![&tokens.rid, &tokens.pid, &tokens.sid, &tokens.text_a, &tokens.text_b],
            ),
            (
                &references,
                "INSERT INTO idx_reference (rid, pid, target_type, target_id, url) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[])",
                vec![&references.rid, &references.pid, &references.text_a, &references.text_b, &references.text_c],
            ),
            (
                &dates,
                "INSERT INTO idx_date (rid, pid, low, high) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])",
                vec![&dates.rid, &dates.pid, &dates.int_low, &dates.int_high],
            ),
            (
                &numbers,
                "INSERT INTO idx_number (rid, pid, low, high) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::FLOAT8[], $4::FLOAT8[])",
                vec![&numbers.rid, &numbers.pid, &numbers.real_low, &numbers.real_high],
            ),
            (
                &quantities,
                "INSERT INTO idx_quantity (rid, pid, low, high, sid, code) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::FLOAT8[], $4::FLOAT8[], $5::BIGINT[], $6::TEXT[])",
                vec![
                    &quantities.rid,
                    &quantities.pid,
                    &quantities.real_low,
                    &quantities.real_high,
                    &quantities.sid,
                    &quantities.text_a,
                ],
            ),
            (
                &uris,
                "INSERT INTO idx_uri (rid, pid, value) SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[])",
                vec![&uris.rid, &uris.pid, &uris.text_a],
            ),
        ];
        for (columns, statement, params) in batches {
            if columns.rid.is_empty() {
                continue;
            }
            let prepared = tx.prepare_cached(statement).await.map_err(pg_error)?;
            tx.execute(&prepared, &params).await.map_err(pg_error)?;
        }
        if !composites.rid.is_empty() {
            let c = &composites;
            let params: [&(dyn ToSql + Sync); 14] = [
                &c.rid, &c.pid, &c.s[0], &c.c[0], &c.l[0], &c.h[0], &c.s[1], &c.c[1], &c.l[1], &c.h[1], &c.s[2], &c.c[2],
                &c.l[2], &c.h[2],
            ];
            let prepared = tx.prepare_cached(INSERT_COMPOSITE).await.map_err(pg_error)?;
            tx.execute(&prepared, &params).await.map_err(pg_error)?;
        }
        if !patient_tokens.rid.is_empty() {
            let c = &patient_tokens;
            let params: [&(dyn ToSql + Sync); 8] =
                [&c.rid, &c.pid, &c.patient, &c.sid, &c.code, &c.via, &c.date_low, &c.date_high];
            let prepared = tx
                .prepare_cached(
                    "INSERT INTO idx_patient_token (rid, pid, patient, sid, code, via, date_low, date_high, id, last_updated) \
                     SELECT u.rid, u.pid, u.patient, u.sid, u.code, u.via, u.date_low, u.date_high, r.id, r.last_updated \
                     FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[], \
                     $7::BIGINT[], $8::BIGINT[]) AS u(rid, pid, patient, sid, code, via, date_low, date_high) \
                     JOIN resource r ON r.rid = u.rid",
                )
                .await
                .map_err(pg_error)?;
            tx.execute(&prepared, &params).await.map_err(pg_error)?;
        }
        Ok(())
    }

    /// Runs a search or history statement pair, counting in the same snapshot
    /// when a total is wanted.
    async fn run_paged(
        &self,
        statements: impl FnOnce(&SortKinds) -> SearchSql,
        query: Option<&SearchQuery>,
        with_total: bool,
    ) -> Result<Page<StoredResource>, StoreError> {
        let mut client = self.client().await?;
        if !with_total {
            let kinds = match query {
                Some(query) => resolve_sort_kinds(&**client, query).await?,
                None => SortKinds::new(),
            };
            let statements = statements(&kinds);
            let items = query_resources(&**client, &statements.page).await?;
            return Ok(Page { items, total: None });
        }
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let kinds = match query {
            Some(query) => resolve_sort_kinds(&*tx, query).await?,
            None => SortKinds::new(),
        };
        let statements = statements(&kinds);
        let items = query_resources(&*tx, &statements.page).await?;
        let total = query_count(&*tx, &statements.count).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Page { items, total: Some(total) })
    }
}

/// Appends audit records after the head stored in `audit_head` (locked
/// until the transaction ends), numbering and linking them.
async fn append_audit<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    chain: &AuditChain,
    records: impl ExactSizeIterator<Item = &'a AuditRecord>,
) -> Result<(), StoreError> {
    if records.len() == 0 {
        return Ok(());
    }
    let lock = tx.prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE").await.map_err(pg_error)?;
    let row = tx
        .query_opt(&lock, &[])
        .await
        .map_err(pg_error)?
        .ok_or_else(|| StoreError::Internal("the audit_head row is missing".into()))?;
    let (mut seq, mut hash): (i64, String) = (row.get(0), row.get(1));
    let mut rows = AuditRows::default();
    for record in records {
        let columns = crate::audit::EntryColumns::of(record);
        seq += 1;
        hash = chain.link(&hash, crate::audit::version(seq)?, &columns.record);
        for patient in &columns.more_patients {
            rows.extra_patient.push((*patient).to_string());
            rows.extra_seq.push(seq);
        }
        rows.seq.push(seq);
        rows.at.push(columns.at);
        rows.who.push(columns.who.to_string());
        rows.patient.push(columns.patient.map(str::to_string));
        rows.action.push(columns.action.to_string());
        rows.event.push(columns.event.to_string());
        rows.resource_type.push(columns.resource_type.map(str::to_string));
        rows.outcome.push(columns.outcome);
        rows.record.push(columns.record);
        rows.hash.push(hash.clone());
    }
    let append = tx.prepare_cached(APPEND_AUDIT).await.map_err(pg_error)?;
    let r = &rows;
    tx.execute(&append, &[
        &r.seq,
        &r.at,
        &r.who,
        &r.patient,
        &r.action,
        &r.event,
        &r.resource_type,
        &r.outcome,
        &r.record,
        &r.hash,
        &r.extra_patient,
        &r.extra_seq,
        &seq,
        &hash,
    ])
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Appends the audit-only commits queued to a store: all those waiting, up
/// to [`MAX_AUDIT_BATCH`], in one transaction, while the next ones queue.
async fn run_appender(pool: Pool, chain: AuditChain, mut jobs: tokio::sync::mpsc::Receiver<AuditJob>) {
    let mut batch: Vec<AuditJob> = Vec::with_capacity(MAX_AUDIT_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_AUDIT_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = append_batch(&pool, &chain, &batch).await;
        if let Err(error) = &result {
            tracing::warn!(%error, commits = batch.len(), "postgres audit append failed");
        }
        for job in batch.drain(..) {
            let _ = job.reply.send(result.clone());
        }
    }
}

async fn append_batch(pool: &Pool, chain: &AuditChain, batch: &[AuditJob]) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))?;
    let mut attempt = 1;
    loop {
        let result = async {
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()
                .await
                .map_err(pg_error)?;
            let records: Vec<&AuditRecord> = batch.iter().flat_map(|job| &job.records).collect();
            append_audit(&tx, chain, records.into_iter()).await?;
            tx.commit().await.map_err(pg_error)
        }
        .await;
        match result {
            Err(StoreError::Conflict(message)) if message.starts_with(TRANSIENT_CONFLICT) && attempt < COMMIT_ATTEMPTS => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// One statement that appends audit entries (and their extra patients) and
/// moves the head on.
const APPEND_AUDIT: &str = "WITH entries AS (\
     INSERT INTO audit_entry (seq, at, who, patient, action, event, resource_type, outcome, record, hash) \
     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], \
     $8::BIGINT[], $9::TEXT[], $10::TEXT[])), \
     patients AS (INSERT INTO audit_patient (patient, seq) SELECT * FROM UNNEST($11::TEXT[], $12::BIGINT[])) \
     UPDATE audit_head SET seq = $13, hash = $14 WHERE id = 1";

/// Column vectors of audit entries, bound as arrays to UNNEST.
#[derive(Default)]
struct AuditRows {
    seq: Vec<i64>,
    at: Vec<i64>,
    who: Vec<String>,
    patient: Vec<Option<String>>,
    action: Vec<String>,
    event: Vec<String>,
    resource_type: Vec<Option<String>>,
    outcome: Vec<i64>,
    record: Vec<String>,
    hash: Vec<String>,
    extra_patient: Vec<String>,
    extra_seq: Vec<i64>,
}

/// Locks the system records a commit writes (in key order, so commits
/// cannot deadlock on them) and checks every compare-and-swap. Returns, per
/// write, the version it stores (`None` for a delete).
async fn check_sys(tx: &deadpool_postgres::Transaction<'_>, writes: &[SysWrite]) -> Result<Vec<Option<u64>>, StoreError> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys: Vec<(&str, &str)> = writes.iter().map(|w| (w.kind.as_str(), w.key.as_str())).collect();
    keys.sort_unstable();
    keys.dedup();
    let select = tx
        .prepare_cached("SELECT version FROM sys_record WHERE kind = $1 AND key = $2 FOR UPDATE")
        .await
        .map_err(pg_error)?;
    let mut stored: HashMap<(&str, &str), Option<u64>> = HashMap::new();
    for (kind, key) in keys {
        let row = tx.query_opt(&select, &[&kind, &key]).await.map_err(pg_error)?;
        let version = row.map(|r| crate::audit::version(r.get(0))).transpose()?;
        stored.insert((kind, key), version);
    }
    crate::audit::check_sys(writes, |kind, key| Ok(stored.get(&(kind, key)).copied().flatten()))
}

/// Writes (at `version`) or deletes (`None`) a system record whose
/// compare-and-swap was checked. A record expected not to exist is
/// inserted, so that a concurrent create of it fails on the primary key.
async fn write_sys(
    tx: &deadpool_postgres::Transaction<'_>,
    write: &SysWrite,
    version: Option<u64>,
) -> Result<(), StoreError> {
    match (&write.json, version) {
        (Some(json), Some(version)) => {
            let version = crate::audit::to_i64(version)?;
            let statement = if write.expected.is_none() {
                "INSERT INTO sys_record (kind, key, version, json) VALUES ($1, $2, $3, $4)"
            } else {
                "UPDATE sys_record SET version = $3, json = $4 WHERE kind = $1 AND key = $2"
            };
            let prepared = tx.prepare_cached(statement).await.map_err(pg_error)?;
            tx.execute(&prepared, &[&write.kind, &write.key, &version, &&**json]).await.map_err(pg_error)?;
        }
        _ => {
            let prepared =
                tx.prepare_cached("DELETE FROM sys_record WHERE kind = $1 AND key = $2").await.map_err(pg_error)?;
            tx.execute(&prepared, &[&write.kind, &write.key]).await.map_err(pg_error)?;
        }
    }
    Ok(())
}

fn sys_record(row: &Row) -> Result<SysRecord, StoreError> {
    let json: String = row.get(2);
    Ok(SysRecord { key: row.get(0), version: crate::audit::version(row.get(1))?, json: Arc::from(json) })
}

async fn audit_rows(client: &impl GenericClient, statement: &Sql) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = client.query(statement.text.as_str(), &bind(statement)).await.map_err(pg_error)?;
    rows.iter().map(|row| crate::audit::entry(row.get(0), row.get(1), row.get(2))).collect()
}

/// Column vectors of one index table's rows, bound as arrays to UNNEST.
#[derive(Default)]
struct Columns {
    rid: Vec<i64>,
    pid: Vec<i64>,
    sid: Vec<Option<i64>>,
    text_a: Vec<Option<String>>,
    text_b: Vec<Option<String>>,
    text_c: Vec<Option<String>>,
    int_low: Vec<i64>,
    int_high: Vec<i64>,
    real_low: Vec<f64>,
    real_high: Vec<f64>,
}

impl Columns {
    fn key(&mut self, rid: i64, pid: i64) {
        self.rid.push(rid);
        self.pid.push(pid);
    }
}

/// Rows of `idx_patient_token`, column by column (sql::patient_tokens).
#[derive(Default)]
struct PatientTokenColumns {
    rid: Vec<i64>,
    pid: Vec<i64>,
    patient: Vec<String>,
    sid: Vec<i64>,
    code: Vec<String>,
    via: Vec<i64>,
    date_low: Vec<Option<i64>>,
    date_high: Vec<Option<i64>>,
}

/// Rows of `idx_composite`: per component, system, code, low and high
/// ([`sql::composite_columns`]).
#[derive(Default)]
struct CompositeColumns {
    rid: Vec<i64>,
    pid: Vec<i64>,
    s: [Vec<Option<String>>; 3],
    c: [Vec<Option<String>>; 3],
    l: [Vec<Option<f64>>; 3],
    h: [Vec<Option<f64>>; 3],
}

impl CompositeColumns {
    fn push(&mut self, rid: i64, pid: i64, parts: &[IndexValue]) {
        self.rid.push(rid);
        self.pid.push(pid);
        for k in 0..3 {
            let (system, code, low, high) = parts.get(k).map_or((None, None, None, None), sql::composite_columns);
            self.s[k].push(system.map(str::to_string));
            self.c[k].push(code.map(str::to_string));
            self.l[k].push(low);
            self.h[k].push(high);
        }
    }
}

const INSERT_COMPOSITE: &str = "INSERT INTO idx_composite (rid, pid, s0, c0, l0, h0, s1, c1, l1, h1, s2, c2, l2, h2) \
     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], \
     $3::TEXT[], $4::TEXT[], $5::FLOAT8[], $6::FLOAT8[], \
     $7::TEXT[], $8::TEXT[], $9::FLOAT8[], $10::FLOAT8[], \
     $11::TEXT[], $12::TEXT[], $13::FLOAT8[], $14::FLOAT8[])";

fn kind_slot(kind: Kind) -> usize {
    (kind.code() - 1) as usize
}

async fn intern_row(client: &deadpool_postgres::Client, insert: &str, select: &str, text: &str) -> Result<i64, StoreError> {
    if let Some(row) = client.query_opt(insert, &[&text]).await.map_err(pg_error)? {
        return Ok(row.get(0));
    }
    // Someone else interned it first; it is committed (the insert waited).
    Ok(client.query_one(select, &[&text]).await.map_err(pg_error)?.get(0))
}

/// The interned id of a search parameter code of a resource type and kind.
async fn intern_param(client: &deadpool_postgres::Client, resource_type: &str, code: &str, kind: Kind) -> Result<i64, StoreError> {
    let kind = kind.code();
    let params: [&(dyn ToSql + Sync); 3] = [&resource_type, &code, &kind];
    let insert = "INSERT INTO search_param (type, code, kind) VALUES ($1, $2, $3) \
                  ON CONFLICT (type, code, kind) DO NOTHING RETURNING pid";
    if let Some(row) = client.query_opt(insert, &params).await.map_err(pg_error)? {
        return Ok(row.get(0));
    }
    let select = "SELECT pid FROM search_param WHERE type = $1 AND code = $2 AND kind = $3";
    Ok(client.query_one(select, &params).await.map_err(pg_error)?.get(0))
}

/// The key, last update and `container` marker (sql.rs) of a resource still
/// at the version a [`Reindex`] was made from (locked until commit), or
/// `None` when it has moved on or was deleted. The marker is set for the
/// reindexed version's contained resources.
async fn reindexed_rid(
    tx: &deadpool_postgres::Transaction<'_>,
    reindex: &Reindex,
) -> Result<Option<(i64, i64, Option<i64>)>, StoreError> {
    let version = i64::try_from(reindex.version_id).map_err(|_| StoreError::Conflict("version number out of range".into()))?;
    let select = tx
        .prepare_cached(
            "SELECT rid, last_updated, container FROM resource \
             WHERE type = $1 AND id = $2 AND version = $3 AND deleted = 0 FOR UPDATE",
        )
        .await
        .map_err(pg_error)?;
    let row = tx.query_opt(&select, &[&reindex.resource_type, &reindex.id, &version]).await.map_err(pg_error)?;
    let Some(row) = row else { return Ok(None) };
    let (rid, last_updated, container): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
    let marker = sql::containing_marker(!reindex.contained.is_empty());
    if marker != container {
        let update = tx.prepare_cached("UPDATE resource SET container = $2 WHERE rid = $1").await.map_err(pg_error)?;
        tx.execute(&update, &[&rid, &marker]).await.map_err(pg_error)?;
    }
    Ok(Some((rid, last_updated, container)))
}

/// The resources a container's version contains, to be written as rows of
/// their own (sql.rs, "Contained resources").
struct ContainedRows<'a> {
    container: i64,
    resource_type: &'a str,
    id: &'a str,
    version: i64,
    last_updated: i64,
    contained: &'a [ContainedIndex],
}

/// Inserts the rows of the contained resources of `containers` in one
/// statement; `keys` holds their type keys in the same order. Returns each
/// one's new rid with its type key, for its index rows.
async fn insert_contained<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    containers: &[ContainedRows<'a>],
    keys: &'a [String],
) -> Result<Vec<(i64, &'a str, &'a ContainedIndex)>, StoreError> {
    let resources: Vec<(&ContainedRows<'a>, &'a ContainedIndex)> =
        containers.iter().flat_map(|rows| rows.contained.iter().map(move |c| (rows, c))).collect();
    if resources.is_empty() {
        return Ok(Vec::new());
    }
    let mut types: Vec<&str> = Vec::with_capacity(resources.len());
    let mut ids: Vec<String> = Vec::with_capacity(resources.len());
    let mut versions: Vec<i64> = Vec::with_capacity(resources.len());
    let mut times: Vec<i64> = Vec::with_capacity(resources.len());
    let mut owners: Vec<i64> = Vec::with_capacity(resources.len());
    for ((rows, resource), key) in resources.iter().zip(keys) {
        types.push(key);
        ids.push(sql::contained_row_id(rows.resource_type, rows.id, &resource.id));
        versions.push(rows.version);
        times.push(rows.last_updated);
        owners.push(rows.container);
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO resource (type, id, version, last_updated, deleted, container) \
             SELECT t, i, v, u, $5, c FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[], $6::BIGINT[]) \
             AS x(t, i, v, u, c) RETURNING rid, type, id",
        )
        .await
        .map_err(pg_error)?;
    let rows = tx.query(&insert, &[&types, &ids, &versions, &times, &sql::CONTAINED, &owners]).await.map_err(pg_error)?;
    // RETURNING follows no promised order: rows are matched by (type, id).
    let position: HashMap<(&str, &str), usize> =
        keys.iter().zip(&ids).enumerate().map(|(n, (key, id))| ((key.as_str(), id.as_str()), n)).collect();
    let mut out = Vec::with_capacity(resources.len());
    for row in rows {
        let (rid, key, id): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
        let Some(&n) = position.get(&(key.as_str(), id.as_str())) else {
            return Err(StoreError::Internal("a contained resource row went missing".into()));
        };
        out.push((rid, keys[n].as_str(), resources[n].1));
    }
    Ok(out)
}

/// Writes one version row (and the resource row), checking that it is the
/// next version. Returns the resource's key, whether it existed before, and
/// whether its previous version had contained rows (sql.rs).
async fn write_version(tx: &deadpool_postgres::Transaction<'_>, write: &Write) -> Result<(i64, bool, bool), StoreError> {
    let version = i64::try_from(write.version_id)
        .map_err(|_| StoreError::Conflict("version number out of range".into()))?;
    let deleted = i64::from(write.body.is_none());
    let last_updated = write.last_updated.micros();
    let marker = sql::containing_marker(write.body.is_some() && !write.contained.is_empty());
    let select = tx
        .prepare_cached("SELECT rid, version, container FROM resource WHERE type = $1 AND id = $2 FOR UPDATE")
        .await
        .map_err(pg_error)?;
    let existing = tx.query_opt(&select, &[&write.resource_type, &write.id]).await.map_err(pg_error)?;
    let (rid, existed, containing) = match existing {
        None => {
            if version != 1 {
                return Err(StoreError::Conflict(format!(
                    "{} does not exist; its first version must be 1",
                    write.resource_type
                )));
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO resource (type, id, version, last_updated, deleted, container) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING rid",
                )
                .await
                .map_err(pg_error)?;
            let row = tx
                .query_one(&insert, &[&write.resource_type, &write.id, &version, &last_updated, &deleted, &marker])
                .await
                .map_err(pg_error)?;
            (row.get::<_, i64>(0), false, false)
        }
        Some(row) => {
            let rid: i64 = row.get(0);
            let current: i64 = row.get(1);
            let container: Option<i64> = row.get(2);
            if version != current + 1 {
                return Err(StoreError::Conflict(format!(
                    "{} is at version {current}; version {version} is not the next",
                    write.resource_type
                )));
            }
            let update = tx
                .prepare_cached(
                    "UPDATE resource SET version = $1, last_updated = $2, deleted = $3, container = $5 WHERE rid = $4",
                )
                .await
                .map_err(pg_error)?;
            tx.execute(&update, &[&version, &last_updated, &deleted, &rid, &marker]).await.map_err(pg_error)?;
            (rid, true, sql::is_containing(container))
        }
    };
    let insert = tx
        .prepare_cached(
            "INSERT INTO resource_version (rid, type, version, last_updated, method, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(pg_error)?;
    let body: Option<&str> = write.body.as_deref();
    tx.execute(&insert, &[&rid, &write.resource_type, &version, &last_updated, &method_code(write.method), &body])
        .await
        .map_err(pg_error)?;
    Ok((rid, existed, containing))
}

async fn check_holds(tx: &deadpool_postgres::Transaction<'_>, check: &Check) -> Result<(), StoreError> {
    match check {
        Check::Version { resource_type, id, expected } => {
            // The row lock keeps the version as checked until commit.
            let statement = tx
                .prepare_cached("SELECT version FROM resource WHERE type = $1 AND id = $2 FOR UPDATE")
                .await
                .map_err(pg_error)?;
            let current: Option<i64> =
                tx.query_opt(&statement, &[resource_type, id]).await.map_err(pg_error)?.map(|row| row.get(0));
            let current = current.and_then(|v| u64::try_from(v).ok());
            if current != *expected {
                return Err(StoreError::Conflict(format!(
                    "{resource_type} is at version {current:?}, expected {expected:?}"
                )));
            }
            Ok(())
        }
        Check::Matches { query, ids } => {
            let statement = sql::matching_ids(Dialect::Postgres, query);
            let rows = tx.query(statement.text.as_str(), &bind(&statement)).await.map_err(pg_error)?;
            let mut found: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
            let mut expected = ids.clone();
            found.sort_unstable();
            expected.sort_unstable();
            expected.dedup();
            if found != expected {
                return Err(StoreError::Conflict(format!(
                    "the matching resources changed ({} found, {} expected)",
                    found.len(),
                    expected.len()
                )));
            }
            Ok(())
        }
    }
}

fn bind(statement: &Sql) -> Vec<&(dyn ToSql + Sync)> {
    statement.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl ToSql for SqlValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlValue::Int(v) => v.to_sql(ty, out),
            SqlValue::Real(v) => v.to_sql(ty, out),
            SqlValue::Text(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <f64 as ToSql>::accepts(ty) || <String as ToSql>::accepts(ty)
    }

    /// Checks the variant, not just the set of accepted types, so an integer
    /// is never sent where text is expected.
    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlValue::Int(v) => v.to_sql_checked(ty, out),
            SqlValue::Real(v) => v.to_sql_checked(ty, out),
            SqlValue::Text(v) => v.to_sql_checked(ty, out),
        }
    }
}

/// Exponential backoff with jitter, so that retried transactions that
/// collided do not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos() % 1_000))
        .unwrap_or(0);
    Duration::from_micros((500u64 << attempt.min(7)) + jitter)
}

fn pg_error(error: tokio_postgres::Error) -> StoreError {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        // Only the message, never DETAIL: it can quote row values.
        let message = format!("postgres {}: {}", code.code(), db.message());
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
            return StoreError::Conflict(format!("{TRANSIENT_CONFLICT} ({message})"));
        }
        if *code == SqlState::UNIQUE_VIOLATION {
            return StoreError::Conflict(message);
        }
        return StoreError::Internal(message);
    }
    if error.is_closed() {
        return StoreError::Unavailable("postgres connection closed".into());
    }
    StoreError::Unavailable(format!("postgres: {error}"))
}

fn resource_row(row: &Row) -> Result<ResourceRow, StoreError> {
    let get = |e: tokio_postgres::Error| StoreError::Internal(format!("postgres row: {e}"));
    let body: Option<&str> = row.try_get(5).map_err(get)?;
    Ok(ResourceRow {
        resource_type: row.try_get(0).map_err(get)?,
        id: row.try_get(1).map_err(get)?,
        version: row.try_get(2).map_err(get)?,
        last_updated: row.try_get(3).map_err(get)?,
        method: row.try_get(4).map_err(get)?,
        body: body.map(Arc::<str>::from),
    })
}

async fn query_resources(client: &impl GenericClient, statement: &Sql) -> Result<Vec<StoredResource>, StoreError> {
    let rows = client.query(statement.text.as_str(), &bind(statement)).await.map_err(pg_error)?;
    rows.iter().map(|row| resource_row(row)?.into_stored()).collect()
}

async fn query_count(client: &impl GenericClient, statement: &Sql) -> Result<u64, StoreError> {
    let row = client.query_one(statement.text.as_str(), &bind(statement)).await.map_err(pg_error)?;
    let count: i64 = row.get(0);
    Ok(u64::try_from(count).unwrap_or(0))
}

async fn resolve_sort_kinds(client: &impl GenericClient, query: &SearchQuery) -> Result<SortKinds, StoreError> {
    let mut kinds = SortKinds::new();
    for param in sql::sort_params_to_resolve(query) {
        let rows = client.query(sql::kinds_sql(Dialect::Postgres).as_str(), &[&param]).await.map_err(pg_error)?;
        let mut resolved: Vec<Kind> = rows.iter().filter_map(|row| Kind::from_code(row.get(0))).collect();
        resolved.sort();
        kinds.insert(param.to_owned(), resolved);
    }
    Ok(kinds)
}

const READ_SQL: &str = "SELECT r.type, r.id, v.version, v.last_updated, v.method, v.body \
     FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version \
     WHERE r.type = $1 AND r.id = $2";

/// The current versions of several (type, id) keys in one statement.
const READ_MANY_SQL: &str = "SELECT r.type, r.id, v.version, v.last_updated, v.method, v.body \
     FROM UNNEST($1::TEXT[], $2::TEXT[]) AS k(type, id) \
     JOIN resource r ON r.type = k.type AND r.id = k.id \
     JOIN resource_version v ON v.rid = r.rid AND v.version = r.version";

const VREAD_SQL: &str = "SELECT r.type, r.id, v.version, v.last_updated, v.method, v.body \
     FROM resource r JOIN resource_version v ON v.rid = r.rid \
     WHERE r.type = $1 AND r.id = $2 AND v.version = $3";

#[async_trait]
impl domain::Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(READ_SQL).await.map_err(pg_error)?;
        let row = client.query_opt(&statement, &[&resource_type, &id]).await.map_err(pg_error)?;
        row.map(|row| resource_row(&row)?.into_stored()).transpose()
    }

    async fn read_many(&self, keys: &[(String, String)]) -> Result<Vec<StoredResource>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (types, ids): (Vec<&str>, Vec<&str>) = keys.iter().map(|(t, i)| (t.as_str(), i.as_str())).unzip();
        let client = self.client().await?;
        let statement = client.prepare_cached(READ_MANY_SQL).await.map_err(pg_error)?;
        let rows = client.query(&statement, &[&types, &ids]).await.map_err(pg_error)?;
        let mut found: HashMap<(String, String), StoredResource> = HashMap::with_capacity(rows.len());
        for row in rows {
            let stored = resource_row(&row)?.into_stored()?;
            found.insert((stored.resource_type.clone(), stored.id.clone()), stored);
        }
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        let Ok(version) = i64::try_from(version_id) else { return Ok(None) };
        let client = self.client().await?;
        let statement = client.prepare_cached(VREAD_SQL).await.map_err(pg_error)?;
        let row = client.query_opt(&statement, &[&resource_type, &id, &version]).await.map_err(pg_error)?;
        row.map(|row| resource_row(&row)?.into_stored()).transpose()
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        if !commit.audit.is_empty()
            && commit.checks.is_empty()
            && commit.writes.is_empty()
            && commit.reindex.is_empty()
            && commit.sys.is_empty()
        {
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.appender
                .send(AuditJob { records: commit.audit, reply })
                .await
                .map_err(|_| StoreError::Unavailable("the postgres audit appender has stopped".into()))?;
            return answer.await.map_err(|_| StoreError::Unavailable("the postgres audit appender has stopped".into()))?;
        }
        let mut client = self.client().await?;
        self.intern(&client, &commit).await?;
        let mut attempt = 1;
        loop {
            match self.apply(&mut client, &commit).await {
                Err(StoreError::Conflict(message))
                    if message.starts_with(TRANSIENT_CONFLICT) && attempt < COMMIT_ATTEMPTS =>
                {
                    tracing::debug!(attempt, "postgres commit met a transient conflict; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> Result<Page<StoredResource>, StoreError> {
        self.run_paged(|_| sql::history(Dialect::Postgres, scope, query), None, true).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<StoredResource>, StoreError> {
        let known = self.known();
        self.run_paged(
            |kinds| sql::search(Dialect::Postgres, query, kinds, &known),
            Some(query),
            query.total != TotalMode::None,
        )
        .await
    }

    async fn search_keys(&self, query: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError> {
        let client = self.client().await?;
        let kinds = resolve_sort_kinds(&**client, query).await?;
        let statement = sql::search_keys(Dialect::Postgres, query, &kinds, &self.known());
        let rows = client.query(statement.text.as_str(), &bind(&statement)).await.map_err(pg_error)?;
        Ok(rows.iter().map(|row| (row.get::<_, String>(0), row.get::<_, String>(1))).collect())
    }

    async fn scan(
        &self,
        resource_type: Option<&str>,
        after: Option<&ResourceKey>,
        limit: usize,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let statement =
            sql::scan(Dialect::Postgres, resource_type, after.map(|(t, i)| (t.as_str(), i.as_str())), limit);
        let client = self.client().await?;
        query_resources(&**client, &statement).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_error)?;
        Ok(())
    }

    async fn refresh_planner_statistics(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        // This schema's tables only (a bare ANALYZE visits every schema).
        client.simple_query(SEARCHED_TABLES_ANALYZE).await.map_err(pg_error)?;
        Ok(())
    }

    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT key, version, json FROM sys_record WHERE kind = $1 AND key = $2")
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&statement, &[&kind, &key]).await.map_err(pg_error)?;
        row.as_ref().map(sys_record).transpose()
    }

    async fn sys_list(&self, kind: &str) -> Result<Vec<SysRecord>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT key, version, json FROM sys_record WHERE kind = $1 ORDER BY key")
            .await
            .map_err(pg_error)?;
        let rows = client.query(&statement, &[&kind]).await.map_err(pg_error)?;
        rows.iter().map(sys_record).collect()
    }

    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let statement = Sql {
            text: "SELECT seq, record, hash FROM audit_entry WHERE seq > $1 ORDER BY seq LIMIT $2".into(),
            params: vec![
                SqlValue::Int(i64::try_from(after).unwrap_or(i64::MAX)),
                SqlValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        };
        let client = self.client().await?;
        audit_rows(&**client, &statement).await
    }

    async fn audit_search(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let (page, count) = crate::audit::search(Dialect::Postgres, query);
        let mut client = self.client().await?;
        // One snapshot: the page and the total see the same entries.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let items = audit_rows(&*tx, &page).await?;
        let total = query_count(&*tx, &count).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Page { items, total: Some(total) })
    }

    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1", &[])
            .await
            .map_err(pg_error)?;
        row.map(|r| Ok((crate::audit::version(r.get(0))?, r.get(1)))).transpose()
    }
}
