-- Hearth PostgreSQL schema, version 5: system records and the audit trail
-- (crates/domain/src/audit.rs). Mirrors migrations/sqlite/0005_audit.sql.
--
-- `sys_record`: Hearth's own documents that are not FHIR (users, OAuth
-- clients, sessions, tokens), JSON text by (kind, key), with a version a
-- commit compares before it writes (compare-and-swap).
CREATE TABLE sys_record (
    kind    TEXT COLLATE "C" NOT NULL,
    key     TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    json    TEXT   NOT NULL,
    PRIMARY KEY (kind, key)
);

-- `audit_entry`: the trail, entry `seq` = 1, 2, 3... with no gap. `record` is
-- the record's canonical JSON exactly as the chain digest `hash` covers it
-- (hex HMAC-SHA256 over the previous entry's hash, `seq` and `record`).
-- The other columns are copies of the record's fields for reports: `at` in
-- microseconds, `patient` the first patient (NULL when none; the others are
-- in `audit_patient`), `resource_type` NULL when none, `outcome` 0/4/8/12.
CREATE TABLE audit_entry (
    seq           BIGINT PRIMARY KEY,
    at            BIGINT NOT NULL,
    who           TEXT COLLATE "C" NOT NULL,
    patient       TEXT COLLATE "C",
    action        TEXT COLLATE "C" NOT NULL,
    event         TEXT COLLATE "C" NOT NULL,
    resource_type TEXT COLLATE "C",
    outcome       BIGINT NOT NULL,
    record        TEXT   NOT NULL,
    hash          TEXT   NOT NULL
);
CREATE INDEX audit_entry_at ON audit_entry (at, seq);
CREATE INDEX audit_entry_who ON audit_entry (who, seq);
CREATE INDEX audit_entry_patient ON audit_entry (patient, seq) WHERE patient IS NOT NULL;
CREATE INDEX audit_entry_type ON audit_entry (resource_type, seq) WHERE resource_type IS NOT NULL;

-- The second and later patients of an entry that concerns several.
CREATE TABLE audit_patient (
    patient TEXT COLLATE "C" NOT NULL,
    seq     BIGINT NOT NULL,
    PRIMARY KEY (patient, seq)
);

-- The chain's head: the last entry's seq and hash (0 and the genesis digest
-- while the trail is empty). A commit that appends locks this one row
-- (SELECT ... FOR UPDATE) as its last step, so appends from every process
-- sharing the database are numbered and linked one after another.
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only, as defence in depth: the chain digest is what reveals a
-- change, but the database itself refuses one made through SQL.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END
$$;
CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON audit_entry
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_patient_append_only BEFORE UPDATE OR DELETE ON audit_patient
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_patient_no_truncate BEFORE TRUNCATE ON audit_patient
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
