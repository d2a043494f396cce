//! Generation of the structure and value-set tables that the fhir crate's validator
//! reads: `crates/fhir/definitions/structures.json` and `crates/fhir/definitions/valuesets.json`,
//! from the vendored core StructureDefinitions, ValueSets and CodeSystems (`xtask/vendor/`).
//!
//! `structures.json` holds, for every R4 datatype and resource
//! (<http://hl7.org/fhir/R4/structuredefinition.html>), the snapshot's elements as
//! `[path, min, max, types, required value set or null]`, one element per line. A type is
//! written as in the spec's tables:
//! - `code`, `HumanName`, `BackboneElement`: the type code;
//! - `Reference(Patient|Group)`, `canonical(ValueSet)`: with the target type names
//!   (target profiles reduced to core type names; none means any);
//! - `@string`, `@uri`: a FHIRPath System type (`Element.id`, `Extension.url`), which the
//!   JSON format represents as a bare property without a `_name` extension sibling;
//! - `#Questionnaire.item`: the element reuses the children of another element (contentReference).
//!
//! It also lists each primitive type with the regex its `value` element declares.
//!
//! `valuesets.json` holds, for every value set named by a `required` binding, its codes
//! grouped by code system, or the reason it cannot be expanded from the package (then
//! the validator does not check it rather than guess).
//!
//! [`render`] is pure, so that the fhir crate's staleness test can include this file and
//! compare the committed tables with what the generator produces now.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The vendored inputs, relative to the workspace root.
pub(crate) const STRUCTURES_IN: &str = "xtask/vendor/structure-definitions.json.gz";
pub(crate) const VALUE_SETS_IN: &str = "xtask/vendor/value-sets.json.gz";
pub(crate) const CODE_SYSTEMS_IN: &str = "xtask/vendor/code-systems.json.gz";
/// The generated tables' directory, relative to the workspace root.
pub(crate) const OUTPUT_DIR: &str = "crates/fhir/definitions";
pub(crate) const STRUCTURES_OUT: &str = "structures.json";
pub(crate) const VALUE_SETS_OUT: &str = "valuesets.json";

const CORE_SD: &str = "http://hl7.org/fhir/StructureDefinition/";
const FHIR_TYPE_EXT: &str = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";
const REGEX_EXT: &str = "http://hl7.org/fhir/StructureDefinition/regex";
const SYSTEM_PREFIX: &str = "http://hl7.org/fhirpath/System.";

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodegenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("definitions: {0}")]
    Definition(String),
}

fn bad(message: impl Into<String>) -> CodegenError {
    CodegenError::Definition(message.into())
}

/// Regenerates the tables under `root` (the workspace root).
pub(crate) fn generate(root: &Path) -> Result<(), CodegenError> {
    let dir = root.join(OUTPUT_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| CodegenError::Io { path: dir.clone(), source })?;
    for (name, text) in render_from_vendor(root)? {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| CodegenError::Io { path, source })?;
    }
    Ok(())
}

/// Reads the vendored inputs under `root` and renders the tables as `(file name, text)`.
pub(crate) fn render_from_vendor(root: &Path) -> Result<Vec<(&'static str, String)>, CodegenError> {
    let structures = read_gz_json(&root.join(STRUCTURES_IN))?;
    let value_sets = read_gz_json(&root.join(VALUE_SETS_IN))?;
    let code_systems = read_gz_json(&root.join(CODE_SYSTEMS_IN))?;
    render(&structures, &value_sets, &code_systems)
}

fn read_gz_json(path: &Path) -> Result<Value, CodegenError> {
    let file = std::fs::File::open(path).map_err(|source| CodegenError::Io { path: path.to_path_buf(), source })?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|source| CodegenError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| CodegenError::Json { path: path.to_path_buf(), source })
}

