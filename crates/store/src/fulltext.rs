//! Full-text search (`_text`, `_content`) on the SQL engines: the table
//! `idx_text` holds one row per current resource, keyed by `rid`, with the
//! words of its narrative and of its whole content as
//! [`fhir::search::text::TextIndex`] made them (lower-cased, accents
//! removed, only letters and digits). The engines index those words as they
//! are, without stemming or further folding, so they answer exactly as the
//! memory store does.
//!
//! - SQLite: a contentless FTS5 table (`rowid` = `rid`, rows deletable) with
//!   the `unicode61` tokenizer set to split only where the words are already
//!   split, searched with `<column> MATCH '"w1 w2" AND "w3"*'`. FTS5 writes a
//!   new segment, its structure record and merges at every transaction, which
//!   multiplies the pages a small commit writes (measured: a one-resource
//!   commit wrote 5x the WAL bytes). So commits put their words in a plain
//!   table, `idx_text_pending` (one appended row), and the writer moves them
//!   into FTS5 in one transaction once [`FLUSH_ROWS`] have gathered, like
//!   PostgreSQL's GIN pending list. A large commit (more writes than a
//!   group takes, a migration's batch) writes its words into FTS5 directly:
//!   it fills whole segments itself. Searches look in both: FTS5, and the
//!   pending rows through [`MATCH_FUNCTION`], which runs the memory store's
//!   own matching (`fhir::search::text::matches`), so the answers are the same.
//! - PostgreSQL: two `tsvector` columns with GIN indexes, written from
//!   literals built here (`'w1':1 'w2':2,5`) so that no text-search parser or
//!   dictionary (nor the database's locale) is involved; searched with
//!   `@@ '(''w1'' <-> ''w2'') & ''w3'':*'::tsquery`.

use crate::sql::Dialect;
use fhir::search::query::{TextField, TextPhrase};
use fhir::search::text::TextIndex;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The `idx_text` column of a field.
fn column(field: TextField) -> &'static str {
    match field {
        TextField::Narrative => "narrative",
        TextField::Content => "content",
    }
}

/// Pending SQLite rows that make the writer move them into FTS5.
pub(crate) const FLUSH_ROWS: usize = 512;

/// The SQL function that matches a pending row's words against a query
/// encoded by [`pending_query`].
pub(crate) const MATCH_FUNCTION: &str = "hearth_text_match";

/// `alias.rid IN (...)`: the resource's `field` holds every phrase. The
/// query text ([`query_text`]) is bound at `placeholder`; on SQLite the
/// [`pending_query`] at `pending`.
pub(crate) fn predicate(dialect: Dialect, alias: &str, field: TextField, placeholder: &str, pending: &str) -> String {
    let column = column(field);
    match dialect {
        Dialect::Sqlite => format!(
            "({alias}.rid IN (SELECT rowid FROM idx_text WHERE {column} MATCH {placeholder}) \
             OR {alias}.rid IN (SELECT rid FROM idx_text_pending WHERE {MATCH_FUNCTION}({column}, {pending})))"
        ),
        Dialect::Postgres => {
            format!("{alias}.rid IN (SELECT rid FROM idx_text WHERE {column} @@ CAST({placeholder} AS TEXT)::tsquery)")
        }
    }
}

/// The phrases for [`MATCH_FUNCTION`]: one line per phrase, its words
/// separated by spaces, `*` at the end of a prefix phrase.
pub(crate) fn pending_query(phrases: &[TextPhrase]) -> String {
    let lines: Vec<String> =
        phrases.iter().map(|p| format!("{}{}", p.words.join(" "), if p.prefix { "*" } else { "" })).collect();
    lines.join("\n")
}

/// Reads a [`pending_query`] back.
fn decode_pending_query(text: &str) -> Vec<TextPhrase> {
    text.lines()
        .map(|line| {
            let (line, prefix) = match line.strip_suffix('*') {
                Some(rest) => (rest, true),
                None => (line, false),
            };
            TextPhrase { words: line.split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect(), prefix }
        })
        .collect()
}

