//! SQLite backend (the embedded default): one writer thread that group-commits,
//! a pool of reader connections, WAL mode with durable commits.
//!
//! Durability: WAL with `synchronous=FULL` fsyncs the WAL at every commit, so
//! a commit acknowledged to the caller survives a power cut
//! (<https://www.sqlite.org/pragma.html#pragma_synchronous>; NORMAL would only
//! protect against application crashes in WAL mode). The one exception is a
//! group holding nothing but read-audit records: it is appended without its
//! own fsync, and the WAL is fsync'd within `AUDIT_SYNC_WINDOW` (50 ms) after
//! it, so reads are not capped at one fsync each (`Writer::choose_sync`).
//!
//! Throughput: every commit is one fsync, so the writer thread applies all
//! commits waiting in its queue in ONE SQLite transaction (group commit): each
//! commit runs inside its own SAVEPOINT, so a commit whose check fails is rolled
//! back alone and answered Conflict while the others proceed; then one COMMIT
//! (one fsync) acknowledges them all. A large commit is applied alone, with
//! no savepoint (`applied_alone`). Readers run in parallel on their own
//! connections (WAL readers never block on the writer). Checkpoints (copying
//! the WAL back into the database file) run on their own thread and
//! connection, so commits never wait for them.
//!
//! Audit trail (migration 0005): the writer keeps the chain's head (last seq
//! and hash) in memory, links a commit's audit records as it applies them,
//! and puts the head back whenever what wrote them is rolled back (a savepoint
//! or the whole group), so the stored chain has no gap and no wrong link.

use crate::cache::ResourceCache;
use crate::cipher::DbKey;
use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use crate::sql::{self, Dialect, Kind, SortKinds, Sql, SqlValue};
use crate::{ResourceRow, method_code};
use async_trait::async_trait;
use domain::audit::{AuditChain, AuditEntry, AuditQuery, AuditRecord};
use domain::store::{
    Check, Commit, ContainedIndex, HistoryQuery, HistoryScope, Page, Reindex, ResourceKey, StoreError, StoredResource,
    SysRecord, SysWrite, Write,
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
use tokio::sync::{mpsc, oneshot};

/// The schema migrations of this backend, applied in order at open and
/// recorded in `schema_version`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (3, include_str!("../migrations/sqlite/0003_composite.sql")),
    (4, include_str!("../migrations/sqlite/0004_text.sql")),
    (5, include_str!("../migrations/sqlite/0005_audit.sql")),
    (6, include_str!("../migrations/sqlite/0006_resource_writer.sql")),
    (7, include_str!("../migrations/sqlite/0007_audit_patient_index.sql")),
    (8, include_str!("../migrations/sqlite/0008_typed_params.sql")),
    (9, include_str!("../migrations/sqlite/0009_patient_token_keys.sql")),
    (10, include_str!("../migrations/sqlite/0010_search_param_code.sql")),
    (11, include_str!("../migrations/sqlite/0011_contained.sql")),
    (12, include_str!("../migrations/sqlite/0012_combined_params.sql")),
    (13, include_str!("../migrations/sqlite/0013_deferred_index.sql")),
];

/// The HMAC SQLCipher authenticates each page of an encrypted database
/// with. SHA-512 is SQLCipher 4's default and what every database made
/// before Hearth recorded the choice uses; SHA-256 costs about half as much
/// per page written or read (measured on a bulk load: 9% of the writer's
/// time for SHA-512) and, at 256 bits, keeps the same margin as the AES-256
/// encryption it authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageHmac {
    Sha512,
    Sha256,
}

impl PageHmac {
    /// The value of SQLCipher's `cipher_hmac_algorithm`.
    pub fn sqlcipher_name(self) -> &'static str {
        match self {
            PageHmac::Sha512 => "HMAC_SHA512",
            PageHmac::Sha256 => "HMAC_SHA256",
        }
    }

    /// The algorithm named `name` ([`PageHmac::sqlcipher_name`]).
    pub fn from_sqlcipher_name(name: &str) -> Option<PageHmac> {
        [PageHmac::Sha512, PageHmac::Sha256].into_iter().find(|h| h.sqlcipher_name() == name)
    }
}

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader threads, one connection each; reads beyond this many queue.
    pub readers: usize,
    /// The most commits the writer applies in one transaction (one fsync).
    pub max_group_commits: usize,
    /// Page cache of each connection, in KiB.
    pub cache_kib: u32,
    /// Page cache of the writer's connection, in KiB (at least `cache_kib`).
    /// A bulk load (`hearth migrate run`) gives it far more than the
    /// readers': its inserts land all over the index B-trees, and every
    /// page that falls out of the cache is re-read from the file, which
    /// with SQLCipher means decrypted (and, written back, encrypted) again.
    /// SQLCipher cannot map the file, so this cache is the only one. It
    /// fills only as far as the database is large.
    pub writer_cache_kib: u32,
    /// How long a connection waits for a lock held by another process
    /// (checkpoints, backups), in milliseconds.
    pub busy_timeout_ms: u32,
    /// Bytes of the database file readers map into memory, so a page they
    /// miss in their cache costs no system call (0 turns mapping off).
    pub mmap_bytes: u64,
    /// Page size of the database. A plaintext file records its own (this
    /// applies when it is created); an encrypted one must be opened with the
    /// size it was created with (SQLCipher cannot read it before decrypting).
    pub page_size: u32,
    /// The HMAC that authenticates each page of an encrypted database:
    /// like `page_size`, fixed when the file is created.
    pub page_hmac: PageHmac,
    /// The SQLCipher key of the database file; `None` keeps it in plaintext
    /// (tests that want it). Given, it is the first statement of every
    /// connection, and the WAL and journal are encrypted with it too.
    pub key: Option<DbKey>,
    /// The key of the audit trail's chain digests (domain::audit).
    pub audit_chain: AuditChain,
    /// Bytes of current resource versions kept in memory for reads by id
    /// (cache.rs); 0 turns the cache off.
    pub resource_cache_bytes: usize,
    /// How the WAL is copied into the database file (see [`Checkpoints`]).
    pub checkpoints: Checkpoints,
}

/// When committed WAL frames are copied into the database file. Every page a
/// commit changes is written twice: appended to the WAL at the commit, and
/// copied into the database by a checkpoint, once per checkpoint however
/// often commits rewrote it in between. Frequent checkpoints keep the WAL
/// small, which suits a server; a bulk load, whose large commits rewrite the
/// same index pages again and again, writes far less with rare ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    /// How often the background checkpointer runs (PASSIVE: it never blocks
    /// the writer or readers).
    pub interval: std::time::Duration,
    /// WAL pages after which the writer checkpoints by itself, a backstop for
    /// when the checkpointer cannot keep up; the WAL file is trimmed back to
    /// this size after it restarts.
    pub writer_pages: i64,
}

impl Checkpoints {
    /// A server's: every 100 ms, the writer at 64 MiB of WAL.
    pub const SERVE: Checkpoints = Checkpoints { interval: std::time::Duration::from_millis(100), writer_pages: 16 * 1024 };
    /// A bulk load's (`hearth migrate run`, `hearth import`): every 5 s, the
    /// writer at 1 GiB of WAL.
    pub const BULK_LOAD: Checkpoints = Checkpoints { interval: std::time::Duration::from_secs(5), writer_pages: 256 * 1024 };
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        SqliteOptions {
            readers: (cores * 2).max(4),
            max_group_commits: 256,
            cache_kib: 16 * 1024,
            writer_cache_kib: 16 * 1024,
            busy_timeout_ms: 5_000,
            mmap_bytes: 1 << 30,
            page_size: 4096,
            page_hmac: PageHmac::Sha512,
            key: None,
            audit_chain: AuditChain::random(),
            resource_cache_bytes: 64 << 20,
            checkpoints: Checkpoints::SERVE,
        }
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
    checkpointer: Option<(Arc<Stop>, JoinHandle<()>)>,
    readers: ReaderPool,
    /// Current versions for reads by id; `None` when turned off.
    cache: Option<Arc<ResourceCache>>,
}

/// A stop flag a background thread sleeps on.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: parking_lot::Condvar,
}

struct Job {
    commit: Commit,
    /// Instead of the (empty) commit: work on the schema, alone.
    maintenance: Option<Maintenance>,
    reply: oneshot::Sender<Reply>,
}

/// The outcome of a [`Job`], with its commit handed back: the thread that
/// built the commit frees it, not the writer (a large commit is millions of
/// small allocations, and freeing another thread's memory is the allocator's
/// slow path; the writer is the bound of a bulk load).
struct Reply {
    result: Result<(), StoreError>,
    commit: Commit,
}

impl Job {
    fn answer(self, result: Result<(), StoreError>) {
        let _ = self.reply.send(Reply { result, commit: self.commit });
    }
}

/// Schema work the writer does between commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Maintenance {
    DeferSearchIndexes,
    RestoreSearchIndexes,
}

/// The indexes a bulk load defers: the search indexes of the idx_* tables,
/// each insert into which lands on a random page of a large B-tree (so a
/// large commit rewrites most of them), whereas `CREATE INDEX` sorts its
/// entries and writes each page once. The tables' primary keys, clustered
/// by `rid` (ever increasing), and the indexes of `resource` and
/// `resource_version`, whose keys grow too, stay: inserts append to them.
/// Measured on a 1,000-patient migration (docs/benchmarks.md).
const DEFERRABLE_INDEXES: [&str; 10] = [
    "idx_string_search",
    "idx_token_search",
    "idx_reference_search",
    "idx_reference_url",
    "idx_date_search",
    "idx_number_search",
    "idx_quantity_search",
    "idx_uri_search",
    "idx_composite_search",
    "idx_patient_token_search",
];

/// A bulk load defers the search indexes when it may write more than this
/// many times the resources the store holds: a first load, a rehearsal
/// into a new data directory. Into a larger store, rebuilding its indexes
/// would cost more than the load saves.
const DEFER_ABOVE_RATIO: u64 = 2;

/// Drops the [`DEFERRABLE_INDEXES`] that exist, keeping their definitions
/// in `deferred_index`, in one transaction.
fn defer_search_indexes(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let dropped = (|| {
        for name in DEFERRABLE_INDEXES {
            let sql: Option<String> = conn
                .query_row("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1", [name], |r| r.get(0))
                .optional()?;
            if let Some(sql) = sql {
                conn.execute("INSERT INTO deferred_index (name, sql) VALUES (?1, ?2)", params![name, sql])?;
                conn.execute_batch(&format!("DROP INDEX {name}"))?;
            }
        }
        Ok(())
    })();
    finish(conn, dropped)
}

