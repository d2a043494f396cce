//! The one search-to-SQL builder shared by SQLite and PostgreSQL, with the
//! small dialect layer where the engines differ (placeholders, substring
//! test). It also builds the history queries and names the index tables.
//!
//! Every [`Match`] becomes a predicate on the current-resource row `r`
//! (`r.rid IN (SELECT rid FROM idx_... WHERE ...)`), so conditions compose:
//! OR within a [`fhir::search::query::Filter`], AND across filters
//! (<http://hl7.org/fhir/R4/search.html#combining>). Values are always bound
//! as parameters; only table names, column names and integer constants of our
//! own are written into the SQL text.

use domain::store::{HistoryQuery, HistoryScope};
use fhir::search::IndexValue;
use fhir::search::query::{
    Condition, ContainedMode, ContainedType, Filter, Match, Prefix, SearchQuery, SortKey, StringMode, TokenSystem, UriMode,
};
use std::collections::HashMap;
use std::fmt::Write as _;

/// The SQL engine a statement is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Numbered placeholder: SQLite accepts `?N`, PostgreSQL `$N`. Both allow
    /// one number to appear several times.
    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// `haystack` contains `needle` as a substring. Used instead of LIKE so no
    /// wildcard escaping is needed and the test is case-sensitive on both
    /// engines (SQLite's LIKE folds ASCII case).
    fn contains(self, haystack: &str, needle: &str) -> String {
        format!("{} > 0", self.position(haystack, needle))
    }

    /// The 1-based position of `needle` in `haystack`, 0 when absent.
    fn position(self, haystack: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({haystack}, {needle})"),
            Dialect::Postgres => format!("strpos({haystack}, {needle})"),
        }
    }
}

// ---------------------------------------------------------------------------
// Contained resources (search.html#contained)
//
// Each resource a version contains has a `resource` row of its own, written
// and removed with its container's current version: type `#<type>`
// ([`contained_type_key`]), id `<container type>/<container id>#<id>`
// ([`contained_row_id`]), the container's version and last update, `deleted`
// = [`CONTAINED`], and `container` = the container's rid (migration 0011);
// the container's own row has `container` = 0 while it has such rows. It
// has no `resource_version` rows. Its index rows are those of any resource,
// under parameter ids interned for the `#<type>` key. So every statement
// about stand-alone resources (`deleted = 0`, a real type, parameter ids of
// real types, versions) leaves them out, and a `_contained` search is the
// ordinary builder over the `#<type>` rows.

/// Every index entry `commit` writes, with the type key its parameter ids are
/// interned under: the resource's type, or a contained resource's
/// [`contained_type_key`].
pub(crate) fn typed_index_entries(
    commit: &domain::store::Commit,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, &fhir::search::IndexEntry)> {
    use std::borrow::Cow;
    fn of<'a>(
        resource_type: &'a str,
        index: &'a [fhir::search::IndexEntry],
        contained: &'a [domain::store::ContainedIndex],
    ) -> impl Iterator<Item = (Cow<'a, str>, &'a fhir::search::IndexEntry)> {
        index.iter().map(move |e| (Cow::Borrowed(resource_type), e)).chain(contained.iter().flat_map(|c| {
            let key = contained_type_key(&c.resource_type);
            c.index.iter().map(move |e| (Cow::Owned(key.clone()), e))
        }))
    }
    let writes = commit.writes.iter().flat_map(|w| of(&w.resource_type, &w.index, &w.contained));
    let reindex = commit.reindex.iter().flat_map(|r| of(&r.resource_type, &r.index, &r.contained));
    writes.chain(reindex)
}

/// `resource.container` of a resource whose current version contains
/// resources ([`CONTAINING`], so that a write knows whether there are rows
/// to remove without looking), or NULL.
pub(crate) fn containing_marker(contains: bool) -> Option<i64> {
    contains.then_some(CONTAINING)
}

/// Whether a stand-alone resource's `resource.container` says its current
/// version has contained rows.
pub(crate) fn is_containing(container: Option<i64>) -> bool {
    container == Some(CONTAINING)
}

/// `resource.container` of a container's own row: no rid is 0.
const CONTAINING: i64 = 0;

/// `resource.deleted` of a contained resource's row (0: current, 1: deleted).
pub(crate) const CONTAINED: i64 = 2;

/// The type key of contained resources of `resource_type` (`#Medication`):
/// their rows' `type` and the type their parameter ids are interned under.
pub(crate) fn contained_type_key(resource_type: &str) -> String {
    format!("#{resource_type}")
}

/// The `resource.id` of a contained resource's row: unique, and its part
/// after the first `/` is the id a contained match is answered under
/// (`domain::store::contained_match_id`).
pub(crate) fn contained_row_id(container_type: &str, container_id: &str, id: &str) -> String {
    format!("{container_type}/{container_id}#{id}")
}

/// A bound parameter value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    Int(i64),
    Real(f64),
    Text(String),
}

/// A statement and its parameters, numbered from 1 in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<SqlValue>,
}

/// Search parameter types, one index table each; the number is stored in
/// `search_param.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    String = 1,
    Token = 2,
    Reference = 3,
    Date = 4,
    Number = 5,
    Quantity = 6,
    Uri = 7,
    Composite = 8,
}

impl Kind {
    pub(crate) const ALL: [Kind; 8] = [
        Kind::String,
        Kind::Token,
        Kind::Reference,
        Kind::Date,
        Kind::Number,
        Kind::Quantity,
        Kind::Uri,
        Kind::Composite,
    ];

    pub(crate) fn code(self) -> i64 {
        self as i64
    }

    pub(crate) fn from_code(code: i64) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    pub(crate) fn of(value: &IndexValue) -> Kind {
        match value {
            IndexValue::String { .. } => Kind::String,
            IndexValue::Token { .. } => Kind::Token,
            IndexValue::Reference { .. } => Kind::Reference,
            IndexValue::Date { .. } => Kind::Date,
            IndexValue::Number { .. } => Kind::Number,
            IndexValue::Quantity { .. } => Kind::Quantity,
            IndexValue::Uri { .. } => Kind::Uri,
            IndexValue::Composite(_) => Kind::Composite,
        }
    }

    pub(crate) fn table(self) -> &'static str {
        match self {
            Kind::String => "idx_string",
            Kind::Token => "idx_token",
            Kind::Reference => "idx_reference",
            Kind::Date => "idx_date",
            Kind::Number => "idx_number",
            Kind::Quantity => "idx_quantity",
            Kind::Uri => "idx_uri",
            Kind::Composite => "idx_composite",
        }
    }

    /// Columns holding the lowest and highest sortable value of a row
    /// (<http://hl7.org/fhir/R4/search.html#sort>: ascending sorts by the
    /// lowest value, descending by the highest).
    fn sort_columns(self) -> (&'static str, &'static str) {
        match self {
            Kind::String => ("normalized", "normalized"),
            Kind::Token => ("code", "code"),
            Kind::Reference => ("url", "url"),
            Kind::Date | Kind::Number | Kind::Quantity => ("low", "high"),
            Kind::Uri => ("value", "value"),
            // Composite parameters cannot be sorted by (the parser refuses).
            Kind::Composite => ("c0", "c0"),
        }
    }
}

/// The resolved types of the parameters a query sorts by (a code may have
/// several types across resource types). Unknown codes sort as all-missing.
pub(crate) type SortKinds = HashMap<String, Vec<Kind>>;

/// Interned ids a store already knows (parameter codes per kind, code
/// systems). A statement carries them as bound values instead of
/// `(SELECT pid FROM search_param ...)` subqueries, so that PostgreSQL plans
/// with the real value (a subquery's result is unknown at planning time, and
/// its guess of a few rows made it start from a code with 25,000 matches
/// rather than from one patient's references). Missing entries fall back to
/// the subquery, so a stale map is never wrong, only slower to plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// Interned parameter ids by (resource type, code, kind).
    pub(crate) params: HashMap<(String, String, Kind), i64>,
    pub(crate) systems: HashMap<String, i64>,
}

/// The sort parameters whose index type must be looked up (in
/// `search_param`) before [`search`] can write the ORDER BY.
pub(crate) fn sort_params_to_resolve(query: &SearchQuery) -> Vec<&str> {
    query.sort.iter().map(|k| k.param.as_str()).filter(|p| !is_special_sort(p)).collect()
}

/// The statement that lists the kinds of one parameter code.
pub(crate) fn kinds_sql(dialect: Dialect) -> String {
    format!("SELECT DISTINCT kind FROM search_param WHERE code = {}", dialect.placeholder(1))
}

fn is_special_sort(param: &str) -> bool {
    matches!(param, "_id" | "_lastUpdated")
}

/// Columns every resource-returning statement selects, in this order:
/// type, id, version, last_updated, method, body.
const RESOURCE_COLUMNS: &str = "r.type, r.id, v.version, v.last_updated, v.method, v.body";

/// The statements of one search.
pub(crate) struct SearchSql {
    /// The requested page, in the query's order.
    pub(crate) page: Sql,
    /// The number of all matches (for `_total`).
    pub(crate) count: Sql,
}

