//! The search query IR: what a store must evaluate. Parsing of URL parameters
//! into this IR lives here too so that all stores share one interpretation.

/// A parsed search over one resource type (or all, for system search).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    pub resource_type: Option<String>,
    /// All filters must hold (repeating a parameter is AND).
    pub filters: Vec<Filter>,
    pub sort: Vec<SortKey>,
    /// Page size.
    pub count: usize,
    /// Number of matches to skip (paging).
    pub offset: usize,
    pub total: TotalMode,
    /// `_contained` (search.html#contained): whether the resources searched
    /// are those contained in others (`contained` elements), or not.
    pub contained: ContainedMode,
    /// `_containedType`: how a matching contained resource is answered.
    pub contained_type: ContainedType,
}

/// `_contained` (search.html#contained). A contained resource matches when
/// every filter holds for it alone (two contained resources of one
/// container never combine their values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainedMode {
    /// `false`, the default: only resources that are not contained.
    #[default]
    No,
    /// `true`: only contained resources.
    Only,
    /// `both`: resources that are not contained, and contained ones.
    Both,
}

/// `_containedType` (search.html#contained): what a search with
/// [`ContainedMode::Only`] or [`ContainedMode::Both`] answers for a matching
/// contained resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainedType {
    /// `container`, the default: the resource that contains it, once however
    /// many of its contained resources match.
    #[default]
    Container,
    /// `contained`: the contained resource itself, one match each.
    Contained,
}

/// One URL parameter: any of its comma-separated conditions may hold (OR).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub any_of: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Search parameter code; ignored for `Match::Id` and `Match::LastUpdated`.
    pub param: String,
    pub matcher: Match,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    /// `_id`.
    Id(String),
    /// `_lastUpdated` against the stored version's time (microseconds).
    LastUpdated { prefix: Prefix, low: i64, high: i64 },
    /// `:missing=true|false` on any parameter.
    Missing(bool),
    Token { system: TokenSystem, code: Option<String>, negate: bool },
    /// Text-search on a token's display (`:text`), normalized.
    TokenText(String),
    /// `value` is already normalized for Prefix and Contains; as written for Exact.
    String { value: String, mode: StringMode },
    Reference { target_type: Option<String>, id: String },
    /// An absolute or canonical reference URL.
    ReferenceUrl(String),
    Uri { value: String, mode: UriMode },
    Date { prefix: Prefix, low: i64, high: i64 },
    Number { prefix: Prefix, low: f64, high: f64 },
    Quantity { prefix: Prefix, low: f64, high: f64, system: Option<String>, code: Option<String> },
    /// Any of these `system|code` pairs (a `None` code: every code of the
    /// system). `negate`: none of them, like `:not` (resources without a
    /// value match too). What `:in`, `:not-in`, `:above` and `:below` become
    /// once the Service has resolved them against stored terminology.
    TokenSet { tokens: Vec<(String, Option<String>)>, negate: bool },
    /// `:in` / `:not-in` (`negate`) a ValueSet given by its `url` or as
    /// `ValueSet/id`. The Service turns it into [`Match::TokenSet`]; a store
    /// that is given it unresolved matches nothing.
    InValueSet { value_set: String, negate: bool },
    /// `:below` / `:above` (`below: false`) a code of a code system with a
    /// hierarchy. The Service turns it into [`Match::TokenSet`]; a store that
    /// is given it unresolved matches nothing.
    Subsumption { system: String, code: String, below: bool },
    /// A composite parameter (search.html#composite): one indexed element
    /// ([`super::IndexValue::Composite`]) must match every component, in the
    /// order of the parameter's components.
    Composite(Vec<Match>),
    /// A chained parameter (search.html#chaining): the reference parameter
    /// `param` points at a current resource of one of `target_types` that
    /// meets any of `inner` (conditions on that resource's own parameters,
    /// possibly chains again).
    Chain { target_types: Vec<String>, inner: Vec<Condition> },
    /// Reverse chaining, `_has` (search.html#has): a current resource of
    /// `source_type` refers to this one through its reference parameter
    /// `param` and meets any of `inner`.
    Has { source_type: String, inner: Vec<Condition> },
    /// Full text, `_text` (the narrative) or `_content` (all of the
    /// resource's text) (search.html#_text): every phrase occurs among the
    /// field's words ([`super::text`]).
    Text { field: TextField, phrases: Vec<TextPhrase> },
}

