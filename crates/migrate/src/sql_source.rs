//! The SQL source: a legacy database (a SQLite file, opened read-only, or a
//! PostgreSQL database) whose tables are the rows of the queries the mapping
//! declares (`query = "SELECT ..."`).
//!
//! Every value becomes the text the mapping reads, by its SQL type:
//! integers and numerics as written, reals in their shortest exact form (no
//! digit lost), text as is, dates as `YYYY-MM-DD`, timestamps as ISO 8601
//! (`YYYY-MM-DDThh:mm:ss`, with `Z` for a PostgreSQL `timestamptz`, read in
//! UTC), booleans as `true`/`false`, NULL as empty. A BLOB (`bytea`) is
//! refused with a [`RowError`] naming its column: binary content is not
//! text, and documents come through a `document` column instead.
//!
//! A record's provenance is the table and its key column's value
//! ([`Provenance::TableKey`]), or `row N` when the key is empty. A query
//! that fails is the table's error (the table is unreadable, named).
//! Results are read whole into memory, like CSV files for now.

use crate::source::{Provenance, Record, RowError, Rows, Source, SourceError};
use std::path::PathBuf;
use std::sync::Arc;

/// Where the legacy database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
    /// A PostgreSQL connection URL in this environment variable.
    PostgresEnv(String),
}

/// One table of a SQL source: its query and key column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTable {
    /// The project's table name.
    pub name: String,
    /// The query whose rows are the table's rows.
    pub query: String,
    /// The key column (provenance), when the table has one.
    pub key: Option<String>,
}

/// A SQL database as a [`Source`].
#[derive(Debug, Clone)]
pub struct SqlSource {
    name: String,
    database: Database,
    tables: Vec<SqlTable>,
}

/// One value read: its text, or why it cannot be text.
type Cell = Result<String, String>;

/// A query's result: column names and rows of cells.
struct ResultSet {
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl SqlSource {
    /// A source reading `database` with `tables`.
    pub fn new(name: &str, database: Database, tables: Vec<SqlTable>) -> Self {
        Self {
            name: name.to_owned(),
            database,
            tables,
        }
    }

    fn run(&self, query: &str) -> Result<ResultSet, String> {
        match &self.database {
            Database::Sqlite(path) => sqlite_query(path, query),
            Database::Postgres(url) => postgres_query(url, query),
            Database::PostgresEnv(name) => match std::env::var(name) {
                Ok(url) if !url.trim().is_empty() => postgres_query(&url, query),
                _ => Err(format!(
                    "the environment variable {name} (url_env) holds no database URL"
                )),
            },
        }
    }

    fn location(&self, table: &str) -> String {
        match &self.database {
            Database::Sqlite(path) => format!(
                "{}: table {table}",
                path.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Database::Postgres(_) | Database::PostgresEnv(_) => {
                format!("{}: table {table}", self.name)
            }
        }
    }
}

impl Source for SqlSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn tables(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    fn rows(&self, table: &str) -> Result<Rows<'_>, SourceError> {
        let decl = self
            .tables
            .iter()
            .find(|t| t.name == table)
            .ok_or_else(|| SourceError {
                location: table.to_owned(),
                message: "no such table in this source".into(),
            })?;
        let result = self.run(&decl.query).map_err(|message| SourceError {
            location: self.location(table),
            message: format!("query failed: {message}"),
        })?;
        let mut seen = std::collections::HashSet::new();
        for c in &result.columns {
            if c.is_empty() || !seen.insert(c.as_str()) {
                return Err(SourceError {
                    location: self.location(table),
                    message: format!(
                        "the query's columns must have distinct names (column {c:?}): use AS"
                    ),
                });
            }
        }
        let key_index = decl
            .key
            .as_ref()
            .and_then(|k| result.columns.iter().position(|c| c == k));
        if let (Some(k), None) = (&decl.key, key_index) {
            return Err(SourceError {
                location: self.location(table),
                message: format!(
                    "the query returns no key column {k:?} (columns: {})",
                    result.columns.join(", ")
                ),
            });
        }
        let columns: Arc<[String]> = result.columns.into();
        let table = table.to_owned();
        let rows = result.rows.into_iter().enumerate().map(move |(i, cells)| {
            let key = key_index
                .and_then(|k| cells.get(k))
                .and_then(|c| c.as_ref().ok())
                .filter(|k| !k.trim().is_empty())
                .map(|k| k.trim().to_owned())
                .unwrap_or_else(|| format!("row {}", i + 1));
            let provenance = Provenance::TableKey {
                table: table.clone(),
                key,
            };
            let mut values = Vec::with_capacity(cells.len());
            for (cell, column) in cells.into_iter().zip(columns.iter()) {
                match cell {
                    Ok(text) => values.push(text),
                    Err(message) => {
                        return Err(RowError {
                            table: table.clone(),
                            provenance,
                            column: Some(column.clone()),
                            message,
                        });
                    }
                }
            }
            Ok(Record {
                table: table.clone(),
                provenance,
                columns: Arc::clone(&columns),
                values,
            })
        });
        Ok(Box::new(rows))
    }
}

/// The shortest text that reads back as the same `f64` (no digit lost, none
/// invented).
fn real_text(value: f64) -> String {
    format!("{value}")
}

fn blob_message(bytes: usize) -> String {
    format!(
        "a binary value (BLOB, {bytes} bytes) is not text: select it as text in the query, or export documents as files listed in a document column"
    )
}

fn sqlite_query(path: &std::path::Path, query: &str) -> Result<ResultSet, String> {
    use rusqlite::types::ValueRef;
    if !path.is_file() {
        return Err(format!("no database file {}", path.display()));
    }
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection =
        rusqlite::Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    let mut statement = connection.prepare(query).map_err(|e| e.to_string())?;
    if !statement.readonly() {
        return Err("the query would change the database: a table's query only reads".into());
    }
    let columns: Vec<String> = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let count = columns.len();
    let mut rows = statement.query([]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let mut cells = Vec::with_capacity(count);
        for i in 0..count {
            let cell = match row.get_ref(i).map_err(|e| e.to_string())? {
                ValueRef::Null => Ok(String::new()),
                ValueRef::Integer(n) => Ok(n.to_string()),
                ValueRef::Real(x) => Ok(real_text(x)),
                ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec()).map_err(|e| {
                    format!(
                        "text that is not valid UTF-8 (at byte {})",
                        e.utf8_error().valid_up_to()
                    )
                }),
                ValueRef::Blob(bytes) => Err(blob_message(bytes.len())),
            };
            cells.push(cell);
        }
        out.push(cells);
    }
    Ok(ResultSet { columns, rows: out })
}

