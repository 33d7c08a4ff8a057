"""The SQLite store's SQL text, and the conversions between its rows and the domain records.

Every column list lives here, next to the function that reads or writes rows in that column
order, so a column change touches this module only. The SQL is plain constant text: queries
only ever append constant fragments and bind values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from watcher.models import (
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    MirrorFile,
    MirrorHold,
    MirrorStatus,
    StateChange,
    Task,
    TaskSource,
    TaskState,
)

# -- tasks -----------------------------------------------------------------------------------------
SELECT_TASKS: Final = (
    "SELECT task_id, model, endpoints, callback_url, metadata, deadline_s, source, state, "
    "registered_at, updated_at, upstream_state, polls, finished_at, last_error, "
    "deadline_extension_s FROM tasks"
)
TASK_BY_ID: Final = SELECT_TASKS + " WHERE task_id = ?"
INSERT_TASK: Final = (
    "INSERT INTO tasks (task_id, model, endpoints, callback_url, metadata, deadline_s, source, "
    "state, registered_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_tasks(optional: Sequence[str]) -> str:
    """The INSERT of new tasks' rows (task_id, model, metadata, *optional, source, state,
    registered_at, updated_at), where `optional` names those of endpoints, callback_url and
    deadline_s that the rows set; the others are NULL. Binding None costs the sqlite3 module
    a failed adapter lookup per value (~0.2 us): three per row of a batch that sets none."""
    columns = ("task_id", "model", "metadata", *optional, "source", "state", "registered_at")
    marks = ", ".join("?" * (len(columns) + 1))
    return f"INSERT INTO tasks ({', '.join(columns)}, updated_at) VALUES ({marks})"  # noqa: S608


UPDATE_TASK_STATE: Final = (
    "UPDATE tasks SET state = ?, upstream_state = ?, updated_at = ?, polls = ?, "
    "finished_at = ?, last_error = ? WHERE task_id = ?"
)
SELECT_STATE_CHANGES: Final = (
    "SELECT task_id, from_state, to_state, at, reason, upstream_state FROM state_changes "
    "WHERE task_id = ? ORDER BY id"
)
# A credential pause from ? (since) to ? (until), for the tasks active through it: each gains
# the part of the pause after its registration. One statement for every active task.
EXTEND_DEADLINES: Final = (
    "UPDATE tasks SET deadline_extension_s = deadline_extension_s + (? - MAX(?, registered_at)) "
    "WHERE state IN ('pending', 'processing') AND registered_at < ?"
)
# Each model's ? most recent durations, oldest first (the adaptive strategy's learned state).
RECENT_DURATIONS: Final = (
    "SELECT model, duration_s FROM (SELECT model, duration_s, id, "
    "ROW_NUMBER() OVER (PARTITION BY model ORDER BY id DESC) AS n FROM task_durations) "
    "WHERE n <= ? ORDER BY model, id"
)
TRIM_DURATIONS: Final = (
    "DELETE FROM task_durations WHERE id IN (SELECT id FROM (SELECT id, "
    "ROW_NUMBER() OVER (PARTITION BY model ORDER BY id DESC) AS n FROM task_durations) "
    "WHERE n > ?)"
)
# A step of the wall clock: the deadlines still to come move with it.
SHIFT_DEADLINES: Final = (
    "UPDATE tasks SET deadline_extension_s = deadline_extension_s + ? "
    "WHERE state IN ('pending', 'processing')"
)
INSERT_STATE_CHANGE: Final = (
    "INSERT INTO state_changes "
    "(task_id, from_state, to_state, at, reason, upstream_state) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

# -- events ----------------------------------------------------------------------------------------
SELECT_EVENTS: Final = "SELECT event_id, task_id, type, created_at, body FROM events"
EVENT_BY_ID: Final = SELECT_EVENTS + " WHERE event_id = ?"
EVENTS_OF_TASK: Final = SELECT_EVENTS + " WHERE task_id = ? ORDER BY created_at, rowid"
INSERT_EVENT: Final = (
    "INSERT INTO events (event_id, task_id, type, created_at, body) VALUES (?, ?, ?, ?, ?)"
)

# -- result mirroring (contract section 9) ---------------------------------------------------------
SELECT_MIRROR_FILES: Final = (
    "SELECT task_id, position, source_url, key, status, created_at, updated_at, sha256, bytes, "
    "content_type, error, attempts FROM mirror_files"
)
MIRROR_FILES_OF_TASK: Final = SELECT_MIRROR_FILES + " WHERE task_id = ? ORDER BY position"
INSERT_MIRROR_FILE: Final = (
    "INSERT INTO mirror_files (task_id, position, source_url, key, status, created_at, "
    "updated_at, sha256, bytes, content_type, error, attempts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_MIRROR_FILE: Final = (
    "UPDATE mirror_files SET status = ?, updated_at = ?, sha256 = ?, bytes = ?, "
    "content_type = ?, error = ?, attempts = ? WHERE task_id = ? AND position = ?"
)
INSERT_MIRROR_HOLD: Final = (
    "INSERT INTO mirror_holds (task_id, event_id, type, created_at, body) VALUES (?, ?, ?, ?, ?)"
)
SELECT_MIRROR_HOLDS: Final = (
    "SELECT event_id, task_id, type, created_at, body FROM mirror_holds "
    "ORDER BY created_at, task_id"
)
DELETE_MIRROR_HOLD: Final = "DELETE FROM mirror_holds WHERE task_id = ?"


# -- deliveries and attempts -----------------------------------------------------------------------
SELECT_DELIVERIES: Final = (
    "SELECT delivery_id, event_id, task_id, event_type, endpoint, webhook_id, status, "
    "created_at, updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, "
    "last_error FROM deliveries"
)
DELIVERY_BY_ID: Final = SELECT_DELIVERIES + " WHERE delivery_id = ?"
DELIVERY_EXISTS: Final = "SELECT 1 FROM deliveries WHERE delivery_id = ?"
INSERT_DELIVERY: Final = (
    "INSERT INTO deliveries (event_id, task_id, event_type, endpoint, webhook_id, status, "
    "created_at, updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, "
    "last_error, delivery_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# What an attempt changes. A delivery's identity (event, task, endpoint, webhook id, creation
# time, url) is fixed for its life; leaving those columns out of the SET spares SQLite the
# maintenance of the indexes on them, which halved the cost of recording an attempt.
UPDATE_DELIVERY_PROGRESS: Final = (
    "UPDATE deliveries SET status = ?, updated_at = ?, next_attempt_at = ?, attempts = ?, "
    "schedule_pos = ?, last_status_code = ?, last_error = ? WHERE delivery_id = ?"
)
# A step of the wall clock: the due times of pending deliveries move with it.
SHIFT_NEXT_ATTEMPTS: Final = (
    "UPDATE deliveries SET next_attempt_at = next_attempt_at + ? "
    "WHERE status = 'pending' AND next_attempt_at IS NOT NULL"
)
# `Delivery.retrying`: pending after a failed attempt of its current round.
RETRYING_CONDITION: Final = "status = 'pending' AND schedule_pos > 0"
COUNT_RETRYING_DELIVERIES: Final = (
    "SELECT COUNT(*) FROM deliveries INDEXED BY deliveries_pending "
    "WHERE status = 'pending' AND schedule_pos > 0"
)
SELECT_ATTEMPTS: Final = (
    "SELECT delivery_id, number, started_at, duration_ms, outcome, status_code, error, "
    "webhook_timestamp FROM attempts WHERE delivery_id = ? ORDER BY id"
)
INSERT_ATTEMPT: Final = (
    "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, outcome, "
    "status_code, error, webhook_timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

# -- streaming and housekeeping --------------------------------------------------------------------
# Keyset batches, forced onto their indexes: without statistics the planner would rather sort
# every active row on each batch.
# The active tasks of one state, in (registered_at, task_id) order on tasks_by_state: the first
# batch, then each next one after the key of the last row (SqliteStore.active_tasks).
FIRST_ACTIVE_TASKS: Final = (
    SELECT_TASKS + " INDEXED BY tasks_by_state WHERE state = ? "
    "ORDER BY registered_at, task_id LIMIT ?"
)
NEXT_ACTIVE_TASKS: Final = (
    SELECT_TASKS + " INDEXED BY tasks_by_state WHERE state = ? "
    "AND (registered_at, task_id) > (?, ?) ORDER BY registered_at, task_id LIMIT ?"
)
# For SqliteStore._stream: "{op}" stands before the key parameter, the key is the first column.
STREAM_PENDING_DELIVERIES: Final = (
    SELECT_DELIVERIES + " INDEXED BY deliveries_pending WHERE status = 'pending' "
    "AND delivery_id {op} ? ORDER BY delivery_id LIMIT ?"
)
# Rows that belong to the tasks listed in the temporary table purge_ids (children first).
PURGE_CHILDREN: Final = (
    "DELETE FROM attempts WHERE delivery_id IN (SELECT delivery_id FROM deliveries"
    " WHERE task_id IN (SELECT task_id FROM purge_ids))",
    "DELETE FROM deliveries WHERE task_id IN (SELECT task_id FROM purge_ids)",
    "DELETE FROM events WHERE task_id IN (SELECT task_id FROM purge_ids)",
    "DELETE FROM state_changes WHERE task_id IN (SELECT task_id FROM purge_ids)",
    "DELETE FROM mirror_files WHERE task_id IN (SELECT task_id FROM purge_ids)",
)


def task_from_row(row: Sequence[Any]) -> Task:
    """A Task from a row of SELECT_TASKS."""
    (task_id, model, endpoints, callback_url, metadata, deadline_s, source, state) = row[:8]
    (registered_at, updated_at, upstream_state, polls, finished_at, last_error) = row[8:14]
    return Task(
        task_id=task_id,
        model=model,
        endpoints=None if endpoints is None else tuple(json.loads(endpoints)),
        callback_url=callback_url,
        metadata=json.loads(metadata),
        deadline_s=deadline_s,
        source=TaskSource(source),
        state=TaskState(state),
        registered_at=registered_at,
        updated_at=updated_at,
        upstream_state=upstream_state,
        polls=polls,
        finished_at=finished_at,
        last_error=last_error,
        deadline_extension_s=row[14],
    )


def task_state_params(task: Task) -> tuple[Any, ...]:
    """The parameters of UPDATE_TASK_STATE for `task`."""
    return (
        task.state.value,
        task.upstream_state,
        task.updated_at,
        task.polls,
        task.finished_at,
        task.last_error,
        task.task_id,
    )


def state_change_from_row(row: Sequence[Any]) -> StateChange:
    """A StateChange from a row of SELECT_STATE_CHANGES."""
    task_id, from_state, to_state, at, reason, upstream_state = row
    return StateChange(
        task_id, TaskState(from_state), TaskState(to_state), at, reason, upstream_state
    )


def event_from_row(row: Sequence[Any]) -> Event:
    """An Event from a row of SELECT_EVENTS."""
    return Event(row[0], row[1], EventType(row[2]), row[3], bytes(row[4]))


def event_params(event: Event) -> tuple[Any, ...]:
    """The parameters of INSERT_EVENT for `event`."""
    return (event.event_id, event.task_id, event.type.value, event.created_at, event.body)


def mirror_file_from_row(row: Sequence[Any]) -> MirrorFile:
    """A MirrorFile from a row of SELECT_MIRROR_FILES."""
    (task_id, position, source_url, key, status, created_at, updated_at) = row[:7]
    (sha256, size, content_type, error, attempts) = row[7:]
    return MirrorFile(
        task_id=task_id,
        position=position,
        source_url=source_url,
        key=key,
        status=MirrorStatus(status),
        created_at=created_at,
        updated_at=updated_at,
        sha256=sha256,
        bytes=size,
        content_type=content_type,
        error=error,
        attempts=attempts,
    )


def mirror_file_params(f: MirrorFile) -> tuple[Any, ...]:
    """The parameters of INSERT_MIRROR_FILE for `f`."""
    return (
        f.task_id,
        f.position,
        f.source_url,
        f.key,
        f.status.value,
        f.created_at,
        f.updated_at,
        f.sha256,
        f.bytes,
        f.content_type,
        f.error,
        f.attempts,
    )


def mirror_progress_params(f: MirrorFile) -> tuple[Any, ...]:
    """The parameters of UPDATE_MIRROR_FILE for `f`."""
    return (
        f.status.value,
        f.updated_at,
        f.sha256,
        f.bytes,
        f.content_type,
        f.error,
        f.attempts,
        f.task_id,
        f.position,
    )


def hold_params(hold: MirrorHold) -> tuple[Any, ...]:
    """The parameters of INSERT_MIRROR_HOLD for `hold` (its event's columns, in that order)."""
    e = hold.event
    return (e.task_id, e.event_id, e.type.value, e.created_at, e.body)


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    """A Delivery from a row of SELECT_DELIVERIES."""
    (delivery_id, event_id, task_id, event_type, endpoint, webhook_id, status, created_at) = row[:8]
    (updated_at, next_attempt_at, url, attempts, schedule_pos, last_code, last_error) = row[8:]
    return Delivery(
        delivery_id=delivery_id,
        event_id=event_id,
        task_id=task_id,
        event_type=EventType(event_type),
        endpoint=endpoint,
        webhook_id=webhook_id,
        status=DeliveryStatus(status),
        created_at=created_at,
        updated_at=updated_at,
        next_attempt_at=next_attempt_at,
        url=url,
        attempts=attempts,
        schedule_pos=schedule_pos,
        last_status_code=last_code,
        last_error=last_error,
    )


def delivery_params(d: Delivery) -> tuple[Any, ...]:
    """The parameters of INSERT_DELIVERY for `d`."""
    return (
        d.event_id,
        d.task_id,
        d.event_type.value,
        d.endpoint,
        d.webhook_id,
        d.status.value,
        d.created_at,
        d.updated_at,
        d.next_attempt_at,
        d.url,
        d.attempts,
        d.schedule_pos,
        d.last_status_code,
        d.last_error,
        d.delivery_id,
    )


def delivery_progress_params(d: Delivery) -> tuple[Any, ...]:
    """The parameters of UPDATE_DELIVERY_PROGRESS for `d`."""
    return (
        d.status.value,
        d.updated_at,
        d.next_attempt_at,
        d.attempts,
        d.schedule_pos,
        d.last_status_code,
        d.last_error,
        d.delivery_id,
    )


def attempt_from_row(row: Sequence[Any]) -> Attempt:
    """An Attempt from a row of SELECT_ATTEMPTS."""
    return Attempt(row[0], row[1], row[2], row[3], AttemptOutcome(row[4]), row[5], row[6], row[7])


def attempt_params(a: Attempt) -> tuple[Any, ...]:
    """The parameters of INSERT_ATTEMPT for `a`."""
    return (
        a.delivery_id,
        a.number,
        a.started_at,
        a.duration_ms,
        a.outcome.value,
        a.status_code,
        a.error,
        a.webhook_timestamp,
    )