/// Renders both tables from the three vendored arrays (StructureDefinitions, ValueSets,
/// CodeSystems). Deterministic: types sorted by name, elements in snapshot order, value
/// sets sorted by url, codes sorted.
pub(crate) fn render(
    structures: &Value,
    value_sets: &Value,
    code_systems: &Value,
) -> Result<Vec<(&'static str, String)>, CodegenError> {
    let structures = array_of(structures, "StructureDefinition")?;
    let value_sets = array_of(value_sets, "ValueSet")?;
    let code_systems = array_of(code_systems, "CodeSystem")?;

    let mut types: BTreeMap<String, &Value> = BTreeMap::new();
    for sd in structures {
        let name = str_field(sd, "name").ok_or_else(|| bad("StructureDefinition without name"))?;
        if types.insert(name.to_string(), sd).is_some() {
            return Err(bad(format!("duplicate StructureDefinition {name}")));
        }
    }

    let mut primitives = Vec::new();
    let mut type_rows = Vec::new();
    let mut required_sets = BTreeSet::new();
    for (name, sd) in &types {
        let kind = str_field(sd, "kind").ok_or_else(|| bad(format!("{name}: no kind")))?;
        if kind == "primitive-type" {
            primitives.push(primitive_row(name, sd)?);
            continue;
        }
        let (row, bindings) = type_row(name, kind, sd)?;
        required_sets.extend(bindings);
        type_rows.push(row);
    }

    let mut structures_out = String::from("{\n\"primitives\": [\n");
    push_lines(&mut structures_out, &primitives)?;
    structures_out.push_str("],\n\"types\": [\n");
    for (i, (header, elements)) in type_rows.iter().enumerate() {
        let header = serde_json::to_string(header).map_err(|e| bad(e.to_string()))?;
        // Open the type's object and its element list on the header line, one element per line.
        let open = header.strip_suffix('}').ok_or_else(|| bad("type header is not an object"))?;
        structures_out.push_str(open);
        structures_out.push_str(",\"elements\":[\n");
        push_lines(&mut structures_out, elements)?;
        structures_out.push_str(if i + 1 < type_rows.len() { "]},\n" } else { "]}\n" });
    }
    structures_out.push_str("]\n}\n");

    let vs_by_url = index_by_url(value_sets)?;
    let cs_by_url = index_by_url(code_systems)?;
    let mut vs_rows = Vec::new();
    for url in &required_sets {
        let mut row = Map::new();
        row.insert("url".into(), url.as_str().into());
        match expand(url, &vs_by_url, &cs_by_url, &mut Vec::new()) {
            Ok(codes) => {
                let mut systems = Map::new();
                for (system, codes) in codes {
                    systems.insert(system, codes.into_iter().map(Value::from).collect::<Vec<_>>().into());
                }
                row.insert("codes".into(), Value::Object(systems));
            }
            Err(reason) => {
                row.insert("uncheckable".into(), reason.into());
            }
        }
        vs_rows.push(Value::Object(row));
    }
    let mut value_sets_out = String::from("[\n");
    push_lines(&mut value_sets_out, &vs_rows)?;
    value_sets_out.push_str("]\n");

    Ok(vec![(STRUCTURES_OUT, structures_out), (VALUE_SETS_OUT, value_sets_out)])
}

fn push_lines(out: &mut String, rows: &[Value]) -> Result<(), CodegenError> {
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&serde_json::to_string(row).map_err(|e| bad(e.to_string()))?);
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    Ok(())
}

fn array_of<'a>(value: &'a Value, resource_type: &str) -> Result<&'a Vec<Value>, CodegenError> {
    let list = value.as_array().ok_or_else(|| bad(format!("vendored {resource_type}s are not a JSON array")))?;
    if let Some(other) = list.iter().find(|r| str_field(r, "resourceType") != Some(resource_type)) {
        return Err(bad(format!(
            "vendored {resource_type}s hold a {}",
            str_field(other, "resourceType").unwrap_or("non-resource")
        )));
    }
    Ok(list)
}

fn index_by_url(list: &[Value]) -> Result<BTreeMap<&str, &Value>, CodegenError> {
    let mut out = BTreeMap::new();
    for resource in list {
        let url = str_field(resource, "url").ok_or_else(|| bad("terminology resource without url"))?;
        out.insert(url, resource);
    }
    Ok(out)
}

/// `{"name": "date", "regex": "..."}` from the primitive's `<name>.value` element
/// (<http://hl7.org/fhir/R4/datatypes.html#primitive>).
fn primitive_row(name: &str, sd: &Value) -> Result<Value, CodegenError> {
    let value_path = format!("{name}.value");
    let mut row = Map::new();
    row.insert("name".into(), name.into());
    for element in snapshot(name, sd)? {
        if str_field(element, "path") != Some(value_path.as_str()) {
            continue;
        }
        for ty in element.get("type").and_then(Value::as_array).into_iter().flatten() {
            for ext in ty.get("extension").and_then(Value::as_array).into_iter().flatten() {
                if str_field(ext, "url") == Some(REGEX_EXT)
                    && let Some(regex) = ext.get("valueString").and_then(Value::as_str)
                {
                    row.insert("regex".into(), regex.into());
                }
            }
        }
    }
    Ok(Value::Object(row))
}

