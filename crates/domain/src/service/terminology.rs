//! Token searches that need terminology: `:in` and `:not-in` a ValueSet, and
//! `:above` / `:below` a code of a code system with a hierarchy
//! (<http://hl7.org/fhir/R4/search.html#token>).
//!
//! The Service resolves them against the ValueSet and CodeSystem resources
//! stored in Hearth, before the store sees the query, into plain
//! [`Match::TokenSet`] conditions (any of these `system|code` pairs), so that
//! every backend answers the same.
//!
//! A ValueSet is expanded from `expansion.contains` when present and from
//! `compose`: `include` with explicit concepts, whole systems, `is-a` /
//! `descendent-of` / `is-not-a` filters on the `concept` property (over the
//! hierarchy of a stored CodeSystem) and `valueSet` imports (intersected with
//! the include's own codes, as the ValueSet resource defines); `exclude` the
//! same way. A ValueSet or CodeSystem that is not stored answers 400.

use super::Service;
use crate::error::{Error, ErrorKind};
use crate::store::StoredResource;
use fhir::search::query::{Condition, Filter, Match, SearchQuery, TokenSystem, UriMode};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Most `system|code` pairs one resolved condition may hold.
pub(crate) const MAX_EXPANSION: usize = 5000;

/// How deep ValueSet imports may nest.
const MAX_IMPORT_DEPTH: usize = 8;

/// (system, code); a `None` code stands for every code of the system.
type Token = (String, Option<String>);

/// An expansion: a set of tokens.
type Codes = BTreeSet<Token>;

/// A CodeSystem's hierarchy: every code, its parents and its children.
#[derive(Default)]
struct Hierarchy {
    codes: BTreeSet<String>,
    parents: HashMap<String, Vec<String>>,
    children: HashMap<String, Vec<String>>,
}

impl Hierarchy {
    fn from_resource(code_system: &Value) -> Hierarchy {
        let mut h = Hierarchy::default();
        if let Some(concepts) = code_system.get("concept").and_then(Value::as_array) {
            h.add_concepts(concepts, None);
        }
        h
    }

    fn add_concepts(&mut self, concepts: &[Value], parent: Option<&str>) {
        for concept in concepts {
            let Some(code) = concept.get("code").and_then(Value::as_str) else { continue };
            self.codes.insert(code.to_string());
            if let Some(parent) = parent {
                self.link(parent, code);
            }
            // `parent` and `subsumedBy` properties name further parents.
            for property in concept.get("property").and_then(Value::as_array).into_iter().flatten() {
                let name = property.get("code").and_then(Value::as_str);
                if matches!(name, Some("parent" | "subsumedBy"))
                    && let Some(parent) = property.get("valueCode").and_then(Value::as_str)
                {
                    self.link(parent, code);
                }
            }
            if let Some(nested) = concept.get("concept").and_then(Value::as_array) {
                self.add_concepts(nested, Some(code));
            }
        }
    }

    fn link(&mut self, parent: &str, child: &str) {
        let children = self.children.entry(parent.to_string()).or_default();
        if !children.iter().any(|c| c == child) {
            children.push(child.to_string());
            self.parents.entry(child.to_string()).or_default().push(parent.to_string());
        }
    }

    /// `code` and everything reachable from it through `edges`.
    fn closure(&self, code: &str, below: bool) -> BTreeSet<String> {
        let edges = if below { &self.children } else { &self.parents };
        let mut out = BTreeSet::new();
        let mut stack = vec![code.to_string()];
        while let Some(next) = stack.pop() {
            if out.insert(next.clone())
                && let Some(more) = edges.get(&next)
            {
                stack.extend(more.iter().cloned());
            }
        }
        out
    }
}

/// What resolving one query needs, fetched once.
#[derive(Default)]
struct Cache {
    value_sets: HashMap<String, Codes>,
    hierarchies: HashMap<String, Option<Hierarchy>>,
}

fn bad_request(message: impl Into<String>, at: &str) -> Error {
    Error::new(ErrorKind::BadRequest, message).at(at.to_string())
}

