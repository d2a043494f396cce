//! RECONCILE: the proof that what the store holds is what the source said.
//!
//! For every source record that loaded (its disposition is `converted`),
//! the critical fields are taken **from the source record itself**, by the
//! mapping's declarations and not from the conversion's output, and
//! compared with the same fields read back from the resources the store
//! holds now (read through the Service, batch reads of 500). A
//! conversion fault that changes a value, a resource changed in the store
//! after the load, or one that is missing, shows up as a [`Mismatch`] naming
//! the table, file and line, key, field, source value and loaded value.
//!
//! Critical fields, per mapped column ([`critical`]):
//! - identifiers (an element under `identifier`, with its `[name]` pick),
//!   names (`Patient.name...`), the text naming a coded thing
//!   (`code.text`, `medicationCodeableConcept.text`);
//! - codes (`type = "code"`): the value map applied (a value without an
//!   entry is expected as it is, the local code), with the code system the
//!   mapping gives it: a coded element (a Coding, a CodeableConcept's
//!   coding) is compared as `system|code` (`|code` without a system), so a
//!   code loaded under another system (or none) is a mismatch; a primitive
//!   code (`gender`) by its value;
//! - dates (`date`, `datetime`): read with the declared formats; a date-time
//!   gets the project's time zone;
//! - values (`decimal`, `integer`, `boolean`): the number as written
//!   (FHIR keeps a decimal's precision), a non-numeric result as text;
//! - units: a column's fixed `unit`, or its `unit_column` through the
//!   `unit_map`;
//! - the fixed code of a per-column resource (`code = "loinc#8480-6"`, as
//!   `http://loinc.org|8480-6`), and
//!   references from joins (`Patient/<id>`).
//!
//! A per-column table (vitals: one Observation per measured column) has
//! its row's fields checked on each resource the row made, and each
//! measured column's value, unit and code on that column's resource.
//!
//! A record of a FHIR source (no mapping) is checked against the source
//! resource itself ([`fhir_expected`]): every leaf at the same place with
//! the same JSON value, except the `id` and `meta.versionId`/`lastUpdated`;
//! each reference into the export as the Hearth `Type/id` of the record it
//! names, that resource stored; the identifier keeping the source id.
//!
//! Each table gets two SHA-256 digests, of its expected fields (source) and
//! of the fields found (loaded), over the same canonical lines: equal
//! digests mean every critical field of every loaded record is as the
//! source says.

use crate::convert::{local_system, resource_id};
use crate::dryrun::DryRun;
use crate::project::{ColumnDecl, ColumnType, Project, SourceKind, TableDecl};
use crate::source::{Provenance, Record};
use domain::Service;
use domain::access::Access;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Resources per batch read through the Service.
const IDS_PER_READ: usize = 500;

/// Batch reads run at once (the stores serve reads in parallel).
const READS_IN_FLIGHT: usize = 2;

/// Source records compared per pass: what the store holds for them is held
/// in memory until they are compared.
const RECORDS_PER_PASS: usize = 20_000;

/// What kind of critical field a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Critical {
    /// An identifier value.
    Identifier,
    /// A part of a person's name.
    Name,
    /// The text naming a coded thing (an allergen, a drug, a test).
    CodeText,
    /// A code (value map applied).
    Code,
    /// A date (`YYYY-MM-DD`): the stored date or the date part of an instant.
    Date,
    /// A date-time with the project's time zone.
    DateTime,
    /// A number, a boolean, or a result kept as text.
    Value,
    /// The unit of a value.
    Unit,
    /// A reference to another resource (`Type/id`).
    Reference,
    /// Any other element of a resource read from a FHIR source (a status,
    /// a display, the narrative).
    Element,
}

impl Critical {
    /// `identifier`, `name`, `code-text`, `code`, `date`, `datetime`, `value`, `unit`, `reference`, `element`.
    pub fn as_str(self) -> &'static str {
        match self {
            Critical::Identifier => "identifier",
            Critical::Name => "name",
            Critical::CodeText => "code-text",
            Critical::Code => "code",
            Critical::Date => "date",
            Critical::DateTime => "datetime",
            Critical::Value => "value",
            Critical::Unit => "unit",
            Critical::Reference => "reference",
            Critical::Element => "element",
        }
    }
}

/// One critical field a source record's resource must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The resource: `""` for the row's resource, else the column of a
    /// per-column resource.
    pub part: String,
    /// The source column (or join column) it comes from.
    pub field: String,
    /// What it is.
    pub what: Critical,
    /// Its element path in the resource (after the resource type).
    pub path: String,
    /// The value, normalised as the mapping declares.
    pub value: String,
    /// The value as the source has it (before the value map, date format,
    /// unit map): what a clinician compares on paper.
    pub raw: String,
}

/// The kind of critical field a mapped column is (`path`: its element path
/// after the resource type), or `None` when it is not critical (an address,
/// a free-text comment).
pub fn critical(column: &ColumnDecl, path: &str) -> Option<Critical> {
    let segments: Vec<&str> = path.split('.').map(|s| s.split('[').next().unwrap_or(s)).collect();
    match column.kind {
        ColumnType::Date => Some(Critical::Date),
        ColumnType::Datetime => Some(Critical::DateTime),
        ColumnType::Code => Some(Critical::Code),
        ColumnType::Decimal | ColumnType::Integer | ColumnType::Boolean => Some(Critical::Value),
        // References are checked through the joins; a document's bytes by
        // the load's read-back, which compares the Binary whole.
        ColumnType::Reference | ColumnType::Document => None,
        ColumnType::Text => {
            if segments.contains(&"identifier") {
                Some(Critical::Identifier)
            } else if segments.first() == Some(&"name") {
                Some(Critical::Name)
            } else if segments.last() == Some(&"text")
                && segments.len() >= 2
                && (segments[segments.len() - 2] == "code" || segments[segments.len() - 2].ends_with("CodeableConcept"))
            {
                Some(Critical::CodeText)
            } else if segments.first().is_some_and(|s| s.starts_with("value")) {
                Some(Critical::Value)
            } else {
                None
            }
        }
    }
}

