//! Extraction of index values from a resource, per core SearchParameter.
//!
//! Every parameter's FHIRPath expression is compiled once and specialised per
//! resource type (see [`crate::fhirpath::Expr::for_resource_type`]); extraction
//! then evaluates the few expressions of one type and maps the FHIR data types
//! found to [`IndexValue`]s as <http://hl7.org/fhir/R4/search.html> describes
//! for each parameter type.
//!
//! Not indexed: `_id` and `_lastUpdated` (stores keep them as columns),
//! parameters without an expression (`_text`, `_content`, `_query`, `_filter`),
//! `special` parameters (`near`).
//!
//! Besides the values of each parameter, three kinds of derived values are
//! indexed: Identifier types for token `:of-type` (under
//! [`super::query::of_type_param`]), Reference identifiers for reference
//! `:identifier` (under [`super::query::reference_identifier_param`]), and
//! every UCUM quantity (alone or in a composite) a second time in canonical
//! units ([`super::ucum`], under [`super::query::canonical_param`]; apart, so
//! that a search without units still compares the values as written).
//! Composite parameters are indexed per element: one [`IndexValue::Composite`]
//! per element and combination of its component values.

use super::params::{ParamType, SearchParamDef, TABLE, search_param_by_url};
use super::query::{
    MAX_COMPOSITE_COMPONENTS, canonical_param, combined_of, of_type_code, of_type_param,
    reference_identifier_param,
};
use super::ranges::{date_range, decimal_range};
use super::ucum::{UCUM, canonical_range};
use super::{IndexEntry, IndexValue, normalize_string};
use crate::fhirpath::{Expr, Item};
use once_cell::sync::Lazy;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// One parameter compiled for one resource type.
struct Extractor {
    def: &'static SearchParamDef,
    expr: Expr,
    /// The parameter derived values are indexed under: `code:of-type` for
    /// tokens, `code:identifier` for references, `code:canonical` for
    /// quantities and composites.
    derived: Option<String>,
    /// A composite's components: type and expression relative to an element.
    components: Vec<(ParamType, Expr)>,
    /// The parameters of a composite's components: an element has values
    /// for all of them only if the resource has values for each.
    component_codes: Vec<&'static str>,
}

impl Extractor {
    fn new(def: &'static SearchParamDef, expr: Expr, components: &[(ParamType, Expr)]) -> Extractor {
        let derived = match def.kind {
            ParamType::Token => Some(of_type_param(&def.code)),
            ParamType::Reference => Some(reference_identifier_param(&def.code)),
            ParamType::Quantity | ParamType::Composite => Some(canonical_param(&def.code)),
            _ => None,
        };
        let component_codes =
            def.components.iter().filter_map(|c| search_param_by_url(&c.definition)).map(|d| d.code.as_str()).collect();
        Extractor { def, expr, derived, components: components.to_vec(), component_codes }
    }
}

/// Extractors per resource type, plus those of every resource (`Resource`,
/// `DomainResource` bases) for types without parameters of their own.
struct Compiled {
    by_type: HashMap<&'static str, Vec<Extractor>>,
    common: Vec<Extractor>,
    common_domain: Vec<Extractor>,
}

fn indexed(def: &SearchParamDef) -> bool {
    !matches!(def.code.as_str(), "_id" | "_lastUpdated")
        && def.kind != ParamType::Special
        && def.expression.is_some()
        // Searched through the parameters they combine (query.rs).
        && combined_of(def).is_none()
}

