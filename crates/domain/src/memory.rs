//! The in-memory store: the reference implementation of [`Store`].
//!
//! It defines by example what every backend must answer: the conformance
//! suite runs against it and against each SQL backend and expects the same
//! results. It favours obviousness over speed.

use crate::audit::{self, AuditChain, AuditEntry, AuditQuery};
use crate::store::{
    Check, Commit, ContainedIndex, HistoryQuery, HistoryScope, Page, ResourceKey, Store, StoreError, StoredResource,
    SysRecord, contained_match_id,
};
use async_trait::async_trait;
use fhir::search::query::{
    Condition, ContainedMode, ContainedType, Match, Prefix, SearchQuery, SortKey, StringMode, TokenSystem, TotalMode,
    UriMode,
};
use fhir::search::text::TextIndex;
use fhir::search::{IndexEntry, IndexValue};
use parking_lot::RwLock;
use std::cmp::Ordering;
use std::collections::BTreeMap;

#[derive(Default)]
struct Inner {
    /// Every version of every resource, oldest first, keyed by (type, id).
    versions: BTreeMap<(String, String), Vec<StoredResource>>,
    /// Index entries of the current version.
    index: BTreeMap<(String, String), Vec<IndexEntry>>,
    /// Words of the current version (`_text`, `_content`).
    text: BTreeMap<(String, String), TextIndex>,
    /// The resources the current version contains, by container; absent
    /// when it contains none.
    contained: BTreeMap<(String, String), Vec<ContainedIndex>>,
    /// (sequence, type, id, version): the global write order, for system history.
    log: Vec<(String, String, u64)>,
    /// System records by (kind, key).
    sys: BTreeMap<(String, String), SysRecord>,
    /// The audit trail, entry `seq` at index `seq - 1`.
    audit: Vec<AuditEntry>,
}

/// A Store held entirely in memory; everything is lost when it is dropped.
pub struct MemoryStore {
    inner: RwLock<Inner>,
    chain: AuditChain,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store whose audit chain has a random key.
    pub fn new() -> MemoryStore {
        MemoryStore::with_audit_chain(AuditChain::random())
    }

    pub fn with_audit_chain(chain: AuditChain) -> MemoryStore {
        MemoryStore { inner: RwLock::new(Inner::default()), chain }
    }

