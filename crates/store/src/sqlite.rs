//! SQLite backend (the embedded default): one writer thread that group-commits,
//! a pool of reader connections, WAL mode with durable commits.
//!
//! Durability: WAL with `synchronous=FULL` fsyncs the WAL at every commit, so
//! a commit acknowledged to the caller survives a power cut
//! (<https://www.sqlite.org/pragma.html#pragma_synchronous>; NORMAL would only
//! protect against application crashes in WAL mode).
//!
//! Throughput: every commit is one fsync, so the writer thread applies all
//! commits waiting in its queue in ONE SQLite transaction (group commit): each
//! commit runs inside its own SAVEPOINT, so a commit whose check fails is rolled
//! back alone and answered Conflict while the others proceed; then one COMMIT
//! (one fsync) acknowledges them all. Readers run in parallel on their own
//! connections (WAL readers never block on the writer).

use crate::sql::{self, Dialect, Kind, SortKinds, Sql, SqlValue};
use crate::{ResourceRow, method_code};
use async_trait::async_trait;
use domain::store::{
    Check, Commit, HistoryQuery, HistoryScope, Page, StoreError, StoredResource, Write,
};
use fhir::instant::Instant;
use fhir::search::query::{SearchQuery, TotalMode};
use fhir::search::{IndexEntry, IndexValue};
use parking_lot::Mutex;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The schema migrations of this backend, applied in order at open and
/// recorded in `schema_version`.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite/0001_init.sql"))];

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader connections; reads beyond this many wait for a free one.
    pub readers: usize,
    /// The most commits the writer applies in one transaction (one fsync).
    pub max_group_commits: usize,
    /// Page cache of each connection, in KiB.
    pub cache_kib: u32,
    /// How long a connection waits for a lock held by another process
    /// (checkpoints, backups), in milliseconds.
    pub busy_timeout_ms: u32,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        SqliteOptions { readers: (cores * 2).max(4), max_group_commits: 256, cache_kib: 16 * 1024, busy_timeout_ms: 5_000 }
    }
}

/// A [`domain::Store`] in one SQLite database file.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Commits for the writer thread; `None` once shutting down.
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    readers: ReaderPool,
}

struct Job {
    commit: Commit,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending
    /// migrations, and starts the writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let mut conn = open_connection(path, &options, Role::Writer)?;
        migrate(&mut conn)?;
        let readers = ReaderPool {
            path: path.to_path_buf(),
            options: options.clone(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(options.readers.max(1)),
        };
        // Open one reader now so that a bad file fails here, not on first read.
        let first = open_connection(path, &options, Role::Reader)?;
        readers.idle.lock().push(first);

        let (sender, receiver) = mpsc::channel::<Job>(options.max_group_commits.max(1) * 4);
        let writer = Writer::new(conn, options.max_group_commits.max(1));
        let handle = std::thread::Builder::new()
            .name("hearth-sqlite-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Internal(format!("cannot start the sqlite writer thread: {e}")))?;
        Ok(SqliteStore { inner: Arc::new(Inner { jobs: Some(sender), writer: Some(handle), readers }) })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what it has and exit; joining
        // makes sure its connection is closed when the store is gone.
        self.jobs = None;
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
}

/// Opens and configures a connection. The one place connections are made, so
/// that encryption at rest (SQLCipher's `PRAGMA key`, which must be the first
/// statement on a connection) is added here and nowhere else.
fn open_connection(path: &Path, options: &SqliteOptions, role: Role) -> Result<Connection, StoreError> {
    configure(path, options, role).map_err(db_error)?.ok_or_else(|| {
        StoreError::Unavailable("sqlite: the file system does not support WAL mode".into())
    })
}

/// `None` when WAL mode cannot be enabled.
fn configure(path: &Path, options: &SqliteOptions, role: Role) -> rusqlite::Result<Option<Connection>> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_millis(u64::from(options.busy_timeout_ms)))?;
    if role == Role::Writer {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
    }
    // FULL: the WAL is fsync'd at every commit (see the module comment).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_kib))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    if role == Role::Reader {
        conn.pragma_update(None, "query_only", true)?;
    }
    conn.set_prepared_statement_cache_capacity(128);
    Ok(Some(conn))
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db_error)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db_error)?;
    let current: i64 =
        tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0)).map_err(db_error)?;
    let latest = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Internal(format!(
            "database schema version {current} is newer than this build supports ({latest})"
        )));
    }
    for (version, script) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(script).map_err(db_error)?;
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)", params![
            version,
            Instant::now().micros()
        ])
        .map_err(db_error)?;
        tracing::info!(version, "applied sqlite migration");
    }
    tx.commit().map_err(db_error)
}

