//! Compartment search and the patient-level operations: `[Compartment]/[id]/[type]`
//! (<http://hl7.org/fhir/R4/http.html#vsearch>, <http://hl7.org/fhir/R4/compartmentdefinition.html>),
//! `Patient/[id]/$everything` (<http://hl7.org/fhir/R4/patient-operation-everything.html>)
//! and `Observation/$lastn` (<http://hl7.org/fhir/R4/observation-operation-lastn.html>).
//!
//! All three are searches in the shared query IR (`fhir::search::query`): a compartment is
//! one more filter, "any of the linking parameters references the owner", so every store
//! evaluates them with its ordinary search and no backend knows about compartments.

use super::{Handling, SearchResult, Service, prepare};
use crate::error::{Error, ErrorKind};
use crate::store::{Page, StoredResource};
use fhir::compartments;
use fhir::search::ParamType;
use fhir::search::query::{Condition, Filter, Match, Prefix, SearchQuery, SortKey, TotalMode};
use serde::Deserialize;
use std::collections::HashMap;

/// Store searches one `$everything` request keeps in flight: enough to hide round trips,
/// few enough to leave the connection pool to other requests.
const CONCURRENT_SEARCHES: usize = 8;
/// Resources read per store call while `$lastn` walks a patient's observations.
const LASTN_BATCH: usize = 1000;
/// Most observations `$lastn` examines for one request: it must see every match to
/// group by code, so a larger set is refused rather than scanned.
pub(crate) const LASTN_MAX_SCANNED: usize = 100_000;

