//! The migration project: `migration.toml`, its schema as Rust types, the
//! loader ([`load`]) whose errors name the file, line, column and field, and
//! the presets `hearth migrate init` writes.
//!
//! Every table and section rejects unknown keys, so a misspelt key is an
//! error instead of a silently ignored mapping. Cross-references (a table's
//! source, a column's code system, value map or unit map, a join's table, a
//! date format, an encoding label) are checked after parsing and reported at
//! the line where they are written.

use crate::csv_source::{CsvSource, CsvTable};
use crate::dates::DateFormat;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The file name of a project's mapping inside the project folder.
pub const PROJECT_FILE: &str = "migration.toml";

/// A whole `migration.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// Name and description.
    pub project: ProjectInfo,
    /// Defaults for every table (date formats, encoding, delimiter).
    #[serde(default)]
    pub defaults: Defaults,
    /// Where the legacy data is, by source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceDecl>,
    /// Logical tables, by name: file, target resource and column mapping.
    #[serde(default)]
    pub tables: BTreeMap<String, TableDecl>,
    /// Code systems by short name (used by columns and value maps) to URI.
    #[serde(default)]
    pub code_systems: BTreeMap<String, String>,
    /// Value maps by name: local values to standard codes.
    #[serde(default)]
    pub value_maps: BTreeMap<String, ValueMap>,
    /// Unit maps by name: unit spellings of the source to UCUM units.
    #[serde(default)]
    pub unit_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Patient matching: thresholds, strong identifiers and field weights
    /// (see [`crate::matching`]); every key has a default.
    #[serde(default)]
    pub matching: MatchingDecl,
    /// The analyst's decisions on the pairs for review: `review.toml` beside
    /// `migration.toml` (see [`crate::review`]), read by [`load`].
    #[serde(skip)]
    pub review: crate::review::Decisions,
}

/// `[matching]`: how patient records are matched (within the source and
/// against Hearth's patients). Absent keys take the defaults of
/// [`crate::matching::Config`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingDecl {
    /// Score at or above which two records are the same patient (merged).
    #[serde(default)]
    pub upper: Option<Spanned<f64>>,
    /// Score at or above which (and below `upper`) a pair is listed for
    /// human review, never merged.
    #[serde(default)]
    pub lower: Option<Spanned<f64>>,
    /// Identifier systems strong enough for a deterministic match: a system
    /// URI, or the `[name]` of a mapped identifier (`mrn`).
    #[serde(default)]
    pub identifiers: Option<Vec<String>>,
    /// Fellegi–Sunter probabilities per field.
    #[serde(default)]
    pub weights: WeightsDecl,
}

/// `[matching.weights]`: per field, `m` (the probability that the field
/// agrees when the records are the same patient) and `u` (that it agrees
/// by chance when they are not).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsDecl {
    /// Family name.
    #[serde(default)]
    pub family: Option<Spanned<FieldWeightDecl>>,
    /// First given name.
    #[serde(default)]
    pub given: Option<Spanned<FieldWeightDecl>>,
    /// Birth date.
    #[serde(default)]
    pub birth_date: Option<Spanned<FieldWeightDecl>>,
    /// Administrative sex.
    #[serde(default)]
    pub sex: Option<Spanned<FieldWeightDecl>>,
    /// Address (line and postal code).
    #[serde(default)]
    pub address: Option<Spanned<FieldWeightDecl>>,
    /// Phone number (digits).
    #[serde(default)]
    pub phone: Option<Spanned<FieldWeightDecl>>,
    /// Strong identifiers (see `identifiers`).
    #[serde(default)]
    pub identifier: Option<Spanned<FieldWeightDecl>>,
}

/// `{ m = 0.95, u = 0.01 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldWeightDecl {
    /// P(agree | same patient).
    pub m: f64,
    /// P(agree | different patients).
    pub u: f64,
}

/// `[[tables.NAME.exclude]]`: source records left out by rule (disposition
/// `excluded`, with the reason).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeDecl {
    /// The column tested (one of the table's columns).
    pub column: Spanned<String>,
    /// The values that exclude a record (trimmed, compared without regard
    /// to case).
    pub values: Spanned<Vec<String>>,
    /// Why, in words: reported with every excluded record.
    pub reason: Spanned<String>,
}

/// `[project]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectInfo {
    /// A short name for the migration.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The preset the project was made from, if any.
    #[serde(default)]
    pub preset: Option<String>,
}

/// `[defaults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Date formats tried in order, e.g. `["MM/DD/YYYY", "YYYY-MM-DD"]`
    /// (tokens `YYYY` `MM` `DD` `hh` `mm` `ss`; anything else is literal).
    #[serde(default)]
    pub date_formats: Vec<Spanned<String>>,
    /// Time zone of local date-times in the source (IANA name or `+hh:mm`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Encoding label for files that do not declare one (default: detected).
    #[serde(default)]
    pub encoding: Option<Spanned<String>>,
    /// Delimiter for files that do not declare one (default: sniffed).
    #[serde(default)]
    pub delimiter: Option<Spanned<String>>,
}