/// Creates every index `deferred_index` holds, in one transaction; returns
/// how many.
///
/// SQLite sorts each index's entries first. With temporary storage in
/// memory (`temp_store=MEMORY`, Hearth's setting) its sorter keeps every
/// entry in an allocation of its own on one long list and sorts that alone;
/// with temporary files allowed it packs entries into large buffers, sorts
/// runs of them on worker threads (`PRAGMA threads`) and merges: a third
/// less time for the build at the end of a 300-patient migration
/// (docs/benchmarks.md). But SQLCipher does not encrypt temporary files,
/// and the entries are index keys (names, codes). So the build uses
/// temporary files only in a private directory of a memory file system
/// ([`MemoryTempDir`]), and keeps everything in memory where there is none.
fn restore_search_indexes(conn: &Connection) -> rusqlite::Result<usize> {
    let pending: i64 = conn.query_row("SELECT count(*) FROM deferred_index", [], |r| r.get(0))?;
    if pending == 0 {
        return Ok(0);
    }
    let _one_at_a_time = SORT_IN_FILES.lock();
    let temp = MemoryTempDir::create().filter(|dir| temp_files_go_to(conn, dir.path()));
    let switched = match &temp {
        Some(_) => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
            conn.pragma_update(None, "temp_store", "FILE").and_then(|()| conn.pragma_update(None, "threads", threads))
        }
        None => Ok(()),
    };
    let created = switched.and_then(|()| build_deferred_indexes(conn));
    if temp.is_some() {
        // Back to memory before the directory goes (and whatever happened).
        let restored = conn
            .pragma_update(None, "temp_store", "MEMORY")
            .and_then(|()| conn.pragma_update(None, "threads", 0))
            .and_then(|()| conn.pragma_update(None, "temp_store_directory", ""));
        if let Err(error) = restored {
            tracing::warn!(error = %db_error(error), "could not put temporary storage back in memory");
        }
    }
    created
}

/// The body of [`restore_search_indexes`], in one transaction.
fn build_deferred_indexes(conn: &Connection) -> rusqlite::Result<usize> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let created = (|| {
        let deferred: Vec<(String, String)> = conn
            .prepare("SELECT name, sql FROM deferred_index ORDER BY name")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, sql) in &deferred {
            let started = std::time::Instant::now();
            conn.execute_batch(sql)?;
            tracing::info!(index = %name, millis = started.elapsed().as_millis() as u64, "search index built");
        }
        conn.execute("DELETE FROM deferred_index", [])?;
        Ok(deferred.len())
    })();
    finish(conn, created)
}

/// The writer's hash maps, looked up per index row: foldhash, seeded per map.
type FastMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// SQLite's temporary directory is one setting of the whole process: one
/// index build at a time uses it.
static SORT_IN_FILES: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// A private directory (mode 0700) in a memory file system (`tmpfs` at
/// `/dev/shm`, Linux) for SQLite's temporary files while it builds the
/// deferred indexes: what it writes there stays in memory, as with
/// `temp_store=MEMORY`, and no other user can open it. SQLite deletes each
/// file as it opens it; the directory goes when this is dropped. `None`
/// where there is no such file system (or the directory cannot be made).
struct MemoryTempDir(PathBuf);

impl MemoryTempDir {
    const PARENT: &'static str = "/dev/shm";

    fn create() -> Option<MemoryTempDir> {
        if !is_memory_file_system(Path::new(Self::PARENT)) {
            return None;
        }
        let path = Path::new(Self::PARENT).join(format!("hearth-sort-{}-{:016x}", std::process::id(), OsRng.next_u64()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        // `create`, not `create_all`: a path someone else made is refused.
        builder.create(&path).ok()?;
        Some(MemoryTempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for MemoryTempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Points SQLite's temporary files at `dir`; whether it took (a build of
/// SQLite without deprecated pragmas ignores `temp_store_directory`, and its
/// files would then go to the system's temporary directory).
fn temp_files_go_to(conn: &Connection, dir: &Path) -> bool {
    let Some(dir) = dir.to_str() else { return false };
    let set = conn.pragma_update(None, "temp_store_directory", dir);
    let now: rusqlite::Result<String> = conn.query_row("PRAGMA temp_store_directory", [], |r| r.get(0));
    set.is_ok() && now.is_ok_and(|now| now == dir)
}

/// Whether `dir` is the mount point of a `tmpfs` (from `/proc/self/mounts`).
fn is_memory_file_system(dir: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return false };
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, point, kind) = (fields.next(), fields.next(), fields.next());
        point.is_some_and(|p| Path::new(p) == dir) && kind == Some("tmpfs")
    })
}

/// Commits the transaction `result` ran in, or rolls it back.
fn finish<T>(conn: &Connection, result: rusqlite::Result<T>) -> rusqlite::Result<T> {
    match result {
        Ok(value) => conn.execute_batch("COMMIT").map(|()| value),
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending
    /// migrations, and starts the writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let mut conn = open_connection(path, &options, Role::Writer)?;
        migrate(&mut conn)?;
        // A bulk load that stopped before building its deferred indexes (or
        // one still loading from another process, which builds them itself
        // if its commits keep the lock from this one).
        match restore_search_indexes(&conn) {
            Ok(0) => {}
            Ok(built) => tracing::info!(indexes = built, "built the search indexes a stopped bulk load had deferred"),
            Err(error) => tracing::warn!(
                error = %db_error(error),
                "could not build the search indexes a bulk load deferred; searches are slower until they are"
            ),
        }
        // Readers open now, so that a bad file fails here, not on first read.
        let readers = ReaderPool::start(path, &options)?;

        let (sender, receiver) = mpsc::channel::<Job>(options.max_group_commits.max(1) * 4);
        let cache = ResourceCache::new(options.resource_cache_bytes).map(Arc::new);
        let owner = i64::from_ne_bytes(OsRng.next_u64().to_ne_bytes());
        let writer = Writer::new(conn, options.max_group_commits.max(1), options.audit_chain.clone(), cache.clone(), owner)?;
        let handle = std::thread::Builder::new()
            .name("hearth-sqlite-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Internal(format!("cannot start the sqlite writer thread: {e}")))?;
        let checkpointer = start_checkpointer(path, &options, cache.clone(), owner)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner { jobs: Some(sender), writer: Some(handle), checkpointer: Some(checkpointer), readers, cache }),
        })
    }

    /// Has the writer do `work` between commits.
    async fn maintain(&self, work: Maintenance) -> Result<(), StoreError> {
        let jobs = self.inner.jobs.as_ref().ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        jobs.send(Job { commit: Commit::default(), maintenance: Some(work), reply })
            .await
            .map_err(|_| StoreError::Unavailable("sqlite writer has stopped".into()))?;
        let Reply { result, .. } = answer.await.map_err(|_| StoreError::Unavailable("sqlite writer has stopped".into()))?;
        result
    }

    /// The plan SQLite chooses for the page and count statements of `query`
    /// (`EXPLAIN QUERY PLAN`, one line per step, indented by depth): what the
    /// plan tests check for full scans.
    pub async fn explain(&self, query: &SearchQuery) -> Result<Vec<String>, StoreError> {
        let query = query.clone();
        self.inner
            .with_reader(move |conn| {
                let kinds = resolve_sort_kinds(conn, &query)?;
                let statements = sql::search(Dialect::Sqlite, &query, &kinds, &Arc::default());
                explain_lines(conn, &[&statements.page, &statements.count])
            })
            .await
    }

    /// [`SqliteStore::explain`] for the statements of an audit search.
    pub async fn explain_audit(&self, query: &AuditQuery) -> Result<Vec<String>, StoreError> {
        let (page, count) = crate::audit::search(Dialect::Sqlite, query);
        self.inner.with_reader(move |conn| explain_lines(conn, &[&page, &count])).await
    }
}

/// The line [`SqliteStore::explain`] puts between the plans of two statements.
pub const STATEMENT_SEPARATOR: &str = "-- next statement";

/// `EXPLAIN QUERY PLAN` of each statement, one line per step, indented by depth.
fn explain_lines(conn: &Connection, statements: &[&Sql]) -> Result<Vec<String>, StoreError> {
    // `EXPLAIN QUERY PLAN` plans without reading, so it would not notice
    // that another connection changed the schema (indexes a bulk load
    // deferred or built): a read first brings this connection's up to date.
    conn.query_row("SELECT COUNT(*) FROM resource WHERE rid = 0", [], |_| Ok(())).map_err(db_error)?;
    let mut lines = Vec::new();
    for (i, statement) in statements.iter().enumerate() {
        if i > 0 {
            lines.push(STATEMENT_SEPARATOR.to_owned());
        }
        let text = format!("EXPLAIN QUERY PLAN {}", statement.text);
        let mut prepared = conn.prepare(&text).map_err(db_error)?;
        let mut rows = prepared.query(rusqlite::params_from_iter(statement.params.iter())).map_err(db_error)?;
        let mut depth: HashMap<i64, usize> = HashMap::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            let id: i64 = row.get(0).map_err(db_error)?;
            let parent: i64 = row.get(1).map_err(db_error)?;
            let detail: String = row.get(3).map_err(db_error)?;
            let level = depth.get(&parent).map_or(0, |d| d + 1);
            depth.insert(id, level);
            lines.push(format!("{}{detail}", "  ".repeat(level)));
        }
    }
    Ok(lines)
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what it has and exit; joining
        // makes sure its connection is closed when the store is gone.
        self.jobs = None;
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
        if let Some((stop, handle)) = self.checkpointer.take() {
            *stop.stopped.lock() = true;
            stop.wake.notify_all();
            let _ = handle.join();
        }
    }
}

