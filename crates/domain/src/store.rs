//! The Store trait: the one contract every storage backend (in-memory, SQLite,
//! PostgreSQL) implements, and the conformance suite checks.
//!
//! Concurrency model: optimistic. The Service reads, decides, then submits a
//! [`Commit`]: a list of [`Check`]s and [`Write`]s that the store applies
//! atomically, in one database transaction, only if every check still holds;
//! otherwise it answers [`StoreError::Conflict`] and writes nothing. The
//! Service retries or reports. This keeps the backends free of FHIR logic.
//!
//! Durability: a store returns from `commit` only once the write is durable
//! (fsync'd or group-committed). Never acknowledge a write a power cut can lose.

use crate::audit::{AuditEntry, AuditQuery, AuditRecord};
use async_trait::async_trait;
use fhir::instant::Instant;
use fhir::search::IndexEntry;
use fhir::search::query::SearchQuery;
use fhir::search::text::TextIndex;
use std::sync::Arc;

/// The interaction that produced a version, recorded for history bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "POST" => Some(Method::Post),
            "PUT" => Some(Method::Put),
            "PATCH" => Some(Method::Patch),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }
}

/// One stored version of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub resource_type: String,
    pub id: String,
    pub version_id: u64,
    pub last_updated: Instant,
    pub method: Method,
    /// The resource JSON text, with `id` and `meta.versionId`/`meta.lastUpdated`
    /// already set. `None` for a delete.
    pub body: Option<Arc<str>>,
}

impl StoredResource {
    pub fn is_deleted(&self) -> bool {
        self.body.is_none()
    }
}

/// A resource's (type, id), the order of [`Store::scan`].
pub type ResourceKey = (String, String);

/// A new version to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub resource_type: String,
    pub id: String,
    /// Must be exactly one more than the current version (1 for a new resource).
    pub version_id: u64,
    pub last_updated: Instant,
    pub method: Method,
    /// `None` writes a delete (a tombstone version).
    pub body: Option<Arc<str>>,
    /// Search index rows of this version; they replace the previous version's.
    /// Empty for a delete.
    pub index: Vec<IndexEntry>,
    /// The words of this version for `_text` and `_content`; they replace the
    /// previous version's. Empty for a delete.
    pub text: TextIndex,
    /// The resources this version contains, indexed for `_contained`
    /// searches; they replace the previous version's. Empty for a delete
    /// (and for most resources).
    pub contained: Vec<ContainedIndex>,
}

/// A resource contained in another (`contained`, references.html#contained),
/// indexed apart from stand-alone resources: only searches with
/// `_contained=true|both` see it, and chains through a `#id` reference of
/// its container (search.html#contained).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainedIndex {
    /// Its own resource type (`Medication`).
    pub resource_type: String,
    /// Its id within the container (`med1`, referred to as `#med1`).
    pub id: String,
    /// Its search values, extracted as for a resource of its type.
    pub index: Vec<IndexEntry>,
    /// Its words for `_text` and `_content`.
    pub text: TextIndex,
}

/// The id under which a search with `_containedType=contained` reports a
/// matching contained resource: its container's id, `#`, its own id
/// (`123#med1`), so that `[type]/[id]` of the match is the contained
/// resource's URL (`Observation/123#med1`). No resource id holds a `#`.
pub fn contained_match_id(container_id: &str, contained_id: &str) -> String {
    format!("{container_id}#{contained_id}")
}

/// The (container id, contained id) of a [`contained_match_id`]; `None` for
/// the id of a resource of its own.
pub fn split_contained_match_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('#')
}

/// A precondition evaluated inside the commit's transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The resource's current version is `expected` (`None`: it has never existed).
    Version { resource_type: String, id: String, expected: Option<u64> },
    /// The current (non-deleted) resources matching `query` are exactly `ids`
    /// (of `query.resource_type`), in any order. Used by conditional
    /// create/update/delete so that two racing conditional creates cannot both win.
    Matches { query: SearchQuery, ids: Vec<String> },
}