/// The text a [`Match::Text`] searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    /// `_text`: the narrative, `text.div`.
    Narrative,
    /// `_content`: every string of the resource.
    Content,
}

/// Words that must occur adjacent and in this order (one word: anywhere),
/// normalized as [`super::text::words`] makes them. `prefix`: the last word
/// only needs to start a word of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPhrase {
    pub words: Vec<String>,
    pub prefix: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenSystem {
    /// `code`: any system.
    Any,
    /// `|code`: the value has no system.
    NoSystem,
    /// `system|code` or `system|`.
    Is(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    Prefix,
    Exact,
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    Exact,
    Below,
    Above,
}

/// Comparison prefixes, <http://hl7.org/fhir/R4/search.html#prefix>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefix {
    #[default]
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub param: String,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotalMode {
    #[default]
    None,
    Estimate,
    Accurate,
}

// ---------------------------------------------------------------------------
// Parsing URL parameters (<http://hl7.org/fhir/R4/search.html>).
// ---------------------------------------------------------------------------

use super::extract::is_id;
use super::normalize_string;
use super::params::{ParamType, SearchParamDef};
use super::registry::Registry;
use super::ranges::{date_range, decimal_range};
use super::ucum::{UCUM, canonical_range};
use crate::outcome::{Issue, IssueType};

/// Page size when the request names none. The Service usually overrides it
/// with its configured default.
pub const DEFAULT_COUNT: usize = 20;
/// Largest page size a client may ask for.
pub const MAX_COUNT: usize = 1000;

/// The outcome of [`parse`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub query: SearchQuery,
    /// The parameters applied, as given (name with modifier, value), in
    /// request order, for the self link. `_count` is included clamped.
    pub applied: Vec<(String, String)>,
    /// `_summary` when given (`true`, `text`, `data`, `count`, `false`).
    pub summary: Option<String>,
    /// `_elements` when given, one entry per element name.
    pub elements: Option<Vec<String>>,
    /// Names of the parameters left out in lenient mode.
    pub ignored: Vec<String>,
    /// `_include` and `_revinclude` directives, in request order.
    pub includes: Vec<super::include::Include>,
}

/// Parses search parameters for `resource_type` (`None`: system search, where
/// only the parameters of all resources apply and `_type` may name one type).
///
/// Repeating a parameter is AND; commas within a value are OR (`\,` is a
/// literal comma). An unknown parameter or modifier or a malformed value is an
/// error (`invalid`, or `not-supported` for valid FHIR this server does not
/// do: `_filter`, `_list`...), unless
/// `lenient`, in which case the parameter is listed in `ignored` and left out
/// (`Prefer: handling=lenient`, search.html#errors). `_format` and `_pretty`
/// are ignored silently. Diagnostics never echo the searched values.
/// Chains and `_has` are parsed in [`super::chain`]; `_include` and
/// `_revinclude` go to [`Parsed::includes`] ([`super::include`]).
pub fn parse(
    registry: &Registry,
    resource_type: Option<&str>,
    params: &[(String, String)],
    lenient: bool,
) -> Result<Parsed, Vec<Issue>> {
    let mut parsed = Parsed {
        query: SearchQuery { resource_type: resource_type.map(str::to_string), count: DEFAULT_COUNT, ..SearchQuery::default() },
        ..Parsed::default()
    };
    let mut issues = Vec::new();
    for (name, value) in params {
        match parse_one(registry, resource_type, name, value, &mut parsed) {
            Ok(Applied::Yes) => parsed.applied.push((name.clone(), value.clone())),
            Ok(Applied::Count(count)) => parsed.applied.push((name.clone(), count.to_string())),
            Ok(Applied::Silently) => {}
            Err(issue) => {
                if lenient {
                    parsed.ignored.push(name.clone());
                } else {
                    issues.push(issue.at(name.clone()));
                }
            }
        }
    }
    if let Err(issue) = check_contained(&parsed.query) {
        if lenient {
            parsed.query.contained = ContainedMode::No;
            parsed.applied.retain(|(name, _)| name != "_contained");
            parsed.ignored.push("_contained".to_string());
        } else {
            issues.push(issue.at("_contained"));
        }
    }
    if issues.is_empty() { Ok(parsed) } else { Err(issues) }
}

