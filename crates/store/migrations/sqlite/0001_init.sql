-- Hearth SQLite schema, version 1: resources, their versions, and one search
-- index table per FHIR search parameter type
-- (http://hl7.org/fhir/R4/search.html#ptypes).
--
-- Layout rules (see ARCHITECTURE notes in crates/store/src/lib.rs):
-- * `resource` has one row per logical resource (type, id) and an internal
--   integer key `rid` that every other table refers to. A patient-compartment
--   key can later be added to `resource` and to the index tables for
--   partitioning without changing how the search builder joins them.
-- * The JSON body is stored exactly once per version, in `resource_version`.
-- * Index tables hold rows of the current version only; a write deletes the
--   rows of the previous version. They are WITHOUT ROWID tables clustered by
--   (rid, pid, n) so deleting a resource's rows is one range, and carry one
--   secondary index for search (which SQLite completes with rid, n).
-- * Search parameter codes and code systems are interned to small integers:
--   index rows stay small (a system URI is often 40-60 bytes).

-- Interned search parameter codes. `kind`: 1 string, 2 token, 3 reference,
-- 4 date, 5 number, 6 quantity, 7 uri (the same code may have different
-- types on different resource types, hence the pair).
CREATE TABLE search_param (
    pid  INTEGER PRIMARY KEY,
    code TEXT    NOT NULL,
    kind INTEGER NOT NULL,
    UNIQUE (code, kind)
);

-- Interned code system / unit system URIs of tokens and quantities.
CREATE TABLE term_system (
    sid INTEGER PRIMARY KEY,
    uri TEXT    NOT NULL UNIQUE
);

CREATE TABLE resource (
    rid          INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    -- Current version number and its time; `deleted` is 1 when the current
    -- version is a delete (tombstone).
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted      INTEGER NOT NULL
);
CREATE UNIQUE INDEX resource_type_id ON resource (type, id);
-- The default search order (last_updated descending) of one type.
CREATE INDEX resource_type_updated ON resource (type, last_updated DESC) WHERE deleted = 0;

-- Every version. `seq` (the rowid) is the global order of system history:
-- rows are never deleted, so SQLite's max(rowid)+1 keeps it increasing.
-- `method`: 1 POST, 2 PUT, 3 PATCH, 4 DELETE. `body` is NULL for a delete.
CREATE TABLE resource_version (
    seq          INTEGER PRIMARY KEY,
    rid          INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    method       INTEGER NOT NULL,
    body         TEXT
);
CREATE UNIQUE INDEX resource_version_rid ON resource_version (rid, version);
CREATE INDEX resource_version_type ON resource_version (type, seq);

CREATE TABLE idx_string (
    rid        INTEGER NOT NULL,
    pid        INTEGER NOT NULL,
    n          INTEGER NOT NULL,
    normalized TEXT    NOT NULL,
    exact      TEXT    NOT NULL,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
CREATE INDEX idx_string_search ON idx_string (pid, normalized);

-- `text` is the normalized display/text, for `:text`.
CREATE TABLE idx_token (
    rid  INTEGER NOT NULL,
    pid  INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    sid  INTEGER,
    code TEXT,
    text TEXT,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
CREATE INDEX idx_token_search ON idx_token (pid, code, sid);

CREATE TABLE idx_reference (
    rid         INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    url         TEXT    NOT NULL,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
CREATE INDEX idx_reference_search ON idx_reference (pid, target_id, target_type);
-- Absolute and canonical references are searched by URL.
CREATE INDEX idx_reference_url ON idx_reference (pid, url) WHERE target_id IS NULL;

CREATE TABLE idx_date (
    rid  INTEGER NOT NULL,
    pid  INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    low  INTEGER NOT NULL,
    high INTEGER NOT NULL,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
CREATE INDEX idx_date_search ON idx_date (pid, low, high);

CREATE TABLE idx_number (
    rid  INTEGER NOT NULL,
    pid  INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    low  REAL    NOT NULL,
    high REAL    NOT NULL,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
CREATE INDEX idx_number_search ON idx_number (pid, low, high);

CREATE TABLE idx_quantity (
    rid  INTEGER NOT NULL,
    pid  INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    low  REAL    NOT NULL,
    high REAL    NOT NULL,
    sid  INTEGER,
    code TEXT,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
CREATE INDEX idx_quantity_search ON idx_quantity (pid, low, high);

CREATE TABLE idx_uri (
    rid   INTEGER NOT NULL,
    pid   INTEGER NOT NULL,
    n     INTEGER NOT NULL,
    value TEXT    NOT NULL,
    PRIMARY KEY (rid, pid, n)
) WITHOUT ROWID;
CREATE INDEX idx_uri_search ON idx_uri (pid, value);
