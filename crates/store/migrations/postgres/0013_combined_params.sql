-- Hearth postgres schema, version 13: Observation's combo-* parameters are no
-- longer indexed. Each is the union of the Observation's own parameter and
-- its components' (combo-code is code | component-code), which are indexed,
-- and a search of one searches both (crates/fhir/src/search/query.rs,
-- COMBINED). Their rows, written before this version, go.
DELETE FROM idx_token WHERE pid IN
    (SELECT pid FROM search_param WHERE type IN ('Observation', '#Observation') AND code LIKE 'combo-%');
DELETE FROM idx_quantity WHERE pid IN
    (SELECT pid FROM search_param WHERE type IN ('Observation', '#Observation') AND code LIKE 'combo-%');
DELETE FROM idx_composite WHERE pid IN
    (SELECT pid FROM search_param WHERE type IN ('Observation', '#Observation') AND code LIKE 'combo-%');
DELETE FROM idx_patient_token WHERE pid IN
    (SELECT pid FROM search_param WHERE type IN ('Observation', '#Observation') AND code LIKE 'combo-%');
