-- Hearth SQLite schema, version 5: system records and the audit trail
-- (crates/domain/src/audit.rs).
--
-- `sys_record`: Hearth's own documents that are not FHIR (users, OAuth
-- clients, sessions, tokens), JSON text by (kind, key), with a version the
-- writer compares before it writes (compare-and-swap).
CREATE TABLE sys_record (
    kind    TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    version INTEGER NOT NULL,
    json    TEXT    NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;

-- `audit_entry`: the trail, entry `seq` = 1, 2, 3... with no gap. `record` is
-- the record's canonical JSON exactly as the chain digest `hash` covers it
-- (hex HMAC-SHA256 over the previous entry's hash, `seq` and `record`).
-- The other columns are copies of the record's fields for reports, with
-- indexes for their filters:
--   at             microseconds since 1970 (UTC);
--   who            the actor's id;
--   patient        the record's first patient, NULL when it names none;
--   action         C R U D E;
--   event          read, create, login...;
--   resource_type  NULL when none;
--   outcome        0, 4, 8 or 12 (how bad).
-- Every patient after the first is in `audit_patient`.
CREATE TABLE audit_entry (
    seq           INTEGER PRIMARY KEY,
    at            INTEGER NOT NULL,
    who           TEXT    NOT NULL,
    patient       TEXT,
    action        TEXT    NOT NULL,
    event         TEXT    NOT NULL,
    resource_type TEXT,
    outcome       INTEGER NOT NULL,
    record        TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);
-- SQLite completes each index with `seq` (the rowid), so each also gives
-- entry order within one value.
CREATE INDEX audit_entry_at ON audit_entry (at);
CREATE INDEX audit_entry_who ON audit_entry (who);
CREATE INDEX audit_entry_patient ON audit_entry (patient) WHERE patient IS NOT NULL;
CREATE INDEX audit_entry_type ON audit_entry (resource_type) WHERE resource_type IS NOT NULL;

-- The second and later patients of an entry that concerns several.
CREATE TABLE audit_patient (
    patient TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)
) WITHOUT ROWID;

-- Append-only, as defence in depth: the chain digest is what reveals a
-- change, but the database itself refuses one made through SQL.
CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_entry
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_patient_no_update BEFORE UPDATE ON audit_patient
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_patient_no_delete BEFORE DELETE ON audit_patient
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
