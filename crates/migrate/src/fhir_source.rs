//! The FHIR source: another system's export that is FHIR R4 already, a
//! folder of NDJSON files (a Bulk Data export, `Patient.ndjson`, ...) and/or
//! JSON files holding a Bundle (`collection`, `transaction`, `batch`,
//! `searchset`) or a single resource.
//!
//! These resources bypass the column mapping. Each one is a record of the
//! table declared for its type (`[tables.NAME] source = "..."`,
//! `resource = "Patient"`, nothing else), with its provenance: file and line
//! for NDJSON, file and `entry[i]` for a Bundle; its key is `Type/id` as the
//! source names it.
//!
//! Reading ([`FhirSource`]) resolves what only the whole export knows: a
//! Bundle entry without an id takes the uuid of its `urn:uuid:` fullUrl;
//! references to `urn:uuid:` fullUrls and absolute URLs of the source server
//! (the bases of the Bundles' fullUrls, and the source's `base_url`) become
//! relative `Type/id`; `Type/id/_history/n` loses its version.
//!
//! Converting ([`convert`]) gives each resource its Hearth id, derived from
//! its table and key like every migrated resource
//! ([`crate::convert::resource_id`]), and rewrites every reference (and a
//! `Binary/id` attachment URL) to those ids; a reference that resolves to
//! no resource of the export is an `orphan` (quarantined, as a CSV join). The
//! source id is kept as an identifier (`urn:hearth:migration:PROJECT:SOURCE`)
//! on every type that has `identifier`; the load's Provenance names it for
//! every type. The source server's `meta.versionId` and `meta.lastUpdated`
//! are dropped (Hearth keeps its own).

