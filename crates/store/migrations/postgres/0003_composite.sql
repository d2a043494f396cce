-- Hearth PostgreSQL schema, version 3: composite search parameters
-- (http://hl7.org/fhir/R4/search.html#composite).
--
-- One row per element of a composite parameter (one Observation.component,
-- say) and combination of its component values, so that a search matches
-- components of the SAME element. Search parameters have at most three
-- components; component k is laid out in four generic columns
-- (crates/store/src/sql.rs, composite_columns):
--   s<k>  system of a token or quantity, or the type of a reference;
--   c<k>  code of a token or quantity, normalized string, reference id or URL, uri;
--   l<k>, h<k>  range of a quantity, number or date (microseconds, as float8).
-- Systems are kept as text rather than interned: composite rows are few.
-- `search_param.kind` 8 is composite.
CREATE TABLE idx_composite (
    rid BIGINT NOT NULL,
    pid BIGINT NOT NULL,
    s0  TEXT COLLATE "C",
    c0  TEXT COLLATE "C",
    l0  DOUBLE PRECISION,
    h0  DOUBLE PRECISION,
    s1  TEXT COLLATE "C",
    c1  TEXT COLLATE "C",
    l1  DOUBLE PRECISION,
    h1  DOUBLE PRECISION,
    s2  TEXT COLLATE "C",
    c2  TEXT COLLATE "C",
    l2  DOUBLE PRECISION,
    h2  DOUBLE PRECISION
);
CREATE INDEX idx_composite_rid ON idx_composite (rid);
-- The first component is a token in every core composite parameter.
CREATE INDEX idx_composite_search ON idx_composite (pid, c0, s0);