/// Registers [`MATCH_FUNCTION`] on a connection (every connection: readers
/// search, the writer evaluates conditional checks).
pub(crate) fn register_sqlite_function(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        MATCH_FUNCTION,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let words = ctx.get_raw(0).as_str().unwrap_or("");
            let phrases = ctx.get_or_create_aux(1, |query| -> rusqlite::Result<Vec<TextPhrase>> {
                Ok(decode_pending_query(query.as_str().unwrap_or("")))
            })?;
            Ok(fhir::search::text::matches(words, &phrases))
        },
    )
}

/// The query text bound for [`predicate`]: an FTS5 query or a tsquery literal.
/// Words hold only letters and digits, so they need no escaping beyond quotes.
pub(crate) fn query_text(dialect: Dialect, phrases: &[TextPhrase]) -> String {
    let mut out = String::new();
    for (i, phrase) in phrases.iter().enumerate() {
        match dialect {
            Dialect::Sqlite => {
                if i > 0 {
                    out.push_str(" AND ");
                }
                out.push('"');
                out.push_str(&phrase.words.join(" "));
                out.push('"');
                if phrase.prefix {
                    out.push('*');
                }
            }
            Dialect::Postgres => {
                if i > 0 {
                    out.push_str(" & ");
                }
                out.push('(');
                for (k, word) in phrase.words.iter().enumerate() {
                    if k > 0 {
                        out.push_str(" <-> ");
                    }
                    let _ = write!(out, "'{}'", quote_lexeme(word));
                    if phrase.prefix && k + 1 == phrase.words.len() {
                        out.push_str(":*");
                    }
                }
                out.push(')');
            }
        }
    }
    out
}

/// Positions a PostgreSQL lexeme keeps (more are dropped by tsvector input).
const MAX_POSITIONS: usize = 256;

/// A tsvector literal of a field's words, each lexeme with its positions
/// (from 1, in order). An empty field gives an empty tsvector.
pub(crate) fn tsvector(words: &str) -> String {
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, word) in words.split(' ').filter(|w| !w.is_empty()).enumerate() {
        let slot = positions.entry(word).or_insert_with(|| {
            order.push(word);
            Vec::new()
        });
        if slot.len() < MAX_POSITIONS {
            slot.push(i + 1);
        }
    }
    let mut out = String::with_capacity(words.len() * 2);
    for word in order {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "'{}':", quote_lexeme(word));
        for (k, position) in positions.get(word).into_iter().flatten().enumerate() {
            if k > 0 {
                out.push(',');
            }
            let _ = write!(out, "{position}");
        }
    }
    out
}

/// SQLite: replaces the words of resource `rid` (`existed`: it may have
/// some) with `text`, as a pending row; `None` or an empty text leaves none.
/// Returns whether a pending row was written.
///
/// `direct`: the words go straight into FTS5, in the caller's transaction.
/// A large commit (a migration's batch) does so: its words fill FTS5's
/// segments as well as a flush would, and writing, reading and deleting
/// them as pending rows as well cost the load's writer time for nothing.
pub(crate) fn sqlite_replace(
    conn: &rusqlite::Connection,
    rid: i64,
    existed: bool,
    text: Option<&TextIndex>,
    direct: bool,
) -> rusqlite::Result<bool> {
    if existed {
        conn.prepare_cached("DELETE FROM idx_text WHERE rowid = ?1")?.execute([rid])?;
        conn.prepare_cached("DELETE FROM idx_text_pending WHERE rid = ?1")?.execute([rid])?;
    }
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(false) };
    let into = if direct {
        "INSERT INTO idx_text (rowid, narrative, content) VALUES (?1, ?2, ?3)"
    } else {
        "INSERT INTO idx_text_pending (rid, narrative, content) VALUES (?1, ?2, ?3)"
    };
    conn.prepare_cached(into)?.execute(rusqlite::params![rid, text.narrative, text.content])?;
    Ok(!direct)
}

