//! The `Source` trait: anything legacy data is extracted from (CSV exports,
//! SQL databases, FHIR NDJSON and Bundles today; HL7 v2 batches and C-CDA
//! documents later) yields, table by table, records that carry their provenance, and
//! reports each bad row as a `RowError` in the same stream: a row is either
//! a record or an error, never silently dropped.

use std::fmt;
use std::sync::Arc;

/// Where a record came from: a file and line, or a table and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// A row of a file (CSV, spreadsheet export, batch file); `line` is the
    /// 1-based line the row starts on (the header is line 1).
    FileLine {
        /// The file as named in the project (relative to the source folder).
        file: String,
        /// 1-based line the row starts on.
        line: u64,
    },
    /// A row of a database table or query result, identified by its key
    /// (`row N` when the key is empty); also an entry of a FHIR Bundle file
    /// (`table` is the file, `key` is `entry[i]`).
    TableKey {
        /// Table or query name.
        table: String,
        /// The row's key as text.
        key: String,
    },
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::FileLine { file, line } => write!(f, "{file}:{line}"),
            Provenance::TableKey { table, key } => write!(f, "{table}[{key}]"),
        }
    }
}

/// One source row: named fields in column order, with their provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The logical table the record belongs to (the project's table name).
    pub table: String,
    /// Where the record came from.
    pub provenance: Provenance,
    /// Column names, shared by every record of a table.
    pub columns: Arc<[String]>,
    /// Field values, in the order of `columns` (always the same length).
    pub values: Vec<String>,
}

impl Record {
    /// The value of column `name`, or `None` when the table has no such
    /// column. An empty field is `Some("")`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let index = self.columns.iter().position(|c| c == name)?;
        self.values.get(index).map(String::as_str)
    }

    /// `(column, value)` pairs in column order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.columns.iter().map(String::as_str).zip(self.values.iter().map(String::as_str))
    }
}

/// A row that could not be read as a record. It is reported in the record
/// stream at its place, so a caller counts it instead of losing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The logical table.
    pub table: String,
    /// Where the bad row is.
    pub provenance: Provenance,
    /// The column at fault (name, or `#N` with its 1-based position when the
    /// row has more fields than the header), when one is.
    pub column: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.provenance)?;
        if let Some(column) = &self.column {
            write!(f, ": column {column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for RowError {}

/// A table that cannot be read at all (missing file, no header, a header
/// with duplicate or empty names, an unknown table).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct SourceError {
    /// The file or table, with a line when one applies.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// The stream of one table: records and bad rows, in source order.
pub type Rows<'a> = Box<dyn Iterator<Item = Result<Record, RowError>> + 'a>;

/// A legacy data source. Implementations: [`crate::csv_source::CsvSource`],
/// [`crate::sql_source::SqlSource`] (SQLite, PostgreSQL) and
/// [`crate::fhir_source::FhirSource`] (NDJSON, Bundles); a project opens
/// any of them with [`crate::project::Project::source`]. Later: HL7 v2 and
/// C-CDA.
pub trait Source {
    /// The source's name in the project.
    fn name(&self) -> &str;
    /// The logical tables this source provides, in declaration order.
    fn tables(&self) -> Vec<String>;
    /// Every row of `table`, in source order. Each row is either a record or
    /// a `RowError`; the iterator ends after the last row.
    fn rows(&self, table: &str) -> Result<Rows<'_>, SourceError>;
}