/// Starts the thread that checkpoints the WAL in the background. PASSIVE
/// checkpoints never block the writer or readers; once a checkpoint has
/// caught up, the writer restarts the WAL from its beginning, so the file
/// stays small. The writer keeps SQLite's own auto-checkpoint only as a
/// backstop with a high threshold (see [`configure`]).
fn start_checkpointer(
    path: &Path,
    options: &SqliteOptions,
    cache: Option<Arc<ResourceCache>>,
    owner: i64,
) -> Result<(Arc<Stop>, JoinHandle<()>), StoreError> {
    let conn = open_connection(path, options, Role::Checkpointer)?;
    let mut others = OtherWriters::read(&conn, owner);
    let stop = Arc::new(Stop::default());
    let flag = Arc::clone(&stop);
    let interval = options.checkpoints.interval;
    let handle = std::thread::Builder::new()
        .name("hearth-sqlite-checkpoint".into())
        .spawn(move || {
            let mut stopped = flag.stopped.lock();
            while !*stopped {
                flag.wake.wait_for(&mut stopped, interval);
                if *stopped {
                    break;
                }
                // Checkpoint without holding the flag's lock.
                parking_lot::MutexGuard::unlocked(&mut stopped, || {
                    if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %db_error(error), "sqlite checkpoint failed");
                    }
                    if let Some(cache) = &cache {
                        let now = OtherWriters::read(&conn, owner);
                        if now != others {
                            // Another process wrote resources (or the count
                            // could not be read): nothing cached is trusted.
                            cache.clear();
                            others = now;
                        }
                    }
                });
            }
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the sqlite checkpoint thread: {e}")))?;
    Ok((stop, handle))
}

/// The resource-writing commits of the other stores open on this file
/// (`resource_writer`, migration 0006); `None` when they cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OtherWriters(Option<(i64, i64)>);

impl OtherWriters {
    fn read(conn: &Connection, owner: i64) -> OtherWriters {
        let counts = conn
            .prepare_cached("SELECT count(*), coalesce(sum(commits), 0) FROM resource_writer WHERE owner <> ?1")
            .and_then(|mut s| s.query_row([owner], |r| Ok((r.get(0)?, r.get(1)?))));
        match counts {
            Ok(counts) => OtherWriters(Some(counts)),
            Err(error) => {
                tracing::warn!(error = %db_error(error), "cannot read the other resource writers; the cache is emptied");
                OtherWriters(None)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
    Checkpointer,
}

/// Opens and configures a connection. The one place connections are made, so
/// that the SQLCipher key is the first statement on every connection.
fn open_connection(path: &Path, options: &SqliteOptions, role: Role) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db_error)?;
    conn.busy_timeout(std::time::Duration::from_millis(u64::from(options.busy_timeout_ms))).map_err(db_error)?;
    unlock(&conn, path, options)?;
    configure(conn, options, role).map_err(db_error)?.ok_or_else(|| {
        StoreError::Unavailable("sqlite: the file system does not support WAL mode".into())
    })
}

/// Gives SQLCipher the key and proves it opens the file.
fn unlock(conn: &Connection, path: &Path, options: &SqliteOptions) -> Result<(), StoreError> {
    if try_unlock(conn, options).map_err(db_error)? {
        Ok(())
    } else {
        Err(StoreError::Unavailable(key_refused(path, options.key.is_some())))
    }
}

/// `PRAGMA key` with a raw 256-bit key (no key derivation at open), then a
/// read of the schema: `false` when the key (or its absence) does not open
/// the file.
fn try_unlock(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<bool> {
    if let Some(key) = &options.key {
        let pragma = zeroize::Zeroizing::new(format!("PRAGMA key = \"x'{}'\"", key.to_hex().as_str()));
        conn.execute_batch(&pragma)?;
        conn.pragma_update(None, "cipher_page_size", options.page_size)?;
        conn.execute_batch(&format!("PRAGMA cipher_hmac_algorithm = {}", options.page_hmac.sqlcipher_name()))?;
    }
    match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get::<_, i64>(0)) {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::NotADatabase => Ok(false),
        Err(other) => Err(other),
    }
}

/// Whether `options.key` (or no key, for `None`) opens the existing
/// database at `path`.
pub(crate) fn key_opens(path: &Path, options: &SqliteOptions) -> Result<bool, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db_error)?;
    conn.busy_timeout(std::time::Duration::from_millis(u64::from(options.busy_timeout_ms))).map_err(db_error)?;
    try_unlock(&conn, options).map_err(db_error)
}

/// Why a file does not open: plaintext files start with SQLite's magic
/// string, encrypted ones with a random salt.
fn key_refused(path: &Path, keyed: bool) -> String {
    let mut head = [0u8; 16];
    let plaintext = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0");
    match (keyed, plaintext) {
        (true, true) => format!(
            "{} is not encrypted, so a database key does not open it (written by an older Hearth: `hearth admin rotate-key` encrypts it)",
            path.display()
        ),
        (true, false) => format!("the database key does not open {}: wrong key, or not a Hearth database", path.display()),
        (false, _) => format!("{} is encrypted or not a database, and no database key was given", path.display()),
    }
}

/// One keyed connection to `path` for maintenance (key rotation), with the
/// writer's settings.
pub(crate) fn maintenance_connection(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    open_connection(path, options, Role::Writer)
}

/// Re-encrypts the database at `path` (opened with `options.key`) with
/// `new_key` (`PRAGMA rekey`, one transaction over every page), then proves
/// the new key opens it. No other connection may be open meanwhile.
pub fn rekey(path: &Path, options: &SqliteOptions, new_key: &DbKey) -> Result<(), StoreError> {
    let conn = maintenance_connection(path, options)?;
    // Rekey rewrites pages through the rollback journal: leave WAL mode
    // (which checkpoints and removes the WAL) for its duration.
    let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0)).map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::Unavailable(format!(
            "{} is in use by another process (cannot leave WAL mode to re-key it)",
            path.display()
        )));
    }
    let pragma = zeroize::Zeroizing::new(format!("PRAGMA rekey = \"x'{}'\"", new_key.to_hex().as_str()));
    conn.execute_batch(&pragma).map_err(db_error)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(db_error)?;
    drop(conn);
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable("sqlite: cannot return to WAL mode after re-keying".into()));
    }
    let check = SqliteOptions { key: Some(new_key.clone()), ..options.clone() };
    maintenance_connection(path, &check).map(drop)
}

/// Encrypts the unencrypted database at `path` with `new_key`: a keyed copy
/// (`sqlcipher_export`) written beside it, fsync'd, then renamed over it.
/// No other connection may be open meanwhile.
pub(crate) fn encrypt_plaintext(path: &Path, options: &SqliteOptions, new_key: &DbKey) -> Result<(), StoreError> {
    let plain = SqliteOptions { key: None, ..options.clone() };
    let conn = maintenance_connection(path, &plain)?;
    // Fold the WAL into the file and leave WAL mode, so nothing is left
    // beside the file once it is replaced.
    let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0)).map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::Unavailable(format!("{} is in use by another process", path.display())));
    }
    let mut copy_name = path.as_os_str().to_owned();
    copy_name.push(".encrypting");
    let copy = std::path::PathBuf::from(copy_name);
    let _ = std::fs::remove_file(&copy);
    let copy_text = copy.to_str().ok_or_else(|| StoreError::Internal("the database path is not UTF-8".into()))?;
    let attach = zeroize::Zeroizing::new(format!(
        "ATTACH DATABASE '{}' AS encrypted KEY \"x'{}'\"; PRAGMA encrypted.cipher_page_size = {}; \
         PRAGMA encrypted.cipher_hmac_algorithm = {}; SELECT sqlcipher_export('encrypted'); DETACH DATABASE encrypted;",
        copy_text.replace('\'', "''"),
        new_key.to_hex().as_str(),
        options.page_size,
        options.page_hmac.sqlcipher_name()
    ));
    conn.execute_batch(&attach).map_err(db_error)?;
    drop(conn);
    std::fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&copy, path))
        .map_err(|e| StoreError::Unavailable(format!("replacing {}: {e}", path.display())))?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
    {
        let _ = dir.sync_all();
    }
    let keyed = SqliteOptions { key: Some(new_key.clone()), ..options.clone() };
    maintenance_connection(path, &keyed).map(drop)
}