/// SQLite: moves every pending row into FTS5, in one transaction of its own
/// (the writer calls it between commit groups). Returns the rows moved.
pub(crate) fn sqlite_flush(conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let moved = conn
        .execute(
            "INSERT INTO idx_text (rowid, narrative, content) SELECT rid, narrative, content FROM idx_text_pending",
            [],
        )
        .and_then(|moved| conn.execute("DELETE FROM idx_text_pending", []).map(|_| moved));
    match moved {
        Ok(moved) => {
            conn.execute_batch("COMMIT")?;
            Ok(moved)
        }
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// SQLite: the rows waiting for [`sqlite_flush`].
pub(crate) fn sqlite_pending(conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
    conn.query_row("SELECT COUNT(*) FROM idx_text_pending", [], |r| r.get::<_, i64>(0))
        .map(|n| usize::try_from(n).unwrap_or(0))
}

/// PostgreSQL: deletes the rows of the resources in `replaced`, then writes
/// one row per non-empty text of `rows`, in one statement.
pub(crate) async fn postgres_replace(
    tx: &deadpool_postgres::Transaction<'_>,
    replaced: &[i64],
    rows: &[(i64, Option<&TextIndex>)],
) -> Result<(), tokio_postgres::Error> {
    if !replaced.is_empty() {
        let delete = tx.prepare_cached("DELETE FROM idx_text WHERE rid = ANY($1)").await?;
        tx.execute(&delete, &[&replaced]).await?;
    }
    let mut rids: Vec<i64> = Vec::new();
    let mut narratives: Vec<String> = Vec::new();
    let mut contents: Vec<String> = Vec::new();
    for (rid, text) in rows {
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            rids.push(*rid);
            narratives.push(tsvector(&text.narrative));
            contents.push(tsvector(&text.content));
        }
    }
    if rids.is_empty() {
        return Ok(());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO idx_text (rid, narrative, content) \
             SELECT rid, narrative::tsvector, content::tsvector FROM UNNEST($1::bigint[], $2::text[], $3::text[]) \
             AS t(rid, narrative, content)",
        )
        .await?;
    tx.execute(&insert, &[&rids, &narratives, &contents]).await?;
    Ok(())
}

/// Escapes a lexeme for a quoted tsvector/tsquery literal. Words never hold
/// quotes or backslashes (they are letters and digits); this keeps a literal
/// well-formed whatever it is given.
fn quote_lexeme(word: &str) -> std::borrow::Cow<'_, str> {
    if word.contains(['\'', '\\']) {
        std::borrow::Cow::Owned(word.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        std::borrow::Cow::Borrowed(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phrase(words: &[&str], prefix: bool) -> TextPhrase {
        TextPhrase { words: words.iter().map(|w| w.to_string()).collect(), prefix }
    }

    #[test]
    fn fts5_queries_quote_each_phrase() {
        let phrases = [phrase(&["heart", "attack"], false), phrase(&["diab"], true)];
        assert_eq!(query_text(Dialect::Sqlite, &phrases), r#""heart attack" AND "diab"*"#);
    }

    #[test]
    fn pending_queries_round_trip() {
        let phrases = vec![phrase(&["heart", "attack"], false), phrase(&["diab"], true)];
        assert_eq!(pending_query(&phrases), "heart attack\ndiab*");
        assert_eq!(decode_pending_query(&pending_query(&phrases)), phrases);
    }

    #[test]
    fn tsqueries_chain_phrase_words() {
        let phrases = [phrase(&["heart", "att"], true), phrase(&["o"], false)];
        assert_eq!(query_text(Dialect::Postgres, &phrases), "('heart' <-> 'att':*) & ('o')");
    }

    #[test]
    fn tsvectors_list_positions_per_lexeme() {
        assert_eq!(tsvector("a b a c"), "'a':1,3 'b':2 'c':4");
        assert_eq!(tsvector(""), "");
        assert_eq!(tsvector(&"x ".repeat(300)).matches(',').count(), MAX_POSITIONS - 1);
        assert_eq!(quote_lexeme("it's"), "it''s");
    }
}