    /// Test access to the stored trail, to tamper with it as an attacker
    /// with write access to the database would.
    pub fn tamper_audit(&self, f: impl FnOnce(&mut Vec<AuditEntry>)) {
        f(&mut self.inner.write().audit);
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn read(&self, resource_type: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        let inner = self.inner.read();
        Ok(inner
            .versions
            .get(&(resource_type.to_string(), id.to_string()))
            .and_then(|v| v.last().cloned()))
    }

    async fn vread(
        &self,
        resource_type: &str,
        id: &str,
        version_id: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        let inner = self.inner.read();
        Ok(inner
            .versions
            .get(&(resource_type.to_string(), id.to_string()))
            .and_then(|v| v.iter().find(|r| r.version_id == version_id).cloned()))
    }

    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        for check in &commit.checks {
            match check {
                Check::Version { resource_type, id, expected } => {
                    let current = inner
                        .versions
                        .get(&(resource_type.clone(), id.clone()))
                        .and_then(|v| v.last())
                        .map(|r| r.version_id);
                    if current != *expected {
                        return Err(StoreError::Conflict(format!(
                            "{resource_type}/{id} is at version {current:?}, expected {expected:?}"
                        )));
                    }
                }
                Check::Matches { query, ids } => {
                    let mut found: Vec<String> =
                        matching(&inner, query).into_iter().map(|r| r.id.clone()).collect();
                    let mut wanted = ids.clone();
                    found.sort();
                    wanted.sort();
                    if found != wanted {
                        return Err(StoreError::Conflict(
                            "the resources matching a conditional operation changed".into(),
                        ));
                    }
                }
            }
        }
        // Validate the whole commit before applying any of it, so a bad write
        // leaves nothing behind.
        let mut next_versions: BTreeMap<(String, String), u64> = BTreeMap::new();
        for write in &commit.writes {
            let key = (write.resource_type.clone(), write.id.clone());
            let current = match next_versions.get(&key) {
                Some(v) => *v,
                None => inner.versions.get(&key).and_then(|v| v.last()).map_or(0, |r| r.version_id),
            };
            if write.version_id != current + 1 {
                return Err(StoreError::Conflict(format!(
                    "{}/{} write of version {} but current is {current}",
                    write.resource_type, write.id, write.version_id
                )));
            }
            next_versions.insert(key, write.version_id);
        }
        let mut next_sys: BTreeMap<(String, String), Option<u64>> = BTreeMap::new();
        for write in &commit.sys {
            let key = (write.kind.clone(), write.key.clone());
            let current = match next_sys.get(&key) {
                Some(v) => *v,
                None => inner.sys.get(&key).map(|r| r.version),
            };
            if current != write.expected {
                return Err(StoreError::Conflict(format!(
                    "system record {}/{} is at version {current:?}, expected {:?}",
                    write.kind, write.key, write.expected
                )));
            }
            next_sys.insert(key, write.json.as_ref().map(|_| write.expected.map_or(1, |v| v + 1)));
        }
        type Indexed = (Vec<IndexEntry>, TextIndex, Vec<ContainedIndex>);
        let reindex: Vec<((String, String), Indexed)> = commit
            .reindex
            .into_iter()
            .map(|r| ((r.resource_type, r.id), r.version_id, (r.index, r.text, r.contained)))
            .filter(|(key, version, _)| {
                let current = next_versions.get(key).copied().or_else(|| {
                    inner.versions.get(key).and_then(|v| v.last()).filter(|r| !r.is_deleted()).map(|r| r.version_id)
                });
                current == Some(*version) && !next_versions.contains_key(key)
            })
            .map(|(key, _, index)| (key, index))
            .collect();
        for (key, (index, text, contained)) in reindex {
            inner.index.insert(key.clone(), index);
            inner.text.insert(key.clone(), text);
            set_contained(&mut inner, key, contained);
        }
        for write in commit.writes {
            let key = (write.resource_type.clone(), write.id.clone());
            inner.log.push((write.resource_type.clone(), write.id.clone(), write.version_id));
            if write.body.is_some() {
                inner.index.insert(key.clone(), write.index);
                inner.text.insert(key.clone(), write.text);
                set_contained(&mut inner, key.clone(), write.contained);
            } else {
                inner.index.remove(&key);
                inner.text.remove(&key);
                inner.contained.remove(&key);
            }
            inner.versions.entry(key).or_default().push(StoredResource {
                resource_type: write.resource_type,
                id: write.id,
                version_id: write.version_id,
                last_updated: write.last_updated,
                method: write.method,
                body: write.body,
            });
        }
        for write in commit.sys {
            let key = (write.kind, write.key);
            match write.json {
                Some(json) => {
                    let version = write.expected.map_or(1, |v| v + 1);
                    inner.sys.insert(key.clone(), SysRecord { key: key.1, version, json });
                }
                None => {
                    inner.sys.remove(&key);
                }
            }
        }
        for record in commit.audit {
            let previous = inner.audit.last().map_or(audit::GENESIS.to_string(), |e| e.hash.clone());
            let seq = inner.audit.len() as u64 + 1;
            let record = record.to_canonical_json();
            let hash = self.chain.link(&previous, seq, &record);
            inner.audit.push(AuditEntry { seq, record, hash });
        }
        Ok(())
    }

