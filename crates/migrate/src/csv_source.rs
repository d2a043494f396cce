//! A [`Source`] over delimited text exports: one file per table, a header
//! row, quoted fields (RFC 4180 quoting, embedded delimiters, quotes and line
//! breaks), any single-byte delimiter (configured, or sniffed from the header
//! among `,` `;` tab and `|`), and any encoding `encoding_rs` knows
//! (configured by its WHATWG label such as `utf-8` or `windows-1252`, or
//! detected: a byte-order mark wins, then valid UTF-8, else Windows-1252).
//!
//! Bad rows (a field count that differs from the header's, text that is not
//! valid in the configured encoding, a quoted field never closed) come out of [`Source::rows`] as
//! [`RowError`]s naming the file, line and column; they are never dropped.

use crate::source::{Provenance, Record, RowError, Rows, Source, SourceError};
use encoding_rs::Encoding;
use std::path::PathBuf;
use std::sync::Arc;

/// Delimiters tried when none is configured.
pub const SNIFFED_DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];

/// One table of a CSV source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvTable {
    /// Logical table name.
    pub name: String,
    /// File name relative to the source folder (used in provenance).
    pub file: String,
    /// Encoding label (`utf-8`, `windows-1252`, ...); `None`: detected.
    pub encoding: Option<String>,
    /// Field delimiter; `None`: sniffed from the header line.
    pub delimiter: Option<u8>,
}

/// A folder of delimited files, one per table.
#[derive(Debug, Clone)]
pub struct CsvSource {
    name: String,
    dir: PathBuf,
    tables: Vec<CsvTable>,
}

/// How a file was decoded and split, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    /// The encoding used (its WHATWG name, e.g. `UTF-8`, `windows-1252`).
    pub encoding: &'static str,
    /// Whether a byte-order mark was present (and removed).
    pub bom: bool,
    /// The delimiter used.
    pub delimiter: u8,
}

impl CsvSource {
    /// A source named `name` reading `tables` from the folder `dir`.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>, tables: Vec<CsvTable>) -> Self {
        Self { name: name.into(), dir: dir.into(), tables }
    }

    fn table(&self, name: &str) -> Result<&CsvTable, SourceError> {
        self.tables.iter().find(|t| t.name == name).ok_or_else(|| SourceError {
            location: format!("source {}", self.name),
            message: format!("no table named {name}"),
        })
    }

    /// Reads and decodes `table`'s file: its text and dialect.
    pub fn decode(&self, table: &str) -> Result<(String, Dialect), SourceError> {
        let table = self.table(table)?;
        let path = self.dir.join(&table.file);
        let bytes = std::fs::read(&path)
            .map_err(|e| SourceError { location: table.file.clone(), message: format!("cannot read: {e}") })?;
        let (encoding, bom_len) = match (Encoding::for_bom(&bytes), &table.encoding) {
            (Some((encoding, len)), _) => (encoding, len),
            (None, Some(label)) => (
                Encoding::for_label(label.as_bytes()).ok_or_else(|| SourceError {
                    location: table.file.clone(),
                    message: format!("unknown encoding {label:?}"),
                })?,
                0,
            ),
            (None, None) if std::str::from_utf8(&bytes).is_ok() => (encoding_rs::UTF_8, 0),
            (None, None) => (encoding_rs::WINDOWS_1252, 0),
        };
        let (text, _had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        let delimiter = table.delimiter.unwrap_or_else(|| sniff_delimiter(&text));
        Ok((text.into_owned(), Dialect { encoding: encoding.name(), bom: bom_len > 0, delimiter }))
    }
}

/// The delimiter among [`SNIFFED_DELIMITERS`] that occurs most often, outside
/// quotes, on the first line; `,` when none occurs.
pub fn sniff_delimiter(text: &str) -> u8 {
    let mut counts = [0usize; SNIFFED_DELIMITERS.len()];
    let mut quoted = false;
    for byte in text.bytes() {
        match byte {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = SNIFFED_DELIMITERS.iter().position(|d| *d == byte) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let mut best = 0;
    for i in 1..counts.len() {
        if counts[i] > counts[best] {
            best = i;
        }
    }
    SNIFFED_DELIMITERS[best]
}

/// Lines of record starts, counted from byte offsets. The CSV reader's own
/// line numbers lag by one after a CRLF (the `\n` of the previous line is
/// consumed with the next record), so records are placed by their first
/// byte instead. Offsets only grow, so counting resumes where it stopped.
#[derive(Debug, Default)]
struct LineCounter {
    offset: usize,
    line: u64,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], offset: u64) -> u64 {
        let mut start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start < self.offset {
            self.offset = 0;
            self.line = 0;
        }
        self.line += bytes[self.offset..start].iter().filter(|b| **b == b'\n').count() as u64;
        self.offset = start;
        self.line + 1
    }
}

