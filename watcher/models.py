"""The domain records: tasks, their state changes, events, deliveries and attempts.

Plain data, no I/O. The store persists these; the scheduler and the sender act on them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class TaskState(enum.StrEnum):
    """Where a watched task stands, in the watcher's own words."""

    PENDING = "pending"  # registered; upstream says pending, or not asked yet
    PROCESSING = "processing"  # upstream says processing
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    NOT_FOUND = "not_found"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (TaskState.PENDING, TaskState.PROCESSING)


ACTIVE_STATES = (TaskState.PENDING, TaskState.PROCESSING)


class EventType(enum.StrEnum):
    """The webhook event types (contract section 6)."""

    PROCESSING = "task.processing"
    SUCCEEDED = "task.succeeded"
    FAILED = "task.failed"
    TIMED_OUT = "task.timed_out"
    NOT_FOUND = "task.not_found"


DEFAULT_EVENTS: frozenset[EventType] = frozenset(
    {EventType.SUCCEEDED, EventType.FAILED, EventType.TIMED_OUT, EventType.NOT_FOUND}
)

# The task state each event type moves a task into.
EVENT_STATE: Mapping[EventType, TaskState] = {
    EventType.PROCESSING: TaskState.PROCESSING,
    EventType.SUCCEEDED: TaskState.SUCCEEDED,
    EventType.FAILED: TaskState.FAILED,
    EventType.TIMED_OUT: TaskState.TIMED_OUT,
    EventType.NOT_FOUND: TaskState.NOT_FOUND,
}

# The pseudo endpoint name of deliveries to a task's ad-hoc `callback_url`. Configured endpoint
# names cannot start with "@", so it never collides with one.
CALLBACK_ENDPOINT = "@callback"


class TaskSource(enum.StrEnum):
    """Where a task registration came from."""

    API = "api"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A request to watch a task, as the intake API and the tasks file give it (validated)."""

    task_id: str
    model: str
    endpoints: tuple[str, ...] | None = None  # None: every endpoint whose events match
    callback_url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    deadline_s: float | None = None  # overrides the model's polling deadline


@dataclass(slots=True)
class Task:
    """A watched task as the store keeps it."""

    task_id: str
    model: str
    endpoints: tuple[str, ...] | None
    callback_url: str | None
    metadata: Mapping[str, Any]
    deadline_s: float | None
    source: TaskSource
    state: TaskState
    registered_at: float  # Unix seconds
    updated_at: float
    upstream_state: str | None = None  # the last `data.state` seen, verbatim
    polls: int = 0  # may lag the scheduler's live count by a flush interval
    finished_at: float | None = None
    last_error: str | None = None  # the last non-terminal upstream problem, for `show`
    # Seconds added to the deadline: time spent in credential pauses, and wall-clock steps (so
    # that registered_at + deadline + this stays the deadline in today's wall time).
    deadline_extension_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StateChange:
    """One recorded change of a task's state."""

    task_id: str
    from_state: TaskState
    to_state: TaskState
    at: float
    reason: str  # short, e.g. "upstream state processing", "deadline reached", "cancelled"
    upstream_state: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A webhook event. `body` is the exact JSON sent on every attempt of every delivery."""

    event_id: str  # evt_...
    task_id: str
    type: EventType
    created_at: float
    body: bytes


class DeliveryStatus(enum.StrEnum):
    """A delivery's status as the store keeps it."""

    PENDING = "pending"  # waiting for its next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # schedule used up, 410 Gone, or its endpoint was removed


class PublicDeliveryStatus(enum.StrEnum):
    """A delivery's `status` as the intake API, the CLI and /metrics show it: the stored
    status, with the pending deliveries whose last attempt failed told apart as `retrying`.

    Derived, never stored (`of`), so the store and the deliverer keep one pending status.
    """

    PENDING = "pending"  # due for its first attempt (of this round, after a redeliver)
    RETRYING = "retrying"  # its last attempt failed; the next one is due at next_attempt_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # schedule used up, 410 Gone, or its endpoint was removed

    @classmethod
    def of(cls, delivery: Delivery) -> PublicDeliveryStatus:
        if delivery.retrying:
            return cls.RETRYING
        return cls(delivery.status.value)

    def store_filter(self) -> tuple[DeliveryStatus, bool | None]:
        """The (status, retrying) filter of `Store.list_deliveries` that selects this status."""
        if self is PublicDeliveryStatus.RETRYING:
            return DeliveryStatus.PENDING, True
        if self is PublicDeliveryStatus.PENDING:
            return DeliveryStatus.PENDING, False
        return DeliveryStatus(self.value), None