/// The components of a composite parameter, compiled; `None` when one cannot
/// be indexed (then neither is the composite). Empty for other parameters.
fn compile_components(def: &SearchParamDef) -> Option<Vec<(ParamType, Expr)>> {
    if def.kind != ParamType::Composite {
        return Some(Vec::new());
    }
    if def.components.is_empty() || def.components.len() > MAX_COMPOSITE_COMPONENTS {
        return None;
    }
    let defs: Vec<&SearchParamDef> =
        def.components.iter().map(|c| search_param_by_url(&c.definition)).collect::<Option<_>>()?;
    let mut expressions: Vec<&str> = def.components.iter().map(|c| c.expression.as_str()).collect();
    // R4's DocumentReference `relationship` gives each of its two components
    // the other's expression (`relatesto` is `code`, `relation` is `target`):
    // when every component's own parameter ends with the other's relative
    // expression and not with its own, the expressions are swapped back.
    let ends_with = |d: &SearchParamDef, e: &str| d.expression.as_deref().is_some_and(|x| x.ends_with(&format!(".{e}")));
    if let ([a, b], [ea, eb]) = (defs.as_slice(), expressions.as_slice())
        && !ends_with(a, ea)
        && !ends_with(b, eb)
        && ends_with(a, eb)
        && ends_with(b, ea)
    {
        expressions.swap(0, 1);
    }
    defs.iter()
        .zip(expressions)
        .map(|(d, expression)| {
            if matches!(d.kind, ParamType::Composite | ParamType::Special) {
                return None;
            }
            Some((d.kind, Expr::compile(expression).ok()?))
        })
        .collect()
}

static COMPILED: Lazy<Compiled> = Lazy::new(|| {
    let table = &*TABLE;
    let mut by_type: HashMap<&'static str, Vec<Extractor>> = HashMap::new();
    let mut common = Vec::new();
    let mut common_domain = Vec::new();
    for def in table.params.iter().filter(|d| indexed(d)) {
        // Every core expression compiles (tested); one that did not would
        // only lose its own index values.
        let Some(Ok(expr)) = def.expression.as_deref().map(Expr::compile) else { continue };
        let Some(components) = compile_components(def) else { continue };
        for base in &def.base {
            let specialised = expr.for_resource_type(base);
            if specialised.is_empty() {
                continue;
            }
            let extractor = Extractor::new(def, specialised, &components);
            match base.as_str() {
                "Resource" => common.push(extractor),
                "DomainResource" => common_domain.push(extractor),
                _ => by_type.entry(base.as_str()).or_default().push(extractor),
            }
        }
    }
    Compiled { by_type, common, common_domain }
});

/// Values of one parameter compared for duplicates, at most.
const DEDUP_LIMIT: usize = 64;

/// All index entries of `resource` for the core search parameters of its
/// type. Servers call [`super::Registry::extract`], which adds the custom ones.
pub fn extract(resource: &Value) -> Vec<IndexEntry> {
    extract_core(resource)
}

pub(super) fn extract_core(resource: &Value) -> Vec<IndexEntry> {
    let Some(resource_type) = resource.as_object().and_then(|m| field(m, "resourceType")).and_then(Value::as_str) else {
        return Vec::new();
    };
    let compiled = &*COMPILED;
    let own = compiled.by_type.get(resource_type).map(Vec::as_slice).unwrap_or_default();
    let domain: &[Extractor] =
        if matches!(resource_type, "Bundle" | "Binary" | "Parameters") { &[] } else { &compiled.common_domain };
    let mut out = Vec::new();
    let mut values = Vec::with_capacity(8);
    let mut canonical = Vec::new();
    // Composites last: one is skipped when a component's own parameter has
    // no value (most Observations have no `value-concept`, `value-date`...).
    let extractors = || own.iter().chain(domain).chain(&compiled.common);
    let plain = extractors().filter(|e| e.def.kind != ParamType::Composite);
    for extractor in plain.chain(extractors().filter(|e| e.def.kind == ParamType::Composite)) {
        if !extractor.component_codes.iter().all(|code| out.iter().any(|e: &IndexEntry| e.param == *code)) {
            continue;
        }
        values.clear();
        let items = extractor.expr.evaluate(resource);
        if extractor.def.kind == ParamType::Composite {
            for item in &items {
                composite_values(resource, *item, &extractor.components, &mut values);
            }
        } else {
            for item in &items {
                index_item(extractor.def.kind, item, &mut values);
            }
        }
        let Some(derived) = &extractor.derived else {
            push_unique(&mut out, &extractor.def.code, &mut values);
            continue;
        };
        if matches!(extractor.def.kind, ParamType::Quantity | ParamType::Composite) {
            canonical.clear();
            canonical.extend(values.iter().filter_map(canonical_value));
            push_unique(&mut out, &extractor.def.code, &mut values);
            values.append(&mut canonical);
        } else {
            push_unique(&mut out, &extractor.def.code, &mut values);
            for item in &items {
                derived_values(extractor.def.kind, item, &mut values);
            }
        }
        if !values.is_empty() {
            push_unique(&mut out, derived, &mut values);
        }
    }
    out
}