/// `[sources.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDecl {
    /// What kind of source.
    pub kind: SourceKind,
    /// Relative to the project folder: the folder of the files (`csv`,
    /// `fhir`), or the database file (`sqlite`). Empty for `postgres`.
    #[serde(default)]
    pub path: String,
    /// `postgres`: the connection URL of the legacy database.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// `postgres`: the environment variable holding the connection URL
    /// instead (keeps a password out of `migration.toml`).
    #[serde(default)]
    pub url_env: Option<String>,
    /// `fhir`: the base URL of the server the export comes from; absolute
    /// references under it are references into the export. Bundle entries'
    /// `fullUrl`s add their own bases.
    #[serde(default)]
    pub base_url: Option<String>,
}

/// Kinds of source, each with its own [`crate::source::Source`]. HL7 v2 and
/// C-CDA will be added as variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A folder of delimited text files, one per table.
    Csv,
    /// A SQLite database file, opened read-only; each table is a query.
    Sqlite,
    /// A PostgreSQL database (`url`); each table is a query.
    Postgres,
    /// A folder of FHIR NDJSON files (a Bulk Data export) and Bundle JSON
    /// files; each table is one resource type.
    Fhir,
}

impl SourceKind {
    /// `csv`, `sqlite`, `postgres` or `fhir`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Csv => "csv",
            SourceKind::Sqlite => "sqlite",
            SourceKind::Postgres => "postgres",
            SourceKind::Fhir => "fhir",
        }
    }

    /// Whether tables of this kind are SQL queries.
    pub fn is_sql(self) -> bool {
        matches!(self, SourceKind::Sqlite | SourceKind::Postgres)
    }
}

/// `[tables.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDecl {
    /// The source (a key of `[sources]`).
    pub source: Spanned<String>,
    /// The file, relative to the source's folder (`csv` sources only).
    #[serde(default)]
    pub file: String,
    /// The query whose rows are the table's rows (`sqlite` and `postgres`
    /// sources only), e.g. `SELECT id, name FROM patient`.
    #[serde(default)]
    pub query: Option<Spanned<String>>,
    /// The FHIR resource type each row becomes (e.g. `Patient`); for a
    /// `fhir` source, the type of the resources the table holds.
    pub resource: String,
    /// The column holding the row's key in the legacy system.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// Encoding label (`utf-8`, `windows-1252`, ...); default: `[defaults]`,
    /// then detected.
    #[serde(default)]
    pub encoding: Option<Spanned<String>>,
    /// Delimiter (one character; `\t` for tab); default: `[defaults]`,
    /// then sniffed.
    #[serde(default)]
    pub delimiter: Option<Spanned<String>>,
    /// Date formats for this table's date columns; default: `[defaults]`.
    #[serde(default)]
    pub date_formats: Vec<Spanned<String>>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Column mapping, by column name as in the header row.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnDecl>,
    /// Joins to other tables (e.g. a result's patient key to `patients`).
    #[serde(default)]
    pub joins: Vec<JoinDecl>,
    /// Rules that leave records out (entered in error, deleted).
    #[serde(default)]
    pub exclude: Vec<ExcludeDecl>,
    /// Fixed elements every resource of the table gets (element path to a
    /// value: `"Procedure.status" = "completed"`), written where the row did
    /// not fill them.
    #[serde(default)]
    pub fixed: BTreeMap<String, toml::Value>,
    /// Codes written by whether a column is filled (`Condition.clinicalStatus`
    /// `resolved` when `STOP` has a date, else `active`).
    #[serde(default)]
    pub presence: Vec<PresenceDecl>,
}

/// `[[tables.NAME.presence]]`: a code chosen by whether a column is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceDecl {
    /// The column looked at.
    pub column: String,
    /// The code element written (e.g. `Condition.clinicalStatus`).
    pub element: String,
    /// The code when the column has a value.
    pub filled: String,
    /// The code when it is empty.
    pub empty: String,
}

