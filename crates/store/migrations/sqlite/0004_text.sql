-- Hearth SQLite schema, version 4: full-text search for `_text` and `_content`
-- (http://hl7.org/fhir/R4/search.html#_text).
--
-- One row per current resource (rowid = resource.rid) holding the words of its
-- narrative and of its whole content as Hearth makes them: lower-cased,
-- accents removed, letters and digits only, separated by single spaces
-- (crates/fhir/src/search/text.rs). Contentless: the words are indexed, not
-- stored a second time; contentless_delete lets the writer delete a row by
-- rowid when the resource changes or is deleted.
--
-- The tokenizer must not change those words: every character of a word is in
-- a category it keeps (letters, digits, and the symbols Rust counts as
-- alphabetic), and it folds nothing more (remove_diacritics 0), so SQLite
-- sees exactly the words the memory store and PostgreSQL see.
--
-- Writes do not go to idx_text directly: FTS5 writes several pages at every
-- transaction, so a commit appends its words to idx_text_pending (same
-- columns, keyed by rid) and the writer moves the pending rows into idx_text
-- in one transaction once enough have gathered (crates/store/src/fulltext.rs).
-- Searches look in both tables.
--
-- Resources stored before this migration have no row until `$reindex`
-- (docs/storage.md).
CREATE VIRTUAL TABLE idx_text USING fts5(
    narrative,
    content,
    content = '',
    contentless_delete = 1,
    tokenize = "unicode61 remove_diacritics 0 categories 'L* N* Co So'"
);
CREATE TABLE idx_text_pending (
    rid       INTEGER PRIMARY KEY,
    narrative TEXT NOT NULL,
    content   TEXT NOT NULL
);