/// Appends `values` (drained) as entries of `param`.
fn push_unique(out: &mut Vec<IndexEntry>, param: &str, values: &mut Vec<IndexValue>) {
    let start = out.len();
    for value in values.drain(..) {
        // FHIRPath unions already de-duplicate nodes; equal values from
        // different nodes (two identical codings) are stored once. Past
        // a few dozen values (a Group's members) duplicates are kept
        // rather than compared pairwise: they cost a row, not a wrong match.
        let seen = &out[start..];
        if seen.len() > DEDUP_LIMIT || !seen.iter().any(|e: &IndexEntry| e.value == value) {
            out.push(IndexEntry { param: param.to_string(), value });
        }
    }
}

/// Values indexed beside a parameter's own: for a token, each Identifier
/// type coding with the identifier's value (`:of-type`); for a reference,
/// the Reference's `identifier` as a token (`:identifier`).
fn derived_values(kind: ParamType, item: &Item<'_>, out: &mut Vec<IndexValue>) {
    let Item::Node { value: Value::Object(map), .. } = *item else { return };
    match kind {
        ParamType::Token => {
            let Some(value) = text(map, "value") else { return };
            let Some(Value::Object(id_type)) = field(map, "type") else { return };
            for coding in field(id_type, "coding").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                if let Value::Object(c) = coding
                    && let Some(code) = text(c, "code")
                {
                    let system = text(c, "system").map(str::to_string);
                    out.push(IndexValue::Token { system, code: Some(of_type_code(code, value)), text: None });
                }
            }
        }
        ParamType::Reference => {
            if let Some(Value::Object(identifier)) = field(map, "identifier")
                && let Some(value) = text(identifier, "value")
            {
                let system = text(identifier, "system").map(str::to_string);
                out.push(IndexValue::Token { system, code: Some(value.to_string()), text: None });
            }
        }
        _ => {}
    }
}

/// Combinations of component values one composite element may yield, at most.
const COMPOSITE_LIMIT: usize = 64;

/// The composite values of one element: the component expressions are
/// evaluated on the element, and every combination of their values is one
/// value. Tokens without a code (a CodeableConcept's text) take no part, nor
/// does a quantity's human unit indexed beside its code (one value per
/// quantity). Every component is evaluated before any value is made, so an
/// element without one of them (most Observations for `code-value-date`)
/// costs no allocation.
fn composite_values<'a>(
    resource: &'a Value,
    element: Item<'a>,
    components: &'a [(ParamType, Expr)],
    out: &mut Vec<IndexValue>,
) {
    // Last component first: values are absent more often than codes.
    let mut found: Vec<Vec<Item<'a>>> = Vec::with_capacity(components.len());
    for (_, expr) in components.iter().rev() {
        let items = expr.evaluate_on(resource, element);
        if items.is_empty() {
            return;
        }
        found.push(items);
    }
    found.reverse();
    let mut values: Vec<Vec<IndexValue>> = Vec::with_capacity(components.len());
    for ((kind, _), items) in components.iter().zip(&found) {
        let mut parts = Vec::with_capacity(items.len());
        for item in items {
            let before = parts.len();
            match (*kind, *item) {
                (ParamType::Token, Item::Node { value, ty }) => token_codes(value, ty, &mut parts),
                _ => index_item(*kind, item, &mut parts),
            }
            if *kind == ParamType::Quantity {
                parts.truncate(before + 1);
            }
        }
        parts.retain(|v| !matches!(v, IndexValue::Token { code: None, .. }));
        if parts.is_empty() {
            return;
        }
        values.push(parts);
    }
    // Every combination, each part cloned once into its row.
    let total = values.iter().map(Vec::len).product::<usize>().min(COMPOSITE_LIMIT);
    for n in 0..total {
        let mut rest = n;
        let mut row = Vec::with_capacity(values.len());
        for parts in values.iter().rev() {
            row.push(parts[rest % parts.len()].clone());
            rest /= parts.len();
        }
        row.reverse();
        out.push(IndexValue::Composite(row));
    }
}

