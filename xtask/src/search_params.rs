//! Generation of the SearchParameter table: `crates/fhir/definitions/search-parameters.json`
//! from the vendored core SearchParameter resources (`xtask/vendor/search-parameters.json.gz`).
//!
//! The table keeps what search needs of each core R4 parameter
//! (<http://hl7.org/fhir/R4/searchparameter.html>): code, url, base types, type,
//! FHIRPath expression, target types, multipleOr/multipleAnd, modifiers,
//! comparators and composite components. XPath and narrative are dropped.
//!
//! [`render`] is pure so that the fhir crate's staleness test can include this
//! file and compare the committed table with what the generator produces.

use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

/// The vendored input, relative to the workspace root.
pub(crate) const VENDORED: &str = "xtask/vendor/search-parameters.json.gz";
/// The generated output, relative to the workspace root.
pub(crate) const OUTPUT: &str = "crates/fhir/definitions/search-parameters.json";

/// Why the table could not be generated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SearchParamsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{VENDORED}: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{VENDORED}: {0}")]
    Input(String),
}

pub(crate) fn generate(root: &Path) -> Result<(), SearchParamsError> {
    let rendered = render_from_vendor(root)?;
    let out = root.join(OUTPUT);
    let io = |source| SearchParamsError::Io { path: out.display().to_string(), source };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&out, rendered).map_err(io)?;
    Ok(())
}

/// What [`generate`] would write, from the vendored input under `root`.
pub(crate) fn render_from_vendor(root: &Path) -> Result<String, SearchParamsError> {
    render(&read_vendored(root)?).map_err(SearchParamsError::Input)
}

/// Reads and decompresses the vendored JSON array of SearchParameter resources.
pub(crate) fn read_vendored(root: &Path) -> Result<Value, SearchParamsError> {
    let path = root.join(VENDORED);
    let io = |source| SearchParamsError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(&path).map_err(io)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).map_err(io)?;
    Ok(serde_json::from_str(&text)?)
}

/// Renders the table from the vendored input (a JSON array of SearchParameter
/// resources). Output: a JSON array, one parameter per line, sorted by url,
/// so diffs of a regeneration are readable.
pub(crate) fn render(input: &Value) -> Result<String, String> {
    let resources = input.as_array().ok_or("vendored input is not a JSON array")?;
    let mut rows: Vec<(String, Value)> = Vec::new();
    for resource in resources {
        if resource.get("resourceType").and_then(Value::as_str) != Some("SearchParameter") {
            return Err("vendored input holds something other than a SearchParameter".into());
        }
        // Experimental parameters in the package are examples and extension
        // parameters, not part of the core search API.
        if resource.get("experimental").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let url = str_field(resource, "url").ok_or("SearchParameter without url")?;
        rows.push((url.to_string(), row(resource, url)?));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = std::collections::BTreeSet::new();
    for (url, _) in &rows {
        if !seen.insert(url) {
            return Err(format!("duplicate SearchParameter url {url}"));
        }
    }
    let mut out = String::from("[\n");
    for (i, (_, row)) in rows.iter().enumerate() {
        out.push_str(&serde_json::to_string(row).map_err(|e| e.to_string())?);
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    Ok(out)
}

fn row(resource: &Value, url: &str) -> Result<Value, String> {
    let mut row = Map::new();
    let code = str_field(resource, "code").ok_or_else(|| format!("{url}: no code"))?;
    let kind = str_field(resource, "type").ok_or_else(|| format!("{url}: no type"))?;
    row.insert("code".into(), code.into());
    row.insert("url".into(), url.into());
    row.insert("type".into(), kind.into());
    let base = strings(resource, "base");
    if base.is_empty() {
        return Err(format!("{url}: no base"));
    }
    row.insert("base".into(), base.into());
    if let Some(expression) = str_field(resource, "expression") {
        row.insert("expression".into(), expression.into());
    }
    for (from, to) in [("target", "target"), ("modifier", "modifier"), ("comparator", "comparator"), ("chain", "chain")] {
        let list = strings(resource, from);
        if !list.is_empty() {
            row.insert(to.into(), list.into());
        }
    }
    for flag in ["multipleOr", "multipleAnd"] {
        if let Some(value) = resource.get(flag).and_then(Value::as_bool) {
            row.insert(flag.into(), value.into());
        }
    }
    if let Some(components) = resource.get("component").and_then(Value::as_array) {
        let mut out = Vec::new();
        for component in components {
            let definition =
                str_field(component, "definition").ok_or_else(|| format!("{url}: component without definition"))?;
            let expression =
                str_field(component, "expression").ok_or_else(|| format!("{url}: component without expression"))?;
            let mut c = Map::new();
            c.insert("definition".into(), definition.into());
            c.insert("expression".into(), expression.into());
            out.push(Value::Object(c));
        }
        row.insert("component".into(), out.into());
    }
    Ok(Value::Object(row))
}

fn str_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn strings(value: &Value, name: &str) -> Vec<Value> {
    value
        .get(name)
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).map(|s| Value::from(s.to_string())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_core_fields_drops_experimental_and_xpath() {
        let input = json!([
            {"resourceType": "SearchParameter", "url": "http://x/b", "code": "b", "type": "token",
             "base": ["Patient"], "expression": "Patient.b", "xpath": "f:Patient/f:b", "experimental": false},
            {"resourceType": "SearchParameter", "url": "http://x/a", "code": "a", "type": "reference",
             "base": ["Patient"], "expression": "Patient.a", "target": ["Group"], "multipleOr": true},
            {"resourceType": "SearchParameter", "url": "http://x/e", "code": "e", "type": "token",
             "base": ["Patient"], "experimental": true}
        ]);
        let out = render(&input).unwrap();
        assert_eq!(
            out,
            "[\n{\"code\":\"a\",\"url\":\"http://x/a\",\"type\":\"reference\",\"base\":[\"Patient\"],\"expression\":\"Patient.a\",\"target\":[\"Group\"],\"multipleOr\":true},\n\
             {\"code\":\"b\",\"url\":\"http://x/b\",\"type\":\"token\",\"base\":[\"Patient\"],\"expression\":\"Patient.b\"}\n]\n"
        );
    }
}
