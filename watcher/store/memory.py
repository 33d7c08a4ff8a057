"""An in-memory Store with the same semantics as SqliteStore, for fast unit tests.

It passes the same contract suite (tests/unit/test_store_contract.py). Records go in and come
out as copies, so a caller mutating a returned Task never changes the store, and metadata makes
the same JSON round trip as in SQLite. Every method validates everything before it changes
anything, which gives it the all-or-nothing behaviour of a transaction.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from watcher.errors import DeliveryNotFound, StoreError, TaskConflict, TaskFinished, TaskNotFound
from watcher.models import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    MirrorFile,
    MirrorHold,
    StateChange,
    Task,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.base import (
    DurationSample,
    SpecColumns,
    apply_transition_to,
    metadata_json,
    new_task,
)
from watcher.store.paging import clamp_limit, decode_cursor, encode_cursor

R = TypeVar("R")


def _copy_task(task: Task) -> Task:
    return dataclasses.replace(task, metadata=json.loads(metadata_json(task.metadata)))


def _page(
    rows: Iterable[R], key: Callable[[R], tuple[float, str]], limit: int, cursor: str | None
) -> tuple[list[R], str | None]:
    """Newest first by `key`, after the cursor's key, with the next cursor if more remain."""
    ordered = sorted(rows, key=key, reverse=True)
    if cursor is not None:
        after = decode_cursor(cursor)
        ordered = [row for row in ordered if key(row) < after]
    limit = clamp_limit(limit)
    page = ordered[:limit]
    if len(ordered) <= limit:
        return page, None
    return page, encode_cursor(*key(page[-1]))


