//! The Service's public interactions: each one checks the caller's
//! [`Access`] (deny by default), performs the interaction, keeps from the
//! answer what the caller may not see, and records the access in the audit
//! trail — inside the write's own commit, or (for reads) committed before the
//! data is returned. A failed or refused interaction is audited too.
//!
//! What a caller may see of a resource ([`Service::visible`]):
//! - its type must be allowed by every policy layer (`decide`);
//! - a patient-restricted caller sees only the patient's compartment (and
//!   shared reference data, [`crate::access::SHARED_REFERENCE_TYPES`]);
//! - a resource labelled restricted needs break-the-glass;
//! - granular scope filters (`?category=laboratory`) must match the resource.
//!
//! Searches add the patient restriction and single filters to the query
//! itself (so counts and pages are right), then check every match and every
//! included resource again.

use super::{
    Created, Handling, HistoryParams, LoadResult, PatchDocument, Return, SearchResult, Service, Updated,
};
use crate::access::{self, Access, Decision, Perms};
use crate::audit::{AuditAction, AuditOutcome, AuditQuery, AuditRecord, AuditSort};
use crate::error::{Error, ErrorKind};
use crate::service::{ReindexProgress, ReindexReport};
use crate::store::{Check, Commit, HistoryScope, Method, Page, StoredResource, Write};
use fhir::compartments;
use fhir::instant::Instant;
use fhir::search::IndexValue;
use serde_json::Value;

/// Most entities one audit record lists (a search page can be large).
pub(crate) const MAX_AUDITED_ENTITIES: usize = 200;

/// Why a resource is withheld.
enum Withheld {
    /// Not the caller's patient, not their type, or a filter does not match.
    Outside,
    /// Labelled restricted and no break-the-glass in effect.
    Restricted,
}

impl Service {
    // ---- Writes -------------------------------------------------------

    /// `POST [base]/[type]`, with `If-None-Exist` criteria for conditional create.
    pub async fn create(&self, access: &Access, resource_type: &str, body: Value, if_none_exist: Option<&str>) -> Result<Created, Error> {
        let result = async {
            self.require(access, Perms::CREATE, resource_type)?;
            self.check_new_content(access, Perms::CREATE, resource_type, &body).await?;
            self.create_unchecked(access, resource_type, body, if_none_exist).await
        }
        .await;
        self.audit_if_failed(access, "create", AuditAction::Create, resource_type, None, result).await
    }

    /// `PUT [base]/[type]/[id]`.
    pub async fn update(&self, access: &Access, resource_type: &str, id: &str, body: Value, if_match: Option<u64>) -> Result<Updated, Error> {
        let entity = format!("{resource_type}/{id}");
        let result = async {
            self.check_replace(access, resource_type, id, &body).await?;
            self.update_unchecked(access, resource_type, id, body, if_match).await
        }
        .await;
        self.audit_if_failed(access, "update", AuditAction::Update, resource_type, Some(entity), result).await
    }

    /// `PUT [base]/[type]?criteria`.
    pub async fn conditional_update(&self, access: &Access, resource_type: &str, criteria: &str, body: Value, if_match: Option<u64>) -> Result<Updated, Error> {
        let result = async {
            self.require(access, Perms::UPDATE, resource_type)?;
            self.require(access, Perms::SEARCH, resource_type)?;
            let query = self.criteria_query(resource_type, criteria)?;
            if let [id] = self.matching_ids(&query).await?.as_slice() {
                self.check_replace(access, resource_type, id, &body).await?;
            } else {
                self.check_new_content(access, Perms::CREATE, resource_type, &body).await?;
            }
            self.conditional_update_unchecked(access, resource_type, criteria, body, if_match).await
        }
        .await;
        self.audit_if_failed(access, "update", AuditAction::Update, resource_type, None, result).await
    }

    /// `PATCH [base]/[type]/[id]`.
    pub async fn patch(&self, access: &Access, resource_type: &str, id: &str, patch: PatchDocument, if_match: Option<u64>) -> Result<StoredResource, Error> {
        let entity = format!("{resource_type}/{id}");
        let result = async {
            self.require(access, Perms::UPDATE, resource_type)?;
            self.check_existing(access, Perms::UPDATE, resource_type, id).await?;
            let current = self.read_unchecked(resource_type, id).await?;
            let patched = super::apply_patch(&current, &patch)?;
            self.check_new_content(access, Perms::UPDATE, resource_type, &patched).await?;
            self.patch_unchecked(access, resource_type, id, patch, if_match).await
        }
        .await;
        self.audit_if_failed(access, "patch", AuditAction::Update, resource_type, Some(entity), result).await
    }

    /// `PATCH [base]/[type]?criteria`.
    pub async fn conditional_patch(&self, access: &Access, resource_type: &str, criteria: &str, patch: PatchDocument, if_match: Option<u64>) -> Result<StoredResource, Error> {
        let id = async {
            self.require(access, Perms::SEARCH, resource_type)?;
            let query = self.criteria_query(resource_type, criteria)?;
            match self.matching_ids(&query).await?.as_slice() {
                [] => Err(Error::new(ErrorKind::NotFound, "conditional patch: no resource matches the criteria")),
                [id] => Ok(id.clone()),
                _ => Err(super::multiple_matches("conditional patch")),
            }
        }
        .await;
        match self.audit_if_failed(access, "patch", AuditAction::Update, resource_type, None, id).await {
            Ok(id) => self.patch(access, resource_type, &id, patch, if_match).await,
            Err(e) => Err(e),
        }
    }

