"""The pure decisions of copy-store (watcher/store/bulk.py): what to write of a batch, given
what the target already holds."""

from __future__ import annotations

import dataclasses
import math

import pytest

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
    TaskState,
)
from watcher.store.bulk import (
    DurationRecord,
    Held,
    HeldRecords,
    TableCounts,
    TaskRecords,
    TaskRecordsPlan,
    body_digest,
    held_delivery,
    held_event,
    held_task,
    plan_durations,
    plan_task_records,
)

T0 = 1_700_000_000.0


def task(
    task_id: str,
    *,
    model: str = "m",
    updated_at: float = T0,
    polls: int = 0,
    extension_s: float = 0.0,
) -> Task:
    return Task(
        task_id=task_id,
        model=model,
        endpoints=None,
        callback_url=None,
        metadata={},
        deadline_s=None,
        source=TaskSource.API,
        state=TaskState.PENDING,
        registered_at=T0,
        updated_at=updated_at,
        polls=polls,
        deadline_extension_s=extension_s,
    )


def change(task_id: str, n: int) -> StateChange:
    return StateChange(task_id, TaskState.PENDING, TaskState.PROCESSING, T0 + n, f"change {n}")


def event(task_id: str, n: int = 1, body: bytes = b"{}") -> Event:
    return Event(f"evt_{task_id}_{n}", task_id, EventType.SUCCEEDED, T0 + n, body)


def delivery(
    ev: Event, endpoint: str = "app", *, updated_at: float = T0, attempts: int = 0
) -> Delivery:
    return Delivery(
        delivery_id=f"dlv_{ev.event_id}_{endpoint}",
        event_id=ev.event_id,
        task_id=ev.task_id,
        event_type=ev.type,
        endpoint=endpoint,
        webhook_id=f"msg_{ev.event_id}_{endpoint}",
        status=DeliveryStatus.PENDING,
        created_at=ev.created_at,
        updated_at=updated_at,
        next_attempt_at=ev.created_at,
        attempts=attempts,
    )


def attempt(d: Delivery, number: int) -> Attempt:
    return Attempt(d.delivery_id, number, T0 + number, 1.0, AttemptOutcome.RETRY)


def held_of_task(t: Task) -> Held:
    return held_task(t.model, t.updated_at, t.polls, t.deadline_extension_s)


def held_of_delivery(d: Delivery) -> Held:
    return held_delivery(
        d.event_id,
        d.task_id,
        d.event_type.value,
        d.endpoint,
        d.webhook_id,
        d.url,
        d.created_at,
        d.updated_at,
        d.attempts,
    )


def held_of_event(e: Event) -> Held:
    return held_event(e.task_id, e.type.value, e.created_at, body_digest(e.body))


def counts(plan: TaskRecordsPlan, table: str) -> TableCounts:
    return plan.result.counts[table]


# -- tasks -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("theirs", "ours", "expected"),
    [
        (None, task("t"), "new"),
        (task("t"), task("t"), "unchanged"),
        (task("t", updated_at=T0 + 5), task("t"), "unchanged"),  # the target is further along
        (task("t"), task("t", updated_at=T0 + 5), "updated"),
        (task("t", polls=3), task("t", polls=4), "updated"),  # record_polls leaves updated_at
        (task("t", polls=4, updated_at=T0 + 1), task("t", polls=9), "unchanged"),
        (task("t", extension_s=5), task("t", extension_s=65), "updated"),  # a credential pause
        (task("t", extension_s=65), task("t", extension_s=5), "unchanged"),
        (task("t", model="sora-2"), task("t", model="flux-2", updated_at=T0 + 9), "conflicts"),
    ],
)
def test_a_task_is_new_updated_unchanged_or_a_conflict(
    theirs: Task | None, ours: Task, expected: str
) -> None:
    held = HeldRecords(tasks={} if theirs is None else {"t": held_of_task(theirs)})

    plan = plan_task_records(TaskRecords([ours]), held)

    got = counts(plan, "tasks")
    assert getattr(got, expected) == 1
    assert got.read == 1
    assert sum(getattr(got, k) for k in ("new", "updated", "unchanged", "conflicts")) == 1
    assert plan.new_tasks == ([ours] if expected == "new" else [])
    assert plan.newer_tasks == ([ours] if expected == "updated" else [])


