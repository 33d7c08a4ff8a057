-- apixo-watcher store, schema version 2: retention.
--
-- Finished tasks older than `store.retention` are purged in batches, oldest first; this index
-- lets each batch find them without scanning the table.

CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
