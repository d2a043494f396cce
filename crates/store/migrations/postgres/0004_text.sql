-- Hearth PostgreSQL schema, version 4: full-text search for `_text` and
-- `_content` (http://hl7.org/fhir/R4/search.html#_text).
--
-- One row per current resource with the words of its narrative and of its
-- whole content as tsvectors. Hearth makes the words itself (lower-cased,
-- accents removed, letters and digits only; crates/fhir/src/search/text.rs)
-- and writes tsvector literals with their positions (crates/store/src/
-- fulltext.rs), so neither a text-search configuration nor the database's
-- locale changes them: PostgreSQL sees exactly the words SQLite and the memory
-- store see. Searches are `column @@ tsquery`, served by the GIN indexes.
--
-- Resources stored before this migration have no row until `$reindex`
-- (docs/storage.md).
CREATE TABLE idx_text (
    rid       BIGINT PRIMARY KEY,
    narrative TSVECTOR NOT NULL,
    content   TSVECTOR NOT NULL
);
CREATE INDEX idx_text_narrative ON idx_text USING GIN (narrative);
CREATE INDEX idx_text_content ON idx_text USING GIN (content);