/// `None` when WAL mode cannot be enabled.
fn configure(conn: Connection, options: &SqliteOptions, role: Role) -> rusqlite::Result<Option<Connection>> {
    crate::fulltext::register_sqlite_function(&conn)?;
    if role == Role::Writer {
        // Only takes effect while the file is still empty (before WAL mode).
        conn.pragma_update(None, "page_size", options.page_size)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
    }
    // FULL: the WAL is fsync'd at every commit (see the module comment).
    conn.pragma_update(None, "synchronous", "FULL")?;
    let cache_kib = match role {
        Role::Writer => options.writer_cache_kib.max(options.cache_kib),
        Role::Reader | Role::Checkpointer => options.cache_kib,
    };
    conn.pragma_update(None, "cache_size", -i64::from(cache_kib))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    match role {
        Role::Writer => {
            let pages = options.checkpoints.writer_pages;
            conn.pragma_update(None, "wal_autocheckpoint", pages)?;
            // After a checkpoint lets the WAL restart, trim it back to this
            // size (rewriting a file's blocks costs less than new ones).
            conn.pragma_update(None, "journal_size_limit", pages.saturating_mul(i64::from(options.page_size)))?;
        }
        Role::Reader => {
            conn.pragma_update(None, "query_only", true)?;
            // SQLCipher reads pages through its decrypting pager only.
            if options.key.is_none() {
                conn.pragma_update(None, "mmap_size", i64::try_from(options.mmap_bytes).unwrap_or(i64::MAX))?;
            }
        }
        Role::Checkpointer => {}
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
    /// Interned `search_param` ids per kind, by resource type then code
    /// (looked up without building a key: twice per index row).
    params: [FastMap<String, FastMap<String, i64>>; 8],
    systems: FastMap<String, i64>,
    /// Multi-row index INSERTs per kind and chunk size.
    insert_sql: [[String; INSERT_CHUNKS.len()]; 8],
    /// Multi-row `idx_patient_token` INSERTs per chunk size.
    insert_patient_sql: [String; INSERT_CHUNKS.len()],
    /// Rows in `idx_text_pending` (about: rolled back commits count too);
    /// at [`crate::fulltext::FLUSH_ROWS`] they are moved into FTS5.
    text_pending: usize,
    /// The commit being applied is large and alone in its group: its words
    /// go straight into FTS5 (fulltext.rs, [`crate::fulltext::sqlite_replace`]).
    text_direct: bool,
    /// The key of the audit trail's digests.
    chain: AuditChain,
    /// The last audit entry written, committed or in the open transaction;
    /// put back whenever what wrote it is rolled back.
    head: AuditHead,
    /// The connection runs with synchronous=NORMAL (a read-audit group).
    relaxed: bool,
    /// Groups were committed without fsync since `last_fsync`.
    unsynced: bool,
    last_fsync: std::time::Instant,
    /// The read cache, told of every resource written.
    cache: Option<Arc<ResourceCache>>,
    /// This store's row in `resource_writer`.
    owner: i64,
}

/// The last entry of the audit trail: its number and digest.
#[derive(Debug, Clone, PartialEq)]
struct AuditHead {
    seq: u64,
    hash: String,
}

impl AuditHead {
    /// The head as stored.
    fn load(conn: &Connection) -> Result<AuditHead, StoreError> {
        let last: Option<(i64, String)> = conn
            .query_row("SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_error)?;
        match last {
            None => Ok(AuditHead { seq: 0, hash: domain::audit::GENESIS.to_string() }),
            Some((seq, hash)) => Ok(AuditHead { seq: crate::audit::version(seq)?, hash }),
        }
    }
}

/// Audit entries not yet in `audit_patient_index` after which the writer
/// moves them there in one statement (migration 0007). A search by patient
/// reads at most this many entries by number besides the index.
const PATIENT_INDEX_BATCH: u64 = 4096;

/// The last audit entry in `audit_patient_index`.
fn patients_indexed(conn: &Connection) -> Result<u64, StoreError> {
    let through: i64 = conn.query_row("SELECT through FROM audit_index_state", [], |r| r.get(0)).map_err(db_error)?;
    crate::audit::version(through)
}

/// Moves the entries after `from` up to `to` into `audit_patient_index`.
fn index_patients(conn: &Connection, from: u64, to: u64) -> Result<(), StoreError> {
    let (from, to) = (crate::audit::to_i64(from)?, crate::audit::to_i64(to)?);
    conn.prepare_cached(
        "INSERT INTO audit_patient_index (patient, seq) \
         SELECT patient, seq FROM audit_entry WHERE seq > ?1 AND seq <= ?2 AND patient IS NOT NULL",
    )
    .and_then(|mut s| s.execute([from, to]))
    .and_then(|_| conn.prepare_cached("UPDATE audit_index_state SET through = ?1"))
    .and_then(|mut s| s.execute([to]))
    .map(|_| ())
    .map_err(db_error)
}

/// The longest time read-audit entries may wait for an fsync (see `Writer::choose_sync`).
const AUDIT_SYNC_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// A commit that only appends audit records (the audit of reads): it
/// cannot conflict, so it needs no savepoint of its own.
fn audit_only(commit: &Commit) -> bool {
    commit.checks.is_empty() && commit.writes.is_empty() && commit.reindex.is_empty() && commit.sys.is_empty()
}

/// Commits writing more resources than this are applied in a group of
/// their own, without a savepoint.
const ALONE_ABOVE_WRITES: usize = 100;

/// Whether `commit` is applied in a group of its own. Inside a savepoint
/// (a group of several commits) every statement opens a statement journal
/// and, on closing it, SQLite truncates the savepoint's in-memory
/// sub-journal back to where the statement began by walking it from its
/// start (`memjrnlTruncate`; in memory because `temp_store=MEMORY` keeps
/// plaintext pages out of temporary files). The cost of a statement so
/// grows with everything the savepoint wrote before it: a migration's
/// batch of 2,000 resources (some 50,000 statements) spent 98% of the
/// writer's time there. Alone, a commit needs no savepoint and each
/// statement's journal is freed from its own start.
fn applied_alone(commit: &Commit) -> bool {
    commit.writes.len() + commit.reindex.len() > ALONE_ABOVE_WRITES
}

impl Writer {
    fn new(
        conn: Connection,
        max_group: usize,
        chain: AuditChain,
        cache: Option<Arc<ResourceCache>>,
        owner: i64,
    ) -> Result<Writer, StoreError> {
        let text_pending = crate::fulltext::sqlite_pending(&conn).unwrap_or(0);
        let head = AuditHead::load(&conn)?;
        Ok(Writer {
            conn,
            max_group,
            params: Default::default(),
            systems: FastMap::default(),
            insert_sql: std::array::from_fn(|kind| insert_statements(INDEX_COLUMNS[kind])),
            insert_patient_sql: insert_statements(PATIENT_TOKEN_COLUMNS),
            text_pending,
            text_direct: false,
            chain,
            head,
            relaxed: false,
            unsynced: false,
            last_fsync: std::time::Instant::now(),
            cache,
            owner,
        })
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut group: Vec<Job> = Vec::with_capacity(self.max_group);
        // A large commit taken from the queue while a group was forming: it
        // starts the next group, alone.
        let mut held: Option<Job> = None;
        while let Some(first) = held.take().or_else(|| self.next_job(&mut receiver)) {
            if let Some(work) = first.maintenance {
                let result = self.maintain(work);
                first.answer(result);
                continue;
            }
            let alone = applied_alone(&first.commit);
            group.push(first);
            // Everything that queued up while the previous group was being
            // fsync'd joins this group (but a large commit goes alone).
            while !alone && group.len() < self.max_group {
                match receiver.try_recv() {
                    Ok(job) if job.maintenance.is_some() || applied_alone(&job.commit) => {
                        held = Some(job);
                        break;
                    }
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.apply_group(&mut group);
            if self.text_pending >= crate::fulltext::FLUSH_ROWS {
                self.flush_text();
            }
        }
        // The store is closing: its count of resource writes goes.
        if let Err(error) = self.conn.execute("DELETE FROM resource_writer WHERE owner = ?1", [self.owner]) {
            tracing::warn!(error = %db_error(error), "cannot remove this store's resource_writer row");
        }
        // The store is closing: fold the WAL into the database file and
        // truncate it, so a stopped server leaves one compact file behind.
        if let Err(error) = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(%error, "final WAL checkpoint failed; the WAL is replayed at next open");
        }
    }

    fn apply_group(&mut self, group: &mut Vec<Job>) {
        let started = std::time::Instant::now();
        self.choose_sync(group);
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let error = db_error(e);
            for job in group.drain(..) {
                job.answer(Err(error.clone()));
            }
            return;
        }
        // Another process (`hearth admin ...` beside a running server) may
        // have appended since our last group: the head is read again under
        // the write lock, so the chain continues from what is stored.
        match AuditHead::load(&self.conn) {
            Ok(stored) => self.head = stored,
            Err(error) => {
                let head = self.head.clone();
                self.abort_group(group, error, head);
                return;
            }
        }
        // The audit head as committed: what a rollback of the group restores.
        let head = self.head.clone();
        let indexed = match patients_indexed(&self.conn) {
            Ok(through) => through,
            Err(error) => {
                self.abort_group(group, error, head);
                return;
            }
        };
        let mut results = Vec::with_capacity(group.len());
        self.text_direct = matches!(group.as_slice(), [job] if applied_alone(&job.commit));
        if let [job] = group.as_slice() {
            // Alone in its group, a commit needs no savepoint: on failure the
            // whole transaction is rolled back (and sub-journaling is avoided).
            let result = self.intern(&job.commit).and_then(|()| self.apply(&job.commit));
            if let Err(error) = result {
                self.abort_group(group, error, head);
                return;
            }
            results.push(Ok(()));
        } else {
            for job in group.iter() {
                let result = if audit_only(&job.commit) {
                    // Appends cannot conflict; one that fails anyway (I/O)
                    // has no savepoint to undo it alone, so the group fails.
                    match self.append_audit(&job.commit.audit) {
                        Ok(()) => Ok(()),
                        Err(error) => {
                            self.abort_group(group, error, head);
                            return;
                        }
                    }
                } else {
                    match self.intern(&job.commit).and_then(|()| self.apply_isolated(&job.commit)) {
                        Err(error) if self.conn.is_autocommit() => {
                            // SQLite rolled the whole transaction back by itself
                            // (I/O error, disk full): nothing of the group is left.
                            self.abort_group(group, error, head);
                            return;
                        }
                        result => result,
                    }
                };
                results.push(result);
            }
        }
        // Entries past the patient index are moved into it in bulk.
        if self.head.seq >= indexed + PATIENT_INDEX_BATCH
            && let Err(error) = index_patients(&self.conn, indexed, self.head.seq)
        {
            self.abort_group(group, error, head);
            return;
        }
        // Other processes learn from this count that resources changed.
        if group.iter().any(|job| !job.commit.writes.is_empty())
            && let Err(e) = self
                .conn
                .prepare_cached(
                    "INSERT INTO resource_writer (owner, commits) VALUES (?1, 1) \
                     ON CONFLICT (owner) DO UPDATE SET commits = commits + 1",
                )
                .and_then(|mut s| s.execute([self.owner]))
        {
            self.abort_group(group, db_error(e), head);
            return;
        }
        match self.conn.execute_batch("COMMIT") {
            Ok(()) => {
                tracing::debug!(commits = group.len(), micros = started.elapsed().as_micros() as u64, "sqlite group commit");
                // Before anyone is answered, so that a writer reads its write.
                if let Some(cache) = &self.cache {
                    for (job, result) in group.iter().zip(&results) {
                        if result.is_ok() {
                            for write in &job.commit.writes {
                                cache.invalidate(&write.resource_type, &write.id);
                            }
                        }
                    }
                }
                for (job, result) in group.drain(..).zip(results) {
                    job.answer(result);
                }
            }
            Err(e) => {
                let error = db_error(e);
                tracing::error!(error = %error, "sqlite group commit failed");
                self.abort_group(group, error, head);
            }
        }
    }

    /// Does schema work (between groups: no transaction is open).
    fn maintain(&mut self, work: Maintenance) -> Result<(), StoreError> {
        let result = match work {
            Maintenance::DeferSearchIndexes => defer_search_indexes(&self.conn),
            Maintenance::RestoreSearchIndexes => restore_search_indexes(&self.conn).map(|_| ()),
        };
        result.map_err(db_error)
    }

    /// The next commit to apply; `None` when the store is closing. While
    /// read-audit entries wait for their fsync, waiting is bounded by
    /// [`AUDIT_SYNC_WINDOW`]: then the WAL is fsync'd, making them durable.
    fn next_job(&mut self, receiver: &mut mpsc::Receiver<Job>) -> Option<Job> {
        while self.unsynced {
            match receiver.try_recv() {
                Ok(job) => return Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.sync_wal();
                    return None;
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    if self.last_fsync.elapsed() >= AUDIT_SYNC_WINDOW {
                        self.sync_wal();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(250));
                    }
                }
            }
        }
        receiver.blocking_recv()
    }

    /// fsyncs the WAL file (fsync acts on the file, whichever descriptor
    /// asks), making every committed frame durable.
    fn sync_wal(&mut self) {
        let synced = self
            .conn
            .path()
            .map(|db| format!("{db}-wal"))
            .ok_or_else(|| std::io::Error::other("in-memory database"))
            .and_then(|wal| std::fs::File::open(wal)?.sync_data());
        if let Err(error) = synced {
            tracing::warn!(%error, "could not fsync the WAL; the next group is synced in full");
            // Force the next group to be synced by SQLite itself.
            self.last_fsync = std::time::Instant::now() - AUDIT_SYNC_WINDOW;
        } else {
            self.last_fsync = std::time::Instant::now();
        }
        self.unsynced = false;
    }

    /// Durability of a group. A group that writes anything but audit records
    /// is fsync'd (synchronous=FULL). A group of read-audit records only is
    /// appended to the WAL without its own fsync (synchronous=NORMAL), unless
    /// the last fsync is older than [`AUDIT_SYNC_WINDOW`]: then it is fsync'd
    /// too, and with it every earlier WAL frame. So a power cut can lose at
    /// most that window of read-audit entries, never a write or its audit,
    /// and reads are not held to one fsync each (which would cap them at the
    /// disk's fsync rate).
    fn choose_sync(&mut self, group: &[Job]) {
        let relaxed = group.iter().all(|job| audit_only(&job.commit))
            && self.last_fsync.elapsed() < AUDIT_SYNC_WINDOW;
        if relaxed != self.relaxed {
            let mode = if relaxed { "NORMAL" } else { "FULL" };
            if let Err(error) = self.conn.pragma_update(None, "synchronous", mode) {
                tracing::warn!(error = %db_error(error), "could not change synchronous mode");
                return;
            }
            self.relaxed = relaxed;
        }
        if relaxed {
            self.unsynced = true;
        } else {
            self.last_fsync = std::time::Instant::now();
            self.unsynced = false;
        }
    }

    /// Rolls the open transaction back and answers every commit of the
    /// group with `error`; the audit head goes back to `head`, the last
    /// entry committed.
    fn abort_group(&mut self, group: &mut Vec<Job>, error: StoreError, head: AuditHead) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %db_error(e), "sqlite rollback failed");
        }
        self.forget_interned();
        self.head = head;
        for job in group.drain(..) {
            job.answer(Err(error.clone()));
        }
    }

    /// Moves the pending full-text rows into FTS5 (fulltext.rs). On failure
    /// they stay pending, where searches find them too.
    fn flush_text(&mut self) {
        let started = std::time::Instant::now();
        match crate::fulltext::sqlite_flush(&self.conn) {
            Ok(rows) => {
                self.text_pending = 0;
                tracing::debug!(rows, micros = started.elapsed().as_micros() as u64, "sqlite full-text flush");
            }
            Err(error) => {
                self.text_pending = 0;
                tracing::warn!(error = %db_error(error), "sqlite full-text flush failed; the rows stay pending");
            }
        }
    }

    /// Interned ids added in a rolled back transaction are gone with it; the
    /// cache refills from the tables as needed.
    fn forget_interned(&mut self) {
        self.params = Default::default();
        self.systems.clear();
    }

    /// Applies one commit inside a savepoint, undoing only it on failure
    /// (its audit entries too: the head goes back to where it was).
    fn apply_isolated(&mut self, commit: &Commit) -> Result<(), StoreError> {
        self.conn.execute_batch("SAVEPOINT hearth_commit").map_err(db_error)?;
        let head = self.head.clone();
        match self.apply(commit) {
            Ok(()) => match self.conn.execute_batch("RELEASE hearth_commit") {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.head = head;
                    Err(db_error(e))
                }
            },
            Err(error) => {
                self.head = head;
                self.conn.execute_batch("ROLLBACK TO hearth_commit; RELEASE hearth_commit").map_err(db_error)?;
                Err(error)
            }
        }
    }

    fn apply(&mut self, commit: &Commit) -> Result<(), StoreError> {
        let mut rows = PendingRows::default();
        let implied = implied_version_checks(commit);
        for (n, check) in commit.checks.iter().enumerate() {
            if !implied.contains(&n) {
                check_holds(&self.conn, check)?;
            }
        }
        // Every compare-and-swap is checked before anything is written.
        let sys_versions = crate::audit::check_sys(&commit.sys, |kind, key| sys_version(&self.conn, kind, key))?;
        for write in &commit.writes {
            self.write(write, &mut rows)?;
        }
        for reindex in &commit.reindex {
            self.reindex(reindex, &mut rows)?;
        }
        self.insert_rows(&mut rows)?;
        for (write, version) in commit.sys.iter().zip(sys_versions) {
            write_sys(&self.conn, write, version)?;
        }
        self.append_audit(&commit.audit)
    }

    /// Appends audit records after the head, numbering and linking them.
    /// On failure the head is left as it was.
    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let mut head = self.head.clone();
        for record in records {
            let columns = crate::audit::EntryColumns::of(record);
            let seq = head.seq + 1;
            let hash = self.chain.link(&head.hash, seq, &columns.record);
            let seq_value = crate::audit::to_i64(seq)?;
            self.conn
                .prepare_cached(
                    "INSERT INTO audit_entry (seq, at, who, patient, action, event, resource_type, outcome, record, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        seq_value,
                        columns.at,
                        columns.who,
                        columns.patient,
                        columns.action,
                        columns.event,
                        columns.resource_type,
                        columns.outcome,
                        columns.record,
                        hash
                    ])
                })
                .map_err(db_error)?;
            for patient in &columns.more_patients {
                self.conn
                    .prepare_cached("INSERT INTO audit_patient (patient, seq) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![patient, seq_value]))
                    .map_err(db_error)?;
            }
            head = AuditHead { seq, hash };
        }
        self.head = head;
        Ok(())
    }

    /// Replaces the index rows of a resource still at the version reindexed.
    fn reindex<'c>(&mut self, reindex: &'c Reindex, rows: &mut PendingRows<'c>) -> Result<(), StoreError> {
        // The rows waiting may be this resource's: inserted before its rows go.
        self.insert_rows(rows)?;
        let version = to_i64(reindex.version_id)?;
        let found: Option<(i64, i64, Option<i64>)> = self
            .conn
            .prepare_cached(
                "SELECT rid, last_updated, container FROM resource WHERE type = ?1 AND id = ?2 AND version = ?3 AND deleted = 0",
            )
            .and_then(|mut s| {
                s.query_row(params![reindex.resource_type, reindex.id, version], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .map_err(db_error)?;
        let Some((rid, last_updated, container)) = found else { return Ok(()) };
        delete_index(&self.conn, rid)?;
        if sql::is_containing(container) {
            self.delete_contained(rid)?;
        }
        let marker = sql::containing_marker(!reindex.contained.is_empty());
        if marker != container {
            self.conn
                .prepare_cached("UPDATE resource SET container = ?2 WHERE rid = ?1")
                .and_then(|mut s| s.execute(params![rid, marker]))
                .map_err(db_error)?;
        }
        if crate::fulltext::sqlite_replace(&self.conn, rid, true, Some(&reindex.text), self.text_direct).map_err(db_error)? {
            self.text_pending += 1;
        }
        let owner = sql::Owner { resource_type: &reindex.resource_type, id: &reindex.id, contained: &reindex.contained };
        self.add_index_rows(rows, rid, &reindex.resource_type, &reindex.index, Some((owner, last_updated)))?;
        let container = Container { rid, resource_type: &reindex.resource_type, id: &reindex.id, version, last_updated };
        self.insert_contained(&container, &reindex.contained, rows)
    }

    /// Removes the rows of the resources a container's current version
    /// contains (sql.rs, "Contained resources"), with their index rows and words.
    fn delete_contained(&mut self, container: i64) -> Result<(), StoreError> {
        let rids: Vec<i64> = self
            .conn
            .prepare_cached("SELECT rid FROM resource WHERE container = ?1")
            .and_then(|mut s| s.query_map([container], |r| r.get(0))?.collect())
            .map_err(db_error)?;
        if rids.is_empty() {
            return Ok(());
        }
        for rid in rids {
            delete_index(&self.conn, rid)?;
            crate::fulltext::sqlite_replace(&self.conn, rid, true, None, false).map_err(db_error)?;
        }
        self.conn
            .prepare_cached("DELETE FROM resource WHERE container = ?1")
            .and_then(|mut s| s.execute([container]))
            .map_err(db_error)?;
        Ok(())
    }

    /// Writes a row per resource the container's current version contains,
    /// with its index rows and words (sql.rs, "Contained resources").
    fn insert_contained<'c>(
        &mut self,
        container: &Container<'_>,
        contained: &'c [ContainedIndex],
        rows: &mut PendingRows<'c>,
    ) -> Result<(), StoreError> {
        for resource in contained {
            let key = sql::contained_type_key(&resource.resource_type);
            let id = sql::contained_row_id(container.resource_type, container.id, &resource.id);
            self.conn
                .prepare_cached(
                    "INSERT INTO resource (type, id, version, last_updated, deleted, container) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| {
                    s.execute(params![key, id, container.version, container.last_updated, sql::CONTAINED, container.rid])
                })
                .map_err(db_error)?;
            let rid = self.conn.last_insert_rowid();
            self.add_index_rows(rows, rid, &key, &resource.index, None)?;
            if crate::fulltext::sqlite_replace(&self.conn, rid, false, Some(&resource.text), self.text_direct).map_err(db_error)? {
                self.text_pending += 1;
            }
        }
        Ok(())
    }

    /// Makes sure every parameter code and system of the commit has an
    /// interned id. Runs outside the commit's savepoint so that the cache
    /// never holds an id a savepoint rollback removed.
    fn intern(&mut self, commit: &Commit) -> Result<(), StoreError> {
        for (resource_type, entry) in sql::typed_index_entries(commit) {
            let kind = Kind::of(&entry.value);
            if self.pid(&resource_type, &entry.param, kind).is_err() {
                let pid = intern_param(&self.conn, &resource_type, &entry.param, kind)?;
                self.params[kind_slot(kind)]
                    .entry(resource_type.into_owned())
                    .or_default()
                    .insert(entry.param.clone(), pid);
            }
            let system = match &entry.value {
                IndexValue::Token { system: Some(system), .. } | IndexValue::Quantity { system: Some(system), .. } => system,
                _ => continue,
            };
            if !self.systems.contains_key(system) {
                let sid = intern_row(
                    &self.conn,
                    "INSERT INTO term_system (uri) VALUES (?1) ON CONFLICT (uri) DO NOTHING",
                    "SELECT sid FROM term_system WHERE uri = ?1",
                    system,
                )?;
                self.systems.insert(system.clone(), sid);
            }
        }
        Ok(())
    }

    fn pid(&self, resource_type: &str, param: &str, kind: Kind) -> Result<i64, StoreError> {
        self.params[kind_slot(kind)]
            .get(resource_type)
            .and_then(|codes| codes.get(param))
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

    fn write<'c>(&mut self, write: &'c Write, rows: &mut PendingRows<'c>) -> Result<(), StoreError> {
        let conn = &self.conn;
        let version = to_i64(write.version_id)?;
        let deleted = i64::from(write.body.is_none());
        let last_updated = write.last_updated.micros();
        let marker = sql::containing_marker(write.body.is_some() && !write.contained.is_empty());
        // A first version is inserted without looking first: the unique
        // index on (type, id) refuses it if the resource exists (one B-tree
        // descent per new resource instead of two, in a bulk load).
        let existing: Option<(i64, i64, Option<i64>)> = if version == 1 {
            None
        } else {
            conn.prepare_cached("SELECT rid, version, container FROM resource WHERE type = ?1 AND id = ?2")
                .and_then(|mut s| {
                    s.query_row(params![write.resource_type, write.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
                })
                .map_err(db_error)?
        };
        let rid = match existing {
            None => {
                if version != 1 {
                    return Err(StoreError::Conflict(format!(
                        "{} does not exist; its first version must be 1",
                        write.resource_type
                    )));
                }
                conn.prepare_cached(
                    "INSERT INTO resource (type, id, version, last_updated, deleted, container) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut s| s.execute(params![write.resource_type, write.id, version, last_updated, deleted, marker]))
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict(format!("{} exists; version 1 is not the next", write.resource_type))
                    } else {
                        db_error(e)
                    }
                })?;
                conn.last_insert_rowid()
            }
            Some((rid, current, _)) => {
                if version != current + 1 {
                    return Err(StoreError::Conflict(format!(
                        "{} is at version {current}; version {version} is not the next",
                        write.resource_type
                    )));
                }
                // The rows waiting may be this resource's: inserted before its rows go.
                self.insert_rows(rows)?;
                let conn = &self.conn;
                conn.prepare_cached(
                    "UPDATE resource SET version = ?1, last_updated = ?2, deleted = ?3, container = ?5 WHERE rid = ?4",
                )
                .and_then(|mut s| s.execute(params![version, last_updated, deleted, rid, marker]))
                .map_err(db_error)?;
                delete_index(conn, rid)?;
                rid
            }
        };
        if existing.is_some_and(|(_, _, container)| sql::is_containing(container)) {
            self.delete_contained(rid)?;
        }
        let conn = &self.conn;
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
            let owner = sql::Owner { resource_type: &write.resource_type, id: &write.id, contained: &write.contained };
            self.add_index_rows(rows, rid, &write.resource_type, &write.index, Some((owner, last_updated)))?;
        }
        if crate::fulltext::sqlite_replace(conn, rid, existing.is_some(), write.body.as_ref().map(|_| &write.text), self.text_direct)
            .map_err(db_error)?
        {
            self.text_pending += 1;
        }
        if write.body.is_some() && !write.contained.is_empty() {
            let container = Container { rid, resource_type: &write.resource_type, id: &write.id, version, last_updated };
            self.insert_contained(&container, &write.contained, rows)?;
        }
        Ok(())
    }

    /// Adds a version's index rows to those waiting for [`Self::insert_rows`].
    /// `owner`: the resource itself and its `last_updated`, when it has rows
    /// in `idx_patient_token` (not a contained resource, which no patient
    /// search reads).
    fn add_index_rows<'c>(
        &self,
        rows: &mut PendingRows<'c>,
        rid: i64,
        resource_type: &str,
        entries: &'c [IndexEntry],
        owner: Option<(sql::Owner<'c>, i64)>,
    ) -> Result<(), StoreError> {
        for (n, entry) in entries.iter().enumerate() {
            let kind = Kind::of(&entry.value);
            let pid = self.pid(resource_type, &entry.param, kind)?;
            rows.index[kind_slot(kind)].push(IndexRow { rid, pid, n: n as i64, entry });
        }
        if let Some((owner, last_updated)) = owner {
            for token in sql::patient_tokens(entries, &owner) {
                let pid = self.pid(resource_type, token.param, Kind::Token)?;
                let sid = match token.system {
                    Some(system) => {
                        self.systems.get(system).copied().ok_or_else(|| StoreError::Internal("system was not interned".into()))?
                    }
                    None => 0,
                };
                rows.patient.push(PatientRow { rid, pid, sid, token, id: owner.id, last_updated });
            }
        }
        if rows.len() >= PENDING_ROWS_MAX {
            self.insert_rows(rows)?;
        }
        Ok(())
    }

    /// Inserts the index rows waiting, in multi-row statements of
    /// [`INSERT_CHUNKS`] rows: a statement's execution costs about as much
    /// as the B-tree insert of a row, so the rows of many resources share
    /// statements. Each table's rows go in the order they came (by `rid`
    /// in a bulk load: appended to the clustered B-tree).
    fn insert_rows(&self, rows: &mut PendingRows<'_>) -> Result<(), StoreError> {
        for kind in Kind::ALL {
            let slot = kind_slot(kind);
            let mut rest = rows.index[slot].as_slice();
            while !rest.is_empty() {
                let (size_slot, chunk, tail) = chunk_of(rest);
                let mut statement = self.conn.prepare_cached(&self.insert_sql[slot][size_slot]).map_err(db_error)?;
                let mut column = 0;
                for row in chunk {
                    self.bind_row(&mut statement, &mut column, row)?;
                }
                statement.raw_execute().map_err(db_error)?;
                rest = tail;
            }
            rows.index[slot].clear();
        }
        let mut rest = rows.patient.as_slice();
        while !rest.is_empty() {
            let (size_slot, chunk, tail) = chunk_of(rest);
            let mut statement = self.conn.prepare_cached(&self.insert_patient_sql[size_slot]).map_err(db_error)?;
            let mut column = 0;
            for row in chunk {
                let mut bind = |value: &dyn rusqlite::ToSql| {
                    column += 1;
                    statement.raw_bind_parameter(column, value).map_err(db_error)
                };
                bind(&row.rid)?;
                bind(&row.pid)?;
                bind(&row.token.patient.as_ref())?;
                bind(&row.sid)?;
                bind(&row.token.code)?;
                bind(&row.token.via)?;
                bind(&row.token.date_low)?;
                bind(&row.token.date_high)?;
                bind(&row.id)?;
                bind(&row.last_updated)?;
            }
            statement.raw_execute().map_err(db_error)?;
            rest = tail;
        }
        rows.patient.clear();
        Ok(())
    }

    /// Binds one row's values (in [`INDEX_COLUMNS`] order) after `column`.
    fn bind_row(
        &self,
        statement: &mut rusqlite::CachedStatement<'_>,
        column: &mut usize,
        row: &IndexRow<'_>,
    ) -> Result<(), StoreError> {
        let mut bind = |value: &dyn rusqlite::ToSql| {
            *column += 1;
            statement.raw_bind_parameter(*column, value).map_err(db_error)
        };
        bind(&row.rid)?;
        bind(&row.pid)?;
        bind(&row.n)?;
        match &row.entry.value {
            IndexValue::String { normalized, exact } => {
                bind(normalized)?;
                bind(exact)?;
            }
            IndexValue::Token { system, code, text } => {
                bind(&self.sid(system.as_ref())?)?;
                bind(code)?;
                bind(&text.as_deref().map(fhir::search::normalize_string))?;
            }
            IndexValue::Reference { target_type, target_id, url } => {
                bind(target_type)?;
                bind(target_id)?;
                bind(url)?;
            }
            IndexValue::Date { low, high } => {
                bind(low)?;
                bind(high)?;
            }
            IndexValue::Number { low, high } => {
                bind(low)?;
                bind(high)?;
            }
            IndexValue::Quantity { low, high, system, code } => {
                bind(low)?;
                bind(high)?;
                bind(&self.sid(system.as_ref())?)?;
                bind(code)?;
            }
            IndexValue::Uri { value } => bind(value)?,
            IndexValue::Composite(parts) => {
                for k in 0..fhir::search::query::MAX_COMPOSITE_COMPONENTS {
                    let (system, code, low, high) = parts.get(k).map_or((None, None, None, None), sql::composite_columns);
                    bind(&system)?;
                    bind(&code)?;
                    bind(&low)?;
                    bind(&high)?;
                }
            }
        }
        Ok(())
    }
}

