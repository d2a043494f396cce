//! The CONVERT stage: one source record to FHIR R4 resources (JSON values),
//! following a table's mapping in `migration.toml`.
//!
//! - Each mapped column is written at its `element` path
//!   (`Patient.identifier[mrn].value`, `Observation.code.coding.code`);
//!   `[name]` picks the identifier (by system) or telecom entry (by system).
//! - Code columns go through their value map; a local value without a
//!   mapping (or a code that does not fit its declared system's format) is
//!   kept as a coding with a local system (`urn:hearth:local:TABLE:COLUMN`,
//!   or the column's own local system) plus text, and reported: never dropped.
//! - Units go through the unit map to UCUM; dates through the declared
//!   formats, date-times get the project's time zone.
//! - Joins become references (`Patient/<id>`); ids are derived from the
//!   table and key ([`resource_id`]), so a rerun yields the same ids.
//! - A column with a fixed `code` yields its own resource (a vitals set: one
//!   Observation per measured column): every set, every column is kept.

use crate::codes;
use crate::dates;
use crate::project::{ColumnDecl, ColumnType, Project, TableDecl};
use crate::source::Record;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// UCUM's system URI.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The record cannot be loaded as it is.
    Error,
    /// Loaded, but someone should look.
    Warning,
    /// Loaded; what was done (a unit normalised, a free-text medication).
    Information,
}

impl Severity {
    /// `error`, `warning` or `information`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One thing found about a record while converting or validating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// A short kind (`unmapped-code`, `required`, `orphan`, ...).
    pub kind: &'static str,
    /// The column at fault, when one is.
    pub field: Option<String>,
    /// In words (codes and keys, never names).
    pub message: String,
}

impl Finding {
    /// A finding about `field`.
    pub(crate) fn new(severity: Severity, kind: &'static str, field: &str, message: String) -> Self {
        Self { severity, kind, field: Some(field.to_owned()), message }
    }
}

/// A reference the record makes to a row of another table (from a join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The column of this record.
    pub column: String,
    /// The table joined to.
    pub table: String,
    /// The key value looked up there.
    pub key: String,
}

/// A converted record: its resources (none when conversion failed), what was
/// found, and what it refers to.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The record's key (its key column, else its provenance).
    pub key: String,
    /// The resources the record becomes.
    pub resources: Vec<Value>,
    /// Findings; any `Error` means the record is rejected.
    pub findings: Vec<Finding>,
    /// Rows of other tables this record's resources refer to.
    pub links: Vec<Link>,
    /// Dates written (column, FHIR date or dateTime), for the sanity checks.
    pub dates: Vec<(String, String)>,
    /// For each resource, the column it was made from (a per-column
    /// resource such as one vital sign), or `None` for the row's resource.
    pub columns: Vec<Option<String>>,
}