/// Builds the page and count statements of `query`.
pub(crate) fn search(dialect: Dialect, query: &SearchQuery, sort_kinds: &SortKinds, known: &std::sync::Arc<Known>) -> SearchSql {
    if query.contained != ContainedMode::No {
        return SearchSql {
            page: contained_search(dialect, query, sort_kinds, known, Selected::Page),
            count: contained_search(dialect, query, sort_kinds, known, Selected::Count),
        };
    }
    let mut page = Builder::new(dialect);
    page.known = std::sync::Arc::clone(known);
    page.push("SELECT ");
    page.push(RESOURCE_COLUMNS);
    let ordered = patient_token_order(query, sort_kinds);
    if ordered.is_some() {
        page.patient_tokens_joined = true;
        page.push(" FROM idx_patient_token c JOIN resource r ON r.rid = c.rid");
    } else {
        page.push(" FROM resource r");
    }
    page.push(" JOIN resource_version v ON v.rid = r.rid AND v.version = r.version");
    page.where_clause(query);
    page.order_by(&query.sort, sort_kinds);
    let limit = page.bind(SqlValue::Int(to_i64(query.count)));
    let offset = page.bind(SqlValue::Int(to_i64(query.offset)));
    let _ = write!(page.text, " LIMIT {limit} OFFSET {offset}");

    let mut count = Builder::new(dialect);
    count.known = std::sync::Arc::clone(known);
    if !count.count_from_index(query) {
        count.push("SELECT COUNT(*) FROM resource r");
        count.where_clause(query);
    }

    SearchSql { page: page.finish(), count: count.finish() }
}

/// The (type, id, rid) of the matches of `query` in its sort order, paged by
/// its count and offset, without the bodies: the list stable paging keeps
/// (the row id lets a store read the first page's bodies without the
/// (type, id) index).
pub(crate) fn search_keys(dialect: Dialect, query: &SearchQuery, sort_kinds: &SortKinds, known: &std::sync::Arc<Known>) -> Sql {
    if query.contained != ContainedMode::No {
        return contained_search(dialect, query, sort_kinds, known, Selected::Keys);
    }
    let mut b = Builder::new(dialect);
    b.known = std::sync::Arc::clone(known);
    if b.patient_token_keys(query, sort_kinds) {
        return b.finish();
    }
    if patient_token_order(query, sort_kinds).is_some() {
        b.patient_tokens_joined = true;
        b.push("SELECT r.type, r.id, r.rid FROM idx_patient_token c JOIN resource r ON r.rid = c.rid");
    } else {
        b.push("SELECT r.type, r.id, r.rid FROM resource r");
    }
    b.where_clause(query);
    b.order_by(&query.sort, sort_kinds);
    let limit = b.bind(SqlValue::Int(to_i64(query.count)));
    let offset = b.bind(SqlValue::Int(to_i64(query.offset)));
    let _ = write!(b.text, " LIMIT {limit} OFFSET {offset}");
    b.finish()
}

/// What a statement of a `_contained` search selects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Selected {
    /// The page's rows ([`RESOURCE_COLUMNS`]).
    Page,
    /// The page's (type, id) keys.
    Keys,
    /// The number of matches.
    Count,
}

/// A statement of a search with `_contained=true|both` (see
/// `domain::Store::search`). The matching rows `r` are contained resources
/// of the type (`#<type>` rows) and with `both` the type's current
/// resources, each tested alone by the ordinary conditions; `k` is the
/// resource a match is answered with (its container, or itself), whose
/// current version is read. With `_containedType=container` the matches are
/// the distinct `k`; with `contained` every `r`, under the id after the first
/// `/` of its row id (`123#med1`; a stand-alone resource's id has no `/`).
fn contained_search(
    dialect: Dialect,
    query: &SearchQuery,
    sort_kinds: &SortKinds,
    known: &std::sync::Arc<Known>,
    selected: Selected,
) -> Sql {
    let mut b = Builder::new(dialect);
    b.known = std::sync::Arc::clone(known);
    let owner = if query.contained == ContainedMode::Only {
        "r.container".to_owned()
    } else {
        format!("CASE WHEN r.deleted = {CONTAINED} THEN r.container ELSE r.rid END")
    };
    let by_container = query.contained_type == ContainedType::Container;
    // Bound only where used: PostgreSQL cannot type an unused parameter.
    let match_id = if by_container || selected == Selected::Count {
        String::new()
    } else {
        let slash = b.bind_text("/");
        format!("substr(r.id, {} + 1)", dialect.position("r.id", &slash))
    };
    match (by_container, selected) {
        (true, Selected::Count) => {
            let _ = write!(b.text, "SELECT COUNT(DISTINCT {owner}) FROM resource r");
            b.contained_where(query);
            return b.finish();
        }
        (false, Selected::Count) => {
            b.push("SELECT COUNT(*) FROM resource r");
            b.contained_where(query);
            return b.finish();
        }
        (true, Selected::Page) => {
            b.push("SELECT k.type, k.id, v.version, v.last_updated, v.method, v.body FROM resource k \
                    JOIN resource_version v ON v.rid = k.rid AND v.version = k.version");
        }
        (true, Selected::Keys) => b.push("SELECT k.type, k.id, k.rid FROM resource k"),
        (false, Selected::Page) => {
            let _ = write!(
                b.text,
                "SELECT k.type, {match_id}, v.version, v.last_updated, v.method, v.body FROM resource r \
                 JOIN resource k ON k.rid = {owner} JOIN resource_version v ON v.rid = k.rid AND v.version = k.version"
            );
        }
        (false, Selected::Keys) => {
            // The rid is the container's (`search_keys_reading` is not used
            // for contained matches: their keys name no stored resource).
            let _ = write!(b.text, "SELECT k.type, {match_id}, k.rid FROM resource r JOIN resource k ON k.rid = {owner}");
        }
    }
    let mut keys: Vec<String> = Vec::new();
    if by_container {
        let _ = write!(b.text, " WHERE k.rid IN (SELECT {owner} FROM resource r");
        b.contained_where(query);
        b.push(")");
        // Containers of any type: only `_id` and `_lastUpdated` order them.
        for key in &query.sort {
            let direction = if key.descending { "DESC" } else { "ASC" };
            match key.param.as_str() {
                "_id" => keys.push(format!("k.id {direction}")),
                "_lastUpdated" => keys.push(format!("k.last_updated {direction}")),
                _ => {}
            }
        }
        keys.extend(["k.last_updated DESC".to_owned(), "k.id ASC".to_owned(), "k.type ASC".to_owned()]);
    } else {
        b.contained_where(query);
        for key in &query.sort {
            let direction = if key.descending { "DESC" } else { "ASC" };
            match key.param.as_str() {
                "_id" => keys.push(format!("{match_id} {direction}")),
                "_lastUpdated" => keys.push(format!("r.last_updated {direction}")),
                param => {
                    let Some(kinds) = sort_kinds.get(param) else { continue };
                    for kind in kinds {
                        let (low, high) = kind.sort_columns();
                        let aggregate = if key.descending { format!("MAX({high})") } else { format!("MIN({low})") };
                        let pid = b.pid_clause(param, *kind);
                        keys.push(format!(
                            "(SELECT {aggregate} FROM {} s WHERE s.rid = r.rid AND s.{pid}) {direction} NULLS LAST",
                            kind.table()
                        ));
                    }
                }
            }
        }
        keys.extend(["r.last_updated DESC".to_owned(), format!("{match_id} ASC"), "k.type ASC".to_owned()]);
    }
    b.push(" ORDER BY ");
    b.push(&keys.join(", "));
    let limit = b.bind(SqlValue::Int(to_i64(query.count)));
    let offset = b.bind(SqlValue::Int(to_i64(query.offset)));
    let _ = write!(b.text, " LIMIT {limit} OFFSET {offset}");
    b.finish()
}

/// The ids of every current resource matching `query`, ignoring sort and
/// paging: what [`domain::store::Check::Matches`] compares.
pub(crate) fn matching_ids(dialect: Dialect, query: &SearchQuery) -> Sql {
    let mut b = Builder::new(dialect);
    b.push("SELECT r.id FROM resource r");
    b.where_clause(query);
    b.finish()
}

/// The page and count statements of a history query, newest first by the
/// global sequence (<http://hl7.org/fhir/R4/http.html#history>).
pub(crate) fn history(dialect: Dialect, scope: &HistoryScope, query: &HistoryQuery) -> SearchSql {
    let mut page = Builder::new(dialect);
    page.push("SELECT ");
    page.push(RESOURCE_COLUMNS);
    page.push(" FROM resource_version v JOIN resource r ON r.rid = v.rid");
    page.history_where(scope, query);
    let limit = page.bind(SqlValue::Int(to_i64(query.count)));
    let offset = page.bind(SqlValue::Int(to_i64(query.offset)));
    let _ = write!(page.text, " ORDER BY v.seq DESC LIMIT {limit} OFFSET {offset}");

    let mut count = Builder::new(dialect);
    count.push("SELECT COUNT(*) FROM resource_version v");
    count.history_where(scope, query);

    SearchSql { page: page.finish(), count: count.finish() }
}

