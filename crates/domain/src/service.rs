//! The Service: performs every FHIR interaction over a [`Store`], with
//! validation, versioning and the conditional-operation rules of the spec.
//! See <http://hl7.org/fhir/R4/http.html>.

use crate::error::{Error, ErrorKind};
use crate::store::{HistoryScope, Page, Store, StoredResource};
use fhir::instant::Instant;
use serde_json::Value;
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
}

impl Default for ServiceConfig {
    fn default() -> ServiceConfig {
        ServiceConfig { default_page_size: 20, max_page_size: 1000, max_bundle_entries: 10_000 }
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
}

pub struct Service {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    config: ServiceConfig,
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
        Service { store, clock, ids, config }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// `POST [base]/[type]`, with `If-None-Exist` criteria for conditional create.
    pub async fn create(&self, resource_type: &str, body: Value, if_none_exist: Option<&str>) -> Result<Created, Error> {
        let _ = (resource_type, body, if_none_exist, &self.clock, &self.ids);
        Err(Error::new(ErrorKind::NotImplemented, "create"))
    }

    /// `GET [base]/[type]/[id]`: NotFound, or Gone for a deleted resource.
    pub async fn read(&self, resource_type: &str, id: &str) -> Result<StoredResource, Error> {
        let _ = (resource_type, id);
        Err(Error::new(ErrorKind::NotImplemented, "read"))
    }

    /// `GET [base]/[type]/[id]/_history/[vid]`.
    pub async fn vread(&self, resource_type: &str, id: &str, version_id: &str) -> Result<StoredResource, Error> {
        let _ = (resource_type, id, version_id);
        Err(Error::new(ErrorKind::NotImplemented, "vread"))
    }

    /// `PUT [base]/[type]/[id]`; `if_match` is the version from `If-Match: W/"n"`.
    pub async fn update(&self, resource_type: &str, id: &str, body: Value, if_match: Option<u64>) -> Result<Updated, Error> {
        let _ = (resource_type, id, body, if_match);
        Err(Error::new(ErrorKind::NotImplemented, "update"))
    }

    /// `PUT [base]/[type]?criteria`.
    pub async fn conditional_update(&self, resource_type: &str, criteria: &str, body: Value, if_match: Option<u64>) -> Result<Updated, Error> {
        let _ = (resource_type, criteria, body, if_match);
        Err(Error::new(ErrorKind::NotImplemented, "conditional update"))
    }

    /// `PATCH [base]/[type]/[id]`.
    pub async fn patch(&self, resource_type: &str, id: &str, patch: PatchDocument, if_match: Option<u64>) -> Result<StoredResource, Error> {
        let _ = (resource_type, id, patch, if_match);
        Err(Error::new(ErrorKind::NotImplemented, "patch"))
    }

    /// `PATCH [base]/[type]?criteria`.
    pub async fn conditional_patch(&self, resource_type: &str, criteria: &str, patch: PatchDocument, if_match: Option<u64>) -> Result<StoredResource, Error> {
        let _ = (resource_type, criteria, patch, if_match);
        Err(Error::new(ErrorKind::NotImplemented, "conditional patch"))
    }

    /// `DELETE [base]/[type]/[id]`. Returns the version of the delete, or
    /// `None` when there was nothing to delete (already deleted or never existed).
    pub async fn delete(&self, resource_type: &str, id: &str) -> Result<Option<u64>, Error> {
        let _ = (resource_type, id);
        Err(Error::new(ErrorKind::NotImplemented, "delete"))
    }

    /// `DELETE [base]/[type]?criteria`. Returns how many resources were deleted.
    pub async fn conditional_delete(&self, resource_type: &str, criteria: &str) -> Result<usize, Error> {
        let _ = (resource_type, criteria);
        Err(Error::new(ErrorKind::NotImplemented, "conditional delete"))
    }

    /// `GET [base]/_history`, `[type]/_history`, `[type]/[id]/_history`.
    pub async fn history(&self, scope: &HistoryScope, params: &HistoryParams) -> Result<Page<StoredResource>, Error> {
        let _ = (scope, params);
        Err(Error::new(ErrorKind::NotImplemented, "history"))
    }

    /// `GET [base]/[type]?params` and `GET [base]?params`.
    pub async fn search(&self, resource_type: Option<&str>, params: &[(String, String)], handling: Handling) -> Result<SearchResult, Error> {
        let _ = (resource_type, params, handling);
        Err(Error::new(ErrorKind::NotImplemented, "search"))
    }

    /// `POST [base]` with a batch or transaction Bundle; returns the response Bundle.
    /// `base_url` is the server's FHIR base, used for `fullUrl`s.
    pub async fn bundle(&self, bundle: Value, base_url: &str) -> Result<Value, Error> {
        let _ = (bundle, base_url);
        Err(Error::new(ErrorKind::NotImplemented, "bundle"))
    }
}