fn snapshot<'a>(name: &str, sd: &'a Value) -> Result<&'a Vec<Value>, CodegenError> {
    sd.get("snapshot")
        .and_then(|s| s.get("element"))
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("{name}: no snapshot")))
}

/// A type's header object and its element rows.
type TypeRow = (Value, Vec<Value>);

/// The type header (`name`, `kind`, `abstract`, `base`) and its element rows; also returns the
/// value sets of the required bindings met.
fn type_row(name: &str, kind: &str, sd: &Value) -> Result<(TypeRow, Vec<String>), CodegenError> {
    let mut header = Map::new();
    header.insert("name".into(), name.into());
    header.insert("kind".into(), kind.into());
    header.insert("abstract".into(), sd.get("abstract").and_then(Value::as_bool).unwrap_or(false).into());
    if let Some(base) = str_field(sd, "baseDefinition") {
        header.insert("base".into(), base.strip_prefix(CORE_SD).unwrap_or(base).into());
    }
    let mut rows = Vec::new();
    let mut bindings = Vec::new();
    for element in snapshot(name, sd)? {
        let path = str_field(element, "path").ok_or_else(|| bad(format!("{name}: element without path")))?;
        if path == name {
            continue; // the root element describes the type itself
        }
        if element.get("sliceName").is_some() {
            return Err(bad(format!("{path}: slices are not expected in core definitions")));
        }
        let min = element.get("min").and_then(Value::as_u64).ok_or_else(|| bad(format!("{path}: no min")))?;
        let max = str_field(element, "max").ok_or_else(|| bad(format!("{path}: no max")))?;
        let types = element_types(path, element)?;
        let binding = element
            .get("binding")
            .filter(|b| str_field(b, "strength") == Some("required"))
            .and_then(|b| str_field(b, "valueSet"))
            .map(|vs| vs.split('|').next().unwrap_or(vs).to_string());
        if let Some(vs) = &binding {
            bindings.push(vs.clone());
        }
        rows.push(Value::Array(vec![
            path.into(),
            min.into(),
            max.into(),
            types.into_iter().map(Value::from).collect::<Vec<_>>().into(),
            binding.map_or(Value::Null, Value::from),
        ]));
    }
    Ok(((Value::Object(header), rows), bindings))
}

fn element_types(path: &str, element: &Value) -> Result<Vec<String>, CodegenError> {
    if let Some(reference) = str_field(element, "contentReference") {
        return Ok(vec![reference.to_string()]);
    }
    let list = element.get("type").and_then(Value::as_array).ok_or_else(|| bad(format!("{path}: no type")))?;
    let base_path = element.get("base").and_then(|b| str_field(b, "path"));
    let mut out = Vec::new();
    for ty in list {
        let code = str_field(ty, "code").ok_or_else(|| bad(format!("{path}: type without code")))?;
        if base_path == Some("Resource.id") {
            // The snapshot types Resource.id as System.String, but resource.html#id and the
            // R4 JSON schema give it the FHIR type `id` (an element that may carry `_id`).
            out.push("id".to_string());
            continue;
        }
        if code.starts_with(SYSTEM_PREFIX) {
            let fhir_type = ty
                .get("extension")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|e| str_field(e, "url") == Some(FHIR_TYPE_EXT))
                .and_then(|e| str_field(e, "valueUrl"))
                .ok_or_else(|| bad(format!("{path}: System type without fhir-type")))?;
            out.push(format!("@{fhir_type}"));
            continue;
        }
        let targets: Vec<&str> = ty
            .get("targetProfile")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|t| t.strip_prefix(CORE_SD).unwrap_or(t))
            .collect();
        if targets.is_empty() {
            out.push(code.to_string());
        } else {
            out.push(format!("{code}({})", targets.join("|")));
        }
    }
    Ok(out)
}

type Codes = BTreeMap<String, BTreeSet<String>>;