/// What a search of contained resources (`_contained=true|both`) cannot do
/// here: search every type at once (a type, or `_type`, is needed), and sort
/// containers by a search parameter (with `_containedType=container` the
/// entries are containers of any type; `_id` and `_lastUpdated` sort them).
fn check_contained(query: &SearchQuery) -> Result<(), Issue> {
    if query.contained == ContainedMode::No {
        return Ok(());
    }
    if query.resource_type.is_none() {
        return Err(unsupported("_contained=true|both needs a resource type (or _type)"));
    }
    if query.contained_type == ContainedType::Container
        && query.sort.iter().any(|k| !matches!(k.param.as_str(), "_id" | "_lastUpdated"))
    {
        return Err(unsupported(
            "with _contained=true|both and _containedType=container, _sort takes only _id and _lastUpdated",
        ));
    }
    Ok(())
}

enum Applied {
    Yes,
    /// `_count`, with the value actually used.
    Count(usize),
    Silently,
}

fn invalid(message: impl Into<String>) -> Issue {
    Issue::error(IssueType::Invalid, message)
}

fn unsupported(message: impl Into<String>) -> Issue {
    Issue::error(IssueType::NotSupported, message)
}

fn parse_one(
    registry: &Registry,
    resource_type: Option<&str>,
    name: &str,
    value: &str,
    parsed: &mut Parsed,
) -> Result<Applied, Issue> {
    let query = &mut parsed.query;
    match name {
        "_format" | "_pretty" => return Ok(Applied::Silently),
        "_count" => {
            let n: usize = value.trim().parse().map_err(|_| invalid("_count must be a non-negative integer"))?;
            // _count=0 asks for the total only.
            query.count = n.min(MAX_COUNT);
            return Ok(Applied::Count(query.count));
        }
        "_offset" => {
            query.offset = value.trim().parse().map_err(|_| invalid("_offset must be a non-negative integer"))?;
            return Ok(Applied::Yes);
        }
        "_sort" => {
            query.sort = parse_sort(registry, resource_type, value)?;
            return Ok(Applied::Yes);
        }
        "_total" => {
            query.total = match value {
                "none" => TotalMode::None,
                "estimate" => TotalMode::Estimate,
                "accurate" => TotalMode::Accurate,
                _ => return Err(invalid("_total must be none, estimate or accurate")),
            };
            return Ok(Applied::Yes);
        }
        "_summary" => {
            if !matches!(value, "true" | "false" | "text" | "data" | "count") {
                return Err(invalid("_summary must be true, false, text, data or count"));
            }
            parsed.summary = Some(value.to_string());
            return Ok(Applied::Yes);
        }
        "_elements" => {
            let elements: Vec<String> =
                value.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_string).collect();
            if elements.is_empty() {
                return Err(invalid("_elements needs at least one element name"));
            }
            parsed.elements = Some(elements);
            return Ok(Applied::Yes);
        }
        "_type" if resource_type.is_none() => {
            let types: Vec<&str> = value.split(',').map(str::trim).collect();
            match types.as_slice() {
                [one] if crate::fhirpath::looks_like_resource_type(one) => {
                    query.resource_type = Some((*one).to_string());
                    return Ok(Applied::Yes);
                }
                [_] => return Err(invalid("_type must name a resource type")),
                _ => return Err(unsupported("_type with more than one resource type is not supported")),
            }
        }
        // search.html#contained: which resources are searched, and what a
        // contained match is answered with (checked with the whole query, below).
        "_contained" => {
            query.contained = match value {
                "false" => ContainedMode::No,
                "true" => ContainedMode::Only,
                "both" => ContainedMode::Both,
                _ => return Err(invalid("_contained must be true, false or both")),
            };
            return Ok(Applied::Yes);
        }
        "_containedType" => {
            query.contained_type = match value {
                "container" => ContainedType::Container,
                "contained" => ContainedType::Contained,
                _ => return Err(invalid("_containedType must be container or contained")),
            };
            return Ok(Applied::Yes);
        }
        "_list" | "_query" | "_filter" => {
            return Err(unsupported(format!("{name} is not supported")));
        }
        _ => {}
    }
    if let Some(include) = super::include::parse(registry, resource_type, name, value)? {
        parsed.includes.push(include);
        return Ok(Applied::Yes);
    }
    if let Some(filters) = combined_filters(registry, resource_type, name, value) {
        query.filters.extend(filters?);
        return Ok(Applied::Yes);
    }
    let any_of = if super::chain::is_chained(name) {
        super::chain::parse(registry, resource_type, name, value)?
    } else {
        conditions(registry, resource_type, name, value)?
    };
    query.filters.push(Filter { any_of });
    Ok(Applied::Yes)
}