/// The resource row a version's contained resources belong to.
struct Container<'a> {
    rid: i64,
    resource_type: &'a str,
    id: &'a str,
    version: i64,
    last_updated: i64,
}

/// Rows per multi-row INSERT; the rows waiting for a table are split into
/// these sizes, so each table has only this many distinct statements.
const INSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The most index rows a commit keeps waiting before it inserts them.
const PENDING_ROWS_MAX: usize = 8192;

/// The longest of [`INSERT_CHUNKS`] that `rows` fill (its slot), the rows
/// for it and the rest.
fn chunk_of<T>(rows: &[T]) -> (usize, &[T], &[T]) {
    let last = INSERT_CHUNKS.len() - 1;
    let (slot, size) = INSERT_CHUNKS.iter().copied().enumerate().find(|(_, size)| *size <= rows.len()).unwrap_or((last, 1));
    let (chunk, rest) = rows.split_at(size.min(rows.len()));
    (slot, chunk, rest)
}

/// A version's index row waiting for its INSERT ([`Writer::insert_rows`]).
struct IndexRow<'c> {
    rid: i64,
    pid: i64,
    n: i64,
    entry: &'c IndexEntry,
}

/// An `idx_patient_token` row waiting for its INSERT.
struct PatientRow<'c> {
    rid: i64,
    pid: i64,
    sid: i64,
    token: sql::PatientToken<'c>,
    /// The resource's id and last update.
    id: &'c str,
    last_updated: i64,
}

