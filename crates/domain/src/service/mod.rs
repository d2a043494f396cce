//! The Service: performs every FHIR interaction over a [`Store`], with
//! validation, versioning and the conditional-operation rules of the spec.
//! See <http://hl7.org/fhir/R4/http.html>.

mod bundle;
mod guard;
mod include;
mod operations;
mod paging;
mod read_audit;
mod reindex;
mod terminology;

pub use bundle::parse_etag;
pub use include::{Included, MAX_INCLUDED};
pub use paging::STABLE_PAGING_LIMIT;
pub use read_audit::DEFAULT_WINDOW as DEFAULT_READ_AUDIT_WINDOW;
pub use reindex::{ReindexProgress, ReindexReport};
pub mod prepare;

use crate::access::Access;
use crate::audit::AuditAction;
use crate::error::{Error, ErrorKind};
use crate::store::{
    Check, Commit, HistoryQuery, HistoryScope, Method, Page, ResourceKey, Store, StoreError, StoredResource, Write,
};
use fhir::instant::Instant;
use fhir::search::Registry;
use fhir::search::query::{ContainedMode, ContainedType, SearchQuery};
use serde_json::Value;
use std::borrow::Borrow;
use std::sync::Arc;

/// The source of "now", injected so tests are deterministic.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The source of new logical ids, injected so tests are deterministic.
pub trait IdSource: Send + Sync + 'static {
    fn new_id(&self) -> String;
}

/// Random UUIDs (v4), the default.
pub struct UuidIds;

impl IdSource for UuidIds {
    fn new_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

/// Limits and switches of the Service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Default page size for search and history.
    pub default_page_size: usize,
    /// Largest page size a client may ask for.
    pub max_page_size: usize,
    /// Largest number of entries in a batch or transaction.
    pub max_bundle_entries: usize,
    /// The longest a successful read's audit entry waits before its batch
    /// is committed (`read_audit.rs`); zero commits each before answering.
    pub read_audit_window: std::time::Duration,
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig {
            default_page_size: 20,
            max_page_size: 1000,
            max_bundle_entries: 10_000,
            read_audit_window: read_audit::DEFAULT_WINDOW,
        }
    }
}

/// Result of a create.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new resource was created.
    Created(StoredResource),
    /// Conditional create matched exactly one existing resource; nothing was written.
    Existing(StoredResource),
}

/// Result of an update.
#[derive(Debug, Clone)]
pub struct Updated {
    pub resource: StoredResource,
    /// True when the update created the resource (create-on-update).
    pub created: bool,
}

/// A patch document.
#[derive(Debug, Clone)]
pub enum PatchDocument {
    /// RFC 6902 JSON Patch (`application/json-patch+json`).
    Json(Value),
    /// FHIRPath Patch: a Parameters resource.
    FhirPath(Value),
}

/// What a write returns (`Prefer: return=`), <http://hl7.org/fhir/R4/http.html#ops>.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// Strict or lenient handling of unknown search parameters (`Prefer: handling=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Handling {
    #[default]
    Strict,
    Lenient,
}

/// History parameters as given by the client.
#[derive(Debug, Clone, Default)]
pub struct HistoryParams {
    pub since: Option<Instant>,
    pub not_after: Option<Instant>,
    pub count: Option<usize>,
    pub offset: usize,
}

/// Result of a search: the page and the parameters actually applied (for the self link).
#[derive(Debug, Clone)]
pub struct SearchResult {
    pub page: Page<StoredResource>,
    /// The parameters that were applied, in canonical form, for the self link.
    pub applied: Vec<(String, String)>,
    pub count: usize,
    pub offset: usize,
    /// The resources `_include` and `_revinclude` add to the page (not
    /// counted in the total, not paged).
    pub included: Included,
    /// The token of the kept result list when the search pages stably
    /// (`_page`, see `paging.rs`); `None`: paging by offset.
    pub page_token: Option<String>,
}

pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    config: ServiceConfig,
    /// The search parameters in force; replaced whole by `$reindex`.
    registry: std::sync::RwLock<Arc<Registry>>,
    /// Result lists of searches that page stably.
    paging: paging::PagingCache,
    /// The audit entries of answered reads, waiting for their batch.
    read_audit: Arc<read_audit::ReadAuditQueue>,
}

