-- Artifacts live in the artifact store: each row names its object there. NULL for files stored
-- before the store, which lie under the API's files.artifact_dir/<run>/<path>.
ALTER TABLE artifacts ADD COLUMN uri TEXT;