/// A step of [`domain::Store::scan`]: current resources in (type, id) order
/// after a key, served by the `resource_type_id` index.
pub(crate) fn scan(dialect: Dialect, resource_type: Option<&str>, after: Option<(&str, &str)>, limit: usize) -> Sql {
    let mut b = Builder::new(dialect);
    b.push("SELECT ");
    b.push(RESOURCE_COLUMNS);
    b.push(" FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version WHERE r.deleted = 0");
    if let Some(resource_type) = resource_type {
        let p = b.bind_text(resource_type);
        let _ = write!(b.text, " AND r.type = {p}");
    }
    if let Some((after_type, after_id)) = after {
        let t = b.bind_text(after_type);
        let i = b.bind_text(after_id);
        let _ = write!(b.text, " AND (r.type, r.id) > ({t}, {i})");
    }
    let l = b.bind(SqlValue::Int(to_i64(limit)));
    let _ = write!(b.text, " ORDER BY r.type, r.id LIMIT {l}");
    b.finish()
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The bounds of a range search value, typed as the column is.
#[derive(Clone, Copy)]
enum Bounds {
    Int(i64, i64),
    Real(f64, f64),
}

struct Builder {
    dialect: Dialect,
    text: String,
    params: Vec<SqlValue>,
    /// Table aliases handed out so far, for the subqueries of chains.
    aliases: usize,
    /// Write index predicates on `r` as correlated `EXISTS` probes rather
    /// than row lists (see [`Builder::where_clause`]).
    probe: bool,
    /// The lookup being written is one part of a `UNION ALL` list of row
    /// ids (`any_of` on PostgreSQL): [`Builder::index_predicate`] writes its
    /// `SELECT rid ...` alone.
    union_member: bool,
    /// The statement searches by `_id`: its few rows are sorted after they
    /// are found (see [`Builder::order_by`]).
    by_id: bool,
    known: std::sync::Arc<Known>,
    /// The resource types the conditions being written are about (the
    /// query's type; a chain's targets; a `_has` source), `None` for any:
    /// parameter ids are interned per resource type.
    scope: Option<Vec<String>>,
    /// The statement reads `idx_patient_token c` joined to `r` (the page of a
    /// patient's coded records in date order, see [`patient_token_order`]).
    patient_tokens_joined: bool,
    /// The next index predicate is written as the count of its rows
    /// (see [`Builder::count_from_index`]).
    count_rows: bool,
    /// The conditions being written are about the rows of a `_contained`
    /// search, contained resources among them (see [`Builder::contained_where`]).
    in_contained: bool,
}

impl Builder {
    fn new(dialect: Dialect) -> Builder {
        Builder { dialect, text: String::with_capacity(256), params: Vec::new(), aliases: 0, probe: false, union_member: false, by_id: false, known: std::sync::Arc::default(), scope: None, patient_tokens_joined: false, count_rows: false, in_contained: false }
    }

    fn finish(self) -> Sql {
        Sql { text: self.text, params: self.params }
    }

    fn push(&mut self, sql: &str) {
        self.text.push_str(sql);
    }

    /// Adds a parameter and returns its placeholder.
    fn bind(&mut self, value: SqlValue) -> String {
        self.params.push(value);
        self.dialect.placeholder(self.params.len())
    }

    fn bind_text(&mut self, value: &str) -> String {
        self.bind(SqlValue::Text(value.to_owned()))
    }

    fn history_where(&mut self, scope: &HistoryScope, query: &HistoryQuery) {
        let mut clauses: Vec<String> = Vec::new();
        match scope {
            HistoryScope::System => {}
            HistoryScope::Type(resource_type) => {
                let p = self.bind_text(resource_type);
                clauses.push(format!("v.type = {p}"));
            }
            HistoryScope::Instance { resource_type, id } => {
                let t = self.bind_text(resource_type);
                let i = self.bind_text(id);
                clauses.push(format!("v.rid = (SELECT rid FROM resource WHERE type = {t} AND id = {i})"));
            }
        }
        if let Some(since) = query.since {
            let p = self.bind(SqlValue::Int(since.micros()));
            clauses.push(format!("v.last_updated >= {p}"));
        }
        if let Some(not_after) = query.not_after {
            let p = self.bind(SqlValue::Int(not_after.micros()));
            clauses.push(format!("v.last_updated <= {p}"));
        }
        if !clauses.is_empty() {
            self.push(" WHERE ");
            self.push(&clauses.join(" AND "));
        }
    }

    /// ` WHERE` the row `r` is a match of a `_contained` search before its
    /// filters (contained resources of the type, and with `both` its current
    /// resources), and every filter holds for it.
    fn contained_where(&mut self, query: &SearchQuery) {
        let own = query.resource_type.clone();
        let key = own.as_deref().map(contained_type_key);
        // As in [`Builder::where_clause`]: on SQLite a filter that lists its
        // rows starts the plan, not the type's rows.
        let column = if self.dialect == Dialect::Sqlite && starts_from_filter(query) { "+r.type" } else { "r.type" };
        let contained_rows = match &key {
            Some(key) => {
                let k = self.bind_text(key);
                format!("{column} = {k} AND r.deleted = {CONTAINED}")
            }
            None => format!("r.deleted = {CONTAINED}"),
        };
        match (query.contained, &own) {
            (ContainedMode::Both, Some(own)) => {
                let t = self.bind_text(own);
                let _ = write!(self.text, " WHERE (({column} = {t} AND r.deleted = 0) OR ({contained_rows}))");
            }
            (ContainedMode::Both, None) => {
                let _ = write!(self.text, " WHERE r.deleted IN (0, {CONTAINED})");
            }
            _ => {
                let _ = write!(self.text, " WHERE {contained_rows}");
            }
        }
        self.scope = match (query.contained, own, key) {
            (ContainedMode::Both, Some(own), Some(key)) => Some(vec![own, key]),
            (_, _, Some(key)) => Some(vec![key]),
            _ => None,
        };
        self.in_contained = true;
        for filter in &query.filters {
            self.push(" AND ");
            self.filter("r", filter);
        }
        self.in_contained = false;
    }

    fn where_clause(&mut self, query: &SearchQuery) {
        self.scope = query.resource_type.clone().map(|t| vec![t]);
        self.push(" WHERE r.deleted = 0");
        if let Some(resource_type) = &query.resource_type {
            let p = self.bind_text(resource_type);
            // Without table statistics SQLite serves any `type = ?` test from
            // the (type, last_updated) index and walks every resource of the
            // type, probing the filters' row lists for each. When a filter
            // lists its matching rows through an index, the unary `+` keeps
            // the type test off the index, so the plan starts from those rows
            // (plan tests in tests/it/plans.rs).
            let column = if self.dialect == Dialect::Sqlite && starts_from_filter(query) { "+r.type" } else { "r.type" };
            self.by_id = self.dialect == Dialect::Sqlite && searches_by_id(query);
            let _ = write!(self.text, " AND {column} = {p}");
        }
        // SQLite builds the whole row list of every `rid IN (...)` filter
        // before it reads a row: for `patient=X&code=Y` that is every
        // resource with code Y. So on SQLite the most selective-looking
        // filter lists the rows the plan starts from, and the others are
        // probed per row through the index tables' (rid, pid) keys.
        // PostgreSQL plans both forms as the same semi-joins.
        // A patient's records with a code are found in one range of
        // `idx_patient_token`, which then drives the plan on both engines.
        let pair = patient_token_pair(query);
        if let Some(pair) = pair {
            self.push(" AND ");
            self.patient_token_predicate(query, pair);
        }
        let driver = if self.dialect == Dialect::Sqlite && pair.is_none() { driving_filter(query) } else { None };
        if let Some(filter) = driver.and_then(|index| query.filters.get(index)) {
            self.push(" AND ");
            self.filter("r", filter);
        }
        for (i, filter) in query.filters.iter().enumerate() {
            if Some(i) == driver || pair.is_some_and(|(p, t)| i == p || i == t) {
                continue;
            }
            self.push(" AND ");
            self.probe = driver.is_some() || (pair.is_some() && self.dialect == Dialect::Sqlite);
            self.filter("r", filter);
            self.probe = false;
        }
    }

    /// The patient and token conditions of `pair` (see [`patient_token_pair`])
    /// as one lookup in `idx_patient_token`: on the joined `c` when the
    /// statement reads it, else as `r.rid IN (SELECT ...)`.
    fn patient_token_predicate(&mut self, query: &SearchQuery, (patient_filter, token_filter): (usize, usize)) {
        let patient = &query.filters[patient_filter].any_of[0];
        let token = &query.filters[token_filter].any_of[0];
        let Match::Token { system, code: Some(code), .. } = &token.matcher else {
            self.push("1 = 0");
            return;
        };
        let c = if self.patient_tokens_joined { "c".to_owned() } else { self.alias("c") };
        let pid = self.pid_clause(&token.param, Kind::Token);
        let code = self.bind_text(code);
        let mut clauses = vec![format!("{c}.{pid}"), format!("{c}.code = {code}")];
        match system {
            TokenSystem::Is(system) => {
                let sid = self.system_clause(system);
                clauses.push(format!("{c}.{sid}"));
            }
            TokenSystem::NoSystem => clauses.push(format!("{c}.sid = 0")),
            TokenSystem::Any => {}
        }
        let via = patient_condition_via(patient).unwrap_or(0);
        clauses.push(format!("({c}.via & {via}) <> 0"));
        match &patient.matcher {
            Match::Reference { id, .. } => {
                let p = self.bind_text(id);
                clauses.push(format!("{c}.patient = {p}"));
            }
            Match::Chain { inner, .. } => {
                // Stand-alone Patients by id, and Patients the record contains
                // by their row id (see [`patient_tokens`]).
                let mut chained = format!("{c}.patient IN (");
                for (n, (deleted, key)) in [(0, "Patient".to_owned()), (CONTAINED, contained_type_key("Patient"))].into_iter().enumerate() {
                    let target = self.alias("t");
                    let outer = self.scope.replace(vec![key.clone()]);
                    if n > 0 {
                        chained.push_str(" UNION ALL ");
                    }
                    let _ = write!(chained, "SELECT {target}.id FROM resource {target} WHERE {target}.deleted = {deleted} AND ");
                    if !inner.iter().all(|c| is_index_lookup(&c.matcher)) {
                        let t = self.bind_text(&key);
                        let _ = write!(chained, "{target}.type = {t} AND ");
                    }
                    self.in_contained = deleted == CONTAINED;
                    let start = self.text.len();
                    self.any_of(&target, inner);
                    let written = self.text.split_off(start);
                    self.in_contained = false;
                    chained.push_str(&written);
                    self.scope = outer;
                }
                chained.push(')');
                clauses.push(chained);
            }
            _ => clauses.push("1 = 0".to_owned()),
        }
        if self.patient_tokens_joined {
            self.push(&clauses.join(" AND "));
        } else {
            let _ = write!(self.text, "r.rid IN (SELECT {c}.rid FROM idx_patient_token {c} WHERE {})", clauses.join(" AND "));
        }
    }

    /// The ordered keys of `query` from `idx_patient_token` alone, when its
    /// only filters are a patient and a code (see [`patient_token_pair`]) and
    /// it is in the default order or by `date`: the rows carry the type (by
    /// their parameter id), the id, the last update and the date range, and
    /// exist only for current resources, so no `resource` row is read. Writes
    /// nothing and answers false otherwise.
    fn patient_token_keys(&mut self, query: &SearchQuery, sort_kinds: &SortKinds) -> bool {
        let Some(pair) = patient_token_pair(query) else { return false };
        let Some(resource_type) = query.resource_type.clone() else { return false };
        if query.filters.len() != 2 {
            return false;
        }
        let date_kind = || sort_kinds.get("date").is_some_and(|k| k.as_slice() == [Kind::Date]);
        let first_key = match query.sort.as_slice() {
            [] => None,
            [key] if key.param == "date" && date_kind() => Some(match (key.descending, self.dialect) {
                (true, Dialect::Sqlite) => "c.date_high DESC",
                (true, Dialect::Postgres) => "c.date_high DESC NULLS LAST",
                (false, _) => "c.date_low ASC NULLS LAST",
            }),
            _ => return false,
        };
        let t = self.bind_text(&resource_type);
        // A record of two matching patients (a chain), or with the code under
        // two systems, has two rows with the same id, update and dates.
        let _ = write!(
            self.text,
            "SELECT DISTINCT CAST({t} AS TEXT), c.id, c.rid, c.last_updated, c.date_high, c.date_low FROM idx_patient_token c WHERE "
        );
        self.scope = Some(vec![resource_type]);
        self.patient_tokens_joined = true;
        self.patient_token_predicate(query, pair);
        self.push(" ORDER BY ");
        if let Some(first) = first_key {
            self.push(first);
            self.push(", ");
        }
        self.push("c.last_updated DESC, c.id ASC");
        let limit = self.bind(SqlValue::Int(to_i64(query.count)));
        let offset = self.bind(SqlValue::Int(to_i64(query.offset)));
        let _ = write!(self.text, " LIMIT {limit} OFFSET {offset}");
        true
    }

    /// `SELECT COUNT(DISTINCT rid) FROM <index> WHERE ...` when `query` is one
    /// plain index lookup on its type: parameter ids are interned per type and
    /// a deleted or replaced version keeps no index rows, so the lookup's rows
    /// are the matches and no `resource` row needs reading. Writes nothing
    /// and answers false otherwise.
    fn count_from_index(&mut self, query: &SearchQuery) -> bool {
        let (Some(resource_type), [filter]) = (&query.resource_type, query.filters.as_slice()) else { return false };
        let [condition] = filter.any_of.as_slice() else { return false };
        if !plain_lookup(&condition.matcher) {
            return false;
        }
        self.scope = Some(vec![resource_type.clone()]);
        self.count_rows = true;
        self.condition("r", condition);
        self.count_rows = false;
        true
    }

    /// Any condition of a filter may hold; an empty filter matches nothing.
    /// `alias` names the `resource` row the conditions are about.
    fn filter(&mut self, alias: &str, filter: &Filter) {
        self.any_of(alias, &filter.any_of);
    }

    /// Any of `conditions` holds for the `resource` row `alias`; none: false.
    fn any_of(&mut self, alias: &str, conditions: &[Condition]) {
        if conditions.is_empty() {
            self.push("1 = 0");
            return;
        }
        // PostgreSQL plans `rid IN (a) OR rid IN (b)` as a scan of every
        // row of the type testing two hashed lists (130 ms for a patient's
        // Observations by `subject` or `performer` among 2 M resources);
        // one list of both lookups is read through the indexes.
        if self.dialect == Dialect::Postgres
            && conditions.len() > 1
            && !(self.probe && alias == "r")
            && !self.count_rows
            && conditions.iter().all(|c| plain_lookup(&c.matcher))
        {
            let _ = write!(self.text, "{alias}.rid IN (");
            self.union_member = true;
            for (i, condition) in conditions.iter().enumerate() {
                if i > 0 {
                    self.push(" UNION ALL ");
                }
                self.condition(alias, condition);
            }
            self.union_member = false;
            self.push(")");
            return;
        }
        self.push("(");
        for (i, condition) in conditions.iter().enumerate() {
            if i > 0 {
                self.push(" OR ");
            }
            self.condition(alias, condition);
        }
        self.push(")");
    }

    /// A fresh table alias with `stem`, unique within the statement.
    fn alias(&mut self, stem: &str) -> String {
        self.aliases += 1;
        format!("{stem}{}", self.aliases)
    }

    /// `pid = (the interned id of param code for kind on the scope's type)`,
    /// or `pid IN (...)` for several types or any: NULL or an empty list
    /// (matching no row) when nothing was ever indexed under that code, kind
    /// and type.
    fn pid_clause(&mut self, param: &str, kind: Kind) -> String {
        let scope = self.scope.clone();
        match scope.as_deref() {
            Some([resource_type]) => {
                if let Some(&pid) = self.known.params.get(&(resource_type.clone(), param.to_string(), kind)) {
                    let p = self.bind(SqlValue::Int(pid));
                    return format!("pid = {p}");
                }
                let t = self.bind_text(resource_type);
                let p = self.bind_text(param);
                format!("pid = (SELECT pid FROM search_param WHERE type = {t} AND code = {p} AND kind = {})", kind.code())
            }
            Some(types) => {
                let known: Option<Vec<i64>> =
                    types.iter().map(|t| self.known.params.get(&(t.clone(), param.to_string(), kind)).copied()).collect();
                if let Some(pids) = known {
                    let list: Vec<String> = pids.into_iter().map(|pid| self.bind(SqlValue::Int(pid))).collect();
                    return format!("pid IN ({})", list.join(", "));
                }
                let list: Vec<String> = types.iter().map(|t| self.bind_text(t)).collect();
                let p = self.bind_text(param);
                format!(
                    "pid IN (SELECT pid FROM search_param WHERE type IN ({}) AND code = {p} AND kind = {})",
                    list.join(", "),
                    kind.code()
                )
            }
            None => {
                let p = self.bind_text(param);
                format!("pid IN (SELECT pid FROM search_param WHERE code = {p} AND kind = {})", kind.code())
            }
        }
    }

    fn system_clause(&mut self, system: &str) -> String {
        if let Some(&sid) = self.known.systems.get(system) {
            let p = self.bind(SqlValue::Int(sid));
            return format!("sid = {p}");
        }
        let p = self.bind_text(system);
        format!("sid = (SELECT sid FROM term_system WHERE uri = {p})")
    }

    /// `alias.rid [NOT] IN (SELECT rid FROM table WHERE pid = .. AND clauses)`,
    /// or as a probe, `[NOT] EXISTS (SELECT 1 FROM table x WHERE x.rid = r.rid AND ...)`.
    fn index_predicate(&mut self, alias: &str, kind: Kind, param: &str, negate: bool, clauses: &[String]) {
        let pid = self.pid_clause(param, kind);
        let not = if negate { "NOT " } else { "" };
        let counting = std::mem::take(&mut self.count_rows);
        let bare = self.union_member;
        if counting {
            let _ = write!(self.text, "SELECT COUNT(DISTINCT rid) FROM {} WHERE {pid}", kind.table());
        } else if bare {
            let _ = write!(self.text, "SELECT rid FROM {} WHERE {pid}", kind.table());
        } else if self.probe && alias == "r" {
            let _ = write!(self.text, "{not}EXISTS (SELECT 1 FROM {} x WHERE x.rid = r.rid AND x.{pid}", kind.table());
        } else {
            let _ = write!(self.text, "{alias}.rid {not}IN (SELECT rid FROM {} WHERE {pid}", kind.table());
        }
        for clause in clauses {
            self.push(" AND ");
            self.push(clause);
        }
        if !counting && !bare {
            self.push(")");
        }
    }

    /// The predicate of `condition` on the `resource` row `alias`.
    fn condition(&mut self, alias: &str, condition: &Condition) {
        let param = condition.param.as_str();
        match &condition.matcher {
            Match::Id(id) if self.in_contained => {
                // A contained resource's `_id` is its id in the container,
                // after the `#` of its row id (a resource of its own has none).
                let p = self.bind_text(id);
                let hash = self.bind_text("#");
                let position = self.dialect.position(&format!("{alias}.id"), &hash);
                let _ = write!(self.text, "substr({alias}.id, {position} + 1) = {p}");
            }
            Match::Id(id) => {
                let p = self.bind_text(id);
                let _ = write!(self.text, "{alias}.id = {p}");
            }
            Match::Chain { target_types, inner } => self.chain(alias, param, target_types, inner),
            Match::Has { source_type, inner } => self.has(alias, param, source_type, inner),
            Match::Text { field, phrases } => {
                // http://hl7.org/fhir/R4/search.html#_text, through `idx_text` (fulltext.rs).
                let p = self.bind_text(&crate::fulltext::query_text(self.dialect, phrases));
                let pending = match self.dialect {
                    Dialect::Sqlite => self.bind_text(&crate::fulltext::pending_query(phrases)),
                    Dialect::Postgres => String::new(),
                };
                let predicate = crate::fulltext::predicate(self.dialect, alias, *field, &p, &pending);
                self.push(&predicate);
            }
            Match::LastUpdated { prefix, low, high } => {
                let column = format!("{alias}.last_updated");
                let predicate = self.range_predicate(&column, &column, *prefix, Bounds::Int(*low, *high));
                self.push(&predicate);
            }
            Match::Missing(missing) => {
                // http://hl7.org/fhir/R4/search.html#missing: true means the
                // resource has no value for the parameter, of any type.
                let p = self.bind_text(param);
                let not = if *missing { "NOT " } else { "" };
                let _ = write!(self.text, "{alias}.rid {not}IN (");
                for (i, kind) in Kind::ALL.into_iter().enumerate() {
                    if i > 0 {
                        self.push(" UNION ALL ");
                    }
                    let _ = write!(
                        self.text,
                        "SELECT rid FROM {} WHERE pid IN (SELECT pid FROM search_param WHERE code = {p})",
                        kind.table()
                    );
                }
                self.push(")");
            }
            Match::Token { system, code, negate } => {
                // http://hl7.org/fhir/R4/search.html#token: `code`, `system|code`,
                // `|code`, `system|`; `:not` selects resources with no matching
                // token, including those without any value.
                let mut clauses = Vec::new();
                if let Some(code) = code {
                    let p = self.bind_text(code);
                    clauses.push(format!("code = {p}"));
                }
                match system {
                    TokenSystem::Any => {}
                    TokenSystem::NoSystem => clauses.push("sid IS NULL".to_owned()),
                    TokenSystem::Is(system) => {
                        let clause = self.system_clause(system);
                        clauses.push(clause);
                    }
                }
                self.index_predicate(alias, Kind::Token, param, *negate, &clauses);
            }
            Match::TokenText(text) => {
                // `:text` matches the start of the normalized display, like the
                // default string search.
                let clauses = self.prefix_clauses("text", text);
                self.index_predicate(alias, Kind::Token, param, false, &clauses);
            }
            Match::String { value, mode } => {
                // http://hl7.org/fhir/R4/search.html#string
                let clauses = match mode {
                    StringMode::Prefix => self.prefix_clauses("normalized", value),
                    StringMode::Contains => {
                        let p = self.bind_text(value);
                        vec![self.dialect.contains("normalized", &p)]
                    }
                    StringMode::Exact => {
                        // `normalized` is a function of `exact` (IndexValue::String),
                        // so constraining it too lets the search index serve `:exact`.
                        let n = self.bind_text(&fhir::search::normalize_string(value));
                        let e = self.bind_text(value);
                        vec![format!("normalized = {n}"), format!("exact = {e}")]
                    }
                };
                self.index_predicate(alias, Kind::String, param, false, &clauses);
            }
            Match::Reference { target_type, id } => {
                let p = self.bind_text(id);
                let mut clauses = vec![format!("target_id = {p}")];
                if let Some(target_type) = target_type {
                    let t = self.bind_text(target_type);
                    clauses.push(format!("target_type = {t}"));
                }
                self.index_predicate(alias, Kind::Reference, param, false, &clauses);
            }
            Match::ReferenceUrl(url) => {
                // Rows of absolute and canonical references (no target id) are
                // found through the URL index; a reference that was also split
                // into type and id is found through the target-id index under
                // its logical id.
                let u = self.bind_text(url);
                match logical_id_of(url) {
                    Some(id) => {
                        let i = self.bind_text(id);
                        let clause = format!(
                            "((target_id IS NULL AND url = {u}) OR (target_id = {i} AND url = {u}))"
                        );
                        self.index_predicate(alias, Kind::Reference, param, false, &[clause]);
                    }
                    None => {
                        let clauses = ["target_id IS NULL".to_owned(), format!("url = {u}")];
                        self.index_predicate(alias, Kind::Reference, param, false, &clauses);
                    }
                }
            }
            Match::Uri { value, mode } => {
                // http://hl7.org/fhir/R4/search.html#uri: `:below` matches
                // stored URIs that start with the value, `:above` stored URIs
                // the value starts with.
                let clauses = match mode {
                    UriMode::Exact => {
                        let p = self.bind_text(value);
                        vec![format!("value = {p}")]
                    }
                    UriMode::Below => self.prefix_clauses("value", value),
                    UriMode::Above => {
                        let p = self.bind_text(value);
                        vec![format!("substr(CAST({p} AS TEXT), 1, length(value)) = value")]
                    }
                };
                self.index_predicate(alias, Kind::Uri, param, false, &clauses);
            }
            Match::Date { prefix, low, high } => {
                let predicate = self.range_predicate("low", "high", *prefix, Bounds::Int(*low, *high));
                self.index_predicate(alias, Kind::Date, param, false, &[predicate]);
            }
            Match::Number { prefix, low, high } => {
                let predicate = self.range_predicate("low", "high", *prefix, Bounds::Real(*low, *high));
                self.index_predicate(alias, Kind::Number, param, false, &[predicate]);
            }
            Match::TokenSet { tokens, negate } => {
                let clause = self.token_set_clause(tokens);
                self.index_predicate(alias, Kind::Token, param, *negate, &[clause]);
            }
            // The Service resolves these into TokenSet; unresolved, they match nothing.
            Match::InValueSet { .. } | Match::Subsumption { .. } => self.push("1 = 0"),
            Match::Composite(components) => {
                // http://hl7.org/fhir/R4/search.html#composite: every
                // component holds on one row, that is, on one element.
                let mut clauses = Vec::new();
                for (k, component) in components.iter().enumerate() {
                    self.component_clauses(k, component, &mut clauses);
                }
                self.index_predicate(alias, Kind::Composite, param, false, &clauses);
            }
            Match::Quantity { prefix, low, high, system, code } => {
                let mut clauses = vec![self.range_predicate("low", "high", *prefix, Bounds::Real(*low, *high))];
                if let Some(system) = system {
                    let clause = self.system_clause(system);
                    clauses.push(clause);
                }
                if let Some(code) = code {
                    let p = self.bind_text(code);
                    clauses.push(format!("code = {p}"));
                }
                self.index_predicate(alias, Kind::Quantity, param, false, &clauses);
            }
        }
    }

    /// `alias.rid IN (...)`: the resource has a reference under `param` to a
    /// current resource of one of `target_types` that meets any of `inner`
    /// (<http://hl7.org/fhir/R4/search.html#chaining>).
    ///
    /// The targets are found first, then the reference rows pointing at them
    /// by (pid, target_id, target_type), which `idx_reference_search` serves.
    /// When every inner condition is an index lookup (`rid IN ...`) the
    /// target query names no type, so the engines start from those lookups
    /// rather than from every resource of the type (SQLite, without
    /// statistics, would take the type index); otherwise the type narrows it.
    fn chain(&mut self, alias: &str, param: &str, target_types: &[String], inner: &[Condition]) {
        if target_types.is_empty() {
            self.push("1 = 0");
            return;
        }
        let link = self.alias("l");
        let target = self.alias("t");
        let pid = self.pid_clause(param, Kind::Reference);
        let types = target_types.iter().map(|t| self.bind_text(t)).collect::<Vec<_>>().join(", ");
        let outer = self.scope.replace(target_types.to_vec());
        let outer_contained = std::mem::take(&mut self.in_contained);
        let _ = write!(
            self.text,
            "{alias}.rid IN (SELECT {link}.rid FROM idx_reference {link} WHERE {link}.{pid} \
             AND {link}.target_type IN ({types}) AND ({link}.target_type, {link}.target_id) IN \
             (SELECT {target}.type, {target}.id FROM resource {target} WHERE {target}.deleted = 0 AND "
        );
        if !inner.iter().all(|c| is_index_lookup(&c.matcher)) {
            let _ = write!(self.text, "{target}.type IN ({types}) AND ");
        }
        self.any_of(&target, inner);
        self.push(")");
        self.scope = outer;
        self.push(" UNION ALL ");
        self.contained_targets(param, target_types, inner);
        self.in_contained = outer_contained;
        self.push(")");
    }

    /// The rest of a chain (search.html#contained: "a chained condition will
    /// be evaluated inside contained resources"): `SELECT` the containers
    /// whose reference under `param` is `#id` of a resource they contain of
    /// one of `target_types` that meets any of `inner`. Starts from the
    /// contained resources that meet `inner` (rows of `#<type>`, usually
    /// none), then checks their container's reference row by its key.
    fn contained_targets(&mut self, param: &str, target_types: &[String], inner: &[Condition]) {
        let link = self.alias("l");
        let target = self.alias("t");
        let pid = self.pid_clause(param, Kind::Reference);
        let keys: Vec<String> = target_types.iter().map(|t| contained_type_key(t)).collect();
        let hash = self.bind_text("#");
        let local = format!("substr({target}.id, {})", self.dialect.position(&format!("{target}.id"), &hash));
        let outer = self.scope.replace(keys.clone());
        let _ = write!(self.text, "SELECT {target}.container FROM resource {target} WHERE {target}.deleted = {CONTAINED} AND ");
        if !inner.iter().all(|c| is_index_lookup(&c.matcher)) {
            let types = keys.iter().map(|k| self.bind_text(k)).collect::<Vec<_>>().join(", ");
            let _ = write!(self.text, "{target}.type IN ({types}) AND ");
        }
        self.in_contained = true;
        self.any_of(&target, inner);
        self.in_contained = false;
        let _ = write!(
            self.text,
            " AND EXISTS (SELECT 1 FROM idx_reference {link} WHERE {link}.rid = {target}.container AND {link}.{pid} \
             AND {link}.target_id IS NULL AND {link}.url = {local})"
        );
        self.scope = outer;
    }

    /// `alias.rid IN (...)`: a current resource of `source_type` that meets
    /// any of `inner` refers to the resource through its parameter `param`
    /// (<http://hl7.org/fhir/R4/search.html#has>). The referring rows are
    /// joined to their sources by rid and to their targets by (type, id)
    /// (`resource_type_id`). When every inner condition is an index lookup it
    /// is written on the reference row's rid (the source's), so both engines
    /// start from that lookup and reach the reference rows by their rid.
    fn has(&mut self, alias: &str, param: &str, source_type: &str, inner: &[Condition]) {
        let link = self.alias("l");
        let source = self.alias("s");
        let target = self.alias("t");
        let outer = self.scope.replace(vec![source_type.to_owned()]);
        let outer_contained = std::mem::take(&mut self.in_contained);
        let pid = self.pid_clause(param, Kind::Reference);
        let st = self.bind_text(source_type);
        let _ = write!(
            self.text,
            "{alias}.rid IN (SELECT {target}.rid FROM idx_reference {link} \
             JOIN resource {source} ON {source}.rid = {link}.rid \
             JOIN resource {target} ON {target}.type = {link}.target_type AND {target}.id = {link}.target_id \
             WHERE {link}.{pid} AND {source}.type = {st} AND {source}.deleted = 0 AND "
        );
        if inner.iter().all(|c| is_index_lookup(&c.matcher)) {
            self.any_of(&link, inner);
        } else {
            self.any_of(&source, inner);
        }
        self.scope = outer;
        self.in_contained = outer_contained;
        self.push(")");
    }

    /// Any of `tokens` (system, optional code), grouped by system:
    /// `(sid = .. AND code IN (..)) OR (sid = ..)`; none: false.
    fn token_set_clause(&mut self, tokens: &[(String, Option<String>)]) -> String {
        let mut by_system: Vec<(&str, Option<Vec<&str>>)> = Vec::new();
        for (system, code) in tokens {
            let slot = match by_system.iter().position(|(s, _)| *s == system.as_str()) {
                Some(i) => i,
                None => {
                    by_system.push((system.as_str(), Some(Vec::new())));
                    by_system.len() - 1
                }
            };
            match (code, &mut by_system[slot].1) {
                (Some(code), Some(codes)) => codes.push(code.as_str()),
                // A whole system covers its codes.
                (None, codes) => *codes = None,
                (Some(_), None) => {}
            }
        }
        if by_system.is_empty() {
            return "1 = 0".to_owned();
        }
        let mut alternatives = Vec::with_capacity(by_system.len());
        for (system, codes) in by_system {
            let sid = self.system_clause(system);
            match codes {
                None => alternatives.push(format!("({sid})")),
                Some(codes) => {
                    let placeholders: Vec<String> = codes.into_iter().map(|c| self.bind_text(c)).collect();
                    alternatives.push(format!("({sid} AND code IN ({}))", placeholders.join(", ")));
                }
            }
        }
        format!("({})", alternatives.join(" OR "))
    }

    /// The clauses of component `k` of a composite condition on the columns
    /// `s{k}`, `c{k}`, `l{k}`, `h{k}` of `idx_composite` (laid out by
    /// [`composite_columns`]).
    fn component_clauses(&mut self, k: usize, component: &Match, clauses: &mut Vec<String>) {
        let (s, c, l, h) = (format!("s{k}"), format!("c{k}"), format!("l{k}"), format!("h{k}"));
        match component {
            Match::Token { system, code, .. } => {
                if let Some(code) = code {
                    let p = self.bind_text(code);
                    clauses.push(format!("{c} = {p}"));
                }
                match system {
                    TokenSystem::Any => {}
                    TokenSystem::NoSystem => clauses.push(format!("{s} IS NULL")),
                    TokenSystem::Is(system) => {
                        let p = self.bind_text(system);
                        clauses.push(format!("{s} = {p}"));
                    }
                }
            }
            Match::String { value, mode: StringMode::Prefix } => clauses.extend(self.prefix_clauses(&c, value)),
            Match::String { value, mode: StringMode::Contains } => {
                let p = self.bind_text(value);
                clauses.push(self.dialect.contains(&c, &p));
            }
            Match::Reference { target_type, id } => {
                // Only split references have a type (and an id in `c`).
                let p = self.bind_text(id);
                clauses.push(format!("{c} = {p}"));
                clauses.push(format!("{s} IS NOT NULL"));
                if let Some(target_type) = target_type {
                    let t = self.bind_text(target_type);
                    clauses.push(format!("{s} = {t}"));
                }
            }
            Match::ReferenceUrl(url) => {
                let p = self.bind_text(url);
                clauses.push(format!("{c} = {p}"));
                clauses.push(format!("{s} IS NULL"));
            }
            Match::Uri { value, mode } => match mode {
                UriMode::Exact => {
                    let p = self.bind_text(value);
                    clauses.push(format!("{c} = {p}"));
                }
                UriMode::Below => clauses.extend(self.prefix_clauses(&c, value)),
                UriMode::Above => {
                    let p = self.bind_text(value);
                    clauses.push(format!("{c} IS NOT NULL AND substr(CAST({p} AS TEXT), 1, length({c})) = {c}"));
                }
            },
            Match::Date { prefix, low, high } => {
                clauses.push(self.range_predicate(&l, &h, *prefix, Bounds::Real(*low as f64, *high as f64)));
            }
            Match::Number { prefix, low, high } => {
                clauses.push(self.range_predicate(&l, &h, *prefix, Bounds::Real(*low, *high)));
            }
            Match::Quantity { prefix, low, high, system, code } => {
                clauses.push(self.range_predicate(&l, &h, *prefix, Bounds::Real(*low, *high)));
                if let Some(system) = system {
                    let p = self.bind_text(system);
                    clauses.push(format!("{s} = {p}"));
                }
                if let Some(code) = code {
                    let p = self.bind_text(code);
                    clauses.push(format!("{c} = {p}"));
                }
            }
            // The parser gives components no modifiers, so nothing else
            // reaches a component; it would match nothing.
            _ => clauses.push("1 = 0".to_owned()),
        }
    }

    /// `column` starts with `prefix`, as a byte range both engines can serve
    /// from an index (columns compare by code point: BINARY in SQLite, "C" in
    /// PostgreSQL).
    fn prefix_clauses(&mut self, column: &str, prefix: &str) -> Vec<String> {
        if prefix.is_empty() {
            return vec![format!("{column} IS NOT NULL")];
        }
        let low = self.bind_text(prefix);
        let mut clauses = vec![format!("{column} >= {low}")];
        if let Some(successor) = prefix_successor(prefix) {
            let high = self.bind_text(&successor);
            clauses.push(format!("{column} < {high}"));
        }
        clauses
    }

    /// The predicate of a comparison prefix between the resource's range
    /// [`rl`, `rh`] and the search value's range, per
    /// <http://hl7.org/fhir/R4/search.html#prefix>:
    /// - eq: the search range fully contains the resource range;
    /// - ne: it does not;
    /// - gt / lt: the range above / below the search value overlaps the resource range;
    /// - ge / le: gt / lt, or eq;
    /// - sa / eb: the resource range lies wholly after / before the search range;
    /// - ap: the ranges overlap; the query parser has already widened the
    ///   search range by the approximation margin (10%), so every store
    ///   compares the same bounds.
    fn range_predicate(&mut self, rl: &str, rh: &str, prefix: Prefix, bounds: Bounds) -> String {
        // Bind only the bounds the predicate uses: PostgreSQL cannot type a
        // parameter that appears nowhere in the statement.
        let (low, high) = match bounds {
            Bounds::Int(l, h) => (SqlValue::Int(l), SqlValue::Int(h)),
            Bounds::Real(l, h) => (SqlValue::Real(l), SqlValue::Real(h)),
        };
        match prefix {
            Prefix::Gt => format!("{rh} > {}", self.bind(high)),
            Prefix::Sa => format!("{rl} > {}", self.bind(high)),
            Prefix::Lt => format!("{rl} < {}", self.bind(low)),
            Prefix::Eb => format!("{rh} < {}", self.bind(low)),
            _ => {
                let (l, h) = (self.bind(low), self.bind(high));
                match prefix {
                    Prefix::Ne => format!("({rl} < {l} OR {rh} > {h})"),
                    // gt or eq: above the range, or (not above and) starting in it.
                    Prefix::Ge => format!("({rh} > {h} OR {rl} >= {l})"),
                    Prefix::Le => format!("({rl} < {l} OR {rh} <= {h})"),
                    Prefix::Ap => format!("({rl} <= {h} AND {rh} >= {l})"),
                    // eq (gt, sa, lt and eb were handled above).
                    _ => format!("({rl} >= {l} AND {rh} <= {h})"),
                }
            }
        }
    }

    fn order_by(&mut self, sort: &[SortKey], sort_kinds: &SortKinds) {
        let mut keys: Vec<String> = Vec::new();
        // The one sort key `date` is the row's own range (patient_token_order).
        let sort = if self.patient_tokens_joined {
            let descending = sort.first().is_some_and(|k| k.descending);
            keys.push(match (descending, self.dialect) {
                (true, Dialect::Sqlite) => "c.date_high DESC".to_owned(),
                (true, Dialect::Postgres) => "c.date_high DESC NULLS LAST".to_owned(),
                (false, _) => "c.date_low ASC NULLS LAST".to_owned(),
            });
            &[]
        } else {
            sort
        };
        for key in sort {
            let direction = if key.descending { "DESC" } else { "ASC" };
            match key.param.as_str() {
                "_id" => keys.push(format!("r.id {direction}")),
                "_lastUpdated" => keys.push(format!("{}r.last_updated {direction}", if self.by_id { "+" } else { "" })),
                param => {
                    let Some(kinds) = sort_kinds.get(param) else { continue };
                    for kind in kinds {
                        let (low, high) = kind.sort_columns();
                        let aggregate = if key.descending { format!("MAX({high})") } else { format!("MIN({low})") };
                        let pid = self.pid_clause(param, *kind);
                        keys.push(format!(
                            "(SELECT {aggregate} FROM {} s WHERE s.rid = r.rid AND s.{pid}) {direction} NULLS LAST",
                            kind.table()
                        ));
                    }
                }
            }
        }
        // Ties (and the default order) fall back to newest first, then id, so
        // that paging is deterministic. When `_id` lists the rows, the unary
        // `+` keeps SQLite from walking the type's (type, last_updated) index
        // for the order instead of looking the ids up (as SQLite 3.46, the
        // one SQLCipher bundles, would).
        keys.push(if self.by_id { "+r.last_updated DESC" } else { "r.last_updated DESC" }.to_owned());
        keys.push("r.id ASC".to_owned());
        keys.push("r.type ASC".to_owned());
        self.push(" ORDER BY ");
        self.push(&keys.join(", "));
    }
}

/// `idx_patient_token.via`, bits of where the row's patient id came from:
/// the resource's `patient` parameter (a Patient), its `subject` parameter
/// (a Patient), or its `patient` parameter pointing at another type (a Group
/// or a Device with that id; kept so that an untyped `patient=X` is exact).
pub(crate) const VIA_PATIENT: i64 = 1;
pub(crate) const VIA_SUBJECT: i64 = 2;
pub(crate) const VIA_PATIENT_OTHER_TYPE: i64 = 4;

/// Whether a token parameter's values are also kept per patient in
/// `idx_patient_token`: the coded facts of a record (code, category, status,
/// type...), not identifiers, tags or derived values.
pub(crate) fn is_patient_token_param(code: &str) -> bool {
    !code.starts_with('_') && !code.contains(':') && code != "identifier"
}

/// One row of `idx_patient_token`: a token of a record that refers to a
/// patient, with the patient's id and the record's `date` range, so that
/// "this patient's records with this code, newest first" is one index range.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PatientToken<'a> {
    pub(crate) param: &'a str,
    /// The Patient's id; for a Patient the record contains (a `#id`
    /// reference), its row id ([`contained_row_id`]), which chains to
    /// patients find among the contained Patients' rows.
    pub(crate) patient: std::borrow::Cow<'a, str>,
    pub(crate) system: Option<&'a str>,
    pub(crate) code: &'a str,
    pub(crate) via: i64,
    pub(crate) date_low: Option<i64>,
    pub(crate) date_high: Option<i64>,
}