/// The OR-ed conditions of one parameter `name=value` of `resource_type` that
/// is not a chain: `_id`, `_lastUpdated`, or a search parameter with its
/// modifier. Chains ([`super::chain`]) end with one of these.
pub(super) fn conditions(
    registry: &Registry,
    resource_type: Option<&str>,
    name: &str,
    value: &str,
) -> Result<Vec<Condition>, Issue> {
    let (code, modifier) = match name.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (name, None),
    };
    if value.is_empty() {
        return Err(invalid(format!("parameter {code} has an empty value")));
    }
    let any_of = match code {
        "_id" => {
            if modifier.is_some() {
                return Err(invalid("_id takes no modifier"));
            }
            split_or(value)
                .into_iter()
                .map(|v| {
                    let v = unescape(&v);
                    if is_id(&v) { Ok(condition(code, Match::Id(v))) } else { Err(invalid("_id value is not a valid id")) }
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        "_lastUpdated" => {
            if modifier.is_some() {
                return Err(invalid("_lastUpdated takes no modifier"));
            }
            split_or(value)
                .into_iter()
                .map(|v| {
                    let (prefix, low, high) = prefixed_date(&v)?;
                    Ok(condition(code, Match::LastUpdated { prefix, low, high }))
                })
                .collect::<Result<Vec<_>, Issue>>()?
        }
        "_text" | "_content" => {
            // _text is a parameter of DomainResource: Bundle, Binary and
            // Parameters have no narrative. A system search may use it.
            if resource_type.is_some() {
                lookup(registry, resource_type, code)?;
            }
            if modifier.is_some() {
                return Err(unsupported(format!("{code} takes no modifier")));
            }
            let field = if code == "_text" { TextField::Narrative } else { TextField::Content };
            let mut any_of = Vec::new();
            for part in split_or(value) {
                let alternatives = super::text::parse_query(&unescape(&part))
                    .ok_or_else(|| invalid(format!("{code} needs at least one word")))?;
                any_of.extend(alternatives.into_iter().map(|phrases| condition(code, Match::Text { field, phrases })));
            }
            any_of
        }
        _ => {
            let def = lookup(registry, resource_type, code)?;
            parse_param(def, modifier, value)?
        }
    };
    Ok(any_of)
}

fn lookup<'r>(registry: &'r Registry, resource_type: Option<&str>, code: &str) -> Result<&'r SearchParamDef, Issue> {
    let found = registry.param(resource_type.unwrap_or("Resource"), code);
    found.ok_or_else(|| match resource_type {
        Some(rt) => invalid(format!("unknown search parameter {code} for {rt}")),
        None => invalid(format!("unknown search parameter {code} for a search of all resource types")),
    })
}

fn condition(param: &str, matcher: Match) -> Condition {
    Condition { param: param.to_string(), matcher }
}

fn parse_sort(registry: &Registry, resource_type: Option<&str>, value: &str) -> Result<Vec<SortKey>, Issue> {
    let mut keys = Vec::new();
    for part in value.split(',').map(str::trim) {
        let (code, descending) = match part.strip_prefix('-') {
            Some(code) => (code, true),
            None => (part, false),
        };
        if code.is_empty() {
            return Err(invalid("_sort has an empty entry"));
        }
        if !matches!(code, "_id" | "_lastUpdated") {
            let def = lookup(registry, resource_type, code)?;
            if matches!(def.kind, ParamType::Composite | ParamType::Special) || def.expression.is_none() {
                return Err(unsupported(format!("sorting by {code} is not supported")));
            }
            if let Some(parts) = combined_of(def) {
                return Err(unsupported(format!("sorting by {code} is not supported; sort by {}", parts[0])));
            }
        }
        keys.push(SortKey { param: code.to_string(), descending });
    }
    Ok(keys)
}

/// Modifiers allowed per parameter type (search.html#modifiers), and those
/// that are valid FHIR but not supported here.
fn check_modifier(kind: ParamType, modifier: &str) -> Result<(), Issue> {
    let supported = match kind {
        ParamType::String => matches!(modifier, "exact" | "contains"),
        ParamType::Token => matches!(modifier, "text" | "not" | "of-type" | "in" | "not-in" | "above" | "below"),
        ParamType::Uri => matches!(modifier, "below" | "above"),
        // A reference's `:[type]` is checked by the caller.
        ParamType::Reference => modifier == "identifier",
        _ => false,
    };
    if supported || modifier == "missing" {
        return Ok(());
    }
    let known = match kind {
        ParamType::Reference => matches!(modifier, "above" | "below"),
        _ => false,
    };
    if known {
        Err(unsupported(format!("modifier :{modifier} is not supported on {} parameters", kind.code())))
    } else {
        Err(invalid(format!("unknown modifier :{modifier} for a {} parameter", kind.code())))
    }
}

