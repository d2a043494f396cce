-- Hearth SQLite schema, version 7: the audit trail's patient index is
-- filled in bulk.
--
-- An index on `audit_entry (patient)` takes every new entry at a random
-- place (one leaf page per patient), and with SQLCipher each page changed is
-- encrypted again at every commit: for the audit of reads that was half of
-- the writer's work. So entries are indexed by patient in bulk instead:
-- `audit_patient_index` holds (patient, seq) for every entry up to
-- `audit_index_state.through`, and the writer moves the entries after it in
-- one statement once a few thousand have arrived (src/sqlite.rs). A search
-- by patient reads the index for the entries up to `through` and the few
-- entries after it by their numbers (src/audit.rs). The second and later
-- patients of an entry stay in `audit_patient`, written with the entry.
CREATE TABLE audit_patient_index (
    patient TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (patient, seq)
) WITHOUT ROWID;

CREATE TABLE audit_index_state (
    through INTEGER NOT NULL
);

INSERT INTO audit_patient_index (patient, seq)
    SELECT patient, seq FROM audit_entry WHERE patient IS NOT NULL;
INSERT INTO audit_index_state (through) SELECT COALESCE(MAX(seq), 0) FROM audit_entry;
DROP INDEX audit_entry_patient;

-- Append-only, like the trail: a deleted index row would hide an entry from
-- a patient's access report, and `through` only moves forward.
CREATE TRIGGER audit_patient_index_no_update BEFORE UPDATE ON audit_patient_index
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_patient_index_no_delete BEFORE DELETE ON audit_patient_index
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
CREATE TRIGGER audit_index_state_forward BEFORE UPDATE ON audit_index_state
WHEN NEW.through < OLD.through
BEGIN
    SELECT RAISE(ABORT, 'the audit index only moves forward');
END;
CREATE TRIGGER audit_index_state_no_delete BEFORE DELETE ON audit_index_state
BEGIN
    SELECT RAISE(ABORT, 'the audit trail is append-only');
END;