/// The resource a version's index entries are of, with what it contains:
/// its `#id` references to contained Patients name patients too.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub(crate) resource_type: &'a str,
    pub(crate) id: &'a str,
    pub(crate) contained: &'a [domain::store::ContainedIndex],
}

/// The `idx_patient_token` rows of a version's index entries: every token of
/// [`is_patient_token_param`] times every Patient the `patient` or `subject`
/// parameter refers to by id (or by `#id` to a Patient `owner` contains),
/// once per (parameter, patient, system, code), with the lowest and highest
/// bound of the `date` parameter.
pub(crate) fn patient_tokens<'a>(entries: &'a [fhir::search::IndexEntry], owner: &Owner<'a>) -> Vec<PatientToken<'a>> {
    use std::borrow::Cow;
    let mut patients: Vec<(Cow<'a, str>, i64)> = Vec::new();
    let (mut low, mut high): (Option<i64>, Option<i64>) = (None, None);
    let mut add = |patient: Cow<'a, str>, via: i64| match patients.iter_mut().find(|(p, _)| *p == patient) {
        Some(slot) => slot.1 |= via,
        None => patients.push((patient, via)),
    };
    for entry in entries {
        match &entry.value {
            IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } => {
                let via = match (entry.param.as_str(), t == "Patient") {
                    ("patient", true) => VIA_PATIENT,
                    ("patient", false) => VIA_PATIENT_OTHER_TYPE,
                    ("subject", true) => VIA_SUBJECT,
                    _ => continue,
                };
                add(Cow::Borrowed(id.as_str()), via);
            }
            IndexValue::Reference { target_id: None, url, .. } if !owner.contained.is_empty() => {
                let via = match entry.param.as_str() {
                    "patient" => VIA_PATIENT,
                    "subject" => VIA_SUBJECT,
                    _ => continue,
                };
                let Some(local) = url.strip_prefix('#') else { continue };
                if owner.contained.iter().any(|c| c.id == local && c.resource_type == "Patient") {
                    add(Cow::Owned(contained_row_id(owner.resource_type, owner.id, local)), via);
                }
            }
            IndexValue::Date { low: l, high: h } if entry.param == "date" => {
                low = Some(low.map_or(*l, |v| v.min(*l)));
                high = Some(high.map_or(*h, |v| v.max(*h)));
            }
            _ => {}
        }
    }
    let mut rows: Vec<PatientToken<'_>> = Vec::new();
    if patients.is_empty() {
        return rows;
    }
    for entry in entries {
        let IndexValue::Token { system, code: Some(code), .. } = &entry.value else { continue };
        if !is_patient_token_param(&entry.param) {
            continue;
        }
        for (patient, via) in &patients {
            let row = PatientToken {
                param: &entry.param,
                patient: patient.clone(),
                system: system.as_deref(),
                code,
                via: *via,
                date_low: low,
                date_high: high,
            };
            if !rows.iter().any(|r| r.param == row.param && r.patient == row.patient && r.system == row.system && r.code == row.code) {
                rows.push(row);
            }
        }
    }
    rows
}