    /// `DELETE [base]/[type]/[id]`.
    pub async fn delete(&self, access: &Access, resource_type: &str, id: &str) -> Result<Option<u64>, Error> {
        let entity = format!("{resource_type}/{id}");
        let result = async {
            self.require(access, Perms::DELETE, resource_type)?;
            self.check_existing(access, Perms::DELETE, resource_type, id).await?;
            self.delete_unchecked(access, resource_type, id).await
        }
        .await;
        self.audit_if_failed(access, "delete", AuditAction::Delete, resource_type, Some(entity), result).await
    }

    /// `DELETE [base]/[type]?criteria`.
    pub async fn conditional_delete(&self, access: &Access, resource_type: &str, criteria: &str) -> Result<usize, Error> {
        let id = async {
            self.require(access, Perms::DELETE, resource_type)?;
            self.require(access, Perms::SEARCH, resource_type)?;
            let query = self.criteria_query(resource_type, criteria)?;
            match self.matching_ids(&query).await?.as_slice() {
                [] => Ok(None),
                [id] => Ok(Some(id.clone())),
                _ => Err(super::multiple_matches("conditional delete")),
            }
        }
        .await;
        match self.audit_if_failed(access, "delete", AuditAction::Delete, resource_type, None, id).await? {
            None => Ok(0),
            Some(id) => Ok(usize::from(self.delete(access, resource_type, &id).await?.is_some())),
        }
    }

    /// `POST [base]` with a batch or transaction Bundle. Each entry is
    /// checked and audited as if sent alone; a transaction's audit records
    /// are committed with it.
    pub async fn bundle(&self, access: &Access, bundle: Value, base_url: &str, prefer: Option<Return>) -> Result<Value, Error> {
        self.bundle_unchecked(access, bundle, base_url, prefer).await
    }

    /// Bulk load (`hearth import`, migrations): every resource must be
    /// creatable and updatable by the caller; one audit record per call.
    pub async fn load(&self, access: &Access, resources: Vec<Value>) -> Vec<LoadResult> {
        let mut refused: Vec<Option<Error>> = Vec::with_capacity(resources.len());
        for body in &resources {
            let rt = body.get("resourceType").and_then(Value::as_str).unwrap_or_default();
            let allowed = access.decide(Perms::CREATE, rt).is_unrestricted()
                && access.decide(Perms::UPDATE, rt).is_unrestricted()
                && access.patient.is_none();
            refused.push((!allowed).then(|| forbidden(&format!("bulk loading {rt} needs unrestricted create and update rights"))));
        }
        if refused.iter().any(Option::is_some) {
            let _ = self
                .append_audit(vec![self.record(access, "create", AuditAction::Create).failed(AuditOutcome::Denied, "bulk load refused")])
                .await;
            return refused
                .into_iter()
                .map(|r| Err(r.unwrap_or_else(|| Error::new(ErrorKind::Forbidden, "the load was refused as a whole"))))
                .collect();
        }
        self.load_unchecked(access, resources).await
    }

    /// Bulk load as one unit (migrations): every resource is validated as on
    /// the API and written as an update of its own id, all in one commit, or
    /// none is (the first invalid resource is the error, with its index in
    /// `resources`). The same rights as [`Service::load`].
    pub async fn load_all(&self, access: &Access, resources: Vec<Value>) -> Result<Vec<StoredResource>, Error> {
        self.load_all_seen(access, resources, None).await
    }

    /// [`Service::load_all`] for a caller that has just read what is stored
    /// under these ids ([`Service::read_many`]): `seen[i]` is the current
    /// version it found for `resources[i]` (`None`: none). Nothing is taken
    /// on trust: each version is checked in the commit, and when one has
    /// moved since (or was hidden from the caller: a deleted resource) the
    /// Service looks the versions up itself and commits again. It spares
    /// the store a second lookup of every id of the batch.
    pub async fn load_all_seen<B: std::borrow::Borrow<Value> + Send + Sync>(
        &self,
        access: &Access,
        resources: Vec<B>,
        seen: Option<Vec<Option<u64>>>,
    ) -> Result<Vec<StoredResource>, Error> {
        for body in &resources {
            let rt = body.borrow().get("resourceType").and_then(Value::as_str).unwrap_or_default();
            let allowed = access.decide(Perms::CREATE, rt).is_unrestricted()
                && access.decide(Perms::UPDATE, rt).is_unrestricted()
                && access.patient.is_none();
            if !allowed {
                let e = forbidden(&format!("bulk loading {rt} needs unrestricted create and update rights"));
                return Err(self.audit_error(access, "create", AuditAction::Create, Some(rt), None, e).await);
            }
        }
        self.load_all_unchecked(access, resources, seen).await
    }

    /// A transaction's write, checked as the interaction it stands for.
    pub(crate) async fn check_transaction_write(&self, access: &Access, write: &Write) -> Result<(), Error> {
        let rt = write.resource_type.as_str();
        let result = async {
            let current = self.store.read(rt, &write.id).await?.filter(|c| !c.is_deleted());
            let perm = match (write.method, &current) {
                (Method::Delete, _) => Perms::DELETE,
                (_, Some(_)) => Perms::UPDATE,
                (_, None) => Perms::CREATE,
            };
            self.require(access, perm, rt)?;
            if let Some(current) = &current {
                self.check_visible(access, perm, current).await?;
            }
            if let Some(text) = write.body.as_deref() {
                let body = super::prepare::parse_stored(text)?;
                self.check_new_content(access, perm, rt, &body).await?;
            }
            Ok(())
        }
        .await;
        let entity = Some(format!("{rt}/{}", write.id));
        self.audit_if_failed(access, "transaction", AuditAction::Execute, rt, entity, result).await
    }