/// Runs `query` on PostgreSQL on a thread of its own with a small runtime
/// (the callers are synchronous, and may themselves run inside a runtime).
fn postgres_query(url: &str, query: &str) -> Result<ResultSet, String> {
    let (url, query) = (url.to_owned(), query.to_owned());
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime: {e}"))?;
                runtime.block_on(postgres_async(&url, &query))
            })
            .join()
            .map_err(|_| "the PostgreSQL reader stopped unexpectedly".to_owned())?
    })
}

fn pg_error(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

async fn postgres_async(url: &str, query: &str) -> Result<ResultSet, String> {
    use tokio_postgres::SimpleQueryMessage;
    use tokio_postgres::types::Type;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to the legacy database: {}", pg_error(e)))?;
    let task = tokio::spawn(connection);
    // Text output the mapping can read, whatever the server's settings:
    // ISO dates, UTC, shortest exact floats; and nothing can be written.
    client
        .batch_execute(
            "SET DateStyle TO ISO, YMD; SET TimeZone TO 'UTC'; SET IntervalStyle TO iso_8601; \
             SET extra_float_digits TO 1; SET default_transaction_read_only TO on",
        )
        .await
        .map_err(pg_error)?;
    // Preparing checks the query and gives the columns' types; the rows are
    // then read in the text format (numerics keep every digit).
    let statement = client.prepare(query).await.map_err(pg_error)?;
    let types: Vec<Type> = statement
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    let columns: Vec<String> = statement
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let messages = client.simple_query(query).await.map_err(pg_error)?;
    let mut rows = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            let mut cells = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                let text = row.try_get(i).map_err(pg_error)?;
                cells.push(pg_text(ty, text));
            }
            rows.push(cells);
        }
    }
    drop(client);
    let _ = task.await;
    Ok(ResultSet { columns, rows })
}

/// The text of one PostgreSQL value (text output format) by its type.
fn pg_text(ty: &tokio_postgres::types::Type, text: Option<&str>) -> Cell {
    use tokio_postgres::types::Type;
    let Some(text) = text else {
        return Ok(String::new());
    };
    match *ty {
        Type::BYTEA => Err(blob_message(text.len().saturating_sub(2) / 2)),
        Type::BOOL => Ok(if text == "t" {
            "true".into()
        } else {
            "false".into()
        }),
        Type::TIMESTAMP => Ok(text.replacen(' ', "T", 1)),
        Type::TIMESTAMPTZ => Ok(utc_timestamp(text)),
        _ => Ok(text.to_owned()),
    }
}

