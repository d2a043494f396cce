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
    /// Folder of the files, relative to the project folder.
    pub path: String,
}

/// Kinds of source. Only `csv` exists yet; SQL, NDJSON, HL7 v2 and C-CDA
/// will be added as variants with their own [`crate::source::Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A folder of delimited text files, one per table.
    Csv,
}

/// `[tables.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDecl {
    /// The source (a key of `[sources]`).
    pub source: Spanned<String>,
    /// The file, relative to the source's folder.
    pub file: String,
    /// The FHIR resource type each row becomes (e.g. `Patient`).
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
/// project folder containing one).
pub fn load(path: &Path) -> Result<Project, ProjectError> {
    let file = if path.is_dir() { path.join(PROJECT_FILE) } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| ProjectError {
        file: file.clone(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &file)
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
    for table in project.tables.values() {
        if !project.sources.contains_key(table.source.get_ref()) {
            return Err(err(table.source.span(), format!("no source {:?} in [sources]", table.source.get_ref())));
        }
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
        for join in &table.joins {
            let Some(target) = project.tables.get(join.table.get_ref()) else {
                return Err(err(join.table.span(), format!("no table {:?} in [tables]", join.table.get_ref())));
            };
            if join.on.is_none() && target.key.is_none() {
                return Err(err(join.table.span(), format!("table {:?} has no key: say `on`", join.table.get_ref())));
            }
        }
    }
    Ok(())
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
