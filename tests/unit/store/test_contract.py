"""The Store contract: one suite, run against MemoryStore and SqliteStore alike."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
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
    StateChange,
    Task,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.base import Store
from watcher.store.memory import MemoryStore
from watcher.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
API = TaskSource.API


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "w.db")
    yield s
    s.close()


def add(store: Store, task_id: str, *, at: float = T0, model: str = "nano-banana") -> Task:
    task, created = store.add_task(TaskSpec(task_id, model), source=API, now=at)
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


def finish(
    store: Store, task_id: str, at: float, endpoints: tuple[str, ...] = ("app",)
) -> tuple[Task, Event, list[Delivery]]:
    """Move a task to SUCCEEDED with an event fanned out to `endpoints`."""
    task = store.get_task(task_id)
    event = make_event(task_id, at)
    deliveries = [make_delivery(event, name) for name in endpoints]
    done = store.apply_transition(
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


def attempt_on(
    store: Store, delivery: Delivery, *, at: float, ok: bool, final: bool = False
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
    store.record_attempt(
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


def all_pages(store: Store, **kwargs: object) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        tasks, cursor = store.list_tasks(cursor=cursor, **kwargs)  # type: ignore[arg-type]
        ids += [t.task_id for t in tasks]
        if cursor is None:
            return ids


# -- adding tasks ------------------------------------------------------------------------------
def test_add_task_registers_a_pending_task(store: Store) -> None:
    spec = TaskSpec(
        "task_1",
        "nano-banana",
        endpoints=("app", "audit"),
        callback_url="https://cb.example/hook",
        metadata={"order_id": 42, "tags": ["a", "b"]},
        deadline_s=600.0,
    )
    task, created = store.add_task(spec, source=TaskSource.FILE, now=T0)

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
    assert store.get_task("task_1") == task
    assert store.state_changes("task_1") == []


def test_adding_a_known_task_with_the_same_model_returns_it_unchanged(store: Store) -> None:
    first, _ = store.add_task(TaskSpec("t", "flux-2", metadata={"v": 1}), source=API, now=T0)

    again, created = store.add_task(
        TaskSpec("t", "flux-2", metadata={"v": 2}, endpoints=("x",)),
        source=TaskSource.FILE,
        now=T0 + 60,
    )

    assert not created
    assert again == first
    assert store.get_task("t") == first


def test_adding_a_known_task_with_another_model_is_a_conflict(store: Store) -> None:
    first = add(store, "task_9", model="nano-banana")

    with pytest.raises(TaskConflict) as info:
        store.add_task(TaskSpec("task_9", "sora-2"), source=API, now=T0 + 1)

    assert "task_9" in str(info.value)
    assert "nano-banana" in str(info.value)
    assert "sora-2" in str(info.value)
    assert store.get_task("task_9") == first


def test_add_tasks_registers_a_batch_in_order(store: Store) -> None:
    known = add(store, "b")

    results = store.add_tasks(
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
    assert store.get_task("a").source == TaskSource.FILE
    assert store.add_tasks([], source=API, now=T0) == []


def test_add_tasks_with_a_conflict_writes_nothing(store: Store) -> None:
    add(store, "known", model="flux-2")

    with pytest.raises(TaskConflict):
        store.add_tasks(
            [TaskSpec("new_1", "flux-2"), TaskSpec("known", "sora-2"), TaskSpec("new_2", "flux-2")],
            source=API,
            now=T0,
        )

    for task_id in ("new_1", "new_2"):
        with pytest.raises(TaskNotFound):
            store.get_task(task_id)
    assert store.count_tasks() == {TaskState.PENDING: 1}


def test_a_conflict_within_one_batch_writes_nothing(store: Store) -> None:
    with pytest.raises(TaskConflict):
        store.add_tasks([TaskSpec("x", "flux-2"), TaskSpec("x", "sora-2")], source=API, now=T0)

    assert dict(store.count_tasks()) == {}


def test_get_task_of_an_unknown_id_raises_task_not_found(store: Store) -> None:
    with pytest.raises(TaskNotFound, match="nope"):
        store.get_task("nope")


# -- listing -----------------------------------------------------------------------------------
def test_list_tasks_is_newest_first_and_filters_by_state(store: Store) -> None:
    for i, task_id in enumerate(["t1", "t2", "t3", "t4"]):
        add(store, task_id, at=T0 + i)
    store.cancel_task("t2", now=T0 + 10)

    tasks, cursor = store.list_tasks()
    assert [t.task_id for t in tasks] == ["t4", "t3", "t2", "t1"]
    assert cursor is None

    pending, _ = store.list_tasks(state=TaskState.PENDING)
    assert [t.task_id for t in pending] == ["t4", "t3", "t1"]
    cancelled, _ = store.list_tasks(state=TaskState.CANCELLED)
    assert [t.task_id for t in cancelled] == ["t2"]
    assert store.list_tasks(state=TaskState.FAILED) == ([], None)


def test_list_tasks_pages_are_stable_when_tasks_arrive_between_pages(store: Store) -> None:
    # Ties on registered_at are ordered by task_id, and a page may end inside a tie.
    times = {"a": T0, "b": T0 + 1, "c": T0 + 1, "d": T0 + 1, "e": T0 + 2, "f": T0 + 3, "g": T0 + 3}
    for task_id, at in times.items():
        add(store, task_id, at=at)

    first, cursor = store.list_tasks(limit=3)
    assert [t.task_id for t in first] == ["g", "f", "e"]
    assert cursor is not None
    add(store, "h", at=T0 + 4)  # newer: belongs before the first page, not in later ones
    add(store, "bb", at=T0 + 1)  # inside an already listed time span, after the cursor
    second, cursor = store.list_tasks(limit=3, cursor=cursor)
    assert [t.task_id for t in second] == ["d", "c", "bb"]
    third, cursor = store.list_tasks(limit=3, cursor=cursor)
    assert [t.task_id for t in third] == ["b", "a"]
    assert cursor is None


def test_list_tasks_pages_with_a_state_filter(store: Store) -> None:
    for i in range(7):
        add(store, f"t{i}", at=T0 + i)
    store.cancel_task("t3", now=T0 + 10)

    assert all_pages(store, limit=2, state=TaskState.PENDING) == [
        "t6",
        "t5",
        "t4",
        "t2",
        "t1",
        "t0",
    ]
    assert all_pages(store, limit=1) == [f"t{i}" for i in reversed(range(7))]


def test_list_tasks_clamps_the_limit(store: Store) -> None:
    store.add_tasks([TaskSpec(f"t{i:04d}", "m") for i in range(1001)], source=API, now=T0)

    tasks, cursor = store.list_tasks(limit=5000)
    assert len(tasks) == 1000
    assert cursor is not None
    rest, cursor = store.list_tasks(limit=5000, cursor=cursor)
    assert [t.task_id for t in rest] == ["t0000"]
    assert cursor is None
    one, _ = store.list_tasks(limit=0)
    assert [t.task_id for t in one] == ["t1000"]


@pytest.mark.parametrize("cursor", ["garbage!", "", "bm90IGEgY3Vyc29y", "aW5mfHg"])
def test_an_invalid_cursor_is_refused(store: Store, cursor: str) -> None:
    add(store, "t")
    with pytest.raises(InvalidCursor):
        store.list_tasks(cursor=cursor)
    with pytest.raises(InvalidCursor):
        store.list_deliveries(cursor=cursor)


def test_active_tasks_are_the_pending_and_processing_ones(store: Store) -> None:
    for task_id in ("p", "q", "c", "s"):
        add(store, task_id)
    store.apply_transition(
        Transition("q", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "upstream processing")
    )
    store.cancel_task("c", now=T0 + 2)
    finish(store, "s", T0 + 3)

    active = store.active_tasks()

    assert isinstance(active, Iterator)
    assert sorted((t.task_id, t.state) for t in active) == [
        ("p", TaskState.PENDING),
        ("q", TaskState.PROCESSING),
    ]


def test_count_tasks_per_state(store: Store) -> None:
    for task_id in ("a", "b", "c", "d"):
        add(store, task_id)
    store.cancel_task("a", now=T0)
    finish(store, "b", T0)

    assert dict(store.count_tasks()) == {
        TaskState.PENDING: 2,
        TaskState.CANCELLED: 1,
        TaskState.SUCCEEDED: 1,
    }


# -- transitions -------------------------------------------------------------------------------
def test_a_transition_to_processing_updates_the_task_and_records_the_change(store: Store) -> None:
    add(store, "t")

    task = store.apply_transition(
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
    assert store.get_task("t") == task
    assert store.state_changes("t") == [
        StateChange(
            "t",
            TaskState.PENDING,
            TaskState.PROCESSING,
            T0 + 4,
            "upstream state processing",
            "processing",
        )
    ]
    assert store.events_for_task("t") == []


def test_a_terminal_transition_commits_the_event_and_every_delivery(store: Store) -> None:
    add(store, "t")
    store.record_polls({"t": 6}, errors={"t": "HTTP 500"})

    task, event, deliveries = finish(store, "t", T0 + 12.5, endpoints=("app", "audit", "@callback"))

    assert task.state == TaskState.SUCCEEDED
    assert (task.finished_at, task.updated_at, task.polls) == (T0 + 12.5, T0 + 12.5, 7)
    assert task.last_error is None
    assert task.upstream_state == "success"
    assert store.get_task("t") == task
    assert store.get_event(event.event_id) == event
    assert store.events_for_task("t") == [event]
    for delivery in deliveries:
        assert store.get_delivery(delivery.delivery_id) == delivery
    listed, _ = store.list_deliveries(task_id="t")
    assert sorted(d.delivery_id for d in listed) == sorted(d.delivery_id for d in deliveries)
    assert sorted(d.endpoint for d in store.pending_deliveries()) == ["@callback", "app", "audit"]
    assert [c.to_state for c in store.state_changes("t")] == [TaskState.SUCCEEDED]


def test_a_transition_without_upstream_state_keeps_the_last_one_seen(store: Store) -> None:
    add(store, "t")
    store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PROCESSING, T0, "r", upstream_state="processing"
        )
    )
    timed_out = make_event("t", T0 + 9, type_=EventType.TIMED_OUT)

    task = store.apply_transition(
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


def test_a_transition_to_the_same_state_records_no_state_change(store: Store) -> None:
    add(store, "t")

    task = store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PENDING, T0 + 1, "still pending", "pending", polls=2
        )
    )

    assert (task.state, task.polls, task.upstream_state) == (TaskState.PENDING, 2, "pending")
    assert store.state_changes("t") == []


def test_a_transition_of_a_finished_task_raises_and_writes_nothing(store: Store) -> None:
    add(store, "t")
    store.cancel_task("t", now=T0 + 1)
    before = (store.get_task("t"), store.state_changes("t"))
    event = make_event("t", T0 + 2)

    with pytest.raises(TaskFinished):
        store.apply_transition(
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

    assert (store.get_task("t"), store.state_changes("t")) == before
    assert store.events_for_task("t") == []
    assert store.list_deliveries() == ([], None)
    with pytest.raises(StoreError):
        store.get_event(event.event_id)


def test_a_transition_of_an_unknown_task_raises_task_not_found(store: Store) -> None:
    with pytest.raises(TaskNotFound):
        store.apply_transition(
            Transition("ghost", TaskState.PENDING, TaskState.PROCESSING, T0, "r")
        )


def test_a_transition_that_cannot_be_written_leaves_nothing_behind(store: Store) -> None:
    add(store, "first")
    _, _, (taken,) = finish(store, "first", T0)
    add(store, "t")
    event = make_event("t", T0 + 1)
    clash = make_delivery(event, "audit", delivery_id=taken.delivery_id)

    with pytest.raises(StoreError):
        store.apply_transition(
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

    assert store.get_task("t").state == TaskState.PENDING
    assert store.state_changes("t") == []
    assert store.events_for_task("t") == []
    assert store.list_deliveries(task_id="t") == ([], None)
    assert store.get_delivery(taken.delivery_id) == taken


def test_a_delivery_of_an_unknown_event_is_refused(store: Store) -> None:
    add(store, "t")
    orphan = make_delivery(make_event("t", T0), "app")

    with pytest.raises(StoreError):
        store.apply_transition(
            Transition("t", TaskState.PENDING, TaskState.FAILED, T0, "r", deliveries=(orphan,))
        )

    assert store.get_task("t").state == TaskState.PENDING


# -- cancel, polls, state changes ---------------------------------------------------------------
def test_cancel_task(store: Store) -> None:
    add(store, "t")
    store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "r", upstream_state="processing"
        )
    )
    store.record_polls({}, errors={"t": "HTTP 503"})

    task = store.cancel_task("t", now=T0 + 5)

    assert (task.state, task.finished_at, task.updated_at) == (TaskState.CANCELLED, T0 + 5, T0 + 5)
    assert task.last_error is None
    assert store.get_task("t") == task
    assert store.state_changes("t")[-1] == StateChange(
        "t", TaskState.PROCESSING, TaskState.CANCELLED, T0 + 5, "cancelled", None
    )
    assert store.events_for_task("t") == []
    assert list(store.active_tasks()) == []
    with pytest.raises(TaskFinished):
        store.cancel_task("t", now=T0 + 6)
    with pytest.raises(TaskNotFound):
        store.cancel_task("ghost", now=T0)


def test_record_polls_persists_counts_and_errors(store: Store) -> None:
    for task_id in ("a", "b", "done"):
        add(store, task_id)
    finish(store, "done", T0 + 1)

    store.record_polls({"a": 5, "b": 2, "ghost": 9}, errors={"a": "HTTP 500", "ghost": "x"})
    store.record_polls({"b": 3}, errors={"a": None, "b": "timeout", "done": "late"})

    a, b, done = (store.get_task(i) for i in ("a", "b", "done"))
    assert (a.polls, a.last_error) == (5, None)
    assert (b.polls, b.last_error) == (3, "timeout")
    assert done.last_error is None  # a finished task's error stays cleared
    assert store.state_changes("a") == []
    store.record_polls({}, errors={})


def test_state_changes_are_oldest_first(store: Store) -> None:
    add(store, "t")
    store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "upstream state processing"
        )
    )
    finish(store, "t", T0 + 2)

    changes = store.state_changes("t")

    assert [(c.from_state, c.to_state, c.at) for c in changes] == [
        (TaskState.PENDING, TaskState.PROCESSING, T0 + 1),
        (TaskState.PROCESSING, TaskState.SUCCEEDED, T0 + 2),
    ]
    assert changes[1].upstream_state == "success"
    with pytest.raises(TaskNotFound):
        store.state_changes("ghost")


# -- events ------------------------------------------------------------------------------------
def test_events_for_task_are_oldest_first(store: Store) -> None:
    add(store, "t")
    processing = make_event("t", T0 + 1, n=1, type_=EventType.PROCESSING)
    store.apply_transition(
        Transition("t", TaskState.PENDING, TaskState.PROCESSING, T0 + 1, "r", event=processing)
    )
    failed = make_event("t", T0 + 2, n=2, type_=EventType.FAILED)
    store.apply_transition(
        Transition("t", TaskState.PROCESSING, TaskState.FAILED, T0 + 2, "r", event=failed)
    )

    assert store.events_for_task("t") == [processing, failed]
    assert store.get_event(failed.event_id).body == failed.body
    with pytest.raises(TaskNotFound):
        store.events_for_task("ghost")
    with pytest.raises(StoreError):
        store.get_event("evt_ghost")


# -- deliveries --------------------------------------------------------------------------------
def test_list_deliveries_newest_first_with_filters(store: Store) -> None:
    for i, task_id in enumerate(("a", "b", "c")):
        add(store, task_id, at=T0 + i)
        finish(store, task_id, T0 + 10 * (i + 1), endpoints=("app", "audit"))
    (a_audit, a_app), _ = store.list_deliveries(task_id="a")
    attempt_on(store, a_app, at=T0 + 50, ok=True)
    attempt_on(store, a_audit, at=T0 + 50, ok=False, final=True)

    everything, cursor = store.list_deliveries()
    assert [(d.task_id, d.endpoint) for d in everything] == [
        ("c", "audit"),
        ("c", "app"),
        ("b", "audit"),
        ("b", "app"),
        ("a", "audit"),
        ("a", "app"),
    ]
    assert cursor is None
    failed, _ = store.list_deliveries(status=DeliveryStatus.FAILED)
    assert [d.delivery_id for d in failed] == [a_audit.delivery_id]
    pending_b, _ = store.list_deliveries(status=DeliveryStatus.PENDING, task_id="b")
    assert [d.endpoint for d in pending_b] == ["audit", "app"]
    assert store.list_deliveries(status=DeliveryStatus.SUCCEEDED, task_id="b") == ([], None)
    assert store.list_deliveries(task_id="ghost") == ([], None)


def test_list_deliveries_pages_are_stable_when_deliveries_arrive(store: Store) -> None:
    for i, task_id in enumerate(("a", "b", "c")):
        add(store, task_id)
        finish(store, task_id, T0 + i, endpoints=("e1", "e2"))

    page, cursor = store.list_deliveries(limit=4)
    seen = [d.delivery_id for d in page]
    add(store, "late")
    finish(store, "late", T0 + 100, endpoints=("e1",))
    while cursor is not None:
        page, cursor = store.list_deliveries(limit=4, cursor=cursor)
        seen += [d.delivery_id for d in page]

    assert seen == [f"dlv_evt_{task_id}_1_{e}" for task_id in ("c", "b", "a") for e in ("e2", "e1")]


def test_pending_deliveries_and_counts(store: Store) -> None:
    add(store, "t")
    _, _, (d1, d2, d3) = finish(store, "t", T0, endpoints=("one", "two", "three"))
    attempt_on(store, d1, at=T0 + 1, ok=True)
    attempt_on(store, d2, at=T0 + 1, ok=False)  # retry: still pending
    attempt_on(store, d3, at=T0 + 1, ok=False, final=True)

    pending = store.pending_deliveries()

    assert isinstance(pending, Iterator)
    assert [d.delivery_id for d in pending] == [d2.delivery_id]
    assert dict(store.count_deliveries()) == {
        DeliveryStatus.SUCCEEDED: 1,
        DeliveryStatus.PENDING: 1,
        DeliveryStatus.FAILED: 1,
    }


def test_retrying_deliveries_are_the_pending_ones_whose_last_attempt_failed(
    store: Store,
) -> None:
    add(store, "t")
    names = ("fresh", "retried", "done", "failed", "requeued")
    _, _, (fresh, retried, done, failed, requeued) = finish(store, "t", T0, endpoints=names)
    attempt_on(store, retried, at=T0 + 1, ok=False)
    attempt_on(store, done, at=T0 + 1, ok=True)
    attempt_on(store, failed, at=T0 + 1, ok=False, final=True)
    attempt_on(store, requeued, at=T0 + 1, ok=False)
    store.requeue_delivery(requeued.delivery_id, now=T0 + 2)  # a new round: not retrying

    def ids(page: tuple[list[Delivery], str | None]) -> set[str]:
        return {d.delivery_id for d in page[0]}

    assert [d.retrying for d in (store.get_delivery(d.delivery_id) for d in (fresh, retried))] == [
        False,
        True,
    ]
    assert ids(store.list_deliveries(retrying=True)) == {retried.delivery_id}
    assert ids(store.list_deliveries(status=DeliveryStatus.PENDING, retrying=True)) == {
        retried.delivery_id
    }
    assert ids(store.list_deliveries(status=DeliveryStatus.PENDING, retrying=False)) == {
        fresh.delivery_id,
        requeued.delivery_id,
    }
    assert ids(store.list_deliveries(retrying=False)) == {
        d.delivery_id for d in (fresh, done, failed, requeued)
    }
    assert store.list_deliveries(status=DeliveryStatus.FAILED, retrying=True) == ([], None)
    assert store.list_deliveries(task_id="ghost", retrying=True) == ([], None)
    assert store.count_retrying_deliveries() == 1
    # count_deliveries keeps counting the stored status: retrying ones are pending there.
    assert store.count_deliveries()[DeliveryStatus.PENDING] == 3


def test_list_deliveries_pages_through_the_retrying_ones(store: Store) -> None:
    for i, task_id in enumerate(("a", "b", "c")):
        add(store, task_id)
        _, _, (app, _audit) = finish(store, task_id, T0 + i, endpoints=("app", "audit"))
        attempt_on(store, app, at=T0 + 10, ok=False)

    page, cursor = store.list_deliveries(retrying=True, limit=2)
    seen = [d.task_id for d in page]
    while cursor is not None:
        page, cursor = store.list_deliveries(retrying=True, limit=2, cursor=cursor)
        seen += [d.task_id for d in page]

    assert seen == ["c", "b", "a"]
    assert store.count_retrying_deliveries() == 3


def test_record_attempt_commits_the_attempt_and_the_delivery(store: Store) -> None:
    add(store, "t")
    _, _, (delivery,) = finish(store, "t", T0)

    retried = attempt_on(store, delivery, at=T0 + 1, ok=False)
    done = attempt_on(store, retried, at=T0 + 6, ok=True)

    assert store.get_delivery(delivery.delivery_id) == done
    assert (done.status, done.attempts, done.next_attempt_at) == (DeliveryStatus.SUCCEEDED, 2, None)
    attempts = store.attempts(delivery.delivery_id)
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [
        (1, AttemptOutcome.RETRY, 500),
        (2, AttemptOutcome.SUCCEEDED, 200),
    ]
    assert attempts[0] == Attempt(
        delivery.delivery_id, 1, T0 + 1, 12.5, AttemptOutcome.RETRY, 500, "HTTP 500", int(T0 + 1)
    )


def test_record_attempt_of_an_unknown_delivery_writes_nothing(store: Store) -> None:
    add(store, "t")
    _, _, (delivery,) = finish(store, "t", T0)
    ghost = dataclasses.replace(delivery, delivery_id="dlv_ghost")

    with pytest.raises(DeliveryNotFound):
        store.record_attempt(Attempt("dlv_ghost", 1, T0, 1.0, AttemptOutcome.SUCCEEDED, 200), ghost)

    with pytest.raises(DeliveryNotFound):
        store.attempts("dlv_ghost")
    assert store.attempts(delivery.delivery_id) == []
    assert len(store.list_deliveries()[0]) == 1


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


def test_record_attempts_commits_many_attempts_at_once(store: Store) -> None:
    add(store, "t")
    _, _, deliveries = finish(store, "t", T0, endpoints=("a", "b", "c"))

    batch = [_succeeded(d, T0 + 1 + i) for i, d in enumerate(deliveries)]
    store.record_attempts(batch)

    for attempt, updated in batch:
        assert store.get_delivery(updated.delivery_id) == updated
        assert store.attempts(updated.delivery_id) == [attempt]
    assert list(store.pending_deliveries()) == []
    store.record_attempts([])  # an empty batch is a no-op


def test_record_attempts_with_one_unknown_delivery_writes_nothing(store: Store) -> None:
    add(store, "t")
    _, _, (delivery,) = finish(store, "t", T0)
    ghost = dataclasses.replace(delivery, delivery_id="dlv_ghost")

    with pytest.raises(DeliveryNotFound):
        store.record_attempts([_succeeded(delivery, T0 + 1), _succeeded(ghost, T0 + 1)])

    assert store.attempts(delivery.delivery_id) == []
    assert store.get_delivery(delivery.delivery_id) == delivery


def test_event_bodies_reads_many_bodies_and_skips_unknown_ids(store: Store) -> None:
    events = []
    for task_id in ("t1", "t2"):
        add(store, task_id)
        _, event, _ = finish(store, task_id, T0)
        events.append(event)

    bodies = store.event_bodies([events[0].event_id, "evt_ghost", events[1].event_id])

    assert bodies == {e.event_id: e.body for e in events}
    assert store.event_bodies([]) == {}


def test_requeue_delivery_starts_a_new_round_with_the_same_webhook_id(store: Store) -> None:
    add(store, "t")
    _, _, (delivery,) = finish(store, "t", T0)
    first = attempt_on(store, delivery, at=T0 + 1, ok=False)
    failed = attempt_on(store, first, at=T0 + 6, ok=False, final=True)
    assert failed.status == DeliveryStatus.FAILED

    again = store.requeue_delivery(delivery.delivery_id, now=T0 + 100)

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
    assert store.get_delivery(delivery.delivery_id) == again
    assert [d.delivery_id for d in store.pending_deliveries()] == [delivery.delivery_id]
    assert len(store.attempts(delivery.delivery_id)) == 2


def test_requeue_works_on_a_succeeded_delivery_too(store: Store) -> None:
    add(store, "t")
    _, _, (delivery,) = finish(store, "t", T0)
    attempt_on(store, delivery, at=T0 + 1, ok=True)

    again = store.requeue_delivery(delivery.delivery_id, now=T0 + 50)

    assert (again.status, again.attempts) == (DeliveryStatus.PENDING, 1)
    with pytest.raises(DeliveryNotFound):
        store.requeue_delivery("dlv_ghost", now=T0)
    with pytest.raises(DeliveryNotFound):
        store.get_delivery("dlv_ghost")


# -- copies and lifecycle ----------------------------------------------------------------------
def test_returned_and_given_records_are_copies(store: Store) -> None:
    metadata = {"order": {"id": 1}}
    task, _ = store.add_task(TaskSpec("t", "m", metadata=metadata), source=API, now=T0)
    metadata["order"]["id"] = 2  # the caller's dict changes after registration
    task.polls = 99
    task.metadata["order"]["id"] = 3
    listed, _ = store.list_tasks()
    listed[0].state = TaskState.FAILED
    next(store.active_tasks()).last_error = "mutated"

    assert store.get_task("t").metadata == {"order": {"id": 1}}
    assert (store.get_task("t").polls, store.get_task("t").state) == (0, TaskState.PENDING)
    assert store.get_task("t").last_error is None

    _, _, (delivery,) = finish(store, "t", T0)
    delivery.status = DeliveryStatus.FAILED  # the record given to apply_transition
    store.get_delivery(delivery.delivery_id).attempts = 7
    store.list_deliveries()[0][0].endpoint = "other"
    next(store.pending_deliveries()).webhook_id = "msg_other"
    store.requeue_delivery(delivery.delivery_id, now=T0).schedule_pos = 5

    stored = store.get_delivery(delivery.delivery_id)
    assert (stored.status, stored.attempts, stored.endpoint) == (DeliveryStatus.PENDING, 0, "app")
    assert (stored.webhook_id, stored.schedule_pos) == (delivery.webhook_id, 0)


def test_check_writable_and_close(store: Store) -> None:
    add(store, "t")
    store.check_writable()

    store.close()
    store.close()  # idempotent

    with pytest.raises(StoreError):
        store.get_task("t")
    with pytest.raises(StoreError):
        store.add_task(TaskSpec("u", "m"), source=API, now=T0)
    with pytest.raises(StoreError):
        store.active_tasks()
    with pytest.raises(StoreError):
        store.list_deliveries()
    with pytest.raises(StoreError):
        store.check_writable()


def test_purge_finished_deletes_old_finished_tasks_and_their_records(store: Store) -> None:
    for name, at in (("old_1", T0), ("old_2", T0 + 1), ("recent", T0 + 100)):
        add(store, name, at=at)
        _, _, (delivery,) = finish(store, name, at)
        attempt_on(store, delivery, at=at, ok=True)
    add(store, "active", at=T0)
    add(store, "old_pending", at=T0)
    _, _, (waiting,) = finish(store, "old_pending", T0)  # its webhook is not delivered yet

    assert store.purge_finished(before=T0 + 50, limit=1) == 1  # oldest first
    with pytest.raises(TaskNotFound):
        store.get_task("old_1")
    assert store.purge_finished(before=T0 + 50) == 1
    assert store.purge_finished(before=T0 + 50) == 0

    left = {t.task_id for t in all_tasks(store)}
    assert left == {"recent", "active", "old_pending"}
    deliveries, _ = store.list_deliveries(limit=1000)
    assert {d.task_id for d in deliveries} == {"recent", "old_pending"}
    assert store.attempts(waiting.delivery_id) == []
    with pytest.raises(TaskNotFound):
        store.events_for_task("old_2")
    with pytest.raises(TaskNotFound):
        store.state_changes("old_2")

    attempt_on(store, waiting, at=T0 + 200, ok=True)
    assert store.purge_finished(before=T0 + 50) == 1  # delivered now: it may go


def all_tasks(store: Store) -> list[Task]:
    tasks, _ = store.list_tasks(limit=1000)
    return tasks