fn parse_param(def: &SearchParamDef, modifier: Option<&str>, value: &str) -> Result<Vec<Condition>, Issue> {
    let code = def.code.as_str();
    if def.kind == ParamType::Special || def.expression.is_none() {
        return Err(unsupported(format!("search parameter {code} ({}) is not supported", def.kind.code())));
    }
    let mut reference_type = None;
    if let Some(m) = modifier {
        if def.kind == ParamType::Reference && crate::fhirpath::looks_like_resource_type(m) {
            if !def.targets.is_empty() && !def.targets.iter().any(|t| t == m) {
                return Err(invalid(format!("{m} is not a target type of {code}")));
            }
            reference_type = Some(m);
        } else {
            check_modifier(def.kind, m)?;
        }
    }
    let indexed_params: Vec<&str> = match combined_of(def) {
        Some(parts) => parts.to_vec(),
        None => vec![code],
    };
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(invalid(":missing takes true or false")),
        };
        // Missing from every parameter a combination stands for is not one
        // OR-list: parse_one splits it into one filter per parameter.
        if missing && indexed_params.len() > 1 {
            return Err(unsupported(format!("{code}:missing=true is only supported as a parameter of its own")));
        }
        return Ok(indexed_params.iter().map(|p| condition(p, Match::Missing(missing))).collect());
    }
    if indexed_params.len() > 1 {
        // A negation holds for each parameter: one filter per parameter,
        // which only a parameter of its own can be (combined_filters).
        if matches!(modifier, Some("not" | "not-in")) {
            return Err(unsupported(format!(
                "{code}:{} is only supported as a parameter of its own",
                modifier.unwrap_or_default()
            )));
        }
        let mut out = Vec::new();
        for part in split_or(value) {
            if part.is_empty() {
                return Err(invalid(format!("{code} has an empty value in its list")));
            }
            let matcher = parse_value(def, modifier, None, &part)?;
            for p in &indexed_params {
                let param = if in_canonical_units(&matcher) { canonical_param(p) } else { p.to_string() };
                out.push(condition(&param, matcher.clone()));
            }
        }
        return Ok(out);
    }
    // Values indexed under a parameter of their own (extract.rs).
    let indexed_as = match (def.kind, modifier) {
        (ParamType::Token, Some("of-type")) => of_type_param(code),
        (ParamType::Reference, Some("identifier")) => reference_identifier_param(code),
        _ => code.to_string(),
    };
    let mut out = Vec::new();
    for part in split_or(value) {
        if part.is_empty() {
            return Err(invalid(format!("{code} has an empty value in its list")));
        }
        let matcher = parse_value(def, modifier, reference_type, &part)?;
        // UCUM quantities in canonical units are indexed apart.
        if in_canonical_units(&matcher) {
            out.push(condition(&canonical_param(code), matcher));
        } else {
            out.push(condition(&indexed_as, matcher));
        }
    }
    Ok(out)
}

/// The parameter under which the `:of-type` values of token parameter
/// `code` are indexed: `type-system|type-code|value` of each Identifier, as a
/// token whose system is the type's and whose code is `type-code|value`.
pub fn of_type_param(code: &str) -> String {
    format!("{code}:of-type")
}

/// The parameter under which the `identifier` of the References of
/// reference parameter `code` is indexed, as a token (`:identifier`).
pub fn reference_identifier_param(code: &str) -> String {
    format!("{code}:identifier")
}

/// The parameter under which the UCUM quantities of quantity or composite
/// parameter `code` are indexed in canonical units ([`super::ucum`]): a
/// search in UCUM units searches there, one without units the values as
/// written.
pub fn canonical_param(code: &str) -> String {
    format!("{code}:canonical")
}

/// Whether a parsed value is (or holds) a UCUM quantity in canonical units.
fn in_canonical_units(matcher: &Match) -> bool {
    match matcher {
        Match::Quantity { system: Some(system), code: Some(code), .. } => {
            system == UCUM && super::ucum::canonical(code).is_some()
        }
        Match::Composite(components) => components.iter().any(in_canonical_units),
        _ => false,
    }
}

