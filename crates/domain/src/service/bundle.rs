//! Batch and transaction processing.
//! See <http://hl7.org/fhir/R4/http.html#transaction> and its processing rules
//! (`#trules`): DELETE, then POST, then PUT/PATCH, then GET; `urn:uuid:` and
//! conditional references resolved before anything is written; all or nothing.

use super::{Handling, PatchDocument, RETRIES, Return, Service, apply_patch, gone, multiple_matches, not_found, prepare, stored_of};
use crate::access::Access;
use crate::error::{Error, ErrorKind};
use crate::store::{Check, Commit, Method, StoreError, StoredResource};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// One parsed `Bundle.entry`.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    full_url: Option<String>,
    verb: Verb,
    /// The request URL relative to the base, without query.
    path: String,
    /// The query string, if any (conditional criteria or search parameters).
    query: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<u64>,
}

impl Entry {
    fn location(&self) -> String {
        format!("Bundle.entry[{}]", self.index)
    }

    /// `[type]` and optional `[id]` (and version) from the path.
    fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }
}

/// What the transaction will do for one entry, decided before writing.
#[derive(Debug, Clone)]
enum Plan {
    /// Create `resource_type/id`; `checks` guard a conditional create.
    Create { resource_type: String, id: String, checks: Vec<Check> },
    /// Conditional create matched an existing resource: nothing to write.
    Existing { resource: StoredResource },
    /// Update (or create-on-update) `resource_type/id`.
    Update { resource_type: String, id: String, checks: Vec<Check> },
    Patch { resource_type: String, id: String },
    /// Delete `resource_type/id`, or nothing if `id` is None (no match).
    Delete { resource_type: String, id: Option<String> },
    Get,
}

pub(super) async fn process(service: &Service, access: &Access, bundle: Value, base_url: &str, prefer: Return) -> Result<Value, Error> {
    let Some(obj) = bundle.as_object() else {
        return Err(Error::new(ErrorKind::BadRequest, "the body must be a Bundle"));
    };
    if obj.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(Error::new(ErrorKind::BadRequest, "POST to the base URL takes a Bundle").at("resourceType"));
    }
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "batch" && kind != "transaction" {
        return Err(Error::new(
            ErrorKind::BadRequest,
            "only Bundles of type batch or transaction can be processed here",
        )
        .at("Bundle.type"));
    }
    let raw_entries = match obj.get("entry") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(Error::new(ErrorKind::BadRequest, "Bundle.entry must be an array").at("Bundle.entry")),
    };
    if raw_entries.len() > service.config.max_bundle_entries {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!("the bundle has more than {} entries", service.config.max_bundle_entries),
        ));
    }
    let base = base_url.trim_end_matches('/');
    if kind == "batch" {
        let mut responses = Vec::with_capacity(raw_entries.len());
        for (index, raw) in raw_entries.into_iter().enumerate() {
            let response = match parse_entry(index, raw, base) {
                Ok(entry) => match run_single(service, access, &entry, base, prefer).await {
                    Ok(v) => v,
                    Err(e) => error_entry(&e),
                },
                Err(e) => error_entry(&e),
            };
            responses.push(response);
        }
        return Ok(json!({"resourceType": "Bundle", "type": "batch-response", "entry": responses}));
    }
    let mut entries = Vec::with_capacity(raw_entries.len());
    for (index, raw) in raw_entries.into_iter().enumerate() {
        entries.push(parse_entry(index, raw, base)?);
    }
    let mut last_conflict = None;
    for _ in 0..RETRIES {
        match transaction(service, access, &entries, base, prefer).await {
            Err(e) if e.kind == ErrorKind::Conflict && is_race(&e) => last_conflict = Some(e),
            other => return other,
        }
    }
    Err(last_conflict.unwrap_or_else(|| Error::new(ErrorKind::Conflict, "the transaction kept conflicting")))
}

const RACE: &str = "concurrent write";

fn is_race(e: &Error) -> bool {
    e.issues.first().is_some_and(|i| i.diagnostics.starts_with(RACE))
}

