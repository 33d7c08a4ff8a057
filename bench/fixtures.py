"""Pre-built stores: the fastest honest way to give the daemon 100k tasks or a 20k backlog is
to write them with the daemon's own store API before it starts, exactly as if an earlier run
had registered them."""

from __future__ import annotations

import os
import time
from pathlib import Path

from watcher.delivery.events import build_event
from watcher.ids import new_id
from watcher.models import (
    Delivery,
    DeliveryStatus,
    EventOutcome,
    EventType,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.sqlite import SqliteStore

MODEL = "nano-banana"


def build_tasks(
    path: Path, count: int, *, prefix: str = "p", registered_at: float, spread_s: float = 0.0
) -> None:
    """A store holding `count` pending tasks `{prefix}-{i}`; with `spread_s`, task i is
    registered at `registered_at + spread_s * i / count`: each at its own instant, so their
    first polls (one `initial_delay` later) are spread evenly, not in clumps."""
    store = SqliteStore(path)
    try:
        if spread_s > 0:
            for i in range(count):
                spec = TaskSpec(task_id=f"{prefix}-{i}", model=MODEL, metadata={"order_id": i})
                store.add_tasks(
                    [spec], source=TaskSource.FILE, now=registered_at + spread_s * i / count
                )
            return
        for start in range(0, count, 20_000):
            specs = [
                TaskSpec(task_id=f"{prefix}-{i}", model=MODEL, metadata={"order_id": i})
                for i in range(start, min(count, start + 20_000))
            ]
            store.add_tasks(specs, source=TaskSource.FILE, now=registered_at)
    finally:
        store.close()


def build_backlog(path: Path, count: int, *, endpoint: str) -> int:
    """A store holding `count` succeeded tasks, each with one pending delivery to `endpoint`
    due now; returns the size of an event body in bytes."""
    store = SqliteStore(path)
    now = time.time()
    body_size = 0
    try:
        tasks = store.add_tasks(
            [
                TaskSpec(task_id=f"d-{i}", model=MODEL, metadata={"order_id": i})
                for i in range(count)
            ],
            source=TaskSource.FILE,
            now=now - 10,
        )
        for task, _ in tasks:
            upstream = {
                "taskId": task.task_id,
                "state": "success",
                "resultJson": '{"resultUrls":["https://cdn.example.invalid/a.jpg"]}',
                "costTime": 1000,
                "createTime": 1704067200000,
                "completeTime": 1704067201000,
            }
            outcome = EventOutcome(
                type=EventType.SUCCEEDED,
                upstream=upstream,
                result={"resultUrls": ["https://cdn.example.invalid/a.jpg"]},
                result_urls=("https://cdn.example.invalid/a.jpg",),
            )
            event = build_event(outcome, task, now=now)
            body_size = len(event.body)
            delivery = Delivery(
                delivery_id=new_id("dlv_", now=now),
                event_id=event.event_id,
                task_id=task.task_id,
                event_type=event.type,
                endpoint=endpoint,
                webhook_id=new_id("msg_", now=now),
                status=DeliveryStatus.PENDING,
                created_at=now,
                updated_at=now,
                next_attempt_at=now,
            )
            store.apply_transition(
                Transition(
                    task_id=task.task_id,
                    from_state=TaskState.PENDING,
                    to_state=TaskState.SUCCEEDED,
                    at=now,
                    reason="upstream state success",
                    upstream_state="success",
                    polls=1,
                    event=event,
                    deliveries=(delivery,),
                )
            )
    finally:
        store.close()
    return body_size


def write_tasks_file(path: Path, count: int, *, prefix: str = "f") -> None:
    """A tasks file of `count` entries `{prefix}-{i}`, each with a model and metadata, written
    as people write it (block style), dated a minute back so the daemon need not wait for it to
    settle."""
    with open(path, "w", encoding="utf-8") as out:
        out.write("tasks:\n")
        for i in range(count):
            out.write(
                f"  - task_id: {prefix}-{i:06d}\n    model: {MODEL}\n"
                f"    metadata: {{order_id: {i}, customer: c{i % 997}}}\n"
            )
    settle(path)


def settle(path: Path) -> None:
    past = time.time() - 60
    os.utime(path, (past, past))
