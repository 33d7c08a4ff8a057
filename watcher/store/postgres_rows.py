"""The PostgreSQL store's SQL text (psycopg `%s` placeholders).

Every SELECT returns the columns in the order of the SQLite store's queries, so the row <->
record converters of watcher/store/sqlite_rows.py serve both stores (one place decides how a
row becomes a Task). `json` columns are read back `::text`, exactly as written. The SQL is
constant text: queries only ever append constant fragments and bind values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

# -- tasks -----------------------------------------------------------------------------------------
SELECT_TASKS: Final = (
    "SELECT "
    "task_id, model, endpoints::text, callback_url, metadata::text, deadline_s, source, state, "
    "registered_at, updated_at, upstream_state, polls, finished_at, last_error, "
    "deadline_extension_s FROM tasks"
)
TASK_BY_ID: Final = SELECT_TASKS + " WHERE task_id = %s"
TASK_BY_ID_FOR_UPDATE: Final = TASK_BY_ID + " FOR UPDATE"
# The same with the instance holding it as a 16th column (several instances).
TASK_AND_CLAIM_FOR_UPDATE: Final = (
    SELECT_TASKS.replace(" FROM tasks", ", claimed_by FROM tasks")
    + " WHERE task_id = %s FOR UPDATE"
)
# One statement for a whole flush (arrays of task id, count or NULL, whether to set the error,
# the error): an UPDATE per task cost the daemon ~10 us of CPU per task, one per poll at
# full speed, against ~1.5 us this way.
UPDATE_POLL_COUNTS: Final = (
    "UPDATE tasks SET polls = coalesce(u.polls, tasks.polls), last_error = CASE WHEN "
    "u.set_error AND tasks.state IN ('pending', 'processing') THEN u.error "
    "ELSE tasks.last_error END "
    "FROM unnest(%s::text[], %s::int[], %s::bool[], %s::text[]) "
    "AS u (task_id, polls, set_error, error) WHERE tasks.task_id = u.task_id"
)
# Several instances: only for the tasks this instance holds.
UPDATE_HELD_POLL_COUNTS: Final = UPDATE_POLL_COUNTS + " AND tasks.claimed_by = %s"
RELEASE_TASK_CLAIM: Final = "UPDATE tasks SET claimed_by = NULL WHERE task_id = %s"
TASKS_BY_IDS: Final = SELECT_TASKS + " WHERE task_id = ANY(%s)"
TASK_MODELS_BY_IDS: Final = "SELECT task_id, model FROM tasks WHERE task_id = ANY(%s)"
TASK_EXISTS: Final = "SELECT 1 FROM tasks WHERE task_id = %s"
# One statement for a whole batch (arrays of columns), in task_id order so that two batches
# racing on the same ids lock them in the same order and cannot deadlock. A task_id that exists
# (or is being inserted by a concurrent transaction, which this one then waits for) is skipped;
# RETURNING names the ones this transaction created.
# The fifth constant is the claim: the registering instance (several instances), or NULL.
INSERT_TASKS: Final = (
    "INSERT INTO tasks (task_id, model, endpoints, callback_url, metadata, deadline_s, source, "
    "state, registered_at, updated_at, claimed_by) "
    "SELECT t.task_id, t.model, t.endpoints::json, t.callback_url, t.metadata::json, "
    "t.deadline_s, %s, %s, %s, %s, %s "
    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::float8[]) AS t (task_id, model, endpoints, callback_url, metadata, deadline_s) "
    'ORDER BY t.task_id COLLATE "C" '
    "ON CONFLICT (task_id) DO NOTHING RETURNING task_id"
)
UPDATE_TASK_STATE: Final = (
    "UPDATE tasks SET state = %s, upstream_state = %s, updated_at = %s, polls = %s, "
    "finished_at = %s, last_error = %s WHERE task_id = %s"
)
UPDATE_POLLS: Final = "UPDATE tasks SET polls = %s WHERE task_id = %s"
UPDATE_LAST_ERROR: Final = (
    "UPDATE tasks SET last_error = %s WHERE task_id = %s AND state IN ('pending', 'processing')"
)
# A credential pause from %s (since) to %s (until), for the tasks active through it: each gains
# the part of the pause after its registration. One statement for every active task.
EXTEND_DEADLINES: Final = (
    "UPDATE tasks SET deadline_extension_s = deadline_extension_s + "
    "(%s - greatest(%s, registered_at)) "
    "WHERE state IN ('pending', 'processing') AND registered_at < %s"
)
# Each model's %s most recent durations, oldest first (the adaptive strategy's learned state).
RECENT_DURATIONS: Final = (
    "SELECT model, duration_s FROM (SELECT model, duration_s, id, "
    "row_number() OVER (PARTITION BY model ORDER BY id DESC) AS n FROM task_durations) AS r "
    "WHERE n <= %s ORDER BY model, id"
)
INSERT_DURATION: Final = (
    "INSERT INTO task_durations (model, duration_s, finished_at) VALUES (%s, %s, %s)"
)
TRIM_DURATIONS: Final = (
    "DELETE FROM task_durations WHERE id IN (SELECT id FROM (SELECT id, "
    "row_number() OVER (PARTITION BY model ORDER BY id DESC) AS n FROM task_durations) AS r "
    "WHERE n > %s)"
)
# A step of the wall clock: the deadlines and the attempts still to come move with it.
SHIFT_DEADLINES: Final = (
    "UPDATE tasks SET deadline_extension_s = deadline_extension_s + %s "
    "WHERE state IN ('pending', 'processing')"
)
SHIFT_NEXT_ATTEMPTS: Final = (
    "UPDATE deliveries SET next_attempt_at = next_attempt_at + %s "
    "WHERE status = 'pending' AND next_attempt_at IS NOT NULL"
)
# `Delivery.retrying`: pending after a failed attempt of its current round.
RETRYING_CONDITION: Final = "status = 'pending' AND schedule_pos > 0"
COUNT_RETRYING_DELIVERIES: Final = (
    "SELECT count(*) FROM deliveries WHERE status = 'pending' AND schedule_pos > 0"
)
COUNT_TASKS: Final = "SELECT state, count(*) FROM tasks GROUP BY state"
SELECT_STATE_CHANGES: Final = (
    "SELECT task_id, from_state, to_state, at, reason, upstream_state FROM state_changes "
    "WHERE task_id = %s ORDER BY id"
)
INSERT_STATE_CHANGE: Final = (
    "INSERT INTO state_changes (task_id, from_state, to_state, at, reason, upstream_state) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)

# -- events ----------------------------------------------------------------------------------------
SELECT_EVENTS: Final = "SELECT event_id, task_id, type, created_at, body FROM events"
EVENT_BY_ID: Final = SELECT_EVENTS + " WHERE event_id = %s"
EVENTS_OF_TASK: Final = SELECT_EVENTS + " WHERE task_id = %s ORDER BY created_at, seq"
EVENT_BODIES: Final = "SELECT event_id, body FROM events WHERE event_id = ANY(%s)"
INSERT_EVENT: Final = (
    "INSERT INTO events (event_id, task_id, type, created_at, body) VALUES (%s, %s, %s, %s, %s)"
)

# -- result mirroring (contract section 9) ---------------------------------------------------------
SELECT_MIRROR_FILES: Final = (
    "SELECT task_id, position, source_url, key, status, created_at, updated_at, sha256, bytes, "
    "content_type, error, attempts FROM mirror_files"
)
MIRROR_FILES_OF_TASK: Final = SELECT_MIRROR_FILES + " WHERE task_id = %s ORDER BY position"
INSERT_MIRROR_FILE: Final = (
    "INSERT INTO mirror_files (task_id, position, source_url, key, status, created_at, "
    "updated_at, sha256, bytes, content_type, error, attempts) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
UPDATE_MIRROR_FILE: Final = (
    "UPDATE mirror_files SET status = %s, updated_at = %s, sha256 = %s, bytes = %s, "
    "content_type = %s, error = %s, attempts = %s WHERE task_id = %s AND position = %s"
)
INSERT_MIRROR_HOLD: Final = (
    "INSERT INTO mirror_holds (task_id, event_id, type, created_at, body) "
    "VALUES (%s, %s, %s, %s, %s)"
)
SELECT_MIRROR_HOLDS: Final = (
    "SELECT event_id, task_id, type, created_at, body FROM mirror_holds "
    "ORDER BY created_at, task_id"
)
DELETE_MIRROR_HOLD: Final = "DELETE FROM mirror_holds WHERE task_id = %s"
# Several instances: a hold claimed by the instance that copies its files.
INSERT_MIRROR_HOLD_CLAIMED: Final = (
    "INSERT INTO mirror_holds (task_id, event_id, type, created_at, body, claimed_by) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)
SELECT_OWN_MIRROR_HOLDS: Final = (
    "SELECT event_id, task_id, type, created_at, body FROM mirror_holds WHERE claimed_by = %s "
    "ORDER BY created_at, task_id"
)
DELETE_OWN_MIRROR_HOLD: Final = "DELETE FROM mirror_holds WHERE task_id = %s AND claimed_by = %s"


# -- deliveries and attempts -----------------------------------------------------------------------
SELECT_DELIVERIES: Final = (
    "SELECT "
    "delivery_id, event_id, task_id, event_type, endpoint, webhook_id, status, created_at, "
    "updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, last_error"
    " FROM deliveries"
)
DELIVERY_BY_ID: Final = SELECT_DELIVERIES + " WHERE delivery_id = %s"
DELIVERY_EXISTS: Final = "SELECT 1 FROM deliveries WHERE delivery_id = %s"
DELIVERIES_EXISTING: Final = "SELECT delivery_id FROM deliveries WHERE delivery_id = ANY(%s)"
# Parameters in the order of sqlite_rows.delivery_params (delivery_id last).
INSERT_DELIVERY: Final = (
    "INSERT INTO deliveries (event_id, task_id, event_type, endpoint, webhook_id, status, "
    "created_at, updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, "
    "last_error, delivery_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# Several instances: a delivery claimed by the instance that makes its attempts.
INSERT_DELIVERY_CLAIMED: Final = (
    "INSERT INTO deliveries (event_id, task_id, event_type, endpoint, webhook_id, status, "
    "created_at, updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, "
    "last_error, delivery_id, claimed_by) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# What an attempt changes; a delivery's identity columns never do. Parameters in the order of
# sqlite_rows.delivery_progress_params.
UPDATE_DELIVERY_PROGRESS: Final = (
    "UPDATE deliveries SET status = %s, updated_at = %s, next_attempt_at = %s, attempts = %s, "
    "schedule_pos = %s, last_status_code = %s, last_error = %s WHERE delivery_id = %s"
)
REQUEUE_DELIVERY: Final = (
    "UPDATE deliveries SET status = 'pending', next_attempt_at = %s, schedule_pos = 0, "
    "updated_at = %s WHERE delivery_id = %s RETURNING "
    "delivery_id, event_id, task_id, event_type, endpoint, webhook_id, status, created_at, "
    "updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, last_error"
)
# Several instances: a redelivery is claimed by the instance that takes it; the claim it had
# before is read first (locked), so that holder can be told to let go of it.
DELIVERY_CLAIM_FOR_UPDATE: Final = (
    "SELECT claimed_by FROM deliveries WHERE delivery_id = %s FOR UPDATE"
)
REQUEUE_DELIVERY_CLAIMED: Final = (
    "UPDATE deliveries SET status = 'pending', next_attempt_at = %s, schedule_pos = 0, "
    "updated_at = %s, claimed_by = %s WHERE delivery_id = %s RETURNING "
    "delivery_id, event_id, task_id, event_type, endpoint, webhook_id, status, created_at, "
    "updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, last_error"
)
# Several instances: which deliveries of a batch this instance holds (locked for the write).
HELD_DELIVERIES_FOR_UPDATE: Final = (
    "SELECT delivery_id FROM deliveries WHERE delivery_id = ANY(%s) AND claimed_by = %s "
    "ORDER BY delivery_id FOR UPDATE"
)
RELEASE_FINISHED_DELIVERIES: Final = (
    "UPDATE deliveries SET claimed_by = NULL WHERE delivery_id = ANY(%s) AND status <> 'pending'"
)
COUNT_DELIVERIES: Final = "SELECT status, count(*) FROM deliveries GROUP BY status"
SELECT_ATTEMPTS: Final = (
    "SELECT delivery_id, number, started_at, duration_ms, outcome, status_code, error, "
    "webhook_timestamp FROM attempts WHERE delivery_id = %s ORDER BY id"
)
INSERT_ATTEMPT: Final = (
    "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, "
    "status_code, error, webhook_timestamp) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)

# -- streaming and housekeeping --------------------------------------------------------------------
# Keyset batches over the partial indexes, after the last key of the previous batch.
STREAM_ACTIVE_TASKS: Final = (
    SELECT_TASKS + " WHERE state IN ('pending', 'processing') AND task_id > %s "
    "ORDER BY task_id LIMIT %s"
)
STREAM_PENDING_DELIVERIES: Final = (
    SELECT_DELIVERIES + " WHERE status = 'pending' AND delivery_id > %s "
    "ORDER BY delivery_id LIMIT %s"
)
# Finished tasks to purge, oldest first; rows another instance is purging are skipped, not
# waited for (SKIP LOCKED), so instances purging at once neither block nor delete twice.
PURGE_PICK: Final = (
    "SELECT t.task_id FROM tasks AS t WHERE t.finished_at IS NOT NULL AND t.finished_at < %s "
    "AND NOT EXISTS (SELECT 1 FROM deliveries AS d "
    "WHERE d.task_id = t.task_id AND d.status = 'pending') "
    "AND NOT EXISTS (SELECT 1 FROM mirror_holds AS h WHERE h.task_id = t.task_id) "
    "ORDER BY t.finished_at LIMIT %s FOR UPDATE SKIP LOCKED"
)
# Everything recorded about the tasks in the array parameter, children first.
PURGE: Final = (
    "DELETE FROM attempts WHERE delivery_id IN "
    "(SELECT delivery_id FROM deliveries WHERE task_id = ANY(%s))",
    "DELETE FROM deliveries WHERE task_id = ANY(%s)",
    "DELETE FROM events WHERE task_id = ANY(%s)",
    "DELETE FROM state_changes WHERE task_id = ANY(%s)",
    "DELETE FROM mirror_files WHERE task_id = ANY(%s)",
    "DELETE FROM tasks WHERE task_id = ANY(%s)",
)
HEARTBEAT: Final = (
    "INSERT INTO heartbeat (id, beats) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET beats = heartbeat.beats + 1"
)


def nul_free(params: Sequence[Any]) -> tuple[Any, ...]:
    """`params` with NUL characters in strings replaced: PostgreSQL text cannot hold them, and
    free text from outside (an upstream error, a state name) must not fail a whole write."""
    return tuple(
        p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p for p in params
    )