fn not_supported(message: impl Into<String>, at: &str) -> Error {
    let mut e = Error::new(ErrorKind::BadRequest, message).at(at.to_string());
    if let Some(issue) = e.issues.first_mut() {
        issue.code = fhir::IssueType::NotSupported;
    }
    e
}

fn too_costly(at: &str) -> Error {
    let mut e = Error::new(
        ErrorKind::BadRequest,
        format!("the value set or hierarchy has more than {MAX_EXPANSION} codes; too many to search by"),
    )
    .at(at.to_string());
    if let Some(issue) = e.issues.first_mut() {
        issue.code = fhir::IssueType::TooCostly;
    }
    e
}

/// Whether any condition of `query` needs terminology.
pub(crate) fn needs_terminology(query: &SearchQuery) -> bool {
    fn any(conditions: &[Condition]) -> bool {
        conditions.iter().any(|c| match &c.matcher {
            Match::InValueSet { .. } | Match::Subsumption { .. } => true,
            Match::Chain { inner, .. } | Match::Has { inner, .. } => any(inner),
            _ => false,
        })
    }
    query.filters.iter().any(|f| any(&f.any_of))
}

impl Service {
    /// Replaces the `:in`, `:not-in`, `:above` and `:below` conditions of
    /// `query` (chained ones too) by the token sets they stand for.
    pub(crate) async fn resolve_terminology(&self, query: &mut SearchQuery) -> Result<(), Error> {
        if !needs_terminology(query) {
            return Ok(());
        }
        let mut wanted = Vec::new();
        for filter in &query.filters {
            collect(&filter.any_of, &mut wanted);
        }
        let mut cache = Cache::default();
        for (condition_param, matcher) in wanted {
            match matcher {
                Match::InValueSet { value_set, negate } => {
                    let at = format!("{condition_param}:{}", if negate { "not-in" } else { "in" });
                    if !cache.value_sets.contains_key(&value_set) {
                        let codes = self.expand_reference(&value_set, &at, &mut cache, &mut Vec::new()).await?;
                        cache.value_sets.insert(value_set, codes);
                    }
                }
                Match::Subsumption { system, .. } => {
                    self.hierarchy(&system, &mut cache).await?;
                }
                _ => {}
            }
        }
        for filter in &mut query.filters {
            replace(filter, &cache)?;
        }
        Ok(())
    }

    /// The expansion of the ValueSet `reference` (a canonical URL, with an
    /// optional `|version`, or `ValueSet/id`).
    async fn expand_reference(
        &self,
        reference: &str,
        at: &str,
        cache: &mut Cache,
        stack: &mut Vec<String>,
    ) -> Result<Codes, Error> {
        if let Some(codes) = cache.value_sets.get(reference) {
            return Ok(codes.clone());
        }
        if stack.iter().any(|s| s == reference) || stack.len() > MAX_IMPORT_DEPTH {
            return Err(bad_request("the value set imports itself, or nests imports too deeply", at));
        }
        let Some(value_set) = self.find_canonical("ValueSet", reference).await? else {
            return Err(bad_request("unknown value set: no ValueSet with that url or id is stored", at));
        };
        stack.push(reference.to_string());
        let codes = Box::pin(self.expand(&value_set, at, cache, stack)).await;
        stack.pop();
        let codes = codes?;
        cache.value_sets.insert(reference.to_string(), codes.clone());
        Ok(codes)
    }

    async fn expand(
        &self,
        value_set: &Value,
        at: &str,
        cache: &mut Cache,
        stack: &mut Vec<String>,
    ) -> Result<Codes, Error> {
        let mut codes = Codes::new();
        if let Some(contains) = value_set.pointer("/expansion/contains").and_then(Value::as_array) {
            expansion_contains(contains, &mut codes);
        }
        let compose = value_set.get("compose");
        for include in compose.and_then(|c| c.get("include")).and_then(Value::as_array).into_iter().flatten() {
            let part = self.compose_part(include, at, cache, stack).await?;
            codes.extend(part);
            if codes.len() > MAX_EXPANSION {
                return Err(too_costly(at));
            }
        }
        for exclude in compose.and_then(|c| c.get("exclude")).and_then(Value::as_array).into_iter().flatten() {
            let part = self.compose_part(exclude, at, cache, stack).await?;
            codes = self.subtract(codes, &part, at, cache).await?;
        }
        Ok(codes)
    }

