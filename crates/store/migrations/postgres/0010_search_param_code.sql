-- Hearth schema, version 10: parameters by code across resource types.
-- Since ids are per type (0008), `search_param` is keyed by (type, code,
-- kind); the kinds a sort parameter has, a system-wide search and `:missing`
-- look a code up without its type, which this index serves.
CREATE INDEX search_param_code ON search_param (code, kind);
