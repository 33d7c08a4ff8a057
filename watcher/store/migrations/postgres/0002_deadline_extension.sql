-- apixo-watcher store (PostgreSQL), schema version 2: deadline extensions.
--
-- A credential pause moves the deadline of every active task by the time it lasted, and a
-- detected step of the wall clock moves it by the step. Kept per task so that a restart
-- keeps both: the deadline is registered_at + deadline + deadline_extension_s.

ALTER TABLE tasks ADD COLUMN deadline_extension_s double precision NOT NULL DEFAULT 0;