impl Converted {
    /// True when a finding is an error.
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// The id of the resource made from `table`'s row `key` (and `part`, the
/// column of a per-column resource, or empty): 32 hex digits of a SHA-256.
pub fn resource_id(table: &str, key: &str, part: &str) -> String {
    let mut hash = Sha256::new();
    for piece in [table, key, part] {
        hash.update(piece.as_bytes());
        hash.update([0u8]);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = hash.finalize();
    let mut id = String::with_capacity(32);
    for b in &digest[..16] {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

/// The local code system of a column: `urn:hearth:local:TABLE:COLUMN`.
pub fn local_system(table: &str, column: &str) -> String {
    format!("urn:hearth:local:{table}:{column}")
}

/// Elements whose FHIR type is a list.
const ARRAYS: &[&str] = &[
    "identifier",
    "name",
    "given",
    "prefix",
    "address",
    "line",
    "telecom",
    "coding",
    "participant",
    "reasonCode",
    "reaction",
    "manifestation",
    "dosage",
    "referenceRange",
    "interpretation",
    "content",
    "author",
    "category",
    "note",
    "suffix",
    "payor",
    "series",
    "instance",
    "procedureCode",
    "udiCarrier",
    "diagnosis",
    "insurance",
    "qualification",
];
/// Top-level elements that do not repeat although [`ARRAYS`] names them.
const SINGLE: &[(&str, &str)] = &[("Organization", "name")];
/// Code elements of type CodeableConcept (their default system when the value
/// map names none).
pub(crate) const CODEABLE: &[(&str, Option<&str>)] = &[
    ("Condition.clinicalStatus", Some("http://terminology.hl7.org/CodeSystem/condition-clinical")),
    ("Condition.verificationStatus", Some("http://terminology.hl7.org/CodeSystem/condition-ver-status")),
    ("AllergyIntolerance.clinicalStatus", Some("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical")),
    ("Observation.interpretation", Some("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation")),
    ("DocumentReference.type", None),
    ("Encounter.type", None),
];
/// Code elements of type Coding.
pub(crate) const CODING: &[&str] = &[
    "Encounter.class",
    "ImagingStudy.series.modality",
    "ImagingStudy.series.bodySite",
    "ImagingStudy.series.instance.sopClass",
];
/// Elements of type instant (a date gets midnight in the project's zone).
const INSTANTS: &[&str] = &["DocumentReference.date"];

/// Converts records of one table. Built once per table.
pub struct Converter<'a> {
    project: &'a Project,
    table_name: &'a str,
    table: &'a TableDecl,
    /// The zone offset function for local date-times.
    zone: crate::zone::Zone,
    /// The source folder (document files are named relative to it).
    dir: Option<std::path::PathBuf>,
}

impl<'a> Converter<'a> {
    /// A converter for `table_name`; fails when the project's time zone is
    /// not one Hearth knows.
    pub fn new(project: &'a Project, table_name: &'a str) -> Result<Self, String> {
        let table = project.tables.get(table_name).ok_or_else(|| format!("no table {table_name:?}"))?;
        let zone = crate::zone::Zone::parse(project.defaults.timezone.as_deref().unwrap_or("UTC"))?;
        Ok(Self { project, table_name, table, zone, dir: None })
    }

    /// The same converter, reading document files from the table's source
    /// folder under `project_dir` (the folder of `migration.toml`).
    pub fn in_dir(mut self, project_dir: &std::path::Path) -> Self {
        self.dir = self.project.source_dir(project_dir, self.table.source.get_ref());
        self
    }

    fn source_kind(&self) -> Option<crate::project::SourceKind> {
        self.project.sources.get(self.table.source.get_ref()).map(|s| s.kind)
    }

    /// The record's key: its key column's value, else its provenance.
    pub fn key(&self, record: &Record) -> String {
        self.table
            .key
            .as_ref()
            .and_then(|k| record.get(k.get_ref()))
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| record.provenance.to_string())
    }

    /// Converts one record.
    pub fn convert(&self, record: &Record) -> Converted {
        if self.source_kind() == Some(crate::project::SourceKind::Fhir) {
            return crate::fhir_source::convert(self.project, self.table_name, record);
        }
        let key = self.key(record);
        let resource_type = self.table.resource.as_str();
        let mut out = Converted {
            key: key.clone(),
            resources: Vec::new(),
            findings: Vec::new(),
            links: Vec::new(),
            dates: Vec::new(),
            columns: Vec::new(),
        };
        let mut base = Map::new();
        base.insert("resourceType".into(), json!(resource_type));
        base.insert("id".into(), json!(resource_id(self.table_name, &key, "")));
        let mut per_column: Vec<(&str, &ColumnDecl, Value)> = Vec::new();
        let mut documents: Vec<(&str, &str, &str)> = Vec::new();
        for (column, decl) in &self.table.columns {
            let raw = record.get(column).unwrap_or("").trim();
            if raw.is_empty() {
                if decl.required {
                    out.findings.push(Finding::new(
                        Severity::Error,
                        "required",
                        column,
                        format!("required column {column} is empty"),
                    ));
                }
                continue;
            }
            let Some(element) = &decl.element else {
                self.fixed(&mut base, &decl.with, column);
                continue;
            };
            let Some(path) = element.strip_prefix(resource_type).and_then(|p| p.strip_prefix('.')) else {
                out.findings.push(Finding::new(
                    Severity::Error,
                    "mapping",
                    column,
                    format!("element {element} is not an element of {resource_type}"),
                ));
                continue;
            };
            if decl.kind == ColumnType::Document {
                documents.push((column, path, raw));
                continue;
            }
            match self.value(record, column, decl, element, raw, &mut out) {
                Some(value) if decl.code.is_some() => per_column.push((column, decl, value)),
                Some(value) => {
                    self.write(&mut base, column, element, path, decl, value, record, &mut out);
                    self.fixed(&mut base, &decl.with, column);
                }
                None => {}
            }
        }
        for join in &self.table.joins {
            let value = record.get(&join.column).unwrap_or("").trim();
            if value.is_empty() {
                continue;
            }
            let target = join.table.get_ref();
            let Some(target_decl) = self.project.tables.get(target) else {
                continue;
            };
            out.links.push(Link { column: join.column.clone(), table: target.clone(), key: value.to_owned() });
            if join.element.is_empty() {
                continue;
            }
            let reference =
                json!({ "reference": format!("{}/{}", target_decl.resource, resource_id(target, value, "")) });
            if let Some(path) = join.element.strip_prefix(resource_type).and_then(|p| p.strip_prefix('.')) {
                set_path(&mut base, path, reference, self.table_name, &join.column);
            }
        }
        // A coded element left without its code but with a text (a
        // free-text medication): kept as text, reported.
        for (column, decl) in &self.table.columns {
            let empty = record.get(column).unwrap_or("").trim().is_empty();
            let concept = decl
                .element
                .as_deref()
                .and_then(|e| e.strip_prefix(resource_type))
                .and_then(|p| p.strip_prefix('.'))
                .and_then(|p| p.strip_suffix(".coding.code"));
            if let Some(concept) = concept
                && empty
                && decl.kind == ColumnType::Code
                && get_path(&base, &format!("{concept}.text")).is_some()
            {
                out.findings.push(Finding::new(
                    Severity::Information,
                    "text-only",
                    column,
                    format!("no code in {column}: {concept} kept as text only"),
                ));
            }
        }
        for presence in &self.table.presence {
            let filled = !record.get(&presence.column).unwrap_or("").trim().is_empty();
            let code = if filled { &presence.filled } else { &presence.empty };
            let Some(path) = presence.element.strip_prefix(resource_type).and_then(|p| p.strip_prefix('.')) else {
                continue;
            };
            let decl = ColumnDecl { kind: ColumnType::Code, ..ColumnDecl::default() };
            self.write_code(&mut base, &presence.column, &presence.element, path, &decl, code, record, &mut out);
        }
        self.fixed(&mut base, &self.table.fixed, "");
        defaults(&mut base, resource_type, !per_column.is_empty());
        if out.failed() {
            return out;
        }
        for (column, path, name) in documents {
            let read = match &self.dir {
                Some(dir) => crate::documents::read(dir, name),
                None => Err(format!("{name}: the source has no folder to read documents from")),
            };
            match read {
                Ok(document) => {
                    let binary_id = resource_id(self.table_name, &key, column);
                    let title = base.get("description").and_then(Value::as_str).unwrap_or(name).to_owned();
                    let creation = base.get("date").and_then(Value::as_str).map(str::to_owned);
                    let attachment = crate::documents::attachment(&binary_id, &document, &title, creation.as_deref());
                    set_path(&mut base, path, attachment, self.table_name, column);
                    out.resources.push(crate::documents::binary(&binary_id, &document));
                    out.columns.push(Some(column.to_owned()));
                }
                Err(message) => {
                    out.findings.push(Finding::new(Severity::Error, "document", column, message));
                    return out;
                }
            }
        }
        if per_column.is_empty() {
            out.resources.push(Value::Object(base));
            out.columns.push(None);
        } else {
            for (column, decl, value) in per_column {
                let mut resource = base.clone();
                resource.insert("id".into(), json!(resource_id(self.table_name, &key, column)));
                if let Some((system, code)) = decl.code.as_ref().and_then(|c| c.get_ref().split_once('#')) {
                    let system = self.project.code_systems.get(system).cloned().unwrap_or_else(|| system.to_owned());
                    resource.insert("code".into(), json!({ "coding": [{ "system": system, "code": code }] }));
                }
                let element = decl.element.as_deref().unwrap_or_default();
                let path = element.strip_prefix(resource_type).and_then(|p| p.strip_prefix('.')).unwrap_or_default();
                self.write(&mut resource, column, element, path, decl, value, record, &mut out);
                out.resources.push(Value::Object(resource));
                out.columns.push(Some(column.to_owned()));
            }
        }
        out
    }

    /// The JSON value of a non-empty field (a code column yields its code
    /// text; `write` shapes it). `None` after reporting an error.
    fn value(
        &self,
        _record: &Record,
        column: &str,
        decl: &ColumnDecl,
        element: &str,
        raw: &str,
        out: &mut Converted,
    ) -> Option<Value> {
        let bad = |out: &mut Converted, what: &str| {
            out.findings.push(Finding::new(Severity::Error, "format", column, format!("{column}: not {what}")));
            None
        };
        match decl.kind {
            ColumnType::Text | ColumnType::Code | ColumnType::Reference | ColumnType::Document => Some(json!(raw)),
            ColumnType::Date | ColumnType::Datetime => {
                let formats = self.project.date_formats(self.table, decl);
                let Some(mut text) = dates::read_any(&formats, raw) else {
                    return bad(out, &format!("a date in the declared formats ({})", formats.join(", ")));
                };
                if INSTANTS.contains(&element) && text.len() == 10 {
                    text.push_str("T00:00:00");
                }
                if text.len() > 10 && !text.ends_with('Z') {
                    text = self.zone.localise(&text).unwrap_or(text);
                }
                out.dates.push((column.to_owned(), text.clone()));
                Some(json!(text))
            }
            ColumnType::Decimal | ColumnType::Integer => {
                let integer = decl.kind == ColumnType::Integer;
                let text_row = decl
                    .type_column
                    .as_deref()
                    .and_then(|c| _record.get(c))
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("text"));
                if text_row && element.ends_with("valueQuantity.value") {
                    // The row says its value is text (Synthea's TYPE column).
                    return Some(json!(raw));
                }
                if !is_number(raw, integer) && element.ends_with("valueQuantity.value") {
                    // A text result ("positive") in a numeric result column:
                    // kept as valueString, reported.
                    out.findings.push(Finding::new(
                        Severity::Information,
                        "text-value",
                        column,
                        format!("{column}: not a number; kept as a text value"),
                    ));
                    return Some(json!(raw));
                }
                if !is_number(raw, integer) {
                    return bad(out, if integer { "a whole number" } else { "a decimal number" });
                }
                serde_json::from_str::<serde_json::Number>(raw).ok().map(Value::Number)
            }
            ColumnType::Boolean => match raw.to_ascii_lowercase().as_str() {
                "y" | "yes" | "true" | "t" | "1" => Some(json!(true)),
                "n" | "no" | "false" | "f" | "0" => Some(json!(false)),
                _ => bad(out, "yes or no"),
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        resource: &mut Map<String, Value>,
        column: &str,
        element: &str,
        path: &str,
        decl: &ColumnDecl,
        value: Value,
        record: &Record,
        out: &mut Converted,
    ) {
        if decl.kind == ColumnType::Code {
            let raw = value.as_str().unwrap_or_default();
            self.write_code(resource, column, element, path, decl, raw, record, out);
            return;
        }
        if let (Some(parent), Value::String(_)) = (path.strip_suffix("Quantity.value"), &value) {
            set_path(resource, &format!("{parent}String"), value, self.table_name, column);
            return;
        }
        let quantity = decl.unit.is_some() || decl.unit_column.is_some();
        if quantity && let Some(parent) = path.strip_suffix(".value") {
            let mut q = Map::new();
            q.insert("value".into(), value);
            if let Some(unit) = &decl.unit {
                q.insert("unit".into(), json!(unit));
                q.insert("system".into(), json!(UCUM));
                q.insert("code".into(), json!(unit));
            } else if let Some(unit_column) = &decl.unit_column {
                let raw = record.get(unit_column).unwrap_or("").trim();
                let map = decl.unit_map.as_ref().and_then(|m| self.project.unit_maps.get(m.get_ref()));
                let normal = map.and_then(|m| m.get(raw).or_else(|| m.values().find(|v| v.as_str() == raw)));
                match normal {
                    _ if raw.is_empty() => out.findings.push(Finding::new(
                        Severity::Warning,
                        "unit-missing",
                        unit_column,
                        format!("{column}: a value without a unit"),
                    )),
                    Some(unit) if !codes::is_ucum(unit) => {
                        out.findings.push(Finding::new(
                            Severity::Warning,
                            "unit-unmapped",
                            unit_column,
                            format!("unit {raw:?} maps to {unit:?}, which is not a UCUM unit: kept as text, no UCUM code"),
                        ));
                        q.insert("unit".into(), json!(raw));
                    }
                    // A unit the map does not list but that is UCUM already.
                    None if codes::is_ucum(raw) => {
                        q.insert("unit".into(), json!(raw));
                        q.insert("system".into(), json!(UCUM));
                        q.insert("code".into(), json!(raw));
                    }
                    Some(unit) => {
                        if unit != raw {
                            out.findings.push(Finding::new(
                                Severity::Information,
                                "unit-normalised",
                                unit_column,
                                format!("unit {raw:?} normalised to UCUM {unit:?}"),
                            ));
                        }
                        q.insert("unit".into(), json!(unit));
                        q.insert("system".into(), json!(UCUM));
                        q.insert("code".into(), json!(unit));
                    }
                    None => {
                        out.findings.push(Finding::new(
                            Severity::Warning,
                            "unit-unmapped",
                            unit_column,
                            format!("unit {raw:?} is not in the unit map: kept as text, no UCUM code"),
                        ));
                        q.insert("unit".into(), json!(raw));
                    }
                }
            }
            set_path(resource, parent, Value::Object(q), self.table_name, column);
            return;
        }
        set_path(resource, path, value, self.table_name, column);
    }

    #[allow(clippy::too_many_arguments)]
    fn write_code(
        &self,
        resource: &mut Map<String, Value>,
        column: &str,
        element: &str,
        path: &str,
        decl: &ColumnDecl,
        raw: &str,
        record: &Record,
        out: &mut Converted,
    ) {
        let systems = &self.project.code_systems;
        let mut column_system = decl.system.as_ref().and_then(|s| systems.get(s.get_ref())).cloned();
        // A code system named per row (Synthea's SYSTEM column).
        let row_system = decl.system_column.as_deref().and_then(|c| record.get(c)).map(str::trim).unwrap_or("");
        if !row_system.is_empty() {
            let map = decl.system_map.as_ref().and_then(|m| self.project.value_maps.get(m.get_ref()));
            match map.and_then(|m| m.values.get(row_system)).and_then(|key| systems.get(key)) {
                Some(uri) => column_system = Some(uri.clone()),
                None if row_system.contains("://") || row_system.starts_with("urn:") => {
                    column_system = Some(row_system.to_owned());
                }
                None => {
                    let system_column = decl.system_column.as_deref().unwrap_or(column);
                    out.findings.push(Finding::new(
                        Severity::Warning,
                        "unmapped-code",
                        system_column,
                        format!(
                            "code system {row_system:?} is not in the system map: code kept as a local code with text"
                        ),
                    ));
                    column_system = Some(local_system(self.table_name, system_column));
                }
            }
        }
        let map = decl.value_map.as_ref().and_then(|m| self.project.value_maps.get(m.get_ref()));
        // Why a code that claims a standard system is not one of its codes.
        let mut unfit: Option<String> = None;
        // (system, code, mapped)
        let (system, code, mapped) = match map {
            Some(map) => match map.values.get(raw) {
                Some(standard) => {
                    let system = map.system.as_ref().and_then(|s| systems.get(s.get_ref())).cloned();
                    if let Some(system) = &system
                        && let codes::Check::Invalid(why) | codes::Check::Warning(why) = codes::check(system, standard)
                    {
                        out.findings.push(Finding::new(
                            Severity::Warning,
                            "code-check",
                            column,
                            format!("value map entry {raw:?} = {standard:?}: {why}"),
                        ));
                    }
                    (system, standard.clone(), true)
                }
                None => (column_system.filter(|s| s.starts_with("urn:")), raw.to_owned(), false),
            },
            None => match column_system {
                Some(system) => match codes::check(&system, raw) {
                    codes::Check::Valid => (Some(system), raw.to_owned(), true),
                    codes::Check::Warning(why) => {
                        out.findings.push(Finding::new(Severity::Warning, "code-check", column, why));
                        (Some(system), raw.to_owned(), true)
                    }
                    codes::Check::Invalid(why) => {
                        unfit = Some(why);
                        (None, raw.to_owned(), false)
                    }
                },
                None => (None, raw.to_owned(), true),
            },
        };
        let local = || local_system(self.table_name, column);
        if !mapped {
            out.findings.push(Finding::new(
                Severity::Warning,
                "unmapped-code",
                column,
                match map {
                    Some(_) => {
                        format!("local code {raw:?} has no entry in the value map: kept as a local code with text")
                    }
                    None => format!(
                        "code {raw:?} is not a code of the column's code system ({}): kept as a local code with text",
                        unfit.as_deref().unwrap_or("unknown")
                    ),
                },
            ));
        }
        let system = if mapped { system } else { Some(system.unwrap_or_else(local)) };
        let coding = |system: Option<String>| {
            let mut c = Map::new();
            if let Some(s) = system {
                c.insert("system".into(), json!(s));
            }
            c.insert("code".into(), json!(code));
            Value::Object(c)
        };
        if let Some(concept) = path.strip_suffix(".coding.code") {
            set_path(resource, &format!("{concept}.coding"), coding(system), self.table_name, column);
            if !mapped {
                let text_path = format!("{concept}.text");
                if get_path(resource, &text_path).is_none() {
                    set_path(resource, &text_path, json!(raw), self.table_name, column);
                }
            }
        } else if let Some((_, default)) = CODEABLE.iter().find(|(e, _)| *e == element) {
            let system = if mapped { system.or(default.map(str::to_owned)) } else { system };
            let mut concept = Map::new();
            concept.insert("coding".into(), json!([coding(system)]));
            if !mapped {
                concept.insert("text".into(), json!(raw));
            }
            set_path(resource, path, Value::Object(concept), self.table_name, column);
        } else if CODING.contains(&element) {
            set_path(resource, path, coding(system), self.table_name, column);
        } else if mapped {
            set_path(resource, path, json!(code), self.table_name, column);
        } else {
            // A primitive code cannot hold a local value: keep it beside, in
            // an extension named after the column.
            let ext = json!({ "url": local(), "valueString": raw });
            match resource.get_mut("extension").and_then(Value::as_array_mut) {
                Some(list) => list.push(ext),
                None => {
                    resource.insert("extension".into(), json!([ext]));
                }
            }
        }
    }
}

impl Converter<'_> {
    /// Writes fixed elements (`fixed` of a table, `with` of a column) where
    /// the resource does not hold them yet.
    fn fixed(
        &self,
        resource: &mut Map<String, Value>,
        fixed: &std::collections::BTreeMap<String, toml::Value>,
        column: &str,
    ) {
        let resource_type = self.table.resource.as_str();
        for (element, value) in fixed {
            let Some(path) = element.strip_prefix(resource_type).and_then(|p| p.strip_prefix('.')) else {
                continue;
            };
            if !path.contains('[') && get_path(resource, path).is_some() {
                continue;
            }
            let Ok(value) = serde_json::to_value(value) else {
                continue;
            };
            match value {
                Value::Array(items) if !path.contains('.') => {
                    resource.insert(path.to_owned(), Value::Array(items));
                }
                value => set_path(resource, path, value, self.table_name, column),
            }
        }
    }
}

/// Fixed elements a resource type needs that the legacy data does not hold.
fn defaults(resource: &mut Map<String, Value>, resource_type: &str, per_column: bool) {
    let mut put = |name: &str, value: Value| {
        if !resource.contains_key(name) {
            resource.insert(name.into(), value);
        }
    };
    match resource_type {
        "Encounter" => put("status", json!("finished")),
        "Observation" => {
            put("status", json!("final"));
            let category = if per_column { "vital-signs" } else { "laboratory" };
            put(
                "category",
                json!([{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": category
                }] }]),
            );
        }
        "MedicationStatement" => put("status", json!("unknown")),
        "MedicationRequest" => {
            put("status", json!("unknown"));
            put("intent", json!("order"));
        }
        "DocumentReference" => put("status", json!("current")),
        _ => {}
    }
    // An attachment mapped from a file name: its relative URL and type.
    if let Some(Value::Array(content)) = resource.get_mut("content") {
        for item in content {
            if let Some(Value::String(file)) = item.get("attachment").cloned() {
                let kind =
                    if file.to_ascii_lowercase().ends_with(".txt") { "text/plain" } else { "application/octet-stream" };
                item["attachment"] = json!({ "contentType": kind, "url": file });
            }
        }
    }
}