/// `2020-01-02 03:04:05.5+00` (a timestamptz read in UTC) as
/// `2020-01-02T03:04:05.5Z`.
fn utc_timestamp(text: &str) -> String {
    let iso = text.replacen(' ', "T", 1);
    match iso.strip_suffix("+00") {
        Some(head) => format!("{head}Z"),
        None => iso,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_db(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("legacy.db");
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch(
            "CREATE TABLE patient (id TEXT, born TEXT, weight REAL, visits INTEGER, photo BLOB, note TEXT);
             INSERT INTO patient VALUES ('P1', '1980-02-03', 70.125, 3, NULL, 'José');
             INSERT INTO patient VALUES ('', '1990-01-01', 0.1, NULL, NULL, NULL);
             INSERT INTO patient VALUES ('P3', NULL, 1e-7, 9007199254740993, x'89504E47', 'x');",
        )
        .expect("schema");
        path
    }

    #[test]
    fn sqlite_rows_become_text_records_with_table_and_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = legacy_db(dir.path());
        let source = SqlSource::new(
            "old",
            Database::Sqlite(path),
            vec![SqlTable {
                name: "patients".into(),
                query: "SELECT id, born, weight, visits, note FROM patient ORDER BY rowid".into(),
                key: Some("id".into()),
            }],
        );
        let rows: Vec<_> = source.rows("patients").expect("rows").collect();
        assert_eq!(rows.len(), 3);
        let first = rows[0].as_ref().expect("record");
        assert_eq!(
            first.provenance,
            Provenance::TableKey {
                table: "patients".into(),
                key: "P1".into()
            }
        );
        assert_eq!(first.values, ["P1", "1980-02-03", "70.125", "3", "José"]);
        let second = rows[1].as_ref().expect("record");
        assert_eq!(second.provenance.to_string(), "patients[row 2]");
        assert_eq!(second.values, ["", "1990-01-01", "0.1", "", ""]);
        let third = rows[2].as_ref().expect("record");
        assert_eq!(third.get("weight"), Some("0.0000001"));
        assert_eq!(third.get("visits"), Some("9007199254740993"));
        assert_eq!(
            third.get("weight").map(|w| w.parse::<f64>().ok()),
            Some(Some(1e-7))
        );
    }

    #[test]
    fn blobs_are_refused_and_bad_queries_make_the_table_unreadable() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = legacy_db(dir.path());
        let table = |name: &str, query: &str| SqlTable {
            name: name.into(),
            query: query.into(),
            key: Some("id".into()),
        };
        let source = SqlSource::new(
            "old",
            Database::Sqlite(path.clone()),
            vec![
                table("photos", "SELECT id, photo FROM patient"),
                table("broken", "SELECT id, nope FROM patient"),
                table("nokey", "SELECT born FROM patient"),
                table("writes", "DELETE FROM patient"),
            ],
        );
        let rows: Vec<_> = source.rows("photos").expect("rows").collect();
        assert!(rows[0].is_ok() && rows[1].is_ok());
        let e = rows[2].as_ref().expect_err("blob");
        assert_eq!(e.column.as_deref(), Some("photo"));
        assert_eq!(e.provenance.to_string(), "photos[P3]");
        assert!(e.message.contains("BLOB, 4 bytes"), "{e}");
        let e = source.rows("broken").err().expect("unreadable");
        assert!(
            e.to_string()
                .starts_with("legacy.db: table broken: query failed:"),
            "{e}"
        );
        assert!(e.message.contains("nope"), "{e}");
        let e = source.rows("nokey").err().expect("no key");
        assert!(e.message.contains("no key column \"id\""), "{e}");
        let e = source.rows("writes").err().expect("refused");
        assert!(e.message.contains("only reads"), "{e}");
        // Nothing was deleted, and a missing file is named.
        let c = rusqlite::Connection::open(&path).expect("open");
        let n: i64 = c
            .query_row("SELECT count(*) FROM patient", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 3);
        let gone = SqlSource::new(
            "old",
            Database::Sqlite(dir.path().join("gone.db")),
            vec![table("t", "SELECT 1")],
        );
        assert!(
            gone.rows("t")
                .err()
                .expect("missing")
                .message
                .contains("no database file")
        );
    }

    #[test]
    fn postgres_values_become_text() {
        use tokio_postgres::types::Type;
        assert_eq!(
            pg_text(&Type::TIMESTAMPTZ, Some("2020-01-02 03:04:05.25+00")),
            Ok("2020-01-02T03:04:05.25Z".into())
        );
        assert_eq!(
            pg_text(&Type::TIMESTAMP, Some("2020-01-02 03:04:05")),
            Ok("2020-01-02T03:04:05".into())
        );
        assert_eq!(
            pg_text(&Type::NUMERIC, Some("12.3400")),
            Ok("12.3400".into())
        );
        assert_eq!(pg_text(&Type::BOOL, Some("f")), Ok("false".into()));
        assert_eq!(pg_text(&Type::INT4, None), Ok(String::new()));
        assert!(
            pg_text(&Type::BYTEA, Some("\\x0102"))
                .expect_err("blob")
                .contains("2 bytes")
        );
    }
}