fn db_error(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &error {
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.code,
                ErrorCode::DiskFull | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::DatabaseBusy
            ) =>
        {
            StoreError::Unavailable(format!("sqlite: {error}"))
        }
        _ => StoreError::Internal(format!("sqlite: {error}")),
    }
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Int(v) => ToSqlOutput::from(*v),
            SqlValue::Real(v) => ToSqlOutput::from(*v),
            SqlValue::Text(v) => ToSqlOutput::from(v.as_str()),
        })
    }
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Conflict("version number out of range".into()))
}

// ---------------------------------------------------------------------------
// Writer

/// The writer thread's state: its connection and the interned ids it has
/// seen committed (or added in the open transaction).
struct Writer {
    conn: Connection,
    max_group: usize,
    /// Interned `search_param` ids per kind, keyed by code.
    params: [HashMap<String, i64>; 7],
    systems: HashMap<String, i64>,
}

impl Writer {
    fn new(conn: Connection, max_group: usize) -> Writer {
        Writer { conn, max_group, params: Default::default(), systems: HashMap::new() }
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut group: Vec<Job> = Vec::with_capacity(self.max_group);
        while let Some(first) = receiver.blocking_recv() {
            group.push(first);
            // Everything that queued up while the previous group was being
            // fsync'd joins this group.
            while group.len() < self.max_group {
                match receiver.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.apply_group(&mut group);
        }
    }

    fn apply_group(&mut self, group: &mut Vec<Job>) {
        let started = std::time::Instant::now();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let error = db_error(e);
            for job in group.drain(..) {
                let _ = job.reply.send(Err(error.clone()));
            }
            return;
        }
        let mut results = Vec::with_capacity(group.len());
        for job in group.iter() {
            results.push(self.intern(&job.commit).and_then(|()| self.apply_isolated(&job.commit)));
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                tracing::debug!(commits = group.len(), micros = started.elapsed().as_micros() as u64, "sqlite group commit");
                for (job, result) in group.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                let error = db_error(e);
                tracing::error!(error = %error, "sqlite group commit failed");
                let _ = self.conn.execute_batch("ROLLBACK");
                // Interned ids added in this transaction are gone with it.
                self.params = Default::default();
                self.systems.clear();
                for job in group.drain(..) {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Applies one commit inside a savepoint, undoing only it on failure.
    fn apply_isolated(&mut self, commit: &Commit) -> Result<(), StoreError> {
        self.conn.execute_batch("SAVEPOINT hearth_commit").map_err(db_error)?;
        match self.apply(commit) {
            Ok(()) => self.conn.execute_batch("RELEASE hearth_commit").map_err(db_error),
            Err(error) => {
                self.conn.execute_batch("ROLLBACK TO hearth_commit; RELEASE hearth_commit").map_err(db_error)?;
                Err(error)
            }
        }
    }

    fn apply(&mut self, commit: &Commit) -> Result<(), StoreError> {
        for check in &commit.checks {
            check_holds(&self.conn, check)?;
        }
        for write in &commit.writes {
            self.write(write)?;
        }
        Ok(())
    }

    /// Makes sure every parameter code and system of the commit has an
    /// interned id. Runs outside the commit's savepoint so that the cache
    /// never holds an id a savepoint rollback removed.
    fn intern(&mut self, commit: &Commit) -> Result<(), StoreError> {
        for write in &commit.writes {
            for entry in &write.index {
                let kind = Kind::of(&entry.value);
                if !self.params[kind_slot(kind)].contains_key(&entry.param) {
                    let pid = intern_row(
                        &self.conn,
                        "INSERT INTO search_param (code, kind) VALUES (?1, ?2) ON CONFLICT (code, kind) DO NOTHING",
                        "SELECT pid FROM search_param WHERE code = ?1 AND kind = ?2",
                        &entry.param,
                        Some(kind.code()),
                    )?;
                    self.params[kind_slot(kind)].insert(entry.param.clone(), pid);
                }
                let system = match &entry.value {
                    IndexValue::Token { system: Some(system), .. } | IndexValue::Quantity { system: Some(system), .. } => {
                        system
                    }
                    _ => continue,
                };
                if !self.systems.contains_key(system) {
                    let sid = intern_row(
                        &self.conn,
                        "INSERT INTO term_system (uri) VALUES (?1) ON CONFLICT (uri) DO NOTHING",
                        "SELECT sid FROM term_system WHERE uri = ?1",
                        system,
                        None,
                    )?;
                    self.systems.insert(system.clone(), sid);
                }
            }
        }
        Ok(())
    }

    fn pid(&self, entry: &IndexEntry, kind: Kind) -> Result<i64, StoreError> {
        self.params[kind_slot(kind)]
            .get(&entry.param)
            .copied()
            .ok_or_else(|| StoreError::Internal("search parameter was not interned".into()))
    }

    fn sid(&self, system: Option<&String>) -> Result<Option<i64>, StoreError> {
        match system {
            None => Ok(None),
            Some(system) => self
                .systems
                .get(system)
                .copied()
                .map(Some)
                .ok_or_else(|| StoreError::Internal("system was not interned".into())),
        }
    }

    fn write(&mut self, write: &Write) -> Result<(), StoreError> {
        let conn = &self.conn;
        let version = to_i64(write.version_id)?;
        let deleted = i64::from(write.body.is_none());
        let last_updated = write.last_updated.micros();
        let existing: Option<(i64, i64)> = conn
            .prepare_cached("SELECT rid, version FROM resource WHERE type = ?1 AND id = ?2")
            .and_then(|mut s| {
                s.query_row(params![write.resource_type, write.id], |r| Ok((r.get(0)?, r.get(1)?))).optional()
            })
            .map_err(db_error)?;
        let rid = match existing {
            None => {
                if version != 1 {
                    return Err(StoreError::Conflict(format!(
                        "{} does not exist; its first version must be 1",
                        write.resource_type
                    )));
                }
                conn.prepare_cached(
                    "INSERT INTO resource (type, id, version, last_updated, deleted) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut s| s.execute(params![write.resource_type, write.id, version, last_updated, deleted]))
                .map_err(db_error)?;
                conn.last_insert_rowid()
            }
            Some((rid, current)) => {
                if version != current + 1 {
                    return Err(StoreError::Conflict(format!(
                        "{} is at version {current}; version {version} is not the next",
                        write.resource_type
                    )));
                }
                conn.prepare_cached("UPDATE resource SET version = ?1, last_updated = ?2, deleted = ?3 WHERE rid = ?4")
                    .and_then(|mut s| s.execute(params![version, last_updated, deleted, rid]))
                    .map_err(db_error)?;
                for kind in Kind::ALL {
                    conn.prepare_cached(DELETE_INDEX[kind_slot(kind)])
                        .and_then(|mut s| s.execute([rid]))
                        .map_err(db_error)?;
                }
                rid
            }
        };
        conn.prepare_cached(
            "INSERT INTO resource_version (rid, type, version, last_updated, method, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                rid,
                write.resource_type,
                version,
                last_updated,
                method_code(write.method),
                write.body.as_deref()
            ])
        })
        .map_err(db_error)?;
        // A delete has no search values (Write::index is documented empty).
        if write.body.is_some() {
            for (n, entry) in write.index.iter().enumerate() {
                self.insert_index(rid, n as i64, entry)?;
            }
        }
        Ok(())
    }

    fn insert_index(&self, rid: i64, n: i64, entry: &IndexEntry) -> Result<(), StoreError> {
        let kind = Kind::of(&entry.value);
        let pid = self.pid(entry, kind)?;
        let conn = &self.conn;
        let result = match &entry.value {
            IndexValue::String { normalized, exact } => conn
                .prepare_cached("INSERT INTO idx_string (rid, pid, n, normalized, exact) VALUES (?1, ?2, ?3, ?4, ?5)")
                .and_then(|mut s| s.execute(params![rid, pid, n, normalized, exact])),
            IndexValue::Token { system, code, text } => {
                let sid = self.sid(system.as_ref())?;
                let text = text.as_deref().map(fhir::search::normalize_string);
                conn.prepare_cached(
                    "INSERT INTO idx_token (rid, pid, n, sid, code, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| s.execute(params![rid, pid, n, sid, code, text]))
            }
            IndexValue::Reference { target_type, target_id, url } => conn
                .prepare_cached(
                    "INSERT INTO idx_reference (rid, pid, n, target_type, target_id, url) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| s.execute(params![rid, pid, n, target_type, target_id, url])),
            IndexValue::Date { low, high } => conn
                .prepare_cached("INSERT INTO idx_date (rid, pid, n, low, high) VALUES (?1, ?2, ?3, ?4, ?5)")
                .and_then(|mut s| s.execute(params![rid, pid, n, low, high])),
            IndexValue::Number { low, high } => conn
                .prepare_cached("INSERT INTO idx_number (rid, pid, n, low, high) VALUES (?1, ?2, ?3, ?4, ?5)")
                .and_then(|mut s| s.execute(params![rid, pid, n, low, high])),
            IndexValue::Quantity { low, high, system, code } => {
                let sid = self.sid(system.as_ref())?;
                conn.prepare_cached(
                    "INSERT INTO idx_quantity (rid, pid, n, low, high, sid, code) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut s| s.execute(params![rid, pid, n, low, high, sid, code]))
            }
            IndexValue::Uri { value } => conn
                .prepare_cached("INSERT INTO idx_uri (rid, pid, n, value) VALUES (?1, ?2, ?3, ?4)")
                .and_then(|mut s| s.execute(params![rid, pid, n, value])),
        };
        result.map(|_| ()).map_err(db_error)
    }
}

/// `DELETE FROM idx_* WHERE rid = ?1`, in `Kind::ALL` order.
const DELETE_INDEX: [&str; 7] = [
    "DELETE FROM idx_string WHERE rid = ?1",
    "DELETE FROM idx_token WHERE rid = ?1",
    "DELETE FROM idx_reference WHERE rid = ?1",
    "DELETE FROM idx_date WHERE rid = ?1",
    "DELETE FROM idx_number WHERE rid = ?1",
    "DELETE FROM idx_quantity WHERE rid = ?1",
    "DELETE FROM idx_uri WHERE rid = ?1",
];

fn kind_slot(kind: Kind) -> usize {
    (kind.code() - 1) as usize
}

fn intern_row(conn: &Connection, insert: &str, select: &str, text: &str, kind: Option<i64>) -> Result<i64, StoreError> {
    let result = match kind {
        Some(kind) => conn
            .prepare_cached(insert)
            .and_then(|mut s| s.execute(params![text, kind]))
            .and_then(|_| conn.prepare_cached(select))
            .and_then(|mut s| s.query_row(params![text, kind], |r| r.get(0))),
        None => conn
            .prepare_cached(insert)
            .and_then(|mut s| s.execute([text]))
            .and_then(|_| conn.prepare_cached(select))
            .and_then(|mut s| s.query_row([text], |r| r.get(0))),
    };
    result.map_err(db_error)
}

/// Evaluates a commit's check inside its transaction.
fn check_holds(conn: &Connection, check: &Check) -> Result<(), StoreError> {
    match check {
        Check::Version { resource_type, id, expected } => {
            let current: Option<i64> = conn
                .prepare_cached("SELECT version FROM resource WHERE type = ?1 AND id = ?2")
                .and_then(|mut s| s.query_row(params![resource_type, id], |r| r.get(0)).optional())
                .map_err(db_error)?;
            let current = current.and_then(|v| u64::try_from(v).ok());
            if current != *expected {
                return Err(StoreError::Conflict(format!(
                    "{resource_type} is at version {current:?}, expected {expected:?}"
                )));
            }
            Ok(())
        }
        Check::Matches { query, ids } => {
            let statement = sql::matching_ids(Dialect::Sqlite, query);
            let mut found: Vec<String> = conn
                .prepare_cached(&statement.text)
                .and_then(|mut s| {
                    s.query_map(rusqlite::params_from_iter(statement.params.iter()), |r| r.get(0))?.collect()
                })
                .map_err(db_error)?;
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

// ---------------------------------------------------------------------------
// Readers

struct ReaderPool {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection the pool may have open.
    permits: Semaphore,
}

impl Inner {
    /// Runs `f` on a reader connection on tokio's blocking pool.
    async fn with_reader<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit =
            self.readers.permits.acquire().await.map_err(|_| StoreError::Unavailable("store is closed".into()))?;
        let inner = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.idle.lock().pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.readers.path, &inner.readers.options, Role::Reader)?,
            };
            let result = f(&mut conn);
            inner.readers.idle.lock().push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Internal("sqlite reader task failed".into()))?
    }
}

fn resource_row(row: &Row<'_>) -> rusqlite::Result<ResourceRow> {
    let body = match row.get_ref(5)? {
        ValueRef::Null => None,
        value => Some(Arc::<str>::from(value.as_str()?)),
    };
    Ok(ResourceRow {
        resource_type: row.get(0)?,
        id: row.get(1)?,
        version: row.get(2)?,
        last_updated: row.get(3)?,
        method: row.get(4)?,
        body,
    })
}

fn read_current(conn: &Connection, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT r.type, r.id, v.version, v.last_updated, v.method, v.body \
             FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version \
             WHERE r.type = ?1 AND r.id = ?2",
        )
        .and_then(|mut s| s.query_row([resource_type, id], resource_row).optional())
        .map_err(db_error)?;
    row.map(ResourceRow::into_stored).transpose()
}

fn read_version(
    conn: &Connection,
    resource_type: &str,
    id: &str,
    version: i64,
) -> Result<Option<StoredResource>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT r.type, r.id, v.version, v.last_updated, v.method, v.body \
             FROM resource r JOIN resource_version v ON v.rid = r.rid \
             WHERE r.type = ?1 AND r.id = ?2 AND v.version = ?3",
        )
        .and_then(|mut s| s.query_row(params![resource_type, id, version], resource_row).optional())
        .map_err(db_error)?;
    row.map(ResourceRow::into_stored).transpose()
}