/// Whether `code` is a code of a standard `system` Hearth checks
/// ([`codes::check`]; a warning still fits).
pub fn fits_system(system: &str, code: &str) -> bool {
    !matches!(codes::check(system, code), codes::Check::Invalid(_))
}

fn is_number(text: &str, integer: bool) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, frac) = digits.split_once('.').map_or((digits, None), |(w, f)| (w, Some(f)));
    !whole.is_empty()
        && whole.bytes().all(|c| c.is_ascii_digit())
        && match frac {
            None => true,
            Some(f) => !integer && !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()),
        }
}

fn split_segment(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once('[') {
        Some((name, rest)) => (name, Some(rest.trim_end_matches(']'))),
        None => (segment, None),
    }
}

/// The marker fields of a list entry picked by `[name]`.
fn marker(name: &str, pick: &str, table: &str) -> Map<String, Value> {
    let mut m = Map::new();
    match name {
        "identifier" => {
            m.insert("system".into(), json!(local_system(table, pick)));
        }
        "telecom" => {
            m.insert("system".into(), json!(pick));
        }
        _ => {}
    }
    m
}

fn matches(entry: &Value, marker: &Map<String, Value>) -> bool {
    marker.iter().all(|(k, v)| entry.get(k) == Some(v))
}

/// Writes `value` at a dotted `path` (`name.given`, `identifier[mrn].value`);
/// lists are created as needed and a list leaf is appended to.
pub fn set_path(root: &mut Map<String, Value>, path: &str, value: Value, table: &str, column: &str) {
    let segments: Vec<&str> = path.split('.').collect();
    // A top-level element that does not repeat in this resource type though
    // its name does elsewhere (`Organization.name`).
    let single = root
        .get("resourceType")
        .and_then(Value::as_str)
        .is_some_and(|t| SINGLE.iter().any(|(rt, e)| *rt == t && segments.first() == Some(e)));
    let mut node = root;
    for (i, segment) in segments.iter().enumerate() {
        let (name, pick) = split_segment(segment);
        let last = i + 1 == segments.len();
        // `[N]`: the entry at index N of a list (created as needed).
        let index = pick.and_then(|p| p.parse::<usize>().ok());
        let is_array = (ARRAYS.contains(&name) && !(single && i == 0)) || index.is_some();
        if last {
            if is_array {
                match node.get_mut(name).and_then(Value::as_array_mut) {
                    Some(list) => list.push(value),
                    None => {
                        node.insert(name.into(), json!([value]));
                    }
                }
            } else {
                node.insert(name.into(), value);
            }
            return;
        }
        let child = if is_array {
            let pick = pick.filter(|_| index.is_none()).unwrap_or(if name == "identifier" { column } else { "" });
            let mark = marker(name, pick, table);
            let list = node.entry(name).or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            let Some(list) = list.as_array_mut() else {
                return;
            };
            if let Some(n) = index {
                while list.len() <= n {
                    list.push(json!({}));
                }
                let child = &mut list[n];
                if !child.is_object() {
                    *child = json!({});
                }
                let Some(next) = child.as_object_mut() else {
                    return;
                };
                node = next;
                continue;
            }
            let found = if mark.is_empty() {
                (!list.is_empty()).then_some(0)
            } else {
                list.iter().position(|e| matches(e, &mark))
            };
            let index = match found {
                Some(i) => i,
                None => {
                    list.push(Value::Object(mark));
                    list.len() - 1
                }
            };
            &mut list[index]
        } else {
            node.entry(name).or_insert_with(|| json!({}))
        };
        if !child.is_object() {
            *child = json!({});
        }
        let Some(next) = child.as_object_mut() else {
            return;
        };
        node = next;
    }
}

