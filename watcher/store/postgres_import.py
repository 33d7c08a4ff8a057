"""Bulk import into the PostgreSQL store (`apixo-watcher copy-store`): one batch of TaskRecords
(PostgresStore.import_task_records) or of learned durations (PostgresStore.import_durations) in
one transaction.

The transaction reads what the database already holds of the batch's records, lets the pure
`plan_task_records` (watcher/store/bulk.py) decide, and writes the result in one round trip.
Records keep every field as the source has it, event bodies byte for byte; only the surrogate
ids of state changes and attempts are the database's own (their order per task or delivery is
the source's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from psycopg import AsyncConnection

from watcher.models import MirrorHold, StateChange, Task
from watcher.store import postgres_rows as sql
from watcher.store.base import endpoints_json, metadata_json
from watcher.store.bulk import (
    DurationRecord,
    Held,
    HeldRecords,
    ImportResult,
    TaskRecords,
    TaskRecordsPlan,
    held_delivery,
    held_event,
    held_hold,
    held_mirror_file,
    held_task,
    mirror_file_key,
    plan_durations,
    plan_task_records,
)
from watcher.store.postgres_rows import nul_free
from watcher.store.sqlite_rows import (
    attempt_params,
    delivery_params,
    delivery_progress_params,
    event_params,
    hold_params,
    mirror_file_params,
    mirror_progress_params,
)

# pg_advisory_xact_lock key, the bytes "apixcopy": two copy-store runs at once take turns per
# batch, so neither inserts a state change or an attempt the other is inserting.
COPY_LOCK: Final = int.from_bytes(b"apixcopy", "big")

# Every column of a task, in the order of `task_params`.
_TASK_COLUMNS: Final = (
    "task_id, model, endpoints, callback_url, metadata, deadline_s, source, state, "
    "registered_at, updated_at, upstream_state, polls, finished_at, last_error, "
    "deadline_extension_s"
)
INSERT_TASK: Final = (
    f"INSERT INTO tasks ({_TASK_COLUMNS}) "  # noqa: S608 - constant column names
    "VALUES (%s, %s, %s::json, %s, %s::json, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# The whole record but its id (and the claim, which is the cluster's business).
UPDATE_TASK: Final = (
    "UPDATE tasks SET model = %s, endpoints = %s::json, callback_url = %s, metadata = %s::json, "
    "deadline_s = %s, source = %s, state = %s, registered_at = %s, updated_at = %s, "
    "upstream_state = %s, polls = %s, finished_at = %s, last_error = %s, "
    "deadline_extension_s = %s WHERE task_id = %s"
)
# What the database holds of a batch, in the argument order of bulk.held_*.
HELD_TASKS: Final = (
    "SELECT task_id, model, updated_at, polls, deadline_extension_s FROM tasks "
    "WHERE task_id = ANY(%s) "
    "ORDER BY task_id FOR UPDATE"
)
# Counted one id at a time: with `= ANY(...) GROUP BY`, a table not analyzed yet (one being
# filled by this very copy) got a sequential scan per batch, and the copy slowed quadratically.
STATE_CHANGE_COUNTS: Final = (
    "SELECT t.id, (SELECT count(*) FROM state_changes AS s "
    'WHERE s.task_id = t.id COLLATE "C") FROM unnest(%s::text[]) AS t (id)'
)
HELD_EVENTS: Final = (
    "SELECT event_id, task_id, type, created_at, encode(sha256(body), 'hex') FROM events "
    "WHERE event_id = ANY(%s)"
)
HELD_DELIVERIES: Final = (
    "SELECT delivery_id, event_id, task_id, event_type, endpoint, webhook_id, url, created_at, "
    "updated_at, attempts FROM deliveries WHERE delivery_id = ANY(%s) "
    "ORDER BY delivery_id FOR UPDATE"
)
ATTEMPT_COUNTS: Final = (
    "SELECT t.id, (SELECT count(*) FROM attempts AS a "
    'WHERE a.delivery_id = t.id COLLATE "C") FROM unnest(%s::text[]) AS t (id)'
)
HELD_MIRROR_HOLDS: Final = (
    "SELECT task_id, event_id, type, created_at, encode(sha256(body), 'hex') FROM mirror_holds "
    "WHERE task_id = ANY(%s) ORDER BY task_id FOR UPDATE"
)
HELD_MIRROR_FILES: Final = (
    "SELECT task_id, position, source_url, key, created_at, updated_at, attempts "
    "FROM mirror_files WHERE task_id = ANY(%s) ORDER BY task_id, position FOR UPDATE"
)
# How many of each of a batch's durations the database holds (a sample is its values).
HELD_DURATIONS: Final = (
    "SELECT d.model, d.duration_s, d.finished_at, count(*) FROM task_durations AS d "
    "JOIN (SELECT DISTINCT * FROM unnest(%s::text[], %s::float8[], %s::float8[])) "
    "AS s (model, duration_s, finished_at) "
    'ON d.model = s.model COLLATE "C" AND d.duration_s = s.duration_s '
    "AND d.finished_at = s.finished_at GROUP BY 1, 2, 3"
)

# The columns each table's import writes (tests/integration/store/test_copy.py checks that
# they are every column of the schema but the database's own, so a new one is not forgotten).
WRITTEN_COLUMNS: Final = {
    "tasks": _TASK_COLUMNS,
    "state_changes": "task_id, from_state, to_state, at, reason, upstream_state",
    "events": "event_id, task_id, type, created_at, body",
    "deliveries": (
        "delivery_id, event_id, task_id, event_type, endpoint, webhook_id, status, created_at, "
        "updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, last_error"
    ),
    "attempts": (
        "delivery_id, number, started_at, duration_ms, outcome, status_code, error, "
        "webhook_timestamp"
    ),
    "mirror_holds": "task_id, event_id, type, created_at, body",
    "mirror_files": (
        "task_id, position, source_url, key, status, created_at, updated_at, sha256, bytes, "
        "content_type, error, attempts"
    ),
    "task_durations": "model, duration_s, finished_at",
}


def task_params(task: Task) -> tuple[Any, ...]:
    """The parameters of INSERT_TASK: the whole task."""
    endpoints = endpoints_json(task.endpoints)
    return (
        task.task_id,
        task.model,
        endpoints,
        task.callback_url,
        metadata_json(task.metadata),
        task.deadline_s,
        task.source.value,
        task.state.value,
        task.registered_at,
        task.updated_at,
        task.upstream_state,
        task.polls,
        task.finished_at,
        task.last_error,
        task.deadline_extension_s,
    )


def _state_change_params(c: StateChange) -> tuple[Any, ...]:
    return (c.task_id, c.from_state.value, c.to_state.value, c.at, c.reason, c.upstream_state)


async def import_task_records(conn: AsyncConnection[Any], records: TaskRecords) -> ImportResult:
    """Write what the database lacks of `records` (the rules of watcher/store/bulk.py), on
    `conn` inside the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (COPY_LOCK,))
    plan = plan_task_records(records, await _held(conn, records))
    await _write(conn, plan)
    return plan.result