    async fn history(
        &self,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> Result<Page<StoredResource>, StoreError> {
        let inner = self.inner.read();
        let mut all: Vec<StoredResource> = Vec::new();
        for (rt, id, version) in inner.log.iter().rev() {
            let in_scope = match scope {
                HistoryScope::System => true,
                HistoryScope::Type(t) => t == rt,
                HistoryScope::Instance { resource_type, id: wanted } => resource_type == rt && wanted == id,
            };
            if !in_scope {
                continue;
            }
            let Some(found) = inner
                .versions
                .get(&(rt.clone(), id.clone()))
                .and_then(|v| v.iter().find(|r| r.version_id == *version))
            else {
                continue;
            };
            if query.since.is_some_and(|s| found.last_updated < s) {
                continue;
            }
            if query.not_after.is_some_and(|s| found.last_updated > s) {
                continue;
            }
            all.push(found.clone());
        }
        let total = all.len() as u64;
        let items = all.into_iter().skip(query.offset).take(query.count).collect();
        Ok(Page { items, total: Some(total) })
    }

    async fn search(&self, query: &SearchQuery) -> Result<Page<StoredResource>, StoreError> {
        let inner = self.inner.read();
        if query.contained != ContainedMode::No {
            return Ok(contained_search(&inner, query));
        }
        let mut found = matching(&inner, query);
        sort(&inner, &mut found, &query.sort);
        let total = match query.total {
            TotalMode::None => None,
            TotalMode::Estimate | TotalMode::Accurate => Some(found.len() as u64),
        };
        let items = found.into_iter().skip(query.offset).take(query.count).cloned().collect();
        Ok(Page { items, total })
    }

    async fn search_keys(&self, query: &SearchQuery) -> Result<Vec<ResourceKey>, StoreError> {
        let page = self.search(&SearchQuery { total: fhir::search::query::TotalMode::None, ..query.clone() }).await?;
        Ok(page.items.into_iter().map(|r| (r.resource_type, r.id)).collect())
    }

    async fn scan(
        &self,
        resource_type: Option<&str>,
        after: Option<&ResourceKey>,
        limit: usize,
    ) -> Result<Vec<StoredResource>, StoreError> {
        use std::ops::Bound;
        let inner = self.inner.read();
        let start = match (after, resource_type) {
            (Some(key), _) => Bound::Excluded(key.clone()),
            (None, Some(t)) => Bound::Included((t.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        Ok(inner
            .versions
            .range((start, Bound::Unbounded))
            .skip_while(|((rt, _), _)| resource_type.is_some_and(|t| rt.as_str() < t))
            .take_while(|((rt, _), _)| resource_type.is_none_or(|t| t == rt))
            .filter_map(|(_, versions)| versions.last().filter(|r| !r.is_deleted()).cloned())
            .take(limit)
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn sys_get(&self, kind: &str, key: &str) -> Result<Option<SysRecord>, StoreError> {
        Ok(self.inner.read().sys.get(&(kind.to_string(), key.to_string())).cloned())
    }

    async fn sys_list(&self, kind: &str) -> Result<Vec<SysRecord>, StoreError> {
        let inner = self.inner.read();
        Ok(inner.sys.iter().filter(|((k, _), _)| k == kind).map(|(_, r)| r.clone()).collect())
    }

    async fn audit_scan(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let inner = self.inner.read();
        let mut entries: Vec<AuditEntry> = inner.audit.iter().filter(|e| e.seq > after).cloned().collect();
        entries.sort_by_key(|e| e.seq);
        entries.truncate(limit);
        Ok(entries)
    }

    async fn audit_search(&self, query: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let inner = self.inner.read();
        let mut found: Vec<(AuditEntry, audit::AuditRecord)> = inner
            .audit
            .iter()
            .filter_map(|e| e.parse().ok().map(|r| (e.clone(), r)))
            .filter(|(_, r)| query.matches(r))
            .collect();
        found.sort_by(|(ea, ra), (eb, rb)| audit::compare(&query.sort, (ea.seq, ra), (eb.seq, rb)));
        let total = found.len() as u64;
        let items = found.into_iter().skip(query.offset).take(query.count).map(|(e, _)| e).collect();
        Ok(Page { items, total: Some(total) })
    }

    async fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.inner.read().audit.last().map(|e| (e.seq, e.hash.clone())))
    }
}

/// Current, non-deleted resources matching every filter of `query`.
fn matching<'a>(inner: &'a Inner, query: &SearchQuery) -> Vec<&'a StoredResource> {
    let empty = Vec::new();
    inner
        .versions
        .iter()
        .filter(|((rt, _), _)| query.resource_type.as_ref().is_none_or(|t| t == rt))
        .filter_map(|(key, versions)| {
            let current = versions.last()?;
            if current.is_deleted() {
                return None;
            }
            let entries = inner.index.get(key).unwrap_or(&empty);
            let subject = Subject { resource: current, entries, contained: None };
            holds_all(inner, &subject, query).then_some(current)
        })
        .collect()
}

/// What conditions are evaluated on: a current resource, or one of the
/// resources it contains (`contained`; `resource` is then the container).
struct Subject<'a> {
    resource: &'a StoredResource,
    entries: &'a [IndexEntry],
    contained: Option<&'a ContainedIndex>,
}

/// Every filter of `query` holds for `subject`.
fn holds_all(inner: &Inner, subject: &Subject<'_>, query: &SearchQuery) -> bool {
    query.filters.iter().all(|f| f.any_of.iter().any(|c| condition_holds(inner, subject, c)))
}

/// Keeps a container's contained resources (none: no entry).
fn set_contained(inner: &mut Inner, key: (String, String), contained: Vec<ContainedIndex>) {
    if contained.is_empty() {
        inner.contained.remove(&key);
    } else {
        inner.contained.insert(key, contained);
    }
}

/// One match of a search of contained resources: a resource, or a resource
/// it contains.
struct Hit<'a> {
    resource: &'a StoredResource,
    entries: &'a [IndexEntry],
    contained: Option<&'a ContainedIndex>,
}