/// The key of a source record as the mapping declares it: its key column's
/// value, else its place in the source.
pub fn record_key(table: &TableDecl, record: &Record) -> String {
    table
        .key
        .as_ref()
        .and_then(|k| record.get(k.get_ref()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| record.provenance.to_string())
}

/// The critical fields `record` of `table_name` must have in the store,
/// taken from the record and the mapping alone.
pub fn expected(project: &Project, table_name: &str, record: &Record) -> Result<Vec<Expected>, String> {
    let table = project.tables.get(table_name).ok_or_else(|| format!("no table {table_name:?}"))?;
    let zone = crate::zone::Zone::parse(project.defaults.timezone.as_deref().unwrap_or("UTC"))?;
    let rt = table.resource.as_str();
    let raw = |column: &str| record.get(column).unwrap_or("").trim();
    fn path_in<'c>(c: &'c ColumnDecl, rt: &str) -> Option<&'c str> {
        c.element.as_deref().and_then(|e| e.strip_prefix(rt)).and_then(|p| p.strip_prefix('.'))
    }
    let path_of = |c| path_in(c, rt);
    // The resources the row makes: one per measured column, else one.
    let per_column: Vec<&str> = table
        .columns
        .iter()
        .filter(|(name, c)| c.code.is_some() && path_of(c).is_some() && !raw(name).is_empty())
        .map(|(name, _)| name.as_str())
        .collect();
    let row_parts: Vec<&str> = if per_column.is_empty() { vec![""] } else { per_column.clone() };
    let mut out = Vec::new();
    let mut push = |parts: &[&str], field: &str, what: Critical, path: &str, value: String, raw: &str| {
        for part in parts {
            out.push(Expected {
                part: (*part).to_owned(),
                field: field.to_owned(),
                what,
                path: path.to_owned(),
                value: value.clone(),
                raw: raw.to_owned(),
            });
        }
    };
    for (column, decl) in &table.columns {
        let value = raw(column);
        let Some(path) = path_of(decl) else { continue };
        if value.is_empty() {
            continue;
        }
        let Some(what) = critical(decl, path) else { continue };
        let own = [column.as_str()];
        let parts: &[&str] = if decl.code.is_some() { &own } else { &row_parts };
        let normal = match what {
            Critical::Code => expected_code(project, table_name, column, decl, record, value, path),
            Critical::Date | Critical::DateTime => {
                let formats = project.date_formats(table, decl);
                // A date that does not read made the record rejected: it did not load.
                let Some(text) = crate::dates::read_any(&formats, value) else { continue };
                if text.len() > 10 { zone.localise(&text).unwrap_or(text) } else { text }
            }
            Critical::Value if decl.kind == ColumnType::Boolean => match value.to_ascii_lowercase().as_str() {
                "y" | "yes" | "true" | "t" | "1" => "true".to_owned(),
                "n" | "no" | "false" | "f" | "0" => "false".to_owned(),
                _ => continue,
            },
            _ => value.to_owned(),
        };
        let what = if what == Critical::Date && normal.len() > 10 { Critical::DateTime } else { what };
        let path = &with_systems(decl, rt, path);
        push(parts, column, what, path, normal, value);
        if what == Critical::Value
            && let Some(parent) = path.strip_suffix(".value")
        {
            let unit = match (&decl.unit, &decl.unit_column) {
                (Some(unit), _) => Some((unit.clone(), unit.as_str())),
                (None, Some(unit_column)) => {
                    let spelled = raw(unit_column);
                    let map = decl.unit_map.as_ref().and_then(|m| project.unit_maps.get(m.get_ref()));
                    (!spelled.is_empty()).then(|| {
                        (map.and_then(|m| m.get(spelled)).cloned().unwrap_or_else(|| spelled.to_owned()), spelled)
                    })
                }
                (None, None) => None,
            };
            if let Some((unit, spelled)) = unit {
                let field = decl.unit_column.clone().unwrap_or_else(|| column.clone());
                push(parts, &field, Critical::Unit, &format!("{parent}.unit"), unit, spelled);
            }
        }
        if let Some((system, code)) = decl.code.as_ref().and_then(|c| c.get_ref().split_once('#')) {
            let system = project.code_systems.get(system).map_or(system, String::as_str);
            push(
                parts,
                column,
                Critical::Code,
                "code.coding.code",
                format!("{system}|{code}"),
                decl.code.as_ref().map_or("", |c| c.get_ref()),
            );
        }
    }
    for join in &table.joins {
        let value = raw(&join.column);
        let target = join.table.get_ref();
        let (Some(target_decl), Some(path)) =
            (project.tables.get(target), join.element.strip_prefix(rt).and_then(|p| p.strip_prefix('.')))
        else {
            continue;
        };
        // A join on another column than the target's key is looked up, not derived.
        if value.is_empty() || join.on.is_some() {
            continue;
        }
        let reference = format!("{}/{}", target_decl.resource, resource_id(target, value, ""));
        push(&row_parts, &join.column, Critical::Reference, path, reference, value);
    }
    Ok(out)
}

/// The code a mapped code column's `value` must be stored as, with its
/// system, taken from the mapping alone: the column's `system` (or the
/// row's, by `system_column` and `system_map`), the value map's entry and
/// its `system`; a value that is not a code of its standard system, or has
/// no entry in the value map, is a local code (`urn:hearth:local:TABLE:COLUMN`).
/// A coded element is `system|code`; a primitive code is its value.
fn expected_code(
    project: &Project,
    table_name: &str,
    column: &str,
    decl: &ColumnDecl,
    record: &Record,
    value: &str,
    path: &str,
) -> String {
    let systems = &project.code_systems;
    let mut column_system = decl.system.as_ref().and_then(|s| systems.get(s.get_ref())).cloned();
    let row_system = decl.system_column.as_deref().and_then(|c| record.get(c)).map(str::trim).unwrap_or("");
    if !row_system.is_empty() {
        let map = decl.system_map.as_ref().and_then(|m| project.value_maps.get(m.get_ref()));
        column_system = Some(match map.and_then(|m| m.values.get(row_system)).and_then(|key| systems.get(key)) {
            Some(uri) => uri.clone(),
            None if row_system.contains("://") || row_system.starts_with("urn:") => row_system.to_owned(),
            None => local_system(table_name, decl.system_column.as_deref().unwrap_or(column)),
        });
    }
    let map = decl.value_map.as_ref().and_then(|m| project.value_maps.get(m.get_ref()));
    let (system, code, mapped) = match map {
        Some(map) => match map.values.get(value) {
            Some(standard) => (map.system.as_ref().and_then(|s| systems.get(s.get_ref())).cloned(), standard.clone(), true),
            None => (column_system.filter(|s| s.starts_with("urn:")), value.to_owned(), false),
        },
        None => match column_system {
            Some(system) => match crate::codes::check(&system, value) {
                crate::codes::Check::Invalid(_) => (None, value.to_owned(), false),
                _ => (Some(system), value.to_owned(), true),
            },
            None => (None, value.to_owned(), true),
        },
    };
    let system = if mapped { system } else { Some(system.unwrap_or_else(|| local_system(table_name, column))) };
    let element = decl.element.as_deref().unwrap_or_default();
    let coded = |system: Option<String>| format!("{}|{code}", system.unwrap_or_default());
    if path.ends_with(".coding.code") || crate::convert::CODING.contains(&element) {
        coded(system)
    } else if let Some((_, default)) = crate::convert::CODEABLE.iter().find(|(e, _)| *e == element) {
        coded(if mapped { system.or(default.map(str::to_owned)) } else { system })
    } else {
        // A primitive code (a local value is kept in an extension).
        code
    }
}

/// A Coding as `system|code` (`|code` without a system).
fn coding_text(coding: &Value) -> Option<String> {
    let code = coding.get("code").and_then(Value::as_str)?;
    Some(format!("{}|{code}", coding.get("system").and_then(Value::as_str).unwrap_or_default()))
}

/// The values at `path` in `resource` (every list entry; `[name]` after
/// `identifier` picks the identifier of system `urn:hearth:local:TABLE:NAME`,
/// after `telecom` the telecom of system `NAME`; an identifier without a pick
/// is the column's own).
/// `path` with each `identifier[NAME]` whose system the column's `with`
/// sets (`"Patient.identifier[ssn].system" = "http://hl7.org/fhir/sid/us-ssn"`)
/// written `identifier[=SYSTEM]`: the entry is found by that system.
fn with_systems(decl: &ColumnDecl, rt: &str, path: &str) -> String {
    let mut out = path.to_owned();
    for (element, value) in &decl.with {
        let (Some(system), Some(picked)) = (
            value.as_str(),
            element.strip_prefix(rt).and_then(|p| p.strip_prefix('.')).and_then(|p| p.strip_suffix(".system")),
        ) else {
            continue;
        };
        if picked.ends_with(']') && picked.contains("identifier[") && out.starts_with(picked) {
            let at = picked.rfind('[').unwrap_or(0);
            out = format!("{}[={system}]{}", &picked[..at], &out[picked.len()..]);
        }
    }
    out
}

