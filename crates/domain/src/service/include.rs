//! `_include` and `_revinclude` (<http://hl7.org/fhir/R4/search.html#include>),
//! resolved once a search's page is known, the same way for every store:
//!
//! - `_include=Type:param[:Target]` re-extracts the references of `param` from
//!   the bodies of the page's resources of `Type` and reads their targets with
//!   `_id` searches (one per target type), so deleted and missing targets are
//!   skipped;
//! - `_revinclude=Type:param[:Target]` searches `Type` for resources whose
//!   `param` refers to any of the page's resources; `_revinclude=*` searches
//!   every type through every reference parameter;
//! - `:iterate` applies a directive to the resources included so far too,
//!   round after round, until nothing new is found.
//!
//! The matches that are contained resources (`_containedType=contained`)
//! are not followed. Included resources are not counted in the total and not paged; at most
//! [`MAX_INCLUDED`] are returned, and the result says when some were left out.

use super::Service;
use crate::error::Error;
use crate::store::StoredResource;
use fhir::search::include::Include;
use fhir::search::query::{Condition, Filter, Match, SearchQuery, TotalMode};
use fhir::search::{IndexValue, ParamType, Registry};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Most resources one searchset includes beside its matches.
pub const MAX_INCLUDED: usize = 1000;
/// Most rounds of `:iterate`.
const MAX_ROUNDS: usize = 8;
/// Ids (or reference conditions) per store search.
const CHUNK: usize = 100;

/// The resources a page's `_include`/`_revinclude` directives add.
#[derive(Debug, Clone, Default)]
pub struct Included {
    /// Ordered by round, then type and id; none of them is a match.
    pub resources: Vec<StoredResource>,
    /// Some resources were left out ([`MAX_INCLUDED`], or `:iterate` went on
    /// for more than its rounds).
    pub truncated: bool,
}

type Key = (String, String);

fn key_of(resource: &StoredResource) -> Key {
    (resource.resource_type.clone(), resource.id.clone())
}

impl Service {
    /// Resolves `includes` for the page `matches`.
    pub(crate) async fn resolve_includes(
        &self,
        matches: &[StoredResource],
        includes: &[Include],
    ) -> Result<Included, Error> {
        let mut included = Included::default();
        if includes.is_empty() || matches.is_empty() {
            return Ok(included);
        }
        let registry = self.registry();
        let mut seen: HashSet<Key> = matches.iter().map(key_of).collect();
        // A contained resource answered as a match (`_containedType=contained`)
        // is part of its container: the directives follow resources of their own.
        let mut frontier: Vec<StoredResource> =
            matches.iter().filter(|r| crate::store::split_contained_match_id(&r.id).is_none()).cloned().collect();
        for round in 0..=MAX_ROUNDS {
            let active: Vec<&Include> = includes.iter().filter(|i| round == 0 || i.iterate).collect();
            if frontier.is_empty() || active.is_empty() {
                break;
            }
            if round == MAX_ROUNDS {
                included.truncated = true;
                break;
            }
            let room = MAX_INCLUDED - included.resources.len();
            let mut found: Vec<StoredResource> = Vec::new();
            for include in active {
                let batch = if include.reverse {
                    self.reverse_include(&registry, &frontier, include, room + 1).await?
                } else {
                    self.forward_include(&registry, &frontier, include, &seen).await?
                };
                for resource in batch {
                    if seen.insert(key_of(&resource)) {
                        found.push(resource);
                    }
                }
            }
            found.sort_by(|a, b| (&a.resource_type, &a.id).cmp(&(&b.resource_type, &b.id)));
            if found.len() > room {
                found.truncate(room);
                included.truncated = true;
            }
            included.resources.extend(found.iter().cloned());
            if included.truncated {
                break;
            }
            frontier = found;
        }
        Ok(included)
    }