/// The index rows of a commit not inserted yet, per table.
#[derive(Default)]
struct PendingRows<'c> {
    index: [Vec<IndexRow<'c>>; 8],
    patient: Vec<PatientRow<'c>>,
}

impl PendingRows<'_> {
    fn len(&self) -> usize {
        self.index.iter().map(Vec::len).sum::<usize>() + self.patient.len()
    }
}

/// Columns of each index table, in `Kind::ALL` order.
const INDEX_COLUMNS: [&str; 8] = [
    "idx_string (rid, pid, n, normalized, exact)",
    "idx_token (rid, pid, n, sid, code, text)",
    "idx_reference (rid, pid, n, target_type, target_id, url)",
    "idx_date (rid, pid, n, low, high)",
    "idx_number (rid, pid, n, low, high)",
    "idx_quantity (rid, pid, n, low, high, sid, code)",
    "idx_uri (rid, pid, n, value)",
    "idx_composite (rid, pid, n, s0, c0, l0, h0, s1, c1, l1, h1, s2, c2, l2, h2)",
];

/// Columns of `idx_patient_token`.
const PATIENT_TOKEN_COLUMNS: &str = "idx_patient_token (rid, pid, patient, sid, code, via, date_low, date_high, id, last_updated)";

/// `INSERT OR FAIL INTO <table> (<columns>) VALUES (?, ...), ...` per chunk
/// size. `OR FAIL` rather than the default `OR ABORT`: a multi-row statement
/// that may abort makes SQLite keep a statement journal (a copy of every
/// page the statement changes, to undo it alone), about 5% of a bulk load's
/// writer time. Nothing needs a statement undone alone here: a failing
/// commit is undone whole (its savepoint, or the transaction).
fn insert_statements(columns: &str) -> [String; INSERT_CHUNKS.len()] {
    let arity = columns.matches(',').count() + 1;
    let row = format!("({})", vec!["?"; arity].join(", "));
    std::array::from_fn(|size| format!("INSERT OR FAIL INTO {columns} VALUES {}", vec![row.as_str(); INSERT_CHUNKS[size]].join(", ")))
}

