"""Copying a store in bulk (`apixo-watcher copy-store`): what moves in one batch, and the pure
decision about each record of it given what the target already holds.

A batch is some tasks with everything recorded about them (`TaskRecords`), so that each batch,
written in one transaction, leaves the target consistent: a finished task always arrives with
its event and deliveries (the outbox), and a success waiting for its mirror with its held event
and files, whenever a copy is interrupted.

The rules, the same for every run, which makes a second run change nothing:
- a record the target lacks is inserted as it is;
- a task or delivery the target holds is updated (the whole record) only when the source is
  further along: a later `updated_at`, or the same with more polls, then a longer deadline
  extension (tasks) or more attempts (deliveries). Events never change; state changes and
  attempts only grow, so the target's first n of a task (a delivery) are the source's first
  n and only the rest is inserted;
- a record the target holds as something else (a task with another model, an event with
  another body, a delivery of another event or endpoint or with another webhook-id) is a
  conflict: reported, not copied, and neither is anything recorded under it.

Result mirroring's records follow the same rules: a mirror file (by task and position) is
updated when the source is further along (a later `updated_at`, or more attempts); a held
event (by task) never changes and is a conflict when the target holds another one. The hold
moves with whoever is further along, so the webhook is sent once: a hold the target released
already (it holds the event) is not put back, and a hold the source released (the batch brings
its event) is dropped from the target with the event's arrival, counted as updated.

Learned polling durations (`task_durations`) have no identity but their values: the source's
n-th sample with some values (model, duration, finish time) is inserted only when the target
holds fewer than n with those values, so one already there is not inserted again; the others
are appended in the source's order (`plan_durations`).

No I/O and no clock here: watcher/store/sqlite_export.py reads the batches and
watcher/store/postgres_import.py writes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from watcher.models import Attempt, Delivery, Event, MirrorFile, StateChange, Task

R = TypeVar("R")

# The tables one batch of TaskRecords fills, parents first.
TASK_TABLES: Final = (
    "tasks",
    "state_changes",
    "events",
    "deliveries",
    "attempts",
    "mirror_holds",
    "mirror_files",
)
DURATION_TABLES: Final = ("task_durations",)
# One learned duration: (model, duration in seconds, when it finished: Unix seconds).
Duration = tuple[str, float, float]


@dataclass(frozen=True, slots=True)
class DurationRecord:
    """One learned duration of the source, and which of the source's samples with these very
    values it is (1 for the first recorded): equal samples are all kept, so that is what tells
    one already copied from one not yet, across batches and runs."""

    sample: Duration
    nth: int = 1


# What a record of each table is called in messages.
_NOUNS: Final = {
    "tasks": "task",
    "events": "event",
    "deliveries": "delivery",
    "mirror_holds": "held event of task",
    "mirror_files": "mirror file",
}
_SHOWN_MAX: Final = 80  # longer values are not quoted in conflict messages
_OPAQUE: Final = frozenset({"body"})  # a digest says nothing to a reader: never quoted


@dataclass(frozen=True, slots=True)
class TaskRecords:
    """Some tasks and everything recorded about them: one batch of a copy.

    Each child list is in the source's order: state changes oldest first per task, attempts
    oldest first per delivery, events in the order they were recorded (which orders events of
    one task created in the same instant). `mirror_holds` are the events held back for their
    mirror (one per task at most), `mirror_files` the files they wait for (or waited for).
    """

    tasks: Sequence[Task]
    state_changes: Sequence[StateChange] = ()
    events: Sequence[Event] = ()
    deliveries: Sequence[Delivery] = ()
    attempts: Sequence[Attempt] = ()
    mirror_holds: Sequence[Event] = ()
    mirror_files: Sequence[MirrorFile] = ()


@dataclass(slots=True)
class TableCounts:
    """What became of one table's source records. `skipped`: not copied because a record they
    belong to conflicts."""

    read: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0
    skipped: int = 0

    def add(self, other: TableCounts) -> None:
        """Add `other`'s counts to these."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True, slots=True)