use crate::convert::{Converted, Finding, Link, Severity, resource_id};
use crate::project::Project;
use crate::source::{Provenance, Record, RowError, Rows, Source, SourceError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// The one column of a FHIR record: the resource as JSON text.
pub const RESOURCE_COLUMN: &str = "resource";

/// Bundle types whose entries are records.
const BUNDLE_TYPES: [&str; 4] = ["collection", "transaction", "batch", "searchset"];

/// A folder of NDJSON and Bundle files as a [`Source`].
#[derive(Debug)]
pub struct FhirSource {
    name: String,
    dir: PathBuf,
    /// (table, resource type), in declaration order.
    tables: Vec<(String, String)>,
    base_url: Option<String>,
    read: OnceLock<Result<ByTable, SourceError>>,
}

/// Every row read, by table.
type ByTable = HashMap<String, Vec<Result<Record, RowError>>>;

/// One resource found, before its references are resolved.
struct Found {
    provenance: Provenance,
    resource: Value,
    /// The bundle it came from (index into the bundles' fullUrl maps).
    bundle: Option<usize>,
}

impl FhirSource {
    /// A source reading the folder `dir`; `tables` pairs each table with
    /// its resource type.
    pub fn new(
        name: &str,
        dir: PathBuf,
        tables: Vec<(String, String)>,
        base_url: Option<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            dir,
            tables,
            base_url,
            read: OnceLock::new(),
        }
    }

    fn read_all(&self) -> Result<ByTable, SourceError> {
        let unreadable = |message: String| SourceError {
            location: self.dir.display().to_string(),
            message,
        };
        let listing = std::fs::read_dir(&self.dir)
            .map_err(|e| unreadable(format!("cannot read the folder: {e}")))?;
        let mut files: Vec<String> = listing
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| !f.starts_with('.'))
            .collect();
        files.sort();
        let mut found: Vec<Found> = Vec::new();
        // Errors with the resource type they belong to, when known.
        let mut errors: Vec<(Option<String>, RowError)> = Vec::new();
        let mut bundles: Vec<HashMap<String, String>> = Vec::new();
        let mut bases: Vec<String> = self.base_url.iter().map(|b| with_slash(b)).collect();
        let first_table = self
            .tables
            .first()
            .map(|(t, _)| t.clone())
            .unwrap_or_default();
        let row_error = |provenance: Provenance, message: String| RowError {
            table: first_table.clone(),
            provenance,
            column: None,
            message,
        };
        for file in &files {
            let lower = file.to_ascii_lowercase();
            let readable =
                lower.ends_with(".ndjson") || lower.ends_with(".jsonl") || lower.ends_with(".json");
            let bytes = if readable {
                std::fs::read(self.dir.join(file))
            } else {
                Ok(Vec::new())
            };
            let bytes = bytes.map_err(|e| SourceError {
                location: file.clone(),
                message: format!("cannot read: {e}"),
            })?;
            let text = String::from_utf8(bytes).map_err(|e| SourceError {
                location: file.clone(),
                message: format!(
                    "not UTF-8 (FHIR JSON is UTF-8): invalid byte at offset {}",
                    e.utf8_error().valid_up_to()
                ),
            })?;
            let hint = file_type(file);
            let lower = file.to_ascii_lowercase();
            let ndjson = lower.ends_with(".ndjson") || lower.ends_with(".jsonl");
            if !ndjson && !lower.ends_with(".json") {
                // Never skipped silently: a compressed export would be lost.
                let message = "not read: a FHIR source reads .ndjson, .jsonl and .json files (decompress a .gz export first)";
                errors.push((
                    hint,
                    row_error(
                        Provenance::FileLine {
                            file: file.clone(),
                            line: 1,
                        },
                        message.into(),
                    ),
                ));
                continue;
            }
            if ndjson {
                for (i, line) in text.lines().enumerate() {
                    let provenance = Provenance::FileLine {
                        file: file.clone(),
                        line: i as u64 + 1,
                    };
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Value>(line) {
                        Ok(resource) if resource["resourceType"].is_string() => found.push(Found {
                            provenance,
                            resource,
                            bundle: None,
                        }),
                        Ok(_) => errors.push((
                            hint.clone(),
                            row_error(provenance, "not a FHIR resource (no resourceType)".into()),
                        )),
                        Err(e) => errors.push((
                            hint.clone(),
                            row_error(
                                provenance,
                                format!("not JSON at column {}: {e}", e.column()),
                            ),
                        )),
                    }
                }
                continue;
            }
            let whole = Provenance::FileLine {
                file: file.clone(),
                line: 1,
            };
            let value = match serde_json::from_str::<Value>(&text) {
                Ok(v) => v,
                Err(e) => {
                    let provenance = Provenance::FileLine {
                        file: file.clone(),
                        line: e.line() as u64,
                    };
                    errors.push((hint, row_error(provenance, format!("not JSON: {e}"))));
                    continue;
                }
            };
            match value["resourceType"].as_str() {
                Some("Bundle") => {
                    let kind = value["type"].as_str().unwrap_or_default();
                    if !BUNDLE_TYPES.contains(&kind) {
                        let message = format!(
                            "a Bundle of type {kind:?}: the entries of {} bundles are read",
                            BUNDLE_TYPES.join(", ")
                        );
                        errors.push((Some("Bundle".into()), row_error(whole, message)));
                        continue;
                    }
                    let index = bundles.len();
                    let mut full_urls = HashMap::new();
                    let entries = value["entry"].as_array().cloned().unwrap_or_default();
                    for (i, entry) in entries.into_iter().enumerate() {
                        let provenance = Provenance::TableKey {
                            table: file.clone(),
                            key: format!("entry[{i}]"),
                        };
                        let Some(mut resource) = entry
                            .get("resource")
                            .filter(|r| r["resourceType"].is_string())
                            .cloned()
                        else {
                            let method =
                                entry["request"]["method"].as_str().unwrap_or("no request");
                            let message = format!(
                                "an entry without a resource ({method}): nothing to migrate here"
                            );
                            let rtype = entry["request"]["url"]
                                .as_str()
                                .and_then(|u| u.split(['/', '?']).next());
                            errors.push((rtype.map(str::to_owned), row_error(provenance, message)));
                            continue;
                        };
                        let full_url = entry["fullUrl"].as_str().unwrap_or_default();
                        let rtype = resource["resourceType"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if resource["id"].as_str().is_none_or(str::is_empty) {
                            if let Some(uuid) = full_url.strip_prefix("urn:uuid:") {
                                resource["id"] = json!(uuid);
                            } else if let Some((_, id)) = split_type_id(full_url) {
                                resource["id"] = json!(id);
                            }
                        }
                        if let Some(id) = resource["id"].as_str().filter(|id| !id.is_empty()) {
                            if !full_url.is_empty() {
                                full_urls.insert(full_url.to_owned(), format!("{rtype}/{id}"));
                            }
                            if let Some(base) = full_url.strip_suffix(&format!("{rtype}/{id}"))
                                && base.starts_with("http")
                                && !bases.iter().any(|b| b == base)
                            {
                                bases.push(base.to_owned());
                            }
                        }
                        found.push(Found {
                            provenance,
                            resource,
                            bundle: Some(index),
                        });
                    }
                    bundles.push(full_urls);
                }
                Some(_) => found.push(Found {
                    provenance: whole,
                    resource: value,
                    bundle: None,
                }),
                None => errors.push((
                    hint,
                    row_error(
                        whole,
                        "not a FHIR resource or Bundle (no resourceType)".into(),
                    ),
                )),
            }
        }

        let mut out: ByTable = HashMap::new();
        let columns: Arc<[String]> = Arc::from(vec![RESOURCE_COLUMN.to_owned()]);
        for mut item in found {
            let rtype = item.resource["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let table = self
                .tables
                .iter()
                .find(|(_, t)| *t == rtype)
                .map(|(n, _)| n.clone());
            let Some(id) = item.resource["id"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
            else {
                errors.push((
                    Some(rtype.clone()),
                    row_error(item.provenance, format!("a {rtype} without an id")),
                ));
                continue;
            };
            let Some(table) = table else {
                let message = format!(
                    "{rtype}/{id}: no table of source {:?} has resource = {rtype:?}: declare one to migrate it",
                    self.name
                );
                errors.push((None, row_error(item.provenance, message)));
                continue;
            };
            let full_urls = item.bundle.and_then(|b| bundles.get(b));
            resolve_references(&mut item.resource, full_urls, &bases);
            let text = serde_json::to_string(&item.resource).unwrap_or_default();
            out.entry(table.clone()).or_default().push(Ok(Record {
                table,
                provenance: item.provenance,
                columns: Arc::clone(&columns),
                values: vec![text],
            }));
        }
        for (rtype, mut error) in errors {
            let table = rtype
                .and_then(|t| {
                    self.tables
                        .iter()
                        .find(|(_, r)| *r == t)
                        .map(|(n, _)| n.clone())
                })
                .unwrap_or_else(|| first_table.clone());
            error.table = table.clone();
            out.entry(table).or_default().push(Err(error));
        }
        // Source order within each table: files, then lines or entries.
        for rows in out.values_mut() {
            rows.sort_by_key(|r| {
                let p = match r {
                    Ok(r) => &r.provenance,
                    Err(e) => &e.provenance,
                };
                order(p)
            });
        }
        Ok(out)
    }
}

/// Sort key of a provenance: file, then line or entry index.
fn order(p: &Provenance) -> (String, u64) {
    match p {
        Provenance::FileLine { file, line } => (file.clone(), *line),
        Provenance::TableKey { table, key } => {
            let n = key
                .trim_start_matches("entry[")
                .trim_end_matches(']')
                .parse::<u64>()
                .unwrap_or(0);
            (table.clone(), n)
        }
    }
}

fn with_slash(base: &str) -> String {
    if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    }
}

/// The resource type a Bulk Data file name announces (`Patient.ndjson`,
/// `Patient_2.ndjson`, `1.Patient.ndjson`), if any.
fn file_type(file: &str) -> Option<String> {
    let stem = file.split('.').filter(|p| !p.is_empty()).find(|p| {
        let name = p.split(['_', '-']).next().unwrap_or(p);
        fhir::definitions::is_resource_type(name)
    })?;
    Some(stem.split(['_', '-']).next().unwrap_or(stem).to_owned())
}

/// `(Type, id)` of a reference or URL ending in `Type/id` (or
/// `Type/id/_history/n`).
fn split_type_id(reference: &str) -> Option<(String, String)> {
    let trimmed = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let mut parts = trimmed.rsplit('/');
    let id = parts.next()?;
    let rtype = parts.next()?;
    (fhir::definitions::is_resource_type(rtype) && !id.is_empty())
        .then(|| (rtype.to_owned(), id.to_owned()))
}

/// Rewrites `urn:uuid:` references and absolute references to the source
/// server as relative `Type/id`; drops `/_history/n`.
fn resolve_references(
    value: &mut Value,
    full_urls: Option<&HashMap<String, String>>,
    bases: &[String],
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(reference) = child
                    && let Some(resolved) = resolve(reference, full_urls, bases)
                {
                    *reference = resolved;
                } else {
                    resolve_references(child, full_urls, bases);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                resolve_references(item, full_urls, bases);
            }
        }
        _ => {}
    }
}