    // ---- Reads --------------------------------------------------------

    /// `GET [base]/[type]/[id]`: NotFound, Gone, or Forbidden.
    pub async fn read(&self, access: &Access, resource_type: &str, id: &str) -> Result<StoredResource, Error> {
        if resource_type == "AuditEvent" {
            return self.read_audit_event(access, id).await;
        }
        let result = async {
            self.require(access, Perms::READ, resource_type)?;
            let found = self.read_unchecked(resource_type, id).await?;
            self.check_visible(access, Perms::READ, &found).await?;
            Ok(found)
        }
        .await;
        let target = format!("{resource_type}/{id}");
        self.audit_read(access, "read", resource_type, &target, result, |r| format!("{}/{}", r.resource_type, r.id)).await
    }

    /// The current versions of many resources at once (what a migration
    /// compares before writing and reads back after): absent and deleted
    /// ones are left out. As for `read`, each type needs read rights and
    /// each resource must be visible to the caller; the reads are audited
    /// in records of at most 200 resources each, so every one is named.
    pub async fn read_many(&self, access: &Access, keys: &[(String, String)]) -> Result<Vec<StoredResource>, Error> {
        let result = async {
            let mut types: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
            types.sort_unstable();
            types.dedup();
            for rt in types {
                if rt == "AuditEvent" {
                    return Err(forbidden("the audit trail is read through AuditEvent searches"));
                }
                self.require_type_ok(rt)?;
                self.require(access, Perms::READ, rt)?;
            }
            let mut found = self.store.read_many(keys).await?;
            found.retain(|r| !r.is_deleted());
            for r in &found {
                self.check_visible(access, Perms::READ, r).await?;
            }
            Ok(found)
        }
        .await;
        match result {
            Ok(found) => {
                let records = found
                    .chunks(MAX_AUDITED_ENTITIES)
                    .map(|chunk| {
                        let mut record = self.record(access, "read", AuditAction::Read);
                        fill_entities(&mut record, chunk.iter());
                        record
                    })
                    .collect();
                self.append_read_audit(records).await?;
                Ok(found)
            }
            Err(e) => Err(self.audit_error(access, "read", AuditAction::Read, None, None, e).await),
        }
    }

    /// `GET [base]/[type]/[id]/_history/[vid]`.
    pub async fn vread(&self, access: &Access, resource_type: &str, id: &str, version_id: &str) -> Result<StoredResource, Error> {
        if resource_type == "AuditEvent" {
            return Err(forbidden("the audit trail has no version history"));
        }
        let result = async {
            self.require(access, Perms::READ, resource_type)?;
            let found = self.vread_unchecked(resource_type, id, version_id).await?;
            self.check_visible(access, Perms::READ, &found).await?;
            // An old version is only shown to whoever may see the current one.
            if let Some(current) = self.store.read(resource_type, id).await?.filter(|c| !c.is_deleted()) {
                self.check_visible(access, Perms::READ, &current).await?;
            }
            Ok(found)
        }
        .await;
        let target = format!("{resource_type}/{id}");
        self.audit_read(access, "vread", resource_type, &target, result, |r| {
            format!("{}/{}/_history/{}", r.resource_type, r.id, r.version_id)
        })
        .await
    }

    /// `GET [base]/_history`, `[type]/_history`, `[type]/[id]/_history`.
    pub async fn history(&self, access: &Access, scope: &HistoryScope, params: &HistoryParams) -> Result<Page<StoredResource>, Error> {
        let resource_type = match scope {
            HistoryScope::System => None,
            HistoryScope::Type(t) => Some(t.clone()),
            HistoryScope::Instance { resource_type, .. } => Some(resource_type.clone()),
        };
        let result = async {
            match scope {
                HistoryScope::System => {
                    if access.patient.is_some() {
                        return Err(forbidden("system history is not available to a patient-restricted caller"));
                    }
                }
                HistoryScope::Type(t) => {
                    self.require_type_ok(t)?;
                    self.require(access, Perms::SEARCH, t)?;
                }
                HistoryScope::Instance { resource_type, id } => {
                    self.require_type_ok(resource_type)?;
                    self.require(access, Perms::READ, resource_type)?;
                    self.check_existing(access, Perms::READ, resource_type, id).await?;
                }
            }
            let mut page = self.history_unchecked(scope, params).await?;
            let mut kept = Vec::with_capacity(page.items.len());
            for item in page.items.drain(..) {
                if self.withheld(access, Perms::READ, &item).await?.is_none() {
                    kept.push(item);
                }
            }
            page.items = kept;
            Ok(page)
        }
        .await;
        match result {
            Ok(page) => {
                let mut record = self.record(access, "history", AuditAction::Read);
                record.resource_type = resource_type;
                fill_entities(&mut record, page.items.iter());
                self.append_read_audit(vec![record]).await?;
                Ok(page)
            }
            Err(e) => Err(self.audit_error(access, "history", AuditAction::Read, resource_type.as_deref(), None, e).await),
        }
    }