impl Service {
    /// `GET [base]/[compartment]/[id]/[type]?params`: a search of `resource_type` limited
    /// to the compartment of `compartment`/`id` (http.html#vsearch). The compartment's
    /// definition names the parameters that link a `resource_type` resource to its owner;
    /// the search adds one filter, any of them referencing `compartment/id` (or, for
    /// `{def}`, the resource being the owner). The owner need not exist: the compartment
    /// is then empty.
    ///
    /// Errors: 404 when `compartment` is not a compartment type or `resource_type` not a
    /// resource type; 400 when `resource_type` is not in the compartment, for an invalid
    /// id, or for the parameters, as in [`Service::search`].
    pub(crate) async fn compartment_search_unchecked(
        &self,
        compartment: &str,
        id: &str,
        resource_type: &str,
        params: &[(String, String)],
        handling: Handling,
    ) -> Result<SearchResult, Error> {
        if !compartments::is_compartment(compartment) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{} is not a compartment type", prepare::short(compartment)),
            ));
        }
        prepare::check_type(resource_type)?;
        prepare::check_id(id)?;
        let filter = compartment_filter(compartment, id, resource_type).ok_or_else(|| {
            Error::new(ErrorKind::BadRequest, format!("{resource_type} is not in the {compartment} compartment"))
        })?;
        let mut search = self.parse_search(resource_type, params, handling, self.config.default_page_size)?;
        self.resolve_terminology(&mut search.query).await?;
        search.query.filters.push(filter);
        let page = self.store.search(&search.query).await?;
        let included = self.resolve_includes(&page.items, &search.includes).await?;
        Ok(SearchResult {
            page,
            applied: search.applied,
            count: search.query.count,
            offset: search.query.offset,
            included,
            page_token: None,
        })
    }

    /// `GET|POST [base]/Patient/[id]/$everything`: the Patient and every resource in its
    /// compartment, as one list paged by `_count`/`_offset` (patient-operation-everything.html).
    ///
    /// Parameters (strict unless `handling` is lenient): `start`, `end` (care dates),
    /// `_since` (meta.lastUpdated), `_type` (comma list, repeatable), `_count`, `_offset`,
    /// and `_total` (accepted; the total is always given).
    ///
    /// - Order, stable across pages: the Patient first, then by resource type, then id.
    /// - `start`/`end` (care dates, either may be left open) keep a resource whose type has
    ///   a `date` search parameter of type date only when that date overlaps
    ///   `[start, end]`; a resource without a value is then left out. Types without such a
    ///   parameter, and the Patient, are not filtered by date.
    /// - `_since` keeps resources last updated at or after the instant, the Patient included.
    /// - `_type` lists the types to return: `Patient` or types of the Patient compartment
    ///   (others are 400: referenced resources outside the compartment are not returned).
    /// - Without `_count` a page holds the largest page size: the spec prefers the whole
    ///   record in one Bundle unless the client asks for pages.
    ///
    /// Cost: one counting search per resource type of the compartment (run concurrently),
    /// then one search for each type the page's window covers, so a page costs about the
    /// same whatever its offset.
    ///
    /// Errors: 404 for an unknown patient, 410 for a deleted one, 400 for parameters.
    pub(crate) async fn patient_everything_unchecked(
        &self,
        id: &str,
        params: &[(String, String)],
        handling: Handling,
    ) -> Result<SearchResult, Error> {
        prepare::check_id(id)?;
        let args = EverythingArgs::parse(params, handling, self.config.max_page_size)?;
        let patient = self.read_unchecked("Patient", id).await?;

        let mut items: Vec<StoredResource> = Vec::new();
        let mut total: u64 = 0;
        let mut skip = args.offset;
        let mut remaining = args.count;
        let owner_wanted = args.wants("Patient") && args.since.is_none_or(|low| patient.last_updated.micros() >= low);
        if owner_wanted {
            total += 1;
            if skip > 0 {
                skip -= 1;
            } else if remaining > 0 {
                items.push(patient);
                remaining -= 1;
            }
        }
        // Phase 1: count the matches of every type of the compartment, concurrently.
        let queries: Vec<SearchQuery> = compartments::resource_types("Patient")
            .filter(|t| args.wants(t))
            .filter_map(|t| everything_query(id, t, &args))
            .collect();
        let counts = self.search_many(queries.clone()).await?;
        // Phase 2: read the slice of each type that falls in the page's window.
        let mut slices = Vec::new();
        for (mut query, counted) in queries.into_iter().zip(counts) {
            let matches = counted.total.ok_or_else(|| Error::new(ErrorKind::Internal, "the store did not count matches"))?;
            total += matches;
            let matches = usize::try_from(matches).unwrap_or(usize::MAX);
            if remaining == 0 {
                continue;
            }
            if skip >= matches {
                // The whole type lies before the window.
                skip -= matches;
                continue;
            }
            let take = (matches - skip).min(remaining);
            query.offset = skip;
            query.count = take;
            query.total = TotalMode::None;
            slices.push(query);
            skip = 0;
            remaining -= take;
        }
        let count = args.count;
        for page in self.search_many(slices).await? {
            // A write between the phases may have added matches: the page stays in size.
            let room = count.saturating_sub(items.len());
            items.extend(page.items.into_iter().take(room));
        }
        tracing::debug!(entries = items.len(), total, offset = args.offset, "patient $everything page");
        Ok(SearchResult {
            page: Page { items, total: Some(total) },
            applied: args.applied,
            count: args.count,
            offset: args.offset,
            included: Default::default(),
            page_token: None,
        })
    }

    /// `GET [base]/Observation/$lastn`: the `max` (default 1) most recent Observations of
    /// each code, for the `patient` or `subject` the request names, filtered by any other
    /// Observation search parameters (`category`, `code`, `date`...)
    /// (observation-operation-lastn.html).
    ///
    /// - Recency is the `date` search parameter (`Observation.effective`), newest first
    ///   (`_sort=-date`); observations without one come last in their group.
    /// - Codes group by `system|code` of `code.coding`, transitively (an observation coded
    ///   both `a` and `c` joins the groups of `a` and `c`); a code with no coding groups by
    ///   its text. Observations tied with the last one kept (same effective time) are kept
    ///   too, so a group can exceed `max`.
    /// - Groups come in the order of their most recent observation; the list is paged by
    ///   `_count` (default: the largest page) and `_offset`.
    ///
    /// Errors: 400 without `patient`/`subject`, for a bad `max`, `_sort`, or parameters as
    /// in [`Service::search`]; 400 (too costly) beyond [`LASTN_MAX_SCANNED`] matches.
    pub(crate) async fn observation_lastn_unchecked(&self, params: &[(String, String)], handling: Handling) -> Result<SearchResult, Error> {
        let mut max = 1usize;
        let mut max_given = None;
        let mut rest = Vec::with_capacity(params.len());
        for (name, value) in params {
            match name.as_str() {
                "max" => {
                    max = value.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::new(ErrorKind::BadRequest, "max must be a positive integer").at("max")
                    })?;
                    max_given = Some(value.trim().to_string());
                }
                "_sort" => {
                    return Err(Error::new(ErrorKind::BadRequest, "$lastn sorts by date itself; _sort is not allowed")
                        .at("_sort"));
                }
                _ => rest.push((name.clone(), value.clone())),
            }
        }
        let names_subject = rest.iter().any(|(name, _)| {
            let code = name.split(':').next().unwrap_or_default();
            code == "patient" || code == "subject"
        });
        if !names_subject {
            return Err(Error::new(ErrorKind::BadRequest, "$lastn needs a patient or subject parameter"));
        }
        let mut search = self.parse_search("Observation", &rest, handling, self.config.max_page_size)?;
        if search.query.contained != fhir::search::query::ContainedMode::No {
            let mut e = Error::new(ErrorKind::BadRequest, "$lastn groups Observations of their own; _contained is not supported")
                .at("_contained");
            if let Some(issue) = e.issues.first_mut() {
                issue.code = fhir::IssueType::NotSupported;
            }
            return Err(e);
        }
        self.resolve_terminology(&mut search.query).await?;
        if let Some(max) = max_given {
            search.applied.insert(0, ("max".to_string(), max));
        }
        let (count, offset) = (search.query.count, search.query.offset);
        let mut query = search.query;
        query.sort = vec![SortKey { param: "date".into(), descending: true }];
        query.total = TotalMode::None;
        query.count = LASTN_BATCH;
        query.offset = 0;

        let mut observations: Vec<(StoredResource, LastnView)> = Vec::new();
        loop {
            let page = self.store.search(&query).await?;
            let full = page.items.len() >= LASTN_BATCH;
            for stored in page.items {
                let view = LastnView::of(&stored)?;
                observations.push((stored, view));
            }
            if !full {
                break;
            }
            if observations.len() >= LASTN_MAX_SCANNED {
                let mut e = Error::new(
                    ErrorKind::BadRequest,
                    format!("$lastn matches more than {LASTN_MAX_SCANNED} observations; narrow it by category, code or date"),
                );
                if let Some(issue) = e.issues.first_mut() {
                    issue.code = fhir::IssueType::TooCostly;
                }
                return Err(e);
            }
            query.offset += LASTN_BATCH;
        }
        let selected = select_lastn(observations, max);
        tracing::debug!(selected = selected.len(), max, "observation $lastn");
        let total = selected.len() as u64;
        let items = selected.into_iter().skip(offset).take(count).collect();
        Ok(SearchResult {
            page: Page { items, total: Some(total) },
            applied: search.applied,
            count,
            offset,
            included: Default::default(),
            page_token: None,
        })
    }

    /// Runs `queries` against the store, up to [`CONCURRENT_SEARCHES`] at a time, and
    /// returns their pages in the order of the queries. Concurrency matters for backends
    /// where each search costs a round trip: `$everything` asks one per resource type.
    /// Outside a Tokio runtime (nothing to spawn on) the searches run one after another.
    async fn search_many(&self, queries: Vec<SearchQuery>) -> Result<Vec<Page<StoredResource>>, Error> {
        if queries.len() < 2 || tokio::runtime::Handle::try_current().is_err() {
            let mut pages = Vec::with_capacity(queries.len());
            for query in &queries {
                pages.push(self.store.search(query).await?);
            }
            return Ok(pages);
        }
        let mut pages: Vec<Option<Page<StoredResource>>> = vec![None; queries.len()];
        // Dropping the set (on an error, or when the request is abandoned) aborts the rest.
        let mut running = tokio::task::JoinSet::new();
        let mut pending = queries.into_iter().enumerate();
        loop {
            while running.len() < CONCURRENT_SEARCHES {
                let Some((index, query)) = pending.next() else { break };
                let store = self.store.clone();
                running.spawn(async move { (index, store.search(&query).await) });
            }
            let Some(joined) = running.join_next().await else { break };
            let (index, page) = joined.map_err(|_| Error::new(ErrorKind::Internal, "a store search task failed"))?;
            if let Some(slot) = pages.get_mut(index) {
                *slot = Some(page?);
            }
        }
        pages.into_iter().map(|p| p.ok_or_else(|| Error::new(ErrorKind::Internal, "a store search went missing"))).collect()
    }

    /// Parses search parameters of `resource_type` as [`Service::search`] does (size
    /// limits, `_offset` as Hearth's paging parameter, `_count` capped at the largest
    /// page size), with `default_count` as the page size when none is asked for.
    fn parse_search(
        &self,
        resource_type: &str,
        params: &[(String, String)],
        handling: Handling,
        default_count: usize,
    ) -> Result<ParsedSearch, Error> {
        let mut offset = 0usize;
        let mut rest = Vec::with_capacity(params.len());
        for (name, value) in params {
            if name == "_offset" {
                offset = value.trim().parse().map_err(|_| {
                    Error::new(ErrorKind::BadRequest, "_offset must be a non-negative integer").at("_offset")
                })?;
            } else {
                rest.push((name.clone(), value.clone()));
            }
        }
        super::check_search_size(&rest)?;
        let parsed = fhir::search::query::parse(&self.registry(), Some(resource_type), &rest, handling == Handling::Lenient)
            .map_err(|issues| Error::with_issues(ErrorKind::BadRequest, issues))?;
        let mut query = parsed.query;
        let count_given = rest.iter().any(|(name, _)| name == "_count");
        query.count = if count_given { query.count.min(self.config.max_page_size) } else { default_count };
        query.offset = offset;
        Ok(ParsedSearch { query, applied: parsed.applied, includes: parsed.includes })
    }
}