class Conflict:
    """A source record the target holds as something else; it was not copied."""

    table: str
    key: str
    message: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What writing one batch did, per table (in copy order), and its conflicts."""

    counts: Mapping[str, TableCounts]
    conflicts: Sequence[Conflict] = ()


@dataclass(frozen=True, slots=True)
class Held:
    """What the target holds of one record: the fields that must match the source's
    (`identity`, by name) and how far along the record is (`progress`, compared as a tuple;
    None for a record that never changes)."""

    identity: Mapping[str, Any]
    progress: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class HeldRecords:
    """What the target holds of one batch's records: tasks, events (those of the batch and
    its held ones) and deliveries by id, how many state changes (per task) and attempts (per
    delivery) it has, held events by task and mirror files by `mirror_file_key`."""

    tasks: Mapping[str, Held] = field(default_factory=dict)
    state_change_counts: Mapping[str, int] = field(default_factory=dict)
    events: Mapping[str, Held] = field(default_factory=dict)
    deliveries: Mapping[str, Held] = field(default_factory=dict)
    attempt_counts: Mapping[str, int] = field(default_factory=dict)
    mirror_holds: Mapping[str, Held] = field(default_factory=dict)
    mirror_files: Mapping[str, Held] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskRecordsPlan:
    """What to write for one batch, in this order, and what that will have done."""

    new_tasks: list[Task]
    newer_tasks: list[Task]
    new_state_changes: list[StateChange]
    new_events: list[Event]
    new_deliveries: list[Delivery]
    newer_deliveries: list[Delivery]
    new_attempts: list[Attempt]
    released_holds: list[str]  # task ids whose hold the target drops (released in the source)
    new_holds: list[Event]
    new_mirror_files: list[MirrorFile]
    newer_mirror_files: list[MirrorFile]
    result: ImportResult


# -- what the target compares ----------------------------------------------------------------
def body_digest(body: bytes) -> str:
    """How an event's body is compared (the target sends back only this, not the body)."""
    return hashlib.sha256(body).hexdigest()


def held_task(model: str, updated_at: float, polls: int, deadline_extension_s: float) -> Held:
    """A task's identity (its model) and progress; the target reports its own the same way.
    Polls and deadline extensions are recorded without touching `updated_at`."""
    return Held({"model": model}, (updated_at, polls, deadline_extension_s))


def held_event(task_id: str, type_: str, created_at: float, digest: str) -> Held:
    """An event's identity (it never changes); `digest` is its body's `body_digest`."""
    return Held({"task": task_id, "type": type_, "created_at": created_at, "body": digest})


def held_delivery(
    event_id: str,
    task_id: str,
    event_type: str,
    endpoint: str,
    webhook_id: str,
    url: str | None,
    created_at: float,
    updated_at: float,
    attempts: int,
) -> Held:
    """A delivery's identity (what it sends where, under which webhook-id) and progress."""
    identity = {
        "event": event_id,
        "task": task_id,
        "event_type": event_type,
        "endpoint": endpoint,
        "webhook-id": webhook_id,
        "url": url,
        "created_at": created_at,
    }
    return Held(identity, (updated_at, attempts))


def held_hold(event_id: str, type_: str, created_at: float, digest: str) -> Held:
    """A held event's identity (it never changes until it is released); `digest` is its
    body's `body_digest`."""
    return Held({"event": event_id, "type": type_, "created_at": created_at, "body": digest})


def held_mirror_file(
    source_url: str, key: str, created_at: float, updated_at: float, attempts: int
) -> Held:
    """A mirror file's identity (what is copied where) and progress."""
    return Held(
        {"source_url": source_url, "key": key, "created_at": created_at}, (updated_at, attempts)
    )


def mirror_file_key(task_id: str, position: int) -> str:
    """How a mirror file is named in conflicts and in `HeldRecords.mirror_files`."""
    return f"{task_id}#{position}"


def _hold_held(e: Event) -> Held:
    return held_hold(e.event_id, e.type.value, e.created_at, body_digest(e.body))


def _mirror_file_held(f: MirrorFile) -> Held:
    return held_mirror_file(f.source_url, f.key, f.created_at, f.updated_at, f.attempts)


def _task_held(t: Task) -> Held:
    return held_task(t.model, t.updated_at, t.polls, t.deadline_extension_s)


def _event_held(e: Event) -> Held:
    return held_event(e.task_id, e.type.value, e.created_at, body_digest(e.body))


