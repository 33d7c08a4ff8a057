"""`AsyncAdapter`: any synchronous `Store` as an `AsyncStore`.

Each coroutine calls the sync method and awaits nothing, so the call still runs on the event
loop exactly as before (SQLite calls are short and local). It lets code written against
`AsyncStore` run on SQLite and on the in-memory store, and one async contract suite cover all
three stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

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
from watcher.store.base import DurationSample, SpecColumns, Store


class AsyncAdapter:
    """An AsyncStore over the sync Store `store` (which it closes on `close`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- tasks ---------------------------------------------------------------------------------
    async def add_task(
        self, spec: TaskSpec, *, source: TaskSource, now: float
    ) -> tuple[Task, bool]:
        return self.store.add_task(spec, source=source, now=now)

    async def add_tasks(
        self, specs: list[TaskSpec], *, source: TaskSource, now: float
    ) -> list[tuple[Task, bool]]:
        return self.store.add_tasks(specs, source=source, now=now)

    async def add_tasks_bulk(
        self, batch: SpecColumns, *, source: TaskSource, now: float
    ) -> list[bool]:
        return self.store.add_tasks_bulk(batch, source=source, now=now)

    async def get_task(self, task_id: str) -> Task:
        return self.store.get_task(task_id)

    async def list_tasks(
        self, *, state: TaskState | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        return self.store.list_tasks(state=state, limit=limit, cursor=cursor)

    async def active_tasks(self) -> AsyncIterator[Task]:
        for task in self.store.active_tasks():
            yield task

    async def count_tasks(self) -> Mapping[TaskState, int]:
        return self.store.count_tasks()

    async def apply_transition(self, transition: Transition) -> Task:
        return self.store.apply_transition(transition)

    async def cancel_task(self, task_id: str, *, now: float) -> Task:
        return self.store.cancel_task(task_id, now=now)

    async def record_polls(
        self, polls: Mapping[str, int], *, errors: Mapping[str, str | None]
    ) -> None:
        self.store.record_polls(polls, errors=errors)

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        self.store.extend_deadlines(since=since, until=until)

    async def shift_future_times(self, step_s: float) -> None:
        self.store.shift_future_times(step_s)

    async def state_changes(self, task_id: str) -> list[StateChange]:
        return self.store.state_changes(task_id)

    # -- events --------------------------------------------------------------------------------
    async def get_event(self, event_id: str) -> Event:
        return self.store.get_event(event_id)

    async def events_for_task(self, task_id: str) -> list[Event]:
        return self.store.events_for_task(task_id)

    async def event_bodies(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        return self.store.event_bodies(event_ids)

    # -- deliveries ----------------------------------------------------------------------------
    async def get_delivery(self, delivery_id: str) -> Delivery:
        return self.store.get_delivery(delivery_id)

    async def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        task_id: str | None = None,
        retrying: bool | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        return self.store.list_deliveries(
            status=status, task_id=task_id, retrying=retrying, limit=limit, cursor=cursor
        )

    async def pending_deliveries(self) -> AsyncIterator[Delivery]:
        for delivery in self.store.pending_deliveries():
            yield delivery

    async def count_retrying_deliveries(self) -> int:
        return self.store.count_retrying_deliveries()

    async def count_deliveries(self) -> Mapping[DeliveryStatus, int]:
        return self.store.count_deliveries()

    async def record_attempt(self, attempt: Attempt, delivery: Delivery) -> None:
        self.store.record_attempt(attempt, delivery)

    async def record_attempts(self, batch: Sequence[tuple[Attempt, Delivery]]) -> None:
        self.store.record_attempts(batch)

    async def attempts(self, delivery_id: str) -> list[Attempt]:
        return self.store.attempts(delivery_id)

    async def requeue_delivery(self, delivery_id: str, *, now: float) -> Delivery:
        return self.store.requeue_delivery(delivery_id, now=now)

    # -- result mirroring ----------------------------------------------------------------------
    async def mirror_files(self, task_id: str) -> list[MirrorFile]:
        return self.store.mirror_files(task_id)

    async def update_mirror_files(self, files: Sequence[MirrorFile]) -> None:
        self.store.update_mirror_files(files)

    async def held_mirrors(self) -> list[MirrorHold]:
        return self.store.held_mirrors()

    async def release_mirror(
        self, task_id: str, event: Event, deliveries: Sequence[Delivery]
    ) -> bool:
        return self.store.release_mirror(task_id, event, deliveries)

    # -- housekeeping --------------------------------------------------------------------------
    async def record_durations(self, samples: Sequence[DurationSample]) -> None:
        self.store.record_durations(samples)

    async def recent_durations(self, per_model: int) -> dict[str, list[float]]:
        return self.store.recent_durations(per_model)

    async def trim_durations(self, keep_per_model: int) -> int:
        return self.store.trim_durations(keep_per_model)

    async def purge_finished(self, *, before: float, limit: int = 1000) -> int:
        return self.store.purge_finished(before=before, limit=limit)

    async def check_writable(self) -> None:
        self.store.check_writable()

    async def close(self) -> None:
        self.store.close()