impl Hit<'_> {
    /// The id the match is answered under (`123#med1` for a contained one).
    fn id(&self) -> String {
        match self.contained {
            Some(c) => contained_match_id(&self.resource.id, &c.id),
            None => self.resource.id.clone(),
        }
    }
}

/// A search with `_contained=true|both` (see [`Store::search`]): every
/// contained resource of the type (and with `both` every current resource of
/// it) is tested alone; the matches are answered as the containers, once
/// each, or as the contained resources under their match ids.
fn contained_search(inner: &Inner, query: &SearchQuery) -> Page<StoredResource> {
    let empty = Vec::new();
    let wanted = |t: &str| query.resource_type.as_deref().is_none_or(|w| w == t);
    let mut hits: Vec<Hit<'_>> = Vec::new();
    for (key, versions) in &inner.versions {
        let Some(current) = versions.last().filter(|r| !r.is_deleted()) else { continue };
        if query.contained == ContainedMode::Both && wanted(&key.0) {
            let entries = inner.index.get(key).unwrap_or(&empty);
            if holds_all(inner, &Subject { resource: current, entries, contained: None }, query) {
                hits.push(Hit { resource: current, entries, contained: None });
            }
        }
        for c in inner.contained.get(key).into_iter().flatten().filter(|c| wanted(&c.resource_type)) {
            if holds_all(inner, &Subject { resource: current, entries: &c.index, contained: Some(c) }, query) {
                hits.push(Hit { resource: current, entries: &c.index, contained: Some(c) });
            }
        }
    }
    let items: Vec<StoredResource> = match query.contained_type {
        ContainedType::Contained => {
            let mut keyed: Vec<(String, Hit<'_>)> = hits.into_iter().map(|h| (h.id(), h)).collect();
            keyed.sort_by(|(ia, a), (ib, b)| {
                compare_by_keys(
                    &query.sort,
                    (ia, &a.resource.last_updated, a.entries),
                    (ib, &b.resource.last_updated, b.entries),
                )
                .then_with(|| b.resource
                    .last_updated
                    .cmp(&a.resource.last_updated)
                    .then_with(|| ia.cmp(ib))
                    .then_with(|| a.resource.resource_type.cmp(&b.resource.resource_type)))
            });
            keyed.into_iter().map(|(id, h)| StoredResource { id, ..h.resource.clone() }).collect()
        }
        ContainedType::Container => {
            let mut containers: Vec<&StoredResource> = Vec::new();
            for hit in hits {
                if !containers.iter().any(|r| std::ptr::eq(*r, hit.resource)) {
                    containers.push(hit.resource);
                }
            }
            // Only `_id` and `_lastUpdated` order containers of any type.
            containers.sort_by(|a, b| {
                for key in &query.sort {
                    let ord = match key.param.as_str() {
                        "_id" => a.id.cmp(&b.id),
                        "_lastUpdated" => a.last_updated.cmp(&b.last_updated),
                        _ => continue,
                    };
                    let ord = if key.descending { ord.reverse() } else { ord };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                b.last_updated
                    .cmp(&a.last_updated)
                    .then_with(|| a.id.cmp(&b.id))
                    .then_with(|| a.resource_type.cmp(&b.resource_type))
            });
            containers.into_iter().cloned().collect()
        }
    };
    let total = match query.total {
        TotalMode::None => None,
        TotalMode::Estimate | TotalMode::Accurate => Some(items.len() as u64),
    };
    Page { items: items.into_iter().skip(query.offset).take(query.count).collect(), total }
}

fn condition_holds(inner: &Inner, subject: &Subject<'_>, condition: &Condition) -> bool {
    let resource = subject.resource;
    let values = || subject.entries.iter().filter(|e| e.param == condition.param).map(|e| &e.value);
    match &condition.matcher {
        Match::Id(id) => match subject.contained {
            Some(c) => &c.id == id,
            None => &resource.id == id,
        },
        Match::Chain { target_types, inner: conditions } => values().any(|v| match v {
            IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } if target_types.contains(t) => {
                let key = (t.clone(), id.clone());
                current_of(inner, &key).is_some_and(|(target, target_entries)| {
                    let target = Subject { resource: target, entries: target_entries, contained: None };
                    conditions.iter().any(|c| condition_holds(inner, &target, c))
                })
            }
            // A chain goes on inside a resource the container itself
            // contains (search.html#contained), through its `#id`.
            IndexValue::Reference { target_id: None, url, .. } if subject.contained.is_none() => {
                let Some(local) = url.strip_prefix('#') else { return false };
                let key = (resource.resource_type.clone(), resource.id.clone());
                inner.contained.get(&key).into_iter().flatten().any(|c| {
                    c.id == local
                        && target_types.contains(&c.resource_type)
                        && conditions.iter().any(|condition| {
                            let target = Subject { resource, entries: &c.index, contained: Some(c) };
                            condition_holds(inner, &target, condition)
                        })
                })
            }
            _ => false,
        }),
        // Nothing refers to a contained resource by type and id.
        Match::Has { .. } if subject.contained.is_some() => false,
        Match::Has { source_type, inner: conditions } => inner
            .versions
            .range((source_type.clone(), String::new())..)
            .take_while(|((rt, _), _)| rt == source_type)
            .any(|(key, _)| {
                current_of(inner, key).is_some_and(|(source, source_entries)| {
                    let refers = source_entries.iter().any(|e| {
                        e.param == condition.param
                            && matches!(&e.value, IndexValue::Reference { target_type: Some(t), target_id: Some(i), .. }
                                if *t == resource.resource_type && *i == resource.id)
                    });
                    let source = Subject { resource: source, entries: source_entries, contained: None };
                    refers && conditions.iter().any(|c| condition_holds(inner, &source, c))
                })
            }),
        Match::Text { field, phrases } => match subject.contained {
            Some(c) => fhir::search::text::matches(c.text.field(*field), phrases),
            None => inner
                .text
                .get(&(resource.resource_type.clone(), resource.id.clone()))
                .is_some_and(|text| fhir::search::text::matches(text.field(*field), phrases)),
        },
        Match::LastUpdated { prefix, low, high } => {
            let t = resource.last_updated.micros();
            range_matches(*prefix, t as f64, t as f64, *low as f64, *high as f64)
        }
        Match::Missing(missing) => values().next().is_none() == *missing,
        Match::Token { negate, .. } | Match::TokenSet { negate, .. } => {
            values().any(|v| value_matches(&condition.matcher, v)) != *negate
        }
        // The Service resolves these into TokenSet; unresolved, they match nothing.
        Match::InValueSet { .. } | Match::Subsumption { .. } => false,
        Match::TokenText(_)
        | Match::String { .. }
        | Match::Reference { .. }
        | Match::ReferenceUrl(_)
        | Match::Uri { .. }
        | Match::Date { .. }
        | Match::Number { .. }
        | Match::Quantity { .. }
        | Match::Composite(_) => values().any(|v| value_matches(&condition.matcher, v)),
    }
}

/// Whether one indexed value meets a value condition (ignoring `negate`,
/// which is about all of a resource's values). A composite value meets a
/// composite condition when each of its components meets the component
/// condition in the same position.
fn value_matches(matcher: &Match, value: &IndexValue) -> bool {
    match (matcher, value) {
        (Match::Token { system, code, .. }, IndexValue::Token { system: s, code: c, .. }) => {
            let system_ok = match system {
                TokenSystem::Any => true,
                TokenSystem::NoSystem => s.is_none(),
                TokenSystem::Is(want) => s.as_deref() == Some(want.as_str()),
            };
            let code_ok = code.as_ref().is_none_or(|want| c.as_deref() == Some(want.as_str()));
            system_ok && code_ok
        }
        (Match::TokenSet { tokens, .. }, IndexValue::Token { system: Some(s), code: c, .. }) => tokens
            .iter()
            .any(|(system, code)| system == s && code.as_ref().is_none_or(|want| c.as_deref() == Some(want.as_str()))),
        (Match::TokenText(text), IndexValue::Token { text: Some(t), .. }) => {
            fhir::search::normalize_string(t).starts_with(text.as_str())
        }
        (Match::String { value, mode }, IndexValue::String { normalized, exact }) => match mode {
            StringMode::Prefix => normalized.starts_with(value.as_str()),
            StringMode::Contains => normalized.contains(value.as_str()),
            StringMode::Exact => exact == value,
        },
        (Match::Reference { target_type, id }, IndexValue::Reference { target_type: t, target_id: Some(i), .. }) => {
            i == id && target_type.as_ref().is_none_or(|want| t.as_deref() == Some(want.as_str()))
        }
        (Match::ReferenceUrl(url), IndexValue::Reference { url: u, .. }) => u == url,
        (Match::Uri { value, mode }, IndexValue::Uri { value: u }) => match mode {
            UriMode::Exact => u == value,
            UriMode::Below => u.starts_with(value.as_str()),
            UriMode::Above => value.starts_with(u.as_str()),
        },
        (Match::Date { prefix, low, high }, IndexValue::Date { low: rl, high: rh }) => {
            range_matches(*prefix, *rl as f64, *rh as f64, *low as f64, *high as f64)
        }
        (Match::Number { prefix, low, high }, IndexValue::Number { low: rl, high: rh }) => {
            range_matches(*prefix, *rl, *rh, *low, *high)
        }
        (Match::Quantity { prefix, low, high, system, code }, IndexValue::Quantity { low: rl, high: rh, system: s, code: c }) => {
            system.as_ref().is_none_or(|want| s.as_deref() == Some(want.as_str()))
                && code.as_ref().is_none_or(|want| c.as_deref() == Some(want.as_str()))
                && range_matches(*prefix, *rl, *rh, *low, *high)
        }
        (Match::Composite(components), IndexValue::Composite(parts)) => {
            components.len() == parts.len() && components.iter().zip(parts).all(|(m, v)| value_matches(m, v))
        }
        _ => false,
    }
}

/// The current version of a resource and its index entries, unless it is
/// deleted or has never existed.
fn current_of<'a>(inner: &'a Inner, key: &(String, String)) -> Option<(&'a StoredResource, &'a [IndexEntry])> {
    let current = inner.versions.get(key)?.last()?;
    if current.is_deleted() {
        return None;
    }
    Some((current, inner.index.get(key).map_or(&[][..], Vec::as_slice)))
}