def test_a_conflict_says_which_task_and_both_models() -> None:
    held = HeldRecords(tasks={"t": held_task("sora-2", T0, 0, 0.0)})

    plan = plan_task_records(TaskRecords([task("t", model="flux-2")]), held)

    (conflict,) = plan.result.conflicts
    assert conflict.table == "tasks"
    assert conflict.key == "t"
    assert "task t is already in the target store with model 'sora-2', not 'flux-2'" in (
        conflict.message
    )


def test_nothing_recorded_under_a_conflicting_task_is_copied() -> None:
    ev = event("t")
    d = delivery(ev)
    records = TaskRecords(
        [task("t", model="flux-2"), task("u")],
        state_changes=[change("t", 1), change("u", 1)],
        events=[ev, event("u")],
        deliveries=[d, delivery(event("u"))],
        attempts=[attempt(d, 1), attempt(d, 2)],
    )

    plan = plan_task_records(records, HeldRecords(tasks={"t": held_task("sora-2", T0, 0, 0.0)}))

    assert [t.task_id for t in plan.new_tasks] == ["u"]
    assert [c.task_id for c in plan.new_state_changes] == ["u"]
    assert [e.task_id for e in plan.new_events] == ["u"]
    assert [x.task_id for x in plan.new_deliveries] == ["u"]
    assert plan.new_attempts == []
    assert counts(plan, "state_changes") == TableCounts(read=2, new=1, skipped=1)
    assert counts(plan, "events") == TableCounts(read=2, new=1, skipped=1)
    assert counts(plan, "deliveries") == TableCounts(read=2, new=1, skipped=1)
    assert counts(plan, "attempts") == TableCounts(read=2, skipped=2)


def test_a_task_whose_metadata_postgres_cannot_store_is_refused_alone() -> None:
    bad = dataclasses.replace(task("t"), metadata={"x": math.nan})

    plan = plan_task_records(TaskRecords([bad, task("u")], events=[event("t")]), HeldRecords())

    assert [t.task_id for t in plan.new_tasks] == ["u"]
    (conflict,) = plan.result.conflicts
    assert "NaN" in conflict.message
    assert counts(plan, "events").skipped == 1


# -- histories: state changes and attempts only grow ------------------------------------------
def test_only_the_state_changes_past_those_the_target_has_are_inserted() -> None:
    records = TaskRecords(
        [task("a"), task("b"), task("c")],
        state_changes=[change("a", 1), change("a", 2), change("a", 3), change("b", 1)],
    )
    held = HeldRecords(
        tasks={k: held_task("m", T0, 0, 0.0) for k in "ab"}, state_change_counts={"a": 2, "b": 1}
    )

    plan = plan_task_records(records, held)

    assert plan.new_state_changes == [change("a", 3)]
    assert counts(plan, "state_changes") == TableCounts(read=4, new=1, unchanged=3)


def test_only_the_attempts_past_those_the_target_has_are_inserted() -> None:
    ev = event("t")
    d = delivery(ev, attempts=3, updated_at=T0 + 3)
    records = TaskRecords(
        [task("t")],
        events=[ev],
        deliveries=[d],
        attempts=[attempt(d, 1), attempt(d, 2), attempt(d, 3)],
    )
    older = dataclasses.replace(d, attempts=1, updated_at=T0 + 1)
    held = HeldRecords(
        tasks={"t": held_task("m", T0, 0, 0.0)},
        events={ev.event_id: held_of_event(ev)},
        deliveries={d.delivery_id: held_of_delivery(older)},
        attempt_counts={d.delivery_id: 1},
    )

    plan = plan_task_records(records, held)

    assert plan.newer_deliveries == [d]
    assert plan.new_attempts == [attempt(d, 2), attempt(d, 3)]
    assert counts(plan, "attempts") == TableCounts(read=3, new=2, unchanged=1)
    assert counts(plan, "events") == TableCounts(read=1, unchanged=1)


