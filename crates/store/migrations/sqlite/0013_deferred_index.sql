-- Hearth sqlite schema, version 13: search indexes a bulk load builds in
-- one pass at its end (domain::Store::defer_search_indexes). A load into a
-- store far smaller than itself drops the secondary indexes of the idx_*
-- tables, keeping their definitions here, and creates them again when it
-- ends; a store that opens with rows here (a load that was stopped) creates
-- them then. While an index is deferred, searches read its table without it
-- (slower, the same answers).
CREATE TABLE deferred_index (
    name TEXT PRIMARY KEY,
    sql  TEXT NOT NULL
);