@dataclass(slots=True)
class Delivery:
    """One event to one endpoint. Its `webhook_id` stays the same on every attempt."""

    delivery_id: str  # dlv_...
    event_id: str
    task_id: str
    event_type: EventType
    endpoint: str  # configured endpoint name, or CALLBACK_ENDPOINT
    webhook_id: str  # msg_...
    status: DeliveryStatus
    created_at: float
    updated_at: float
    next_attempt_at: float | None  # None once not pending
    url: str | None = None  # only for CALLBACK_ENDPOINT; configured endpoints resolve at send time
    attempts: int = 0  # attempts made in total
    schedule_pos: int = 0  # attempts made in the current round (redeliver starts a new round)
    last_status_code: int | None = None
    last_error: str | None = None

    @property
    def retrying(self) -> bool:
        """Pending after a failed attempt of its current round: the endpoint is failing, and
        the next attempt is due at `next_attempt_at` (a success or the end of the schedule
        would have ended the delivery; a redeliver starts a new round at 0)."""
        return self.status == DeliveryStatus.PENDING and self.schedule_pos > 0


class AttemptOutcome(enum.StrEnum):
    SUCCEEDED = "succeeded"  # 2xx
    RETRY = "retry"  # failed, another attempt is scheduled
    FAILED = "failed"  # failed, and the delivery is now failed (schedule used up, 410, ...)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt of a delivery."""

    delivery_id: str
    number: int  # 1-based, over the delivery's whole life
    started_at: float
    duration_ms: float
    outcome: AttemptOutcome
    status_code: int | None = None
    error: str | None = None  # e.g. "timeout", "connection refused", "HTTP 500"
    webhook_timestamp: int | None = None


class MirrorStatus(enum.StrEnum):
    """Where the copy of one result file stands (contract section 9)."""

    PENDING = "pending"  # not copied yet (a crash mid-download leaves it pending: restarted)
    DONE = "done"  # copied whole under its key; never fetched again
    FAILED = "failed"  # given up: its `timeout` ran out or it cannot be copied at all


@dataclass(slots=True)
class MirrorFile:
    """One result URL of a succeeded task and its copy under `key` in the mirror target."""

    task_id: str
    position: int  # its index in the task's result_urls
    source_url: str
    key: str  # where the copy goes, relative to the target (fixed when the file is recorded)
    status: MirrorStatus
    created_at: float
    updated_at: float
    sha256: str | None = None  # hex, of the bytes copied (DONE)
    bytes: int | None = None
    content_type: str | None = None
    error: str | None = None  # the last failure, in words (no secret)
    attempts: int = 0  # downloads started, over restarts too


@dataclass(frozen=True, slots=True)
class MirrorHold:
    """A `task.succeeded` event held back until its result files are mirrored.

    `event` is the event as built when the task succeeded (its webhook is not sent yet, and it
    is not among the task's events); `files` are the copies it waits for. Releasing the hold
    commits the final event (with `data.mirrored`) and its deliveries in one transaction.
    """

    event: Event
    files: tuple[MirrorFile, ...]


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change and everything it causes, committed by the store in one transaction.

    The transactional outbox: the task's new state, its state-change record, the event and the
    deliveries the event fans out to are all written, or none is.
    """

    task_id: str
    from_state: TaskState
    to_state: TaskState
    at: float
    reason: str
    upstream_state: str | None = None
    polls: int | None = None  # the scheduler's live poll count, persisted with the change
    event: Event | None = None
    deliveries: tuple[Delivery, ...] = ()
    # With mirroring on, a success holds its event back (no `event`, no `deliveries`): the
    # state change, the held event and the files to copy are committed together.
    mirror: MirrorHold | None = None


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What the polling decision says happened to a task; the event body is built from it."""

    type: EventType
    upstream: Mapping[str, Any] | None = None  # the upstream's `data` object, verbatim
    result: Mapping[str, Any] | None = None  # parsed `resultJson` (succeeded)
    result_urls: tuple[str, ...] = ()
    fail_code: str | None = None  # failed
    fail_msg: str | None = None
    last_state: str | None = None  # timed_out / not_found: the last upstream state seen
    watched_seconds: float | None = None  # timed_out / not_found