fn parse_entry(index: usize, raw: Value, base: &str) -> Result<Entry, Error> {
    let at = |field: &str| format!("Bundle.entry[{index}]{field}");
    let Value::Object(mut obj) = raw else {
        return Err(Error::new(ErrorKind::BadRequest, "a Bundle entry must be an object").at(at("")));
    };
    let Some(Value::Object(request)) = obj.remove("request") else {
        return Err(Error::new(ErrorKind::BadRequest, "a batch or transaction entry needs a request").at(at(".request")));
    };
    let verb = match request.get("method").and_then(Value::as_str) {
        Some("GET") | Some("HEAD") => Verb::Get,
        Some("POST") => Verb::Post,
        Some("PUT") => Verb::Put,
        Some("PATCH") => Verb::Patch,
        Some("DELETE") => Verb::Delete,
        _ => {
            return Err(Error::new(ErrorKind::BadRequest, "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE")
                .at(at(".request.method")));
        }
    };
    let Some(url) = request.get("url").and_then(Value::as_str) else {
        return Err(Error::new(ErrorKind::BadRequest, "request.url is required").at(at(".request.url")));
    };
    let url = url.strip_prefix(base).unwrap_or(url).trim_start_matches('/');
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (url.to_string(), None),
    };
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        None => None,
        Some(tag) => Some(parse_etag(tag).ok_or_else(|| {
            Error::new(ErrorKind::BadRequest, "ifMatch must be a version ETag such as W/\"3\"").at(at(".request.ifMatch"))
        })?),
    };
    let resource = obj.remove("resource");
    if matches!(verb, Verb::Post | Verb::Put | Verb::Patch) && resource.is_none() {
        return Err(Error::new(ErrorKind::BadRequest, "this request needs a resource").at(at(".resource")));
    }
    Ok(Entry {
        index,
        full_url: obj.get("fullUrl").and_then(Value::as_str).map(str::to_string),
        verb,
        path,
        query,
        resource,
        if_none_exist: request.get("ifNoneExist").and_then(Value::as_str).map(str::to_string),
        if_match,
    })
}

/// Parses `W/"3"` or `"3"` or `3`.
pub fn parse_etag(tag: &str) -> Option<u64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"').parse().ok()
}

fn type_of(entry: &Entry) -> Result<String, Error> {
    let segments = entry.segments();
    let Some(rt) = segments.first() else {
        return Err(Error::new(ErrorKind::BadRequest, "request.url names no resource type").at(format!("{}.request.url", entry.location())));
    };
    prepare::check_type(rt).map_err(|e| e.at(format!("{}.request.url", entry.location())))?;
    Ok((*rt).to_string())
}

fn patch_document(entry: &Entry) -> Result<PatchDocument, Error> {
    let at = format!("{}.resource", entry.location());
    let Some(resource) = &entry.resource else {
        return Err(Error::new(ErrorKind::BadRequest, "PATCH needs a resource").at(at));
    };
    match resource.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => Ok(PatchDocument::FhirPath(resource.clone())),
        Some("Binary") => {
            let data = resource.get("data").and_then(Value::as_str).unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| Error::new(ErrorKind::BadRequest, "Binary.data is not base64").at(format!("{at}.data")))?;
            let ops: Value = serde_json::from_slice(&bytes)
                .map_err(|_| Error::new(ErrorKind::BadRequest, "Binary.data is not a JSON Patch document").at(format!("{at}.data")))?;
            Ok(PatchDocument::Json(ops))
        }
        _ => Err(Error::new(ErrorKind::BadRequest, "a PATCH entry carries a Parameters (FHIRPath Patch) or a Binary (JSON Patch)").at(at)),
    }
}

