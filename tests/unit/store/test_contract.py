"""The store contract: one async suite, run on every store.

Here on MemoryStore and SqliteStore (through AsyncAdapter); tests/integration/store/
test_postgres_contract.py collects the same tests again on PostgresStore.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from watcher.errors import (
    DeliveryNotFound,
    InvalidCursor,
    StoreError,
    TaskConflict,
    TaskFinished,
    TaskNotFound,
)
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
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.adapter import AsyncAdapter
from watcher.store.base import AsyncStore, SpecColumns, Store
from watcher.store.memory import MemoryStore
from watcher.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
API = TaskSource.API


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncStore]:
    sync: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "w.db")
    s = AsyncAdapter(sync)
    yield s
    await s.close()


async def add(
    store: AsyncStore, task_id: str, *, at: float = T0, model: str = "nano-banana"
) -> Task:
    task, created = await store.add_task(TaskSpec(task_id, model), source=API, now=at)
    assert created
    return task


def make_event(
    task_id: str, at: float, *, n: int = 1, type_: EventType = EventType.SUCCEEDED
) -> Event:
    body = json.dumps({"type": type_.value, "data": {"task_id": task_id}}).encode()
    return Event(f"evt_{task_id}_{n}", task_id, type_, at, body)


def make_delivery(event: Event, endpoint: str, *, delivery_id: str | None = None) -> Delivery:
    return Delivery(
        delivery_id=delivery_id or f"dlv_{event.event_id}_{endpoint}",
        event_id=event.event_id,
        task_id=event.task_id,
        event_type=event.type,
        endpoint=endpoint,
        webhook_id=f"msg_{event.event_id}_{endpoint}",
        status=DeliveryStatus.PENDING,
        created_at=event.created_at,
        updated_at=event.created_at,
        next_attempt_at=event.created_at,
    )


async def finish(
    store: AsyncStore, task_id: str, at: float, endpoints: tuple[str, ...] = ("app",)
) -> tuple[Task, Event, list[Delivery]]:
    """Move a task to SUCCEEDED with an event fanned out to `endpoints`."""
    task = await store.get_task(task_id)
    event = make_event(task_id, at)
    deliveries = [make_delivery(event, name) for name in endpoints]
    done = await store.apply_transition(
        Transition(
            task_id=task_id,
            from_state=task.state,
            to_state=TaskState.SUCCEEDED,
            at=at,
            reason="upstream state success",
            upstream_state="success",
            polls=task.polls + 1,
            event=event,
            deliveries=tuple(deliveries),
        )
    )
    return done, event, deliveries


async def attempt_on(
    store: AsyncStore, delivery: Delivery, *, at: float, ok: bool, final: bool = False
) -> Delivery:
    """Record one attempt and return the updated delivery."""
    number = delivery.attempts + 1
    outcome = (
        AttemptOutcome.SUCCEEDED
        if ok
        else (AttemptOutcome.FAILED if final else AttemptOutcome.RETRY)
    )
    status = {
        AttemptOutcome.SUCCEEDED: DeliveryStatus.SUCCEEDED,
        AttemptOutcome.FAILED: DeliveryStatus.FAILED,
        AttemptOutcome.RETRY: DeliveryStatus.PENDING,
    }[outcome]
    updated = dataclasses.replace(
        delivery,
        status=status,
        attempts=number,
        schedule_pos=delivery.schedule_pos + 1,
        next_attempt_at=at + 5 if status is DeliveryStatus.PENDING else None,
        last_status_code=200 if ok else 500,
        last_error=None if ok else "HTTP 500",
        updated_at=at,
    )
    await store.record_attempt(
        Attempt(
            delivery_id=delivery.delivery_id,
            number=number,
            started_at=at,
            duration_ms=12.5,
            outcome=outcome,
            status_code=200 if ok else 500,
            error=None if ok else "HTTP 500",
            webhook_timestamp=int(at),
        ),
        updated,
    )
    return updated


async def all_pages(store: AsyncStore, **kwargs: object) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        tasks, cursor = await store.list_tasks(cursor=cursor, **kwargs)  # type: ignore[arg-type]
        ids += [t.task_id for t in tasks]
        if cursor is None:
            return ids


# -- adding tasks ------------------------------------------------------------------------------
async def test_add_task_registers_a_pending_task(store: AsyncStore) -> None:
    spec = TaskSpec(
        "task_1",
        "nano-banana",
        endpoints=("app", "audit"),
        callback_url="https://cb.example/hook",
        metadata={"order_id": 42, "tags": ["a", "b"]},
        deadline_s=600.0,
    )
    task, created = await store.add_task(spec, source=TaskSource.FILE, now=T0)

    assert created
    assert task == Task(
        task_id="task_1",
        model="nano-banana",
        endpoints=("app", "audit"),
        callback_url="https://cb.example/hook",
        metadata={"order_id": 42, "tags": ["a", "b"]},
        deadline_s=600.0,
        source=TaskSource.FILE,
        state=TaskState.PENDING,
        registered_at=T0,
        updated_at=T0,
    )
    assert await store.get_task("task_1") == task
    assert await store.state_changes("task_1") == []


async def test_adding_a_known_task_with_the_same_model_returns_it_unchanged(
    store: AsyncStore,
) -> None:
    first, _ = await store.add_task(TaskSpec("t", "flux-2", metadata={"v": 1}), source=API, now=T0)

    again, created = await store.add_task(
        TaskSpec("t", "flux-2", metadata={"v": 2}, endpoints=("x",)),
        source=TaskSource.FILE,
        now=T0 + 60,
    )

    assert not created
    assert again == first
    assert await store.get_task("t") == first


async def test_adding_a_known_task_with_another_model_is_a_conflict(store: AsyncStore) -> None:
    first = await add(store, "task_9", model="nano-banana")

    with pytest.raises(TaskConflict) as info:
        await store.add_task(TaskSpec("task_9", "sora-2"), source=API, now=T0 + 1)

    assert "task_9" in str(info.value)
    assert "nano-banana" in str(info.value)
    assert "sora-2" in str(info.value)
    assert await store.get_task("task_9") == first


async def test_add_tasks_registers_a_batch_in_order(store: AsyncStore) -> None:
    known = await add(store, "b")

    results = await store.add_tasks(
        [TaskSpec("a", "nano-banana"), TaskSpec("b", "nano-banana"), TaskSpec("a", "nano-banana")],
        source=TaskSource.FILE,
        now=T0 + 5,
    )

    assert [(t.task_id, created) for t, created in results] == [
        ("a", True),
        ("b", False),
        ("a", False),
    ]
    assert results[1][0] == known
    assert results[2][0] == results[0][0]
    assert (await store.get_task("a")).source == TaskSource.FILE
    assert await store.add_tasks([], source=API, now=T0) == []


async def test_add_tasks_with_a_conflict_writes_nothing(store: AsyncStore) -> None:
    await add(store, "known", model="flux-2")

    with pytest.raises(TaskConflict):
        await store.add_tasks(
            [TaskSpec("new_1", "flux-2"), TaskSpec("known", "sora-2"), TaskSpec("new_2", "flux-2")],
            source=API,
            now=T0,
        )

    for task_id in ("new_1", "new_2"):
        with pytest.raises(TaskNotFound):
            await store.get_task(task_id)
    assert await store.count_tasks() == {TaskState.PENDING: 1}


async def test_a_conflict_within_one_batch_writes_nothing(store: AsyncStore) -> None:
    with pytest.raises(TaskConflict):
        await store.add_tasks(
            [TaskSpec("x", "flux-2"), TaskSpec("x", "sora-2")], source=API, now=T0
        )

    assert dict(await store.count_tasks()) == {}


async def test_add_tasks_bulk_answers_which_specs_created_their_task(store: AsyncStore) -> None:
    known = await add(store, "b")
    specs = [
        TaskSpec(
            "a",
            "nano-banana",
            endpoints=("ops",),
            callback_url="https://hooks.example.com/a",
            metadata={"order": 7, "tags": ["x", "é"], "nested": {"k": None}},
            deadline_s=90.0,
        ),
        TaskSpec("b", "nano-banana"),
        TaskSpec("a", "nano-banana"),
    ]

    created = await store.add_tasks_bulk(SpecColumns.of(specs), source=TaskSource.FILE, now=T0 + 5)

    assert created == [True, False, False]
    assert await store.get_task("b") == known  # a known id is left as it is
    # The same task as add_tasks stores for the same spec, metadata included.
    twin, twin_created = (
        await store.add_tasks(
            [dataclasses.replace(specs[0], task_id="a2")], source=TaskSource.FILE, now=T0 + 5
        )
    )[0]
    assert twin_created
    assert await store.get_task("a") == dataclasses.replace(twin, task_id="a")
    assert await store.add_tasks_bulk(SpecColumns.of([]), source=API, now=T0) == []
    # Idempotent: the same batch again creates nothing.
    again = await store.add_tasks_bulk(SpecColumns.of(specs), source=API, now=T0 + 9)
    assert again == [False, False, False]
    assert (await store.get_task("a")).registered_at == T0 + 5


@pytest.mark.parametrize(
    "batch",
    [
        [{}, {}],
        [{"endpoints": ("ops",)}, {}],
        [{}, {"callback_url": "https://hooks.example.com/a"}],
        [{"deadline_s": 90.0}, {"deadline_s": 30.0}],
        [{"endpoints": ("ops", "app"), "deadline_s": 5.0}, {"callback_url": "https://h/x"}],
    ],
    ids=["none-set", "endpoints", "callback", "deadlines", "mixed"],
)
async def test_add_tasks_bulk_stores_what_add_tasks_stores(
    store: AsyncStore, batch: list[dict[str, object]]
) -> None:
    # A batch leaves out the optional columns none of its specs set: each task must still be
    # the one add_tasks stores for the same spec.
    specs = [
        TaskSpec(f"b{i}", "m", metadata={"i": i, "é": [None]}, **fields)  # type: ignore[arg-type]
        for i, fields in enumerate(batch)
    ]
    assert await store.add_tasks_bulk(SpecColumns.of(specs), source=API, now=T0) == [True] * 2
    twins = [dataclasses.replace(spec, task_id=f"twin-{spec.task_id}") for spec in specs]
    await store.add_tasks(twins, source=API, now=T0)
    for spec in specs:
        twin = await store.get_task(f"twin-{spec.task_id}")
        assert await store.get_task(spec.task_id) == dataclasses.replace(twin, task_id=spec.task_id)


async def test_add_tasks_bulk_with_a_conflict_writes_nothing(store: AsyncStore) -> None:
    await add(store, "known", model="flux-2")

    with pytest.raises(TaskConflict, match="known"):
        await store.add_tasks_bulk(
            SpecColumns.of(
                [
                    TaskSpec("new_1", "flux-2"),
                    TaskSpec("known", "sora-2"),
                    TaskSpec("new_2", "flux-2"),
                ]
            ),
            source=API,
            now=T0,
        )
    with pytest.raises(TaskConflict, match="x"):
        await store.add_tasks_bulk(
            SpecColumns.of([TaskSpec("x", "flux-2"), TaskSpec("x", "sora-2")]), source=API, now=T0
        )

    for task_id in ("new_1", "new_2", "x"):
        with pytest.raises(TaskNotFound):
            await store.get_task(task_id)
    assert await store.count_tasks() == {TaskState.PENDING: 1}


async def test_add_tasks_bulk_registers_more_than_one_lookup_chunk(store: AsyncStore) -> None:
    ids = [f"t{i:04d}" for i in range(1201)]
    await store.add_tasks([TaskSpec(i, "m") for i in ids[::3]], source=API, now=T0)

    batch = SpecColumns.of([TaskSpec(i, "m") for i in ids])
    created = await store.add_tasks_bulk(batch, source=API, now=T0)

    assert created == [n % 3 != 0 for n in range(len(ids))]
    assert await store.count_tasks() == {TaskState.PENDING: len(ids)}


async def test_get_task_of_an_unknown_id_raises_task_not_found(store: AsyncStore) -> None:
    with pytest.raises(TaskNotFound, match="nope"):
        await store.get_task("nope")


# -- listing -----------------------------------------------------------------------------------
async def test_list_tasks_is_newest_first_and_filters_by_state(store: AsyncStore) -> None:
    for i, task_id in enumerate(["t1", "t2", "t3", "t4"]):
        await add(store, task_id, at=T0 + i)
    await store.cancel_task("t2", now=T0 + 10)

    tasks, cursor = await store.list_tasks()
    assert [t.task_id for t in tasks] == ["t4", "t3", "t2", "t1"]
    assert cursor is None

    pending, _ = await store.list_tasks(state=TaskState.PENDING)
    assert [t.task_id for t in pending] == ["t4", "t3", "t1"]
    cancelled, _ = await store.list_tasks(state=TaskState.CANCELLED)
    assert [t.task_id for t in cancelled] == ["t2"]
    assert await store.list_tasks(state=TaskState.FAILED) == ([], None)


async def test_list_tasks_pages_are_stable_when_tasks_arrive_between_pages(
    store: AsyncStore,
) -> None:
    # Ties on registered_at are ordered by task_id, and a page may end inside a tie.
    times = {"a": T0, "b": T0 + 1, "c": T0 + 1, "d": T0 + 1, "e": T0 + 2, "f": T0 + 3, "g": T0 + 3}
    for task_id, at in times.items():
        await add(store, task_id, at=at)

    first, cursor = await store.list_tasks(limit=3)
    assert [t.task_id for t in first] == ["g", "f", "e"]
    assert cursor is not None
    await add(store, "h", at=T0 + 4)  # newer: belongs before the first page, not in later ones
    await add(store, "bb", at=T0 + 1)  # inside an already listed time span, after the cursor
    second, cursor = await store.list_tasks(limit=3, cursor=cursor)
    assert [t.task_id for t in second] == ["d", "c", "bb"]
    third, cursor = await store.list_tasks(limit=3, cursor=cursor)
    assert [t.task_id for t in third] == ["b", "a"]
    assert cursor is None


async def test_list_tasks_pages_with_a_state_filter(store: AsyncStore) -> None:
    for i in range(7):
        await add(store, f"t{i}", at=T0 + i)
    await store.cancel_task("t3", now=T0 + 10)

    assert await all_pages(store, limit=2, state=TaskState.PENDING) == [
        "t6",
        "t5",
        "t4",
        "t2",
        "t1",
        "t0",
    ]
    assert await all_pages(store, limit=1) == [f"t{i}" for i in reversed(range(7))]


async def test_list_tasks_clamps_the_limit(store: AsyncStore) -> None:
    await store.add_tasks([TaskSpec(f"t{i:04d}", "m") for i in range(1001)], source=API, now=T0)

    tasks, cursor = await store.list_tasks(limit=5000)
    assert len(tasks) == 1000
    assert cursor is not None
    rest, cursor = await store.list_tasks(limit=5000, cursor=cursor)
    assert [t.task_id for t in rest] == ["t0000"]
    assert cursor is None
    one, _ = await store.list_tasks(limit=0)
    assert [t.task_id for t in one] == ["t1000"]


@pytest.mark.parametrize("cursor", ["garbage!", "", "bm90IGEgY3Vyc29y", "aW5mfHg"])
async def test_an_invalid_cursor_is_refused(store: AsyncStore, cursor: str) -> None:
    await add(store, "t")
    with pytest.raises(InvalidCursor):
        await store.list_tasks(cursor=cursor)
    with pytest.raises(InvalidCursor):
        await store.list_deliveries(cursor=cursor)


async def test_active_tasks_are_the_pending_and_processing_ones(store: AsyncStore) -> None:
    for task_id in ("p", "q", "c", "s"):
        await add(store, task_id)
    await store.apply_transition(
        Transition("q", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "upstream processing")
    )
    await store.cancel_task("c", now=T0 + 2)
    await finish(store, "s", T0 + 3)

    active = store.active_tasks()

    assert isinstance(active, AsyncIterator)
    assert sorted([(t.task_id, t.state) async for t in active]) == [
        ("p", TaskState.PENDING),
        ("q", TaskState.PROCESSING),
    ]


async def test_count_tasks_per_state(store: AsyncStore) -> None:
    for task_id in ("a", "b", "c", "d"):
        await add(store, task_id)
    await store.cancel_task("a", now=T0)
    await finish(store, "b", T0)

    assert dict(await store.count_tasks()) == {
        TaskState.PENDING: 2,
        TaskState.CANCELLED: 1,
        TaskState.SUCCEEDED: 1,
    }


# -- transitions -------------------------------------------------------------------------------
async def test_a_transition_to_processing_updates_the_task_and_records_the_change(
    store: AsyncStore,
) -> None:
    await add(store, "t")

    task = await store.apply_transition(
        Transition(
            "t",
            TaskState.PENDING,
            TaskState.PROCESSING,
            at=T0 + 4,
            reason="upstream state processing",
            upstream_state="processing",
            polls=3,
        )
    )

    assert (task.state, task.upstream_state, task.polls) == (TaskState.PROCESSING, "processing", 3)
    assert (task.updated_at, task.finished_at, task.registered_at) == (T0 + 4, None, T0)
    assert await store.get_task("t") == task
    assert await store.state_changes("t") == [
        StateChange(
            "t",
            TaskState.PENDING,
            TaskState.PROCESSING,
            T0 + 4,
            "upstream state processing",
            "processing",
        )
    ]
    assert await store.events_for_task("t") == []


async def test_a_terminal_transition_commits_the_event_and_every_delivery(
    store: AsyncStore,
) -> None:
    await add(store, "t")
    await store.record_polls({"t": 6}, errors={"t": "HTTP 500"})

    task, event, deliveries = await finish(
        store, "t", T0 + 12.5, endpoints=("app", "audit", "@callback")
    )

    assert task.state == TaskState.SUCCEEDED
    assert (task.finished_at, task.updated_at, task.polls) == (T0 + 12.5, T0 + 12.5, 7)
    assert task.last_error is None
    assert task.upstream_state == "success"
    assert await store.get_task("t") == task
    assert await store.get_event(event.event_id) == event
    assert await store.events_for_task("t") == [event]
    for delivery in deliveries:
        assert await store.get_delivery(delivery.delivery_id) == delivery
    listed, _ = await store.list_deliveries(task_id="t")
    assert sorted(d.delivery_id for d in listed) == sorted(d.delivery_id for d in deliveries)
    assert sorted([d.endpoint async for d in store.pending_deliveries()]) == [
        "@callback",
        "app",
        "audit",
    ]
    assert [c.to_state for c in await store.state_changes("t")] == [TaskState.SUCCEEDED]


async def test_a_transition_without_upstream_state_keeps_the_last_one_seen(
    store: AsyncStore,
) -> None:
    await add(store, "t")
    await store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PROCESSING, T0, "r", upstream_state="processing"
        )
    )
    timed_out = make_event("t", T0 + 9, type_=EventType.TIMED_OUT)

    task = await store.apply_transition(
        Transition(
            "t",
            TaskState.PROCESSING,
            TaskState.TIMED_OUT,
            T0 + 9,
            "deadline reached",
            event=timed_out,
        )
    )

    assert task.upstream_state == "processing"
    assert task.polls == 0  # not given: unchanged


async def test_a_transition_to_the_same_state_records_no_state_change(store: AsyncStore) -> None:
    await add(store, "t")

    task = await store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PENDING, T0 + 1, "still pending", "pending", polls=2
        )
    )

    assert (task.state, task.polls, task.upstream_state) == (TaskState.PENDING, 2, "pending")
    assert await store.state_changes("t") == []


async def test_a_transition_of_a_finished_task_raises_and_writes_nothing(store: AsyncStore) -> None:
    await add(store, "t")
    await store.cancel_task("t", now=T0 + 1)
    before = (await store.get_task("t"), await store.state_changes("t"))
    event = make_event("t", T0 + 2)

    with pytest.raises(TaskFinished):
        await store.apply_transition(
            Transition(
                "t",
                TaskState.PROCESSING,
                TaskState.SUCCEEDED,
                T0 + 2,
                "upstream state success",
                event=event,
                deliveries=(make_delivery(event, "app"),),
            )
        )

    assert (await store.get_task("t"), await store.state_changes("t")) == before
    assert await store.events_for_task("t") == []
    assert await store.list_deliveries() == ([], None)
    with pytest.raises(StoreError):
        await store.get_event(event.event_id)


async def test_a_transition_of_an_unknown_task_raises_task_not_found(store: AsyncStore) -> None:
    with pytest.raises(TaskNotFound):
        await store.apply_transition(
            Transition("ghost", TaskState.PENDING, TaskState.PROCESSING, T0, "r")
        )


async def test_a_transition_that_cannot_be_written_leaves_nothing_behind(store: AsyncStore) -> None:
    await add(store, "first")
    _, _, (taken,) = await finish(store, "first", T0)
    await add(store, "t")
    event = make_event("t", T0 + 1)
    clash = make_delivery(event, "audit", delivery_id=taken.delivery_id)

    with pytest.raises(StoreError):
        await store.apply_transition(
            Transition(
                "t",
                TaskState.PENDING,
                TaskState.SUCCEEDED,
                T0 + 1,
                "upstream state success",
                event=event,
                deliveries=(make_delivery(event, "app"), clash),
            )
        )

    assert (await store.get_task("t")).state == TaskState.PENDING
    assert await store.state_changes("t") == []
    assert await store.events_for_task("t") == []
    assert await store.list_deliveries(task_id="t") == ([], None)
    assert await store.get_delivery(taken.delivery_id) == taken


async def test_a_delivery_of_an_unknown_event_is_refused(store: AsyncStore) -> None:
    await add(store, "t")
    orphan = make_delivery(make_event("t", T0), "app")

    with pytest.raises(StoreError):
        await store.apply_transition(
            Transition("t", TaskState.PENDING, TaskState.FAILED, T0, "r", deliveries=(orphan,))
        )

    assert (await store.get_task("t")).state == TaskState.PENDING


# -- cancel, polls, state changes ---------------------------------------------------------------
async def test_cancel_task(store: AsyncStore) -> None:
    await add(store, "t")
    await store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "r", upstream_state="processing"
        )
    )
    await store.record_polls({}, errors={"t": "HTTP 503"})

    task = await store.cancel_task("t", now=T0 + 5)

    assert (task.state, task.finished_at, task.updated_at) == (TaskState.CANCELLED, T0 + 5, T0 + 5)
    assert task.last_error is None
    assert await store.get_task("t") == task
    assert (await store.state_changes("t"))[-1] == StateChange(
        "t", TaskState.PROCESSING, TaskState.CANCELLED, T0 + 5, "cancelled", None
    )
    assert await store.events_for_task("t") == []
    assert [t async for t in store.active_tasks()] == []
    with pytest.raises(TaskFinished):
        await store.cancel_task("t", now=T0 + 6)
    with pytest.raises(TaskNotFound):
        await store.cancel_task("ghost", now=T0)


async def test_record_polls_persists_counts_and_errors(store: AsyncStore) -> None:
    for task_id in ("a", "b", "done"):
        await add(store, task_id)
    await finish(store, "done", T0 + 1)

    await store.record_polls({"a": 5, "b": 2, "ghost": 9}, errors={"a": "HTTP 500", "ghost": "x"})
    await store.record_polls({"b": 3}, errors={"a": None, "b": "timeout", "done": "late"})

    a, b, done = [await store.get_task(i) for i in ("a", "b", "done")]
    assert (a.polls, a.last_error) == (5, None)
    assert (b.polls, b.last_error) == (3, "timeout")
    assert done.last_error is None  # a finished task's error stays cleared
    assert await store.state_changes("a") == []
    await store.record_polls({}, errors={})


async def test_a_new_task_has_no_deadline_extension(store: AsyncStore) -> None:
    assert (await add(store, "t")).deadline_extension_s == 0.0
    assert (await store.get_task("t")).deadline_extension_s == 0.0


async def test_extend_deadlines_adds_the_part_of_a_pause_after_each_registration(
    store: AsyncStore,
) -> None:
    await add(store, "before", at=T0)  # registered before the pause: all of it
    await add(store, "during", at=T0 + 40)  # registered during it: the part after its registration
    await add(store, "after", at=T0 + 200)  # registered after it: nothing
    await add(store, "done", at=T0)
    await finish(store, "done", T0 + 1)  # finished: no deadline to move
    cancelled = await add(store, "cancelled", at=T0)
    await store.cancel_task(cancelled.task_id, now=T0 + 1)

    await store.extend_deadlines(since=T0 + 10, until=T0 + 100)
    await store.extend_deadlines(since=T0 + 100, until=T0 + 160)  # a pause saved in two parts
    await store.extend_deadlines(since=T0 + 160, until=T0 + 160)  # nothing

    extension = {t.task_id: t.deadline_extension_s for t in await all_tasks(store)}
    assert extension == {
        "before": pytest.approx(150.0),
        "during": pytest.approx(120.0),
        "after": 0.0,
        "done": 0.0,
        "cancelled": 0.0,
    }
    # Only the extension changes: nothing else of the tasks, and no state change is recorded.
    assert (await store.get_task("before")).updated_at == T0
    assert await store.state_changes("before") == []


async def test_shift_future_times_moves_active_deadlines_and_pending_deliveries(
    store: AsyncStore,
) -> None:
    await add(store, "active")
    await add(store, "t")
    _, _, (pending, succeeded) = await finish(store, "t", T0, endpoints=("one", "two"))
    pending = await attempt_on(store, pending, at=T0 + 1, ok=False)  # due again at T0 + 6
    await attempt_on(store, succeeded, at=T0 + 1, ok=True)
    await store.extend_deadlines(since=T0, until=T0 + 30)

    await store.shift_future_times(-3600.0)  # the wall clock was stepped an hour back
    await store.shift_future_times(1800.0)  # and half of that forward again

    assert (await store.get_task("active")).deadline_extension_s == pytest.approx(30.0 - 1800.0)
    assert (await store.get_task("t")).deadline_extension_s == 0.0  # finished: nothing to come
    assert (await store.get_delivery(pending.delivery_id)).next_attempt_at == pytest.approx(
        T0 + 6 - 1800.0
    )
    assert (await store.get_delivery(succeeded.delivery_id)).next_attempt_at is None
    # The records' own history is kept as it was written.
    assert (await store.get_delivery(pending.delivery_id)).updated_at == T0 + 1
    assert (await store.get_task("active")).registered_at == T0


async def test_state_changes_are_oldest_first(store: AsyncStore) -> None:
    await add(store, "t")
    await store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "upstream state processing"
        )
    )
    await finish(store, "t", T0 + 2)

    changes = await store.state_changes("t")

    assert [(c.from_state, c.to_state, c.at) for c in changes] == [
        (TaskState.PENDING, TaskState.PROCESSING, T0 + 1),
        (TaskState.PROCESSING, TaskState.SUCCEEDED, T0 + 2),
    ]
    assert changes[1].upstream_state == "success"
    with pytest.raises(TaskNotFound):
        await store.state_changes("ghost")


# -- events ------------------------------------------------------------------------------------
async def test_events_for_task_are_oldest_first(store: AsyncStore) -> None:
    await add(store, "t")
    processing = make_event("t", T0 + 1, n=1, type_=EventType.PROCESSING)
    await store.apply_transition(
        Transition("t", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "r", event=processing)
    )
    failed = make_event("t", T0 + 2, n=2, type_=EventType.FAILED)
    await store.apply_transition(
        Transition("t", TaskState.PROCESSING, TaskState.FAILED, T0 + 2, "r", event=failed)
    )

    assert await store.events_for_task("t") == [processing, failed]
    assert (await store.get_event(failed.event_id)).body == failed.body
    with pytest.raises(TaskNotFound):
        await store.events_for_task("ghost")
    with pytest.raises(StoreError):
        await store.get_event("evt_ghost")


# -- deliveries --------------------------------------------------------------------------------
async def test_list_deliveries_newest_first_with_filters(store: AsyncStore) -> None:
    for i, task_id in enumerate(("a", "b", "c")):
        await add(store, task_id, at=T0 + i)
        await finish(store, task_id, T0 + 10 * (i + 1), endpoints=("app", "audit"))
    (a_audit, a_app), _ = await store.list_deliveries(task_id="a")
    await attempt_on(store, a_app, at=T0 + 50, ok=True)
    await attempt_on(store, a_audit, at=T0 + 50, ok=False, final=True)

    everything, cursor = await store.list_deliveries()
    assert [(d.task_id, d.endpoint) for d in everything] == [
        ("c", "audit"),
        ("c", "app"),
        ("b", "audit"),
        ("b", "app"),
        ("a", "audit"),
        ("a", "app"),
    ]
    assert cursor is None
    failed, _ = await store.list_deliveries(status=DeliveryStatus.FAILED)
    assert [d.delivery_id for d in failed] == [a_audit.delivery_id]
    pending_b, _ = await store.list_deliveries(status=DeliveryStatus.PENDING, task_id="b")
    assert [d.endpoint for d in pending_b] == ["audit", "app"]
    assert await store.list_deliveries(status=DeliveryStatus.SUCCEEDED, task_id="b") == ([], None)
    assert await store.list_deliveries(task_id="ghost") == ([], None)


async def test_list_deliveries_pages_are_stable_when_deliveries_arrive(store: AsyncStore) -> None:
    for i, task_id in enumerate(("a", "b", "c")):
        await add(store, task_id)
        await finish(store, task_id, T0 + i, endpoints=("e1", "e2"))

    page, cursor = await store.list_deliveries(limit=4)
    seen = [d.delivery_id for d in page]
    await add(store, "late")
    await finish(store, "late", T0 + 100, endpoints=("e1",))
    while cursor is not None:
        page, cursor = await store.list_deliveries(limit=4, cursor=cursor)
        seen += [d.delivery_id for d in page]

    assert seen == [f"dlv_evt_{task_id}_1_{e}" for task_id in ("c", "b", "a") for e in ("e2", "e1")]


async def test_pending_deliveries_and_counts(store: AsyncStore) -> None:
    await add(store, "t")
    _, _, (d1, d2, d3) = await finish(store, "t", T0, endpoints=("one", "two", "three"))
    await attempt_on(store, d1, at=T0 + 1, ok=True)
    await attempt_on(store, d2, at=T0 + 1, ok=False)  # retry: still pending
    await attempt_on(store, d3, at=T0 + 1, ok=False, final=True)

    pending = store.pending_deliveries()

    assert isinstance(pending, AsyncIterator)
    assert [d.delivery_id async for d in pending] == [d2.delivery_id]
    assert dict(await store.count_deliveries()) == {
        DeliveryStatus.SUCCEEDED: 1,
        DeliveryStatus.PENDING: 1,
        DeliveryStatus.FAILED: 1,
    }


async def test_retrying_deliveries_are_the_pending_ones_whose_last_attempt_failed(
    store: AsyncStore,
) -> None:
    await add(store, "t")
    names = ("fresh", "retried", "done", "failed", "requeued")
    _, _, (fresh, retried, done, failed, requeued) = await finish(store, "t", T0, endpoints=names)
    await attempt_on(store, retried, at=T0 + 1, ok=False)
    await attempt_on(store, done, at=T0 + 1, ok=True)
    await attempt_on(store, failed, at=T0 + 1, ok=False, final=True)
    await attempt_on(store, requeued, at=T0 + 1, ok=False)
    await store.requeue_delivery(requeued.delivery_id, now=T0 + 2)  # a new round: not retrying

    def ids(page: tuple[list[Delivery], str | None]) -> set[str]:
        return {d.delivery_id for d in page[0]}

    assert [(await store.get_delivery(d.delivery_id)).retrying for d in (fresh, retried)] == [
        False,
        True,
    ]
    assert ids(await store.list_deliveries(retrying=True)) == {retried.delivery_id}
    assert ids(await store.list_deliveries(status=DeliveryStatus.PENDING, retrying=True)) == {
        retried.delivery_id
    }
    assert ids(await store.list_deliveries(status=DeliveryStatus.PENDING, retrying=False)) == {
        fresh.delivery_id,
        requeued.delivery_id,
    }
    assert ids(await store.list_deliveries(retrying=False)) == {
        d.delivery_id for d in (fresh, done, failed, requeued)
    }
    assert await store.list_deliveries(status=DeliveryStatus.FAILED, retrying=True) == ([], None)
    assert await store.list_deliveries(task_id="ghost", retrying=True) == ([], None)
    assert await store.count_retrying_deliveries() == 1
    # count_deliveries keeps counting the stored status: retrying ones are pending there.
    assert (await store.count_deliveries())[DeliveryStatus.PENDING] == 3


async def test_list_deliveries_pages_through_the_retrying_ones(store: AsyncStore) -> None:
    for i, task_id in enumerate(("a", "b", "c")):
        await add(store, task_id)
        _, _, (app, _audit) = await finish(store, task_id, T0 + i, endpoints=("app", "audit"))
        await attempt_on(store, app, at=T0 + 10, ok=False)

    page, cursor = await store.list_deliveries(retrying=True, limit=2)
    seen = [d.task_id for d in page]
    while cursor is not None:
        page, cursor = await store.list_deliveries(retrying=True, limit=2, cursor=cursor)
        seen += [d.task_id for d in page]

    assert seen == ["c", "b", "a"]
    assert await store.count_retrying_deliveries() == 3


async def test_record_attempt_commits_the_attempt_and_the_delivery(store: AsyncStore) -> None:
    await add(store, "t")
    _, _, (delivery,) = await finish(store, "t", T0)

    retried = await attempt_on(store, delivery, at=T0 + 1, ok=False)
    done = await attempt_on(store, retried, at=T0 + 6, ok=True)

    assert await store.get_delivery(delivery.delivery_id) == done
    assert (done.status, done.attempts, done.next_attempt_at) == (DeliveryStatus.SUCCEEDED, 2, None)
    attempts = await store.attempts(delivery.delivery_id)
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [
        (1, AttemptOutcome.RETRY, 500),
        (2, AttemptOutcome.SUCCEEDED, 200),
    ]
    assert attempts[0] == Attempt(
        delivery.delivery_id, 1, T0 + 1, 12.5, AttemptOutcome.RETRY, 500, "HTTP 500", int(T0 + 1)
    )


async def test_record_attempt_of_an_unknown_delivery_writes_nothing(store: AsyncStore) -> None:
    await add(store, "t")
    _, _, (delivery,) = await finish(store, "t", T0)
    ghost = dataclasses.replace(delivery, delivery_id="dlv_ghost")

    with pytest.raises(DeliveryNotFound):
        await store.record_attempt(
            Attempt("dlv_ghost", 1, T0, 1.0, AttemptOutcome.SUCCEEDED, 200), ghost
        )

    with pytest.raises(DeliveryNotFound):
        await store.attempts("dlv_ghost")
    assert await store.attempts(delivery.delivery_id) == []
    assert len((await store.list_deliveries())[0]) == 1


def _succeeded(delivery: Delivery, at: float) -> tuple[Attempt, Delivery]:
    updated = dataclasses.replace(
        delivery,
        status=DeliveryStatus.SUCCEEDED,
        attempts=delivery.attempts + 1,
        schedule_pos=delivery.schedule_pos + 1,
        next_attempt_at=None,
        last_status_code=200,
        updated_at=at,
    )
    attempt = Attempt(
        delivery.delivery_id, updated.attempts, at, 3.0, AttemptOutcome.SUCCEEDED, 200
    )
    return attempt, updated


async def test_record_attempts_commits_many_attempts_at_once(store: AsyncStore) -> None:
    await add(store, "t")
    _, _, deliveries = await finish(store, "t", T0, endpoints=("a", "b", "c"))

    batch = [_succeeded(d, T0 + 1 + i) for i, d in enumerate(deliveries)]
    await store.record_attempts(batch)

    for attempt, updated in batch:
        assert await store.get_delivery(updated.delivery_id) == updated
        assert await store.attempts(updated.delivery_id) == [attempt]
    assert [d async for d in store.pending_deliveries()] == []
    await store.record_attempts([])  # an empty batch is a no-op


async def test_record_attempts_with_one_unknown_delivery_writes_nothing(store: AsyncStore) -> None:
    await add(store, "t")
    _, _, (delivery,) = await finish(store, "t", T0)
    ghost = dataclasses.replace(delivery, delivery_id="dlv_ghost")

    with pytest.raises(DeliveryNotFound):
        await store.record_attempts([_succeeded(delivery, T0 + 1), _succeeded(ghost, T0 + 1)])

    assert await store.attempts(delivery.delivery_id) == []
    assert await store.get_delivery(delivery.delivery_id) == delivery


async def test_event_bodies_reads_many_bodies_and_skips_unknown_ids(store: AsyncStore) -> None:
    events = []
    for task_id in ("t1", "t2"):
        await add(store, task_id)
        _, event, _ = await finish(store, task_id, T0)
        events.append(event)

    bodies = await store.event_bodies([events[0].event_id, "evt_ghost", events[1].event_id])

    assert bodies == {e.event_id: e.body for e in events}
    assert await store.event_bodies([]) == {}


async def test_requeue_delivery_starts_a_new_round_with_the_same_webhook_id(
    store: AsyncStore,
) -> None:
    await add(store, "t")
    _, _, (delivery,) = await finish(store, "t", T0)
    first = await attempt_on(store, delivery, at=T0 + 1, ok=False)
    failed = await attempt_on(store, first, at=T0 + 6, ok=False, final=True)
    assert failed.status == DeliveryStatus.FAILED

    again = await store.requeue_delivery(delivery.delivery_id, now=T0 + 100)

    assert (again.status, again.next_attempt_at, again.schedule_pos) == (
        DeliveryStatus.PENDING,
        T0 + 100,
        0,
    )
    assert (again.attempts, again.webhook_id, again.updated_at) == (
        2,
        delivery.webhook_id,
        T0 + 100,
    )
    assert await store.get_delivery(delivery.delivery_id) == again
    assert [d.delivery_id async for d in store.pending_deliveries()] == [delivery.delivery_id]
    assert len(await store.attempts(delivery.delivery_id)) == 2


async def test_requeue_works_on_a_succeeded_delivery_too(store: AsyncStore) -> None:
    await add(store, "t")
    _, _, (delivery,) = await finish(store, "t", T0)
    await attempt_on(store, delivery, at=T0 + 1, ok=True)

    again = await store.requeue_delivery(delivery.delivery_id, now=T0 + 50)

    assert (again.status, again.attempts) == (DeliveryStatus.PENDING, 1)
    with pytest.raises(DeliveryNotFound):
        await store.requeue_delivery("dlv_ghost", now=T0)
    with pytest.raises(DeliveryNotFound):
        await store.get_delivery("dlv_ghost")


# -- copies and lifecycle ----------------------------------------------------------------------
async def test_returned_and_given_records_are_copies(store: AsyncStore) -> None:
    metadata = {"order": {"id": 1}}
    task, _ = await store.add_task(TaskSpec("t", "m", metadata=metadata), source=API, now=T0)
    metadata["order"]["id"] = 2  # the caller's dict changes after registration
    task.polls = 99
    task.metadata["order"]["id"] = 3
    listed, _ = await store.list_tasks()
    listed[0].state = TaskState.FAILED
    (await anext(store.active_tasks())).last_error = "mutated"

    stored_task = await store.get_task("t")
    assert stored_task.metadata == {"order": {"id": 1}}
    assert (stored_task.polls, stored_task.state) == (0, TaskState.PENDING)
    assert stored_task.last_error is None

    _, _, (delivery,) = await finish(store, "t", T0)
    delivery.status = DeliveryStatus.FAILED  # the record given to apply_transition
    (await store.get_delivery(delivery.delivery_id)).attempts = 7
    (await store.list_deliveries())[0][0].endpoint = "other"
    (await anext(store.pending_deliveries())).webhook_id = "msg_other"
    (await store.requeue_delivery(delivery.delivery_id, now=T0)).schedule_pos = 5

    stored = await store.get_delivery(delivery.delivery_id)
    assert (stored.status, stored.attempts, stored.endpoint) == (DeliveryStatus.PENDING, 0, "app")
    assert (stored.webhook_id, stored.schedule_pos) == (delivery.webhook_id, 0)


async def test_check_writable_and_close(store: AsyncStore) -> None:
    await add(store, "t")
    await store.check_writable()

    await store.close()
    await store.close()  # idempotent

    with pytest.raises(StoreError):
        await store.get_task("t")
    with pytest.raises(StoreError):
        await store.add_task(TaskSpec("u", "m"), source=API, now=T0)
    with pytest.raises(StoreError):
        await anext(store.active_tasks())
    with pytest.raises(StoreError):
        await store.list_deliveries()
    with pytest.raises(StoreError):
        await store.check_writable()


async def test_purge_finished_deletes_old_finished_tasks_and_their_records(
    store: AsyncStore,
) -> None:
    for name, at in (("old_1", T0), ("old_2", T0 + 1), ("recent", T0 + 100)):
        await add(store, name, at=at)
        _, _, (delivery,) = await finish(store, name, at)
        await attempt_on(store, delivery, at=at, ok=True)
    await add(store, "active", at=T0)
    await add(store, "old_pending", at=T0)
    _, _, (waiting,) = await finish(store, "old_pending", T0)  # its webhook is not delivered yet

    assert await store.purge_finished(before=T0 + 50, limit=1) == 1  # oldest first
    with pytest.raises(TaskNotFound):
        await store.get_task("old_1")
    assert await store.purge_finished(before=T0 + 50) == 1
    assert await store.purge_finished(before=T0 + 50) == 0

    left = {t.task_id for t in await all_tasks(store)}
    assert left == {"recent", "active", "old_pending"}
    deliveries, _ = await store.list_deliveries(limit=1000)
    assert {d.task_id for d in deliveries} == {"recent", "old_pending"}
    assert await store.attempts(waiting.delivery_id) == []
    with pytest.raises(TaskNotFound):
        await store.events_for_task("old_2")
    with pytest.raises(TaskNotFound):
        await store.state_changes("old_2")

    await attempt_on(store, waiting, at=T0 + 200, ok=True)
    assert await store.purge_finished(before=T0 + 50) == 1  # delivered now: it may go


async def all_tasks(store: AsyncStore) -> list[Task]:
    tasks, _ = await store.list_tasks(limit=1000)
    return tasks


# -- result mirroring ----------------------------------------------------------------------------


def mirror_file(task_id: str, position: int, at: float = T0) -> MirrorFile:
    return MirrorFile(
        task_id=task_id,
        position=position,
        source_url=f"https://cdn.example/{task_id}/{position}.png",
        key=f"{task_id}/{position}.png",
        status=MirrorStatus.PENDING,
        created_at=at,
        updated_at=at,
    )


async def succeed_held(store: AsyncStore, task_id: str, at: float, files: int = 2) -> MirrorHold:
    """Move a task to SUCCEEDED with its event held for `files` result files."""
    task = await store.get_task(task_id)
    hold = MirrorHold(
        make_event(task_id, at), tuple(mirror_file(task_id, i, at) for i in range(files))
    )
    await store.apply_transition(
        Transition(
            task_id=task_id,
            from_state=task.state,
            to_state=TaskState.SUCCEEDED,
            at=at,
            reason="upstream state success",
            upstream_state="success",
            mirror=hold,
        )
    )
    return hold


async def test_a_held_success_commits_the_state_and_the_files_but_no_event(
    store: AsyncStore,
) -> None:
    await add(store, "t1")
    hold = await succeed_held(store, "t1", T0 + 1)

    assert (await store.get_task("t1")).state is TaskState.SUCCEEDED
    assert await store.events_for_task("t1") == []  # not sent until the mirror is done
    assert await store.list_deliveries(task_id="t1") == ([], None)
    assert await store.mirror_files("t1") == list(hold.files)
    assert await store.held_mirrors() == [hold]
    assert await store.mirror_files("unknown") == []


async def test_update_mirror_files_records_progress(store: AsyncStore) -> None:
    await add(store, "t1")
    hold = await succeed_held(store, "t1", T0)
    done = dataclasses.replace(
        hold.files[1],
        status=MirrorStatus.DONE,
        updated_at=T0 + 5,
        sha256="ab" * 32,
        bytes=5 * 1024**3,  # over 32 bits
        content_type="image/png",
        attempts=2,
    )
    await store.update_mirror_files([done])
    failed = dataclasses.replace(
        hold.files[0], status=MirrorStatus.FAILED, error="HTTP 404", attempts=1, updated_at=T0 + 6
    )
    await store.update_mirror_files([failed])

    assert await store.mirror_files("t1") == [failed, done]
    [held] = await store.held_mirrors()
    assert held.files == (failed, done)
    with pytest.raises(StoreError):
        await store.update_mirror_files([mirror_file("t1", 7)])


async def test_update_mirror_files_records_a_batch_whole_or_not_at_all(store: AsyncStore) -> None:
    await add(store, "t1")
    hold = await succeed_held(store, "t1", T0)
    first, second = (
        dataclasses.replace(f, status=MirrorStatus.DONE, updated_at=T0 + 5, sha256=c * 64, bytes=9)
        for f, c in zip(hold.files, "ab", strict=True)
    )
    with pytest.raises(StoreError):
        await store.update_mirror_files([first, mirror_file("t1", 7)])
    assert await store.mirror_files("t1") == list(hold.files)  # nothing of the batch

    await store.update_mirror_files([first, second])
    assert await store.mirror_files("t1") == [first, second]


async def test_release_mirror_commits_the_event_and_deliveries_once(store: AsyncStore) -> None:
    await add(store, "t1")
    await add(store, "t2")
    await succeed_held(store, "t1", T0)
    await succeed_held(store, "t2", T0 + 1)
    final = make_event("t1", T0 + 9, n=2)
    deliveries = [make_delivery(final, "app"), make_delivery(final, "audit")]

    assert await store.release_mirror("t1", final, deliveries) is True
    assert await store.events_for_task("t1") == [final]
    pending = [d async for d in store.pending_deliveries()]
    assert {d.delivery_id for d in pending} == {d.delivery_id for d in deliveries}
    assert [h.event.task_id for h in await store.held_mirrors()] == ["t2"]
    assert len(await store.mirror_files("t1")) == 2  # kept for show and the task view

    again = make_event("t1", T0 + 10, n=3)
    assert await store.release_mirror("t1", again, [make_delivery(again, "app")]) is False
    assert await store.events_for_task("t1") == [final]  # never sent twice


async def test_a_release_that_cannot_be_written_keeps_the_hold(store: AsyncStore) -> None:
    await add(store, "t1")
    await add(store, "t2")
    await succeed_held(store, "t1", T0)
    _, existing, _ = await finish(store, "t2", T0)
    bad = make_delivery(existing, "app")  # its id is taken already

    with pytest.raises(StoreError):
        await store.release_mirror("t1", make_event("t1", T0 + 1, n=2), [bad])
    assert [h.event.task_id for h in await store.held_mirrors()] == ["t1"]
    assert await store.events_for_task("t1") == []


async def test_purge_keeps_a_held_success_and_drops_mirror_records(store: AsyncStore) -> None:
    await add(store, "held")
    await succeed_held(store, "held", T0)
    await add(store, "released")
    await succeed_held(store, "released", T0)
    final = make_event("released", T0, n=2)
    await store.release_mirror("released", final, [])

    assert await store.purge_finished(before=T0 + 50) == 1
    with pytest.raises(TaskNotFound):
        await store.get_task("released")
    assert await store.mirror_files("released") == []
    assert (await store.get_task("held")).state is TaskState.SUCCEEDED
    assert len(await store.mirror_files("held")) == 2


async def test_durations_are_kept_per_model_newest_last(store: AsyncStore) -> None:
    assert await store.recent_durations(10) == {}
    await store.record_durations([])
    await store.record_durations(
        [("nano-banana", 12.5, T0), ("sora-2", 120.0, T0 + 1), ("nano-banana", 10.0, T0 + 2)]
    )
    await store.record_durations([("nano-banana", 11.0, T0 + 3)])
    assert await store.recent_durations(10) == {
        "nano-banana": [12.5, 10.0, 11.0],
        "sora-2": [120.0],
    }
    assert await store.recent_durations(2) == {"nano-banana": [10.0, 11.0], "sora-2": [120.0]}
    assert await store.recent_durations(0) == {}


async def test_trim_durations_keeps_the_most_recent_per_model(store: AsyncStore) -> None:
    await store.record_durations([("a", float(i), T0 + i) for i in range(5)])
    await store.record_durations([("b", 100.0 + i, T0 + i) for i in range(2)])
    assert await store.trim_durations(3) == 2
    assert await store.trim_durations(3) == 0
    assert await store.recent_durations(100) == {"a": [2.0, 3.0, 4.0], "b": [100.0, 101.0]}
    await store.record_durations([("a", 9.0, T0 + 9)])
    assert await store.recent_durations(3) == {"a": [3.0, 4.0, 9.0], "b": [100.0, 101.0]}
