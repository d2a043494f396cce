-- Hearth SQLite schema, version 6: who writes resources.
--
-- Each open store (one per process) counts here the commits in which it
-- wrote resources, under a random `owner` id of its own. A store serving
-- reads from its in-memory cache of current versions (src/cache.rs) looks
-- at the other owners' counts every 100 ms: when they moved, another
-- process wrote resources, and the cache is emptied. A row is removed when
-- its store closes.
CREATE TABLE resource_writer (
    owner   INTEGER PRIMARY KEY,
    commits INTEGER NOT NULL
);