impl Source for CsvSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn tables(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    fn rows(&self, table_name: &str) -> Result<Rows<'_>, SourceError> {
        let table = self.table(table_name)?.clone();
        let (text, dialect) = self.decode(table_name)?;
        let bytes: Arc<[u8]> = text.into_bytes().into();
        let mut lines = LineCounter::default();
        let reader = csv::ReaderBuilder::new()
            .delimiter(dialect.delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(std::io::Cursor::new(bytes.clone()));
        let mut records = reader.into_records();
        let header = match records.next() {
            None => {
                return Err(SourceError { location: table.file.clone(), message: "empty file: no header row".into() });
            }
            Some(Err(e)) => {
                return Err(SourceError {
                    location: format!("{}:1", table.file),
                    message: format!("unreadable header: {e}"),
                });
            }
            Some(Ok(header)) => header,
        };
        let mut columns: Vec<String> = Vec::with_capacity(header.len());
        for (i, name) in header.iter().enumerate() {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(SourceError {
                    location: format!("{}:1", table.file),
                    message: format!("column {} of the header has no name", i + 1),
                });
            }
            if columns.contains(&name) {
                return Err(SourceError {
                    location: format!("{}:1", table.file),
                    message: format!("column {name} appears twice in the header"),
                });
            }
            columns.push(name);
        }
        let columns: Arc<[String]> = columns.into();
        let encoding = dialect.encoding;
        // An odd number of quote characters means a quoted field never ends:
        // the reader then takes the rest of the file as the last record.
        let unterminated = bytes.iter().filter(|b| **b == b'"').count() % 2 == 1;
        let mut records = records.peekable();
        let iter = std::iter::from_fn(move || {
            let row = records.next()?;
            let last = records.peek().is_none();
            let file = table.file.clone();
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    let line = e.position().map_or(0, |p| lines.line_at(&bytes, p.byte()));
                    return Some(Err(RowError {
                        table: table.name.clone(),
                        provenance: Provenance::FileLine { file, line },
                        column: None,
                        message: format!("unreadable row: {e}"),
                    }));
                }
            };
            let line = row.position().map_or(0, |p| lines.line_at(&bytes, p.byte()));
            let provenance = Provenance::FileLine { file, line };
            if last && unterminated {
                let column = row.iter().position(|v| v.contains('\n')).map_or(row.len().saturating_sub(1), |i| i);
                return Some(Err(RowError {
                    table: table.name.clone(),
                    provenance,
                    column: columns.get(column).cloned(),
                    message: "a quoted field is never closed: the rest of the file was read into it".into(),
                }));
            }
            if row.len() != columns.len() {
                let column = if row.len() > columns.len() {
                    format!("#{}", columns.len() + 1)
                } else {
                    columns[row.len()].clone()
                };
                return Some(Err(RowError {
                    table: table.name.clone(),
                    provenance,
                    column: Some(column),
                    message: format!("{} fields where the header has {}", row.len(), columns.len()),
                }));
            }
            if let Some(i) = row.iter().position(|v| v.contains('\u{FFFD}')) {
                return Some(Err(RowError {
                    table: table.name.clone(),
                    provenance,
                    column: Some(columns[i].clone()),
                    message: format!("text that is not valid {encoding}"),
                }));
            }
            Some(Ok(Record {
                table: table.name.clone(),
                provenance,
                columns: columns.clone(),
                values: row.iter().map(str::to_owned).collect(),
            }))
        });
        Ok(Box::new(iter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(
        dir: &std::path::Path,
        file: &str,
        bytes: &[u8],
        encoding: Option<&str>,
        delimiter: Option<u8>,
    ) -> CsvSource {
        std::fs::write(dir.join(file), bytes).expect("write");
        CsvSource::new(
            "test",
            dir,
            vec![CsvTable { name: "t".into(), file: file.into(), encoding: encoding.map(str::to_owned), delimiter }],
        )
    }

    fn collect(source: &CsvSource) -> Vec<Result<Record, RowError>> {
        source.rows("t").expect("table opens").collect()
    }

    #[test]
    fn reads_quoted_fields_with_provenance_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = b"id,name,note\n1,\"Doe, Jane\",\"said \"\"hi\"\"\"\n2,Roe,\"two\nlines\"\n3,Poe,x\n";
        let s = source(dir.path(), "a.csv", text, None, None);
        let rows = collect(&s);
        assert_eq!(rows.len(), 3);
        let r0 = rows[0].as_ref().expect("row 1");
        assert_eq!(r0.get("name"), Some("Doe, Jane"));
        assert_eq!(r0.get("note"), Some("said \"hi\""));
        assert_eq!(r0.provenance, Provenance::FileLine { file: "a.csv".into(), line: 2 });
        let r1 = rows[1].as_ref().expect("row 2");
        assert_eq!(r1.get("note"), Some("two\nlines"));
        // The third record starts on line 5: the second spans lines 3 and 4.
        assert_eq!(rows[2].as_ref().expect("row 3").provenance.to_string(), "a.csv:5");
    }

    #[test]
    fn lines_are_right_with_crlf_line_ends_and_blank_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = b"id,note\r\n1,a\r\n\r\n2,\"b\r\nc\"\r\n3,d\r\n";
        let s = source(dir.path(), "crlf.csv", text, None, None);
        let lines: Vec<String> = collect(&s).into_iter().map(|r| r.expect("row").provenance.to_string()).collect();
        assert_eq!(lines, ["crlf.csv:2", "crlf.csv:4", "crlf.csv:6"]);
    }

    #[test]
    fn sniffs_semicolons_and_tabs_and_honours_a_configured_delimiter() {
        assert_eq!(sniff_delimiter("a;b;c\n1,5;2;3"), b';');
        assert_eq!(sniff_delimiter("a\tb\tc"), b'\t');
        assert_eq!(sniff_delimiter("\"x;y;z\",b,c"), b',');
        assert_eq!(sniff_delimiter("single"), b',');
        let dir = tempfile::tempdir().expect("tmp");
        let s = source(dir.path(), "b.csv", b"id;value\n1;2,5\n", None, None);
        let rows = collect(&s);
        assert_eq!(rows[0].as_ref().expect("row").get("value"), Some("2,5"));
        let s = source(dir.path(), "c.csv", b"id|v;w\n1|a;b\n", None, Some(b'|'));
        assert_eq!(collect(&s)[0].as_ref().expect("row").get("v;w"), Some("a;b"));
    }

    #[test]
    fn decodes_windows_1252_and_strips_a_utf8_bom() {
        let dir = tempfile::tempdir().expect("tmp");
        // "José;Zoë" in Windows-1252: é = 0xE9, ë = 0xEB.
        let s = source(dir.path(), "w.csv", b"first,last\nJos\xe9,Zo\xeb\n", Some("windows-1252"), None);
        let rows = collect(&s);
        let r = rows[0].as_ref().expect("row");
        assert_eq!(r.get("first"), Some("José"));
        assert_eq!(r.get("last"), Some("Zoë"));
        // Detected when not configured: not valid UTF-8, so Windows-1252.
        let s = source(dir.path(), "w2.csv", b"first\nRen\xe9e\n", None, None);
        assert_eq!(s.decode("t").expect("decodes").1.encoding, "windows-1252");
        assert_eq!(collect(&s)[0].as_ref().expect("row").get("first"), Some("Renée"));
        // A UTF-8 BOM is removed before the header is read.
        let s = source(dir.path(), "bom.csv", "\u{FEFF}id,name\n1,Zoë\n".as_bytes(), None, None);
        let (_, dialect) = s.decode("t").expect("decodes");
        assert!(dialect.bom);
        let r = collect(&s).remove(0).expect("row");
        assert_eq!(r.columns[0], "id");
        assert_eq!(r.get("name"), Some("Zoë"));
    }

    #[test]
    fn bad_rows_are_reported_with_line_and_column_and_reading_goes_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = b"id,name,dob\n1,Ann,01/02/1990\n2,Bob\n3,Cy,x,extra\n4,D\xe9,y\n5,Eve,z\n";
        let s = source(dir.path(), "bad.csv", text, Some("utf-8"), None);
        let rows = collect(&s);
        assert_eq!(rows.len(), 5, "every row is a record or an error");
        let short = rows[1].as_ref().expect_err("short row");
        assert_eq!(short.to_string(), "bad.csv:3: column dob: 2 fields where the header has 3");
        let long = rows[2].as_ref().expect_err("long row");
        assert_eq!(long.column.as_deref(), Some("#4"));
        let invalid = rows[3].as_ref().expect_err("invalid UTF-8");
        assert_eq!(invalid.provenance, Provenance::FileLine { file: "bad.csv".into(), line: 5 });
        assert_eq!(invalid.column.as_deref(), Some("name"));
        assert_eq!(rows[4].as_ref().expect("last row").get("name"), Some("Eve"));
    }

    #[test]
    fn an_unclosed_quote_is_reported_not_swallowed() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = b"id,name,note\n1,Ann,ok\n2,Bob,\"never closed\n3,Cy,lost\n4,Di,lost\n";
        let s = source(dir.path(), "q.csv", text, None, None);
        let rows = collect(&s);
        assert_eq!(rows.len(), 2);
        let e = rows[1].as_ref().expect_err("unclosed quote");
        assert_eq!(e.provenance.to_string(), "q.csv:3");
        assert_eq!(e.column.as_deref(), Some("note"));
        assert!(e.message.contains("never closed"), "{e}");
    }

    #[test]
    fn unreadable_tables_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = source(dir.path(), "dup.csv", b"id,id\n1,2\n", None, None);
        assert_eq!(
            s.rows("t").err().map(|e| e.to_string()).as_deref(),
            Some("dup.csv:1: column id appears twice in the header")
        );
        let s = source(dir.path(), "empty.csv", b"", None, None);
        assert!(s.rows("t").err().map(|e| e.to_string()).unwrap_or_default().starts_with("empty.csv"));
        let s = CsvSource::new("x", dir.path(), vec![]);
        assert!(s.rows("nope").is_err());
        let s = source(dir.path(), "enc.csv", b"a\n1\n", Some("klingon"), None);
        assert!(s.rows("t").err().map(|e| e.to_string()).unwrap_or_default().contains("unknown encoding"));
    }
}