    /// `GET [base]/[type]?params` and `GET [base]?params`.
    pub async fn search(&self, access: &Access, resource_type: Option<&str>, params: &[(String, String)], handling: Handling) -> Result<SearchResult, Error> {
        if resource_type == Some("AuditEvent") {
            return self.search_audit_events(access, params).await;
        }
        let result = async {
            let mut params = params.to_vec();
            match resource_type {
                Some(rt) => {
                    self.require_type_ok(rt)?;
                    let decision = self.require(access, Perms::SEARCH, rt)?;
                    add_single_filters(&decision, &mut params);
                    if let Some(patient) = &access.patient {
                        if rt == "Patient" {
                            params.push(("_id".into(), patient.clone()));
                        } else if compartments::params("Patient", rt).is_some() {
                            let result = self.compartment_search_unchecked("Patient", patient, rt, &params, handling).await?;
                            return self.keep_visible(access, result).await;
                        }
                    }
                }
                None => {
                    if access.patient.is_some() {
                        return Err(forbidden("a patient-restricted caller searches one resource type at a time"));
                    }
                }
            }
            let result = self.search_unchecked(resource_type, &params, handling).await?;
            self.keep_visible(access, result).await
        }
        .await;
        self.audit_search(access, "search", resource_type, params, result).await
    }

    /// `GET [base]/[compartment]/[id]/[type]?params`.
    pub async fn compartment_search(
        &self,
        access: &Access,
        compartment: &str,
        id: &str,
        resource_type: &str,
        params: &[(String, String)],
        handling: Handling,
    ) -> Result<SearchResult, Error> {
        let result = async {
            self.require_type_ok(resource_type)?;
            let decision = self.require(access, Perms::SEARCH, resource_type)?;
            if let Some(patient) = &access.patient
                && (compartment != "Patient" || id != patient)
            {
                return Err(forbidden("this compartment is not the caller's patient's"));
            }
            let mut params = params.to_vec();
            add_single_filters(&decision, &mut params);
            let result = self.compartment_search_unchecked(compartment, id, resource_type, &params, handling).await?;
            self.keep_visible(access, result).await
        }
        .await;
        self.audit_search(access, "search", Some(resource_type), params, result).await
    }

    /// `Patient/[id]/$everything`.
    pub async fn patient_everything(&self, access: &Access, id: &str, params: &[(String, String)], handling: Handling) -> Result<SearchResult, Error> {
        let result = async {
            self.require(access, Perms::READ, "Patient")?;
            if access.patient.as_ref().is_some_and(|p| p != id) {
                return Err(forbidden("this is not the caller's patient"));
            }
            self.check_existing(access, Perms::READ, "Patient", id).await?;
            let result = self.patient_everything_unchecked(id, params, handling).await?;
            self.keep_visible(access, result).await
        }
        .await;
        self.audit_search(access, "operation", Some("Patient"), params, result).await
    }

    /// `Observation/$lastn`.
    pub async fn observation_lastn(&self, access: &Access, params: &[(String, String)], handling: Handling) -> Result<SearchResult, Error> {
        let result = async {
            let decision = self.require(access, Perms::SEARCH, "Observation")?;
            let mut params = params.to_vec();
            add_single_filters(&decision, &mut params);
            if let Some(patient) = &access.patient {
                params.retain(|(k, _)| k != "patient" && k != "subject");
                params.push(("patient".into(), format!("Patient/{patient}")));
            }
            let result = self.observation_lastn_unchecked(&params, handling).await?;
            self.keep_visible(access, result).await
        }
        .await;
        self.audit_search(access, "operation", Some("Observation"), params, result).await
    }

    /// `$reindex` (system or one type): administrators only.
    pub async fn reindex(&self, access: &Access, resource_type: Option<&str>, progress: &ReindexProgress) -> Result<ReindexReport, Error> {
        let result = if access.administer {
            self.reindex_unchecked(resource_type, progress).await
        } else {
            Err(forbidden("$reindex needs an administrator"))
        };
        let mut record = self.record(access, "operation", AuditAction::Execute);
        record.resource_type = resource_type.map(str::to_string);
        record.query = Some("$reindex".into());
        if let Err(e) = &result {
            record = record.failed(AuditOutcome::of_error(e.kind), &e.message());
        }
        self.append_audit(vec![record]).await?;
        result
    }

    // ---- The audit trail as AuditEvent resources -----------------------

    async fn read_audit_event(&self, access: &Access, id: &str) -> Result<StoredResource, Error> {
        let result = async {
            self.require(access, Perms::READ, "AuditEvent")?;
            let seq = crate::audit::seq_of_audit_event_id(id).ok_or_else(|| super::not_found("AuditEvent"))?;
            self.flush_audit().await?;
            let entry = self
                .store
                .audit_scan(seq.saturating_sub(1), 1)
                .await?
                .into_iter()
                .find(|e| e.seq == seq)
                .ok_or_else(|| super::not_found("AuditEvent"))?;
            let record = entry.parse().map_err(|_| Error::new(ErrorKind::Internal, "an audit entry is unreadable"))?;
            if let Some(patient) = &access.patient
                && !record.patients.contains(patient)
            {
                return Err(super::not_found("AuditEvent"));
            }
            Ok(audit_event_resource(seq, &record))
        }
        .await;
        self.audit_read(access, "read", "AuditEvent", &format!("AuditEvent/{id}"), result, |r| format!("AuditEvent/{}", r.id)).await
    }