fn resolve(
    reference: &str,
    full_urls: Option<&HashMap<String, String>>,
    bases: &[String],
) -> Option<String> {
    if let Some(target) = full_urls.and_then(|m| m.get(reference)) {
        return Some(target.clone());
    }
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let relative = if reference.contains("://") {
        let base = bases.iter().find(|b| reference.starts_with(b.as_str()))?;
        &reference[base.len()..]
    } else {
        reference
    };
    let (rtype, id) = split_type_id(relative)?;
    let plain = format!("{rtype}/{id}");
    (plain != reference).then_some(plain)
}

impl Source for FhirSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn tables(&self) -> Vec<String> {
        self.tables.iter().map(|(t, _)| t.clone()).collect()
    }

    fn rows(&self, table: &str) -> Result<Rows<'_>, SourceError> {
        if !self.tables.iter().any(|(t, _)| t == table) {
            return Err(SourceError {
                location: table.to_owned(),
                message: "no such table in this source".into(),
            });
        }
        let all = self
            .read
            .get_or_init(|| self.read_all())
            .as_ref()
            .map_err(Clone::clone)?;
        let rows = all.get(table).cloned().unwrap_or_default();
        Ok(Box::new(rows.into_iter()))
    }
}

/// Top-level clinical date elements checked like a mapped date column.
const CLINICAL_DATES: [&str; 11] = [
    "effectiveDateTime",
    "effectivePeriod.start",
    "issued",
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "performedDateTime",
    "performedPeriod.start",
    "occurrenceDateTime",
    "period.start",
    "dateWritten",
];