/// Index values of the items an expression yielded, for a parameter of `kind`.
pub(super) fn index_values(kind: ParamType, items: &[Item<'_>], out: &mut Vec<IndexValue>) {
    for item in items {
        index_item(kind, item, out);
    }
}

fn index_item(kind: ParamType, item: &Item<'_>, out: &mut Vec<IndexValue>) {
    match *item {
        Item::Node { value, ty } => match kind {
            ParamType::String => string_values(value, ty, out),
            ParamType::Token => token_values(value, ty, out),
            ParamType::Reference => reference_values(value, out),
            ParamType::Date => date_values(value, ty, out),
            ParamType::Number => number_values(value, out),
            ParamType::Quantity => quantity_values(value, ty, out),
            ParamType::Uri => {
                if let Value::String(s) = value {
                    out.push(IndexValue::Uri { value: s.clone() });
                }
            }
            ParamType::Composite | ParamType::Special => {}
        },
        // `Patient.deceased.exists() and ...` yields a boolean for a token.
        Item::Boolean(b) if kind == ParamType::Token => {
            out.push(IndexValue::Token { system: None, code: Some(b.to_string()), text: None });
        }
        _ => {}
    }
}

/// `map[key]`. FHIR objects are small: comparing keys beats hashing the name.
fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() > 16 {
        return map.get(key);
    }
    map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
}

fn has(map: &Map<String, Value>, key: &str) -> bool {
    field(map, key).is_some()
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    field(map, key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn texts<'a>(map: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a str> {
    let value = field(map, key);
    let list = value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let single = value.filter(|v| v.is_string());
    list.iter().chain(single).filter_map(Value::as_str).filter(|s| !s.is_empty())
}

fn push_string(s: &str, out: &mut Vec<IndexValue>) {
    if !s.trim().is_empty() {
        out.push(IndexValue::String { normalized: normalize_string(s), exact: s.to_string() });
    }
}

const ADDRESS_PARTS: [&str; 7] = ["line", "city", "district", "state", "postalCode", "country", "text"];
const NAME_PARTS: [&str; 5] = ["family", "given", "prefix", "suffix", "text"];

/// string (search.html#string): a string, or each part of a HumanName
/// (family, given, prefix, suffix, text) or an Address (line, city, district,
/// state, postalCode, country, text).
fn string_values(value: &Value, ty: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::String(s) => push_string(s, out),
        Value::Object(map) => {
            let is_address = ty == Some("Address")
                || (ty.is_none() && ["line", "city", "district", "state", "postalCode", "country"].iter().any(|k| has(map, k)));
            let parts: &[&str] = if is_address { &ADDRESS_PARTS } else { &NAME_PARTS };
            for part in parts {
                for s in texts(map, part) {
                    push_string(s, out);
                }
            }
        }
        _ => {}
    }
}

