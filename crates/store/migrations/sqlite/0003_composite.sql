-- Hearth SQLite schema, version 3: composite search parameters
-- (http://hl7.org/fhir/R4/search.html#composite).
--
-- One row per element of a composite parameter (one Observation.component,
-- say) and combination of its component values, so that a search matches
-- components of the SAME element. Search parameters have at most three
-- components; component k is laid out in four generic columns
-- (crates/store/src/sql.rs, composite_columns):
--   s<k>  system of a token or quantity, or the type of a reference;
--   c<k>  code of a token or quantity, normalized string, reference id or URL, uri;
--   l<k>, h<k>  range of a quantity, number or date (microseconds, as REAL).
-- Systems are kept as text rather than interned: composite rows are few.
-- `search_param.kind` 8 is composite.
CREATE TABLE idx_composite (
    rid INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    n   INTEGER NOT NULL,
    s0  TEXT,
    c0  TEXT,
    l0  REAL,
    h0  REAL,
    s1  TEXT,
    c1  TEXT,
    l1  REAL,
    h1  REAL,
    s2  TEXT,
    c2  TEXT,
    l2  REAL,
    h2  REAL,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
-- The first component is a token in every core composite parameter.
CREATE INDEX idx_composite_search ON idx_composite (pid, c0, s0);
