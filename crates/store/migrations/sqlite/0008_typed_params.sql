-- Hearth SQLite schema, version 8: search parameters interned per resource
-- type, and a patient's coded records in one index.
--
-- 1. `search_param` gains the resource type: (type, code, kind) -> pid.
--    `Observation.code` and `Condition.code` now have different ids, so an
--    index row says which type its resource is. A search no longer reads
--    each candidate's `resource` row to check the type, and a count of one
--    lookup is a count of index rows (a delete or a new version removes the
--    old version's rows). Existing index rows are given the id of their
--    resource's type.
-- 2. `idx_patient_token`: for every record that refers to a Patient by id
--    through its `patient` or `subject` parameter, each of its tokens
--    (code, category, status, type...; not identifiers, tags or derived
--    values: crates/store/src/sql.rs, is_patient_token_param) once per
--    patient, with `via` (1: from `patient`, 2: from `subject`, 4: from
--    `patient` pointing at a Group or other type with that id) and the
--    record's `date` range (lowest and highest bound). "This patient's
--    observations with this code, newest first" is then one index range read
--    in order. `sid` 0 stands for no system.
CREATE TABLE search_param_typed (
    pid  INTEGER PRIMARY KEY,
    type TEXT    NOT NULL,
    code TEXT    NOT NULL,
    kind INTEGER NOT NULL,
    UNIQUE (type, code, kind)
);

CREATE TEMP TABLE param_use (rid_type TEXT NOT NULL, pid INTEGER NOT NULL, PRIMARY KEY (rid_type, pid)) WITHOUT ROWID;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_string x JOIN resource r ON r.rid = x.rid;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_token x JOIN resource r ON r.rid = x.rid;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_reference x JOIN resource r ON r.rid = x.rid;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_date x JOIN resource r ON r.rid = x.rid;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_number x JOIN resource r ON r.rid = x.rid;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_quantity x JOIN resource r ON r.rid = x.rid;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_uri x JOIN resource r ON r.rid = x.rid;
INSERT OR IGNORE INTO param_use SELECT r.type, x.pid FROM idx_composite x JOIN resource r ON r.rid = x.rid;

-- New ids after every old one, so old and new never meet in one table.
INSERT INTO search_param_typed (pid, type, code, kind)
SELECT (SELECT COALESCE(MAX(pid), 0) FROM search_param) + ROW_NUMBER() OVER (ORDER BY u.rid_type, p.code, p.kind),
       u.rid_type, p.code, p.kind
FROM param_use u JOIN search_param p ON p.pid = u.pid;

CREATE TEMP TABLE param_map (old INTEGER NOT NULL, type TEXT NOT NULL, new INTEGER NOT NULL, PRIMARY KEY (old, type)) WITHOUT ROWID;
INSERT INTO param_map SELECT p.pid, n.type, n.pid FROM search_param p JOIN search_param_typed n ON n.code = p.code AND n.kind = p.kind;

UPDATE idx_string SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_string.pid AND m.type = r.type WHERE r.rid = idx_string.rid);
UPDATE idx_token SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_token.pid AND m.type = r.type WHERE r.rid = idx_token.rid);
UPDATE idx_reference SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_reference.pid AND m.type = r.type WHERE r.rid = idx_reference.rid);
UPDATE idx_date SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_date.pid AND m.type = r.type WHERE r.rid = idx_date.rid);
UPDATE idx_number SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_number.pid AND m.type = r.type WHERE r.rid = idx_number.rid);
UPDATE idx_quantity SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_quantity.pid AND m.type = r.type WHERE r.rid = idx_quantity.rid);
UPDATE idx_uri SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_uri.pid AND m.type = r.type WHERE r.rid = idx_uri.rid);
UPDATE idx_composite SET pid = (SELECT m.new FROM resource r JOIN param_map m ON m.old = idx_composite.pid AND m.type = r.type WHERE r.rid = idx_composite.rid);

DROP TABLE search_param;
ALTER TABLE search_param_typed RENAME TO search_param;
DROP TABLE param_use;
DROP TABLE param_map;

CREATE TABLE idx_patient_token (
    rid       INTEGER NOT NULL,
    pid       INTEGER NOT NULL,
    patient   TEXT    NOT NULL,
    sid       INTEGER NOT NULL,
    code      TEXT    NOT NULL,
    via       INTEGER NOT NULL,
    date_low  INTEGER,
    date_high INTEGER,
    PRIMARY KEY (rid, pid, patient, sid, code)
) WITHOUT ROWID;
CREATE INDEX idx_patient_token_search ON idx_patient_token (pid, patient, code, sid, date_high, date_low, via);

-- Rows for what is already stored (the writer adds them from now on).
INSERT OR IGNORE INTO idx_patient_token (rid, pid, patient, sid, code, via, date_low, date_high)
SELECT t.rid, t.pid, p.patient, COALESCE(t.sid, 0), t.code, p.via, d.low, d.high
FROM idx_token t
JOIN search_param tp ON tp.pid = t.pid
JOIN (SELECT x.rid, x.target_id AS patient,
             MAX(CASE WHEN sp.code = 'patient' AND x.target_type = 'Patient' THEN 1 ELSE 0 END)
             | MAX(CASE WHEN sp.code = 'subject' THEN 2 ELSE 0 END)
             | MAX(CASE WHEN sp.code = 'patient' AND x.target_type <> 'Patient' THEN 4 ELSE 0 END) AS via
      FROM idx_reference x JOIN search_param sp ON sp.pid = x.pid
      WHERE x.target_id IS NOT NULL AND x.target_type IS NOT NULL
        AND (sp.code = 'patient' OR (sp.code = 'subject' AND x.target_type = 'Patient'))
      GROUP BY x.rid, x.target_id) p ON p.rid = t.rid
LEFT JOIN (SELECT y.rid, MIN(y.low) AS low, MAX(y.high) AS high
           FROM idx_date y JOIN search_param dp ON dp.pid = y.pid
           WHERE dp.code = 'date'
           GROUP BY y.rid) d ON d.rid = t.rid
WHERE t.code IS NOT NULL AND substr(tp.code, 1, 1) <> '_' AND instr(tp.code, ':') = 0 AND tp.code <> 'identifier';