/// ContactPoint.system codes (valueset-contact-point-system.html): an
/// Identifier.system is a URI, so these tell the two apart when the type is unknown.
const CONTACT_POINT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];

/// token (search.html#token): Coding system|code, every coding of a
/// CodeableConcept plus its text, Identifier system|value with type text,
/// ContactPoint system|value, and primitive code/string/uri/id/boolean values.
/// Texts (display, CodeableConcept.text, Identifier.type.text) are normalized
/// for `:text`.
fn token_values(value: &Value, ty: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(IndexValue::Token { system: None, code: Some(s.clone()), text: None }),
        Value::Bool(b) => out.push(IndexValue::Token { system: None, code: Some(b.to_string()), text: None }),
        Value::Number(n) => out.push(IndexValue::Token { system: None, code: Some(n.to_string()), text: None }),
        Value::Object(map) => {
            let system = text(map, "system").map(str::to_string);
            if ty == Some("CodeableConcept") || has(map, "coding") || (ty.is_none() && only_text(map)) {
                for coding in field(map, "coding").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                    if let Value::Object(c) = coding {
                        coding_token(c, out);
                    }
                }
                if let Some(t) = text(map, "text") {
                    out.push(IndexValue::Token { system: None, code: None, text: Some(normalize_string(t)) });
                }
            } else if ty == Some("Coding") || (ty.is_none() && has(map, "code")) {
                coding_token(map, out);
            } else if let Some(v) = text(map, "value") {
                let is_contact = ty == Some("ContactPoint")
                    || (ty.is_none() && system.as_deref().is_some_and(|s| CONTACT_POINT_SYSTEMS.contains(&s)));
                let type_text = if is_contact {
                    None
                } else {
                    field(map, "type").and_then(|t| t.get("text")).and_then(Value::as_str).map(normalize_string)
                };
                out.push(IndexValue::Token { system, code: Some(v.to_string()), text: type_text });
            }
        }
        _ => {}
    }
}

/// The `system|code` tokens of a value, without the texts only `:text`
/// uses: composite components take no modifiers.
fn token_codes(value: &Value, ty: Option<&str>, out: &mut Vec<IndexValue>) {
    let Value::Object(map) = value else {
        token_values(value, ty, out);
        return;
    };
    let code_of = |c: &Map<String, Value>, key: &str| {
        text(c, key).map(|code| IndexValue::Token {
            system: text(c, "system").map(str::to_string),
            code: Some(code.to_string()),
            text: None,
        })
    };
    if ty == Some("CodeableConcept") || has(map, "coding") {
        for coding in field(map, "coding").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            if let Value::Object(c) = coding {
                out.extend(code_of(c, "code"));
            }
        }
    } else if ty == Some("Coding") || (ty.is_none() && has(map, "code")) {
        out.extend(code_of(map, "code"));
    } else {
        out.extend(code_of(map, "value"));
    }
}

fn only_text(map: &Map<String, Value>) -> bool {
    has(map, "text") && !has(map, "code") && !has(map, "value")
}

fn coding_token(c: &Map<String, Value>, out: &mut Vec<IndexValue>) {
    let system = text(c, "system").map(str::to_string);
    let code = text(c, "code").map(str::to_string);
    let display = text(c, "display").map(normalize_string);
    if system.is_some() || code.is_some() || display.is_some() {
        out.push(IndexValue::Token { system, code, text: display });
    }
}