/// `DELETE FROM idx_* WHERE rid = ?1`, in `Kind::ALL` order.
const DELETE_INDEX: [&str; 8] = [
    "DELETE FROM idx_string WHERE rid = ?1",
    "DELETE FROM idx_token WHERE rid = ?1",
    "DELETE FROM idx_reference WHERE rid = ?1",
    "DELETE FROM idx_date WHERE rid = ?1",
    "DELETE FROM idx_number WHERE rid = ?1",
    "DELETE FROM idx_quantity WHERE rid = ?1",
    "DELETE FROM idx_uri WHERE rid = ?1",
    "DELETE FROM idx_composite WHERE rid = ?1",
];

/// Removes every index row of a resource (its previous version's).
fn delete_index(conn: &Connection, rid: i64) -> Result<(), StoreError> {
    for statement in DELETE_INDEX.iter().chain(["DELETE FROM idx_patient_token WHERE rid = ?1"].iter()) {
        conn.prepare_cached(statement).and_then(|mut s| s.execute([rid])).map_err(db_error)?;
    }
    Ok(())
}

fn kind_slot(kind: Kind) -> usize {
    (kind.code() - 1) as usize
}

fn intern_row(conn: &Connection, insert: &str, select: &str, text: &str) -> Result<i64, StoreError> {
    conn.prepare_cached(insert)
        .and_then(|mut s| s.execute([text]))
        .and_then(|_| conn.prepare_cached(select))
        .and_then(|mut s| s.query_row([text], |r| r.get(0)))
        .map_err(db_error)
}

/// The interned id of a search parameter code of a resource type and kind.
fn intern_param(conn: &Connection, resource_type: &str, code: &str, kind: Kind) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO search_param (type, code, kind) VALUES (?1, ?2, ?3) ON CONFLICT (type, code, kind) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![resource_type, code, kind.code()]))
    .and_then(|_| conn.prepare_cached("SELECT pid FROM search_param WHERE type = ?1 AND code = ?2 AND kind = ?3"))
    .and_then(|mut s| s.query_row(params![resource_type, code, kind.code()], |r| r.get(0)))
    .map_err(db_error)
}

/// The stored version of a system record.
fn sys_version(conn: &Connection, kind: &str, key: &str) -> Result<Option<u64>, StoreError> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM sys_record WHERE kind = ?1 AND key = ?2")
        .and_then(|mut s| s.query_row([kind, key], |r| r.get(0)).optional())
        .map_err(db_error)?;
    version.map(crate::audit::version).transpose()
}

/// Stores (at `version`) or deletes (`None`) a system record whose
/// compare-and-swap was checked.
fn write_sys(conn: &Connection, write: &SysWrite, version: Option<u64>) -> Result<(), StoreError> {
    match (&write.json, version) {
        (Some(json), Some(version)) => {
            let version = crate::audit::to_i64(version)?;
            conn.prepare_cached(
                "INSERT INTO sys_record (kind, key, version, json) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, json = excluded.json",
            )
            .and_then(|mut s| s.execute(params![write.kind, write.key, version, &**json]))
            .map_err(db_error)?;
        }
        _ => {
            conn.prepare_cached("DELETE FROM sys_record WHERE kind = ?1 AND key = ?2")
                .and_then(|mut s| s.execute(params![write.kind, write.key]))
                .map_err(db_error)?;
        }
    }
    Ok(())
}

fn sys_row(row: &Row<'_>) -> rusqlite::Result<(String, i64, String)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn to_sys_record((key, version, json): (String, i64, String)) -> Result<SysRecord, StoreError> {
    Ok(SysRecord { key, version: crate::audit::version(version)?, json: Arc::from(json) })
}