/// One column's mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDecl {
    /// Target FHIR element (`Patient.birthDate`); absent: the column is read
    /// and kept in provenance but not mapped.
    #[serde(default)]
    pub element: Option<String>,
    /// How the text is read.
    #[serde(default, rename = "type")]
    pub kind: ColumnType,
    /// An empty value rejects the row.
    #[serde(default)]
    pub required: bool,
    /// The code system of the column's values (a key of `[code_systems]`).
    #[serde(default)]
    pub system: Option<Spanned<String>>,
    /// A value map applied first (a key of `[value_maps]`).
    #[serde(default)]
    pub value_map: Option<Spanned<String>>,
    /// A fixed code for the resource this column yields (`system#code`, the
    /// system a key of `[code_systems]`): a vital-signs column such as
    /// `bp_systolic` becomes its own Observation with this code.
    #[serde(default)]
    pub code: Option<Spanned<String>>,
    /// A fixed UCUM unit for the column's values.
    #[serde(default)]
    pub unit: Option<String>,
    /// The column holding the unit of this column's values.
    #[serde(default)]
    pub unit_column: Option<String>,
    /// A unit map for the unit column (a key of `[unit_maps]`).
    #[serde(default)]
    pub unit_map: Option<Spanned<String>>,
    /// Date formats of this column; default: the table's, then `[defaults]`.
    #[serde(default)]
    pub date_formats: Vec<Spanned<String>>,
    /// The column naming each row's code system (Synthea's `SYSTEM`: a
    /// condition in SNOMED CT, an allergy in RxNorm); when empty, `system`.
    #[serde(default)]
    pub system_column: Option<String>,
    /// The value map from the names in `system_column` to keys of
    /// `[code_systems]` (`"SNOMED-CT" = "snomed"`); a name written as a URI
    /// is taken as it is.
    #[serde(default)]
    pub system_map: Option<Spanned<String>>,
    /// The column saying per row whether a value is `numeric` or `text`
    /// (Synthea's `TYPE`): a `text` value of a `valueQuantity` column is
    /// written as `valueString`.
    #[serde(default)]
    pub type_column: Option<String>,
    /// Fixed elements written with this column's value when it has one
    /// (`"Claim.diagnosis[0].sequence" = 1` beside `DIAGNOSIS1`).
    #[serde(default)]
    pub with: BTreeMap<String, toml::Value>,
}

/// How a column's text is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColumnType {
    /// Text as is (trimmed).
    #[default]
    Text,
    /// A code (with `system` and/or `value_map`).
    Code,
    /// A date in one of the declared formats.
    Date,
    /// A date and time in one of the declared formats.
    Datetime,
    /// A decimal number (kept as written).
    Decimal,
    /// A whole number.
    Integer,
    /// A yes/no value.
    Boolean,
    /// A key of another table (see `joins`).
    Reference,
    /// A file name relative to the source folder: a scanned document or a
    /// note (PDF, TIFF, JPEG, PNG, TXT, RTF) whose bytes become a `Binary`
    /// the mapped attachment points at (see [`crate::documents`]).
    Document,
}

/// `[[tables.NAME.joins]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinDecl {
    /// The column of this table.
    pub column: String,
    /// The table joined to.
    pub table: Spanned<String>,
    /// The column of that table (default: its `key`).
    #[serde(default)]
    pub on: Option<String>,
    /// The reference element filled (e.g. `Observation.subject`); empty:
    /// the key is checked (an orphan is held) but no reference is written.
    #[serde(default)]
    pub element: String,
}

/// `[value_maps.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMap {
    /// The code system of the mapped (standard) values, if coded.
    #[serde(default)]
    pub system: Option<Spanned<String>>,
    /// Local value to standard value. Local values without an entry are kept
    /// as text with the local code and reported, never dropped.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
}

/// A `migration.toml` that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ProjectError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column; 0 when the error is about the whole file.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted path of the field at fault (`tables.patients.columns.sex.value_map`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ProjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads and checks the project file at `path` (a `migration.toml`, or a
/// project folder containing one), and the review decisions beside it
/// (`review.toml`, when present).
pub fn load(path: &Path) -> Result<Project, ProjectError> {
    let file = if path.is_dir() { path.join(PROJECT_FILE) } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| ProjectError {
        file: file.clone(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    let mut project = parse(&text, &file)?;
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    project.review = crate::review::Decisions::load(&dir)?;
    Ok(project)
}

/// Parses and checks project text; `file` is used in errors only.
pub fn parse(text: &str, file: &Path) -> Result<Project, ProjectError> {
    let project: Project = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let message = e.message().trim().to_owned();
        at(text, file, offset, message)
    })?;
    check(&project, text, file)?;
    Ok(project)
}

fn at(text: &str, file: &Path, offset: usize, message: String) -> ProjectError {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    ProjectError { file: file.to_path_buf(), line, column, field: field_at(text, offset), message }
}

/// The dotted path of the key written at or before `offset`: the nearest
/// `[header]` above plus the keys of the line up to `offset` (the first one
/// and, inside an inline table, the innermost one).
fn field_at(text: &str, offset: usize) -> String {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut path: Vec<String> = Vec::new();
    if let Some(header) = text[..line_start].lines().rev().map(str::trim).find(|l| l.starts_with('[')) {
        let header = header.split('#').next().unwrap_or(header);
        path.push(header.trim().trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    }
    let mut keys = keys_in(&text[line_start..offset]);
    // The word at the offset itself is a key when an `=` follows it.
    let rest = &text[offset..line_end];
    if let Some(eq) = rest.find('=') {
        let word = rest[..eq].trim();
        if is_key(word) {
            keys.push(word.to_owned());
        }
    }
    if let Some(first) = keys.first() {
        path.push(first.clone());
    }
    if keys.len() > 1
        && let Some(last) = keys.last()
    {
        path.push(last.clone());
    }
    path.retain(|p| !p.is_empty());
    path.join(".")
}

fn is_key(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_alphanumeric() || "_-.\"' ".contains(c))
}