    /// The current resources that `frontier`'s resources of the include's
    /// source type refer to through its parameter (or any reference parameter).
    async fn forward_include(
        &self,
        registry: &Registry,
        frontier: &[StoredResource],
        include: &Include,
        seen: &HashSet<Key>,
    ) -> Result<Vec<StoredResource>, Error> {
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for resource in frontier {
            if include.source_type.as_ref().is_some_and(|t| *t != resource.resource_type) {
                continue;
            }
            let Some(body) = resource.body.as_deref() else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<Value>(body) else {
                continue;
            };
            for entry in registry.extract(&json) {
                if include.param.as_ref().is_some_and(|p| *p != entry.param) {
                    continue;
                }
                let IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } = entry.value else {
                    continue;
                };
                if include.target_type.as_ref().is_some_and(|want| *want != t)
                    || !fhir::definitions::is_resource_type(&t)
                    || seen.contains(&(t.clone(), id.clone()))
                {
                    continue;
                }
                wanted.entry(t).or_default().insert(id);
            }
        }
        let mut out = Vec::new();
        for (resource_type, ids) in wanted {
            let ids: Vec<String> = ids.into_iter().collect();
            for chunk in ids.chunks(CHUNK) {
                let any_of = chunk
                    .iter()
                    .map(|id| Condition { param: "_id".to_string(), matcher: Match::Id(id.clone()) })
                    .collect();
                let query = SearchQuery {
                    resource_type: Some(resource_type.clone()),
                    filters: vec![Filter { any_of }],
                    count: chunk.len(),
                    total: TotalMode::None,
                    ..SearchQuery::default()
                };
                out.extend(self.store().search(&query).await?.items);
            }
        }
        Ok(out)
    }

    /// The current resources of the include's source type whose parameter (or
    /// any reference parameter) refers to one of `frontier`'s resources; at
    /// most `limit` per store search.
    async fn reverse_include(
        &self,
        registry: &Registry,
        frontier: &[StoredResource],
        include: &Include,
        limit: usize,
    ) -> Result<Vec<StoredResource>, Error> {
        let source = include.source_type.as_deref();
        let params: Vec<(String, Vec<String>)> = match (source, &include.param) {
            (Some(source), Some(code)) => match registry.param(source, code) {
                Some(def) => vec![(code.clone(), def.targets.clone())],
                None => Vec::new(),
            },
            (Some(source), None) => reference_params(registry.params_for(source)),
            // `_revinclude=*`: every reference parameter of every type, by
            // code (with the union of its targets), searched across types.
            (None, _) => {
                let mut by_code: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                let mut types: BTreeSet<String> = fhir::search::params::resource_types().map(str::to_string).collect();
                types.extend(registry.custom_types());
                for (code, targets) in reference_params(types.iter().flat_map(|t| registry.params_for(t)).collect()) {
                    by_code.entry(code).or_default().extend(targets);
                }
                by_code.into_iter().map(|(code, targets)| (code, targets.into_iter().collect())).collect()
            }
        };
        let mut conditions = Vec::new();
        for resource in frontier {
            if include.target_type.as_ref().is_some_and(|t| *t != resource.resource_type) {
                continue;
            }
            for (code, targets) in &params {
                if !targets.is_empty() && !targets.contains(&resource.resource_type) {
                    continue;
                }
                conditions.push(Condition {
                    param: code.clone(),
                    matcher: Match::Reference {
                        target_type: Some(resource.resource_type.clone()),
                        id: resource.id.clone(),
                    },
                });
            }
        }
        let mut out = Vec::new();
        for chunk in conditions.chunks(CHUNK) {
            let query = SearchQuery {
                resource_type: source.map(str::to_string),
                filters: vec![Filter { any_of: chunk.to_vec() }],
                count: limit,
                total: TotalMode::None,
                ..SearchQuery::default()
            };
            out.extend(self.store().search(&query).await?.items);
        }
        Ok(out)
    }
}

/// The reference parameters among `defs` that an expression indexes, as
/// (code, target types).
fn reference_params(defs: Vec<&fhir::search::SearchParamDef>) -> Vec<(String, Vec<String>)> {
    defs.into_iter()
        .filter(|def| def.kind == ParamType::Reference && def.expression.is_some())
        .map(|def| (def.code.clone(), def.targets.clone()))
        .collect()
}