/// reference (search.html#reference): a relative `Type/id` is split; an
/// absolute URL, a `urn:` or a canonical keeps its text in `url` (a canonical
/// with `|version` is also indexed without it). An embedded resource
/// (`Bundle.entry[0].resource`) is indexed as a reference to itself.
fn reference_values(value: &Value, out: &mut Vec<IndexValue>) {
    match value {
        Value::Object(map) => {
            if let Some(reference) = text(map, "reference") {
                out.push(parse_reference(reference));
            } else if let (Some(rt), Some(id)) = (text(map, "resourceType"), text(map, "id")) {
                out.push(IndexValue::Reference {
                    target_type: Some(rt.to_string()),
                    target_id: Some(id.to_string()),
                    url: format!("{rt}/{id}"),
                });
            }
        }
        Value::String(url) if !url.is_empty() => {
            out.push(IndexValue::Reference { target_type: None, target_id: None, url: url.clone() });
            if let Some((unversioned, _)) = url.split_once('|') {
                out.push(IndexValue::Reference { target_type: None, target_id: None, url: unversioned.to_string() });
            }
        }
        _ => {}
    }
}

/// Splits a literal reference (references.html#literal). `Type/id` and
/// `Type/id/_history/n` are relative; anything else keeps its text only.
pub fn parse_reference(reference: &str) -> IndexValue {
    let relative = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    if let Some((rt, id)) = relative.split_once('/')
        && rt.starts_with(|c: char| c.is_ascii_uppercase())
        && rt.bytes().all(|c| c.is_ascii_alphanumeric())
        && is_id(id)
    {
        return IndexValue::Reference {
            target_type: Some(rt.to_string()),
            target_id: Some(id.to_string()),
            url: relative.to_string(),
        };
    }
    IndexValue::Reference { target_type: None, target_id: None, url: reference.to_string() }
}

/// A FHIR id: 1-64 of `[A-Za-z0-9\-\.]` (datatypes.html#id).
pub(crate) fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

/// date (search.html#date): date, dateTime and instant by their precision;
/// Period from start to end (open ends unbounded); Timing from its earliest
/// to its latest event, widened by `repeat.boundsPeriod`.
fn date_values(value: &Value, ty: Option<&str>, out: &mut Vec<IndexValue>) {
    match value {
        Value::String(s) => {
            if let Some((low, high)) = date_range(s) {
                out.push(IndexValue::Date { low, high });
            }
        }
        Value::Object(map) => {
            let is_timing = ty == Some("Timing") || (ty.is_none() && (has(map, "event") || has(map, "repeat")));
            if is_timing {
                let mut range: Option<(i64, i64)> = None;
                let mut widen = |r: (i64, i64)| {
                    range = Some(range.map_or(r, |(l, h)| (l.min(r.0), h.max(r.1))));
                };
                for event in texts(map, "event") {
                    if let Some(r) = date_range(event) {
                        widen(r);
                    }
                }
                if let Some(Value::Object(bounds)) = field(map, "repeat").and_then(|r| r.get("boundsPeriod"))
                    && let Some(r) = period_range(bounds)
                {
                    widen(r);
                }
                if let Some((low, high)) = range {
                    out.push(IndexValue::Date { low, high });
                }
            } else if let Some((low, high)) = period_range(map) {
                out.push(IndexValue::Date { low, high });
            }
        }
        _ => {}
    }
}

fn period_range(map: &Map<String, Value>) -> Option<(i64, i64)> {
    let start = text(map, "start").and_then(date_range);
    let end = text(map, "end").and_then(date_range);
    if start.is_none() && end.is_none() {
        return None;
    }
    Some((start.map_or(i64::MIN, |r| r.0), end.map_or(i64::MAX, |r| r.1)))
}

/// The range a JSON number's written precision implies (`1.50` keeps its text
/// thanks to serde_json's arbitrary_precision).
fn number_range(value: &Value) -> Option<(f64, f64)> {
    match value {
        Value::Number(n) => decimal_range(&n.to_string()),
        _ => None,
    }
}

/// number (search.html#number): decimals and integers with their precision;
/// a Range from its low to its high.
fn number_values(value: &Value, out: &mut Vec<IndexValue>) {
    if let Some((low, high)) = number_range(value) {
        out.push(IndexValue::Number { low, high });
    } else if let Value::Object(map) = value {
        if let Some((low, high, _, _)) = range_bounds(map) {
            out.push(IndexValue::Number { low, high });
        } else if let Some((low, high)) = field(map, "value").and_then(number_range) {
            out.push(IndexValue::Number { low, high });
        }
    }
}

