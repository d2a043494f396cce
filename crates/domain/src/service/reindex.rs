//! Custom search parameters and `$reindex`
//! (<http://hl7.org/fhir/R4/searchparameter.html>).
//!
//! A SearchParameter resource created through the API is stored like any
//! other resource and changes nothing by itself. `$reindex` (type or system
//! level) reads every active SearchParameter, builds a new
//! [`fhir::search::Registry`] and swaps it in (from then on new writes are
//! indexed and searches parsed with it), then walks the resources in scope in
//! (type, id) order and rewrites their index rows (search values and the
//! `_text`/`_content` words) in batches, each batch one
//! commit of [`crate::store::Reindex`] rows. Reads and writes go on meanwhile:
//! a resource written after the swap is indexed by its own write, and the
//! store skips a reindex row whose version has moved on. At start-up the
//! server activates the stored SearchParameters the same way, without the walk.

use super::Service;
use crate::error::{Error, ErrorKind};
use crate::store::{Commit, Reindex, ResourceKey};
use fhir::search::Registry;
use fhir::search::text::TextIndex;
use fhir::search::query::{SearchQuery, TotalMode};
use fhir::search::registry::Rejected;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Resources read and re-indexed per commit.
const REINDEX_BATCH: usize = 500;

/// How far a reindex has got, readable while it runs.
#[derive(Debug, Default)]
pub struct ReindexProgress {
    /// Resources in scope when the walk started.
    pub total: AtomicU64,
    /// Resources walked so far.
    pub done: AtomicU64,
}

/// What a reindex did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReindexReport {
    /// Codes of the custom parameters now in force, per base type (`Patient.eye-colour`).
    pub active: Vec<String>,
    /// SearchParameters that could not be activated, with the reason.
    pub rejected: Vec<Rejected>,
    /// Resources whose index rows were rewritten.
    pub reindexed: u64,
}

impl Service {
    /// Builds the registry from the stored active SearchParameter resources
    /// and puts it in force. Returns the ones that could not be used.
    pub async fn activate_search_parameters(&self) -> Result<Vec<Rejected>, Error> {
        let mut resources: Vec<Value> = Vec::new();
        let mut after: Option<ResourceKey> = None;
        loop {
            let batch = self.store.scan(Some("SearchParameter"), after.as_ref(), REINDEX_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = Some((last.resource_type.clone(), last.id.clone()));
            for stored in &batch {
                let Some(body) = &stored.body else { continue };
                let value: Value = serde_json::from_str(body)
                    .map_err(|_| Error::new(ErrorKind::Internal, "a stored SearchParameter is not JSON"))?;
                if value.get("status").and_then(Value::as_str) == Some("active") {
                    resources.push(value);
                }
            }
            if batch.len() < REINDEX_BATCH {
                break;
            }
        }
        let (registry, rejected) = Registry::with_custom(&resources);
        tracing::info!(custom = registry.custom().len(), rejected = rejected.len(), "search parameters activated");
        self.set_registry(Arc::new(registry));
        Ok(rejected)
    }

    /// `$reindex` at type level (`Some(type)`) or system level (`None`):
    /// activates the stored SearchParameters, then rewrites the index rows of
    /// every current resource in scope, updating `progress` as it goes.
    pub(crate) async fn reindex_unchecked(&self, resource_type: Option<&str>, progress: &ReindexProgress) -> Result<ReindexReport, Error> {
        if let Some(rt) = resource_type {
            super::prepare::check_type(rt)?;
        }
        let rejected = self.activate_search_parameters().await?;
        let registry = self.registry();
        let count = SearchQuery {
            resource_type: resource_type.map(str::to_string),
            count: 0,
            total: TotalMode::Accurate,
            ..SearchQuery::default()
        };
        let total = self.store.search(&count).await?.total.unwrap_or(0);
        progress.total.store(total, Ordering::Relaxed);
        progress.done.store(0, Ordering::Relaxed);
        let mut after: Option<ResourceKey> = None;
        let mut reindexed = 0u64;
        loop {
            let batch = self.store.scan(resource_type, after.as_ref(), REINDEX_BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = Some((last.resource_type.clone(), last.id.clone()));
            let mut commit = Commit::default();
            for stored in &batch {
                let Some(body) = &stored.body else { continue };
                let value: Value = serde_json::from_str(body)
                    .map_err(|_| Error::new(ErrorKind::Internal, "a stored resource is not JSON"))?;
                commit.reindex.push(Reindex {
                    resource_type: stored.resource_type.clone(),
                    id: stored.id.clone(),
                    version_id: stored.version_id,
                    index: registry.extract(&value),
                    text: TextIndex::of(&value),
                    contained: super::prepare::contained_index(&registry, &value),
                });
            }
            let n = commit.reindex.len() as u64;
            self.store.commit(commit).await?;
            reindexed += n;
            progress.done.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::info!(done = progress.done.load(Ordering::Relaxed), total, "reindex progress");
            if batch.len() < REINDEX_BATCH {
                break;
            }
        }
        let active = registry
            .custom()
            .iter()
            .flat_map(|def| def.base.iter().map(move |base| format!("{base}.{}", def.code)))
            .collect();
        Ok(ReindexReport { active, rejected, reindexed })
    }
}
