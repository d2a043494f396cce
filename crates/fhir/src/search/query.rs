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