class MemoryStore:
    """The Store in dicts. Not durable; single-threaded like the daemon."""

    def __init__(self) -> None:
        self._closed = False
        self._tasks: dict[str, Task] = {}
        self._changes: dict[str, list[StateChange]] = {}
        self._events: dict[str, Event] = {}  # insertion order is the tie-break of equal times
        self._deliveries: dict[str, Delivery] = {}
        self._attempts: dict[str, list[Attempt]] = {}
        self._holds: dict[str, Event] = {}  # task_id -> the held event
        self._mirror_files: dict[tuple[str, int], MirrorFile] = {}
        self._durations: list[DurationSample] = []  # in recording order

    def _live(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _task(self, task_id: str) -> Task:
        self._live()
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task

    def _delivery(self, delivery_id: str) -> Delivery:
        self._live()
        delivery = self._deliveries.get(delivery_id)
        if delivery is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")
        return delivery

    # -- tasks ---------------------------------------------------------------------------------
    def add_task(self, spec: TaskSpec, *, source: TaskSource, now: float) -> tuple[Task, bool]:
        """Register a task. See Store.add_task."""
        return self.add_tasks([spec], source=source, now=now)[0]

    def add_tasks(
        self, specs: list[TaskSpec], *, source: TaskSource, now: float
    ) -> list[tuple[Task, bool]]:
        """Register many tasks; a conflict adds none of them."""
        self._live()
        staged: dict[str, Task] = {}
        results: list[tuple[Task, bool]] = []
        for spec in specs:
            existing = staged.get(spec.task_id) or self._tasks.get(spec.task_id)
            if existing is not None:
                if existing.model != spec.model:
                    raise TaskConflict(
                        f"task {spec.task_id} is already registered with model "
                        f"{existing.model!r}, not {spec.model!r}"
                    )
                results.append((existing, False))
                continue
            task = new_task(
                spec, source=source, now=now, metadata=json.loads(metadata_json(spec.metadata))
            )
            staged[task.task_id] = task
            results.append((task, True))
        self._tasks.update(staged)
        for task_id in staged:
            self._changes[task_id] = []
        return [(_copy_task(task), created) for task, created in results]

    def add_tasks_bulk(self, batch: SpecColumns, *, source: TaskSource, now: float) -> list[bool]:
        """`add_tasks`, answering only which specs created their task."""
        specs = [batch.spec(i) for i in range(len(batch))]
        return [created for _task, created in self.add_tasks(specs, source=source, now=now)]

    def get_task(self, task_id: str) -> Task:
        """The task, or TaskNotFound."""
        return _copy_task(self._task(task_id))

    def list_tasks(
        self, *, state: TaskState | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        """Tasks newest registration first (ties by task_id), optionally of one state."""
        self._live()
        rows = (t for t in self._tasks.values() if state is None or t.state == state)
        page, next_cursor = _page(rows, lambda t: (t.registered_at, t.task_id), limit, cursor)
        return [_copy_task(t) for t in page], next_cursor

    def active_tasks(self) -> Iterator[Task]:
        """Every PENDING or PROCESSING task."""
        self._live()
        active = [_copy_task(t) for t in self._tasks.values() if not t.state.terminal]
        return iter(active)

    def count_tasks(self) -> Mapping[TaskState, int]:
        """How many tasks are in each state (states with none are absent)."""
        self._live()
        counts: dict[TaskState, int] = {}
        for task in self._tasks.values():
            counts[task.state] = counts.get(task.state, 0) + 1
        return counts

    def apply_transition(self, transition: Transition) -> Task:
        """Commit a state change with its event and deliveries, all or nothing.
        See SqliteStore.apply_transition."""
        t = transition
        stored = self._task(t.task_id)
        if stored.state.terminal:
            raise TaskFinished(f"task {t.task_id} has already finished ({stored.state.value})")
        self._check_outbox(t.event, t.deliveries)
        if t.mirror is not None:
            self._check_hold(t.mirror)
        task = stored
        from_state = apply_transition_to(task, t)
        if t.to_state != from_state:
            self._changes[t.task_id].append(
                StateChange(t.task_id, from_state, t.to_state, t.at, t.reason, t.upstream_state)
            )
        if t.event is not None:
            self._events[t.event.event_id] = t.event
        for delivery in t.deliveries:
            self._deliveries[delivery.delivery_id] = dataclasses.replace(delivery)
            self._attempts[delivery.delivery_id] = []
        if t.mirror is not None:
            self._holds[t.task_id] = t.mirror.event
            for f in t.mirror.files:
                self._mirror_files[(f.task_id, f.position)] = dataclasses.replace(f)
        return _copy_task(task)

    def _check_outbox(self, event: Event | None, deliveries: Sequence[Delivery]) -> None:
        # The constraints SQLite enforces (unique ids, foreign keys), checked before any change.
        events = set(self._events)
        if event is not None:
            if event.event_id in events:
                raise StoreError(f"event {event.event_id} already exists")
            if event.task_id not in self._tasks:
                raise StoreError(f"event {event.event_id} names unknown task {event.task_id}")
            events.add(event.event_id)
        seen: set[str] = set()
        for d in deliveries:
            if d.delivery_id in self._deliveries or d.delivery_id in seen:
                raise StoreError(f"delivery {d.delivery_id} already exists")
            if d.event_id not in events or d.task_id not in self._tasks:
                raise StoreError(f"delivery {d.delivery_id} names an unknown event or task")
            seen.add(d.delivery_id)

    def cancel_task(self, task_id: str, *, now: float) -> Task:
        """Move an active task to CANCELLED (no event). TaskFinished if it is terminal."""
        task = self._task(task_id)
        if task.state.terminal:
            raise TaskFinished(f"task {task_id} has already finished ({task.state.value})")
        self._changes[task_id].append(
            StateChange(task_id, task.state, TaskState.CANCELLED, now, "cancelled", None)
        )
        task.state = TaskState.CANCELLED
        task.updated_at = now
        task.finished_at = now
        task.last_error = None
        return _copy_task(task)

    def record_polls(self, polls: Mapping[str, int], *, errors: Mapping[str, str | None]) -> None:
        """Persist poll counts (any task) and last errors (active tasks only)."""
        self._live()
        for task_id, count in polls.items():
            if task_id in self._tasks:
                self._tasks[task_id].polls = count
        for task_id, error in errors.items():
            task = self._tasks.get(task_id)
            if task is not None and not task.state.terminal:
                task.last_error = error

    def extend_deadlines(self, *, since: float, until: float) -> None:
        """See SqliteStore.extend_deadlines."""
        self._live()
        for task in self._tasks.values():
            if not task.state.terminal and task.registered_at < until:
                task.deadline_extension_s += max(0.0, until - max(since, task.registered_at))

    def shift_future_times(self, step_s: float) -> None:
        """See SqliteStore.shift_future_times."""
        self._live()
        for task in self._tasks.values():
            if not task.state.terminal:
                task.deadline_extension_s += step_s
        for delivery in self._deliveries.values():
            if delivery.status is DeliveryStatus.PENDING and delivery.next_attempt_at is not None:
                delivery.next_attempt_at += step_s

    def state_changes(self, task_id: str) -> list[StateChange]:
        """The task's state changes, oldest first."""
        self._task(task_id)
        return list(self._changes[task_id])

    # -- events --------------------------------------------------------------------------------
    def get_event(self, event_id: str) -> Event:
        """The event; StoreError if it is missing."""
        self._live()
        event = self._events.get(event_id)
        if event is None:
            raise StoreError(f"event {event_id} not found")
        return event

    def event_bodies(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of the known events among `event_ids`."""
        self._live()
        return {i: self._events[i].body for i in event_ids if i in self._events}

    def events_for_task(self, task_id: str) -> list[Event]:
        """The task's events, oldest first."""
        self._task(task_id)
        events = [e for e in self._events.values() if e.task_id == task_id]
        return sorted(events, key=lambda e: e.created_at)  # stable: insertion breaks ties

    # -- deliveries ----------------------------------------------------------------------------
    def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery, or DeliveryNotFound."""
        return dataclasses.replace(self._delivery(delivery_id))

    def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        task_id: str | None = None,
        retrying: bool | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """Deliveries newest first (by created_at, ties by delivery_id), optionally filtered."""
        self._live()
        rows = (
            d
            for d in self._deliveries.values()
            if (status is None or d.status == status)
            and (task_id is None or d.task_id == task_id)
            and (retrying is None or d.retrying == retrying)
        )
        page, next_cursor = _page(rows, lambda d: (d.created_at, d.delivery_id), limit, cursor)
        return [dataclasses.replace(d) for d in page], next_cursor

    def pending_deliveries(self) -> Iterator[Delivery]:
        """Every PENDING delivery."""
        self._live()
        pending = [
            dataclasses.replace(d)
            for d in self._deliveries.values()
            if d.status == DeliveryStatus.PENDING
        ]
        return iter(pending)

    def count_deliveries(self) -> Mapping[DeliveryStatus, int]:
        """How many deliveries are in each status (statuses with none are absent)."""
        self._live()
        counts: dict[DeliveryStatus, int] = {}
        for delivery in self._deliveries.values():
            counts[delivery.status] = counts.get(delivery.status, 0) + 1
        return counts

    def count_retrying_deliveries(self) -> int:
        """How many deliveries are retrying (pending after a failed attempt of their round)."""
        self._live()
        return sum(1 for delivery in self._deliveries.values() if delivery.retrying)

    def record_attempt(self, attempt: Attempt, delivery: Delivery) -> None:
        """Add the attempt and replace the stored delivery with `delivery`."""
        self.record_attempts(((attempt, delivery),))

    def record_attempts(self, batch: Sequence[tuple[Attempt, Delivery]]) -> None:
        """`record_attempt` for every pair; all are checked before any is applied."""
        self._live()
        for attempt, delivery in batch:
            if attempt.delivery_id != delivery.delivery_id:
                raise StoreError(
                    f"attempt of delivery {attempt.delivery_id} recorded with "
                    f"{delivery.delivery_id}"
                )
            self._delivery(delivery.delivery_id)
            if delivery.event_id not in self._events or delivery.task_id not in self._tasks:
                raise StoreError(f"delivery {delivery.delivery_id} names an unknown event or task")
        for attempt, delivery in batch:
            self._deliveries[delivery.delivery_id] = dataclasses.replace(delivery)
            self._attempts[delivery.delivery_id].append(attempt)

    def attempts(self, delivery_id: str) -> list[Attempt]:
        """The delivery's attempts, oldest first."""
        self._delivery(delivery_id)
        return list(self._attempts[delivery_id])

    def requeue_delivery(self, delivery_id: str, *, now: float) -> Delivery:
        """Make the delivery PENDING again, due now, schedule_pos 0, from any status."""
        delivery = self._delivery(delivery_id)
        delivery.status = DeliveryStatus.PENDING
        delivery.next_attempt_at = now
        delivery.schedule_pos = 0
        delivery.updated_at = now
        return dataclasses.replace(delivery)

    # -- result mirroring ----------------------------------------------------------------------
    def _check_hold(self, hold: MirrorHold) -> None:
        task_id = hold.event.task_id
        if task_id in self._holds:
            raise StoreError(f"task {task_id} already holds a mirror")
        positions = [f.position for f in hold.files]
        if len(set(positions)) != len(positions) or any(
            (f.task_id, f.position) in self._mirror_files or f.task_id != task_id
            for f in hold.files
        ):
            raise StoreError(f"mirror files of task {task_id} already exist")

    def mirror_files(self, task_id: str) -> list[MirrorFile]:
        """See SqliteStore.mirror_files."""
        self._live()
        files = [f for (t, _), f in self._mirror_files.items() if t == task_id]
        return [dataclasses.replace(f) for f in sorted(files, key=lambda f: f.position)]

    def update_mirror_files(self, files: Sequence[MirrorFile]) -> None:
        """See SqliteStore.update_mirror_files."""
        self._live()
        updated = {}
        for file in files:
            stored = self._mirror_files.get((file.task_id, file.position))
            if stored is None:
                raise StoreError(f"mirror file {file.task_id}#{file.position} not found")
            # The source, key and creation time are fixed when the file is recorded.
            updated[(file.task_id, file.position)] = dataclasses.replace(
                file, source_url=stored.source_url, key=stored.key, created_at=stored.created_at
            )
        self._mirror_files.update(updated)

    def held_mirrors(self) -> list[MirrorHold]:
        """See SqliteStore.held_mirrors."""
        self._live()
        holds = sorted(self._holds.values(), key=lambda e: (e.created_at, e.task_id))
        return [MirrorHold(e, tuple(self.mirror_files(e.task_id))) for e in holds]

    def release_mirror(self, task_id: str, event: Event, deliveries: Sequence[Delivery]) -> bool:
        """See SqliteStore.release_mirror."""
        self._live()
        if task_id not in self._holds:
            return False
        self._check_outbox(event, deliveries)
        del self._holds[task_id]
        self._events[event.event_id] = event
        for delivery in deliveries:
            self._deliveries[delivery.delivery_id] = dataclasses.replace(delivery)
            self._attempts[delivery.delivery_id] = []
        return True

    # -- learned durations (adaptive polling) ---------------------------------------------------
    def record_durations(self, samples: Sequence[DurationSample]) -> None:
        """See SqliteStore.record_durations."""
        self._live()
        self._durations.extend((m, float(d), float(at)) for m, d, at in samples)

    def recent_durations(self, per_model: int) -> dict[str, list[float]]:
        """See SqliteStore.recent_durations."""
        self._live()
        out: dict[str, list[float]] = {}
        for model, duration, _ in self._durations:
            out.setdefault(model, []).append(duration)
        keep = max(0, per_model)
        return {m: d[-keep:] for m, d in sorted(out.items()) if keep}

    def trim_durations(self, keep_per_model: int) -> int:
        """See SqliteStore.trim_durations."""
        self._live()
        keep = max(0, keep_per_model)
        seen: dict[str, int] = {}
        kept: list[DurationSample] = []
        for sample in reversed(self._durations):
            seen[sample[0]] = seen.get(sample[0], 0) + 1
            if seen[sample[0]] <= keep:
                kept.append(sample)
        deleted = len(self._durations) - len(kept)
        self._durations = kept[::-1]
        return deleted

    # -- housekeeping --------------------------------------------------------------------------
    def purge_finished(self, *, before: float, limit: int = 1000) -> int:
        """See SqliteStore.purge_finished."""
        self._live()
        held = {d.task_id for d in self._deliveries.values() if d.status is DeliveryStatus.PENDING}
        held |= set(self._holds)
        finished = sorted(
            (t.finished_at, t.task_id)
            for t in self._tasks.values()
            if t.finished_at is not None and t.finished_at < before and t.task_id not in held
        )
        doomed = {task_id for _, task_id in finished[: clamp_limit(limit)]}
        for delivery_id in [
            d.delivery_id for d in self._deliveries.values() if d.task_id in doomed
        ]:
            del self._deliveries[delivery_id]
            self._attempts.pop(delivery_id, None)
        for event_id in [e.event_id for e in self._events.values() if e.task_id in doomed]:
            del self._events[event_id]
        for key in [k for k in self._mirror_files if k[0] in doomed]:
            del self._mirror_files[key]
        for task_id in doomed:
            del self._tasks[task_id]
            self._changes.pop(task_id, None)
        return len(doomed)

    def check_writable(self) -> None:
        """Always writable while open."""
        self._live()

    def close(self) -> None:
        """Refuse further calls; idempotent."""
        self._closed = True