/// The `via` bits whose rows hold exactly the resources `condition` selects
/// by patient id, when it names one patient (or chains to patients) through
/// `patient` or `subject`: see [`VIA_PATIENT`].
fn patient_condition_via(condition: &Condition) -> Option<i64> {
    let patient_type = |t: &Option<String>| t.as_deref() == Some("Patient");
    match (condition.param.as_str(), &condition.matcher) {
        ("patient", Match::Reference { target_type: None, .. }) => Some(VIA_PATIENT | VIA_PATIENT_OTHER_TYPE),
        ("patient", Match::Reference { target_type, .. }) if patient_type(target_type) => Some(VIA_PATIENT),
        ("subject", Match::Reference { target_type, .. }) if patient_type(target_type) => Some(VIA_SUBJECT),
        ("patient" | "subject", Match::Chain { target_types, .. }) if target_types.len() == 1 && target_types[0] == "Patient" => {
            Some(if condition.param == "patient" { VIA_PATIENT } else { VIA_SUBJECT })
        }
        _ => None,
    }
}

/// The (patient filter, token filter) of `query` that `idx_patient_token`
/// answers together: one patient condition and one code (a token of
/// [`is_patient_token_param`], not negated), each alone in its filter.
fn patient_token_pair(query: &SearchQuery) -> Option<(usize, usize)> {
    query.resource_type.as_ref()?;
    fn single(f: &Filter) -> Option<&Condition> {
        if let [c] = f.any_of.as_slice() { Some(c) } else { None }
    }
    let patient = query.filters.iter().position(|f| single(f).and_then(patient_condition_via).is_some())?;
    let token = query.filters.iter().enumerate().position(|(i, f)| {
        i != patient
            && single(f).is_some_and(|c| {
                is_patient_token_param(&c.param) && matches!(c.matcher, Match::Token { code: Some(_), negate: false, .. })
            })
    })?;
    Some((patient, token))
}