/// Expands a value set from the package: its `expansion` when the package has one,
/// otherwise its `compose` (<http://hl7.org/fhir/R4/valueset.html#compose>): every code of an
/// included complete code system, listed concepts, imported value sets, less exclusions.
/// Anything this cannot do exactly (filters, code systems absent from the package or not
/// complete) yields the reason instead of a guess.
fn expand(
    url: &str,
    value_sets: &BTreeMap<&str, &Value>,
    code_systems: &BTreeMap<&str, &Value>,
    stack: &mut Vec<String>,
) -> Result<Codes, String> {
    if stack.iter().any(|u| u == url) {
        return Err(format!("value set {url} imports itself"));
    }
    let vs = value_sets.get(url).ok_or_else(|| format!("value set {url} is not in the package"))?;
    let mut codes = Codes::new();
    if let Some(contains) = vs.get("expansion").and_then(|e| e.get("contains")).and_then(Value::as_array) {
        collect_contains(contains, &mut codes);
        return Ok(codes);
    }
    let compose = vs.get("compose").ok_or_else(|| format!("value set {url} has neither expansion nor compose"))?;
    stack.push(url.to_string());
    for include in compose.get("include").and_then(Value::as_array).into_iter().flatten() {
        let part = compose_part(include, value_sets, code_systems, stack)?;
        for (system, list) in part {
            codes.entry(system).or_default().extend(list);
        }
    }
    for exclude in compose.get("exclude").and_then(Value::as_array).into_iter().flatten() {
        if exclude.get("concept").is_none() {
            stack.pop();
            return Err(format!("value set {url} excludes more than listed concepts"));
        }
        let part = compose_part(exclude, value_sets, code_systems, stack)?;
        for (system, list) in part {
            if let Some(kept) = codes.get_mut(&system) {
                kept.retain(|c| !list.contains(c));
            }
        }
    }
    stack.pop();
    Ok(codes)
}

fn compose_part(
    part: &Value,
    value_sets: &BTreeMap<&str, &Value>,
    code_systems: &BTreeMap<&str, &Value>,
    stack: &mut Vec<String>,
) -> Result<Codes, String> {
    if part.get("filter").is_some() {
        return Err("a compose filter is not expanded by the generator".into());
    }
    let system = str_field(part, "system");
    let imports: Vec<&str> = part.get("valueSet").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if !imports.is_empty() {
        if system.is_some() {
            return Err("a compose part that intersects a system with value sets is not expanded".into());
        }
        let mut codes = Codes::new();
        for import in imports {
            let import = import.split('|').next().unwrap_or(import);
            for (s, list) in expand(import, value_sets, code_systems, stack)? {
                codes.entry(s).or_default().extend(list);
            }
        }
        return Ok(codes);
    }
    let system = system.ok_or("a compose part has neither system nor valueSet")?;
    let mut listed = BTreeSet::new();
    if let Some(concepts) = part.get("concept").and_then(Value::as_array) {
        listed.extend(concepts.iter().filter_map(|c| str_field(c, "code")).map(str::to_string));
    } else {
        let cs = code_systems.get(system).ok_or_else(|| format!("code system {system} is not in the package"))?;
        let content = str_field(cs, "content").unwrap_or("");
        if content != "complete" {
            return Err(format!("code system {system} is not complete in the package (content {content})"));
        }
        collect_concepts(cs.get("concept").and_then(Value::as_array).map_or(&[][..], Vec::as_slice), &mut listed);
    }
    let mut codes = Codes::new();
    codes.insert(system.to_string(), listed);
    Ok(codes)
}

fn collect_concepts(concepts: &[Value], out: &mut BTreeSet<String>) {
    for concept in concepts {
        if let Some(code) = str_field(concept, "code") {
            out.insert(code.to_string());
        }
        if let Some(children) = concept.get("concept").and_then(Value::as_array) {
            collect_concepts(children, out);
        }
    }
}

fn collect_contains(contains: &[Value], out: &mut Codes) {
    for item in contains {
        if let (Some(system), Some(code)) = (str_field(item, "system"), str_field(item, "code")) {
            out.entry(system.to_string()).or_default().insert(code.to_string());
        }
        if let Some(children) = item.get("contains").and_then(Value::as_array) {
            collect_contains(children, out);
        }
    }
}