/// A batch entry, or a GET inside a transaction: one ordinary interaction.
async fn run_single(service: &Service, access: &Access, entry: &Entry, base: &str, prefer: Return) -> Result<Value, Error> {
    let rt = type_of(entry)?;
    let segments = entry.segments();
    let body = || entry.resource.clone().unwrap_or(Value::Null);
    match (entry.verb, segments.as_slice(), &entry.query) {
        (Verb::Get, [_, id], _) => Ok(resource_entry(&service.read(access, &rt, id).await?, "200 OK", base, Return::Representation)),
        (Verb::Get, [_, id, "_history", vid], _) => Ok(resource_entry(&service.vread(access, &rt, id, vid).await?, "200 OK", base, Return::Representation)),
        (Verb::Get, [_], query) => {
            let params: Vec<(String, String)> = query
                .as_deref()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let result = service.search(access, Some(&rt), &params, Handling::Strict).await?;
            let entries: Vec<Value> = result
                .page
                .items
                .iter()
                .filter_map(|r| {
                    let text = r.body.as_deref()?;
                    // A contained match is the contained resource (search.html#contained).
                    let resource: Value = match crate::store::split_contained_match_id(&r.id) {
                        Some((_, local)) => serde_json::from_str(&super::prepare::contained_resource(text, local)?.1).ok()?,
                        None => serde_json::from_str(text).ok()?,
                    };
                    Some(json!({"fullUrl": format!("{base}/{}/{}", r.resource_type, r.id), "resource": resource, "search": {"mode": "match"}}))
                })
                .collect();
            let mut searchset = json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
            if let (Some(total), Some(obj)) = (result.page.total, searchset.as_object_mut()) {
                obj.insert("total".into(), json!(total));
            }
            Ok(json!({"resource": searchset, "response": {"status": "200 OK"}}))
        }
        (Verb::Post, [_], _) => {
            prepare::validate(&rt, &body(), Some(&format!("{}.resource", entry.location())))?;
            match service.create(access, &rt, body(), entry.if_none_exist.as_deref()).await? {
                super::Created::Created(r) => Ok(resource_entry(&r, "201 Created", base, prefer)),
                super::Created::Existing(r) => Ok(resource_entry(&r, "200 OK", base, prefer)),
            }
        }
        (Verb::Put, [_, id], _) => {
            let updated = service.update(access, &rt, id, body(), entry.if_match).await?;
            Ok(resource_entry(&updated.resource, if updated.created { "201 Created" } else { "200 OK" }, base, prefer))
        }
        (Verb::Put, [_], Some(criteria)) => {
            let updated = service.conditional_update(access, &rt, criteria, body(), entry.if_match).await?;
            Ok(resource_entry(&updated.resource, if updated.created { "201 Created" } else { "200 OK" }, base, prefer))
        }
        (Verb::Patch, [_, id], _) => {
            let r = service.patch(access, &rt, id, patch_document(entry)?, entry.if_match).await?;
            Ok(resource_entry(&r, "200 OK", base, prefer))
        }
        (Verb::Patch, [_], Some(criteria)) => {
            let r = service.conditional_patch(access, &rt, criteria, patch_document(entry)?, entry.if_match).await?;
            Ok(resource_entry(&r, "200 OK", base, prefer))
        }
        (Verb::Delete, [_, id], _) => {
            service.delete(access, &rt, id).await?;
            Ok(json!({"response": {"status": "204 No Content"}}))
        }
        (Verb::Delete, [_], Some(criteria)) => {
            service.conditional_delete(access, &rt, criteria).await?;
            Ok(json!({"response": {"status": "204 No Content"}}))
        }
        _ => Err(Error::new(ErrorKind::BadRequest, "request.url does not fit request.method")
            .at(format!("{}.request.url", entry.location()))),
    }
}

fn resource_entry(r: &StoredResource, status: &str, base: &str, prefer: Return) -> Value {
    let mut entry = Map::new();
    entry.insert("fullUrl".into(), json!(format!("{base}/{}/{}", r.resource_type, r.id)));
    if prefer == Return::Representation
        && let Some(resource) = r.body.as_deref().and_then(|t| serde_json::from_str::<Value>(t).ok()) {
            entry.insert("resource".into(), resource);
        }
    entry.insert(
        "response".into(),
        json!({
            "status": status,
            "location": format!("{}/{}/_history/{}", r.resource_type, r.id, r.version_id),
            "etag": format!("W/\"{}\"", r.version_id),
            "lastModified": r.last_updated.to_fhir(),
        }),
    );
    if prefer == Return::OperationOutcome
        && let Some(response) = entry.get_mut("response").and_then(Value::as_object_mut) {
            response.insert("outcome".into(), fhir::outcome::operation_outcome(&[]));
        }
    Value::Object(entry)
}