    /// `GET [base]/AuditEvent?...`: `date` (with prefixes), `agent`/`who`/
    /// `altid` (actor id), `patient`, `action`, `subtype` (the event),
    /// `entity-type` (the resource type), `outcome`, `_sort`, `_count`, `_offset`.
    async fn search_audit_events(&self, access: &Access, params: &[(String, String)]) -> Result<SearchResult, Error> {
        let result = async {
            self.require(access, Perms::SEARCH, "AuditEvent")?;
            let mut query = audit_query(params, self.config.default_page_size, self.config.max_page_size)?;
            if let Some(patient) = &access.patient {
                if query.patient.as_ref().is_some_and(|p| p != patient) {
                    return Err(forbidden("a patient sees only the audit of their own record"));
                }
                query.patient = Some(patient.clone());
            }
            // The trail shown includes every read answered before.
            self.flush_audit().await?;
            let page = self.store.audit_search(&query).await?;
            let mut items = Vec::with_capacity(page.items.len());
            for entry in page.items {
                let record = entry.parse().map_err(|_| Error::new(ErrorKind::Internal, "an audit entry is unreadable"))?;
                items.push(audit_event_resource(entry.seq, &record));
            }
            let mut applied: Vec<(String, String)> =
                params.iter().filter(|(k, _)| k != "_offset" && k != "_page").cloned().collect();
            if let Some(patient) = &access.patient
                && !applied.iter().any(|(k, _)| k == "patient")
            {
                applied.push(("patient".into(), patient.clone()));
            }
            Ok(SearchResult {
                page: Page { items, total: page.total },
                applied,
                count: query.count,
                offset: query.offset,
                included: Default::default(),
                page_token: None,
            })
        }
        .await;
        match result {
            Ok(found) => {
                let mut record = self.record(access, "search", AuditAction::Read);
                record.resource_type = Some("AuditEvent".into());
                record.query = Some(query_text(params));
                self.append_audit(vec![record]).await?;
                Ok(found)
            }
            Err(e) => Err(self.audit_error(access, "search", AuditAction::Read, Some("AuditEvent"), None, e).await),
        }
    }

    // ---- Checks ---------------------------------------------------------

    /// The caller's decision for `perm` on a type, or Forbidden. The audit
    /// trail is never written through the Service's interactions.
    fn require(&self, access: &Access, perm: Perms, resource_type: &str) -> Result<Decision, Error> {
        if resource_type == "AuditEvent" && !(perm == Perms::READ || perm == Perms::SEARCH) {
            return Err(forbidden("the audit trail cannot be changed"));
        }
        match access.decide(perm, resource_type) {
            Decision::Denied => Err(forbidden(&format!(
                "not permitted: {} on {resource_type}",
                interaction_name(perm)
            ))),
            allowed => Ok(allowed),
        }
    }

    fn require_type_ok(&self, resource_type: &str) -> Result<(), Error> {
        super::prepare::check_type(resource_type)
    }

    /// An update's checks: the type, the current resource (when it exists)
    /// and the new content.
    async fn check_replace(&self, access: &Access, resource_type: &str, id: &str, body: &Value) -> Result<(), Error> {
        self.require_type_ok(resource_type)?;
        let exists = self.store.read(resource_type, id).await?.is_some_and(|r| !r.is_deleted());
        if exists {
            self.require(access, Perms::UPDATE, resource_type)?;
            self.check_existing(access, Perms::UPDATE, resource_type, id).await?;
            self.check_new_content(access, Perms::UPDATE, resource_type, body).await
        } else {
            self.require(access, Perms::CREATE, resource_type)?;
            self.check_new_content(access, Perms::CREATE, resource_type, body).await
        }
    }

    /// The current version of a resource, when there is one, must be visible
    /// to the caller for `perm`.
    async fn check_existing(&self, access: &Access, perm: Perms, resource_type: &str, id: &str) -> Result<(), Error> {
        super::prepare::check_id(id)?;
        match self.store.read(resource_type, id).await? {
            Some(current) if !current.is_deleted() => self.check_visible(access, perm, &current).await,
            _ => Ok(()),
        }
    }

    /// New content must stay within what the caller may see (a patient's
    /// app cannot write into another patient's record).
    async fn check_new_content(&self, access: &Access, perm: Perms, resource_type: &str, body: &Value) -> Result<(), Error> {
        if access.patient.is_none() && access.decide(perm, resource_type).is_unrestricted() {
            return Ok(());
        }
        let text = serde_json::to_string(body).map_err(|_| Error::new(ErrorKind::Invalid, "the resource is not JSON"))?;
        let probe = StoredResource {
            resource_type: resource_type.to_string(),
            id: body.get("id").and_then(Value::as_str).unwrap_or("new").to_string(),
            version_id: 0,
            last_updated: Instant(0),
            method: Method::Post,
            body: Some(text.into()),
        };
        match self.withheld_content(access, perm, &probe, body, false).await? {
            None => Ok(()),
            Some(_) => Err(forbidden("the resource would be outside what the caller may write")),
        }
    }

    /// Forbidden unless the caller may see `resource` for `perm`.
    async fn check_visible(&self, access: &Access, perm: Perms, resource: &StoredResource) -> Result<(), Error> {
        match self.withheld(access, perm, resource).await? {
            None => Ok(()),
            Some(Withheld::Outside) => Err(forbidden("not permitted: this resource is outside the caller's access")),
            Some(Withheld::Restricted) => Err(forbidden(
                "this record is restricted: break-the-glass (emergency access, with a reason) is needed to open it",
            )),
        }
    }

    /// Why the caller may not see `resource`, if they may not.
    async fn withheld(&self, access: &Access, perm: Perms, resource: &StoredResource) -> Result<Option<Withheld>, Error> {
        let Some(text) = resource.body.as_deref() else {
            // A deleted version shows nothing but its key; a patient-restricted
            // caller cannot be shown that it belonged to their record.
            return Ok(if access.patient.is_some() { Some(Withheld::Outside) } else { None });
        };
        let decision = access.decide(perm, &resource.resource_type);
        if !decision.is_allowed() {
            return Ok(Some(Withheld::Outside));
        }
        let labelled = text.contains("v3-Confidentiality");
        if access.patient.is_none() && decision.is_unrestricted() && !labelled {
            return Ok(None);
        }
        let body: Value = super::prepare::parse_stored(text)?;
        self.withheld_content(access, perm, resource, &body, true).await
    }