/// Range comparison per <http://hl7.org/fhir/R4/search.html#prefix>, with the
/// resource's value range `[rl, rh]` and the parameter's range `[pl, ph]`.
/// `ap` is treated as overlap: the parser has already widened the parameter
/// range by the approximation margin.
pub fn range_matches(prefix: Prefix, rl: f64, rh: f64, pl: f64, ph: f64) -> bool {
    let contained = rl >= pl && rh <= ph;
    match prefix {
        Prefix::Eq => contained,
        Prefix::Ne => !contained,
        Prefix::Gt => rh > ph,
        Prefix::Lt => rl < pl,
        Prefix::Ge => rh > ph || contained,
        Prefix::Le => rl < pl || contained,
        Prefix::Sa => rl > ph,
        Prefix::Eb => rh < pl,
        Prefix::Ap => rl <= ph && rh >= pl,
    }
}

fn sort(inner: &Inner, found: &mut [&StoredResource], keys: &[SortKey]) {
    let empty = Vec::new();
    found.sort_by(|a, b| {
        let ea = inner.index.get(&(a.resource_type.clone(), a.id.clone())).unwrap_or(&empty);
        let eb = inner.index.get(&(b.resource_type.clone(), b.id.clone())).unwrap_or(&empty);
        compare_by_keys(keys, (&a.id, &a.last_updated, ea), (&b.id, &b.last_updated, eb))
            // Default order, and the tie-breaker: newest first, then id.
            .then_with(|| b.last_updated.cmp(&a.last_updated).then_with(|| a.id.cmp(&b.id)))
    });
}