/// Observation's `combo-*` parameters, which are not indexed themselves:
/// each is the union of the Observation's own parameter and its
/// components' (`combo-code` is `Observation.code | Observation.component.code`),
/// which `code` and `component-code` already index, so a search of one is a
/// search of both. Indexing them too would double an Observation's rows
/// (measured on a bulk load: 2.7 million rows, 10% of its time, for
/// 738,000 Observations).
const COMBINED: [(&str, [&str; 2]); 6] = [
    ("combo-code", ["code", "component-code"]),
    ("combo-code-value-concept", ["code-value-concept", "component-code-value-concept"]),
    ("combo-code-value-quantity", ["code-value-quantity", "component-code-value-quantity"]),
    ("combo-data-absent-reason", ["data-absent-reason", "component-data-absent-reason"]),
    ("combo-value-concept", ["value-concept", "component-value-concept"]),
    ("combo-value-quantity", ["value-quantity", "component-value-quantity"]),
];

/// The parameters a combined parameter searches ([`COMBINED`]), when `def`
/// is one (an Observation parameter).
pub fn combined_of(def: &SearchParamDef) -> Option<&'static [&'static str]> {
    if !def.base.iter().any(|b| b == "Observation") {
        return None;
    }
    COMBINED.iter().find(|(c, _)| *c == def.code).map(|(_, parts)| &parts[..])
}

/// The filters, one per parameter the combination stands for, of what a
/// combined parameter ([`COMBINED`]) means only when it holds for each:
/// `:missing=true` (none has a value) and `:not` / `:not-in` (none has the
/// code). `None` for anything else. A negation takes one value: "none has
/// A, or none has B" is not one filter per parameter.
fn combined_filters(
    registry: &Registry,
    resource_type: Option<&str>,
    name: &str,
    value: &str,
) -> Option<Result<Vec<Filter>, Issue>> {
    let (code, modifier) = name.split_once(':')?;
    let def = registry.param(resource_type?, code)?;
    let parts = combined_of(def)?;
    let matcher = match modifier {
        "missing" if value == "true" => Ok(Match::Missing(true)),
        "not" | "not-in" if split_or(value).len() > 1 => Err(unsupported(format!(
            "{name} takes one value here ({code} searches two parameters); repeat the parameter for several"
        ))),
        "not" | "not-in" => parse_value(def, Some(modifier), None, value),
        _ => return None,
    };
    Some(matcher.map(|matcher| parts.iter().map(|p| Filter { any_of: vec![condition(p, matcher.clone())] }).collect()))
}

/// Most components a composite parameter has (MolecularSequence has three).
pub const MAX_COMPOSITE_COMPONENTS: usize = 3;

/// One comma-separated value of parameter `def`.
fn parse_value(
    def: &SearchParamDef,
    modifier: Option<&str>,
    reference_type: Option<&str>,
    part: &str,
) -> Result<Match, Issue> {
    let code = def.code.as_str();
    let part = part.to_string();
    let matcher = match def.kind {
            ParamType::String => {
                let text = unescape(&part);
                match modifier {
                    Some("exact") => Match::String { value: text, mode: StringMode::Exact },
                    Some("contains") => Match::String { value: normalize_string(&text), mode: StringMode::Contains },
                    _ => Match::String { value: normalize_string(&text), mode: StringMode::Prefix },
                }
            }
            ParamType::Token => parse_token(&part, modifier)?,
            ParamType::Reference if modifier == Some("identifier") => parse_token(&part, None)?,
            ParamType::Reference => parse_reference_value(&part, reference_type)?,
            ParamType::Date => {
                let (prefix, low, high) = prefixed_date(&part)?;
                check_comparator(def, prefix)?;
                Match::Date { prefix, low, high }
            }
            ParamType::Number => {
                let (prefix, rest) = split_prefix(&part);
                check_comparator(def, prefix)?;
                let (low, high) = decimal_range(&unescape(rest)).ok_or_else(|| invalid(format!("{code} needs a number")))?;
                let (low, high) = approximate(prefix, low, high);
                Match::Number { prefix, low, high }
            }
            ParamType::Quantity => {
                let (prefix, rest) = split_prefix(&part);
                check_comparator(def, prefix)?;
                parse_quantity(prefix, rest).ok_or_else(|| invalid(format!("{code} needs number|system|code")))?
            }
            ParamType::Uri => {
                let mode = match modifier {
                    Some("below") => UriMode::Below,
                    Some("above") => UriMode::Above,
                    _ => UriMode::Exact,
                };
                Match::Uri { value: unescape(&part), mode }
            }
            ParamType::Composite => parse_composite(def, &part)?,
            ParamType::Special => {
                return Err(unsupported(format!("search parameter {code} is not supported")));
            }
        };
    Ok(matcher)
}