/// The value at a dotted path (first list entries), if any.
pub fn get_path<'v>(root: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut value: Option<&Value> = None;
    let mut node = root;
    for segment in path.split('.') {
        let (name, pick) = split_segment(segment);
        let mut v = node.get(name)?;
        if let Some(list) = v.as_array() {
            v = match pick.and_then(|p| p.parse::<usize>().ok()) {
                Some(n) => list.get(n)?,
                None => list.first()?,
            };
        }
        value = Some(v);
        if let Some(o) = v.as_object() {
            node = o;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Provenance;
    use std::path::Path;

    fn record(table: &str, pairs: &[(&str, &str)]) -> Record {
        Record {
            table: table.into(),
            provenance: Provenance::FileLine { file: format!("{table}.csv"), line: 2 },
            columns: pairs.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>().into(),
            values: pairs.iter().map(|(_, v)| v.to_string()).collect(),
        }
    }

    fn preset() -> Project {
        crate::project::parse(crate::project::PRESETS[0].text, Path::new("legacy-csv")).expect("preset")
    }

    #[test]
    fn resource_ids_never_change() {
        // A rerun finds what an earlier run loaded by these ids: the first
        // 16 bytes of SHA-256("patients\0P1\0\0") in lower-case hex.
        assert_eq!(resource_id("patients", "P1", ""), "f9e9d88ed8e777e6a467b4f70d52150f");
    }

    #[test]
    fn a_patient_row_becomes_a_valid_patient() {
        let project = preset();
        let c = Converter::new(&project, "patients").expect("converter");
        let r = record(
            "patients",
            &[
                ("patient_id", "P1"),
                ("mrn", "M1"),
                ("last_name", "Müller"),
                ("first_name", "José"),
                ("birth_date", "03/04/1987"),
                ("sex", "M"),
                ("address", "1 Main St"),
                ("city", "Springfield"),
                ("state", "IL"),
                ("zip", "62701"),
                ("phone", "555-0100"),
            ],
        );
        let out = c.convert(&r);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        let p = &out.resources[0];
        assert_eq!(p["birthDate"], "1987-03-04");
        assert_eq!(p["gender"], "male");
        assert_eq!(p["name"][0]["given"][0], "José");
        assert_eq!(p["identifier"].as_array().map(Vec::len), Some(2));
        let systems: Vec<_> = p["identifier"].as_array().into_iter().flatten().map(|i| i["system"].clone()).collect();
        assert!(systems.contains(&json!("urn:hearth:local:patients:mrn")), "{systems:?}");
        assert_eq!(p["telecom"][0]["system"], "phone");
        assert_eq!(p["address"][0]["line"][0], "1 Main St");
        assert_eq!(p["id"], json!(resource_id("patients", "P1", "")));
        let issues = fhir::validation::validate(p);
        assert!(
            issues
                .iter()
                .all(|i| !matches!(i.severity, fhir::outcome::Severity::Fatal | fhir::outcome::Severity::Error)),
            "{issues:?}"
        );
        // A sex without a mapping is kept beside, in an extension, and reported.
        let r =
            record("patients", &[("patient_id", "P2"), ("last_name", "X"), ("birth_date", "1990-01-01"), ("sex", "Q")]);
        let out = c.convert(&r);
        assert_eq!(out.findings[0].kind, "unmapped-code");
        assert_eq!(out.resources[0]["extension"][0]["valueString"], "Q");
        let issues = fhir::validation::validate(&out.resources[0]);
        assert!(
            issues
                .iter()
                .all(|i| !matches!(i.severity, fhir::outcome::Severity::Fatal | fhir::outcome::Severity::Error)),
            "{issues:?}"
        );
        // An empty required field rejects, naming the field.
        let out =
            c.convert(&record("patients", &[("patient_id", "P3"), ("last_name", ""), ("birth_date", "1/1/1990")]));
        assert!(out.failed() && out.resources.is_empty());
        assert_eq!(out.findings[0].field.as_deref(), Some("last_name"));
    }

    #[test]
    fn codes_units_and_vitals_sets() {
        let project = preset();
        let labs = Converter::new(&project, "lab_results").expect("labs");
        let r = record(
            "lab_results",
            &[
                ("result_id", "L1"),
                ("patient_id", "P1"),
                ("encounter_id", ""),
                ("test_code", "XLAB-9"),
                ("test_name", "SEND-OUT MISC"),
                ("result_value", "5.5"),
                ("units", "mg/dl"),
                ("collected_date", "2024-01-02"),
            ],
        );
        let out = labs.convert(&r);
        let o = &out.resources[0];
        assert_eq!(o["code"]["coding"][0]["system"], "urn:hearth:migration:legacy:lab");
        assert_eq!(o["code"]["coding"][0]["code"], "XLAB-9");
        assert_eq!(o["code"]["text"], "SEND-OUT MISC");
        assert_eq!(o["valueQuantity"]["code"], "mg/dL");
        assert_eq!(o["subject"]["reference"], format!("Patient/{}", resource_id("patients", "P1", "")));
        assert!(o.get("encounter").is_none());
        let mut kinds: Vec<_> = out.findings.iter().map(|f| f.kind).collect();
        kinds.sort();
        assert_eq!(kinds, ["unit-normalised", "unmapped-code"]);
        let r = record(
            "lab_results",
            &[
                ("result_id", "L2"),
                ("patient_id", "P1"),
                ("test_code", "GLU"),
                ("result_value", "positive"),
                ("collected_date", "2024-01-02"),
            ],
        );
        let out = labs.convert(&r);
        assert_eq!(out.resources[0]["valueString"], "positive");
        assert_eq!(out.resources[0]["code"]["coding"][0]["system"], "http://loinc.org");
        assert_eq!(out.links.len(), 1);

        let problems = Converter::new(&project, "problems").expect("problems");
        let r =
            record("problems", &[("problem_id", "D1"), ("patient_id", "P1"), ("dx_code", "LOC-77"), ("status", "A")]);
        let out = problems.convert(&r);
        let c = &out.resources[0];
        assert_eq!(c["code"]["coding"][0]["system"], "urn:hearth:local:problems:dx_code");
        assert_eq!(c["code"]["text"], "LOC-77");
        assert_eq!(c["clinicalStatus"]["coding"][0]["code"], "active");
        let r = record("problems", &[("problem_id", "D2"), ("patient_id", "P1"), ("dx_code", "E11.9")]);
        assert_eq!(
            problems.convert(&r).resources[0]["code"]["coding"][0]["system"],
            "http://hl7.org/fhir/sid/icd-10-cm"
        );

        let vitals = Converter::new(&project, "vitals").expect("vitals");
        let r = record(
            "vitals",
            &[
                ("vitals_id", "V1"),
                ("encounter_id", "E1"),
                ("patient_id", "P1"),
                ("taken_at", "2024-07-01 10:30"),
                ("bp_systolic", "120"),
                ("pulse", "70"),
                ("temp_f", "98.6"),
            ],
        );
        let out = vitals.convert(&r);
        assert_eq!(out.resources.len(), 3, "one Observation per measured column");
        let ids: std::collections::HashSet<_> = out.resources.iter().map(|r| r["id"].clone()).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(out.resources[0]["effectiveDateTime"], "2024-07-01T10:30:00-05:00");
        for o in &out.resources {
            let issues = fhir::validation::validate(o);
            assert!(
                issues
                    .iter()
                    .all(|i| !matches!(i.severity, fhir::outcome::Severity::Fatal | fhir::outcome::Severity::Error)),
                "{issues:?}"
            );
        }
    }

    #[test]
    fn per_row_systems_text_values_presence_fixed_with_and_indexes() {
        let toml = r#"
[project]
name = "t"

[defaults]
date_formats = ["YYYY-MM-DDThh:mm:ssZ", "YYYY-MM-DD"]
timezone = "America/Chicago"

[sources.s]
kind = "csv"
path = "."

[code_systems]
snomed = "http://snomed.info/sct"
rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
loinc = "http://loinc.org"

[value_maps.systems]
values = { "SNOMED-CT" = "snomed", RxNorm = "rxnorm" }

[unit_maps.ucum]
"kg" = "kg"

[tables.allergies]
source = "s"
file = "a.csv"
resource = "AllergyIntolerance"
fixed = { "AllergyIntolerance.verificationStatus" = { coding = [{ system = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", code = "confirmed" }] } }

[tables.allergies.columns]
CODE = { element = "AllergyIntolerance.code.coding.code", type = "code", system = "snomed", system_column = "SYSTEM", system_map = "systems" }
SYSTEM = {}
STOP = {}
R2 = { element = "AllergyIntolerance.reaction[1].manifestation.coding.code", type = "code", system = "snomed", with = { "AllergyIntolerance.reaction[1].severity" = "mild" } }
D2 = { element = "AllergyIntolerance.reaction[1].manifestation.text" }

[[tables.allergies.presence]]
column = "STOP"
element = "AllergyIntolerance.clinicalStatus"
filled = "inactive"
empty = "active"

[tables.obs]
source = "s"
file = "o.csv"
resource = "Observation"

[tables.obs.columns]
DATE = { element = "Observation.effectiveDateTime", type = "datetime" }
CODE = { element = "Observation.code.coding.code", type = "code", system = "loinc" }
VALUE = { element = "Observation.valueQuantity.value", type = "decimal", unit_column = "UNITS", unit_map = "ucum", type_column = "TYPE" }
UNITS = {}
TYPE = {}
"#;
        let project = crate::project::parse(toml, Path::new("t.toml")).expect("project");
        let allergies = Converter::new(&project, "allergies").expect("allergies");
        let rx = allergies.convert(&record("allergies", &[("CODE", "7980"), ("SYSTEM", "RxNorm"), ("STOP", "")]));
        let a = &rx.resources[0];
        assert!(rx.findings.is_empty(), "{:?}", rx.findings);
        assert_eq!(a["code"]["coding"][0]["system"], "http://www.nlm.nih.gov/research/umls/rxnorm");
        assert_eq!(a["clinicalStatus"]["coding"][0]["code"], "active");
        assert_eq!(
            a["clinicalStatus"]["coding"][0]["system"],
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
        );
        assert_eq!(a["verificationStatus"]["coding"][0]["code"], "confirmed");
        let out = allergies.convert(&record(
            "allergies",
            &[
                ("CODE", "91935009"),
                ("SYSTEM", "SNOMED-CT"),
                ("STOP", "2020-01-01"),
                ("R2", "76067001"),
                ("D2", "Sneezing"),
            ],
        ));
        let a = &out.resources[0];
        assert_eq!(a["code"]["coding"][0]["system"], "http://snomed.info/sct");
        assert_eq!(a["clinicalStatus"]["coding"][0]["code"], "inactive");
        assert_eq!(a["reaction"].as_array().map(Vec::len), Some(2), "{a}");
        assert_eq!(a["reaction"][1]["manifestation"][0]["coding"][0]["code"], "76067001");
        assert_eq!(a["reaction"][1]["manifestation"][0]["text"], "Sneezing");
        assert_eq!(a["reaction"][1]["severity"], "mild");
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        // An unknown system name: kept as a local code, reported at SYSTEM.
        let out = allergies.convert(&record("allergies", &[("CODE", "X1"), ("SYSTEM", "NDC-ish")]));
        assert_eq!(out.findings[0].kind, "unmapped-code");
        assert_eq!(out.findings[0].field.as_deref(), Some("SYSTEM"));
        assert_eq!(out.resources[0]["code"]["coding"][0]["system"], "urn:hearth:local:allergies:SYSTEM");

        let obs = Converter::new(&project, "obs").expect("obs");
        let out = obs.convert(&record(
            "obs",
            &[
                ("DATE", "2020-03-04T05:06:07Z"),
                ("CODE", "29463-7"),
                ("VALUE", "70.5"),
                ("UNITS", "kg"),
                ("TYPE", "numeric"),
            ],
        ));
        let o = &out.resources[0];
        assert_eq!(o["effectiveDateTime"], "2020-03-04T05:06:07Z", "UTC stays UTC");
        assert_eq!(o["valueQuantity"]["code"], "kg");
        let out = obs.convert(&record("obs", &[("CODE", "72166-2"), ("VALUE", "Never smoked"), ("TYPE", "text")]));
        assert_eq!(out.resources[0]["valueString"], "Never smoked");
        assert!(out.findings.is_empty(), "a declared text value is no finding: {:?}", out.findings);
    }

    #[test]
    fn code_formats() {
        assert!(fits_system("http://hl7.org/fhir/sid/icd-10-cm", "E11.9"));
        assert!(fits_system("http://hl7.org/fhir/sid/icd-10-cm", "I10"));
        assert!(!fits_system("http://hl7.org/fhir/sid/icd-10-cm", "LOC-77"));
        assert!(fits_system("http://loinc.org", "2345-7"));
        assert!(!fits_system("http://loinc.org", "GLU"));
        assert!(is_number("-1.5", false) && !is_number("1.", false) && !is_number("1.5", true));
    }
}
