//! FHIR search: the values a resource is indexed under, and the query IR that
//! every store evaluates. See <http://hl7.org/fhir/R4/search.html>.
//!
//! Data flow: on every write, [`extract`] turns a resource into [`IndexEntry`]
//! rows (one table per parameter type in SQL stores). On search, [`query`]
//! parses URL parameters into a [`query::SearchQuery`] which the in-memory store
//! and the SQL builder evaluate identically.

mod chain;
pub mod extract;
pub mod include;
pub mod params;
pub mod query;
pub mod ranges;
pub mod registry;
pub mod text;
pub mod ucum;

pub use extract::extract;
pub use params::{ParamType, SearchParamDef, params_for, search_param};
pub use registry::Registry;

/// One value a resource is indexed under for one search parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// The search parameter code, e.g. `identifier`, `family`, `subject`.
    pub param: String,
    pub value: IndexValue,
}

/// An indexed value by parameter type. Ranges are inclusive and express the
/// implicit precision of the source value (a date `2024-03` covers the month).
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `normalized` is lower-cased with accents removed ([`normalize_string`]);
    /// `exact` is the text as written.
    String { normalized: String, exact: String },
    /// Coding, Identifier, ContactPoint, code, boolean... `system` is `None`
    /// when the value has no system. `text` holds display/text for `:text`,
    /// normalized with [`normalize_string`]. A CodeableConcept's own text is
    /// an entry with `code: None`.
    Token { system: Option<String>, code: Option<String>, text: Option<String> },
    /// A Reference. Relative references are split into type and id; absolute
    /// and canonical references keep the full `url`.
    Reference { target_type: Option<String>, target_id: Option<String>, url: String },
    /// Date, dateTime, instant, Period, Timing as an inclusive range in
    /// microseconds since the epoch (UTC). Open ends use i64::MIN / i64::MAX.
    Date { low: i64, high: i64 },
    /// A number with its implicit precision range: `1.5` is [1.45, 1.55]
    /// (the spec's range is half-open; stores may treat `high` as exclusive).
    Number { low: f64, high: f64 },
    /// A Quantity value with its precision range, system and code (unit).
    Quantity { low: f64, high: f64, system: Option<String>, code: Option<String> },
    Uri { value: String },
    /// One element of a composite parameter (search.html#composite): a value
    /// per component, in the parameter's component order, all taken from the
    /// same element (one `Observation.component`, say). An element whose
    /// components have several values is indexed once per combination.
    Composite(Vec<IndexValue>),
}

/// Lower-cases and strips combining accents: the FHIR default string match
/// is case- and accent-insensitive.
pub fn normalize_string(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    // Fast path: ASCII has no combining marks (most index values).
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    use unicode_normalization::char::is_combining_mark;
    text.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_accents() {
        assert_eq!(normalize_string("Ñúñez O'Brien"), "nunez o'brien");
    }
}