/// Keys (the words before each `=` outside quotes) in a line prefix.
fn keys_in(prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut quote: Option<char> = None;
    let mut word_start = 0;
    for (i, c) in prefix.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | ',' | '[') => word_start = i + 1,
            (None, '=') => {
                let word = prefix[word_start..i].trim();
                if is_key(word) {
                    keys.push(word.trim_matches('"').to_owned());
                }
                word_start = i + 1;
            }
            _ => {}
        }
    }
    keys
}

fn check(project: &Project, text: &str, file: &Path) -> Result<(), ProjectError> {
    let err = |span: std::ops::Range<usize>, message: String| at(text, file, span.start, message);
    let formats = |list: &[Spanned<String>]| -> Result<(), ProjectError> {
        for f in list {
            DateFormat::parse(f.get_ref()).map_err(|m| err(f.span(), m))?;
        }
        Ok(())
    };
    let encoding = |e: &Option<Spanned<String>>| -> Result<(), ProjectError> {
        if let Some(e) = e
            && encoding_rs::Encoding::for_label(e.get_ref().as_bytes()).is_none()
        {
            return Err(err(e.span(), format!("unknown encoding {:?}", e.get_ref())));
        }
        Ok(())
    };
    let delimiter = |d: &Option<Spanned<String>>| -> Result<(), ProjectError> {
        if let Some(d) = d {
            delimiter_byte(d.get_ref()).map_err(|m| err(d.span(), m))?;
        }
        Ok(())
    };
    let system = |s: &Spanned<String>| -> Result<(), ProjectError> {
        if project.code_systems.contains_key(s.get_ref()) {
            Ok(())
        } else {
            Err(err(s.span(), format!("no code system {:?} in [code_systems]", s.get_ref())))
        }
    };
    formats(&project.defaults.date_formats)?;
    encoding(&project.defaults.encoding)?;
    delimiter(&project.defaults.delimiter)?;
    for map in project.value_maps.values() {
        if let Some(s) = &map.system {
            system(s)?;
        }
    }
    for (name, source) in &project.sources {
        check_source(name, source, text, file)?;
    }
    for (name, table) in &project.tables {
        let Some(source) = project.sources.get(table.source.get_ref()) else {
            return Err(err(table.source.span(), format!("no source {:?} in [sources]", table.source.get_ref())));
        };
        check_table_kind(name, table, source.kind, text, file)?;
        encoding(&table.encoding)?;
        delimiter(&table.delimiter)?;
        formats(&table.date_formats)?;
        if let Some(key) = &table.key
            && !table.columns.contains_key(key.get_ref())
        {
            return Err(err(
                key.span(),
                format!("the key column {:?} is not among the table's columns", key.get_ref()),
            ));
        }
        for column in table.columns.values() {
            formats(&column.date_formats)?;
            if let Some(s) = &column.system {
                system(s)?;
            }
            if let Some(code) = &column.code {
                match code.get_ref().split_once('#') {
                    Some((s, c)) if !c.is_empty() && project.code_systems.contains_key(s) => {}
                    _ => {
                        return Err(err(
                            code.span(),
                            format!("code {:?} is not SYSTEM#CODE with SYSTEM in [code_systems]", code.get_ref()),
                        ));
                    }
                }
            }
            if let Some(m) = &column.value_map
                && !project.value_maps.contains_key(m.get_ref())
            {
                return Err(err(m.span(), format!("no value map {:?} in [value_maps]", m.get_ref())));
            }
            if let Some(m) = &column.system_map {
                let Some(map) = project.value_maps.get(m.get_ref()) else {
                    return Err(err(m.span(), format!("no value map {:?} in [value_maps]", m.get_ref())));
                };
                if let Some(bad) = map.values.values().find(|v| !project.code_systems.contains_key(*v)) {
                    return Err(err(
                        m.span(),
                        format!("value map {:?}: {bad:?} is not in [code_systems]", m.get_ref()),
                    ));
                }
            }
            if let Some(m) = &column.unit_map
                && !project.unit_maps.contains_key(m.get_ref())
            {
                return Err(err(m.span(), format!("no unit map {:?} in [unit_maps]", m.get_ref())));
            }
            if matches!(column.kind, ColumnType::Date | ColumnType::Datetime)
                && column.date_formats.is_empty()
                && table.date_formats.is_empty()
                && project.defaults.date_formats.is_empty()
            {
                let span = table.source.span();
                return Err(err(span, "a date column but no date_formats (column, table or [defaults])".into()));
            }
        }
        for rule in &table.exclude {
            if !table.columns.contains_key(rule.column.get_ref()) {
                return Err(err(
                    rule.column.span(),
                    format!("exclude: the column {:?} is not among the table's columns", rule.column.get_ref()),
                ));
            }
            if rule.values.get_ref().is_empty() || rule.values.get_ref().iter().any(|v| v.trim().is_empty()) {
                return Err(err(rule.values.span(), "exclude: values must list at least one non-empty value".into()));
            }
            if rule.reason.get_ref().trim().is_empty() {
                return Err(err(rule.reason.span(), "exclude: the reason must say why".into()));
            }
        }
        for join in &table.joins {
            let Some(target) = project.tables.get(join.table.get_ref()) else {
                return Err(err(join.table.span(), format!("no table {:?} in [tables]", join.table.get_ref())));
            };
            if join.on.is_none() && target.key.is_none() {
                return Err(err(join.table.span(), format!("table {:?} has no key: say `on`", join.table.get_ref())));
            }
        }
    }
    check_matching(&project.matching, &err)?;
    Ok(())
}