/// A parsed search before it runs.
struct ParsedSearch {
    query: SearchQuery,
    applied: Vec<(String, String)>,
    /// `_include` / `_revinclude`, resolved on the page (compartment search).
    includes: Vec<fhir::search::include::Include>,
}

/// "`resource_type` is in the compartment of `compartment`/`id`": any of the linking
/// parameters of the compartment definition references the owner, or (`{def}`) the
/// resource is the owner. `None` when the type is not in the compartment.
fn compartment_filter(compartment: &str, id: &str, resource_type: &str) -> Option<Filter> {
    let params = compartments::params(compartment, resource_type)?;
    let any_of = params
        .iter()
        .map(|param| {
            if param == compartments::OWNER {
                Condition { param: "_id".into(), matcher: Match::Id(id.to_string()) }
            } else {
                Condition {
                    param: param.clone(),
                    matcher: Match::Reference { target_type: Some(compartment.to_string()), id: id.to_string() },
                }
            }
        })
        .collect();
    Some(Filter { any_of })
}

/// The search of `$everything` for one resource type (`None` when the type is not in the
/// Patient compartment): in `id`'s compartment, with the `_since` and care-date filters,
/// sorted by id, counting only (phase 2 sets the window).
fn everything_query(id: &str, resource_type: &str, args: &EverythingArgs) -> Option<SearchQuery> {
    let mut filters = vec![compartment_filter("Patient", id, resource_type)?];
    if let Some(since) = args.since {
        filters.push(one(Condition {
            param: "_lastUpdated".into(),
            matcher: Match::LastUpdated { prefix: Prefix::Ge, low: since, high: since },
        }));
    }
    if let Some((low, high)) = args.care_range()
        && has_date_param(resource_type)
    {
        // `ap` is overlap in every store: the resource's date range meets [start, end].
        filters.push(one(Condition { param: "date".into(), matcher: Match::Date { prefix: Prefix::Ap, low, high } }));
    }
    Some(SearchQuery {
        resource_type: Some(resource_type.to_string()),
        filters,
        sort: vec![SortKey { param: "_id".into(), descending: false }],
        count: 0,
        offset: 0,
        total: TotalMode::Accurate,
        ..SearchQuery::default()
    })
}

