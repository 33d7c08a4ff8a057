-- apixo-watcher store, schema version 6: one index fewer on tasks.
--
-- Every registration and every state change updates each index on tasks; a tasks file of
-- 100,000 entries pays for each one 100,000 times. tasks_active (the active tasks by task_id,
-- for resuming after a restart) duplicated what tasks_by_state (state, registered_at,
-- task_id) already orders: resuming now walks that index, one state after the other.
-- What each query on tasks uses:
--   by task_id (get, add, record_polls, purge)   the primary key
--   list, newest first                           tasks_by_registration
--   list of one state; counts per state;
--   active tasks (resume, deadline extensions)   tasks_by_state
--   finished tasks to purge                      tasks_finished

DROP INDEX tasks_active;