    async fn withheld_content(
        &self,
        access: &Access,
        perm: Perms,
        resource: &StoredResource,
        body: &Value,
        stored: bool,
    ) -> Result<Option<Withheld>, Error> {
        let rt = resource.resource_type.as_str();
        if let Some(patient) = &access.patient {
            let inside = if rt == "Patient" {
                body.get("id").and_then(Value::as_str) == Some(patient.as_str())
            } else if let Some(codes) = compartments::params("Patient", rt) {
                self.registry().extract(body).iter().any(|entry| {
                    codes.iter().any(|c| c == &entry.param)
                        && matches!(&entry.value, IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. }
                            if t == "Patient" && id == patient)
                })
            } else {
                access::SHARED_REFERENCE_TYPES.contains(&rt)
            };
            if !inside {
                return Ok(Some(Withheld::Outside));
            }
        }
        if access.emergency.is_none() && access::is_restricted(body) {
            return Ok(Some(Withheld::Restricted));
        }
        if let Decision::Allowed(layers) = access.decide(perm, rt) {
            for alternatives in &layers {
                let mut any = false;
                for filter in alternatives {
                    if self.filter_matches(resource, body, filter, stored).await? {
                        any = true;
                        break;
                    }
                }
                if !any {
                    return Ok(Some(Withheld::Outside));
                }
            }
        }
        Ok(None)
    }

    /// Whether a resource matches a granular scope's search parameters: a
    /// stored one by searching for it; new content by extracting its values
    /// into a throwaway in-memory store and searching there (one semantics).
    async fn filter_matches(&self, resource: &StoredResource, body: &Value, filter: &[(String, String)], stored: bool) -> Result<bool, Error> {
        let registry = self.registry();
        let mut params = filter.to_vec();
        // A contained match is judged by its container (it is part of it).
        let id = crate::store::split_contained_match_id(&resource.id).map_or(resource.id.as_str(), |(container, _)| container);
        params.push(("_id".into(), id.to_string()));
        let parsed = fhir::search::query::parse(&registry, Some(&resource.resource_type), &params, false)
            .map_err(|issues| Error::with_issues(ErrorKind::Internal, issues))?;
        let mut query = parsed.query;
        query.count = 1;
        // A scope's filter is about the resource itself, never its contained ones.
        query.contained = fhir::search::query::ContainedMode::No;
        if stored {
            return Ok(!self.store.search(&query).await?.items.is_empty());
        }
        let scratch = crate::memory::MemoryStore::new();
        let write = super::prepare::stamp(&registry, &resource.resource_type, &resource.id, 1, Instant(0), Method::Post, body);
        use crate::store::Store as _;
        scratch.commit(Commit { writes: vec![write], ..Commit::default() }).await?;
        Ok(!scratch.search(&query).await?.items.is_empty())
    }

    /// Keeps only the matches and included resources the caller may see.
    async fn keep_visible(&self, access: &Access, mut result: SearchResult) -> Result<SearchResult, Error> {
        let mut kept = Vec::with_capacity(result.page.items.len());
        let mut dropped = 0u64;
        for item in result.page.items.drain(..) {
            if self.withheld(access, Perms::READ, &item).await?.is_none() {
                kept.push(item);
            } else {
                dropped += 1;
            }
        }
        result.page.items = kept;
        if dropped > 0
            && let Some(total) = result.page.total.as_mut()
        {
            *total = total.saturating_sub(dropped);
        }
        let mut included = Vec::with_capacity(result.included.resources.len());
        for item in result.included.resources.drain(..) {
            if self.withheld(access, Perms::READ, &item).await?.is_none() {
                included.push(item);
            }
        }
        result.included.resources = included;
        Ok(result)
    }

    // ---- Audit records ---------------------------------------------------

    /// A successful record of `event` by the caller, now.
    pub(crate) fn record(&self, access: &Access, event: &str, action: AuditAction) -> AuditRecord {
        let mut record = AuditRecord::new(self.now(), event, action, access.actor.clone());
        record.from = access.from.clone();
        record.emergency = access.emergency.is_some() && access.actor.kind != "system";
        record
    }

    /// The commit of one write, carrying its audit record.
    pub(crate) fn write_commit(&self, access: &Access, checks: Vec<Check>, write: Write) -> Commit {
        let record = self.write_record(access, &write);
        Commit { checks, writes: vec![write], audit: vec![record], ..Commit::default() }
    }

    /// The audit record of one write.
    pub(crate) fn write_record(&self, access: &Access, write: &Write) -> AuditRecord {
        let (event, action) = match write.method {
            Method::Post => ("create", AuditAction::Create),
            Method::Put if write.version_id == 1 => ("create", AuditAction::Create),
            Method::Put => ("update", AuditAction::Update),
            Method::Patch => ("patch", AuditAction::Update),
            Method::Delete => ("delete", AuditAction::Delete),
        };
        self.writes_record(access, event, action, std::slice::from_ref(write))
    }

    /// One audit record for several writes (a bulk load, a transaction).
    pub(crate) fn writes_record(&self, access: &Access, event: &str, action: AuditAction, writes: &[Write]) -> AuditRecord {
        let mut record = self.record(access, event, action);
        let mut types: Vec<&str> = writes.iter().map(|w| w.resource_type.as_str()).collect();
        types.dedup();
        if let [only] = types.as_slice() {
            record.resource_type = Some((*only).to_string());
        }
        for write in writes {
            if record.entities.len() < MAX_AUDITED_ENTITIES {
                record.entities.push(format!("{}/{}/_history/{}", write.resource_type, write.id, write.version_id));
            }
            for patient in patients_of_write(write) {
                if !record.patients.contains(&patient) {
                    record.patients.push(patient);
                }
            }
        }
        record
    }

    /// Commits audit records on their own (refusals, operations) before returning.
    pub(crate) async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), Error> {
        super::read_audit::commit(&self.store, records).await
    }

    /// Queues the entries of a successful read for their batch
    /// (`read_audit.rs`); refused while the trail cannot be written.
    async fn append_read_audit(&self, records: Vec<AuditRecord>) -> Result<(), Error> {
        self.read_audit.push(&self.store, records).await
    }

    /// Commits the queued entries of answered reads now: before the trail
    /// is read, and at shutdown.
    pub async fn flush_audit(&self) -> Result<(), Error> {
        self.read_audit.flush(&self.store).await
    }

    /// Records a failed interaction (a successful write audits itself in its
    /// commit) and passes the result on.
    async fn audit_if_failed<T>(
        &self,
        access: &Access,
        event: &str,
        action: AuditAction,
        resource_type: &str,
        entity: Option<String>,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => Err(self.audit_error(access, event, action, Some(resource_type), entity, e).await),
        }
    }

    async fn audit_error(
        &self,
        access: &Access,
        event: &str,
        action: AuditAction,
        resource_type: Option<&str>,
        entity: Option<String>,
        error: Error,
    ) -> Error {
        let mut record = self.record(access, event, action).failed(AuditOutcome::of_error(error.kind), &error.message());
        record.resource_type = resource_type.map(str::to_string);
        // Whose record the refused access aimed at, so that the patient's own
        // access report shows attempts too.
        if let Some((rt, id)) = entity.as_deref().and_then(|e| e.split_once('/')) {
            let id = id.split('/').next().unwrap_or(id);
            if let Ok(Some(target)) = self.store.read(rt, id).await {
                record.patients = patients_of_stored(&target);
            } else if rt == "Patient" {
                record.patients = vec![id.to_string()];
            }
        }
        record.entities.extend(entity);
        match self.append_audit(vec![record]).await {
            Ok(()) => error,
            Err(audit_failure) => audit_failure,
        }
    }

    async fn audit_read(
        &self,
        access: &Access,
        event: &str,
        resource_type: &str,
        target: &str,
        result: Result<StoredResource, Error>,
        entity: impl Fn(&StoredResource) -> String,
    ) -> Result<StoredResource, Error> {
        match result {
            Ok(found) => {
                let mut record = self.record(access, event, AuditAction::Read);
                record.resource_type = Some(resource_type.to_string());
                record.entities.push(entity(&found));
                record.patients = patients_of_stored(&found);
                self.append_read_audit(vec![record]).await?;
                Ok(found)
            }
            Err(e) => {
                let target = (resource_type != "AuditEvent").then(|| target.to_string());
                Err(self.audit_error(access, event, AuditAction::Read, Some(resource_type), target, e).await)
            }
        }
    }

    async fn audit_search(
        &self,
        access: &Access,
        event: &str,
        resource_type: Option<&str>,
        params: &[(String, String)],
        result: Result<SearchResult, Error>,
    ) -> Result<SearchResult, Error> {
        match result {
            Ok(found) => {
                let mut record = self.record(access, event, AuditAction::Read);
                record.resource_type = resource_type.map(str::to_string);
                record.query = Some(query_text(params));
                fill_entities(&mut record, found.page.items.iter().chain(found.included.resources.iter()));
                self.append_read_audit(vec![record]).await?;
                Ok(found)
            }
            Err(e) => Err(self.audit_error(access, event, AuditAction::Read, resource_type, None, e).await),
        }
    }
}