fn one(condition: Condition) -> Filter {
    Filter { any_of: vec![condition] }
}

/// True when `resource_type` has a `date` search parameter of type date: the one
/// `$everything`'s `start`/`end` apply to.
fn has_date_param(resource_type: &str) -> bool {
    fhir::search::search_param(resource_type, "date").is_some_and(|p| p.kind == ParamType::Date && p.expression.is_some())
}

/// The parameters of `$everything`.
struct EverythingArgs {
    start: Option<(i64, i64)>,
    end: Option<(i64, i64)>,
    /// Lower bound of `_since`, microseconds.
    since: Option<i64>,
    /// `None`: every type.
    types: Option<Vec<String>>,
    count: usize,
    offset: usize,
    /// The parameters as applied, for paging links (`_count`/`_offset` left out).
    applied: Vec<(String, String)>,
}

impl EverythingArgs {
    fn parse(params: &[(String, String)], handling: Handling, max_page: usize) -> Result<EverythingArgs, Error> {
        let bad = |name: &str, message: &str| Error::new(ErrorKind::BadRequest, message.to_string()).at(name.to_string());
        let date = |name: &str, value: &str| {
            fhir::search::ranges::date_range(value.trim())
                .ok_or_else(|| bad(name, &format!("{name} must be a date, dateTime or instant")))
        };
        let mut args = EverythingArgs {
            start: None,
            end: None,
            since: None,
            types: None,
            count: max_page,
            offset: 0,
            applied: Vec::new(),
        };
        for (name, value) in params {
            match name.as_str() {
                "start" => args.start = Some(date(name, value)?),
                "end" => args.end = Some(date(name, value)?),
                "_since" => args.since = Some(date(name, value)?.0),
                "_type" => {
                    let list = args.types.get_or_insert_with(Vec::new);
                    for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        if t != "Patient" && compartments::params("Patient", t).is_none() {
                            let shown = prepare::short(t);
                            return Err(bad(name, &format!("{shown} is not in the Patient compartment")));
                        }
                        list.push(t.to_string());
                    }
                }
                "_count" => {
                    let n: usize = value.trim().parse().map_err(|_| bad(name, "_count must be a non-negative integer"))?;
                    args.count = n.min(max_page);
                    continue;
                }
                // Every page is counted; `_total` (which `_summary=count` sets) is accepted
                // for uniformity with search.
                "_total" => {
                    if !matches!(value.as_str(), "none" | "estimate" | "accurate") {
                        return Err(bad(name, "_total must be none, estimate or accurate"));
                    }
                }
                "_offset" => {
                    args.offset = value.trim().parse().map_err(|_| bad(name, "_offset must be a non-negative integer"))?;
                    continue;
                }
                _ if handling == Handling::Lenient => continue,
                _ => return Err(bad(name, "unknown parameter of $everything")),
            }
            args.applied.push((name.clone(), value.clone()));
        }
        if let (Some(start), Some(end)) = (args.start, args.end)
            && start.0 > end.1
        {
            return Err(bad("start", "start is after end"));
        }
        Ok(args)
    }

    /// `[start, end]` in microseconds, open where a bound is not given; `None` without either.
    fn care_range(&self) -> Option<(i64, i64)> {
        if self.start.is_none() && self.end.is_none() {
            return None;
        }
        Some((self.start.map_or(i64::MIN, |s| s.0), self.end.map_or(i64::MAX, |e| e.1)))
    }

    fn wants(&self, resource_type: &str) -> bool {
        self.types.as_ref().is_none_or(|types| types.iter().any(|t| t == resource_type))
    }
}