/// The identifier system that keeps a migrated resource's source id.
pub fn source_system(project: &str, source: &str) -> String {
    format!("urn:hearth:migration:{project}:{source}")
}

/// Whether resources of `rtype` take a list of identifiers (asked of
/// Hearth's validator once per type).
pub(crate) fn takes_identifiers(rtype: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(known) = cache.lock()
        && let Some(answer) = known.get(rtype)
    {
        return *answer;
    }
    let probe =
        json!({ "resourceType": rtype, "identifier": [{ "system": "urn:x", "value": "x" }] });
    let prefix = format!("{rtype}.identifier");
    let answer = fhir::validation::validate(&probe).iter().all(|i| {
        !i.expression
            .as_deref()
            .is_some_and(|e| e.starts_with(&prefix))
            && !i.diagnostics.contains("identifier")
    });
    if let Ok(mut known) = cache.lock() {
        known.insert(rtype.to_owned(), answer);
    }
    answer
}

/// The `(Type, id)` a reference of a resource read from a FHIR source names
/// inside the export: a relative `Type/id` (the reader has made `urn:uuid:`
/// and source-server URLs relative, and dropped `/_history/n`). `None` for
/// a contained (`#id`), absolute, `urn:` or malformed reference.
pub fn source_target(reference: &str) -> Option<(String, String)> {
    if reference.starts_with('#') || reference.starts_with("urn:") || reference.contains("://") {
        return None;
    }
    split_type_id(reference)
}