/// Two matches, each as (id, last update, index entries), in the order of
/// the `_sort` keys; `Equal` when every key ties.
fn compare_by_keys(
    keys: &[SortKey],
    (id_a, updated_a, entries_a): (&str, &fhir::instant::Instant, &[IndexEntry]),
    (id_b, updated_b, entries_b): (&str, &fhir::instant::Instant, &[IndexEntry]),
) -> Ordering {
    for key in keys {
        let ord = match key.param.as_str() {
            "_id" => id_a.cmp(id_b),
            "_lastUpdated" => updated_a.cmp(updated_b),
            param => compare_sort_values(
                sort_value(entries_a, param, key.descending),
                sort_value(entries_b, param, key.descending),
                key.descending,
            ),
        };
        let ord = match key.param.as_str() {
            "_id" | "_lastUpdated" if key.descending => ord.reverse(),
            _ => ord,
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

#[derive(PartialEq, PartialOrd)]
enum SortValue {
    Text(String),
    Number(f64),
}

/// Ascending sorts use a resource's lowest value, descending its highest.
/// Resources without a value sort last in both directions.
fn sort_value(entries: &[IndexEntry], param: &str, descending: bool) -> Option<SortValue> {
    let values = entries.iter().filter(|e| e.param == param).filter_map(|e| match &e.value {
        IndexValue::String { normalized, .. } => Some(SortValue::Text(normalized.clone())),
        IndexValue::Token { code, .. } => code.clone().map(SortValue::Text),
        IndexValue::Uri { value } => Some(SortValue::Text(value.clone())),
        IndexValue::Reference { url, .. } => Some(SortValue::Text(url.clone())),
        IndexValue::Date { low, high } => Some(SortValue::Number(if descending { *high } else { *low } as f64)),
        IndexValue::Number { low, high } | IndexValue::Quantity { low, high, .. } => {
            Some(SortValue::Number(if descending { *high } else { *low }))
        }
        IndexValue::Composite(_) => None,
    });
    let pick = |a: SortValue, b: SortValue| {
        let a_first = a.partial_cmp(&b).is_some_and(|o| o != Ordering::Greater);
        if a_first != descending { a } else { b }
    };
    values.reduce(pick)
}

/// Missing values sort last whichever the direction.
fn compare_sort_values(a: Option<SortValue>, b: Option<SortValue>, descending: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => {
            let ord = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
            if descending { ord.reverse() } else { ord }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}
