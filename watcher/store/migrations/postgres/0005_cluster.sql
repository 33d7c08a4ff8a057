-- apixo-watcher store (PostgreSQL), schema version 5: several instances share the work
-- (contract section 10; watcher/store/postgres_cluster.py, watcher/cluster/).
--
-- instances: one row per running daemon, its lease renewed by its heartbeat. `host_key`
-- (hostname, boot id and pid namespace) lets a restarted daemon tell that an earlier process
-- on the same host is gone (its pid no longer runs there) and take its work over at once,
-- instead of waiting for its lease. `intake` is where its intake API listens, for people.
-- Times of leases are the database's clock (one clock for every host), in Unix seconds.
--
-- mirror_holds gain a claim like tasks and deliveries: the instance that copies a success's
-- result files before its webhook; another takes the hold over when that one's lease ends.

ALTER TABLE instances ADD COLUMN host_key text NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN intake text;

ALTER TABLE mirror_holds ADD COLUMN claimed_by text COLLATE "C";
CREATE INDEX mirror_holds_claimed ON mirror_holds (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE INDEX mirror_holds_unclaimed ON mirror_holds (created_at, task_id) WHERE claimed_by IS NULL;
