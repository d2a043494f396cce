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
//!   split. A search is `rid IN (SELECT rowid FROM idx_text WHERE <column>
//!   MATCH '"w1 w2" AND "w3"*')`.
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

/// `alias.rid IN (...)`: the resource's `field` holds every phrase; the
/// query text is bound at `placeholder` (see [`query_text`]).
pub(crate) fn predicate(dialect: Dialect, alias: &str, field: TextField, placeholder: &str) -> String {
    let column = column(field);
    match dialect {
        Dialect::Sqlite => format!("{alias}.rid IN (SELECT rowid FROM idx_text WHERE {column} MATCH {placeholder})"),
        Dialect::Postgres => {
            format!("{alias}.rid IN (SELECT rid FROM idx_text WHERE {column} @@ CAST({placeholder} AS TEXT)::tsquery)")
        }
    }
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

/// SQLite: replaces the row of resource `rid` (`existed`: it may have one)
/// with `text`; `None` or an empty text leaves no row.
pub(crate) fn sqlite_replace(
    conn: &rusqlite::Connection,
    rid: i64,
    existed: bool,
    text: Option<&TextIndex>,
) -> rusqlite::Result<()> {
    if existed {
        conn.prepare_cached("DELETE FROM idx_text WHERE rowid = ?1")?.execute([rid])?;
    }
    if let Some(text) = text.filter(|t| !t.is_empty()) {
        conn.prepare_cached("INSERT INTO idx_text (rowid, narrative, content) VALUES (?1, ?2, ?3)")?
            .execute(rusqlite::params![rid, text.narrative, text.content])?;
    }
    Ok(())
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