impl AuditRecord {
    /// This record with a failure outcome and its reason.
    pub fn failed(mut self, outcome: AuditOutcome, detail: &str) -> AuditRecord {
        self.outcome = outcome;
        self.detail = Some(detail.to_string());
        self
    }
}

fn forbidden(message: &str) -> Error {
    Error::new(ErrorKind::Forbidden, message)
}

fn interaction_name(perm: Perms) -> &'static str {
    match perm {
        Perms::CREATE => "create",
        Perms::READ => "read",
        Perms::UPDATE => "update",
        Perms::DELETE => "delete",
        Perms::SEARCH => "search",
        _ => "this interaction",
    }
}

/// Adds a granular scope's filter to the search itself when every layer has
/// exactly one (several alternatives are checked per resource afterwards).
fn add_single_filters(decision: &Decision, params: &mut Vec<(String, String)>) {
    if let Decision::Allowed(layers) = decision
        && layers.iter().all(|alternatives| alternatives.len() == 1)
    {
        for alternatives in layers {
            params.extend(alternatives.iter().flatten().cloned());
        }
    }
}

fn fill_entities<'a>(record: &mut AuditRecord, resources: impl Iterator<Item = &'a StoredResource>) {
    for resource in resources {
        if record.entities.len() < MAX_AUDITED_ENTITIES {
            record.entities.push(format!("{}/{}", resource.resource_type, resource.id));
        }
        for patient in patients_of_stored(resource) {
            if !record.patients.contains(&patient) {
                record.patients.push(patient);
            }
        }
    }
}

fn query_text(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish()
}