/// A Range as (low, high, system, code): open ends are unbounded.
fn range_bounds(map: &Map<String, Value>) -> Option<(f64, f64, Option<String>, Option<String>)> {
    let low = field(map, "low");
    let high = field(map, "high");
    if low.is_none() && high.is_none() {
        return None;
    }
    let bound = |q: Option<&Value>| q.and_then(|q| q.get("value")).and_then(number_range);
    let unit = low.or(high).and_then(Value::as_object);
    Some((
        bound(low).map_or(f64::NEG_INFINITY, |r| r.0),
        bound(high).map_or(f64::INFINITY, |r| r.1),
        unit.and_then(|u| text(u, "system")).map(str::to_string),
        unit.and_then(|u| text(u, "code").or_else(|| text(u, "unit"))).map(str::to_string),
    ))
}

const ISO_4217: &str = "urn:iso:std:iso:4217";

/// quantity (search.html#quantity): a Quantity (and its profiles Age,
/// Duration, ... ) by value precision, system and code. When the human unit
/// differs from the code it is indexed too, without a system, so that
/// `5.4||mg` finds a quantity whose `unit` is `mg`. Money uses its currency
/// with the ISO 4217 system; Range its bounds. SampledData is not indexed.
fn quantity_values(value: &Value, ty: Option<&str>, out: &mut Vec<IndexValue>) {
    let Value::Object(map) = value else {
        if let Some((low, high)) = number_range(value) {
            out.push(IndexValue::Quantity { low, high, system: None, code: None });
        }
        return;
    };
    if ty == Some("SampledData") {
        return;
    }
    if ty == Some("Range") || (ty.is_none() && (has(map, "low") || has(map, "high"))) {
        if let Some((low, high, system, code)) = range_bounds(map) {
            out.push(IndexValue::Quantity { low, high, system, code });
        }
        return;
    }
    let Some((low, high)) = field(map, "value").and_then(number_range) else { return };
    if let Some(currency) = text(map, "currency") {
        out.push(IndexValue::Quantity { low, high, system: Some(ISO_4217.into()), code: Some(currency.into()) });
        return;
    }
    let system = text(map, "system").map(str::to_string);
    let code = text(map, "code");
    let unit = text(map, "unit");
    out.push(IndexValue::Quantity { low, high, system, code: code.or(unit).map(str::to_string) });
    if let (Some(code), Some(unit)) = (code, unit)
        && code != unit
    {
        out.push(IndexValue::Quantity { low, high, system: None, code: Some(unit.to_string()) });
    }
}

/// A UCUM quantity in canonical units ([`super::ucum`]), when its unit is
/// understood; a composite with its UCUM quantities so converted. Indexed
/// under [`super::query::canonical_param`], so that searches in any
/// commensurable unit find it.
fn canonical_value(value: &IndexValue) -> Option<IndexValue> {
    match value {
        IndexValue::Quantity { low, high, system: Some(system), code: Some(code) } if system == UCUM => {
            let (low, high, unit) = canonical_range(*low, *high, code)?;
            Some(IndexValue::Quantity { low, high, system: Some(UCUM.to_string()), code: Some(unit) })
        }
        IndexValue::Composite(parts) => {
            let ucum = |p: &IndexValue| matches!(p, IndexValue::Quantity { system: Some(s), code: Some(_), .. } if s == UCUM);
            if !parts.iter().any(ucum) {
                return None;
            }
            let mut converted = Vec::with_capacity(parts.len());
            let mut any = false;
            for part in parts {
                match canonical_value(part) {
                    Some(c) => {
                        any = true;
                        converted.push(c);
                    }
                    None => converted.push(part.clone()),
                }
            }
            any.then_some(IndexValue::Composite(converted))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