fn str_field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sd(name: &str, kind: &str, elements: Value) -> Value {
        json!({"resourceType": "StructureDefinition", "name": name, "kind": kind, "abstract": false,
               "baseDefinition": "http://hl7.org/fhir/StructureDefinition/DomainResource",
               "snapshot": {"element": elements}})
    }

    #[test]
    fn renders_elements_types_and_required_value_sets() {
        let structures = json!([sd("Thing", "resource", json!([
            {"path": "Thing", "min": 0, "max": "*"},
            {"path": "Thing.id", "min": 0, "max": "1", "base": {"path": "Resource.id"},
             "type": [{"code": "http://hl7.org/fhirpath/System.String",
                       "extension": [{"url": FHIR_TYPE_EXT, "valueUrl": "string"}]}]},
            {"path": "Thing.status", "min": 1, "max": "1", "type": [{"code": "code"}],
             "binding": {"strength": "required", "valueSet": "http://x/vs|4.0.1"}},
            {"path": "Thing.kind", "min": 0, "max": "1", "type": [{"code": "code"}],
             "binding": {"strength": "required", "valueSet": "http://x/missing"}},
            {"path": "Thing.subject[x]", "min": 0, "max": "1",
             "type": [{"code": "Reference", "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Patient"]},
                      {"code": "string"}]},
            {"path": "Thing.part", "min": 0, "max": "*", "type": [{"code": "BackboneElement"}]},
            {"path": "Thing.part.part", "min": 0, "max": "*", "contentReference": "#Thing.part"}
        ]))]);
        let value_sets = json!([{"resourceType": "ValueSet", "url": "http://x/vs", "compose": {"include": [
            {"system": "http://x/cs"},
            {"system": "http://x/other", "concept": [{"code": "b"}, {"code": "a"}]}
        ], "exclude": [{"system": "http://x/cs", "concept": [{"code": "gone"}]}]}}]);
        let code_systems = json!([{"resourceType": "CodeSystem", "url": "http://x/cs", "content": "complete",
            "concept": [{"code": "on", "concept": [{"code": "on-hold"}]}, {"code": "gone"}]}]);
        let out = render(&structures, &value_sets, &code_systems).unwrap();
        assert_eq!(out[0].0, STRUCTURES_OUT);
        assert_eq!(
            out[0].1,
            "{\n\"primitives\": [\n],\n\"types\": [\n\
             {\"name\":\"Thing\",\"kind\":\"resource\",\"abstract\":false,\"base\":\"DomainResource\",\"elements\":[\n\
             [\"Thing.id\",0,\"1\",[\"id\"],null],\n\
             [\"Thing.status\",1,\"1\",[\"code\"],\"http://x/vs\"],\n\
             [\"Thing.kind\",0,\"1\",[\"code\"],\"http://x/missing\"],\n\
             [\"Thing.subject[x]\",0,\"1\",[\"Reference(Patient)\",\"string\"],null],\n\
             [\"Thing.part\",0,\"*\",[\"BackboneElement\"],null],\n\
             [\"Thing.part.part\",0,\"*\",[\"#Thing.part\"],null]\n\
             ]}\n]\n}\n"
        );
        assert_eq!(
            out[1].1,
            "[\n{\"url\":\"http://x/missing\",\"uncheckable\":\"value set http://x/missing is not in the package\"},\n\
             {\"url\":\"http://x/vs\",\"codes\":{\"http://x/cs\":[\"on\",\"on-hold\"],\"http://x/other\":[\"a\",\"b\"]}}\n]\n"
        );
    }

    #[test]
    fn filters_and_incomplete_code_systems_are_uncheckable() {
        let value_sets = json!([
            {"resourceType": "ValueSet", "url": "http://x/f", "compose": {"include": [
                {"system": "http://x/cs", "filter": [{"property": "concept", "op": "is-a", "value": "a"}]}]}},
            {"resourceType": "ValueSet", "url": "http://x/frag", "compose": {"include": [{"system": "http://x/cs"}]}}
        ]);
        let code_systems = json!([{"resourceType": "CodeSystem", "url": "http://x/cs", "content": "fragment"}]);
        let vs = index_by_url(value_sets.as_array().unwrap()).unwrap();
        let cs = index_by_url(code_systems.as_array().unwrap()).unwrap();
        assert!(expand("http://x/f", &vs, &cs, &mut Vec::new()).unwrap_err().contains("filter"));
        assert!(expand("http://x/frag", &vs, &cs, &mut Vec::new()).unwrap_err().contains("not complete"));
    }
}
