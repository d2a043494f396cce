-- Hearth SQLite schema, version 9: `idx_patient_token` rows carry their
-- resource's id and last update, so the ordered list of a patient's records
-- with a code (what a search's first page keeps for stable paging) is read
-- from the index alone, without reading a `resource` row per match (with
-- SQLCipher, each such row can mean a page decrypted and checked again).
-- Both change only when the resource is written, which rewrites its rows.
ALTER TABLE idx_patient_token ADD COLUMN id TEXT;
ALTER TABLE idx_patient_token ADD COLUMN last_updated INTEGER;
UPDATE idx_patient_token SET
    id = (SELECT r.id FROM resource r WHERE r.rid = idx_patient_token.rid),
    last_updated = (SELECT r.last_updated FROM resource r WHERE r.rid = idx_patient_token.rid);
DROP INDEX idx_patient_token_search;
CREATE INDEX idx_patient_token_search
    ON idx_patient_token (pid, patient, code, sid, date_high, last_updated, id, date_low, via);