/// `Some(descending)` when the page of `query` can be read from
/// `idx_patient_token` in its order: one patient by id, a code with its
/// system (or none), and the one sort key `date` of date type, whose bounds
/// the rows carry. Each match then has exactly one row.
fn patient_token_order(query: &SearchQuery, sort_kinds: &SortKinds) -> Option<bool> {
    let (patient, token) = patient_token_pair(query)?;
    let by_id = matches!(query.filters[patient].any_of[0].matcher, Match::Reference { .. });
    let with_system = matches!(
        query.filters[token].any_of[0].matcher,
        Match::Token { system: TokenSystem::Is(_) | TokenSystem::NoSystem, .. }
    );
    let [key] = query.sort.as_slice() else { return None };
    let date = key.param == "date" && sort_kinds.get("date").is_some_and(|k| k.as_slice() == [Kind::Date]);
    (by_id && with_system && date).then_some(key.descending)
}

/// The columns of one component of a composite row (`s`, `c`, `l`, `h`:
/// system or reference type, code or text, low and high bound), per
/// component value type: a token (system, code), a quantity (system, code,
/// low, high), a date or number (low, high; dates in microseconds as REAL),
/// a string (its normalized text), a reference (type, id or else URL), a uri
/// (its value).
pub(crate) type CompositeColumns<'a> = (Option<&'a str>, Option<&'a str>, Option<f64>, Option<f64>);