fn error_entry(e: &Error) -> Value {
    let status = e.kind.http_status();
    json!({"response": {"status": status.to_string(), "outcome": fhir::outcome::operation_outcome(&e.issues)}})
}

/// One attempt at a whole transaction.
async fn transaction(service: &Service, access: &Access, entries: &[Entry], base: &str, prefer: Return) -> Result<Value, Error> {
    // Resolution, in the order of the spec's processing rules.
    let mut plans: Vec<Option<Plan>> = vec![None; entries.len()];
    let mut references: HashMap<String, String> = HashMap::new();
    let mut targets: HashSet<(String, String)> = HashSet::new();
    let mut claim = |rt: &str, id: &str, entry: &Entry| -> Result<(), Error> {
        if targets.insert((rt.to_string(), id.to_string())) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::BadRequest, "a resource may appear only once in a transaction")
                .at(entry.location()))
        }
    };
    for order in [Verb::Delete, Verb::Post, Verb::Put, Verb::Patch, Verb::Get] {
        for entry in entries.iter().filter(|e| e.verb == order) {
            let segments = entry.segments();
            let plan = match entry.verb {
                Verb::Get => Plan::Get,
                Verb::Delete => {
                    let rt = type_of(entry)?;
                    let id = match (segments.as_slice(), &entry.query) {
                        ([_, id], _) => {
                            prepare::check_id(id).map_err(|e| e.at(format!("{}.request.url", entry.location())))?;
                            Some((*id).to_string())
                        }
                        ([_], Some(criteria)) => resolve_conditional(service, &rt, criteria, entry).await?,
                        _ => return Err(bad_url(entry)),
                    };
                    if let Some(id) = &id {
                        claim(&rt, id, entry)?;
                    }
                    Plan::Delete { resource_type: rt, id }
                }
                Verb::Post => {
                    let rt = type_of(entry)?;
                    if segments.len() != 1 {
                        return Err(bad_url(entry));
                    }
                    let plan = match &entry.if_none_exist {
                        None => Plan::Create { resource_type: rt.clone(), id: service.new_id(), checks: Vec::new() },
                        Some(criteria) => {
                            let query = service.criteria_query(&rt, criteria)
                                .map_err(|e| e.at(format!("{}.request.ifNoneExist", entry.location())))?;
                            let ids = service.matching_ids(&query).await?;
                            match ids.as_slice() {
                                [] => Plan::Create {
                                    resource_type: rt.clone(),
                                    id: service.new_id(),
                                    checks: vec![Check::Matches { query, ids: Vec::new() }],
                                },
                                [id] => Plan::Existing { resource: service.read(access, &rt, id).await? },
                                _ => return Err(multiple_matches("conditional create").at(entry.location())),
                            }
                        }
                    };
                    let id = match &plan {
                        Plan::Create { id, .. } => id.clone(),
                        Plan::Existing { resource } => resource.id.clone(),
                        _ => String::new(),
                    };
                    claim(&rt, &id, entry)?;
                    if let Some(full_url) = &entry.full_url {
                        references.insert(full_url.clone(), format!("{rt}/{id}"));
                    }
                    plan
                }
                Verb::Put | Verb::Patch => {
                    let rt = type_of(entry)?;
                    let (id, checks) = match (segments.as_slice(), &entry.query) {
                        ([_, id], _) => {
                            prepare::check_id(id).map_err(|e| e.at(format!("{}.request.url", entry.location())))?;
                            ((*id).to_string(), Vec::new())
                        }
                        ([_], Some(criteria)) => {
                            let query = service.criteria_query(&rt, criteria)
                                .map_err(|e| e.at(format!("{}.request.url", entry.location())))?;
                            let ids = service.matching_ids(&query).await?;
                            let id = match ids.as_slice() {
                                [] if entry.verb == Verb::Patch => {
                                    return Err(Error::new(ErrorKind::NotFound, "conditional patch: no match").at(entry.location()));
                                }
                                [] => entry
                                    .resource
                                    .as_ref()
                                    .and_then(|r| r.get("id"))
                                    .and_then(Value::as_str)
                                    .map_or_else(|| service.new_id(), str::to_string),
                                [id] => id.clone(),
                                _ => return Err(multiple_matches("conditional update").at(entry.location())),
                            };
                            (id, vec![Check::Matches { query, ids }])
                        }
                        _ => return Err(bad_url(entry)),
                    };
                    claim(&rt, &id, entry)?;
                    if let Some(full_url) = &entry.full_url {
                        references.insert(full_url.clone(), format!("{rt}/{id}"));
                    }
                    if entry.verb == Verb::Put {
                        Plan::Update { resource_type: rt, id, checks }
                    } else {
                        Plan::Patch { resource_type: rt, id }
                    }
                }
            };
            if let Some(slot) = plans.get_mut(entry.index) {
                *slot = Some(plan);
            }
        }
    }

    // Rewrite references, validate, and build the writes.
    let now = service.now();
    let registry = service.registry();
    let registry = &*registry;
    let mut commit = Commit::default();
    let mut results: Vec<Option<(StoredResource, &'static str)>> = vec![None; entries.len()];
    for order in [Verb::Delete, Verb::Post, Verb::Put, Verb::Patch] {
        for entry in entries.iter().filter(|e| e.verb == order) {
            let Some(Some(plan)) = plans.get(entry.index) else { continue };
            let location = format!("{}.resource", entry.location());
            match plan {
                Plan::Delete { resource_type, id: Some(id) } => {
                    let current = service.store.read(resource_type, id).await?;
                    if let Some(current) = current.filter(|c| !c.is_deleted()) {
                        commit.checks.push(Check::Version {
                            resource_type: resource_type.clone(),
                            id: id.clone(),
                            expected: Some(current.version_id),
                        });
                        commit.writes.push(prepare::tombstone(resource_type, id, current.version_id + 1, now));
                    }
                }
                Plan::Delete { id: None, .. } | Plan::Get | Plan::Existing { .. } => {}
                Plan::Create { resource_type, id, checks } => {
                    let mut body = entry.resource.clone().unwrap_or(Value::Null);
                    resolve_references(service, &mut body, &references, &location).await?;
                    prepare::validate(resource_type, &body, Some(&location))?;
                    commit.checks.extend(checks.iter().cloned());
                    let write = prepare::stamp(registry, resource_type, id, 1, now, Method::Post, &body);
                    if let Some(slot) = results.get_mut(entry.index) {
                        *slot = Some((stored_of(&write), "201 Created"));
                    }
                    commit.writes.push(write);
                }
                Plan::Update { resource_type, id, checks } => {
                    let mut body = entry.resource.clone().unwrap_or(Value::Null);
                    match body.get("id").and_then(Value::as_str) {
                        Some(body_id) if body_id != id => {
                            return Err(Error::new(ErrorKind::BadRequest, "the resource id does not match request.url")
                                .at(format!("{location}.id")));
                        }
                        Some(_) => {}
                        None if entry.query.is_some() => {
                            if let Some(obj) = body.as_object_mut() {
                                obj.insert("id".into(), Value::String(id.clone()));
                            }
                        }
                        None => {
                            return Err(Error::new(ErrorKind::BadRequest, "an update must carry the resource id")
                                .at(format!("{location}.id")));
                        }
                    }
                    resolve_references(service, &mut body, &references, &location).await?;
                    prepare::validate(resource_type, &body, Some(&location))?;
                    let current = service.store.read(resource_type, id).await?;
                    let current_version = current.as_ref().map(|c| c.version_id);
                    check_if_match(entry, current.as_ref())?;
                    commit.checks.extend(checks.iter().cloned());
                    commit.checks.push(Check::Version {
                        resource_type: resource_type.clone(),
                        id: id.clone(),
                        expected: current_version,
                    });
                    let created = current.as_ref().is_none_or(StoredResource::is_deleted);
                    let write = prepare::stamp(registry, resource_type, id, current_version.unwrap_or(0) + 1, now, Method::Put, &body);
                    if let Some(slot) = results.get_mut(entry.index) {
                        *slot = Some((stored_of(&write), if created { "201 Created" } else { "200 OK" }));
                    }
                    commit.writes.push(write);
                }
                Plan::Patch { resource_type, id } => {
                    let current = match service.store.read(resource_type, id).await? {
                        None => return Err(not_found(resource_type).at(entry.location())),
                        Some(c) if c.is_deleted() => return Err(gone(resource_type, c.version_id).at(entry.location())),
                        Some(c) => c,
                    };
                    check_if_match(entry, Some(&current))?;
                    let mut patched = apply_patch(&current, &patch_document(entry)?)?;
                    resolve_references(service, &mut patched, &references, &location).await?;
                    prepare::validate(resource_type, &patched, Some(&location))?;
                    commit.checks.push(Check::Version {
                        resource_type: resource_type.clone(),
                        id: id.clone(),
                        expected: Some(current.version_id),
                    });
                    let write = prepare::stamp(registry, resource_type, id, current.version_id + 1, now, Method::Patch, &patched);
                    if let Some(slot) = results.get_mut(entry.index) {
                        *slot = Some((stored_of(&write), "200 OK"));
                    }
                    commit.writes.push(write);
                }
            }
        }
    }
    // Reads are answered as of the end of the transaction, and before the
    // commit, so that a failing read fails the whole transaction with nothing
    // written: a read of a resource this transaction writes sees that write;
    // other reads and searches see the store as it is.
    let written: HashMap<(String, String), &StoredResource> =
        results.iter().flatten().map(|(r, _)| ((r.resource_type.clone(), r.id.clone()), r)).collect();
    let deleted: HashMap<(String, String), u64> = commit
        .writes
        .iter()
        .filter(|w| w.body.is_none())
        .map(|w| ((w.resource_type.clone(), w.id.clone()), w.version_id))
        .collect();
    let mut reads: HashMap<usize, Value> = HashMap::new();
    for entry in entries.iter().filter(|e| e.verb == Verb::Get) {
        let segments = entry.segments();
        let key = match segments.as_slice() {
            [rt, id] => Some(((*rt).to_string(), (*id).to_string())),
            _ => None,
        };
        let value = match key {
            Some(key) if deleted.contains_key(&key) => {
                let version = deleted.get(&key).copied().unwrap_or_default();
                return Err(gone(&key.0, version).at(entry.location()));
            }
            Some(key) if written.contains_key(&key) => match written.get(&key) {
                Some(r) => resource_entry(r, "200 OK", base, Return::Representation),
                None => return Err(not_found(&key.0).at(entry.location())),
            },
            _ => run_single(service, access, entry, base, prefer).await.map_err(|e| e.at(entry.location()))?,
        };
        reads.insert(entry.index, value);
    }

    // Every write is checked against the caller's access as if sent alone,
    // and audited in the transaction's own commit.
    for write in &commit.writes {
        service.check_transaction_write(access, write).await?;
    }
    let records: Vec<_> = commit.writes.iter().map(|w| service.write_record(access, w)).collect();
    commit.audit.extend(records);
    match service.store.commit(commit).await {
        Ok(()) => {}
        Err(StoreError::Conflict(msg)) => return Err(Error::new(ErrorKind::Conflict, format!("{RACE}: {msg}"))),
        Err(e) => return Err(e.into()),
    }

    // The response keeps the request order.
    let mut response = Vec::with_capacity(entries.len());
    for entry in entries {
        let value = match plans.get(entry.index) {
            Some(Some(Plan::Get)) => reads.remove(&entry.index).unwrap_or_else(|| json!({"response": {"status": "200 OK"}})),
            Some(Some(Plan::Existing { resource })) => resource_entry(resource, "200 OK", base, prefer),
            Some(Some(Plan::Delete { .. })) => json!({"response": {"status": "204 No Content"}}),
            _ => match results.get(entry.index) {
                Some(Some((stored, status))) => resource_entry(stored, status, base, prefer),
                _ => json!({"response": {"status": "200 OK"}}),
            },
        };
        response.push(value);
    }
    Ok(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": response}))
}

fn bad_url(entry: &Entry) -> Error {
    Error::new(ErrorKind::BadRequest, "request.url does not fit request.method").at(format!("{}.request.url", entry.location()))
}

fn check_if_match(entry: &Entry, current: Option<&StoredResource>) -> Result<(), Error> {
    let Some(wanted) = entry.if_match else { return Ok(()) };
    match current {
        Some(c) if !c.is_deleted() && c.version_id == wanted => Ok(()),
        _ => Err(Error::new(ErrorKind::PreconditionFailed, "ifMatch does not name the current version")
            .at(format!("{}.request.ifMatch", entry.location()))),
    }
}

async fn resolve_conditional(service: &Service, rt: &str, criteria: &str, entry: &Entry) -> Result<Option<String>, Error> {
    let query = service.criteria_query(rt, criteria).map_err(|e| e.at(format!("{}.request.url", entry.location())))?;
    let ids = service.matching_ids(&query).await?;
    match ids.as_slice() {
        [] => Ok(None),
        [id] => Ok(Some(id.clone())),
        _ => Err(multiple_matches("conditional delete").at(entry.location())),
    }
}

/// Replaces references to other entries' `fullUrl`s with `Type/id`, and
/// resolves conditional references (`Patient?identifier=...`), which must match
/// exactly one resource. A `urn:uuid:` that names no entry is an error: the
/// transaction would otherwise store a dangling reference.
async fn resolve_references(
    service: &Service,
    body: &mut Value,
    references: &HashMap<String, String>,
    location: &str,
) -> Result<(), Error> {
    let mut conditional: Vec<String> = Vec::new();
    let mut dangling: Option<String> = None;
    rewrite(body, location, references, &mut conditional, &mut dangling);
    if let Some(path) = dangling {
        return Err(Error::new(ErrorKind::BadRequest, "a urn:uuid reference names no entry of the transaction").at(path));
    }
    if conditional.is_empty() {
        return Ok(());
    }
    let mut resolved: HashMap<String, String> = HashMap::new();
    for reference in conditional {
        let Some((rt, criteria)) = reference.split_once('?') else { continue };
        prepare::check_type(rt).map_err(|e| e.at(location.to_string()))?;
        let query = service.criteria_query(rt, criteria).map_err(|e| e.at(location.to_string()))?;
        let ids = service.matching_ids(&query).await?;
        match ids.as_slice() {
            [id] => {
                resolved.insert(reference.clone(), format!("{rt}/{id}"));
            }
            [] => {
                return Err(Error::new(ErrorKind::PreconditionFailed, "a conditional reference matches no resource")
                    .at(location.to_string()));
            }
            _ => {
                return Err(Error::new(ErrorKind::PreconditionFailed, "a conditional reference matches several resources")
                    .at(location.to_string()));
            }
        }
    }
    let mut none = Vec::new();
    let mut dangling = None;
    rewrite(body, location, &resolved, &mut none, &mut dangling);
    Ok(())
}

fn rewrite(
    value: &mut Value,
    path: &str,
    references: &HashMap<String, String>,
    conditional: &mut Vec<String>,
    dangling: &mut Option<String>,
) {
    match value {
        Value::Object(obj) => {
            for (key, child) in obj.iter_mut() {
                if key == "reference"
                    && let Value::String(text) = child {
                        if let Some(target) = references.get(text.as_str()) {
                            *text = target.clone();
                        } else if text.starts_with("urn:uuid:") {
                            if dangling.is_none() {
                                *dangling = Some(format!("{path}.reference"));
                            }
                        } else if is_conditional_reference(text) && !conditional.contains(text) {
                            conditional.push(text.clone());
                        }
                        continue;
                    }
                let child_path = format!("{path}.{key}");
                rewrite(child, &child_path, references, conditional, dangling);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let child_path = format!("{path}[{i}]");
                rewrite(item, &child_path, references, conditional, dangling);
            }
        }
        _ => {}
    }
}

fn is_conditional_reference(text: &str) -> bool {
    match text.split_once('?') {
        Some((rt, _)) => !rt.contains('/') && !rt.contains(':') && rt.chars().next().is_some_and(char::is_uppercase),
        None => false,
    }
}