/// The table of source `source` whose records are the resources of type
/// `rtype`, the first declared (the one [`FhirSource`] reads them into).
pub fn table_of(project: &Project, source: &str, rtype: &str) -> Option<String> {
    project
        .tables
        .iter()
        .find(|(_, t)| t.source.get_ref() == source && t.resource == rtype)
        .map(|(n, _)| n.clone())
}

/// The Hearth `(Type, id)` of the record `Type/id` of source `source`: the
/// id derived from its table and key like every migrated resource. `None`
/// when no table of the source holds that type.
pub fn hearth_target(
    project: &Project,
    source: &str,
    rtype: &str,
    id: &str,
) -> Option<(String, String)> {
    let table = table_of(project, source, rtype)?;
    Some((
        rtype.to_owned(),
        resource_id(&table, &format!("{rtype}/{id}"), ""),
    ))
}

/// Converts one resource of a FHIR source's `table`: Hearth id, references
/// rewritten (orphans as links that resolve nowhere), the source id kept.
pub fn convert(project: &Project, table: &str, record: &Record) -> Converted {
    let mut out = Converted {
        key: record.provenance.to_string(),
        resources: Vec::new(),
        findings: Vec::new(),
        links: Vec::new(),
        dates: Vec::new(),
        columns: Vec::new(),
    };
    let text = record.get(RESOURCE_COLUMN).unwrap_or_default();
    let mut resource: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.findings.push(Finding::new(Severity::Error, "unreadable", RESOURCE_COLUMN, format!("not JSON: {e}")));
            return out;
        }
    };
    let rtype = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let source_id = resource["id"].as_str().unwrap_or_default().to_owned();
    out.key = format!("{rtype}/{source_id}");
    let Some(source) = project
        .tables
        .get(table)
        .map(|t| t.source.get_ref().clone())
    else {
        return out;
    };
    // The tables of this source by resource type: the first declared, the
    // one the reader puts that type's records in.
    let mut tables: HashMap<&str, &str> = HashMap::new();
    for (n, t) in project
        .tables
        .iter()
        .filter(|(_, t)| *t.source.get_ref() == source)
    {
        tables.entry(t.resource.as_str()).or_insert(n.as_str());
    }
    resource["id"] = json!(resource_id(table, &out.key, ""));
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            resource.as_object_mut().map(|m| m.remove("meta"));
        }
    }
    let mut path = vec![rtype.clone()];
    rewrite(&mut resource, &mut path, &tables, &mut out);
    // The clinical dates the dry run's sanity checks look at (in the
    // future, before the patient's birth).
    for element in CLINICAL_DATES {
        let value = element
            .split('.')
            .try_fold(&resource, |v, part| v.get(part));
        if let Some(date) = value.and_then(Value::as_str) {
            out.dates
                .push((format!("{rtype}.{element}"), date.to_owned()));
        }
    }
    let system = source_system(&project.project.name, &source);
    if takes_identifiers(&rtype)
        && let Some(map) = resource.as_object_mut()
    {
        let list = map.entry("identifier").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut()
            && !list.iter().any(|i| i["system"] == json!(system))
        {
            list.push(json!({ "system": system, "value": source_id }));
        }
    }
    out.resources.push(resource);
    out.columns.push(None);
    out
}