/// The patients a write concerns: the Patient itself, or the Patient
/// compartment references among its index entries.
fn patients_of_write(write: &Write) -> Vec<String> {
    if write.resource_type == "Patient" {
        return vec![write.id.clone()];
    }
    let Some(codes) = compartments::params("Patient", &write.resource_type) else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for entry in &write.index {
        if let IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } = &entry.value
            && t == "Patient"
            && codes.iter().any(|c| c == &entry.param)
            && !out.contains(id)
        {
            out.push(id.clone());
        }
    }
    out
}

/// The patients a stored resource concerns, for the audit trail: the
/// Patient itself, or every `Patient/id` reference in its text (a scan of
/// the stored JSON, cheap enough for every read).
pub(crate) fn patients_of_stored(resource: &StoredResource) -> Vec<String> {
    if resource.resource_type == "Patient" {
        // A contained match (`p1#c1`) is read from its container, Patient p1.
        let id = crate::store::split_contained_match_id(&resource.id).map_or(resource.id.as_str(), |(container, _)| container);
        return vec![id.to_string()];
    }
    let Some(text) = resource.body.as_deref() else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    let needle = "\"reference\":\"Patient/";
    let mut rest = text;
    while let Some(at) = rest.find(needle) {
        rest = &rest[at + needle.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        let id = &rest[..end];
        if super::prepare::is_valid_id(id) && !out.iter().any(|p| p == id) {
            out.push(id.to_string());
        }
    }
    out
}

/// An audit entry as a stored AuditEvent resource.
fn audit_event_resource(seq: u64, record: &AuditRecord) -> StoredResource {
    StoredResource {
        resource_type: "AuditEvent".into(),
        id: crate::audit::audit_event_id(seq),
        version_id: 1,
        last_updated: record.at,
        method: Method::Post,
        body: Some(record.to_audit_event(seq).to_string().into()),
    }
}

/// Reads AuditEvent search parameters into an [`AuditQuery`].
fn audit_query(params: &[(String, String)], default_count: usize, max_count: usize) -> Result<AuditQuery, Error> {
    let bad = |name: &str, why: &str| Error::new(ErrorKind::BadRequest, format!("AuditEvent search: {name} {why}")).at(name.to_string());
    let mut query = AuditQuery { count: default_count, ..AuditQuery::default() };
    for (name, value) in params {
        match name.as_str() {
            "date" => {
                let (prefix, text) = match value.get(..2) {
                    Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &value[2..]),
                    _ => ("eq", value.as_str()),
                };
                let (low, high) = date_range(text).ok_or_else(|| bad("date", "must be a date or dateTime"))?;
                match prefix {
                    "ge" => query.from = Some(low),
                    "gt" => query.from = Some(Instant(high.0 + 1)),
                    "le" => query.to = Some(high),
                    "lt" => query.to = Some(Instant(low.0 - 1)),
                    _ => {
                        query.from = Some(low);
                        query.to = Some(high);
                    }
                }
            }
            "agent" | "who" | "altid" | "agent-name" => {
                let who = value.rsplit('|').next().unwrap_or(value);
                query.who = Some(who.to_string());
            }
            "patient" => query.patient = Some(value.strip_prefix("Patient/").unwrap_or(value).to_string()),
            "action" => query.action = Some(crate::audit::AuditAction::parse(value).ok_or_else(|| bad("action", "is one of C R U D E"))?),
            "subtype" => query.event = Some(value.rsplit('|').next().unwrap_or(value).to_string()),
            "entity-type" | "type" => query.resource_type = Some(value.clone()),
            "outcome" => query.outcome = Some(AuditOutcome::parse(value).ok_or_else(|| bad("outcome", "is one of 0 4 8 12"))?),
            "_count" => query.count = value.parse::<usize>().map_err(|_| bad("_count", "must be a number"))?.min(max_count),
            "_offset" => query.offset = value.parse().map_err(|_| bad("_offset", "must be a number"))?,
            "_sort" => {
                for key in value.split(',') {
                    let (name, descending) = match key.strip_prefix('-') {
                        Some(rest) => (rest, true),
                        None => (key, false),
                    };
                    let field = AuditSort::parse(name).ok_or_else(|| bad("_sort", "names a field AuditEvent cannot be sorted by"))?;
                    query.sort.push((field, descending));
                }
            }
            "_total" | "_format" => {}
            other => return Err(bad(other, "is not supported on AuditEvent")),
        }
    }
    Ok(query)
}

/// The instants a date or dateTime text covers (`2026-11` is the whole month).
fn date_range(text: &str) -> Option<(Instant, Instant)> {
    if let Some(at) = Instant::parse(text) {
        return Some((at, at));
    }
    let (year, month, day) = match text.len() {
        4 => (text.parse().ok()?, None, None),
        7 => (text.get(..4)?.parse().ok()?, Some(text.get(5..7)?.parse().ok()?), None),
        10 => (text.get(..4)?.parse().ok()?, Some(text.get(5..7)?.parse().ok()?), Some(text.get(8..10)?.parse().ok()?)),
        _ => return None,
    };
    let start = |y: i32, m: u8, d: u8| Instant::parse(&format!("{y:04}-{m:02}-{d:02}T00:00:00Z"));
    let low = start(year, month.unwrap_or(1), day.unwrap_or(1))?;
    let high = match (month, day) {
        (None, _) => start(year + 1, 1, 1)?,
        (Some(12), None) => start(year + 1, 1, 1)?,
        (Some(m), None) => start(year, m + 1, 1)?,
        (Some(_), Some(_)) => Instant(low.0 + 86_400_000_000),
    };
    Some((low, Instant(high.0 - 1)))
}
