-- Hearth SQLite schema, version 11: contained resources (search.html#contained).
-- Each resource a version contains gets a `resource` row of its own,
-- rewritten with its container's current version: type `#<type>`
-- (`#Medication`), id `<container type>/<container id>#<id>`, the
-- container's version and last update, `deleted` = 2, and `container` = the
-- container's rid; the container's own row has `container` = 0 while it
-- has such rows (no rid is 0). It has no `resource_version` rows, and its index rows use
-- parameter ids interned for the `#<type>` key, so searches of stand-alone
-- resources never meet it (crates/store/src/sql.rs, "Contained resources").
-- Resources stored before this version have no such rows until they are
-- written again or `$reindex` runs.
ALTER TABLE resource ADD COLUMN container INTEGER;
CREATE INDEX resource_container ON resource (container) WHERE container IS NOT NULL;