/// composite (search.html#composite): the components' values joined by `$`
/// (`\$` is a literal dollar), each parsed as its component parameter is,
/// without modifiers; prefixes apply to the components that take them.
fn parse_composite(def: &SearchParamDef, part: &str) -> Result<Match, Issue> {
    let code = def.code.as_str();
    let components: Vec<&SearchParamDef> =
        def.components.iter().filter_map(|c| super::params::search_param_by_url(&c.definition)).collect();
    if components.is_empty()
        || components.len() != def.components.len()
        || components.len() > MAX_COMPOSITE_COMPONENTS
        || components.iter().any(|c| matches!(c.kind, ParamType::Composite | ParamType::Special))
    {
        return Err(unsupported(format!("search parameter {code} (composite) is not supported")));
    }
    let pieces = split_unescaped(part, '$');
    if pieces.len() != components.len() {
        return Err(invalid(format!("{code} needs {} values joined by $", components.len())));
    }
    let mut matchers = Vec::with_capacity(pieces.len());
    for (component, piece) in components.into_iter().zip(&pieces) {
        if piece.is_empty() {
            return Err(invalid(format!("{code} has an empty component")));
        }
        matchers.push(parse_value(component, None, None, piece)?);
    }
    Ok(Match::Composite(matchers))
}

/// Prefixes are allowed unless the definition lists its comparators without this one.
fn check_comparator(def: &SearchParamDef, prefix: Prefix) -> Result<(), Issue> {
    if def.comparators.is_empty() || prefix == Prefix::Eq || def.comparators.iter().any(|c| c == prefix_code(prefix)) {
        Ok(())
    } else {
        Err(unsupported(format!("prefix {} is not supported on {}", prefix_code(prefix), def.code)))
    }
}

fn prefix_code(prefix: Prefix) -> &'static str {
    match prefix {
        Prefix::Eq => "eq",
        Prefix::Ne => "ne",
        Prefix::Gt => "gt",
        Prefix::Lt => "lt",
        Prefix::Ge => "ge",
        Prefix::Le => "le",
        Prefix::Sa => "sa",
        Prefix::Eb => "eb",
        Prefix::Ap => "ap",
    }
}

/// Splits a leading comparison prefix (search.html#prefix) off a number,
/// date or quantity value.
fn split_prefix(value: &str) -> (Prefix, &str) {
    const PREFIXES: [(&str, Prefix); 9] = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (text, prefix) in PREFIXES {
        if let Some(rest) = value.strip_prefix(text) {
            return (prefix, rest);
        }
    }
    (Prefix::Eq, value)
}

fn prefixed_date(value: &str) -> Result<(Prefix, i64, i64), Issue> {
    let (prefix, rest) = split_prefix(value);
    // A `+` time-zone sign that was not percent-encoded arrives as a space.
    let text = unescape(rest).replace(' ', "+");
    let (low, high) = date_range(&text).ok_or_else(|| invalid("not a valid date, dateTime or instant"))?;
    Ok((prefix, low, high))
}

/// token (search.html#token): `code`, `system|code`, `|code`, `system|`;
/// `:not` negates, `:text` searches the display text.
fn parse_token(part: &str, modifier: Option<&str>) -> Result<Match, Issue> {
    match modifier {
        Some("text") => return Ok(Match::TokenText(normalize_string(&unescape(part)))),
        Some("of-type") => return parse_of_type(part),
        Some(m @ ("in" | "not-in")) => {
            return Ok(Match::InValueSet { value_set: unescape(part), negate: m == "not-in" });
        }
        Some(m @ ("above" | "below")) => {
            return match split_unescaped(part, '|').as_slice() {
                [system, code] if !system.is_empty() && !code.is_empty() => {
                    Ok(Match::Subsumption { system: unescape(system), code: unescape(code), below: m == "below" })
                }
                _ => Err(invalid(format!(":{m} needs system|code"))),
            };
        }
        _ => {}
    }
    let negate = modifier == Some("not");
    let pieces = split_unescaped(part, '|');
    let (system, code) = match pieces.as_slice() {
        [code] => (TokenSystem::Any, Some(unescape(code))),
        [system, code] => {
            let code = (!code.is_empty()).then(|| unescape(code));
            let system = if system.is_empty() { TokenSystem::NoSystem } else { TokenSystem::Is(unescape(system)) };
            if system == TokenSystem::NoSystem && code.is_none() {
                return Err(invalid("a token needs a system or a code"));
            }
            (system, code)
        }
        _ => return Err(invalid("a token is code, system|code, |code or system|")),
    };
    Ok(Match::Token { system, code, negate })
}