    /// One `compose.include` or `compose.exclude`: its system part (concepts,
    /// filters or the whole system) intersected with its imported value sets.
    async fn compose_part(
        &self,
        part: &Value,
        at: &str,
        cache: &mut Cache,
        stack: &mut Vec<String>,
    ) -> Result<Codes, Error> {
        let mut result: Option<Codes> = None;
        if let Some(system) = part.get("system").and_then(Value::as_str) {
            let mut own = Codes::new();
            let concepts = part.get("concept").and_then(Value::as_array);
            let filters = part.get("filter").and_then(Value::as_array);
            if let Some(concepts) = concepts {
                for concept in concepts {
                    if let Some(code) = concept.get("code").and_then(Value::as_str) {
                        own.insert((system.to_string(), Some(code.to_string())));
                    }
                }
            }
            if let Some(filters) = filters {
                let mut filtered: Option<BTreeSet<String>> = None;
                for filter in filters {
                    let matched = self.filter_codes(system, filter, at, cache).await?;
                    filtered = Some(match filtered {
                        Some(before) => before.intersection(&matched).cloned().collect(),
                        None => matched,
                    });
                }
                own.extend(filtered.unwrap_or_default().into_iter().map(|c| (system.to_string(), Some(c))));
            }
            if concepts.is_none() && filters.is_none() {
                own.insert((system.to_string(), None));
            }
            result = Some(own);
        }
        for import in part.get("valueSet").and_then(Value::as_array).into_iter().flatten() {
            let Some(reference) = import.as_str() else { continue };
            let imported = Box::pin(self.expand_reference(reference, at, cache, stack)).await?;
            result = Some(match result {
                Some(before) => intersect(&before, &imported),
                None => imported,
            });
        }
        Ok(result.unwrap_or_default())
    }

    /// The codes of `system` a `compose.include.filter` selects.
    async fn filter_codes(
        &self,
        system: &str,
        filter: &Value,
        at: &str,
        cache: &mut Cache,
    ) -> Result<BTreeSet<String>, Error> {
        let property = filter.get("property").and_then(Value::as_str).unwrap_or_default();
        let op = filter.get("op").and_then(Value::as_str).unwrap_or_default();
        let value = filter.get("value").and_then(Value::as_str).unwrap_or_default();
        if property != "concept" || !matches!(op, "is-a" | "descendent-of" | "is-not-a") {
            return Err(not_supported(
                format!(
                    "value set filters other than concept is-a, descendent-of and is-not-a are not supported (found {property} {op})"
                ),
                at,
            ));
        }
        let Some(hierarchy) = self.hierarchy(system, cache).await? else {
            return Err(bad_request("a value set filters on a code system that is not stored", at));
        };
        let below = hierarchy.closure(value, true);
        Ok(match op {
            "is-a" => below,
            "descendent-of" => below.into_iter().filter(|c| c != value).collect(),
            _ => hierarchy.codes.difference(&below).cloned().collect(),
        })
    }