# -- events and deliveries ----------------------------------------------------------------------
def test_an_event_with_another_body_is_a_conflict_and_its_deliveries_are_not_copied() -> None:
    ours = event("t", body=b'{"a":1}')
    d = delivery(ours)
    records = TaskRecords([task("t")], events=[ours], deliveries=[d], attempts=[attempt(d, 1)])
    theirs = dataclasses.replace(ours, body=b'{"a": 1}')
    held = HeldRecords(
        tasks={"t": held_task("m", T0, 0, 0.0)},
        events={ours.event_id: held_of_event(theirs)},
    )

    plan = plan_task_records(records, held)

    (conflict,) = plan.result.conflicts
    assert conflict.table == "events"
    assert "another body" in conflict.message
    assert plan.new_deliveries == []
    assert plan.new_attempts == []
    assert counts(plan, "deliveries") == TableCounts(read=1, skipped=1)
    assert counts(plan, "attempts") == TableCounts(read=1, skipped=1)


def test_a_delivery_with_another_webhook_id_is_a_conflict() -> None:
    ev = event("t")
    d = delivery(ev, updated_at=T0 + 9)
    theirs = dataclasses.replace(d, webhook_id="msg_other")
    held = HeldRecords(
        tasks={"t": held_task("m", T0, 0, 0.0)},
        events={ev.event_id: held_of_event(ev)},
        deliveries={d.delivery_id: held_of_delivery(theirs)},
    )

    plan = plan_task_records(TaskRecords([task("t")], events=[ev], deliveries=[d]), held)

    (conflict,) = plan.result.conflicts
    assert "webhook-id 'msg_other', not" in conflict.message
    assert plan.newer_deliveries == []


@pytest.mark.parametrize(
    ("theirs", "expected"),
    [
        ({"updated_at": T0 + 1, "attempts": 1}, "updated"),
        ({"updated_at": T0 + 2, "attempts": 1}, "updated"),  # same time, fewer attempts
        ({"updated_at": T0 + 2, "attempts": 2}, "unchanged"),
        ({"updated_at": T0 + 3, "attempts": 0}, "unchanged"),  # redelivered on the target
    ],
)
def test_a_delivery_is_updated_only_when_the_source_is_further_along(
    theirs: dict[str, float], expected: str
) -> None:
    ev = event("t")
    d = delivery(ev, updated_at=T0 + 2, attempts=2)
    held = HeldRecords(
        tasks={"t": held_task("m", T0, 0, 0.0)},
        events={ev.event_id: held_of_event(ev)},
        deliveries={d.delivery_id: held_of_delivery(dataclasses.replace(d, **theirs))},  # type: ignore[arg-type]
    )

    plan = plan_task_records(TaskRecords([task("t")], events=[ev], deliveries=[d]), held)

    assert getattr(counts(plan, "deliveries"), expected) == 1


@pytest.mark.parametrize(
    ("held", "fresh"),
    [
        ({}, [("m", 1.0, 5.0), ("n", 2.0, 6.0), ("m", 1.0, 5.0)]),
        ({("m", 1.0, 5.0): 1}, [("n", 2.0, 6.0), ("m", 1.0, 5.0)]),  # an earlier batch's
        ({("m", 1.0, 5.0): 2, ("n", 2.0, 6.0): 3}, []),
    ],
)
def test_a_learned_duration_is_inserted_only_past_those_the_target_has(
    held: dict[tuple[str, float, float], int], fresh: list[tuple[str, float, float]]
) -> None:
    rows = [
        DurationRecord(("m", 1.0, 5.0), 1),
        DurationRecord(("n", 2.0, 6.0), 1),
        DurationRecord(("m", 1.0, 5.0), 2),
    ]

    got, result = plan_durations(rows, held)

    assert got == fresh
    counts = result.counts["task_durations"]
    assert (counts.read, counts.new, counts.unchanged) == (3, len(fresh), 3 - len(fresh))