def _delivery_held(d: Delivery) -> Held:
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


def unstorable(task: Task) -> str | None:
    """Why the target cannot take `task` as it is, or None. PostgreSQL's json refuses NaN
    and Infinity, which Python's json (and so an old SQLite store) wrote."""
    try:
        json.dumps(task.metadata, allow_nan=False)
    except ValueError:
        return "its metadata holds NaN or Infinity, which PostgreSQL's JSON cannot store"
    return None


# -- the decisions ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Sorted(Generic[R]):
    new: list[R] = field(default_factory=list)
    newer: list[R] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    counts: TableCounts = field(default_factory=TableCounts)


def _sort(
    table: str,
    records: Iterable[R],
    key: Callable[[R], str],
    held: Mapping[str, Held],
    describe: Callable[[R], Held],
    refuse: Callable[[R], str | None] = lambda _: None,
) -> _Sorted[R]:
    """Each record: new, newer than the target's, unchanged, or a conflict."""
    out: _Sorted[R] = _Sorted()
    noun = _NOUNS[table]
    for record in records:
        out.counts.read += 1
        name = key(record)
        why = refuse(record)
        if why is not None:
            out.conflicts.append(Conflict(table, name, f"{noun} {name} cannot be copied: {why}"))
            continue
        theirs = held.get(name)
        if theirs is None:
            out.new.append(record)
            continue
        ours = describe(record)
        clash = _clash(noun, name, theirs.identity, ours.identity)
        if clash is not None:
            out.conflicts.append(Conflict(table, name, clash))
        elif (
            ours.progress is not None
            and theirs.progress is not None
            and (ours.progress > theirs.progress)
        ):
            out.newer.append(record)
        else:
            out.counts.unchanged += 1
    out.counts.new = len(out.new)
    out.counts.updated = len(out.newer)
    out.counts.conflicts = len(out.conflicts)
    return out