    /// `codes` without `excluded`. Excluding from a whole system needs the
    /// system's codes: they come from its stored CodeSystem.
    async fn subtract(&self, codes: Codes, excluded: &Codes, at: &str, cache: &mut Cache) -> Result<Codes, Error> {
        let mut out = Codes::new();
        for (system, code) in codes {
            let whole_excluded = excluded.contains(&(system.clone(), None));
            match code {
                Some(code) => {
                    if !whole_excluded && !excluded.contains(&(system.clone(), Some(code.clone()))) {
                        out.insert((system, Some(code)));
                    }
                }
                None if whole_excluded => {}
                None if !excluded.iter().any(|(s, _)| *s == system) => {
                    out.insert((system, None));
                }
                None => {
                    let Some(hierarchy) = self.hierarchy(&system, cache).await? else {
                        return Err(not_supported(
                            "excluding codes from a whole code system needs that CodeSystem stored",
                            at,
                        ));
                    };
                    for c in &hierarchy.codes {
                        if !excluded.contains(&(system.clone(), Some(c.clone()))) {
                            out.insert((system.clone(), Some(c.clone())));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The hierarchy of the stored CodeSystem whose `url` is `system`.
    async fn hierarchy<'c>(&self, system: &str, cache: &'c mut Cache) -> Result<Option<&'c Hierarchy>, Error> {
        if !cache.hierarchies.contains_key(system) {
            let found = self.find_canonical("CodeSystem", system).await?;
            cache.hierarchies.insert(system.to_string(), found.as_ref().map(Hierarchy::from_resource));
        }
        Ok(cache.hierarchies.get(system).and_then(Option::as_ref))
    }

    /// The current `resource_type` resource with canonical `reference`
    /// (`url` or `url|version`), or `Type/id`.
    async fn find_canonical(&self, resource_type: &str, reference: &str) -> Result<Option<Value>, Error> {
        if let Some(id) = reference.strip_prefix(resource_type).and_then(|r| r.strip_prefix('/')) {
            let found = self.store.read(resource_type, id).await?;
            return Ok(found.as_ref().and_then(body_json));
        }
        let (url, version) = match reference.split_once('|') {
            Some((url, version)) => (url, Some(version)),
            None => (reference, None),
        };
        let mut filters = vec![Filter {
            any_of: vec![Condition {
                param: "url".into(),
                matcher: Match::Uri { value: url.to_string(), mode: UriMode::Exact },
            }],
        }];
        if let Some(version) = version {
            filters.push(Filter {
                any_of: vec![Condition {
                    param: "version".into(),
                    matcher: Match::Token { system: TokenSystem::Any, code: Some(version.to_string()), negate: false },
                }],
            });
        }
        let query =
            SearchQuery { resource_type: Some(resource_type.to_string()), filters, count: 1, ..SearchQuery::default() };
        let page = self.store.search(&query).await?;
        Ok(page.items.first().and_then(body_json))
    }
}

fn body_json(stored: &StoredResource) -> Option<Value> {
    stored.body.as_deref().and_then(|b| serde_json::from_str(b).ok())
}

/// `expansion.contains`, nested `contains` included; abstract entries carry
/// no code to match and are left out.
fn expansion_contains(contains: &[Value], out: &mut Codes) {
    for entry in contains {
        let is_abstract = entry.get("abstract").and_then(Value::as_bool) == Some(true);
        if !is_abstract
            && let (Some(system), Some(code)) =
                (entry.get("system").and_then(Value::as_str), entry.get("code").and_then(Value::as_str))
        {
            out.insert((system.to_string(), Some(code.to_string())));
        }
        if let Some(nested) = entry.get("contains").and_then(Value::as_array) {
            expansion_contains(nested, out);
        }
    }
}

/// Tokens in both `a` and `b`, where a whole system covers its codes.
fn intersect(a: &Codes, b: &Codes) -> Codes {
    let covers = |set: &Codes, (system, code): &Token| {
        set.contains(&(system.clone(), None))
            || code.as_ref().is_some_and(|_| set.contains(&(system.clone(), code.clone())))
    };
    let mut out = Codes::new();
    for token in a {
        if covers(b, token) {
            out.insert(token.clone());
        }
    }
    for token in b {
        if covers(a, token) {
            out.insert(token.clone());
        }
    }
    // A whole system and one of its codes: the code is the intersection.
    let wholes: Vec<String> = out.iter().filter(|(_, c)| c.is_none()).map(|(s, _)| s.clone()).collect();
    for system in wholes {
        let narrowed = !(a.contains(&(system.clone(), None)) && b.contains(&(system.clone(), None)));
        if narrowed {
            out.remove(&(system, None));
        }
    }
    out
}

/// The unresolved terminology conditions (parameter, matcher), chains included.
fn collect(conditions: &[Condition], out: &mut Vec<(String, Match)>) {
    for condition in conditions {
        match &condition.matcher {
            Match::InValueSet { .. } | Match::Subsumption { .. } => {
                out.push((condition.param.clone(), condition.matcher.clone()));
            }
            Match::Chain { inner, .. } | Match::Has { inner, .. } => collect(inner, out),
            _ => {}
        }
    }
}

fn replace(filter: &mut Filter, cache: &Cache) -> Result<(), Error> {
    replace_all(&mut filter.any_of, cache)
}

fn replace_all(conditions: &mut [Condition], cache: &Cache) -> Result<(), Error> {
    for condition in conditions {
        let resolved = match &mut condition.matcher {
            Match::InValueSet { value_set, negate } => {
                let codes = cache.value_sets.get(value_set.as_str()).cloned().unwrap_or_default();
                let at = format!("{}:{}", condition.param, if *negate { "not-in" } else { "in" });
                if codes.len() > MAX_EXPANSION {
                    return Err(too_costly(&at));
                }
                Match::TokenSet { tokens: codes.into_iter().collect(), negate: *negate }
            }
            Match::Subsumption { system, code, below } => {
                let at = format!("{}:{}", condition.param, if *below { "below" } else { "above" });
                let Some(hierarchy) = cache.hierarchies.get(system.as_str()).and_then(Option::as_ref) else {
                    return Err(bad_request("no CodeSystem with that url is stored, so its hierarchy is unknown", &at));
                };
                let codes = hierarchy.closure(code, *below);
                if codes.len() > MAX_EXPANSION {
                    return Err(too_costly(&at));
                }
                Match::TokenSet {
                    tokens: codes.into_iter().map(|c| (system.clone(), Some(c))).collect(),
                    negate: false,
                }
            }
            Match::Chain { inner, .. } | Match::Has { inner, .. } => {
                replace_all(inner, cache)?;
                continue;
            }
            _ => continue,
        };
        condition.matcher = resolved;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(list: &[(&str, Option<&str>)]) -> Codes {
        list.iter().map(|(s, c)| (s.to_string(), c.map(str::to_string))).collect()
    }

    #[test]
    fn hierarchy_from_nesting_and_properties() {
        let cs = json!({"concept": [
            {"code": "a", "concept": [{"code": "b", "concept": [{"code": "c"}]}]},
            {"code": "d", "property": [{"code": "parent", "valueCode": "b"}]},
            {"code": "e"}
        ]});
        let h = Hierarchy::from_resource(&cs);
        let below: Vec<String> = h.closure("a", true).into_iter().collect();
        assert_eq!(below, ["a", "b", "c", "d"]);
        let above: Vec<String> = h.closure("d", false).into_iter().collect();
        assert_eq!(above, ["a", "b", "d"]);
        assert_eq!(h.closure("zzz", true).len(), 1, "an unknown code is only itself");
    }

    #[test]
    fn intersection_narrows_whole_systems() {
        let a = codes(&[("s", None), ("t", Some("1"))]);
        let b = codes(&[("s", Some("x")), ("t", Some("2"))]);
        assert_eq!(intersect(&a, &b), codes(&[("s", Some("x"))]));
        let c = codes(&[("s", None)]);
        assert_eq!(intersect(&a, &c), codes(&[("s", None)]));
    }

    #[test]
    fn expansion_skips_abstract_entries_and_nests() {
        let mut out = Codes::new();
        expansion_contains(
            json!([{"system": "s", "code": "g", "abstract": true, "contains": [{"system": "s", "code": "1"}]}])
                .as_array()
                .unwrap(),
            &mut out,
        );
        assert_eq!(out, codes(&[("s", Some("1"))]));
    }
}