/// New index rows for a resource's current version, written without making
/// a new version (`$reindex`, after the search parameters changed). Applied
/// only while the resource is still at `version_id` and not deleted;
/// otherwise skipped, since a newer version was indexed when it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Reindex {
    pub resource_type: String,
    pub id: String,
    pub version_id: u64,
    pub index: Vec<IndexEntry>,
    /// The version's words (`_text`, `_content`), replacing the stored ones.
    pub text: TextIndex,
    /// The version's contained resources, replacing the stored ones.
    pub contained: Vec<ContainedIndex>,
}

/// A write to a system record: Hearth's own data that is not FHIR (users,
/// OAuth clients, sessions, tokens, sign-in failures), kept as JSON documents
/// by (kind, key) in the same database and transactions as the resources.
#[derive(Debug, Clone, PartialEq)]
pub struct SysWrite {
    pub kind: String,
    pub key: String,
    /// The version the record must be at (`None`: it must not exist). The
    /// write stores version `expected + 1` (1 for a new record).
    pub expected: Option<u64>,
    /// The new document; `None` deletes the record.
    pub json: Option<Arc<str>>,
}

/// A stored system record.
#[derive(Debug, Clone, PartialEq)]
pub struct SysRecord {
    pub key: String,
    pub version: u64,
    pub json: Arc<str>,
}

/// An atomic unit of work.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commit {
    pub checks: Vec<Check>,
    pub writes: Vec<Write>,
    pub reindex: Vec<Reindex>,
    /// System record writes; a version mismatch fails the whole commit with Conflict.
    pub sys: Vec<SysWrite>,
    /// Audit records of what this commit does (or of reads, when it holds
    /// nothing else). The store numbers them and chains their digests
    /// (see [`crate::audit`]) inside the same transaction.
    pub audit: Vec<AuditRecord>,
}

impl Commit {
    /// Every index entry the commit writes (of new versions and reindexed ones).
    pub fn index_entries(&self) -> impl Iterator<Item = &IndexEntry> {
        self.writes.iter().flat_map(|w| &w.index).chain(self.reindex.iter().flat_map(|r| &r.index))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance { resource_type: String, id: String },
}

/// History paging. Entries are newest first. `not_after` freezes the list at
/// the time of the first page, so paging stays stable while others write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryQuery {
    /// Only versions with last_updated >= since (`_since`).
    pub since: Option<Instant>,
    /// Only versions with last_updated <= not_after.
    pub not_after: Option<Instant>,
    pub count: usize,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Total matches when known (history always counts; search per TotalMode).
    pub total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A check of the commit failed: nothing was written.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend cannot be reached or is shutting down.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the message is for logs and contains no patient data.
    #[error("internal: {0}")]
    Internal(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and the CapabilityStatement (`memory`, `sqlite`, `postgresql`).
    fn backend(&self) -> &'static str;

    /// The current version of a resource, deleted or not; `None` if it never existed.
    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError>;

    /// The current versions of several resources (deleted or not), in the
    /// order asked; absent ones are left out. Backends answer in one round
    /// trip where they can (bulk comparisons: migration loads).
    async fn read_many(&self, keys: &[(String, String)]) -> Result<Vec<StoredResource>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for (resource_type, id) in keys {
            if let Some(r) = self.read(resource_type, id).await? {
                found.push(r);
            }
        }
        Ok(found)
    }

    /// One version of a resource.
    async fn vread(&self, resource_type: &str, id: &str, version_id: u64)
    -> Result<Option<StoredResource>, StoreError>;

    /// Applies a commit atomically and durably, or returns Conflict and writes nothing.
    async fn commit(&self, commit: Commit) -> Result<(), StoreError>;

    /// Versions in `scope`, newest first, paged.
    async fn history(&self, scope: &HistoryScope, query: &HistoryQuery)
    -> Result<Page<StoredResource>, StoreError>;

