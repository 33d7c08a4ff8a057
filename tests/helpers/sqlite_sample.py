"""A SQLite store with one of everything copy-store moves, made through the store's own API:
finished and active tasks, a history, events (two of one task in the same instant), delivered,
failed, retrying and callback deliveries with their attempts, a success waiting for its mirror
(its held event and files, one copied) and learned polling durations (one sample twice)."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from watcher.models import (
    CALLBACK_ENDPOINT,
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    MirrorFile,
    MirrorHold,
    MirrorStatus,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.sqlite import SqliteStore

T0 = 1_700_000_000.25
# Each table's rows as copy-store must reproduce them: every column but the surrogate ids,
# in a stable order (state changes and attempts in their order per task / delivery).
DUMP_QUERIES = {
    "tasks": "SELECT task_id, model, endpoints, callback_url, metadata, deadline_s, source, "
    "state, registered_at, updated_at, upstream_state, polls, finished_at, last_error, "
    "deadline_extension_s FROM tasks ORDER BY task_id",
    "state_changes": "SELECT task_id, from_state, to_state, at, reason, upstream_state "
    "FROM state_changes ORDER BY task_id, id",
    "events": "SELECT event_id, task_id, type, created_at, body FROM events ORDER BY event_id",
    "deliveries": "SELECT delivery_id, event_id, task_id, event_type, endpoint, webhook_id, "
    "status, created_at, updated_at, next_attempt_at, url, attempts, schedule_pos, "
    "last_status_code, last_error FROM deliveries ORDER BY delivery_id",
    "attempts": "SELECT delivery_id, number, started_at, duration_ms, outcome, status_code, "
    "error, webhook_timestamp FROM attempts ORDER BY delivery_id, id",
    "mirror_holds": "SELECT task_id, event_id, type, created_at, body FROM mirror_holds "
    "ORDER BY task_id",
    "mirror_files": "SELECT task_id, position, source_url, key, status, created_at, "
    "updated_at, sha256, bytes, content_type, error, attempts FROM mirror_files "
    "ORDER BY task_id, position",
    "task_durations": "SELECT model, duration_s, finished_at FROM task_durations "
    "ORDER BY model, id",
}


def dump_sqlite(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {
            table: [tuple(bytes(v) if isinstance(v, bytes) else v for v in row) for row in rows]
            for table, rows in ((t, conn.execute(q).fetchall()) for t, q in DUMP_QUERIES.items())
        }
    finally:
        conn.close()


def event(task_id: str, type_: EventType, at: float, n: int) -> Event:
    # Bytes a re-encoding would change: key order, spacing, a non-ASCII character, an escape.
    body = (
        f'{{"type":"{type_.value}", "timestamp":"2023-11-14T22:13:20Z",'
        f' "data":{{"task_id":"{task_id}","note":"ünï\\u00e9","n":{n}}}}}'
    ).encode()
    return Event(f"evt_{task_id}_{n}", task_id, type_, at, body)


def delivery(ev: Event, endpoint: str, *, url: str | None = None) -> Delivery:
    return Delivery(
        delivery_id=f"dlv_{ev.event_id}_{endpoint.strip('@')}",
        event_id=ev.event_id,
        task_id=ev.task_id,
        event_type=ev.type,
        endpoint=endpoint,
        webhook_id=f"msg_{ev.event_id}_{endpoint.strip('@')}",
        status=DeliveryStatus.PENDING,
        created_at=ev.created_at,
        updated_at=ev.created_at,
        next_attempt_at=ev.created_at,
        url=url,
    )


def attempt(store: SqliteStore, d: Delivery, at: float, outcome: AttemptOutcome) -> Delivery:
    """Record one attempt on `d` as the deliverer would; the updated delivery."""
    code = {AttemptOutcome.SUCCEEDED: 200, AttemptOutcome.RETRY: 503, AttemptOutcome.FAILED: 500}
    status = {
        AttemptOutcome.SUCCEEDED: DeliveryStatus.SUCCEEDED,
        AttemptOutcome.RETRY: DeliveryStatus.PENDING,
        AttemptOutcome.FAILED: DeliveryStatus.FAILED,
    }[outcome]
    updated = dataclasses.replace(
        d,
        status=status,
        attempts=d.attempts + 1,
        schedule_pos=d.schedule_pos + 1,
        next_attempt_at=at + 30.5 if status is DeliveryStatus.PENDING else None,
        last_status_code=code[outcome],
        last_error=None if outcome is AttemptOutcome.SUCCEEDED else f"HTTP {code[outcome]}",
        updated_at=at,
    )
    store.record_attempt(
        Attempt(
            d.delivery_id,
            d.attempts + 1,
            at,
            12.75,
            outcome,
            code[outcome],
            None if outcome is AttemptOutcome.SUCCEEDED else f"HTTP {code[outcome]}",
            int(at),
        ),
        updated,
    )
    return updated


def build_sample_store(path: Path, *, prefix: str = "t") -> SqliteStore:
    """Fill the store at `path` (created) and return it open. Task ids start with `prefix`."""
    store = SqliteStore(path)
    done, pending, busy, gone = (f"{prefix}-{n}" for n in ("done", "pending", "busy", "gone"))
    store.add_tasks(
        [
            TaskSpec(
                done,
                "nano-banana",
                endpoints=("app", "audit"),
                metadata={"user": "ünï", "n": 1.5, "nested": {"k": [1, None, True]}},
                deadline_s=600.0,
            ),
            TaskSpec(pending, "flux-2", metadata={"order": 7}),
        ],
        source=TaskSource.API,
        now=T0,
    )
    store.add_task(
        TaskSpec(busy, "sora-2", callback_url="https://hooks.example.com/in?x=1"),
        source=TaskSource.FILE,
        now=T0 + 1.5,
    )
    store.add_task(TaskSpec(gone, "nano-banana"), source=TaskSource.API, now=T0 + 2)

    # done: processing, then succeeded; two events in one instant; app delivered on the second
    # try, audit failed for good after three.
    proc = event(done, EventType.PROCESSING, T0 + 10, 9)  # recorded first, sorts last
    store.apply_transition(
        Transition(
            done,
            TaskState.PENDING,
            TaskState.PROCESSING,
            T0 + 10,
            "upstream state processing",
            "processing",
            polls=3,
            event=proc,
        )
    )
    ok = event(done, EventType.SUCCEEDED, T0 + 10, 2)  # the same instant: order by insertion
    app, audit = delivery(ok, "app"), delivery(ok, "audit")
    store.apply_transition(
        Transition(
            done,
            TaskState.PROCESSING,
            TaskState.SUCCEEDED,
            T0 + 10,
            "upstream state success",
            "success",
            polls=4,
            event=ok,
            deliveries=(app, audit),
        )
    )
    app = attempt(store, app, T0 + 11, AttemptOutcome.RETRY)
    attempt(store, app, T0 + 12, AttemptOutcome.SUCCEEDED)
    for i, outcome in enumerate([AttemptOutcome.RETRY, AttemptOutcome.RETRY]):
        audit = attempt(store, audit, T0 + 11 + i, outcome)
    attempt(store, audit, T0 + 14, AttemptOutcome.FAILED)

    # pending: polled, with the last upstream problem kept; a credential pause extended the
    # deadlines of the tasks then active.
    store.record_polls({pending: 5}, errors={pending: "HTTP 502 from upstream"})
    store.extend_deadlines(since=T0 + 25, until=T0 + 85.5)

    # busy: processing, its callback delivery retrying (pending, due later).
    started = event(busy, EventType.PROCESSING, T0 + 20, 1)
    cb = delivery(started, CALLBACK_ENDPOINT, url="https://hooks.example.com/in?x=1")
    store.apply_transition(
        Transition(
            busy,
            TaskState.PENDING,
            TaskState.PROCESSING,
            T0 + 20,
            "upstream state processing",
            "processing",
            polls=2,
            event=started,
            deliveries=(cb,),
        )
    )
    attempt(store, cb, T0 + 21, AttemptOutcome.RETRY)

    store.cancel_task(gone, now=T0 + 30)

    # held: succeeded with mirroring on; its webhook waits for two files, one copied.
    held = f"{prefix}-held"
    store.add_task(TaskSpec(held, "sora-2", endpoints=("app",)), source=TaskSource.API, now=T0 + 3)
    files = tuple(
        MirrorFile(
            held,
            n,
            f"https://cdn.example.com/{held}/{n}.mp4?sig=x",
            f"{held}/{n}.mp4",
            MirrorStatus.PENDING,
            T0 + 35,
            T0 + 35,
        )
        for n in range(2)
    )
    store.apply_transition(
        Transition(
            held,
            TaskState.PENDING,
            TaskState.SUCCEEDED,
            T0 + 35,
            "upstream state success",
            "success",
            polls=6,
            mirror=MirrorHold(event(held, EventType.SUCCEEDED, T0 + 35, 1), files),
        )
    )
    store.update_mirror_files(
        [
            dataclasses.replace(
                files[0],
                status=MirrorStatus.DONE,
                updated_at=T0 + 36.5,
                sha256="ab" * 32,
                bytes=1234,
                content_type="video/mp4",
                attempts=1,
            )
        ]
    )

    # Learned durations: two models, one sample recorded twice (equal values are two samples).
    store.record_durations(
        [("sora-2", 95.5, T0 + 5), ("nano-banana", 10.25, T0 + 10), ("sora-2", 95.5, T0 + 5)]
    )
    store.record_durations([("sora-2", 120.0, T0 + 35)])
    return store