/// What `$lastn` reads of an Observation: its code and effective time.
#[derive(Debug, Default, PartialEq)]
struct LastnView {
    /// `system|code` of each coding with a code; the text when there is none.
    keys: Vec<String>,
    /// Upper end of `effective[x]` in microseconds (the value `_sort=-date` orders by).
    effective: Option<i64>,
}

/// The parts of an Observation `$lastn` reads; serde skips the rest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObservationParts {
    #[serde(default)]
    code: Option<CodeableConcept>,
    #[serde(default)]
    effective_date_time: Option<String>,
    #[serde(default)]
    effective_instant: Option<String>,
    #[serde(default)]
    effective_period: Option<Period>,
}

#[derive(Deserialize)]
struct CodeableConcept {
    #[serde(default)]
    coding: Vec<Coding>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Coding {
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct Period {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

impl LastnView {
    fn of(stored: &StoredResource) -> Result<LastnView, Error> {
        let text = stored.body.as_deref().unwrap_or("{}");
        let parts: ObservationParts = serde_json::from_str(text)
            .map_err(|_| Error::new(ErrorKind::Internal, "a stored Observation could not be read"))?;
        let mut keys: Vec<String> = Vec::new();
        if let Some(code) = &parts.code {
            for coding in &code.coding {
                if let Some(c) = coding.code.as_deref() {
                    keys.push(format!("{}|{c}", coding.system.as_deref().unwrap_or("")));
                }
            }
            // Text-only codes group by their exact text (observation-operation-lastn.html).
            if keys.is_empty()
                && let Some(text) = &code.text
            {
                keys.push(format!("#text:{text}"));
            }
        }
        let high = |text: &str| fhir::search::ranges::date_range(text).map(|(_, high)| high);
        let effective = match (&parts.effective_date_time, &parts.effective_instant, &parts.effective_period) {
            (Some(t), _, _) | (None, Some(t), _) => high(t),
            // An ongoing period (no end) is as recent as can be, as in the index.
            (None, None, Some(p)) => match (&p.end, &p.start) {
                (Some(end), _) => high(end),
                (None, Some(_)) => Some(i64::MAX),
                (None, None) => None,
            },
            (None, None, None) => None,
        };
        Ok(LastnView { keys, effective })
    }
}

/// Groups observations (newest first) by code, transitively, and keeps the first `max`
/// of each group plus those tied with the last kept. Groups come in the order of their
/// newest member.
fn select_lastn(observations: Vec<(StoredResource, LastnView)>, max: usize) -> Vec<StoredResource> {
    // Union-find over code keys: observations sharing any key share a group.
    let mut key_ids: HashMap<&str, usize> = HashMap::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    // Each observation's first node: a key's node, or its own when it has no key.
    let mut anchors = Vec::with_capacity(observations.len());
    for (_, view) in &observations {
        let mut anchor = None;
        for key in &view.keys {
            let node = *key_ids.entry(key.as_str()).or_insert_with(|| {
                parent.push(parent.len());
                parent.len() - 1
            });
            match anchor {
                None => anchor = Some(node),
                Some(a) => {
                    let (ra, rn) = (find(&mut parent, a), find(&mut parent, node));
                    if ra != rn {
                        parent[rn] = ra;
                    }
                }
            }
        }
        anchors.push(anchor.unwrap_or_else(|| {
            parent.push(parent.len());
            parent.len() - 1
        }));
    }
    // Group members in arrival order (newest first), groups by first arrival.
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (index, anchor) in anchors.iter().enumerate() {
        let root = find(&mut parent, *anchor);
        let group = *group_of_root.entry(root).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(index);
    }
    let mut keep = vec![false; observations.len()];
    for members in &groups {
        let mut last_kept: Option<Option<i64>> = None;
        for (rank, &index) in members.iter().enumerate() {
            let effective = observations[index].1.effective;
            // A tie needs a time on both sides: two undated observations are not tied.
            let tied = last_kept.is_some_and(|last| last.is_some() && last == effective);
            if rank < max || tied {
                keep[index] = true;
                last_kept = Some(effective);
            } else {
                break;
            }
        }
    }
    let mut slots: Vec<Option<StoredResource>> = observations.into_iter().map(|(stored, _)| Some(stored)).collect();
    groups
        .iter()
        .flatten()
        .filter(|&&index| keep[index])
        .filter_map(|&index| slots.get_mut(index).and_then(Option::take))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::Method;
    use fhir::instant::Instant;
    use std::sync::Arc;

    fn obs(id: &str, codes: &[&str], effective: Option<i64>) -> (StoredResource, LastnView) {
        let stored = StoredResource {
            resource_type: "Observation".into(),
            id: id.into(),
            version_id: 1,
            last_updated: Instant(0),
            method: Method::Post,
            body: Some(Arc::from("{}")),
        };
        (stored, LastnView { keys: codes.iter().map(|c| c.to_string()).collect(), effective })
    }

    fn ids(list: &[StoredResource]) -> Vec<&str> {
        list.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn groups_transitively_like_the_spec_table() {
        // Spec examples: a|b|c → 3 groups; a|b|a,c → 2; a|b|a,b → 1.
        let three = select_lastn(vec![obs("1", &["a"], Some(3)), obs("2", &["b"], Some(2)), obs("3", &["c"], Some(1))], 1);
        assert_eq!(ids(&three), ["1", "2", "3"]);
        let two = select_lastn(vec![obs("1", &["a"], Some(3)), obs("2", &["b"], Some(2)), obs("3", &["a", "c"], Some(1))], 1);
        assert_eq!(ids(&two), ["1", "2"]);
        let one = select_lastn(vec![obs("1", &["a"], Some(3)), obs("2", &["b"], Some(2)), obs("3", &["a", "b"], Some(1))], 1);
        assert_eq!(ids(&one), ["1"]);
    }

    #[test]
    fn keeps_ties_and_orders_groups_by_newest() {
        let list = vec![
            obs("b1", &["b"], Some(9)),
            obs("a1", &["a"], Some(8)),
            obs("a2", &["a"], Some(7)),
            obs("b2", &["b"], Some(6)),
            obs("a3", &["a"], Some(7)),
            obs("a4", &["a"], Some(1)),
            obs("x", &[], None),
            obs("y", &[], None),
        ];
        assert_eq!(ids(&select_lastn(list, 2)), ["b1", "b2", "a1", "a2", "a3", "x", "y"]);
    }

    #[test]
    fn reads_code_and_effective_time() {
        let stored = |body: &str| StoredResource {
            resource_type: "Observation".into(),
            id: "1".into(),
            version_id: 1,
            last_updated: Instant(0),
            method: Method::Post,
            body: Some(Arc::from(body)),
        };
        let view = LastnView::of(&stored(
            r#"{"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"1-8"},{"display":"x"}],"text":"T"},"valueQuantity":{"value":1.50},"effectiveDateTime":"2024-03-01"}"#,
        ))
        .unwrap();
        assert_eq!(view.keys, ["http://loinc.org|1-8"]);
        assert_eq!(view.effective, fhir::search::ranges::date_range("2024-03-01").map(|r| r.1));
        let text_only = LastnView::of(&stored(r#"{"code":{"text":"Pulse"},"effectivePeriod":{"start":"2024"}}"#)).unwrap();
        assert_eq!(text_only, LastnView { keys: vec!["#text:Pulse".into()], effective: Some(i64::MAX) });
    }
}