fn query_resources(conn: &Connection, statement: &Sql) -> Result<Vec<StoredResource>, StoreError> {
    let rows: Vec<ResourceRow> = conn
        .prepare_cached(&statement.text)
        .and_then(|mut s| s.query_map(rusqlite::params_from_iter(statement.params.iter()), resource_row)?.collect())
        .map_err(db_error)?;
    rows.into_iter().map(ResourceRow::into_stored).collect()
}

fn query_count(conn: &Connection, statement: &Sql) -> Result<u64, StoreError> {
    let count: i64 = conn
        .prepare_cached(&statement.text)
        .and_then(|mut s| s.query_row(rusqlite::params_from_iter(statement.params.iter()), |r| r.get(0)))
        .map_err(db_error)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Runs the page (and, when wanted, the count) in one read transaction so
/// both see the same snapshot.
fn run_paged(conn: &mut Connection, statements: &sql::SearchSql, with_total: bool) -> Result<Page<StoredResource>, StoreError> {
    if !with_total {
        return Ok(Page { items: query_resources(conn, &statements.page)?, total: None });
    }
    let tx = conn.transaction().map_err(db_error)?;
    let items = query_resources(&tx, &statements.page)?;
    let total = query_count(&tx, &statements.count)?;
    tx.commit().map_err(db_error)?;
    Ok(Page { items, total: Some(total) })
}

fn resolve_sort_kinds(conn: &Connection, query: &SearchQuery) -> Result<SortKinds, StoreError> {
    let mut kinds = SortKinds::new();
    for param in sql::sort_params_to_resolve(query) {
        let codes: Vec<i64> = conn
            .prepare_cached(&sql::kinds_sql(Dialect::Sqlite))
            .and_then(|mut s| s.query_map([param], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        let mut resolved: Vec<Kind> = codes.into_iter().filter_map(Kind::from_code).collect();
        resolved.sort();
        kinds.insert(param.to_owned(), resolved);
    }
    Ok(kinds)
}

#[async_trait]
impl domain::Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        let (resource_type, id) = (resource_type.to_owned(), id.to_owned());
        self.inner.with_reader(move |conn| read_current(conn, &resource_type, &id)).await
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        let Ok(version) = i64::try_from(version_id) else { return Ok(None) };
        let (resource_type, id) = (resource_type.to_owned(), id.to_owned());
        self.inner.with_reader(move |conn| read_version(conn, &resource_type, &id, version)).await
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let jobs = self.inner.jobs.as_ref().ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job { commit, reply })
            .await
            .map_err(|_| StoreError::Unavailable("sqlite writer has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("sqlite writer has stopped".into()))?
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> Result<Page<StoredResource>, StoreError> {
        let statements = sql::history(Dialect::Sqlite, scope, query);
        self.inner.with_reader(move |conn| run_paged(conn, &statements, true)).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<StoredResource>, StoreError> {
        let query = query.clone();
        self.inner
            .with_reader(move |conn| {
                let kinds = resolve_sort_kinds(conn, &query)?;
                let statements = sql::search(Dialect::Sqlite, &query, &kinds);
                run_paged(conn, &statements, query.total != TotalMode::None)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .with_reader(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ()).map_err(db_error))
            .await
    }
}