fn check_matching(
    m: &MatchingDecl,
    err: &dyn Fn(std::ops::Range<usize>, String) -> ProjectError,
) -> Result<(), ProjectError> {
    let w = &m.weights;
    for weight in
        [&w.family, &w.given, &w.birth_date, &w.sex, &w.address, &w.phone, &w.identifier].into_iter().flatten()
    {
        let FieldWeightDecl { m: pm, u } = *weight.get_ref();
        if !(pm > 0.0 && pm < 1.0 && u > 0.0 && u < 1.0 && pm > u) {
            return Err(err(weight.span(), format!("m = {pm} and u = {u}: need 0 < u < m < 1")));
        }
    }
    let upper = m.upper.as_ref().map(|v| *v.get_ref()).unwrap_or(crate::matching::DEFAULT_UPPER);
    if let Some(lower) = &m.lower
        && *lower.get_ref() >= upper
    {
        return Err(err(lower.span(), format!("lower ({}) must be below upper ({upper})", lower.get_ref())));
    }
    if let Some(up) = &m.upper
        && m.lower.is_none()
        && *up.get_ref() <= crate::matching::DEFAULT_LOWER
    {
        return Err(err(
            up.span(),
            format!("upper ({}) must be above lower ({})", up.get_ref(), crate::matching::DEFAULT_LOWER),
        ));
    }
    Ok(())
}

/// A source declares what its kind needs: a path, or a URL.
fn check_source(name: &str, source: &SourceDecl, text: &str, file: &Path) -> Result<(), ProjectError> {
    let kind = source.kind;
    let offset = header(text, "sources", name).unwrap_or(0);
    let at_kind = |message: String| ProjectError { field: format!("sources.{name}"), ..at(text, file, offset, message) };
    match kind {
        SourceKind::Postgres => {
            let Some(url) = &source.url else {
                if source.url_env.as_deref().is_some_and(|v| !v.trim().is_empty()) {
                    return Ok(());
                }
                return Err(at_kind(format!(
                    "source {name:?} of kind postgres needs `url` (postgres://...) or `url_env` (a variable holding it)"
                )));
            };
            if source.url_env.is_some() {
                return Err(at(text, file, url.span().start, "`url` or `url_env`, not both".into()));
            }
            let u = url.get_ref();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err(at(text, file, url.span().start, "not a postgres:// or postgresql:// URL".into()));
            }
        }
        _ if source.path.trim().is_empty() => {
            let what = if kind == SourceKind::Sqlite { "the database file" } else { "the folder" };
            return Err(at_kind(format!("source {name:?} of kind {} needs `path` ({what})", kind.as_str())));
        }
        _ => {}
    }
    if kind != SourceKind::Postgres
        && let Some(url) = &source.url
    {
        return Err(at(text, file, url.span().start, format!("`url` is for postgres sources, not {}", kind.as_str())));
    }
    if kind != SourceKind::Postgres && source.url_env.is_some() {
        return Err(at_kind(format!("`url_env` is for postgres sources, not {}", kind.as_str())));
    }
    Ok(())
}

