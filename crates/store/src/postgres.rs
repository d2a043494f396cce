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
//! A deadlock (two commits locking the same rows in opposite orders) is
//! retried a few times; a unique violation is answered Conflict.

use crate::sql::{self, Dialect, Kind, SearchSql, SortKinds, Sql, SqlValue};
use crate::{ResourceRow, method_code};
use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use domain::store::{Check, Commit, HistoryQuery, HistoryScope, Page, Reindex, ResourceKey, StoreError, StoredResource, Write};
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
];

/// Connections kept by the pool.
const POOL_SIZE: usize = 16;

/// Attempts of a commit that keeps meeting deadlocks or serialization failures.
const COMMIT_ATTEMPTS: u32 = 10;

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
    /// Interned `search_param` ids per kind, keyed by code; ids are committed
    /// before use, so the cache never holds an id that does not exist.
    params: RwLock<[HashMap<String, i64>; 8]>,
    systems: RwLock<HashMap<String, i64>>,
    /// A snapshot of the two caches for the search builder.
    known: RwLock<Arc<sql::Known>>,
    /// The schema this store lives in: advisory locks are database-wide, so
    /// their keys include it to keep stores in other schemas independent.
    schema: String,
}

impl PostgresStore {
    /// Connects to `url` (a libpq-style URL, e.g.
    /// `postgres://user@host:5432/db?options=-csearch_path%3Dhearth`) and
    /// applies pending migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
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
        let mut store = PostgresStore {
            pool,
            params: RwLock::new(Default::default()),
            systems: RwLock::new(HashMap::new()),
            known: RwLock::new(Arc::default()),
            schema: String::new(),
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
        let rows = client.query("SELECT pid, code, kind FROM search_param", &[]).await.map_err(pg_error)?;
        {
            let mut params = self.params.write();
            for row in rows {
                let (pid, code, kind): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
                if let Some(kind) = Kind::from_code(kind) {
                    params[kind_slot(kind)].insert(code, pid);
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
            for (code, pid) in &params[kind_slot(kind)] {
                known.params.insert((code.clone(), kind), *pid);
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
            for entry in commit.index_entries() {
                let kind = Kind::of(&entry.value);
                let known = self.params.read()[kind_slot(kind)].contains_key(&entry.param);
                if !known {
                    let pid = intern_row(
                        client,
                        "INSERT INTO search_param (code, kind) VALUES ($1, $2) ON CONFLICT (code, kind) DO NOTHING RETURNING pid",
                        "SELECT pid FROM search_param WHERE code = $1 AND kind = $2",
                        &entry.param,
                        Some(kind.code()),
                    )
                    .await?;
                    self.params.write()[kind_slot(kind)].insert(entry.param.clone(), pid);
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
                        None,
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

    fn pid(&self, entry: &IndexEntry) -> Result<i64, StoreError> {
        self.params.read()[kind_slot(Kind::of(&entry.value))]
            .get(&entry.param)
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
        for (key, exclusive) in self.advisory_locks(commit) {
            let statement = if exclusive {
                "SELECT pg_advisory_xact_lock($1)"
            } else {
                "SELECT pg_advisory_xact_lock_shared($1)"
            };
            tx.execute(statement, &[&key]).await.map_err(pg_error)?;
        }
        for check in &commit.checks {
            check_holds(&tx, check).await?;
        }
        // Index rows are written once at the end: the last write of each
        // resource decides them, after the rows of earlier versions are gone.
        let mut replaced: Vec<i64> = Vec::new();
        let mut index: Vec<(i64, &[IndexEntry])> = Vec::new();
        // The same for the full-text rows (fulltext.rs), in the same order.
        let mut texts: Vec<(i64, Option<&TextIndex>)> = Vec::new();
        for write in &commit.writes {
            let (rid, existed) = write_version(&tx, write).await?;
            if existed && !replaced.contains(&rid) {
                replaced.push(rid);
            }
            let entries: &[IndexEntry] = if write.body.is_some() { &write.index } else { &[] };
            let text = write.body.as_ref().map(|_| &write.text);
            match index.iter_mut().position(|(r, _)| *r == rid) {
                Some(slot) => {
                    index[slot].1 = entries;
                    texts[slot].1 = text;
                }
                None => {
                    index.push((rid, entries));
                    texts.push((rid, text));
                }
            }
        }
        for reindex in &commit.reindex {
            if let Some(rid) = reindexed_rid(&tx, reindex).await?
                && !index.iter().any(|(r, _)| *r == rid)
            {
                replaced.push(rid);
                index.push((rid, &reindex.index));
                texts.push((rid, Some(&reindex.text)));
            }
        }
        if !replaced.is_empty() {
            for kind in Kind::ALL {
                let statement = format!("DELETE FROM {} WHERE rid = ANY($1)", kind.table());
                tx.execute(statement.as_str(), &[&replaced]).await.map_err(pg_error)?;
            }
        }
        self.insert_index(&tx, &index).await?;
        crate::fulltext::postgres_replace(&tx, &replaced, &texts).await.map_err(pg_error)?;
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
        index: &[(i64, &[IndexEntry])],
    ) -> Result<(), StoreError> {
        let mut strings = Columns::default();
        let mut tokens = Columns::default();
        let mut references = Columns::default();
        let mut dates = Columns::default();
        let mut numbers = Columns::default();
        let mut quantities = Columns::default();
        let mut uris = Columns::default();
        let mut composites = CompositeColumns::default();
        for (rid, entries) in index {
            for entry in *entries {
                let pid = self.pid(entry)?;
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

async fn intern_row(
    client: &deadpool_postgres::Client,
    insert: &str,
    select: &str,
    text: &str,
    kind: Option<i64>,
) -> Result<i64, StoreError> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&text];
    if let Some(kind) = &kind {
        params.push(kind);
    }
    if let Some(row) = client.query_opt(insert, &params).await.map_err(pg_error)? {
        return Ok(row.get(0));
    }
    // Someone else interned it first; it is committed (the insert waited).
    Ok(client.query_one(select, &params).await.map_err(pg_error)?.get(0))
}

/// The key of a resource still at the version a [`Reindex`] was made from
/// (locked until commit), or `None` when it has moved on or was deleted.
async fn reindexed_rid(tx: &deadpool_postgres::Transaction<'_>, reindex: &Reindex) -> Result<Option<i64>, StoreError> {
    let version = i64::try_from(reindex.version_id).map_err(|_| StoreError::Conflict("version number out of range".into()))?;
    let select = tx
        .prepare_cached("SELECT rid FROM resource WHERE type = $1 AND id = $2 AND version = $3 AND deleted = 0 FOR UPDATE")
        .await
        .map_err(pg_error)?;
    let row = tx.query_opt(&select, &[&reindex.resource_type, &reindex.id, &version]).await.map_err(pg_error)?;
    Ok(row.map(|r| r.get(0)))
}

/// Writes one version row (and the resource row), checking that it is the
/// next version. Returns the resource's key and whether it existed before.
async fn write_version(tx: &deadpool_postgres::Transaction<'_>, write: &Write) -> Result<(i64, bool), StoreError> {
    let version = i64::try_from(write.version_id)
        .map_err(|_| StoreError::Conflict("version number out of range".into()))?;
    let deleted = i64::from(write.body.is_none());
    let last_updated = write.last_updated.micros();
    let select = tx
        .prepare_cached("SELECT rid, version FROM resource WHERE type = $1 AND id = $2 FOR UPDATE")
        .await
        .map_err(pg_error)?;
    let existing = tx.query_opt(&select, &[&write.resource_type, &write.id]).await.map_err(pg_error)?;
    let (rid, existed) = match existing {
        None => {
            if version != 1 {
                return Err(StoreError::Conflict(format!(
                    "{} does not exist; its first version must be 1",
                    write.resource_type
                )));
            }
            let insert = tx
                .prepare_cached(
                    "INSERT INTO resource (type, id, version, last_updated, deleted) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING rid",
                )
                .await
                .map_err(pg_error)?;
            let row = tx
                .query_one(&insert, &[&write.resource_type, &write.id, &version, &last_updated, &deleted])
                .await
                .map_err(pg_error)?;
            (row.get::<_, i64>(0), false)
        }
        Some(row) => {
            let rid: i64 = row.get(0);
            let current: i64 = row.get(1);
            if version != current + 1 {
                return Err(StoreError::Conflict(format!(
                    "{} is at version {current}; version {version} is not the next",
                    write.resource_type
                )));
            }
            let update = tx
                .prepare_cached("UPDATE resource SET version = $1, last_updated = $2, deleted = $3 WHERE rid = $4")
                .await
                .map_err(pg_error)?;
            tx.execute(&update, &[&version, &last_updated, &deleted, &rid]).await.map_err(pg_error)?;
            (rid, true)
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
    Ok((rid, existed))
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
}