fn leaves<'v>(resource: &'v Value, path: &str, table: &str, column: &str) -> Vec<&'v Value> {
    let mut nodes = vec![resource];
    // Dots inside brackets (a system in `identifier[=SYSTEM]`) do not split.
    let mut segments: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in path.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                segments.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&path[start..]);
    for (i, segment) in segments.iter().enumerate() {
        let (name, pick) = match segment.split_once('[') {
            Some((n, rest)) => (n, Some(rest.trim_end_matches(']'))),
            None => (*segment, None),
        };
        let last = i + 1 == segments.len();
        let marker = match (name, pick) {
            ("identifier", Some(p)) if !last && p.starts_with('=') => Some(p[1..].to_owned()),
            ("identifier", p) if !last => Some(local_system(table, p.unwrap_or(column))),
            ("telecom", Some(p)) if !last => Some(p.to_owned()),
            _ => None,
        };
        let mut next = Vec::new();
        for node in nodes {
            match node.get(name) {
                Some(Value::Array(list)) => next
                    .extend(list.iter().filter(|e| {
                        marker.as_ref().is_none_or(|m| e.get("system").and_then(Value::as_str) == Some(m))
                    })),
                Some(v) => next.push(v),
                None => {}
            }
        }
        nodes = next;
    }
    nodes
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What the stored `resource` holds for `e` (every candidate).
pub fn loaded(resource: &Value, e: &Expected, table: &str) -> Vec<String> {
    let found = leaves(resource, &e.path, table, &e.field);
    match e.what {
        Critical::Code => {
            let mut codes = Vec::new();
            // `...coding.code`: the codings themselves, with their systems.
            let found = match e.path.strip_suffix(".coding.code") {
                Some(concept) => leaves(resource, &format!("{concept}.coding"), table, &e.field),
                None => found,
            };
            for leaf in &found {
                if let Some(s) = leaf.as_str() {
                    codes.push(s.to_owned());
                }
                if let Some(coding) = coding_text(leaf) {
                    codes.push(coding);
                }
                for coding in leaf.get("coding").and_then(Value::as_array).into_iter().flatten() {
                    codes.extend(coding_text(coding));
                }
            }
            if codes.is_empty() {
                // A local value of a primitive code is kept in an extension.
                let url = local_system(table, &e.field);
                for ext in resource.get("extension").and_then(Value::as_array).into_iter().flatten() {
                    if ext.get("url").and_then(Value::as_str) == Some(url.as_str())
                        && let Some(v) = ext.get("valueString").and_then(Value::as_str)
                    {
                        codes.push(v.to_owned());
                    }
                }
            }
            codes
        }
        Critical::Reference => {
            found.iter().filter_map(|r| r.get("reference").and_then(Value::as_str)).map(str::to_owned).collect()
        }
        Critical::Value if found.is_empty() => {
            // A result that is not a number is kept as valueString.
            match e.path.strip_suffix("Quantity.value") {
                Some(prefix) => {
                    leaves(resource, &format!("{prefix}String"), table, &e.field).into_iter().filter_map(text).collect()
                }
                None => Vec::new(),
            }
        }
        _ => found.into_iter().filter_map(text).collect(),
    }
}

/// Whether a loaded candidate is the expected value.
fn agrees(e: &Expected, candidate: &str) -> bool {
    match e.what {
        // A date may be stored as an instant at midnight of that day.
        Critical::Date => candidate.get(..10) == Some(e.value.as_str()),
        // The same instant, whichever way its offset is written (`Z`, `+00:00`).
        Critical::DateTime => candidate == e.value || same_instant(candidate, &e.value),
        _ => candidate == e.value,
    }
}

/// Whether two RFC 3339 date-times name the same instant.
fn same_instant(a: &str, b: &str) -> bool {
    use time::format_description::well_known::Rfc3339;
    match (time::OffsetDateTime::parse(a, &Rfc3339), time::OffsetDateTime::parse(b, &Rfc3339)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The fields to check of one source record.
#[derive(Debug, Clone)]
enum Fields {
    /// A mapped record's critical fields ([`expected`]).
    Mapped(Vec<Expected>),
    /// A FHIR source's resource, leaf by leaf ([`fhir_expected`]).
    Fhir(Vec<FhirField>),
}

/// Whether `table` reads a FHIR source (its resources bypass the mapping).
fn reads_fhir(project: &Project, table: &TableDecl) -> bool {
    project.sources.get(table.source.get_ref()).is_some_and(|s| s.kind == SourceKind::Fhir)
}

/// A step of an element path: a key, or an index into a list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// How a leaf of a FHIR source's resource is found in the loaded one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LeafCheck {
    /// The same JSON value (same type, same text: `70.50` is not `70.5`)
    /// at the same place.
    Same(Vec<Step>, Value),
    /// A reference into the export: at the same place, the Hearth
    /// `Type/id` of the record it names (`None`: no table of the source
    /// holds its type), and that resource is stored.
    Reference(Vec<Step>, Option<(String, String)>),
    /// The identifier keeping the source id (the value is the expected one).
    SourceId(String),
}

/// One field of a resource read from a FHIR source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirField {
    /// The field as every check reports it (`field`: the element path
    /// with the resource type, `Observation.code.coding[0].code`).
    pub expected: Expected,
    check: LeafCheck,
}

/// What a record of a FHIR source must be in the store ([`fhir_expected`]).
#[derive(Debug, Clone)]
pub struct FhirRecord {
    /// `Type/id` as the source names it (the key the conversion gives).
    pub key: String,
    /// The patient it belongs to: its own key for a Patient, else the
    /// `Patient/id` of its `subject` or `patient`.
    pub patient: Option<String>,
    /// Every leaf, reference and the source-id identifier.
    pub fields: Vec<FhirField>,
}