/// A CSV table names a file, a SQL table a query, a FHIR table neither.
fn check_table_kind(
    name: &str,
    table: &TableDecl,
    kind: SourceKind,
    text: &str,
    file: &Path,
) -> Result<(), ProjectError> {
    let header = header(text, "tables", name).unwrap_or(table.source.span().start);
    let fail = |offset: usize, message: String| {
        let mut e = at(text, file, offset, message);
        if offset == header {
            e.field = format!("tables.{name}");
        }
        Err(e)
    };
    let has_file = !table.file.trim().is_empty();
    match kind {
        SourceKind::Csv => {
            if let Some(q) = &table.query {
                return fail(q.span().start, "`query` is for sqlite and postgres sources; a csv table names its `file`".into());
            }
            if !has_file {
                return fail(header, format!("table {name:?} reads a csv source: it needs `file`"));
            }
        }
        SourceKind::Sqlite | SourceKind::Postgres => {
            if has_file {
                return fail(header, format!("table {name:?} reads a {} source: it needs `query`, not `file`", kind.as_str()));
            }
            let Some(q) = &table.query else {
                return fail(header, format!("table {name:?} reads a {} source: it needs `query = \"SELECT ...\"`", kind.as_str()));
            };
            let first = q.get_ref().split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
            if first != "select" && first != "with" {
                return fail(q.span().start, "a table's query is one SELECT (or WITH ... SELECT) statement".into());
            }
            if q.get_ref().trim().trim_end_matches(';').contains(';') {
                return fail(q.span().start, "a table's query is one statement: no `;` inside".into());
            }
        }
        SourceKind::Fhir => {
            if has_file || table.query.is_some() {
                return fail(header, format!("table {name:?} reads a fhir source: it takes neither `file` nor `query` (its resources are those of type `resource` in the folder)"));
            }
            if !fhir::definitions::is_resource_type(&table.resource) {
                return fail(header, format!("table {name:?}: {:?} is not a FHIR R4 resource type", table.resource));
            }
            if !table.columns.is_empty() || !table.joins.is_empty() {
                return fail(header, format!("table {name:?} reads a fhir source: its resources are FHIR already, no columns or joins"));
            }
        }
    }
    if kind != SourceKind::Csv && (table.encoding.is_some() || table.delimiter.is_some()) {
        return fail(header, format!("table {name:?}: `encoding` and `delimiter` are for csv tables"));
    }
    Ok(())
}

/// The offset of the `[SECTION.NAME]` header, when written as such.
fn header(text: &str, section: &str, name: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if let Some(inner) = t.strip_prefix('[').and_then(|t| t.split(']').next()) {
            let inner = inner.trim();
            if inner == format!("{section}.{name}") || inner == format!("{section}.\"{name}\"") {
                return Some(offset + line.len() - line.trim_start().len());
            }
        }
        offset += line.len();
    }
    None
}

/// The byte of a one-character delimiter (`\t` and `tab` mean tab).
pub fn delimiter_byte(text: &str) -> Result<u8, String> {
    match text {
        "\t" | "\\t" | "tab" => Ok(b'\t'),
        t if t.len() == 1 && t.is_ascii() => Ok(t.as_bytes()[0]),
        t => Err(format!("delimiter {t:?} is not a single ASCII character")),
    }
}

impl Project {
    /// The date formats of a column: its own, else its table's, else the
    /// defaults.
    pub fn date_formats<'a>(&'a self, table: &'a TableDecl, column: &'a ColumnDecl) -> Vec<&'a str> {
        let list = if !column.date_formats.is_empty() {
            &column.date_formats
        } else if !table.date_formats.is_empty() {
            &table.date_formats
        } else {
            &self.defaults.date_formats
        };
        list.iter().map(|f| f.get_ref().as_str()).collect()
    }

    /// The source `name`, of whatever kind, with every table that reads from
    /// it; `project_dir` is the folder holding `migration.toml`. Nothing is
    /// opened until a table is read.
    pub fn source(&self, project_dir: &Path, name: &str) -> Option<Box<dyn crate::source::Source>> {
        let decl = self.sources.get(name)?;
        let tables = || -> Vec<(String, &TableDecl)> {
            self.tables.iter().filter(|(_, t)| t.source.get_ref() == name).map(|(n, t)| (n.clone(), t)).collect()
        };
        Some(match decl.kind {
            SourceKind::Csv => Box::new(self.csv_source(project_dir, name)?),
            SourceKind::Sqlite | SourceKind::Postgres => {
                let queries = tables()
                    .into_iter()
                    .map(|(n, t)| crate::sql_source::SqlTable {
                        name: n,
                        query: t.query.as_ref().map(|q| q.get_ref().clone()).unwrap_or_default(),
                        key: t.key.as_ref().map(|k| k.get_ref().clone()),
                    })
                    .collect();
                let database = if decl.kind == SourceKind::Sqlite {
                    crate::sql_source::Database::Sqlite(project_dir.join(&decl.path))
                } else if let Some(url) = &decl.url {
                    crate::sql_source::Database::Postgres(url.get_ref().clone())
                } else {
                    crate::sql_source::Database::PostgresEnv(decl.url_env.clone().unwrap_or_default())
                };
                Box::new(crate::sql_source::SqlSource::new(name, database, queries))
            }
            SourceKind::Fhir => {
                let types = tables().into_iter().map(|(n, t)| (n, t.resource.clone())).collect();
                Box::new(crate::fhir_source::FhirSource::new(
                    name,
                    project_dir.join(&decl.path),
                    types,
                    decl.base_url.clone(),
                ))
            }
        })
    }

    /// Where table `name`'s rows come from, as reports name it: its file
    /// (csv), `SOURCE query` (sqlite, postgres), or the source's folder
    /// (fhir).
    pub fn table_origin(&self, name: &str) -> String {
        let Some(table) = self.tables.get(name) else {
            return String::new();
        };
        let source = table.source.get_ref();
        match self.sources.get(source).map(|s| (s.kind, s.path.as_str())) {
            Some((SourceKind::Sqlite | SourceKind::Postgres, _)) => format!("{source} query"),
            Some((SourceKind::Fhir, path)) => path.to_owned(),
            _ => table.file.clone(),
        }
    }

    /// The folder of source `name` (relative paths in its tables start
    /// there); `None` for a database source.
    pub fn source_dir(&self, project_dir: &Path, name: &str) -> Option<PathBuf> {
        let decl = self.sources.get(name)?;
        matches!(decl.kind, SourceKind::Csv | SourceKind::Fhir).then(|| project_dir.join(&decl.path))
    }

    /// The [`CsvSource`] of source `name`, with every table that reads from
    /// it; `project_dir` is the folder holding `migration.toml`.
    pub fn csv_source(&self, project_dir: &Path, name: &str) -> Option<CsvSource> {
        let decl = self.sources.get(name)?;
        if decl.kind != SourceKind::Csv {
            return None;
        }
        let tables = self
            .tables
            .iter()
            .filter(|(_, t)| t.source.get_ref() == name)
            .map(|(table_name, t)| CsvTable {
                name: table_name.clone(),
                file: t.file.clone(),
                encoding: t.encoding.as_ref().or(self.defaults.encoding.as_ref()).map(|e| e.get_ref().clone()),
                delimiter: t
                    .delimiter
                    .as_ref()
                    .or(self.defaults.delimiter.as_ref())
                    .and_then(|d| delimiter_byte(d.get_ref()).ok()),
            })
            .collect();
        Some(CsvSource::new(name, project_dir.join(&decl.path), tables))
    }
}