/// Rewrites every reference (and `Binary/id` attachment URL) under `value`.
fn rewrite(
    value: &mut Value,
    path: &mut Vec<String>,
    tables: &HashMap<&str, &str>,
    out: &mut Converted,
) {
    match value {
        Value::Object(map) => {
            let is_attachment = path
                .last()
                .is_some_and(|p| p == "attachment" || p == "content");
            for (key, child) in map.iter_mut() {
                let rewritable = key == "reference" || (is_attachment && key == "url");
                if rewritable && let Value::String(reference) = child {
                    let field = path.join(".");
                    if let Some(new) = rewrite_one(reference, &field, key == "url", tables, out) {
                        *reference = new;
                    }
                    continue;
                }
                if key == "contained" {
                    // Contained resources' ids are local: leave them, but
                    // follow their references out.
                }
                path.push(key.clone());
                rewrite(child, path, tables, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for item in items {
                rewrite(item, path, tables, out);
            }
        }
        _ => {}
    }
}

fn rewrite_one(
    reference: &str,
    field: &str,
    is_url: bool,
    tables: &HashMap<&str, &str>,
    out: &mut Converted,
) -> Option<String> {
    if reference.starts_with('#') {
        return None;
    }
    if reference.contains("://") {
        if !is_url {
            out.findings.push(Finding::new(
                Severity::Warning,
                "external-reference",
                field,
                format!("{field}: an absolute reference outside the export, kept as it is"),
            ));
        }
        return None;
    }
    if is_url && !reference.starts_with("Binary/") {
        return None;
    }
    let Some((rtype, id)) = split_type_id(reference).filter(|_| !reference.starts_with("urn:"))
    else {
        if reference.starts_with("urn:") {
            out.links.push(Link {
                column: field.to_owned(),
                table: "urn".into(),
                key: reference.to_owned(),
            });
        } else if !is_url {
            out.findings.push(Finding::new(
                Severity::Warning,
                "reference-format",
                field,
                format!("{field}: a reference that is not Type/id, kept as it is"),
            ));
        }
        return None;
    };
    let key = format!("{rtype}/{id}");
    let table = tables
        .get(rtype.as_str())
        .copied()
        .unwrap_or(rtype.as_str());
    out.links.push(Link {
        column: field.to_owned(),
        table: table.to_owned(),
        key: key.clone(),
    });
    Some(format!("{rtype}/{}", resource_id(table, &key, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = r#"
[project]
name = "t"

[sources.bulk]
kind = "fhir"
path = "bulk"
base_url = "https://old.example.org/fhir"

[tables.patients]
source = "bulk"
resource = "Patient"

[tables.observations]
source = "bulk"
resource = "Observation"
"#;

    fn setup() -> (tempfile::TempDir, Project) {
        let dir = tempfile::tempdir().expect("tmp");
        let bulk = dir.path().join("bulk");
        std::fs::create_dir(&bulk).expect("dir");
        std::fs::write(
            bulk.join("Patient.ndjson"),
            "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"meta\":{\"versionId\":\"3\"},\"gender\":\"female\"}\n\n{not json\n",
        )
        .expect("ndjson");
        let bundle = json!({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [
                { "fullUrl": "urn:uuid:0b7b4f26-7c1e-4a55-9a0e-6a5b0c1d2e3f",
                  "resource": { "resourceType": "Patient", "gender": "male" },
                  "request": { "method": "POST", "url": "Patient" } },
                { "fullUrl": "urn:uuid:1c8c5f37-8d2f-4b66-8b1f-7b6c1d2e3f40",
                  "resource": { "resourceType": "Observation", "status": "final",
                    "code": { "text": "x" },
                    "subject": { "reference": "urn:uuid:0b7b4f26-7c1e-4a55-9a0e-6a5b0c1d2e3f" },
                    "performer": [{ "reference": "https://old.example.org/fhir/Patient/p1/_history/2" }],
                    "hasMember": [{ "reference": "Observation/missing" }] },
                  "request": { "method": "POST", "url": "Observation" } },
                { "request": { "method": "DELETE", "url": "Patient/p9" } },
                { "resource": { "resourceType": "Immunization", "id": "i1" } }
            ]
        });
        std::fs::write(bulk.join("tx.json"), bundle.to_string()).expect("bundle");
        std::fs::write(bulk.join("zz-export.ndjson.gz"), b"\x1f\x8b").expect("gz");
        std::fs::write(dir.path().join("migration.toml"), PROJECT).expect("toml");
        let project = crate::project::load(dir.path()).expect("project");
        (dir, project)
    }

    #[test]
    fn ndjson_and_bundles_are_read_with_their_provenance() {
        let (dir, project) = setup();
        let source = project.source(dir.path(), "bulk").expect("source");
        let patients: Vec<_> = source.rows("patients").expect("rows").collect();
        let places: Vec<String> = patients
            .iter()
            .map(|r| match r {
                Ok(r) => r.provenance.to_string(),
                Err(e) => format!("error {e}"),
            })
            .collect();
        assert_eq!(places.len(), 4, "{places:?}");
        assert_eq!(places[0], "Patient.ndjson:1");
        assert!(
            places[1].starts_with("error Patient.ndjson:3: not JSON"),
            "{places:?}"
        );
        assert_eq!(places[2], "tx.json[entry[0]]");
        assert!(
            places[3].contains("tx.json[entry[2]]") && places[3].contains("DELETE"),
            "{places:?}"
        );
        // A type no table declares: rejected in the source's first table;
        // a file that is not read is said so.
        let observations: Vec<_> = source.rows("observations").expect("rows").collect();
        assert_eq!(observations.len(), 3);
        let e = observations[2].as_ref().expect_err("compressed");
        assert!(
            e.to_string()
                .starts_with("zz-export.ndjson.gz:1: not read"),
            "{e}"
        );
        let e = observations[1].as_ref().expect_err("undeclared");
        assert!(
            e.to_string()
                .contains("tx.json[entry[3]]: Immunization/i1: no table"),
            "{e}"
        );
        let obs: Value = serde_json::from_str(
            observations[0]
                .as_ref()
                .expect("ok")
                .get(RESOURCE_COLUMN)
                .expect("col"),
        )
        .expect("json");
        assert_eq!(
            obs["subject"]["reference"],
            "Patient/0b7b4f26-7c1e-4a55-9a0e-6a5b0c1d2e3f"
        );
        assert_eq!(obs["performer"][0]["reference"], "Patient/p1");
    }

    #[test]
    fn conversion_gives_hearth_ids_rewrites_references_and_finds_orphans() {
        let (dir, project) = setup();
        let source = project.source(dir.path(), "bulk").expect("source");
        let record = source
            .rows("observations")
            .expect("rows")
            .next()
            .expect("one")
            .expect("ok");
        let c = convert(&project, "observations", &record);
        assert_eq!(c.key, "Observation/1c8c5f37-8d2f-4b66-8b1f-7b6c1d2e3f40");
        let r = &c.resources[0];
        assert_eq!(r["id"], json!(resource_id("observations", &c.key, "")));
        let patient = resource_id(
            "patients",
            "Patient/0b7b4f26-7c1e-4a55-9a0e-6a5b0c1d2e3f",
            "",
        );
        assert_eq!(
            r["subject"]["reference"],
            json!(format!("Patient/{patient}"))
        );
        assert_eq!(
            r["performer"][0]["reference"],
            json!(format!(
                "Patient/{}",
                resource_id("patients", "Patient/p1", "")
            ))
        );
        assert_eq!(
            r["identifier"],
            json!([{ "system": "urn:hearth:migration:t:bulk", "value": "1c8c5f37-8d2f-4b66-8b1f-7b6c1d2e3f40" }])
        );
        let links: Vec<(&str, &str, &str)> = c
            .links
            .iter()
            .map(|l| (l.column.as_str(), l.table.as_str(), l.key.as_str()))
            .collect();
        assert_eq!(
            links,
            [
                (
                    "Observation.subject",
                    "patients",
                    "Patient/0b7b4f26-7c1e-4a55-9a0e-6a5b0c1d2e3f"
                ),
                ("Observation.performer", "patients", "Patient/p1"),
                (
                    "Observation.hasMember",
                    "observations",
                    "Observation/missing"
                ),
            ]
        );
        let patient = source
            .rows("patients")
            .expect("rows")
            .next()
            .expect("one")
            .expect("ok");
        let p = convert(&project, "patients", &patient);
        assert!(p.resources[0].get("meta").is_none(), "{}", p.resources[0]);
        assert!(
            fhir::validation::validate(&p.resources[0])
                .iter()
                .all(|i| !matches!(
                    i.severity,
                    fhir::outcome::Severity::Error | fhir::outcome::Severity::Fatal
                ))
        );
        assert!(!takes_identifiers("Binary"));
        assert!(takes_identifiers("Patient"));
    }

    #[test]
    fn a_dry_run_quarantines_the_orphan_and_balances() {
        let (dir, project) = setup();
        let run = crate::dryrun::run(
            &project,
            dir.path(),
            crate::dryrun::Stage::Validate,
            "2026-11-29",
        )
        .expect("run");
        let p = &run.tables["patients"];
        assert_eq!(
            (p.source_records, p.converted, p.rejected, p.unaccounted()),
            (4, 2, 2, 0)
        );
        let o = &run.tables["observations"];
        assert_eq!(
            (o.source_records, o.quarantined, o.rejected, o.unaccounted()),
            (3, 1, 2, 0)
        );
        let orphan = run
            .issues
            .iter()
            .find(|i| i.finding.kind == "orphan")
            .expect("orphan");
        assert_eq!(
            orphan.finding.field.as_deref(),
            Some("Observation.hasMember")
        );
        assert_eq!(orphan.provenance.to_string(), "tx.json[entry[1]]");
    }

    /// Two tables of one source declaring the same type: the records are
    /// read into the first, and references resolve to it (not orphans).
    #[test]
    fn a_type_declared_twice_resolves_to_the_table_holding_its_records() {
        let (dir, _) = setup();
        let text = format!(
            "{PROJECT}\n[tables.patients_too]\nsource = \"bulk\"\nresource = \"Patient\"\n"
        );
        std::fs::write(dir.path().join("migration.toml"), text).expect("toml");
        let project = crate::project::load(dir.path()).expect("project");
        let run = crate::dryrun::run(
            &project,
            dir.path(),
            crate::dryrun::Stage::Validate,
            "2026-11-29",
        )
        .expect("run");
        assert_eq!(run.tables["patients"].converted, 2);
        assert_eq!(run.tables["patients_too"].source_records, 0);
        let orphans: Vec<Option<&str>> = run
            .issues
            .iter()
            .filter(|i| i.finding.kind == "orphan")
            .map(|i| i.finding.field.as_deref())
            .collect();
        assert_eq!(orphans, [Some("Observation.hasMember")], "only the real orphan");
    }

    #[test]
    fn clinical_dates_are_checked() {
        let (dir, project) = setup();
        std::fs::write(
            dir.path().join("bulk/Observation.ndjson"),
            r#"{"resourceType":"Observation","id":"late","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2031-01-01"}"#,
        )
        .expect("ndjson");
        let run = crate::dryrun::run(
            &project,
            dir.path(),
            crate::dryrun::Stage::Validate,
            "2026-11-29",
        )
        .expect("run");
        let late = run
            .issues
            .iter()
            .find(|i| i.key == "Observation/late")
            .expect("held");
        assert_eq!(
            (late.finding.kind, late.finding.field.as_deref()),
            ("future-date", Some("Observation.effectiveDateTime"))
        );
    }

    #[test]
    fn file_names_and_references() {
        assert_eq!(file_type("Patient.ndjson").as_deref(), Some("Patient"));
        assert_eq!(
            file_type("Observation_2.ndjson").as_deref(),
            Some("Observation")
        );
        assert_eq!(
            file_type("1.Encounter.ndjson").as_deref(),
            Some("Encounter")
        );
        assert_eq!(file_type("export.ndjson"), None);
        assert_eq!(
            split_type_id("Patient/1/_history/2"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(split_type_id("Nope/1"), None);
        let bases = vec!["http://a/fhir/".to_owned()];
        assert_eq!(
            resolve("http://a/fhir/Patient/1", None, &bases).as_deref(),
            Some("Patient/1")
        );
        assert_eq!(resolve("http://b/fhir/Patient/1", None, &bases), None);
        assert_eq!(resolve("Patient/1", None, &bases), None);
    }
}
