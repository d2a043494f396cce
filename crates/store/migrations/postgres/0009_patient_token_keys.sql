-- Hearth PostgreSQL schema, version 9: `idx_patient_token` rows carry their
-- resource's id and last update (see SQLite's 0009_patient_token_keys.sql).
ALTER TABLE idx_patient_token ADD COLUMN id TEXT COLLATE "C";
ALTER TABLE idx_patient_token ADD COLUMN last_updated BIGINT;
UPDATE idx_patient_token c SET id = r.id, last_updated = r.last_updated FROM resource r WHERE r.rid = c.rid;
DROP INDEX idx_patient_token_search;
CREATE INDEX idx_patient_token_search ON idx_patient_token (pid, patient, code, sid, date_high DESC NULLS LAST)
    INCLUDE (date_low, via, rid, id, last_updated);