/// A built-in project template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The name given to `--preset`.
    pub name: &'static str,
    /// One line on what it is for.
    pub summary: &'static str,
    /// The `migration.toml` text it writes.
    pub text: &'static str,
}

/// The presets, the default first.
pub const PRESETS: [Preset; 2] = [
    Preset {
        name: "legacy-csv",
        summary: "the layout `hearth migrate sample` writes: a typical legacy EHR's CSV export",
        text: include_str!("../presets/legacy-csv.toml"),
    },
    Preset {
        name: "synthea-csv",
        summary: "the Synthea CSV export layout (sources, tables and columns declared; mapping to be completed)",
        text: include_str!("../presets/synthea-csv.toml"),
    },
];

/// Why `init` refused.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// No preset of that name.
    #[error("no preset named {0:?} (presets: {1})")]
    UnknownPreset(String, String),
    /// The project file exists already: init never overwrites.
    #[error("{0} exists already; init never overwrites a project")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Writes a new project into `dir` (created if needed) from `preset`
/// (default `legacy-csv`); returns the path of its `migration.toml`.
pub fn init(dir: &Path, preset: Option<&str>) -> Result<PathBuf, InitError> {
    let name = preset.unwrap_or(PRESETS[0].name);
    let preset = PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        InitError::UnknownPreset(name.to_owned(), PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", "))
    })?;
    std::fs::create_dir_all(dir).map_err(|e| InitError::Io(dir.to_path_buf(), e))?;
    let file = dir.join(PROJECT_FILE);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let mut handle = match options.open(&file) {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(InitError::Exists(file));
        }
        Err(e) => return Err(InitError::Io(file, e)),
    };
    std::io::Write::write_all(&mut handle, preset.text.as_bytes()).map_err(|e| InitError::Io(file.clone(), e))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ProjectError {
        parse(text, Path::new("migration.toml")).expect_err("rejected")
    }

    const BASE: &str = "[project]\nname = \"t\"\n\n[sources.legacy]\nkind = \"csv\"\npath = \"export\"\n\n[code_systems]\nloinc = \"http://loinc.org\"\n\n[tables.patients]\nsource = \"legacy\"\nfile = \"patients.csv\"\nresource = \"Patient\"\nkey = \"id\"\ndate_formats = [\"YYYY-MM-DD\"]\n\n[tables.patients.columns]\nid = { element = \"Patient.identifier.value\", required = true }\n";

    #[test]
    fn every_preset_loads() {
        for preset in PRESETS {
            let project = parse(preset.text, Path::new(preset.name)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(project.project.preset.as_deref(), Some(preset.name));
            assert!(!project.tables.is_empty());
        }
    }

    #[test]
    fn a_minimal_project_loads() {
        let p = parse(BASE, Path::new("m.toml")).expect("loads");
        assert_eq!(p.tables["patients"].columns["id"].kind, ColumnType::Text);
        assert!(p.tables["patients"].columns["id"].required);
        let src = p.csv_source(Path::new("proj"), "legacy").expect("csv source");
        assert_eq!(crate::source::Source::tables(&src), vec!["patients".to_owned()]);
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_field() {
        let text = BASE.replace("required = true", "requird = true");
        let e = parse_err(&text);
        assert_eq!(e.line, 19, "{e}");
        assert_eq!(e.field, "tables.patients.columns.id.requird", "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.to_string().starts_with("migration.toml:19:"), "{e}");

        let e = parse_err(&BASE.replace("resource = \"Patient\"", "resource = \"Patient\"\nencodng = \"utf-8\""));
        assert_eq!((e.line, e.field.as_str()), (15, "tables.patients.encodng"), "{e}");
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = parse_err(&BASE.replace("required = true", "required = \"yes\""));
        assert_eq!((e.line, e.field.as_str()), (19, "tables.patients.columns.id.required"), "{e}");
        let e = parse_err(&BASE.replace("kind = \"csv\"", "kind = \"excel\""));
        assert_eq!((e.line, e.field.as_str()), (5, "sources.legacy.kind"), "{e}");
    }

    #[test]
    fn broken_cross_references_are_reported_where_written() {
        let e = parse_err(&BASE.replace("source = \"legacy\"", "source = \"old\""));
        assert_eq!((e.line, e.field.as_str()), (12, "tables.patients.source"), "{e}");
        assert!(e.message.contains("no source \"old\""));
        let e = parse_err(&BASE.replace("required = true", "value_map = \"sex\""));
        assert_eq!((e.line, e.field.as_str()), (19, "tables.patients.columns.id.value_map"), "{e}");
        let e = parse_err(&BASE.replace("required = true", "system = \"snomed\""));
        assert!(e.message.contains("no code system"), "{e}");
        let e = parse_err(&BASE.replace("[\"YYYY-MM-DD\"]", "[\"YYYY-MM-DD\", \"DD.MM.YY\"]"));
        assert_eq!((e.line, e.field.as_str()), (16, "tables.patients.date_formats"), "{e}");
        let e = parse_err(&BASE.replace("key = \"id\"", "key = \"pid\""));
        assert_eq!((e.line, e.field.as_str()), (15, "tables.patients.key"), "{e}");
        let e = parse_err(&BASE.replace("file = \"patients.csv\"", "file = \"patients.csv\"\nencoding = \"ebcdic-x\""));
        assert!(e.message.contains("unknown encoding"), "{e}");
        let e = parse_err(&BASE.replace("file = \"patients.csv\"", "file = \"patients.csv\"\ndelimiter = \";;\""));
        assert!(e.message.contains("delimiter"), "{e}");
    }

    #[test]
    fn source_kinds_declare_what_they_need() {
        let sql = BASE.replace("kind = \"csv\"\npath = \"export\"", "kind = \"sqlite\"\npath = \"old.db\"");
        let e = parse_err(&sql);
        assert_eq!((e.line, e.field.as_str()), (11, "tables.patients"), "{e}");
        assert!(e.message.contains("needs `query`, not `file`"), "{e}");
        let ok = sql.replace("file = \"patients.csv\"", "query = \"SELECT id FROM patient\"");
        let p = parse(&ok, Path::new("m.toml")).expect("loads");
        assert_eq!(p.tables["patients"].query.as_ref().map(|q| q.get_ref().as_str()), Some("SELECT id FROM patient"));
        let e = parse_err(&sql.replace("file = \"patients.csv\"", ""));
        assert!(e.message.contains("needs `query = \"SELECT ...\"`"), "{e}");
        let e = parse_err(&sql.replace("file = \"patients.csv\"", "query = \"DELETE FROM patient\""));
        assert_eq!((e.line, e.field.as_str()), (13, "tables.patients.query"), "{e}");
        let e = parse_err(&BASE.replace("file = \"patients.csv\"", "query = \"SELECT 1\""));
        assert!(e.message.contains("`query` is for sqlite and postgres"), "{e}");
        let e = parse_err(&BASE.replace("kind = \"csv\"\npath = \"export\"", "kind = \"postgres\""));
        assert_eq!((e.line, e.field.as_str()), (4, "sources.legacy"), "{e}");
        assert!(e.message.contains("needs `url`"), "{e}");
        let env = BASE.replace("kind = \"csv\"\npath = \"export\"", "kind = \"postgres\"\nurl_env = \"OLD_DB\"");
        let e = parse_err(&env);
        assert!(e.message.contains("needs `query`"), "{e}");
        let e = parse_err(&BASE.replace("path = \"export\"", "path = \"export\"\nurl = \"postgres://x/y\""));
        assert!(e.message.contains("`url` is for postgres sources"), "{e}");
        let fhir = BASE.replace("kind = \"csv\"", "kind = \"fhir\"");
        let e = parse_err(&fhir);
        assert!(e.message.contains("takes neither `file` nor `query`"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("no/such/migration.toml")).expect_err("missing");
        assert!(e.to_string().starts_with("no/such/migration.toml: cannot read"), "{e}");
    }

    #[test]
    fn init_writes_a_loadable_project_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = init(dir.path(), Some("synthea-csv")).expect("init");
        let project = load(dir.path()).expect("loads");
        assert_eq!(project.project.preset.as_deref(), Some("synthea-csv"));
        assert!(matches!(init(dir.path(), None), Err(InitError::Exists(f)) if f == file));
        assert!(matches!(init(&dir.path().join("x"), Some("nope")), Err(InitError::UnknownPreset(..))));
    }
}