async def _held(conn: AsyncConnection[Any], records: TaskRecords) -> HeldRecords:
    task_ids = [t.task_id for t in records.tasks]
    delivery_ids = [d.delivery_id for d in records.deliveries]

    async def rows(query: str, ids: Sequence[str]) -> list[Any]:
        if not ids:
            return []
        cur = await conn.execute(query, (list(ids),))
        return await cur.fetchall()

    def held(found: list[Any], make: Any) -> dict[str, Held]:
        return {row[0]: make(*row[1:]) for row in found}

    tasks = held(await rows(HELD_TASKS, task_ids), held_task)
    deliveries = held(await rows(HELD_DELIVERIES, delivery_ids), held_delivery)
    # The held events too: one the database holds as an event was released there.
    event_ids = [e.event_id for e in (*records.events, *records.mirror_holds)]
    files = {
        mirror_file_key(task_id, position): held_mirror_file(*rest)
        for task_id, position, *rest in await rows(HELD_MIRROR_FILES, list(tasks))
    }
    # Histories are counted only where the database has the parent (the foreign keys): a first
    # copy counts nothing.
    return HeldRecords(
        tasks=tasks,
        state_change_counts=dict(await rows(STATE_CHANGE_COUNTS, list(tasks))),
        events=held(await rows(HELD_EVENTS, event_ids), held_event),
        deliveries=deliveries,
        attempt_counts=dict(await rows(ATTEMPT_COUNTS, list(deliveries))),
        mirror_holds=held(await rows(HELD_MIRROR_HOLDS, list(tasks)), held_hold),
        mirror_files=files,
    )


async def _write(conn: AsyncConnection[Any], plan: TaskRecordsPlan) -> None:
    # Parents first (the foreign keys), each list in the source's order, one round trip.
    writes: list[tuple[str, list[tuple[Any, ...]]]] = [
        (INSERT_TASK, [task_params(t) for t in plan.new_tasks]),
        (UPDATE_TASK, [(*task_params(t)[1:], t.task_id) for t in plan.newer_tasks]),
        (sql.INSERT_STATE_CHANGE, [_state_change_params(c) for c in plan.new_state_changes]),
        (sql.INSERT_EVENT, [event_params(e) for e in plan.new_events]),
        (sql.INSERT_DELIVERY, [delivery_params(d) for d in plan.new_deliveries]),
        (
            sql.UPDATE_DELIVERY_PROGRESS,
            [delivery_progress_params(d) for d in plan.newer_deliveries],
        ),
        (sql.INSERT_ATTEMPT, [attempt_params(a) for a in plan.new_attempts]),
        (sql.DELETE_MIRROR_HOLD, [(task_id,) for task_id in plan.released_holds]),
        (sql.INSERT_MIRROR_HOLD, [hold_params(MirrorHold(e, ())) for e in plan.new_holds]),
        (sql.INSERT_MIRROR_FILE, [mirror_file_params(f) for f in plan.new_mirror_files]),
        (sql.UPDATE_MIRROR_FILE, [mirror_progress_params(f) for f in plan.newer_mirror_files]),
    ]
    async with conn.pipeline():
        cur = conn.cursor()
        for statement, params in writes:
            if params:
                await cur.executemany(statement, [nul_free(p) for p in params])


async def import_durations(
    conn: AsyncConnection[Any], rows: Sequence[DurationRecord]
) -> ImportResult:
    """Append the learned durations of `rows` the database lacks (bulk.plan_durations), on
    `conn` inside the caller's transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (COPY_LOCK,))
    cur = await conn.execute(
        HELD_DURATIONS,
        tuple([r.sample[i] for r in rows] for i in range(3)),
    )
    held = {(m, d, at): n for m, d, at, n in await cur.fetchall()}
    fresh, result = plan_durations(rows, held)
    if fresh:
        await conn.cursor().executemany(sql.INSERT_DURATION, [nul_free(r) for r in fresh])
    return result