    /// Current, non-deleted resources matching `query`, in the query's sort
    /// order (default: last_updated descending, then id), paged by count/offset.
    ///
    /// With `query.contained` other than `No` (search.html#contained), the
    /// matches of type `query.resource_type` are contained resources too (or
    /// only), each tested alone against every filter; `_lastUpdated` of a
    /// contained resource is its container's, `_id` its id in the container.
    /// A matching contained resource is answered with its container's current
    /// version: once per container (`ContainedType::Container`, sorted by
    /// `_id`/`_lastUpdated` of the containers only), or once per contained
    /// match with the `id` [`contained_match_id`] (`ContainedType::Contained`,
    /// sorted by the contained resource's own values; ties by the container's
    /// last update, that id, then the container's type).
    async fn search(&self, query: &SearchQuery) -> Result<Page<StoredResource>, StoreError>;

    /// The (type, id) of the resources [`Store::search`] would return for
    /// `query` (same order, count and offset), without reading their bodies.
    async fn search_keys(&self, query: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError>;

    /// [`Store::search_keys`] together with the current versions of the
    /// first `read` of those keys (as [`Store::read_many`] answers them):
    /// the first page of a search. Backends answer from one snapshot and in
    /// one round trip where they can (the SQLite store reads the bodies by
    /// row id in the read transaction that listed the keys). Not for
    /// contained matches (`_containedType=contained`): their keys name no
    /// stored resource (the Service reads their containers).
    async fn search_keys_reading(
        &self,
        query: &SearchQuery,
        read: usize,
    ) -> Result<(Vec<ResourceKey>, Vec<StoredResource>), StoreError> {
        let keys = self.search_keys(query).await?;
        let found = self.read_many(&keys[..read.min(keys.len())]).await?;
        Ok((keys, found))
    }

    /// Current, non-deleted resources of `resource_type` (every type when
    /// `None`) in (type, id) order, starting after the key `after`, at most
    /// `limit`: a walk over the whole store whose cost per step does not grow
    /// with the position (`$reindex`, exports).
    async fn scan(&self, resource_type: Option<&str>, after: Option<&ResourceKey>, limit: usize)
    -> Result<Vec<StoredResource>, StoreError>;

    /// Readiness: the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// After a bulk load (`hearth import`, a migration's load): lets the
    /// database's query planner see the new data (PostgreSQL: `ANALYZE`,
    /// which autovacuum would otherwise run only later, leaving plans made
    /// for an empty database). Nothing to do where the store keeps no
    /// statistics.
    async fn refresh_planner_statistics(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Before a bulk load of about `upcoming` resources: a store that would
    /// rather build its search indexes in one pass afterwards than maintain
    /// them insert by insert may stop maintaining them until
    /// [`Store::restore_search_indexes`]. Searches stay correct meanwhile,
    /// only slower; reads by id and writes are unaffected. Answers whether it
    /// did. A store that does not do this (the default) answers `false`.
    async fn defer_search_indexes(&self, upcoming: u64) -> Result<bool, StoreError> {
        let _ = upcoming;
        Ok(false)
    }

    /// Builds the search indexes [`Store::defer_search_indexes`] left
    /// unmaintained (nothing to do when there are none). A store also does
    /// this when it opens, for a load that was stopped before it could.
    async fn restore_search_indexes(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// A system record (see [`SysWrite`]).
    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError>;

    /// Every system record of a kind, by key.
    async fn sys_list(&self, kind: &str) -> Result<Vec<SysRecord>, StoreError>;

    /// Audit entries with `seq > after`, in `seq` order, at most `limit`
    /// (the walk of [`crate::audit::verify`]). Entries are returned as stored,
    /// whatever their content.
    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Audit entries matching `query` ([`AuditQuery::matches`]), in its sort
    /// order, paged; `total` is always counted.
    async fn audit_search(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError>;

    /// The last entry's (seq, hash), `None` while the trail is empty.
    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError>;
}