impl Service {
    pub fn new(store: Arc<dyn Store>) -> Service {
        Service::with(store, Arc::new(SystemClock), Arc::new(UuidIds), ServiceConfig::default())
    }

    pub fn with(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        config: ServiceConfig,
    ) -> Service {
        let read_audit = Arc::new(read_audit::ReadAuditQueue::new(config.read_audit_window));
        Service {
            store,
            clock,
            ids,
            config,
            read_audit,
            registry: std::sync::RwLock::new(Registry::core()),
            paging: paging::PagingCache::default(),
        }
    }

    /// The search parameters in force (core and activated custom ones).
    pub fn registry(&self) -> Arc<Registry> {
        match self.registry.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub(crate) fn set_registry(&self, registry: Arc<Registry>) {
        match self.registry.write() {
            Ok(mut guard) => *guard = registry,
            Err(poisoned) => *poisoned.into_inner() = registry,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// `POST [base]/[type]`, with `If-None-Exist` criteria for conditional create.
    /// See <http://hl7.org/fhir/R4/http.html#create> and `#ccreate`.
    pub(crate) async fn create_unchecked(&self, access: &Access, resource_type: &str, body: Value, if_none_exist: Option<&str>) -> Result<Created, Error> {
        prepare::check_type(resource_type)?;
        prepare::validate(resource_type, &body, None)?;
        let Some(criteria) = if_none_exist else {
            let id = self.ids.new_id();
            let write = prepare::stamp(&self.registry(), resource_type, &id, 1, self.clock.now(), Method::Post, &body);
            let stored = stored_of(&write);
            // A fresh UUID cannot collide; the store still refuses a version
            // that is not current+1, so no separate check is needed.
            self.store.commit(self.write_commit(access, Vec::new(), write)).await?;
            return Ok(Created::Created(stored));
        };
        let query = self.criteria_query(resource_type, criteria)?;
        for _ in 0..RETRIES {
            let matches = self.matching_ids(&query).await?;
            match matches.as_slice() {
                [] => {
                    let id = self.ids.new_id();
                    let write = prepare::stamp(&self.registry(), resource_type, &id, 1, self.clock.now(), Method::Post, &body);
                    let stored = stored_of(&write);
                    let checks = vec![Check::Matches { query: query.clone(), ids: Vec::new() }];
                    match self.store.commit(self.write_commit(access, checks, write)).await {
                        Ok(()) => return Ok(Created::Created(stored)),
                        Err(StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                [id] => return Ok(Created::Existing(self.read_unchecked(resource_type, id).await?)),
                _ => return Err(multiple_matches("conditional create")),
            }
        }
        Err(Error::new(ErrorKind::Conflict, "conditional create kept conflicting with concurrent writes; retry"))
    }

    /// `GET [base]/[type]/[id]`: NotFound, or Gone for a deleted resource.
    pub(crate) async fn read_unchecked(&self, resource_type: &str, id: &str) -> Result<StoredResource, Error> {
        prepare::check_type(resource_type)?;
        prepare::check_id(id)?;
        match self.store.read(resource_type, id).await? {
            None => Err(not_found(resource_type)),
            Some(r) if r.is_deleted() => Err(gone(resource_type, r.version_id)),
            Some(r) => Ok(r),
        }
    }

    /// `GET [base]/[type]/[id]/_history/[vid]`.
    pub(crate) async fn vread_unchecked(&self, resource_type: &str, id: &str, version_id: &str) -> Result<StoredResource, Error> {
        prepare::check_type(resource_type)?;
        prepare::check_id(id)?;
        let Ok(version) = version_id.parse::<u64>() else {
            return Err(Error::new(ErrorKind::NotFound, "no such version: version ids are positive integers"));
        };
        match self.store.vread(resource_type, id, version).await? {
            None => Err(Error::new(ErrorKind::NotFound, format!("{resource_type} version not found"))),
            Some(r) if r.is_deleted() => Err(gone(resource_type, r.version_id)),
            Some(r) => Ok(r),
        }
    }

    /// `PUT [base]/[type]/[id]`; `if_match` is the version from `If-Match: W/"n"`.
    /// See <http://hl7.org/fhir/R4/http.html#update>: a missing resource is
    /// created (update-as-create), a deleted one is brought back.
    pub(crate) async fn update_unchecked(&self, access: &Access, resource_type: &str, id: &str, body: Value, if_match: Option<u64>) -> Result<Updated, Error> {
        prepare::check_type(resource_type)?;
        prepare::check_id(id)?;
        match body.get("id").and_then(Value::as_str) {
            None => return Err(Error::new(ErrorKind::BadRequest, "an update must carry the resource id in the body").at("id")),
            Some(body_id) if body_id != id => {
                return Err(Error::new(ErrorKind::BadRequest, "the id in the body does not match the id in the URL").at("id"));
            }
            Some(_) => {}
        }
        prepare::validate(resource_type, &body, None)?;
        self.write_update(access, resource_type, id, body, if_match, Vec::new()).await
    }

    /// `PUT [base]/[type]?criteria`. See <http://hl7.org/fhir/R4/http.html#cond-update>.
    pub(crate) async fn conditional_update_unchecked(&self, access: &Access, resource_type: &str, criteria: &str, body: Value, if_match: Option<u64>) -> Result<Updated, Error> {
        prepare::check_type(resource_type)?;
        prepare::validate(resource_type, &body, None)?;
        let query = self.criteria_query(resource_type, criteria)?;
        let body_id = body.get("id").and_then(Value::as_str).map(str::to_string);
        if let Some(body_id) = &body_id {
            prepare::check_id(body_id).map_err(|e| e.at("id"))?;
        }
        for _ in 0..RETRIES {
            let matches = self.matching_ids(&query).await?;
            let checks = vec![Check::Matches { query: query.clone(), ids: matches.clone() }];
            let id = match matches.as_slice() {
                [] => body_id.clone().unwrap_or_else(|| self.ids.new_id()),
                [found] => {
                    if body_id.as_ref().is_some_and(|b| b != found) {
                        return Err(Error::new(
                            ErrorKind::BadRequest,
                            "the id in the body does not match the resource the criteria found",
                        )
                        .at("id"));
                    }
                    found.clone()
                }
                _ => return Err(multiple_matches("conditional update")),
            };
            match self.write_update(access, resource_type, &id, body.clone(), if_match, checks).await {
                Err(e) if e.kind == ErrorKind::Conflict && if_match.is_none() => continue,
                other => return other,
            }
        }
        Err(Error::new(ErrorKind::Conflict, "conditional update kept conflicting with concurrent writes; retry"))
    }

    /// Writes `body` as the next version of `resource_type/id` (body already validated).
    async fn write_update(
        &self,
        access: &Access,
        resource_type: &str,
        id: &str,
        body: Value,
        if_match: Option<u64>,
        extra_checks: Vec<Check>,
    ) -> Result<Updated, Error> {
        for _ in 0..RETRIES {
            let current = self.store.read(resource_type, id).await?;
            let current_version = current.as_ref().map(|r| r.version_id);
            if let Some(wanted) = if_match
                && (current.as_ref().is_none_or(StoredResource::is_deleted) || current_version != Some(wanted)) {
                    return Err(version_mismatch(current_version, wanted));
                }
            let created = current.as_ref().is_none_or(StoredResource::is_deleted);
            let version = current_version.unwrap_or(0) + 1;
            let write = prepare::stamp(&self.registry(), resource_type, id, version, self.clock.now(), Method::Put, &body);
            let stored = stored_of(&write);
            let mut checks = extra_checks.clone();
            checks.push(Check::Version { resource_type: resource_type.into(), id: id.into(), expected: current_version });
            match self.store.commit(self.write_commit(access, checks, write)).await {
                Ok(()) => return Ok(Updated { resource: stored, created }),
                Err(StoreError::Conflict(_)) if if_match.is_some() => {
                    return Err(Error::new(ErrorKind::PreconditionFailed, "the resource was changed concurrently"));
                }
                Err(StoreError::Conflict(msg)) if !extra_checks.is_empty() => {
                    return Err(Error::new(ErrorKind::Conflict, msg));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::new(ErrorKind::Conflict, "the update kept conflicting with concurrent writes; retry"))
    }

    /// `PATCH [base]/[type]/[id]`. See <http://hl7.org/fhir/R4/http.html#patch>.
    pub(crate) async fn patch_unchecked(&self, access: &Access, resource_type: &str, id: &str, patch: PatchDocument, if_match: Option<u64>) -> Result<StoredResource, Error> {
        prepare::check_type(resource_type)?;
        prepare::check_id(id)?;
        for _ in 0..RETRIES {
            let current = self.read_unchecked(resource_type, id).await?;
            if let Some(wanted) = if_match
                && current.version_id != wanted {
                    return Err(version_mismatch(Some(current.version_id), wanted));
                }
            let patched = apply_patch(&current, &patch)?;
            if patched.get("resourceType").and_then(Value::as_str) != Some(resource_type)
                || patched.get("id").and_then(Value::as_str) != Some(id)
            {
                return Err(Error::new(ErrorKind::Invalid, "a patch may not change the resourceType or id"));
            }
            prepare::validate(resource_type, &patched, None)?;
            let write = prepare::stamp(&self.registry(), resource_type, id, current.version_id + 1, self.clock.now(), Method::Patch, &patched);
            let stored = stored_of(&write);
            let checks = vec![Check::Version {
                resource_type: resource_type.into(),
                id: id.into(),
                expected: Some(current.version_id),
            }];
            match self.store.commit(self.write_commit(access, checks, write)).await {
                Ok(()) => return Ok(stored),
                Err(StoreError::Conflict(_)) if if_match.is_some() => {
                    return Err(Error::new(ErrorKind::PreconditionFailed, "the resource was changed concurrently"));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::new(ErrorKind::Conflict, "the patch kept conflicting with concurrent writes; retry"))
    }

    /// `DELETE [base]/[type]/[id]`. Returns the version of the delete, or
    /// `None` when there was nothing to delete (already deleted or never existed).
    pub(crate) async fn delete_unchecked(&self, access: &Access, resource_type: &str, id: &str) -> Result<Option<u64>, Error> {
        prepare::check_type(resource_type)?;
        prepare::check_id(id)?;
        for _ in 0..RETRIES {
            let current = self.store.read(resource_type, id).await?;
            let Some(current) = current.filter(|r| !r.is_deleted()) else {
                return Ok(None);
            };
            let version = current.version_id + 1;
            let write = prepare::tombstone(resource_type, id, version, self.clock.now());
            let checks = vec![Check::Version {
                resource_type: resource_type.into(),
                id: id.into(),
                expected: Some(current.version_id),
            }];
            match self.store.commit(self.write_commit(access, checks, write)).await {
                Ok(()) => return Ok(Some(version)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::new(ErrorKind::Conflict, "the delete kept conflicting with concurrent writes; retry"))
    }

    /// `GET [base]/_history`, `[type]/_history`, `[type]/[id]/_history`.
    pub(crate) async fn history_unchecked(&self, scope: &HistoryScope, params: &HistoryParams) -> Result<Page<StoredResource>, Error> {
        match scope {
            HistoryScope::System => {}
            HistoryScope::Type(rt) => prepare::check_type(rt)?,
            HistoryScope::Instance { resource_type, id } => {
                prepare::check_type(resource_type)?;
                prepare::check_id(id)?;
                if self.store.read(resource_type, id).await?.is_none() {
                    return Err(not_found(resource_type));
                }
            }
        }
        let query = HistoryQuery {
            since: params.since,
            not_after: params.not_after,
            count: self.page_size(params.count),
            offset: params.offset,
        };
        Ok(self.store.history(scope, &query).await?)
    }

    /// `GET [base]/[type]?params` and `GET [base]?params`. The paging
    /// parameter `_offset` is Hearth's own (it appears in next/previous links).
    pub(crate) async fn search_unchecked(&self, resource_type: Option<&str>, params: &[(String, String)], handling: Handling) -> Result<SearchResult, Error> {
        if let Some(rt) = resource_type {
            prepare::check_type(rt)?;
        }
        let mut offset = 0usize;
        let mut token: Option<String> = None;
        let mut rest = Vec::with_capacity(params.len());
        for (k, v) in params {
            if k == "_offset" {
                offset = v.parse().map_err(|_| {
                    Error::new(ErrorKind::BadRequest, "_offset must be a non-negative integer").at("_offset")
                })?;
            } else if k == "_page" {
                token = Some(v.clone());
            } else {
                rest.push((k.clone(), v.clone()));
            }
        }
        check_search_size(&rest)?;
        let parsed = fhir::search::query::parse(&self.registry(), resource_type, &rest, handling == Handling::Lenient)
            .map_err(|issues| Error::with_issues(ErrorKind::BadRequest, issues))?;
        let mut query = parsed.query;
        let count_given = rest.iter().any(|(k, _)| k == "_count");
        query.count = if count_given { query.count.min(self.config.max_page_size) } else { self.config.default_page_size };
        query.offset = offset;
        let (page, page_token) = match token {
            Some(token) => (self.kept_page(&token, query.resource_type.as_deref(), offset, query.count).await?, Some(token)),
            None => {
                self.resolve_terminology(&mut query).await?;
                self.first_page(&query).await?
            }
        };
        let included = self.resolve_includes(&page.items, &parsed.includes).await?;
        Ok(SearchResult { page, applied: parsed.applied, count: query.count, offset, included, page_token })
    }

    /// Runs a new search. When its first page is full and it has at most
    /// [`STABLE_PAGING_LIMIT`] matches, keeps the ordered list of them for the
    /// later pages and returns its token.
    async fn first_page(&self, query: &SearchQuery) -> Result<(Page<StoredResource>, Option<String>), Error> {
        if query.offset != 0 || query.count == 0 {
            return Ok((self.store.search(query).await?, None));
        }
        // One statement lists the matches in order (keys only, up to the
        // limit); the page's bodies are read with it.
        let all = SearchQuery {
            count: STABLE_PAGING_LIMIT + 1,
            offset: 0,
            total: fhir::search::query::TotalMode::None,
            ..query.clone()
        };
        let (keys, items) = if query.contained != ContainedMode::No && query.contained_type == ContainedType::Contained {
            let keys = self.store.search_keys(&all).await?;
            let items = self.read_keys(keys.iter().take(query.count)).await?;
            (keys, items)
        } else {
            let (keys, found) = self.store.search_keys_reading(&all, query.count).await?;
            (keys, found.into_iter().filter(|r| !r.is_deleted()).collect())
        };
        if keys.len() > STABLE_PAGING_LIMIT {
            // Too many to keep: later pages go by offset.
            let total = match query.total {
                fhir::search::query::TotalMode::None => None,
                _ => self.store.search(&SearchQuery { count: 0, ..query.clone() }).await?.total,
            };
            return Ok((Page { items, total }, None));
        }
        let total = match query.total {
            fhir::search::query::TotalMode::None => None,
            _ => Some(keys.len() as u64),
        };
        if keys.len() <= query.count {
            return Ok((Page { items, total }, None));
        }
        let token = self.ids.new_id();
        self.paging.insert(token.clone(), query.resource_type.clone(), keys);
        Ok((Page { items, total }, Some(token)))
    }

    /// A later page of a kept result list.
    async fn kept_page(
        &self,
        token: &str,
        resource_type: Option<&str>,
        offset: usize,
        count: usize,
    ) -> Result<Page<StoredResource>, Error> {
        let kept = self.paging.get(token).filter(|k| k.resource_type.as_deref() == resource_type).ok_or_else(|| {
            Error::new(ErrorKind::Gone, "these search results have expired; repeat the search").at("_page")
        })?;
        let items = self.read_keys(kept.keys.iter().skip(offset).take(count)).await?;
        Ok(Page { items, total: Some(kept.keys.len() as u64) })
    }

    /// The current versions of `keys`, in their order, leaving out those
    /// deleted since: one [`Store::read_many`] (the SQLite store answers from
    /// its cache of current versions, else in one reader call).
    ///
    /// A key of a contained match (`_containedType=contained`, whose id is a
    /// [`crate::store::contained_match_id`]) is its container read at its
    /// current version under that id.
    async fn read_keys<'k>(&self, keys: impl Iterator<Item = &'k ResourceKey>) -> Result<Vec<StoredResource>, Error> {
        let keys: Vec<ResourceKey> = keys.cloned().collect();
        if !keys.iter().any(|(_, id)| crate::store::split_contained_match_id(id).is_some()) {
            let found = self.store.read_many(&keys).await?;
            return Ok(found.into_iter().filter(|r| !r.is_deleted()).collect());
        }
        let containers: Vec<ResourceKey> = keys
            .iter()
            .map(|(t, id)| (t.clone(), crate::store::split_contained_match_id(id).map_or(id.as_str(), |(c, _)| c).to_string()))
            .collect();
        let found = self.store.read_many(&containers).await?;
        Ok(keys
            .iter()
            .zip(&containers)
            .filter_map(|((_, id), (t, container))| {
                let stored = found.iter().find(|r| &r.resource_type == t && &r.id == container && !r.is_deleted())?;
                Some(StoredResource { id: id.clone(), ..stored.clone() })
            })
            .collect())
    }

    fn page_size(&self, asked: Option<usize>) -> usize {
        asked.unwrap_or(self.config.default_page_size).min(self.config.max_page_size)
    }

    /// Parses conditional-operation criteria (a URL query string).
    pub(crate) fn criteria_query(&self, resource_type: &str, criteria: &str) -> Result<SearchQuery, Error> {
        // Clients also send the criteria as `Type?params` (a relative URL).
        let criteria = criteria.trim();
        let criteria = criteria.strip_prefix(resource_type).filter(|rest| rest.starts_with('?')).unwrap_or(criteria);
        let criteria = criteria.trim_start_matches('?');
        let params: Vec<(String, String)> = form_urlencoded::parse(criteria.as_bytes()).into_owned().collect();
        if params.is_empty() {
            return Err(Error::new(ErrorKind::BadRequest, "conditional operation without criteria"));
        }
        check_search_size(&params)?;
        let parsed = fhir::search::query::parse(&self.registry(), Some(resource_type), &params, false)
            .map_err(|issues| Error::with_issues(ErrorKind::BadRequest, issues))?;
        let mut query = parsed.query;
        if query.contained != ContainedMode::No {
            let mut e = Error::new(ErrorKind::BadRequest, "conditional operations cannot search contained resources (_contained)")
                .at("_contained");
            if let Some(issue) = e.issues.first_mut() {
                issue.code = fhir::IssueType::NotSupported;
            }
            return Err(e);
        }
        if terminology::needs_terminology(&query) {
            let mut e = Error::new(
                ErrorKind::BadRequest,
                "conditional operations cannot use :in, :not-in, :above or :below on tokens",
            );
            if let Some(issue) = e.issues.first_mut() {
                issue.code = fhir::IssueType::NotSupported;
            }
            return Err(e);
        }
        // Two matches are enough to tell "one" from "several".
        query.count = 2;
        query.offset = 0;
        query.sort.clear();
        Ok(query)
    }

    /// Ids of the resources matching a conditional query (at most `query.count`).
    pub(crate) async fn matching_ids(&self, query: &SearchQuery) -> Result<Vec<String>, Error> {
        let page = self.store.search(query).await?;
        Ok(page.items.into_iter().map(|r| r.id).collect())
    }

    /// `POST [base]` with a batch or transaction Bundle; returns the response Bundle.
    /// `base_url` is the server's FHIR base, used for `fullUrl`s.
    /// `prefer` is the client's `Prefer: return=` choice for the entries;
    /// without one, entries carry status, location, etag and lastModified only.
    pub(crate) async fn bundle_unchecked(&self, access: &Access, bundle: Value, base_url: &str, prefer: Option<Return>) -> Result<Value, Error> {
        bundle::process(self, access, bundle, base_url, prefer.unwrap_or(Return::Minimal)).await
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    pub(crate) fn new_id(&self) -> String {
        self.ids.new_id()
    }
}

/// How often an interaction retries after losing an optimistic-concurrency race.
const RETRIES: usize = 8;

/// Most search conditions (parameters times comma-separated values) in one
/// search: beyond this a query gets too costly for the database to plan.
pub const MAX_SEARCH_CONDITIONS: usize = 64;

/// Refuses searches too large to run safely, and NUL characters (which no
/// FHIR string may contain and PostgreSQL text cannot hold).
fn check_search_size(params: &[(String, String)]) -> Result<(), Error> {
    let mut conditions = 0usize;
    for (name, value) in params {
        if name.contains('\0') || value.contains('\0') {
            return Err(Error::new(ErrorKind::BadRequest, "search parameters may not contain NUL characters")
                .at(prepare::short(name)));
        }
        if !name.starts_with('_') || name == "_id" || name == "_lastUpdated" || name == "_tag" || name == "_profile" || name == "_security" || name == "_source" {
            conditions += 1 + value.matches(',').count();
        }
    }
    if conditions > MAX_SEARCH_CONDITIONS {
        let mut e = Error::new(
            ErrorKind::BadRequest,
            format!("the search has {conditions} conditions; at most {MAX_SEARCH_CONDITIONS} are allowed"),
        );
        if let Some(issue) = e.issues.first_mut() {
            issue.code = fhir::IssueType::TooCostly;
        }
        return Err(e);
    }
    Ok(())
}

/// The StoredResource a write will become once committed.
pub(crate) fn stored_of(write: &Write) -> StoredResource {
    StoredResource {
        resource_type: write.resource_type.clone(),
        id: write.id.clone(),
        version_id: write.version_id,
        last_updated: write.last_updated,
        method: write.method,
        body: write.body.clone(),
    }
}

pub(crate) fn not_found(resource_type: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("{resource_type} not found"))
}

pub(crate) fn gone(resource_type: &str, version: u64) -> Error {
    Error::new(ErrorKind::Gone, format!("{resource_type} was deleted (version {version})"))
}

fn multiple_matches(what: &str) -> Error {
    let mut e = Error::new(ErrorKind::PreconditionFailed, format!("{what}: the criteria match more than one resource"));
    if let Some(issue) = e.issues.first_mut() {
        issue.code = fhir::IssueType::MultipleMatches;
    }
    e
}

fn version_mismatch(current: Option<u64>, wanted: u64) -> Error {
    let current = current.map_or_else(|| "none".to_string(), |v| v.to_string());
    Error::new(
        ErrorKind::PreconditionFailed,
        format!("If-Match names version {wanted} but the current version is {current}"),
    )
}

/// Applies a patch document to a stored resource.
pub(crate) fn apply_patch(current: &StoredResource, patch: &PatchDocument) -> Result<Value, Error> {
    let text = current.body.as_deref().ok_or_else(|| gone(&current.resource_type, current.version_id))?;
    let resource = prepare::parse_stored(text)?;
    let result = match patch {
        PatchDocument::Json(ops) => fhir::patch::apply_json_patch(&resource, ops),
        PatchDocument::FhirPath(parameters) => fhir::patch::apply_fhirpath_patch(&resource, parameters),
    };
    result.map_err(|issues| Error::with_issues(ErrorKind::Invalid, issues))
}

/// Result of loading one resource with [`Service::load`].
pub type LoadResult = Result<StoredResource, Error>;

impl Service {
    /// Bulk load (used by `hearth import`): each resource is validated exactly
    /// as on the API and written as an update of its own id (a new id when it
    /// has none). Valid resources of the call are committed together in one
    /// transaction; invalid ones are answered individually and write nothing.
    pub(crate) async fn load_unchecked(&self, access: &Access, resources: Vec<Value>) -> Vec<LoadResult> {
        let mut results: Vec<Option<LoadResult>> = Vec::with_capacity(resources.len());
        let mut pending: Vec<(usize, String, String, Value)> = Vec::new();
        for (index, body) in resources.into_iter().enumerate() {
            let rt = body.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
            let checked = prepare::check_type(&rt).and_then(|()| prepare::validate(&rt, &body, None)).and_then(|()| {
                match body.get("id").and_then(Value::as_str) {
                    Some(id) => prepare::check_id(id).map(|()| id.to_string()).map_err(|e| e.at("id")),
                    None => Ok(self.ids.new_id()),
                }
            });
            match checked {
                Ok(id) => {
                    pending.push((index, rt, id, body));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        if let Err(e) = self.load_together(access, &pending, &mut results).await {
            // The joint commit lost a race or failed: fall back to one at a
            // time so each resource gets its own answer.
            tracing::debug!(error = %e.message(), "bulk load commit failed; loading one by one");
            for (index, rt, id, body) in pending {
                let mut body = body;
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.clone()));
                }
                let result = self.write_update(access, &rt, &id, body, None, Vec::new()).await.map(|u| u.resource);
                if let Some(slot) = results.get_mut(index) {
                    *slot = Some(result);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "resource was not processed"))))
            .collect()
    }

    /// [`Service::load_all`]: every resource valid, committed together, or nothing.
    /// `seen`, when given, holds the current version the caller has just
    /// read for each resource (`None`: not stored), sparing the store a
    /// second lookup: each is still a check of the commit, and when one has
    /// moved (or the caller could not see it: a deleted resource) the
    /// versions are looked up here and the commit is tried once more.
    pub(crate) async fn load_all_unchecked<B: Borrow<Value> + Send + Sync>(
        &self,
        access: &Access,
        resources: Vec<B>,
        seen: Option<Vec<Option<u64>>>,
    ) -> Result<Vec<StoredResource>, Error> {
        let mut pending: Vec<(usize, String, String, B)> = Vec::with_capacity(resources.len());
        for (index, resource) in resources.into_iter().enumerate() {
            let body: &Value = resource.borrow();
            let rt = body.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
            let id = prepare::check_type(&rt)
                .and_then(|()| prepare::validate(&rt, body, None))
                .and_then(|()| match body.get("id").and_then(Value::as_str) {
                    Some(id) => prepare::check_id(id).map(|()| id.to_string()).map_err(|e| e.at("id")),
                    None => Err(Error::new(ErrorKind::BadRequest, "a resource loaded as a unit needs its id").at("id")),
                })
                .map_err(|e| e.at(format!("resource {index}")))?;
            pending.push((index, rt, id, resource));
        }
        let mut results: Vec<Option<LoadResult>> = (0..pending.len()).map(|_| None).collect();
        match seen {
            Some(seen) if seen.len() == pending.len() => {
                match self.load_together_at(access, &pending, Some(&seen), &mut results).await {
                    Err(e) if e.kind == ErrorKind::Conflict => self.load_together(access, &pending, &mut results).await?,
                    other => other?,
                }
            }
            _ => self.load_together(access, &pending, &mut results).await?,
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "resource was not processed"))))
            .collect()
    }

    async fn load_together<B: Borrow<Value> + Sync>(
        &self,
        access: &Access,
        pending: &[(usize, String, String, B)],
        results: &mut [Option<LoadResult>],
    ) -> Result<(), Error> {
        self.load_together_at(access, pending, None, results).await
    }

    /// `known`: the caller's view of each pending resource's current
    /// version; without it they are read here.
    async fn load_together_at<B: Borrow<Value> + Sync>(
        &self,
        access: &Access,
        pending: &[(usize, String, String, B)],
        known: Option<&[Option<u64>]>,
        results: &mut [Option<LoadResult>],
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let registry = self.registry();
        let mut commit = Commit::default();
        let versions: std::collections::HashMap<(String, String), u64> = match known {
            Some(known) => pending
                .iter()
                .zip(known)
                .filter_map(|((_, rt, id, _), v)| v.map(|v| ((rt.clone(), id.clone()), v)))
                .collect(),
            None => {
                // The current versions of all of them in one store call (a
                // bulk load is mostly new resources, which no cache holds).
                let mut keys: Vec<(String, String)> =
                    pending.iter().map(|(_, rt, id, _)| (rt.clone(), id.clone())).collect();
                keys.sort_unstable();
                keys.dedup();
                self.store.read_many(&keys).await?.into_iter().map(|r| ((r.resource_type, r.id), r.version_id)).collect()
            }
        };
        let mut seen: std::collections::HashMap<(String, String), u64> = std::collections::HashMap::new();
        let mut stored = Vec::with_capacity(pending.len());
        for (index, rt, id, body) in pending {
            let key = (rt.clone(), id.clone());
            let current = match seen.get(&key) {
                Some(v) => Some(*v),
                None => {
                    let v = versions.get(&key).copied();
                    commit.checks.push(Check::Version { resource_type: rt.clone(), id: id.clone(), expected: v });
                    v
                }
            };
            let version = current.unwrap_or(0) + 1;
            seen.insert(key, version);
            let write = prepare::stamp(&registry, rt, id, version, now, Method::Put, body.borrow());
            stored.push((*index, stored_of(&write)));
            commit.writes.push(write);
        }
        if commit.writes.is_empty() {
            return Ok(());
        }
        // One audit record per slice of writes, so that every resource is named.
        let records: Vec<_> = commit
            .writes
            .chunks(guard::MAX_AUDITED_ENTITIES)
            .map(|writes| self.writes_record(access, "create", AuditAction::Create, writes))
            .collect();
        commit.audit.extend(records);
        self.store.commit(commit).await?;
        for (index, s) in stored {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(Ok(s));
            }
        }
        Ok(())
    }
}