def _clash(noun: str, key: str, theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> str | None:
    for name, value in ours.items():
        there = theirs.get(name)
        if there != value:
            shown = name not in _OPAQUE and all(
                isinstance(v, (str, int, float)) and len(repr(v)) <= _SHOWN_MAX
                for v in (there, value)
            )
            what = f"{name} {there!r}, not {value!r}" if shown else f"another {name}"
            return f"{noun} {key} is already in the target store with {what}: not copied"
    return None


def _past_present(
    rows: Iterable[R], parent: Callable[[R], str], present: Mapping[str, int]
) -> tuple[list[R], int]:
    """The rows after the first `present[p]` rows of each parent p (rows in order per parent),
    and how many were before them (already there)."""
    seen: dict[str, int] = {}
    fresh: list[R] = []
    for row in rows:
        p = parent(row)
        seen[p] = seen.get(p, 0) + 1
        if seen[p] > present.get(p, 0):
            fresh.append(row)
    return fresh, sum(seen.values()) - len(fresh)


def _children(
    rows: Sequence[R], parent: Callable[[R], str], dropped: set[str], present: Mapping[str, int]
) -> tuple[list[R], TableCounts]:
    kept = [row for row in rows if parent(row) not in dropped]
    fresh, unchanged = _past_present(kept, parent, present)
    counts = TableCounts(
        read=len(rows), new=len(fresh), unchanged=unchanged, skipped=len(rows) - len(kept)
    )
    return fresh, counts


def plan_task_records(records: TaskRecords, held: HeldRecords) -> TaskRecordsPlan:
    """What to write of `records` into a target holding `held` (the module's rules)."""
    tasks = _sort("tasks", records.tasks, lambda t: t.task_id, held.tasks, _task_held, unstorable)
    dropped_tasks = {c.key for c in tasks.conflicts}
    changes, change_counts = _children(
        records.state_changes, lambda c: c.task_id, dropped_tasks, held.state_change_counts
    )

    live_events = [e for e in records.events if e.task_id not in dropped_tasks]
    events = _sort("events", live_events, lambda e: e.event_id, held.events, _event_held)
    events.counts.read = len(records.events)
    events.counts.skipped = len(records.events) - len(live_events)
    dropped_events = {c.key for c in events.conflicts}

    live_deliveries = [
        d
        for d in records.deliveries
        if d.task_id not in dropped_tasks and d.event_id not in dropped_events
    ]
    deliveries = _sort(
        "deliveries", live_deliveries, lambda d: d.delivery_id, held.deliveries, _delivery_held
    )
    deliveries.counts.read = len(records.deliveries)
    deliveries.counts.skipped = len(records.deliveries) - len(live_deliveries)
    live_ids = {d.delivery_id for d in live_deliveries}
    dropped_deliveries = {c.key for c in deliveries.conflicts}
    dropped_deliveries.update(
        d.delivery_id for d in records.deliveries if d.delivery_id not in live_ids
    )
    attempts, attempt_counts = _children(
        records.attempts, lambda a: a.delivery_id, dropped_deliveries, held.attempt_counts
    )

    holds, released, files = _plan_mirror(records, held, dropped_tasks)

    counts = {
        "tasks": tasks.counts,
        "state_changes": change_counts,
        "events": events.counts,
        "deliveries": deliveries.counts,
        "attempts": attempt_counts,
        "mirror_holds": holds.counts,
        "mirror_files": files.counts,
    }
    conflicts = [
        *tasks.conflicts,
        *events.conflicts,
        *deliveries.conflicts,
        *holds.conflicts,
        *files.conflicts,
    ]
    return TaskRecordsPlan(
        new_tasks=tasks.new,
        newer_tasks=tasks.newer,
        new_state_changes=changes,
        new_events=events.new,
        new_deliveries=deliveries.new,
        newer_deliveries=deliveries.newer,
        new_attempts=attempts,
        released_holds=released,
        new_holds=holds.new,
        new_mirror_files=files.new,
        newer_mirror_files=files.newer,
        result=ImportResult(counts, conflicts),
    )


def _plan_mirror(
    records: TaskRecords, held: HeldRecords, dropped_tasks: set[str]
) -> tuple[_Sorted[Event], list[str], _Sorted[MirrorFile]]:
    """The batch's held events and mirror files, and the target's holds the source released."""
    live_holds = [e for e in records.mirror_holds if e.task_id not in dropped_tasks]
    # A hold the target released already (it holds the event) stays released: put back, the
    # daemon would send that webhook a second time.
    released_there = [
        e for e in live_holds if e.task_id not in held.mirror_holds and e.event_id in held.events
    ]
    pending = [e for e in live_holds if e not in released_there]
    holds = _sort("mirror_holds", pending, lambda e: e.task_id, held.mirror_holds, _hold_held)
    holds.counts.read = len(records.mirror_holds)
    holds.counts.unchanged += len(released_there)
    holds.counts.skipped = len(records.mirror_holds) - len(live_holds)

    # The source released a hold the target still has: its event arrives in this batch.
    source_holds = {e.task_id for e in records.mirror_holds}
    batch_events = {e.event_id for e in records.events}
    released = [
        t.task_id
        for t in records.tasks
        if t.task_id not in dropped_tasks
        and t.task_id not in source_holds
        and t.task_id in held.mirror_holds
        and held.mirror_holds[t.task_id].identity["event"] in batch_events
    ]
    holds.counts.updated += len(released)

    dropped = dropped_tasks | {c.key for c in holds.conflicts}
    live_files = [f for f in records.mirror_files if f.task_id not in dropped]
    files = _sort(
        "mirror_files",
        live_files,
        lambda f: mirror_file_key(f.task_id, f.position),
        held.mirror_files,
        _mirror_file_held,
    )
    files.counts.read = len(records.mirror_files)
    files.counts.skipped = len(records.mirror_files) - len(live_files)
    return holds, released, files


def plan_durations(
    rows: Sequence[DurationRecord], held: Mapping[Duration, int]
) -> tuple[list[Duration], ImportResult]:
    """The learned durations of `rows` to insert into a target holding `held` of them (how
    many of each): the source's n-th sample of some values is there already when the target
    holds at least n of them, whoever recorded them. In the source's order."""
    fresh = [r.sample for r in rows if r.nth > held.get(r.sample, 0)]
    counts = TableCounts(read=len(rows), new=len(fresh), unchanged=len(rows) - len(fresh))
    return fresh, ImportResult({"task_durations": counts})