fn audit_rows(conn: &Connection, statement: &Sql) -> Result<Vec<AuditEntry>, StoreError> {
    let rows: Vec<(i64, String, String)> = conn
        .prepare_cached(&statement.text)
        .and_then(|mut s| {
            s.query_map(rusqlite::params_from_iter(statement.params.iter()), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(db_error)?;
    rows.into_iter().map(|(seq, record, hash)| crate::audit::entry(seq, record, hash)).collect()
}

/// Evaluates a commit's check inside its transaction.
/// A UNIQUE or PRIMARY KEY constraint refused the statement.
fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// The version checks of `commit` that its own writes enforce (by index in
/// `commit.checks`): a check that `Type/id` is at version V (or absent),
/// where the commit's first write of `Type/id` makes version V+1 (or 1).
/// [`Writer::write`] refuses a version that is not the next one, so such a
/// check would only look the resource up a second time (a bulk load checks
/// every resource it writes).
fn implied_version_checks(commit: &Commit) -> std::collections::HashSet<usize, foldhash::quality::RandomState> {
    let mut first: FastMap<(&str, &str), u64> = FastMap::with_capacity_and_hasher(commit.writes.len(), Default::default());
    for write in &commit.writes {
        first.entry((write.resource_type.as_str(), write.id.as_str())).or_insert(write.version_id);
    }
    commit
        .checks
        .iter()
        .enumerate()
        .filter_map(|(n, check)| match check {
            Check::Version { resource_type, id, expected } => {
                let next = expected.map_or(Some(1), |v| v.checked_add(1));
                (next.is_some() && first.get(&(resource_type.as_str(), id.as_str())).copied() == next).then_some(n)
            }
            Check::Matches { .. } => None,
        })
        .collect()
}

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

/// Reader threads, each owning one connection, fed from one queue: a busy
/// thread takes the next read without sleeping, so under load a read costs
/// no thread wake-ups beyond answering the caller.
struct ReaderPool {
    jobs: Option<std::sync::mpsc::Sender<ReadJob>>,
    threads: Vec<JoinHandle<()>>,
}

type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

impl ReaderPool {
    fn start(path: &Path, options: &SqliteOptions) -> Result<ReaderPool, StoreError> {
        let (sender, receiver) = std::sync::mpsc::channel::<ReadJob>();
        // One queue for all threads: whichever is free takes the next job.
        let receiver = Arc::new(Mutex::new(receiver));
        let mut pool = ReaderPool { jobs: Some(sender), threads: Vec::new() };
        for n in 0..options.readers.max(1) {
            let mut conn = open_connection(path, options, Role::Reader)?;
            let receiver = Arc::clone(&receiver);
            let thread = std::thread::Builder::new()
                .name(format!("hearth-sqlite-r{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, not while running it.
                        let next = receiver.lock().recv();
                        let Ok(job) = next else { break };
                        // A failing read must not take the connection's thread down.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                    }
                })
                .map_err(|e| StoreError::Internal(format!("cannot start a sqlite reader thread: {e}")))?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }
}

impl Drop for ReaderPool {
    fn drop(&mut self) {
        // Closing the queue ends the threads once queued reads are answered.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Inner {
    /// Runs `f` on a reader connection, on a reader thread.
    async fn with_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let jobs = self.readers.jobs.as_ref().ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        });
        jobs.send(job).map_err(|_| StoreError::Unavailable("sqlite readers have stopped".into()))?;
        answer.await.map_err(|_| StoreError::Internal("sqlite read failed".into()))?
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

/// The current version of the resource stored under row id `rid`.
fn read_current_by_rid(conn: &Connection, rid: i64) -> Result<Option<StoredResource>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT r.type, r.id, v.version, v.last_updated, v.method, v.body \
             FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version \
             WHERE r.rid = ?1",
        )
        .and_then(|mut s| s.query_row([rid], resource_row).optional())
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
        let ticket = match &self.inner.cache {
            Some(cache) => match cache.get(resource_type, id) {
                Ok(hit) => return Ok(Some(hit)),
                Err(ticket) => Some(ticket),
            },
            None => None,
        };
        let (resource_type, id) = (resource_type.to_owned(), id.to_owned());
        let found = self.inner.with_reader(move |conn| read_current(conn, &resource_type, &id)).await?;
        if let (Some(cache), Some(ticket), Some(found)) = (&self.inner.cache, ticket, &found) {
            cache.keep(ticket, found);
        }
        Ok(found)
    }

    async fn read_many(&self, keys: &[(String, String)]) -> Result<Vec<StoredResource>, StoreError> {
        // Cache hits first; the misses in one reader call.
        let mut found: Vec<Option<StoredResource>> = vec![None; keys.len()];
        let mut missing: Vec<(usize, String, String, Option<crate::cache::Ticket>)> = Vec::new();
        for (i, (resource_type, id)) in keys.iter().enumerate() {
            match self.inner.cache.as_ref().map(|c| c.get(resource_type, id)) {
                Some(Ok(hit)) => found[i] = Some(hit),
                Some(Err(ticket)) => missing.push((i, resource_type.clone(), id.clone(), Some(ticket))),
                None => missing.push((i, resource_type.clone(), id.clone(), None)),
            }
        }
        if !missing.is_empty() {
            let wanted: Vec<(String, String)> = missing.iter().map(|(_, t, id, _)| (t.clone(), id.clone())).collect();
            let rows = self
                .inner
                .with_reader(move |conn| {
                    wanted.iter().map(|(t, id)| read_current(conn, t, id)).collect::<Result<Vec<_>, _>>()
                })
                .await?;
            for ((i, _, _, ticket), row) in missing.into_iter().zip(rows) {
                if let (Some(cache), Some(ticket), Some(row)) = (&self.inner.cache, ticket, &row) {
                    cache.keep(ticket, row);
                }
                found[i] = row;
            }
        }
        Ok(found.into_iter().flatten().collect())
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
        jobs.send(Job { commit, maintenance: None, reply })
            .await
            .map_err(|_| StoreError::Unavailable("sqlite writer has stopped".into()))?;
        let Reply { result, commit } =
            answer.await.map_err(|_| StoreError::Unavailable("sqlite writer has stopped".into()))?;
        // Freed here, by the thread that built it (see `Reply`).
        drop(commit);
        result
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
                let statements = sql::search(Dialect::Sqlite, &query, &kinds, &Arc::default());
                run_paged(conn, &statements, query.total != TotalMode::None)
            })
            .await
    }

    async fn search_keys(&self, query: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError> {
        let query = query.clone();
        self.inner
            .with_reader(move |conn| {
                let kinds = resolve_sort_kinds(conn, &query)?;
                let statement = sql::search_keys(Dialect::Sqlite, &query, &kinds, &Arc::default());
                let mut prepared = conn.prepare_cached(&statement.text).map_err(db_error)?;
                let rows = prepared
                    .query_map(rusqlite::params_from_iter(statement.params.iter()), |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })
                    .map_err(db_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
            })
            .await
    }

    async fn search_keys_reading(
        &self,
        query: &SearchQuery,
        read: usize,
    ) -> Result<(Vec<ResourceKey>, Vec<StoredResource>), StoreError> {
        let query = query.clone();
        let cache = self.inner.cache.clone();
        self.inner
            .with_reader(move |conn| {
                // One read transaction: the keys and the bodies come from one
                // snapshot, and the page cache is checked against the WAL once.
                let tx = conn.transaction().map_err(db_error)?;
                let kinds = resolve_sort_kinds(&tx, &query)?;
                let statement = sql::search_keys(Dialect::Sqlite, &query, &kinds, &Arc::default());
                let rows: Vec<(String, String, i64)> = tx
                    .prepare_cached(&statement.text)
                    .and_then(|mut s| {
                        s.query_map(rusqlite::params_from_iter(statement.params.iter()), |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        })?
                        .collect()
                    })
                    .map_err(db_error)?;
                let mut found = Vec::with_capacity(read.min(rows.len()));
                for (resource_type, id, rid) in rows.iter().take(read) {
                    let ticket = match cache.as_ref().map(|c| c.get(resource_type, id)) {
                        Some(Ok(hit)) => {
                            found.push(hit);
                            continue;
                        }
                        Some(Err(ticket)) => Some(ticket),
                        None => None,
                    };
                    if let Some(row) = read_current_by_rid(&tx, *rid)? {
                        if let (Some(cache), Some(ticket)) = (&cache, ticket) {
                            cache.keep(ticket, &row);
                        }
                        found.push(row);
                    }
                }
                tx.commit().map_err(db_error)?;
                Ok((rows.into_iter().map(|(t, id, _)| (t, id)).collect(), found))
            })
            .await
    }

    async fn scan(
        &self,
        resource_type: Option<&str>,
        after: Option<&ResourceKey>,
        limit: usize,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let statement =
            sql::scan(Dialect::Sqlite, resource_type, after.map(|(t, i)| (t.as_str(), i.as_str())), limit);
        self.inner.with_reader(move |conn| query_resources(conn, &statement)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner
            .with_reader(|conn| conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)).map(|_| ()).map_err(db_error))
            .await
    }

    async fn defer_search_indexes(&self, upcoming: u64) -> Result<bool, StoreError> {
        let held: i64 = self
            .inner
            .with_reader(|conn| {
                conn.query_row("SELECT COALESCE(MAX(rid), 0) FROM resource", [], |r| r.get(0)).map_err(db_error)
            })
            .await?;
        if u64::try_from(held).unwrap_or(0).saturating_mul(DEFER_ABOVE_RATIO) >= upcoming {
            return Ok(false);
        }
        self.maintain(Maintenance::DeferSearchIndexes).await?;
        Ok(true)
    }

    async fn restore_search_indexes(&self) -> Result<(), StoreError> {
        self.maintain(Maintenance::RestoreSearchIndexes).await
    }

    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        self.inner
            .with_reader(move |conn| {
                conn.prepare_cached("SELECT key, version, json FROM sys_record WHERE kind = ?1 AND key = ?2")
                    .and_then(|mut s| s.query_row([kind, key], sys_row).optional())
                    .map_err(db_error)?
                    .map(to_sys_record)
                    .transpose()
            })
            .await
    }

    async fn sys_list(&self, kind: &str) -> Result<Vec<SysRecord>, StoreError> {
        let kind = kind.to_owned();
        self.inner
            .with_reader(move |conn| {
                let rows: Vec<(String, i64, String)> = conn
                    .prepare_cached("SELECT key, version, json FROM sys_record WHERE kind = ?1 ORDER BY key")
                    .and_then(|mut s| s.query_map([kind], sys_row)?.collect())
                    .map_err(db_error)?;
                rows.into_iter().map(to_sys_record).collect()
            })
            .await
    }

    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let statement = Sql {
            text: "SELECT seq, record, hash FROM audit_entry WHERE seq > ?1 ORDER BY seq LIMIT ?2".into(),
            params: vec![
                SqlValue::Int(i64::try_from(after).unwrap_or(i64::MAX)),
                SqlValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        };
        self.inner.with_reader(move |conn| audit_rows(conn, &statement)).await
    }

    async fn audit_search(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let (page, count) = crate::audit::search(Dialect::Sqlite, query);
        self.inner
            .with_reader(move |conn| {
                // One read transaction: the page and the total see the same entries.
                let tx = conn.transaction().map_err(db_error)?;
                let items = audit_rows(&tx, &page)?;
                let total = query_count(&tx, &count)?;
                tx.commit().map_err(db_error)?;
                Ok(Page { items, total: Some(total) })
            })
            .await
    }

    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.inner
            .with_reader(|conn| {
                let head = AuditHead::load(conn)?;
                Ok((head.seq > 0).then_some((head.seq, head.hash)))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directories this process's index builds made in `/dev/shm`.
    fn sort_dirs_left() -> Vec<String> {
        let prefix = format!("hearth-sort-{}-", std::process::id());
        std::fs::read_dir(MemoryTempDir::PARENT)
            .map(|entries| {
                entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(&prefix)).collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn the_sort_directory_is_private_in_memory_and_goes_away() {
        let _alone = SORT_IN_FILES.lock();
        match MemoryTempDir::create() {
            Some(dir) => {
                let path = dir.path().to_path_buf();
                assert_eq!(path.parent(), Some(Path::new(MemoryTempDir::PARENT)));
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(&path).expect("made").permissions().mode();
                    assert_eq!(mode & 0o777, 0o700, "only this user may enter it");
                }
                // This SQLite takes the setting (it was built with deprecated pragmas).
                let conn = Connection::open_in_memory().expect("connection");
                assert!(temp_files_go_to(&conn, &path), "temporary files would go elsewhere");
                conn.pragma_update(None, "temp_store_directory", "").expect("reset");
                drop(dir);
                assert!(!path.exists(), "dropped, the directory is gone");
            }
            None => assert!(!is_memory_file_system(Path::new(MemoryTempDir::PARENT)), "a tmpfs was there to use"),
        }
    }

    #[test]
    fn deferred_indexes_are_built_and_temporary_storage_goes_back_to_memory() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut conn = open_connection(&dir.path().join("hearth.db"), &SqliteOptions::default(), Role::Writer).expect("open");
        migrate(&mut conn).expect("migrate");
        defer_search_indexes(&conn).expect("defer");
        // Enough rows that the sorter has runs to sort.
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
             INSERT INTO idx_token (rid, pid, n, sid, code, text) SELECT i, i % 7, 0, NULL, 'c' || (i * 7919 % 20000), NULL FROM n",
        )
        .expect("rows");
        assert_eq!(restore_search_indexes(&conn).expect("built"), DEFERRABLE_INDEXES.len());
        let built: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'", [], |r| r.get(0))
            .expect("count");
        assert!(built >= DEFERRABLE_INDEXES.len() as i64);
        // Row i = 3 has pid 3 and code c3757 (3 * 7919 % 20000).
        let count = |how: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM idx_token {how} WHERE pid = 3 AND code = 'c3757'"), [], |r| r.get(0))
                .expect("search")
        };
        assert!(count("INDEXED BY idx_token_search") >= 1);
        assert_eq!(count("INDEXED BY idx_token_search"), count("NOT INDEXED"));
        let temp_store: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0)).expect("temp_store");
        assert_eq!(temp_store, 2, "temporary storage is in memory again");
        let threads: i64 = conn.query_row("PRAGMA threads", [], |r| r.get(0)).expect("threads");
        assert_eq!(threads, 0);
        let _alone = SORT_IN_FILES.lock();
        assert!(sort_dirs_left().is_empty(), "left behind: {:?}", sort_dirs_left());
        // Nothing deferred any more: nothing to build.
        assert_eq!(restore_search_indexes(&conn).expect("again"), 0);
    }
}