pub(crate) fn composite_columns(value: &IndexValue) -> CompositeColumns<'_> {
    match value {
        IndexValue::Token { system, code, .. } => (system.as_deref(), code.as_deref(), None, None),
        IndexValue::Quantity { low, high, system, code } => (system.as_deref(), code.as_deref(), Some(*low), Some(*high)),
        IndexValue::Date { low, high } => (None, None, Some(*low as f64), Some(*high as f64)),
        IndexValue::Number { low, high } => (None, None, Some(*low), Some(*high)),
        IndexValue::String { normalized, .. } => (None, Some(normalized.as_str()), None, None),
        IndexValue::Reference { target_type, target_id, url } => {
            (target_type.as_deref(), Some(target_id.as_deref().unwrap_or(url.as_str())), None, None)
        }
        IndexValue::Uri { value } => (None, Some(value.as_str()), None, None),
        IndexValue::Composite(_) => (None, None, None, None),
    }
}

/// How selective a condition usually is when its SQL lists rows through an
/// index (`rid IN (SELECT rid FROM <index> ...)`, chains and `_has`
/// included): 0 for a reference to one resource, then chains, codes, value
/// sets and composites, strings and text, ranges last. `None` for conditions
/// that list no rows an engine can start from: negations, `:missing`, `_id`
/// and `_lastUpdated`.
/// A condition that is one positive lookup in an index table (a list of
/// matching row ids, through [`Builder::index_predicate`]).
fn plain_lookup(matcher: &Match) -> bool {
    matches!(
        matcher,
        Match::Token { negate: false, .. }
            | Match::TokenSet { negate: false, .. }
            | Match::TokenText(_)
            | Match::String { .. }
            | Match::Reference { .. }
            | Match::ReferenceUrl(_)
            | Match::Uri { .. }
            | Match::Date { .. }
            | Match::Number { .. }
            | Match::Quantity { .. }
            | Match::Composite(_)
    )
}

