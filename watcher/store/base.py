"""The store interfaces: everything the daemon keeps durably.

`Store` is synchronous: `SqliteStore` (watcher/store/sqlite.py, the real one for one instance)
and `MemoryStore` (watcher/store/memory.py, for unit tests). SQLite calls are short and local,
and keeping them on the event loop keeps ordering simple (one writer, no thread hops).

`AsyncStore` has the same operations with the same semantics as coroutines, for a store whose
calls are network round trips that must not block the event loop: `PostgresStore`
(watcher/store/postgres.py). `AsyncAdapter` (watcher/store/adapter.py) turns any `Store` into
an `AsyncStore`, so one async contract suite (tests/unit/store/test_contract.py) runs on all
three stores.

Conventions:
- every `now`/`at` is Unix seconds as a float, passed in by the caller (no clock reads here);
- lists are newest first, with an opaque `cursor` string for the next page (None: no more);
- a method that names a missing task/delivery raises TaskNotFound/DeliveryNotFound;
- errors of the database are raised as StoreError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from watcher.errors import StoreError, TaskFinished
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

# How long one finished task took: (model, duration in seconds, when it finished: Unix seconds).
DurationSample: TypeAlias = tuple[str, float, float]


@dataclass(frozen=True, slots=True)
class SpecColumns:
    """Registrations as columns, row `i` being one spec, with their JSON already written as
    every store keeps it (`endpoints_json`, `metadata_json`).

    What a big batch (a tasks file) hands `add_tasks_bulk`: no `TaskSpec` per row, and the
    metadata's JSON text, which the tasks file's validation has written already, is not
    written again. `of` builds one from specs; `spec` gives a row back as a spec.
    """

    task_ids: Sequence[str]
    models: Sequence[str]
    endpoints: Sequence[str | None]  # endpoints_json of the spec's endpoints
    callback_urls: Sequence[str | None]
    metadata: Sequence[str]  # metadata_json of the spec's metadata
    deadlines_s: Sequence[float | None]

    @classmethod
    def of(cls, specs: Sequence[TaskSpec]) -> SpecColumns:
        """The columns of `specs`. StoreError if a metadata is not JSON-serialisable."""
        return cls(
            task_ids=[s.task_id for s in specs],
            models=[s.model for s in specs],
            endpoints=[endpoints_json(s.endpoints) for s in specs],
            callback_urls=[s.callback_url for s in specs],
            metadata=[metadata_json(s.metadata) for s in specs],
            deadlines_s=[s.deadline_s for s in specs],
        )

    def __len__(self) -> int:
        return len(self.task_ids)

    def spec(self, i: int) -> TaskSpec:
        """Row `i` as a spec (its metadata a fresh object read from the text)."""
        endpoints = self.endpoints[i]
        return TaskSpec(
            task_id=self.task_ids[i],
            model=self.models[i],
            endpoints=None if endpoints is None else tuple(json.loads(endpoints)),
            callback_url=self.callback_urls[i],
            metadata=json.loads(self.metadata[i]),
            deadline_s=self.deadlines_s[i],
        )


class Store(Protocol):
    """Durable tasks, state changes, events, deliveries and attempts."""

    # -- tasks ---------------------------------------------------------------------------------
    def add_task(self, spec: TaskSpec, *, source: TaskSource, now: float) -> tuple[Task, bool]:
        """Register a task; committed when this returns.

        Returns (task, created). A known task_id with the same model returns the stored task and
        False (nothing changes). A known task_id with another model raises TaskConflict.
        """
        ...

    def add_tasks(
        self, specs: list[TaskSpec], *, source: TaskSource, now: float
    ) -> list[tuple[Task, bool]]:
        """`add_task` for many, in one transaction. A conflicting spec raises TaskConflict
        and nothing of the batch is written."""
        ...

    def add_tasks_bulk(self, batch: SpecColumns, *, source: TaskSource, now: float) -> list[bool]:
        """`add_tasks` for the specs of `batch`, answering only whether each created its task
        (in the batch's order), for registrations that need no `Task` back (a big tasks file):
        the same rows are written (the batch's JSON texts as they are), the same conflicts
        raised, and a known id is left as it is."""
        ...

    def get_task(self, task_id: str) -> Task:
        """The task, or TaskNotFound."""
        ...

    def list_tasks(
        self, *, state: TaskState | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        """Tasks newest registration first, optionally of one state."""
        ...

    def active_tasks(self) -> Iterator[Task]:
        """Every task in PENDING or PROCESSING (for resuming after a restart), in any order."""
        ...

    def count_tasks(self) -> Mapping[TaskState, int]:
        """How many tasks are in each state (states with none may be absent)."""
        ...

    def apply_transition(self, transition: Transition) -> Task:
        """Commit a state change with its event and deliveries in one transaction (outbox).

        With `transition.mirror`, the held event and its files are committed instead (see
        `release_mirror`). Raises TaskNotFound; raises TaskFinished, writing nothing, if the
        stored state is already terminal (e.g. cancelled while a poll was in flight). Returns
        the new task.
        """
        ...

    def cancel_task(self, task_id: str, *, now: float) -> Task:
        """Move an active task to CANCELLED (no event). TaskFinished if it is terminal."""
        ...

    def record_polls(self, polls: Mapping[str, int], *, errors: Mapping[str, str | None]) -> None:
        """Persist live poll counts and last errors of many tasks at once (batched, no state
        change). Unknown task ids are ignored."""
        ...

    def extend_deadlines(self, *, since: float, until: float) -> None:
        """Persist a credential pause from `since` to `until`: every active task registered
        before `until` gains `until - max(since, registered_at)` seconds of
        `deadline_extension_s`. One statement over the active tasks, however many; nothing
        happens if `until <= since`."""
        ...

    def shift_future_times(self, step_s: float) -> None:
        """The wall clock was stepped by `step_s` (negative: back): every active task's
        `deadline_extension_s` and every pending delivery's `next_attempt_at` move by it, in
        one transaction, so that they keep meaning the same moment after a restart."""
        ...

    def state_changes(self, task_id: str) -> list[StateChange]:
        """The task's state changes, oldest first."""
        ...

    # -- events --------------------------------------------------------------------------------
    def get_event(self, event_id: str) -> Event:
        """The event (KeyError-free: raises StoreError if missing)."""
        ...

    def events_for_task(self, task_id: str) -> list[Event]:
        """The task's events, oldest first."""
        ...

    def event_bodies(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of many events in one read, by event id; unknown ids are absent."""
        ...

    # -- deliveries ----------------------------------------------------------------------------
    def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery, or DeliveryNotFound."""
        ...

    def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        task_id: str | None = None,
        retrying: bool | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """Deliveries newest first, optionally filtered. `retrying=True` keeps only those that
        are retrying (`Delivery.retrying`: PENDING with `schedule_pos > 0`), False leaves them
        out, None does not look at it."""
        ...

    def pending_deliveries(self) -> Iterator[Delivery]:
        """Every PENDING delivery (for resuming after a restart), in any order."""
        ...

    def count_deliveries(self) -> Mapping[DeliveryStatus, int]:
        """How many deliveries are in each status."""
        ...

    def count_retrying_deliveries(self) -> int:
        """How many deliveries are retrying (`Delivery.retrying`); `count_deliveries` counts
        them among the PENDING ones."""
        ...

    def record_attempt(self, attempt: Attempt, delivery: Delivery) -> None:
        """Commit an attempt and the delivery's new status/schedule in one transaction.

        `delivery` is the updated record (status, attempts, schedule_pos, next_attempt_at,
        last_status_code, last_error, updated_at) and replaces the stored one.
        """
        ...

    def record_attempts(self, batch: Sequence[tuple[Attempt, Delivery]]) -> None:
        """`record_attempt` for many (attempt, updated delivery) pairs in one transaction
        (group commit). If any delivery is unknown, DeliveryNotFound and nothing is written."""
        ...

    def attempts(self, delivery_id: str) -> list[Attempt]:
        """The delivery's attempts, oldest first."""
        ...

    def requeue_delivery(self, delivery_id: str, *, now: float) -> Delivery:
        """Redeliver: make the delivery PENDING again, due now, with a fresh retry round
        (schedule_pos 0; `attempts` keeps counting). DeliveryNotFound if missing."""
        ...

    # -- result mirroring ----------------------------------------------------------------------
    def mirror_files(self, task_id: str) -> list[MirrorFile]:
        """The task's result files to mirror (held or released), in result_urls order; empty
        when it has none."""
        ...

    def update_mirror_files(self, files: Sequence[MirrorFile]) -> None:
        """Record the progress of `files` (status, sha256, bytes, content_type, error,
        attempts, updated_at) in one transaction, committed on return. StoreError if one of
        them is unknown (then none is recorded)."""
        ...

    def held_mirrors(self) -> list[MirrorHold]:
        """Every task awaiting its mirror: its held event and its files, oldest first (for
        resuming after a restart)."""
        ...

    def release_mirror(self, task_id: str, event: Event, deliveries: Sequence[Delivery]) -> bool:
        """Commit the final event of a held success and its deliveries, and drop the hold, in
        one transaction. False, writing nothing, if the task holds nothing (already released):
        its webhook is sent once."""
        ...

    # -- learned durations (adaptive polling) ---------------------------------------------------
    def record_durations(self, samples: Sequence[DurationSample]) -> None:
        """Persist how long finished tasks took, each `(model, duration_s, finished_at)`, in
        one transaction, in the order given."""
        ...

    def recent_durations(self, per_model: int) -> dict[str, list[float]]:
        """Each model's `per_model` most recently recorded durations, oldest first."""
        ...

    def trim_durations(self, keep_per_model: int) -> int:
        """Delete all but each model's `keep_per_model` most recently recorded durations, in
        one transaction; how many were deleted."""
        ...

    # -- housekeeping --------------------------------------------------------------------------
    def purge_finished(self, *, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` tasks that finished before `before`, oldest first, with their
        state changes, events, deliveries, attempts and mirror records, in one transaction. A
        task with a PENDING delivery or a held mirror is kept until it is sent. Returns how
        many tasks were deleted."""
        ...

    def check_writable(self) -> None:
        """Raise StoreError unless a write can be committed now (for /readyz)."""
        ...

    def close(self) -> None:
        """Flush and close; idempotent."""
        ...


class AsyncStore(Protocol):
    """`Store`'s operations as coroutines, with the same semantics (see each `Store` method).

    `active_tasks` and `pending_deliveries` are async iterators that read in bounded batches
    and hold no connection between batches. Every write is one transaction, committed when the
    coroutine returns; several processes may share one database, so an operation that races
    with another process's gives the same outcome as if they ran one after the other.
    """

    # -- tasks ---------------------------------------------------------------------------------
    async def add_task(
        self, spec: TaskSpec, *, source: TaskSource, now: float
    ) -> tuple[Task, bool]: ...

    async def add_tasks(
        self, specs: list[TaskSpec], *, source: TaskSource, now: float
    ) -> list[tuple[Task, bool]]: ...

    async def add_tasks_bulk(
        self, batch: SpecColumns, *, source: TaskSource, now: float
    ) -> list[bool]: ...

    async def get_task(self, task_id: str) -> Task: ...

    async def list_tasks(
        self, *, state: TaskState | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Task], str | None]: ...

    def active_tasks(self) -> AsyncIterator[Task]: ...

    async def count_tasks(self) -> Mapping[TaskState, int]: ...

    async def apply_transition(self, transition: Transition) -> Task: ...

    async def cancel_task(self, task_id: str, *, now: float) -> Task: ...

    async def record_polls(
        self, polls: Mapping[str, int], *, errors: Mapping[str, str | None]
    ) -> None: ...

    async def extend_deadlines(self, *, since: float, until: float) -> None: ...

    async def shift_future_times(self, step_s: float) -> None: ...

    async def state_changes(self, task_id: str) -> list[StateChange]: ...

    # -- events --------------------------------------------------------------------------------
    async def get_event(self, event_id: str) -> Event: ...

    async def events_for_task(self, task_id: str) -> list[Event]: ...

    async def event_bodies(self, event_ids: Sequence[str]) -> dict[str, bytes]: ...

    # -- deliveries ----------------------------------------------------------------------------
    async def get_delivery(self, delivery_id: str) -> Delivery: ...

    async def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        task_id: str | None = None,
        retrying: bool | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]: ...

    def pending_deliveries(self) -> AsyncIterator[Delivery]: ...

    async def count_deliveries(self) -> Mapping[DeliveryStatus, int]: ...

    async def count_retrying_deliveries(self) -> int: ...

    async def record_attempt(self, attempt: Attempt, delivery: Delivery) -> None: ...

    async def record_attempts(self, batch: Sequence[tuple[Attempt, Delivery]]) -> None: ...

    async def attempts(self, delivery_id: str) -> list[Attempt]: ...

    async def requeue_delivery(self, delivery_id: str, *, now: float) -> Delivery: ...

    # -- result mirroring ----------------------------------------------------------------------
    async def mirror_files(self, task_id: str) -> list[MirrorFile]: ...

    async def update_mirror_files(self, files: Sequence[MirrorFile]) -> None: ...

    async def held_mirrors(self) -> list[MirrorHold]: ...

    async def release_mirror(
        self, task_id: str, event: Event, deliveries: Sequence[Delivery]
    ) -> bool: ...

    # -- learned durations (adaptive polling) ---------------------------------------------------
    async def record_durations(self, samples: Sequence[DurationSample]) -> None: ...

    async def recent_durations(self, per_model: int) -> dict[str, list[float]]: ...

    async def trim_durations(self, keep_per_model: int) -> int: ...

    # -- housekeeping --------------------------------------------------------------------------
    async def purge_finished(self, *, before: float, limit: int = 1000) -> int: ...

    async def check_writable(self) -> None: ...

    async def close(self) -> None: ...


def apply_transition_to(task: Task, transition: Transition) -> TaskState:
    """The rules of `Store.apply_transition` for the task record, shared by both stores.

    Updates `task` in place and returns its previous state. Raises TaskFinished if the task
    is already terminal. A transition without `upstream_state` keeps the last one seen;
    `polls`, when given, replaces the stored count; a terminal state sets `finished_at` and
    clears `last_error`.
    """
    t = transition
    if task.state.terminal:
        raise TaskFinished(f"task {t.task_id} has already finished ({task.state.value})")
    from_state = task.state
    task.state = t.to_state
    task.updated_at = t.at
    if t.upstream_state is not None:
        task.upstream_state = t.upstream_state
    if t.polls is not None:
        task.polls = t.polls
    if t.to_state.terminal:
        task.finished_at = t.at
        task.last_error = None
    return from_state


# One encoder for every task: `json.dumps` with options builds a new one per call, a third of
# its cost for small metadata (a tasks file registers 100,000 tasks in a row).
_METADATA_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def metadata_json(metadata: Mapping[str, Any]) -> str:
    """The JSON text stored for a task's metadata; StoreError if it is not JSON-serialisable."""
    try:
        return _METADATA_ENCODER.encode(metadata)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"task metadata is not JSON: {exc}") from exc


def endpoints_json(endpoints: Sequence[str] | None) -> str | None:
    """The JSON text stored for a task's endpoint names; None: every matching endpoint."""
    return None if endpoints is None else json.dumps(list(endpoints))


def new_task(
    spec: TaskSpec, *, source: TaskSource, now: float, metadata: Mapping[str, Any] | None = None
) -> Task:
    """The task a store creates from `spec`: pending, registered and updated `now`. `metadata`
    (default: the spec's own) is what the record carries, e.g. a fresh copy read back from the
    stored JSON so the caller's object is never shared."""
    return Task(
        task_id=spec.task_id,
        model=spec.model,
        endpoints=spec.endpoints,
        callback_url=spec.callback_url,
        metadata=spec.metadata if metadata is None else metadata,
        deadline_s=spec.deadline_s,
        source=source,
        state=TaskState.PENDING,
        registered_at=now,
        updated_at=now,
    )