/// The element path of `steps` (`name[0].given[1]`).
fn path_text(steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// A leaf value as a person reads it: a string as it is, else its JSON.
fn leaf_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD` (a FHIR date) or a date-time (`...T hh:mm`).
fn date_kind(text: &str) -> Option<Critical> {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let date = match b.len() {
        4 => digits(0..4),
        7 => digits(0..4) && b[4] == b'-' && digits(5..7),
        10 => digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10),
        _ => false,
    };
    if date {
        return Some(Critical::Date);
    }
    (b.len() > 16 && digits(0..4) && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':')
        .then_some(Critical::DateTime)
}

/// The kind of a FHIR leaf, by where it is and what it holds.
fn fhir_kind(steps: &[Step], value: &Value) -> Critical {
    let keys: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.as_str()),
            Step::Index(_) => None,
        })
        .collect();
    let last = keys.last().copied().unwrap_or("");
    let parent = keys.len().checked_sub(2).map_or("", |i| keys[i]);
    let in_quantity = keys.iter().any(|k| k.ends_with("Quantity") || *k == "quantity");
    if keys.first() == Some(&"identifier") {
        Critical::Identifier
    } else if keys.first() == Some(&"name") && matches!(last, "family" | "given" | "prefix" | "suffix" | "text") {
        Critical::Name
    } else if last == "unit" || (in_quantity && matches!(last, "code" | "system")) {
        Critical::Unit
    } else if matches!(last, "code" | "system") || keys == ["gender"] {
        Critical::Code
    } else if last == "text" && (parent == "code" || parent.ends_with("CodeableConcept")) {
        Critical::CodeText
    } else if let Some(kind) = value.as_str().and_then(date_kind) {
        kind
    } else if value.is_number() || value.is_boolean() || last.starts_with("value") {
        Critical::Value
    } else {
        Critical::Element
    }
}

/// Every leaf under `value` (nulls are no value), with its steps.
fn fhir_leaves(value: &Value, steps: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                steps.push(Step::Key(k.clone()));
                fhir_leaves(v, steps, out);
                steps.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                steps.push(Step::Index(i));
                fhir_leaves(v, steps, out);
                steps.pop();
            }
        }
        Value::Null => {}
        leaf => out.push((steps.clone(), leaf.clone())),
    }
}

/// The value at `steps` in `resource`.
fn value_at<'v>(resource: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    steps.iter().try_fold(resource, |v, s| match s {
        Step::Key(k) => v.get(k.as_str()),
        Step::Index(i) => v.get(*i),
    })
}

/// The source reference at `steps`, when it is one into the export: a
/// `reference` string, or an attachment's `url` naming a Binary.
fn reference_at(steps: &[Step], value: &Value) -> Option<(String, String)> {
    let text = value.as_str()?;
    let mut keys = steps.iter().rev().filter_map(|s| match s {
        Step::Key(k) => Some(k.as_str()),
        Step::Index(_) => None,
    });
    let is_reference = match keys.next()? {
        "reference" => true,
        "url" => text.starts_with("Binary/") && keys.next().is_some_and(|p| p == "attachment" || p == "content"),
        _ => false,
    };
    if is_reference { crate::fhir_source::source_target(text) } else { None }
}

/// What a record of a FHIR source must be in the store, taken from the
/// source resource alone: every leaf at the same place with the same value,
/// except the resource's `id` and `meta.versionId`/`meta.lastUpdated`
/// (Hearth's own); each reference into the export as the Hearth `Type/id`
/// of the record it names; and, on a type that takes identifiers, the
/// identifier keeping the source id.
pub fn fhir_expected(project: &Project, table_name: &str, record: &Record) -> Result<FhirRecord, String> {
    let table = project.tables.get(table_name).ok_or_else(|| format!("no table {table_name:?}"))?;
    let source = table.source.get_ref();
    let text = record.get(crate::fhir_source::RESOURCE_COLUMN).unwrap_or_default();
    let resource: Value =
        serde_json::from_str(text).map_err(|e| format!("{}: {table_name}: not JSON now: {e}", record.provenance))?;
    let rtype = resource["resourceType"].as_str().unwrap_or_default().to_owned();
    let source_id = resource["id"].as_str().unwrap_or_default().to_owned();
    let key = format!("{rtype}/{source_id}");
    let mut leaves = Vec::new();
    if let Some(map) = resource.as_object() {
        for (k, v) in map {
            match k.as_str() {
                "resourceType" | "id" => {}
                "meta" => {
                    for (m, v) in v.as_object().into_iter().flatten() {
                        if m != "versionId" && m != "lastUpdated" {
                            fhir_leaves(v, &mut vec![Step::Key("meta".into()), Step::Key(m.clone())], &mut leaves);
                        }
                    }
                }
                _ => fhir_leaves(v, &mut vec![Step::Key(k.clone())], &mut leaves),
            }
        }
    }
    let mut fields = Vec::with_capacity(leaves.len() + 1);
    for (steps, value) in leaves {
        let path = path_text(&steps);
        let raw = leaf_text(&value);
        let (what, value, check) = match reference_at(&steps, &value) {
            Some((t, id)) => {
                let target = crate::fhir_source::hearth_target(project, source, &t, &id);
                let expected = match &target {
                    Some((t, id)) => format!("{t}/{id}"),
                    None => format!("{raw} (no table of source {source} holds {t})"),
                };
                (Critical::Reference, expected, LeafCheck::Reference(steps, target))
            }
            None => {
                let mut kind = fhir_kind(&steps, &value);
                // The text of any CodeableConcept (one with codings) names a coded thing.
                if kind == Critical::Element
                    && steps.last() == Some(&Step::Key("text".into()))
                    && value_at(&resource, &steps[..steps.len() - 1]).is_some_and(|parent| parent.get("coding").is_some())
                {
                    kind = Critical::CodeText;
                }
                (kind, raw.clone(), LeafCheck::Same(steps, value))
            }
        };
        fields.push(FhirField {
            expected: Expected { part: String::new(), field: format!("{rtype}.{path}"), what, path, value, raw },
            check,
        });
    }
    let system = crate::fhir_source::source_system(&project.project.name, source);
    let has_own = resource["identifier"]
        .as_array()
        .is_some_and(|list| list.iter().any(|i| i["system"].as_str() == Some(system.as_str())));
    if !has_own && crate::fhir_source::takes_identifiers(&rtype) {
        let path = format!("identifier.where(system='{system}').value");
        fields.push(FhirField {
            expected: Expected {
                part: String::new(),
                field: format!("{rtype}.{path}"),
                what: Critical::Identifier,
                path,
                value: source_id.clone(),
                raw: key.clone(),
            },
            check: LeafCheck::SourceId(system),
        });
    }
    let patient = if rtype == "Patient" {
        Some(key.clone())
    } else {
        ["subject", "patient"]
            .iter()
            .filter_map(|e| resource[*e]["reference"].as_str())
            .filter_map(crate::fhir_source::source_target)
            .find(|(t, _)| t == "Patient")
            .map(|(t, id)| format!("{t}/{id}"))
    };
    Ok(FhirRecord { key, patient, fields })
}

/// Whether the loaded `resource` holds `field`, and what it holds there
/// (`stored`: whether a resource `(Type, id)` is in the store).
fn fhir_found(field: &FhirField, resource: &Value, stored: &dyn Fn(&str, &str) -> bool) -> (bool, Option<String>) {
    let at = |steps: &[Step]| value_at(resource, steps);
    match &field.check {
        LeafCheck::Same(steps, value) => match at(steps) {
            None | Some(Value::Null) => (false, None),
            Some(found) => {
                let same_kind = std::mem::discriminant(found) == std::mem::discriminant(value);
                let shown = if same_kind { leaf_text(found) } else { found.to_string() };
                (found == value, Some(shown))
            }
        },
        LeafCheck::Reference(steps, target) => {
            let Some(found) = at(steps).and_then(Value::as_str) else { return (false, None) };
            let named = target.as_ref().is_some_and(|(t, id)| found == format!("{t}/{id}"));
            let resolves = target.as_ref().is_some_and(|(t, id)| stored(t, id));
            match (named, resolves) {
                (true, true) => (true, Some(found.to_owned())),
                (true, false) => (false, Some(format!("{found} (not stored)"))),
                _ => (false, Some(found.to_owned())),
            }
        }
        LeafCheck::SourceId(system) => {
            let values: Vec<String> = resource["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["system"].as_str() == Some(system.as_str()))
                .map(|i| leaf_text(&i["value"]))
                .collect();
            let ok = values.contains(&field.expected.value);
            let shown = if ok { Some(field.expected.value.clone()) } else { (!values.is_empty()).then(|| values.join(" | ")) };
            (ok, shown)
        }
    }
}

/// One critical field, source and loaded side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCheck {
    /// `Type/id` of the resource it was read from.
    pub resource: String,
    /// The source column.
    pub field: String,
    /// What kind of field.
    pub what: Critical,
    /// The source value (normalised as the mapping declares).
    pub source: String,
    /// The source value as written in the source.
    pub raw: String,
    /// What the store holds (`None`: nothing, or no such resource).
    pub loaded: Option<String>,
    /// The two agree.
    pub ok: bool,
}

/// The critical fields of one source record.
#[derive(Debug, Clone)]
pub struct RecordCheck {
    /// The table.
    pub table: String,
    /// The record's key.
    pub key: String,
    /// Where it is in the source.
    pub provenance: Provenance,
    /// The key of the patient the record belongs to (its own, for a patient).
    pub patient: Option<String>,
    /// Each field.
    pub fields: Vec<FieldCheck>,
}

/// A field that does not agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The table.
    pub table: String,
    /// Where the record is in the source.
    pub provenance: Provenance,
    /// Its key.
    pub key: String,
    /// The source column.
    pub field: String,
    /// `Type/id`.
    pub resource: String,
    /// The source value.
    pub source: String,
    /// What is stored (`None`: absent).
    pub loaded: Option<String>,
    /// Whether the resource itself is stored.
    pub stored: bool,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} [{}]: {}: source {:?}, loaded {} ({})",
            self.table,
            self.provenance,
            self.key,
            self.field,
            self.source,
            match (&self.loaded, self.stored) {
                (Some(l), _) => format!("{l:?}"),
                (None, true) => "nothing".to_owned(),
                (None, false) => "nothing (the resource is not stored)".to_owned(),
            },
            self.resource
        )
    }
}

/// The reconciliation of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReconcile {
    /// Source records that loaded and were checked.
    pub records: u64,
    /// Of which every critical field agrees.
    pub matched: u64,
    /// Of which some field does not.
    pub mismatched: u64,
    /// Critical fields compared.
    pub fields: u64,
    /// SHA-256 of the expected fields (hex).
    pub source_digest: String,
    /// SHA-256 of the fields found, over the same lines (hex).
    pub loaded_digest: String,
}

/// The result of a reconciliation.
#[derive(Debug, Clone, Default)]
pub struct Reconciliation {
    /// Per table.
    pub tables: BTreeMap<String, TableReconcile>,
    /// Every field that does not agree, in table and source order.
    pub mismatches: Vec<Mismatch>,
    /// Every record checked (for the spot-check worksheet).
    pub records: Vec<RecordCheck>,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl Reconciliation {
    /// The machine-readable result (no values but the mismatched ones).
    pub fn to_json(&self) -> Value {
        let tables: serde_json::Map<String, Value> = self
            .tables
            .iter()
            .map(|(t, c)| {
                (
                    t.clone(),
                    json!({
                        "records": c.records, "matched": c.matched, "mismatched": c.mismatched,
                        "fields": c.fields, "source_digest": c.source_digest, "loaded_digest": c.loaded_digest,
                    }),
                )
            })
            .collect();
        let mismatches: Vec<Value> = self
            .mismatches
            .iter()
            .map(|m| {
                let (file, line) = match &m.provenance {
                    Provenance::FileLine { file, line } => (json!(file), json!(line)),
                    Provenance::TableKey { table, .. } => (json!(table), Value::Null),
                };
                json!({
                    "table": m.table, "file": file, "line": line, "place": m.provenance.to_string(), "key": m.key, "field": m.field,
                    "resource": m.resource, "source": m.source, "loaded": m.loaded, "stored": m.stored,
                })
            })
            .collect();
        json!({
            "records": self.tables.values().map(|c| c.records).sum::<u64>(),
            "matched": self.tables.values().map(|c| c.matched).sum::<u64>(),
            "mismatched": self.tables.values().map(|c| c.mismatched).sum::<u64>(),
            "fields": self.tables.values().map(|c| c.fields).sum::<u64>(),
            "seconds": self.seconds,
            "tables": tables,
            "mismatches": mismatches,
        })
    }
}

/// The patient a record of `table` belongs to: its own key for a patient,
/// else the value of its first join to a Patient table.
fn patient_of(project: &Project, table: &TableDecl, key: &str, record: &Record) -> Option<String> {
    if table.resource == "Patient" {
        return Some(key.to_owned());
    }
    table
        .joins
        .iter()
        .find(|j| project.tables.get(j.table.get_ref()).is_some_and(|t| t.resource == "Patient"))
        .and_then(|j| record.get(&j.column))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A reference to a merged patient ([`crate::matching::redirects`]) is
/// expected to point at the patient it was merged into.
pub fn follow_merges(fields: &mut [Expected], redirects: &HashMap<String, String>) {
    for e in fields.iter_mut().filter(|e| e.what == Critical::Reference) {
        if let Some(to) = redirects.get(&e.value) {
            e.value = to.clone();
        }
    }
}

/// Pass 2 of [`reconcile`]: what the store holds under the ids the
/// source keys of `pending` make (and the resources a FHIR record's
/// references name), read through the Service in batches.
async fn read_stored(
    service: &Service,
    access: &Access,
    project: &Project,
    pending: &[(RecordCheck, Fields)],
    done: &mut u64,
    progress: &mut impl FnMut(u64),
) -> Result<HashMap<(String, String), Value>, String> {
    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (check, fields) in pending {
        let table = &project.tables[&check.table];
        match fields {
            Fields::Mapped(fields) => {
                let parts: HashSet<&str> = fields.iter().map(|f| f.part.as_str()).collect();
                for part in parts {
                    ids.entry(table.resource.clone()).or_default().push(resource_id(&check.table, &check.key, part));
                }
            }
            Fields::Fhir(fields) => {
                ids.entry(table.resource.clone()).or_default().push(resource_id(&check.table, &check.key, ""));
                // The resources its references name must be stored too.
                for f in fields {
                    if let LeafCheck::Reference(_, Some((rtype, id))) = &f.check {
                        ids.entry(rtype.clone()).or_default().push(id.clone());
                    }
                }
            }
        }
    }
    let mut keys: Vec<(String, String)> = Vec::new();
    for (resource_type, mut list) in ids {
        list.sort_unstable();
        list.dedup();
        keys.extend(list.into_iter().map(|id| (resource_type.clone(), id)));
    }
    let mut results = futures_util::stream::iter(keys.chunks(IDS_PER_READ).map(|chunk| async move {
        let found = service
            .read_many(access, chunk)
            .await
            .map_err(|e| format!("reading what is stored: {}", e.message()))?;
        let out: Vec<_> = crate::load::parse_stored(found)?.into_iter().map(|(key, value, _)| (key, value)).collect();
        Ok::<_, String>((chunk.len() as u64, out))
    }))
    .buffer_unordered(READS_IN_FLIGHT);
    let mut stored: HashMap<(String, String), Value> = HashMap::new();
    while let Some(result) = results.next().await {
        let (asked, found) = result?;
        stored.extend(found);
        *done += asked;
        progress(*done);
    }
    Ok(stored)
}

/// Reconciles every source record that `run` converted (and so loaded) with
/// what the store behind `service` holds. The source is read again; of the
/// run, only which records made resources is used (the report checks that
/// their number is the number of `converted` records, so a record the
/// conversion dropped does not pass unnoticed).
pub async fn reconcile(
    service: &Service,
    project: &Project,
    project_dir: &Path,
    run: &DryRun,
    mut progress: impl FnMut(u64),
) -> Result<Reconciliation, String> {
    let started = std::time::Instant::now();
    if run.until != crate::dryrun::Stage::Validate {
        return Err(format!("reconcile needs a validated run, not one until {}", run.until.as_str()));
    }
    let loaded_records: HashSet<(&str, String)> =
        run.resources.iter().map(|o| (o.table.as_str(), o.provenance.to_string())).collect();
    let redirects = crate::matching::redirects(run);
    // Pass 1: the source's expectations.
    let mut pending: Vec<(RecordCheck, Fields)> = Vec::new();
    for source_name in project.sources.keys() {
        let Some(source) = project.source(project_dir, source_name) else { continue };
        for table_name in source.tables() {
            let Some(table) = project.tables.get(&table_name) else { continue };
            let rows = source.rows(&table_name).map_err(|e| e.to_string())?;
            for row in rows {
                let Ok(record) = row else { continue };
                if !loaded_records.contains(&(table_name.as_str(), record.provenance.to_string())) {
                    continue;
                }
                let (key, patient, fields) = if reads_fhir(project, table) {
                    let f = fhir_expected(project, &table_name, &record)?;
                    (f.key, f.patient, Fields::Fhir(f.fields))
                } else {
                    let key = record_key(table, &record);
                    let patient = patient_of(project, table, &key, &record);
                    let mut fields = expected(project, &table_name, &record)?;
                    follow_merges(&mut fields, &redirects);
                    (key, patient, Fields::Mapped(fields))
                };
                let check = RecordCheck {
                    table: table_name.clone(),
                    patient,
                    key,
                    provenance: record.provenance.clone(),
                    fields: Vec::new(),
                };
                pending.push((check, fields));
            }
        }
    }
    // Passes 2 and 3, a slice of records at a time (what the store holds
    // for one slice is dropped before the next is read): read, compare, digest.
    let access = Access::system(crate::load::MIGRATION_ACTOR);
    let mut out = Reconciliation::default();
    let mut hashers: BTreeMap<String, (Sha256, Sha256)> = BTreeMap::new();
    let mut done = 0u64;
    let mut pending = pending.into_iter().peekable();
    while pending.peek().is_some() {
        let slice: Vec<(RecordCheck, Fields)> = pending.by_ref().take(RECORDS_PER_PASS).collect();
        let stored = read_stored(service, &access, project, &slice, &mut done, &mut progress).await?;
        let pending = slice;
        for (mut check, fields) in pending {
            let resource_type = project.tables[&check.table].resource.clone();
            let counts = out.tables.entry(check.table.clone()).or_default();
            let (source_hash, loaded_hash) =
                hashers.entry(check.table.clone()).or_insert_with(|| (Sha256::new(), Sha256::new()));
            let mut all_ok = true;
            // Per field: what was expected, of which resource, whether it
            // agrees, what is stored, whether the resource is stored.
            let outcomes: Vec<(Expected, String, bool, Option<String>, bool)> = match fields {
                Fields::Mapped(fields) => {
                    let mut ids: HashMap<String, (String, String)> = HashMap::new();
                    let mut outcomes = Vec::with_capacity(fields.len());
                    for e in fields {
                        let (id, resource) = ids
                            .entry(e.part.clone())
                            .or_insert_with(|| {
                                let id = resource_id(&check.table, &check.key, &e.part);
                                let resource = format!("{resource_type}/{id}");
                                (id, resource)
                            })
                            .clone();
                        let candidates = stored.get(&(resource_type.clone(), id)).map(|r| loaded(r, &e, &check.table));
                        let found = candidates.as_ref().and_then(|c| c.iter().find(|v| agrees(&e, v)));
                        let ok = found.is_some();
                        let shown = match (&found, &candidates) {
                            (Some(v), _) => Some((*v).clone()),
                            (None, Some(c)) if !c.is_empty() => Some(c.join(" | ")),
                            _ => None,
                        };
                        let is_stored = candidates.is_some();
                        outcomes.push((e, resource, ok, shown, is_stored));
                    }
                    outcomes
                }
                Fields::Fhir(fields) => {
                    let id = resource_id(&check.table, &check.key, "");
                    let resource = format!("{resource_type}/{id}");
                    let held = stored.get(&(resource_type.clone(), id));
                    let is_stored = |rtype: &str, id: &str| stored.contains_key(&(rtype.to_owned(), id.to_owned()));
                    fields
                        .into_iter()
                        .map(|f| {
                            let (ok, shown) = held.map_or((false, None), |r| fhir_found(&f, r, &is_stored));
                            (f.expected, resource.clone(), ok, shown, held.is_some())
                        })
                        .collect()
                }
            };
            for (e, resource, ok, shown, is_stored) in outcomes {
                let line =
                    |value: &str| format!("{}\t{}\t{}\t{}\t{}\n", check.key, resource, e.field, e.what.as_str(), value);
                source_hash.update(line(&e.value).as_bytes());
                loaded_hash.update(line(if ok { &e.value } else { shown.as_deref().unwrap_or("\u{0}absent") }).as_bytes());
                counts.fields += 1;
                if !ok {
                    all_ok = false;
                    out.mismatches.push(Mismatch {
                        table: check.table.clone(),
                        provenance: check.provenance.clone(),
                        key: check.key.clone(),
                        field: e.field.clone(),
                        resource: resource.clone(),
                        source: e.value.clone(),
                        loaded: shown.clone(),
                        stored: is_stored,
                    });
                }
                check.fields.push(FieldCheck {
                    resource,
                    field: e.field,
                    what: e.what,
                    source: e.value,
                    raw: e.raw,
                    loaded: shown,
                    ok,
                });
            }
            counts.records += 1;
            if all_ok {
                counts.matched += 1;
            } else {
                counts.mismatched += 1;
            }
            out.records.push(check);
        }
    }
    for (table, (source_hash, loaded_hash)) in hashers {
        if let Some(c) = out.tables.get_mut(&table) {
            c.source_digest = hex(&source_hash.finalize());
            c.loaded_digest = hex(&loaded_hash.finalize());
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_agree_as_instants() {
        assert!(same_instant("2011-01-16T15:48:38Z", "2011-01-16T15:48:38+00:00"));
        assert!(same_instant("2011-01-16T09:48:38-06:00", "2011-01-16T15:48:38Z"));
        assert!(!same_instant("2011-01-16T15:48:38Z", "2011-01-16T15:48:39Z"));
        assert!(!same_instant("2011-01-16", "2011-01-16T00:00:00Z"));
    }
    use crate::convert::Converter;
    use crate::source::Source;
    use std::sync::Arc;

    fn preset() -> Project {
        crate::project::parse(crate::project::PRESETS[0].text, Path::new("legacy-csv")).expect("preset")
    }

    fn record(table: &str, pairs: &[(&str, &str)]) -> Record {
        Record {
            table: table.into(),
            provenance: Provenance::FileLine { file: format!("{table}.csv"), line: 7 },
            columns: Arc::from(pairs.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>()),
            values: pairs.iter().map(|(_, v)| v.to_string()).collect(),
        }
    }

    fn find<'a>(fields: &'a [Expected], part: &str, field: &str, what: Critical) -> &'a Expected {
        fields
            .iter()
            .find(|e| e.part == part && e.field == field && e.what == what)
            .unwrap_or_else(|| panic!("no {part}/{field}/{what:?} in {fields:?}"))
    }

    /// The expectations of every field agree with the conversion of the same
    /// record (the two are independent: a fault in either shows here).
    fn agrees_with_conversion(project: &Project, table: &str, r: &Record) -> Vec<Expected> {
        let fields = expected(project, table, r).expect("expected");
        let converted = Converter::new(project, table).expect("converter").convert(r);
        assert!(!converted.failed(), "{:?}", converted.findings);
        let key = record_key(&project.tables[table], r);
        for e in &fields {
            let id = resource_id(table, &key, &e.part);
            let resource = converted
                .resources
                .iter()
                .find(|res| res["id"] == id.as_str())
                .unwrap_or_else(|| panic!("no resource for part {:?}", e.part));
            let found = loaded(resource, e, table);
            assert!(found.iter().any(|v| agrees(e, v)), "{e:?} not in {found:?}: {resource}");
        }
        fields
    }

    #[test]
    fn patient_fields_are_normalised_as_the_mapping_declares() {
        let project = preset();
        let r = record(
            "patients",
            &[
                ("patient_id", " P1 "),
                ("mrn", "M1"),
                ("last_name", "Müller"),
                ("first_name", "José"),
                ("birth_date", "3/4/1987"),
                ("sex", "F"),
                ("address", "1 Main St"),
                ("city", "Springfield"),
                ("state", "IL"),
                ("zip", "62701"),
                ("phone", "555-0100"),
            ],
        );
        let fields = agrees_with_conversion(&project, "patients", &r);
        assert_eq!(find(&fields, "", "patient_id", Critical::Identifier).value, "P1");
        assert_eq!(find(&fields, "", "patient_id", Critical::Identifier).path, "identifier[legacy-id].value");
        assert_eq!(find(&fields, "", "birth_date", Critical::Date).value, "1987-03-04");
        assert_eq!(find(&fields, "", "sex", Critical::Code).value, "female", "value map applied");
        assert_eq!(find(&fields, "", "first_name", Critical::Name).value, "José");
        // Addresses and phones are not critical fields.
        assert!(fields.iter().all(|e| e.field != "address" && e.field != "phone"), "{fields:?}");
        // The identifiers are picked by system: the MRN is not the legacy id.
        let mut resource = Converter::new(&project, "patients").expect("c").convert(&r).resources.remove(0);
        let id = find(&fields, "", "patient_id", Critical::Identifier);
        assert_eq!(loaded(&resource, id, "patients"), ["P1"]);
        let first = resource["identifier"][0]["value"].clone();
        resource["identifier"][0]["value"] = resource["identifier"][1]["value"].clone();
        resource["identifier"][1]["value"] = first;
        assert_eq!(loaded(&resource, id, "patients"), ["M1"], "swapped identifiers are found out");
        // An unmapped sex is kept in an extension, and found there.
        let r = record(
            "patients",
            &[("patient_id", "P2"), ("last_name", "Roe"), ("birth_date", "1990-01-01"), ("sex", "X")],
        );
        let fields = agrees_with_conversion(&project, "patients", &r);
        assert_eq!(find(&fields, "", "sex", Critical::Code).value, "X");
    }

    #[test]
    fn lab_values_units_codes_dates_and_references() {
        let project = preset();
        let r = record(
            "lab_results",
            &[
                ("result_id", "L1"),
                ("patient_id", "P1"),
                ("encounter_id", "E1"),
                ("test_code", "GLU"),
                ("test_name", "GLUCOSE"),
                ("result_value", "98.60"),
                ("units", "mg/dl"),
                ("ref_range", "70-99"),
                ("abnormal_flag", "N"),
                ("collected_date", "07/01/2024"),
            ],
        );
        let fields = agrees_with_conversion(&project, "lab_results", &r);
        assert_eq!(find(&fields, "", "test_code", Critical::Code).value, "http://loinc.org|2345-7", "with its system");
        assert_eq!(find(&fields, "", "result_value", Critical::Value).value, "98.60", "precision as written");
        assert_eq!(find(&fields, "", "units", Critical::Unit).value, "mg/dL", "unit map applied");
        assert_eq!(find(&fields, "", "collected_date", Critical::Date).value, "2024-07-01");
        assert_eq!(
            find(&fields, "", "patient_id", Critical::Reference).value,
            format!("Patient/{}", resource_id("patients", "P1", ""))
        );
        assert_eq!(find(&fields, "", "test_name", Critical::CodeText).value, "GLUCOSE");
        // A changed value is seen.
        let mut resource = Converter::new(&project, "lab_results").expect("c").convert(&r).resources.remove(0);
        resource["valueQuantity"]["value"] = serde_json::from_str("98.6").expect("number");
        let e = find(&fields, "", "result_value", Critical::Value);
        assert!(!loaded(&resource, e, "lab_results").iter().any(|v| agrees(e, v)), "98.6 is not 98.60");
        // A text result and an unmapped local code.
        let r = record(
            "lab_results",
            &[
                ("result_id", "L2"),
                ("patient_id", "P1"),
                ("test_code", "XLAB-9"),
                ("result_value", "positive"),
                ("collected_date", "2024-07-01"),
            ],
        );
        let fields = agrees_with_conversion(&project, "lab_results", &r);
        assert_eq!(
            find(&fields, "", "test_code", Critical::Code).value,
            "urn:hearth:migration:legacy:lab|XLAB-9",
            "kept under the column's local system"
        );
        assert_eq!(find(&fields, "", "result_value", Critical::Value).value, "positive");
    }

    /// A code is its system and its value: the right code under another
    /// system, or under none, is a mismatch; so is a vital sign's fixed
    /// LOINC code loaded as a SNOMED CT code. A primitive code (gender) is
    /// compared by value.
    #[test]
    fn a_code_under_the_wrong_system_is_a_mismatch() {
        let project = preset();
        let r = record(
            "lab_results",
            &[
                ("result_id", "L1"),
                ("patient_id", "P1"),
                ("test_code", "GLU"),
                ("result_value", "98.6"),
                ("units", "mg/dL"),
                ("collected_date", "2024-07-01"),
            ],
        );
        let fields = agrees_with_conversion(&project, "lab_results", &r);
        let e = find(&fields, "", "test_code", Critical::Code);
        let right = Converter::new(&project, "lab_results").expect("c").convert(&r).resources.remove(0);
        assert_eq!(right["code"]["coding"][0]["code"], "2345-7");
        for wrong_system in [json!("http://snomed.info/sct"), json!("urn:hearth:migration:legacy:lab"), Value::Null] {
            let mut resource = right.clone();
            match &wrong_system {
                Value::Null => {
                    resource["code"]["coding"][0].as_object_mut().expect("coding").remove("system");
                }
                system => resource["code"]["coding"][0]["system"] = system.clone(),
            }
            let found = loaded(&resource, e, "lab_results");
            assert!(!found.iter().any(|v| agrees(e, v)), "{wrong_system}: {found:?}");
            assert_eq!(found, [format!("{}|2345-7", wrong_system.as_str().unwrap_or_default())]);
        }

        let r = record(
            "vitals",
            &[
                ("vitals_id", "V1"),
                ("encounter_id", "E1"),
                ("patient_id", "P1"),
                ("taken_at", "2024-07-01 10:30"),
                ("temp_f", "98.6"),
            ],
        );
        let fields = agrees_with_conversion(&project, "vitals", &r);
        let e = find(&fields, "temp_f", "temp_f", Critical::Code);
        assert_eq!(e.value, "http://loinc.org|8310-5");
        let mut resource = Converter::new(&project, "vitals").expect("c").convert(&r).resources.remove(0);
        resource["code"]["coding"][0]["system"] = json!("http://snomed.info/sct");
        assert!(!loaded(&resource, e, "vitals").iter().any(|v| agrees(e, v)));

        let r = record("patients", &[("patient_id", "P1"), ("last_name", "Doe"), ("first_name", "Jo"), ("sex", "F")]);
        let fields = expected(&project, "patients", &r).expect("expected");
        assert_eq!(find(&fields, "", "sex", Critical::Code).value, "female", "a primitive code: its value");
    }

    #[test]
    fn vitals_make_one_resource_per_measured_column_each_checked() {
        let project = preset();
        let r = record(
            "vitals",
            &[
                ("vitals_id", "V1"),
                ("encounter_id", "E1"),
                ("patient_id", "P1"),
                ("taken_at", "2024-07-01 10:30"),
                ("bp_systolic", "120"),
                ("bp_diastolic", "80"),
                ("pulse", ""),
                ("temp_f", "98.6"),
            ],
        );
        let fields = agrees_with_conversion(&project, "vitals", &r);
        let parts: HashSet<&str> = fields.iter().map(|e| e.part.as_str()).collect();
        assert_eq!(
            parts,
            HashSet::from(["bp_systolic", "bp_diastolic", "temp_f"]),
            "an empty column makes no resource"
        );
        // The row's fields are on every resource; the date-time has the zone (daylight saving in July).
        for part in &parts {
            assert_eq!(find(&fields, part, "taken_at", Critical::DateTime).value, "2024-07-01T10:30:00-05:00");
            assert_eq!(find(&fields, part, "vitals_id", Critical::Identifier).value, "V1");
            find(&fields, part, "patient_id", Critical::Reference);
        }
        assert_eq!(find(&fields, "temp_f", "temp_f", Critical::Value).value, "98.6");
        assert_eq!(find(&fields, "temp_f", "temp_f", Critical::Unit).value, "[degF]");
        assert_eq!(find(&fields, "temp_f", "temp_f", Critical::Code).value, "http://loinc.org|8310-5");
        assert!(fields.iter().all(|e| e.field != "temp_f" || e.part == "temp_f"), "a value only on its own resource");
    }

    /// Over a whole sample export (every planted defect included), each
    /// loaded record's expectations, taken from the source, agree with the
    /// resources the conversion made; a value the conversion got wrong
    /// (here, a decimal losing its trailing zero, a given name changed) does not.
    #[test]
    fn the_whole_sample_agrees_with_its_conversion_and_a_wrong_value_does_not() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::project::init(dir.path(), Some("legacy-csv")).expect("init");
        let options = crate::sample::SampleOptions { patients: 15, seed: 4 };
        crate::sample::write(&dir.path().join("export"), &options).expect("sample");
        let project = crate::project::load(dir.path()).expect("project");
        let run = crate::dryrun::run(&project, dir.path(), crate::dryrun::Stage::Validate, "2026-11-29").expect("run");
        let mut by_id: HashMap<String, Value> = run
            .resources
            .iter()
            .map(|o| (o.resource["id"].as_str().unwrap_or_default().to_owned(), o.resource.clone()))
            .collect();
        let loaded_records: HashSet<String> = run.resources.iter().map(|o| o.provenance.to_string()).collect();
        let source = project.csv_source(dir.path(), "legacy").expect("source");
        let mut checks: Vec<(String, Record, Vec<Expected>)> = Vec::new();
        for table in source.tables() {
            for row in source.rows(&table).expect("rows") {
                let Ok(record) = row else { continue };
                if loaded_records.contains(&record.provenance.to_string()) {
                    let mut fields = expected(&project, &table, &record).expect("expected");
                    follow_merges(&mut fields, &crate::matching::redirects(&run));
                    checks.push((table.clone(), record, fields));
                }
            }
        }
        assert_eq!(checks.len(), loaded_records.len());
        let disagreements = |by_id: &HashMap<String, Value>| -> Vec<String> {
            let mut out = Vec::new();
            for (table, record, fields) in &checks {
                let key = record_key(&project.tables[table], record);
                for e in fields {
                    let found =
                        by_id.get(&resource_id(table, &key, &e.part)).map(|r| loaded(r, e, table)).unwrap_or_default();
                    if !found.iter().any(|v| agrees(e, v)) {
                        out.push(format!(
                            "{}: {} {:?} {:?} not in {found:?}",
                            record.provenance, e.field, e.what, e.value
                        ));
                    }
                }
            }
            out
        };
        assert_eq!(disagreements(&by_id), Vec::<String>::new());
        let count: usize = checks.iter().map(|(_, _, f)| f.len()).sum();
        assert!(count > checks.len() * 3, "{count} fields");

        // A conversion that drops a decimal's trailing zero, and one that changes a given name.
        let (table, record, fields) = checks
            .iter()
            .find(|(t, r, _)| t == "lab_results" && r.get("result_value").is_some_and(|v| v.contains('.')))
            .expect("a decimal result");
        let key = record_key(&project.tables[table], record);
        let value = record.get("result_value").unwrap_or_default().to_owned();
        let resource = by_id.get_mut(&resource_id(table, &key, "")).expect("resource");
        resource["valueQuantity"]["value"] = serde_json::from_str(&format!("{value}0")).expect("number");
        assert!(fields.iter().any(|e| e.field == "result_value"));
        let patient = checks
            .iter()
            .find(|(t, r, _)| t == "patients" && r.get("first_name").is_some_and(|n| !n.is_empty()))
            .expect("patient");
        let key = record_key(&project.tables["patients"], &patient.1);
        let resource = by_id.get_mut(&resource_id("patients", &key, "")).expect("patient resource");
        resource["name"][0]["given"][0] = json!("Someone");
        let found = disagreements(&by_id);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("result_value") || found[1].contains("result_value"), "{found:?}");
        assert!(found.iter().any(|f| f.contains("first_name")), "{found:?}");
    }

    const FHIR_PROJECT: &str = r#"
[project]
name = "t"

[sources.bulk]
kind = "fhir"
path = "bulk"

[tables.patients]
source = "bulk"
resource = "Patient"

[tables.observations]
source = "bulk"
resource = "Observation"
"#;

    /// A FHIR source's resource is compared leaf by leaf with the loaded
    /// one: id and meta versionId/lastUpdated aside, references as the
    /// Hearth ids of the records they name (stored), the source id kept as
    /// an identifier; one changed code is one mismatch naming its path.
    #[test]
    fn a_fhir_resource_is_compared_leaf_by_leaf_with_the_loaded_one() {
        let project = crate::project::parse(FHIR_PROJECT, Path::new("t")).expect("project");
        let text = r#"{"resourceType":"Observation","id":"o1",
            "meta":{"versionId":"4","lastUpdated":"2020-01-01T00:00:00Z","tag":[{"code":"t"}]},
            "identifier":[{"system":"urn:old","value":"X1"}],
            "status":"final",
            "category":[{"coding":[{"code":"vital-signs"}],"text":"Vital Signs"}],
            "code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}],"text":"weight"},
            "subject":{"reference":"Patient/p1"},
            "effectiveDateTime":"2024-07-01T10:30:00-05:00",
            "valueQuantity":{"value":70.50,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}"#;
        let source: Value = serde_json::from_str(text).expect("json");
        let record = Record {
            table: "observations".into(),
            provenance: Provenance::FileLine { file: "Observation.ndjson".into(), line: 3 },
            columns: Arc::from(vec![crate::fhir_source::RESOURCE_COLUMN.to_owned()]),
            values: vec![source.to_string()],
        };
        let f = expected_fhir(&project, &record);
        assert_eq!(f.key, "Observation/o1");
        assert_eq!(f.patient.as_deref(), Some("Patient/p1"));
        let patient = resource_id("patients", "Patient/p1", "");
        // The loaded resource, written by hand: Hearth's id and meta, the
        // reference rewritten, the source id added as an identifier.
        let mut loaded: Value = serde_json::from_str(text).expect("json");
        loaded["id"] = json!(resource_id("observations", "Observation/o1", ""));
        loaded["meta"] = json!({ "versionId": "1", "lastUpdated": "2026-11-29T10:00:00Z", "tag": [{ "code": "t" }] });
        loaded["subject"]["reference"] = json!(format!("Patient/{patient}"));
        loaded["identifier"] = json!([
            { "system": "urn:old", "value": "X1" },
            { "system": "urn:hearth:migration:t:bulk", "value": "o1" }
        ]);
        let stored = |t: &str, id: &str| t == "Patient" && id == patient;
        let failing = |resource: &Value, stored: &dyn Fn(&str, &str) -> bool| -> Vec<(String, String, Option<String>)> {
            f.fields
                .iter()
                .filter_map(|field| {
                    let (ok, shown) = fhir_found(field, resource, stored);
                    (!ok).then(|| (field.expected.field.clone(), field.expected.value.clone(), shown))
                })
                .collect()
        };
        assert_eq!(failing(&loaded, &stored), Vec::new(), "identical but for id, meta and references");
        let paths: Vec<(&str, Critical)> = f.fields.iter().map(|x| (x.expected.field.as_str(), x.expected.what)).collect();
        assert_eq!(paths.len(), 16, "every leaf but id and meta's versionId and lastUpdated, and the source id: {paths:?}");
        for expected in [
            ("Observation.meta.tag[0].code", Critical::Code),
            ("Observation.identifier[0].value", Critical::Identifier),
            ("Observation.status", Critical::Element),
            ("Observation.code.coding[0].code", Critical::Code),
            ("Observation.code.coding[0].system", Critical::Code),
            ("Observation.code.text", Critical::CodeText),
            ("Observation.category[0].text", Critical::CodeText),
            ("Observation.subject.reference", Critical::Reference),
            ("Observation.effectiveDateTime", Critical::DateTime),
            ("Observation.valueQuantity.value", Critical::Value),
            ("Observation.valueQuantity.unit", Critical::Unit),
            ("Observation.identifier.where(system='urn:hearth:migration:t:bulk').value", Critical::Identifier),
        ] {
            assert!(paths.contains(&expected), "{expected:?} in {paths:?}");
        }
        assert!(!paths.iter().any(|(p, _)| p.contains("versionId") || p.contains("lastUpdated") || *p == "Observation.id"));

        // One coded value changed: one mismatch, naming its path.
        let mut changed = loaded.clone();
        changed["code"]["coding"][0]["code"] = json!("3141-9");
        assert_eq!(
            failing(&changed, &stored),
            [("Observation.code.coding[0].code".to_owned(), "29463-7".to_owned(), Some("3141-9".to_owned()))]
        );
        // A decimal that lost its trailing zero, a number that became a string.
        let mut changed = loaded.clone();
        changed["valueQuantity"]["value"] = serde_json::from_str("70.5").expect("number");
        changed["valueQuantity"]["unit"] = json!(1);
        assert_eq!(
            failing(&changed, &stored),
            [
                ("Observation.valueQuantity.value".to_owned(), "70.50".to_owned(), Some("70.5".to_owned())),
                ("Observation.valueQuantity.unit".to_owned(), "kg".to_owned(), Some("1".to_owned())),
            ]
        );
        // The reference left as the source had it, or naming a resource not stored.
        let mut changed = loaded.clone();
        changed["subject"]["reference"] = json!("Patient/p1");
        let reference = format!("Patient/{patient}");
        assert_eq!(
            failing(&changed, &stored),
            [("Observation.subject.reference".to_owned(), reference.clone(), Some("Patient/p1".to_owned()))]
        );
        assert_eq!(
            failing(&loaded, &|_: &str, _: &str| false),
            [("Observation.subject.reference".to_owned(), reference.clone(), Some(format!("{reference} (not stored)")))]
        );
        // The source id not kept; a leaf dropped.
        let mut changed = loaded.clone();
        changed["identifier"] = json!([{ "system": "urn:old", "value": "X1" }]);
        changed.as_object_mut().expect("object").remove("effectiveDateTime");
        let found = failing(&changed, &stored);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], ("Observation.effectiveDateTime".to_owned(), "2024-07-01T10:30:00-05:00".to_owned(), None));
        assert_eq!(found[1].1, "o1");

        // The conversion's output agrees (the two are independent).
        let converted = crate::fhir_source::convert(&project, "observations", &record);
        assert!(!converted.failed(), "{:?}", converted.findings);
        assert_eq!(failing(&converted.resources[0], &stored), Vec::new(), "{}", converted.resources[0]);
    }

    fn expected_fhir(project: &Project, record: &Record) -> FhirRecord {
        fhir_expected(project, "observations", record).expect("fields")
    }

    #[test]
    fn which_columns_are_critical() {
        let project = preset();
        let kind = |table: &str, column: &str| {
            let c = &project.tables[table].columns[column];
            let rt = &project.tables[table].resource;
            let path =
                c.element.as_deref().and_then(|e| e.strip_prefix(rt.as_str())).map(|p| p.trim_start_matches('.'));
            path.and_then(|p| critical(c, p))
        };
        assert_eq!(kind("patients", "mrn"), Some(Critical::Identifier));
        assert_eq!(kind("patients", "last_name"), Some(Critical::Name));
        assert_eq!(kind("patients", "city"), None);
        assert_eq!(kind("medications", "drug_name"), Some(Critical::CodeText));
        assert_eq!(kind("medications", "sig"), None);
        assert_eq!(kind("medications", "start_date"), Some(Critical::Date));
        assert_eq!(kind("vitals", "taken_at"), Some(Critical::DateTime));
        assert_eq!(kind("lab_results", "result_value"), Some(Critical::Value));
        assert_eq!(kind("lab_results", "patient_id"), None, "references come from the joins");
    }
}
