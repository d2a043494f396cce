//! Generation of the compartment table: `crates/fhir/definitions/compartments.json`
//! from the vendored base CompartmentDefinitions (`xtask/vendor/compartments.json.gz`).
//!
//! A compartment (<http://hl7.org/fhir/R4/compartmentdefinition.html>) is the set of
//! resources linked to one owner resource (a Patient, an Encounter...). Each base
//! CompartmentDefinition lists, per resource type, the search parameters whose values
//! reference the owner; `{def}` stands for the owner resource itself. Resource types
//! the definition lists without parameters are not in the compartment and are left out.
//!
//! The table is a JSON object: compartment type → resource type → parameter codes (in
//! the definition's order), keys sorted, one resource type per line.
//!
//! [`render`] is pure so that the fhir crate's staleness test can include this file and
//! compare the committed table with what the generator produces.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The vendored input, relative to the workspace root.
pub(crate) const VENDORED: &str = "xtask/vendor/compartments.json.gz";
/// The generated output, relative to the workspace root.
pub(crate) const OUTPUT: &str = "crates/fhir/definitions/compartments.json";

/// The compartment types of FHIR R4, with the canonical URL of each base definition
/// (<http://hl7.org/fhir/R4/valueset-compartment-type.html>).
const BASE: [(&str, &str); 5] = [
    ("Device", "http://hl7.org/fhir/CompartmentDefinition/device"),
    ("Encounter", "http://hl7.org/fhir/CompartmentDefinition/encounter"),
    ("Patient", "http://hl7.org/fhir/CompartmentDefinition/patient"),
    ("Practitioner", "http://hl7.org/fhir/CompartmentDefinition/practitioner"),
    ("RelatedPerson", "http://hl7.org/fhir/CompartmentDefinition/relatedPerson"),
];

/// Why the table could not be generated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompartmentsError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{VENDORED}: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{VENDORED}: {0}")]
    Input(String),
}

pub(crate) fn generate(root: &Path) -> Result<(), CompartmentsError> {
    let rendered = render_from_vendor(root)?;
    let out = root.join(OUTPUT);
    let io = |source| CompartmentsError::Io { path: out.display().to_string(), source };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&out, rendered).map_err(io)?;
    Ok(())
}

/// What [`generate`] would write, from the vendored input under `root`.
pub(crate) fn render_from_vendor(root: &Path) -> Result<String, CompartmentsError> {
    render(&read_vendored(root)?).map_err(CompartmentsError::Input)
}

/// Reads and decompresses the vendored JSON array of CompartmentDefinition resources.
pub(crate) fn read_vendored(root: &Path) -> Result<Value, CompartmentsError> {
    let path = root.join(VENDORED);
    let io = |source| CompartmentsError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(&path).map_err(io)?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).map_err(io)?;
    Ok(serde_json::from_str(&text)?)
}

/// Renders the table from the vendored input (a JSON array holding exactly the five
/// base CompartmentDefinitions).
pub(crate) fn render(input: &Value) -> Result<String, String> {
    let resources = input.as_array().ok_or("vendored input is not a JSON array")?;
    let mut table: BTreeMap<&str, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for resource in resources {
        if resource.get("resourceType").and_then(Value::as_str) != Some("CompartmentDefinition") {
            return Err("vendored input holds something other than a CompartmentDefinition".into());
        }
        let code = str_field(resource, "code").ok_or("CompartmentDefinition without code")?;
        let url = str_field(resource, "url").ok_or_else(|| format!("{code}: no url"))?;
        if !BASE.iter().any(|(c, u)| *c == code && *u == url) {
            return Err(format!("{url} is not the base definition of a compartment type"));
        }
        let mut types = BTreeMap::new();
        let entries = resource.get("resource").and_then(Value::as_array).ok_or_else(|| format!("{url}: no resource list"))?;
        for entry in entries {
            let resource_type = str_field(entry, "code").ok_or_else(|| format!("{url}: resource without code"))?;
            let params: Vec<&str> = match entry.get("param") {
                None => Vec::new(),
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|p| p.as_str().map(str::trim).filter(|p| !p.is_empty()))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("{url}: {resource_type} has a param that is not a code"))?,
                Some(_) => return Err(format!("{url}: {resource_type}.param is not a list")),
            };
            if params.is_empty() {
                continue;
            }
            if types.insert(resource_type, params).is_some() {
                return Err(format!("{url}: {resource_type} is listed twice"));
            }
        }
        if table.insert(code, types).is_some() {
            return Err(format!("{code} is defined twice"));
        }
    }
    if table.len() != BASE.len() {
        return Err(format!("expected the {} base compartments, found {}", BASE.len(), table.len()));
    }
    let mut out = String::from("{\n");
    for (i, (compartment, types)) in table.iter().enumerate() {
        out.push_str(&format!("  {}: {{\n", quoted(compartment)?));
        for (j, (resource_type, params)) in types.iter().enumerate() {
            let list = serde_json::to_string(params).map_err(|e| e.to_string())?;
            out.push_str(&format!("    {}: {list}", quoted(resource_type)?));
            out.push_str(if j + 1 < types.len() { ",\n" } else { "\n" });
        }
        out.push_str(if i + 1 < table.len() { "  },\n" } else { "  }\n" });
    }
    out.push_str("}\n");
    Ok(out)
}

fn quoted(text: &str) -> Result<String, String> {
    serde_json::to_string(text).map_err(|e| e.to_string())
}

fn str_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(code: &str, url: &str, resources: Value) -> Value {
        json!({"resourceType": "CompartmentDefinition", "code": code, "url": url, "resource": resources})
    }

    fn all_five(patient_resources: Value) -> Value {
        let mut list: Vec<Value> = BASE
            .iter()
            .filter(|(c, _)| *c != "Patient")
            .map(|(c, u)| definition(c, u, json!([{"code": c, "param": ["{def}"]}])))
            .collect();
        list.push(definition("Patient", "http://hl7.org/fhir/CompartmentDefinition/patient", patient_resources));
        Value::Array(list)
    }

    #[test]
    fn keeps_linked_types_only_in_sorted_order() {
        let input = all_five(json!([
            {"code": "Observation", "param": ["subject", "performer"]},
            {"code": "Medication"},
            {"code": "Account", "param": ["subject"]}
        ]));
        let out = render(&input).unwrap();
        assert!(out.contains("  \"Patient\": {\n    \"Account\": [\"subject\"],\n    \"Observation\": [\"subject\",\"performer\"]\n  }"), "{out}");
        assert!(!out.contains("Medication"));
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["Device"]["Device"], json!(["{def}"]));
        assert_eq!(parsed.as_object().unwrap().len(), 5);
    }

    #[test]
    fn refuses_unknown_or_missing_definitions() {
        let mut input = all_five(json!([]));
        input.as_array_mut().unwrap().push(definition("Device", "http://x/example", json!([])));
        assert!(render(&input).unwrap_err().contains("not the base definition"));
        let mut four = all_five(json!([]));
        four.as_array_mut().unwrap().pop();
        assert!(render(&four).unwrap_err().contains("expected the 5"));
    }
}
