-- Where a run's code came from (JSON: leo version, the workflow repository's git commit and
-- dirty flag, host), for lineage.
ALTER TABLE runs ADD COLUMN provenance TEXT;