fn lookup_rank(matcher: &Match) -> Option<u8> {
    match matcher {
        Match::Token { negate: true, .. } | Match::TokenSet { negate: true, .. } | Match::InValueSet { negate: true, .. } => None,
        Match::Id(_) | Match::LastUpdated { .. } | Match::Missing(_) => None,
        Match::Reference { .. } | Match::ReferenceUrl(_) => Some(0),
        // A chain or `_has` names a few targets' rows, usually fewer than a code.
        Match::Chain { .. } | Match::Has { .. } => Some(1),
        Match::String { mode: StringMode::Exact, .. } | Match::Token { code: Some(_), .. } => Some(2),
        Match::TokenSet { .. } | Match::Composite(_) | Match::InValueSet { .. } | Match::Subsumption { .. } => Some(3),
        Match::String { .. } | Match::Uri { .. } | Match::TokenText(_) | Match::Text { .. } => Some(4),
        Match::Date { .. } | Match::Number { .. } | Match::Quantity { .. } | Match::Token { .. } => Some(5),
    }
}

/// Whether `matcher` is written as a row lookup through an index (see [`lookup_rank`]).
fn is_index_lookup(matcher: &Match) -> bool {
    lookup_rank(matcher).is_some()
}

/// The filter a SQLite plan should start from: among those whose every
/// condition is an index lookup, the one that usually selects the fewest rows
/// ([`lookup_rank`]). `None` when there is none, or when `_id` is searched
/// (the (type, id) index serves it).
fn driving_filter(query: &SearchQuery) -> Option<usize> {
    if query.filters.iter().any(|f| f.any_of.iter().any(|c| matches!(c.matcher, Match::Id(_)))) {
        return None;
    }
    query
        .filters
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.any_of.is_empty())
        .filter_map(|(i, f)| {
            f.any_of.iter().map(|c| lookup_rank(&c.matcher)).try_fold(0, |worst, r| r.map(|r| worst.max(r))).map(|r| (r, i))
        })
        .min()
        .map(|(_, i)| i)
}

/// Whether a filter of `query` is `_id`.
fn searches_by_id(query: &SearchQuery) -> bool {
    query.filters.iter().any(|f| !f.any_of.is_empty() && f.any_of.iter().all(|c| matches!(c.matcher, Match::Id(_))))
}

/// Whether a SQLite plan should start from a filter's rows rather than walk
/// the type's (type, last_updated) index.
fn starts_from_filter(query: &SearchQuery) -> bool {
    driving_filter(query).is_some()
}

/// The smallest string greater than every string that starts with `prefix`:
/// the prefix with its last incrementable character incremented. `None` when
/// no such string exists (every character is char::MAX).
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        // Skip the surrogate range, which holds no chars.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The logical id a literal reference URL points at (`Patient/1`,
/// `http://x/fhir/Patient/1/_history/2` -> `1`), if it has a path.
fn logical_id_of(url: &str) -> Option<&str> {
    let path = match url.find("/_history/") {
        Some(i) => &url[..i],
        None => url,
    };
    let (_, id) = path.rsplit_once('/')?;
    if id.is_empty() { None } else { Some(id) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_increments_last_char() {
        assert_eq!(prefix_successor("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
    }

    #[test]
    fn logical_id_of_reference_urls() {
        assert_eq!(logical_id_of("Patient/1"), Some("1"));
        assert_eq!(logical_id_of("http://x/fhir/Patient/1/_history/2"), Some("1"));
        assert_eq!(logical_id_of("urn:uuid:abc"), None);
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let query = SearchQuery {
            resource_type: Some("Patient".into()),
            filters: vec![Filter {
                any_of: vec![Condition { param: "_id".into(), matcher: Match::Id("a".into()) }],
            }],
            count: 10,
            ..SearchQuery::default()
        };
        let sqlite = search(Dialect::Sqlite, &query, &SortKinds::new(), &std::sync::Arc::default());
        let postgres = search(Dialect::Postgres, &query, &SortKinds::new(), &std::sync::Arc::default());
        assert!(sqlite.page.text.contains("r.type = ?1 AND (r.id = ?2)"), "{}", sqlite.page.text);
        assert!(postgres.page.text.contains("r.type = $1 AND (r.id = $2)"), "{}", postgres.page.text);
        assert_eq!(sqlite.page.params.len(), 4);
        assert_eq!(sqlite.count.params.len(), 2);
    }
}