/// `:of-type` (search.html#token): `type-system|type-code|value` of an
/// Identifier, matched against the values [`of_type_param`] indexes. An
/// empty type system means the type coding has none.
fn parse_of_type(part: &str) -> Result<Match, Issue> {
    let pieces = split_unescaped(part, '|');
    let [system, type_code, value] = pieces.as_slice() else {
        return Err(invalid(":of-type needs system|code|value"));
    };
    if type_code.is_empty() || value.is_empty() {
        return Err(invalid(":of-type needs a type code and a value"));
    }
    let system = if system.is_empty() { TokenSystem::NoSystem } else { TokenSystem::Is(unescape(system)) };
    Ok(Match::Token { system, code: Some(of_type_code(&unescape(type_code), &unescape(value))), negate: false })
}

/// How an Identifier's type code and value are indexed for `:of-type`.
pub fn of_type_code(type_code: &str, value: &str) -> String {
    format!("{type_code}|{value}")
}

/// reference (search.html#reference): `id`, `Type/id`, an absolute URL or a
/// canonical; `:Type` sets the type of a plain id.
fn parse_reference_value(part: &str, modifier_type: Option<&str>) -> Result<Match, Issue> {
    let text = unescape(part);
    if text.contains("://") || text.starts_with("urn:") {
        return Ok(Match::ReferenceUrl(text));
    }
    let relative = text.split("/_history/").next().unwrap_or(&text);
    let (target_type, id) = match relative.split_once('/') {
        Some((t, id)) => {
            if !crate::fhirpath::looks_like_resource_type(t) {
                return Err(invalid("a reference is id, Type/id or an absolute URL"));
            }
            if modifier_type.is_some_and(|m| m != t) {
                return Err(invalid("the reference type contradicts the :Type modifier"));
            }
            (Some(t.to_string()), id)
        }
        None => (modifier_type.map(str::to_string), relative),
    };
    if !is_id(id) {
        return Err(invalid("a reference needs a valid id"));
    }
    Ok(Match::Reference { target_type, id: id.to_string() })
}

/// quantity (search.html#quantity): `number`, `number|system|code`, `number||code`.
fn parse_quantity(prefix: Prefix, rest: &str) -> Option<Match> {
    let pieces = split_unescaped(rest, '|');
    let (number, system, code) = match pieces.as_slice() {
        [n] => (n.as_str(), None, None),
        [n, s, c] => (n.as_str(), (!s.is_empty()).then(|| unescape(s)), (!c.is_empty()).then(|| unescape(c))),
        _ => return None,
    };
    let (low, high) = decimal_range(&unescape(number))?;
    let (low, high) = approximate(prefix, low, high);
    // UCUM units are compared in canonical form (extract.rs indexes every
    // UCUM quantity in that form too), so `0.5|ucum|g` finds 500 mg.
    if system.as_deref() == Some(UCUM)
        && let Some(unit) = code.as_deref()
        && let Some((low, high, canonical)) = canonical_range(low, high, unit)
    {
        return Some(Match::Quantity { prefix, low, high, system, code: Some(canonical) });
    }
    Some(Match::Quantity { prefix, low, high, system, code })
}

/// `ap` (search.html#prefix): approximately the value, taken as 10% of it
/// either side (or the value's own precision when wider); stores then
/// compare `ap` as an overlap of ranges.
fn approximate(prefix: Prefix, low: f64, high: f64) -> (f64, f64) {
    if prefix != Prefix::Ap {
        return (low, high);
    }
    let value = (low + high) / 2.0;
    let margin = value.abs() * 0.1;
    (low.min(value - margin), high.max(value + margin))
}

/// Splits on unescaped commas (search.html#escaping); escapes are kept for
/// the next split and removed by [`unescape`].
fn split_or(value: &str) -> Vec<String> {
    split_unescaped(value, ',')
}

fn split_unescaped(value: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            current.push(c);
            if let Some(next) = chars.next() {
                current.push(next);
            }
        } else if c == separator {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// Removes the search escapes `\,` `\|` `\$` `\\`; other backslashes stay.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, ',' | '|' | '$' | '\\')
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
