"""Domain operations on watched tasks: register, cancel, inspect, redeliver, and commit what the
scheduler decides.

The intake API, the tasks file importer and the daemon all go through `WatchService`, so a task
registered any way is persisted before it is watched, and every state change goes through the
store's transactional outbox before its webhooks are sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from watcher.clock import Clock, Timeline
from watcher.config.settings import Config, EndpointConfig
from watcher.delivery.events import build_event, plan_deliveries, with_mirror
from watcher.errors import (
    DeliveryError,
    EndpointNotFound,
    TaskConflict,
    TaskFinished,
    TaskNotHeld,
)
from watcher.mirror.plan import plan_files
from watcher.models import (
    EVENT_STATE,
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    MirrorFile,
    MirrorHold,
    PublicDeliveryStatus,
    StateChange,
    Task,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.base import AsyncStore, SpecColumns

if TYPE_CHECKING:
    from watcher.delivery.ping import PingResult
    from watcher.polling.decide import Decision, Watch
    from watcher.polling.learning import ModelStats

log = structlog.get_logger(__name__)


class Watching(Protocol):
    """The part of the scheduler the service drives."""

    def watch(self, task: Task) -> None: ...

    def watch_new(
        self,
        task_ids: Sequence[str],
        models: Sequence[str],
        deadlines_s: Sequence[float | None],
        *,
        registered_at: float,
    ) -> None: ...

    def unwatch(self, task_id: str) -> bool: ...

    def get(self, task_id: str) -> Watch | None: ...

    def wall_time(self, mono: float) -> float: ...

    def poll_soon(self, task_id: str) -> bool: ...

    def model_stats(self) -> list[ModelStats]: ...

    def expected_completion(self, task_id: str) -> tuple[float, float] | None: ...


class Delivering(Protocol):
    """The part of the deliverer the service drives."""

    def enqueue(self, deliveries: Iterable[Delivery]) -> None: ...

    async def ping(self, endpoint: EndpointConfig) -> PingResult: ...


class Mirroring(Protocol):
    """The part of the mirror worker the service drives."""

    def hold(self, hold: MirrorHold) -> None: ...


class FinishObserver(Protocol):
    """Measures how late we noticed a finished task (the daemon passes its Metrics)."""

    def detection_delay(self, model: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: Delivery
    attempts: list[Attempt]


@dataclass(frozen=True, slots=True)
class TaskView:
    """Everything about one task, for `show` and `GET /v1/tasks/{id}`."""

    task: Task
    next_poll_at: float | None
    state_changes: list[StateChange]
    events: list[Event]
    deliveries: list[DeliveryView]
    # Its result files' copies (contract section 9), in result_urls order; empty when off.
    mirror_files: list[MirrorFile] = dataclasses.field(default_factory=list)
    # A watched task's likely completion (Unix seconds, from its model's learned durations).
    expected_completion: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Cancellation:
    """The answer of a cancel: the task, now cancelled, and whether it already was."""

    task: Task
    already_cancelled: bool


class WatchService:
    """Registers and inspects tasks; the scheduler's TransitionSink."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        config: Config,
        clock: Clock,
        timeline: Timeline | None = None,
        scheduler: Watching | None = None,
        deliverer: Delivering | None = None,
        metrics: FinishObserver | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._config = config
        # Every time the service stores is a wall time read through the timeline the
        # scheduler and the deliverer convert with (see watcher.clock.Timeline.wall).
        self._timeline = timeline if timeline is not None else Timeline(clock)
        self._scheduler = scheduler
        self._deliverer = deliverer
        self._mirror: Mirroring | None = None
        # Several instances: passes a hint on to the instance that may hold the task.
        self._forward_hint: Callable[[str], None] | None = None

    # Wiring: the scheduler and deliverer need the service too, so they are attached after.
    def attach(self, *, scheduler: Watching, deliverer: Delivering) -> None:
        self._scheduler = scheduler
        self._deliverer = deliverer

    def forward_hints(self, forward: Callable[[str], None]) -> None:
        """Hand hints for tasks not watched here to `forward` (several instances)."""
        self._forward_hint = forward

    def attach_mirror(self, mirror: Mirroring) -> None:
        """Hold each success's webhook until `mirror` has copied its result files."""
        self._mirror = mirror

    @property
    def config(self) -> Config:
        return self._config

    @property
    def store(self) -> AsyncStore:
        return self._store

    def set_config(self, config: Config) -> None:
        self._config = config

    def endpoint_names(self) -> list[str]:
        return [e.name for e in self._config.endpoints]

    # -- registration -----------------------------------------------------------------------------
    async def register(self, spec: TaskSpec, *, source: TaskSource) -> tuple[Task, bool]:
        """Persist (committed on return) and start watching. Idempotent per task_id."""
        task, created = await self._store.add_task(spec, source=source, now=self._timeline.wall())
        if created:
            self._watch(task)
            log.info("task_registered", task_id=task.task_id, model=task.model, source=source.value)
        return task, created

    async def register_many(
        self, batch: SpecColumns, *, source: TaskSource
    ) -> list[tuple[bool, str | None]]:
        """Register a batch; returns (created, error) per spec in order.

        A conflicting spec is reported and skipped; the rest are committed together. The store
        answers only which specs created their task, and the new watches are built from the
        batch's columns (what the store keeps of a new task is the spec, pending, registered
        now): a big tasks file registers without a `Task`, or even a `TaskSpec`, per row.
        """
        now = self._timeline.wall()
        try:
            created = await self._store.add_tasks_bulk(batch, source=source, now=now)
        except TaskConflict:
            # Rare: fall back to one transaction per spec to tell which ones conflict.
            out: list[tuple[bool, str | None]] = []
            for i in range(len(batch)):
                try:
                    task, new = await self._store.add_task(batch.spec(i), source=source, now=now)
                except TaskConflict as exc:
                    out.append((False, exc.message))
                    continue
                if new:
                    self._watch(task)
                out.append((new, None))
            return out
        if self._scheduler is not None:
            self._scheduler.watch_new(
                list(compress(batch.task_ids, created)),
                list(compress(batch.models, created)),
                list(compress(batch.deadlines_s, created)),
                registered_at=now,
            )
        return [(new, None) for new in created]

    def _watch(self, task: Task) -> None:
        if self._scheduler is not None and not task.state.terminal:
            self._scheduler.watch(task)

    async def cancel(self, task_id: str) -> Cancellation:
        """Stop watching a task; no webhook is sent. Cancelling a cancelled task again answers
        it unchanged, marked `already_cancelled` (a retried DELETE must not fail, and a person
        should not be told twice that they cancelled it). TaskNotFound; TaskFinished if it
        finished on its own."""
        try:
            task = await self._store.cancel_task(task_id, now=self._timeline.wall())
        except TaskFinished:
            task = await self._store.get_task(task_id)
            if task.state is TaskState.CANCELLED:
                return Cancellation(task, already_cancelled=True)
            raise
        if self._scheduler is not None:
            self._scheduler.unwatch(task_id)
        log.info("task_cancelled", task_id=task_id)
        return Cancellation(task, already_cancelled=False)

    # -- inspection -------------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> Task:
        task = await self._store.get_task(task_id)
        self._overlay_live(task)
        return task

    async def list_tasks(
        self, *, state: TaskState | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        tasks, next_cursor = await self._store.list_tasks(state=state, limit=limit, cursor=cursor)
        for task in tasks:
            self._overlay_live(task)
        return tasks, next_cursor

    async def view(self, task_id: str) -> TaskView:
        task = await self.get_task(task_id)
        next_poll_at = None
        expected = None
        if self._scheduler is not None:
            watch = self._scheduler.get(task_id)
            if watch is not None and watch.next_poll_at is not None:
                next_poll_at = self._scheduler.wall_time(watch.next_poll_at)
            expected = self._scheduler.expected_completion(task_id)
        deliveries, _ = await self._store.list_deliveries(task_id=task_id, limit=1000)
        return TaskView(
            task=task,
            next_poll_at=next_poll_at,
            state_changes=await self._store.state_changes(task_id),
            events=await self._store.events_for_task(task_id),
            deliveries=[
                DeliveryView(d, await self._store.attempts(d.delivery_id))
                for d in reversed(deliveries)
            ],
            mirror_files=await self._store.mirror_files(task_id),
            expected_completion=expected,
        )

    # -- adaptive polling -------------------------------------------------------------------------
    def hint(self, task_id: str) -> bool:
        """A hint that `task_id` may be done (an upstream callback): if it is watched, poll it
        at once, within the budget; the poll decides. Whether it is watched."""
        if self._scheduler is None:
            return False
        if self._scheduler.poll_soon(task_id):
            return True
        if self._forward_hint is not None:
            self._forward_hint(task_id)  # another instance may hold it
        return False

    def model_stats(self) -> list[ModelStats]:
        """What was learned per model (GET /v1/stats/models)."""
        return self._scheduler.model_stats() if self._scheduler is not None else []

    def _overlay_live(self, task: Task) -> None:
        # Poll counts are flushed to the store in batches; the scheduler's count is fresher.
        if self._scheduler is None or task.state.terminal:
            return
        watch = self._scheduler.get(task.task_id)
        if watch is not None:
            task.polls = max(task.polls, watch.polls)
            task.last_error = watch.last_error

    async def list_deliveries(
        self,
        *,
        status: PublicDeliveryStatus | None = None,
        task_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """The delivery log, newest first; `status` is the public one (`retrying` included)."""
        stored: DeliveryStatus | None = None
        retrying: bool | None = None
        if status is not None:
            stored, retrying = status.store_filter()
        return await self._store.list_deliveries(
            status=stored, task_id=task_id, retrying=retrying, limit=limit, cursor=cursor
        )

    async def delivery_view(self, delivery_id: str) -> DeliveryView:
        delivery = await self._store.get_delivery(delivery_id)
        return DeliveryView(delivery, await self._store.attempts(delivery_id))

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Send a delivery again now: a new attempt, the same webhook-id, a fresh retry round."""
        delivery = await self._store.requeue_delivery(delivery_id, now=self._timeline.wall())
        if self._deliverer is not None:
            self._deliverer.enqueue([delivery])
        log.info("delivery_requeued", delivery_id=delivery_id, task_id=delivery.task_id)
        return delivery

    async def ping(self, endpoint_name: str) -> PingResult:
        """Send a signed `webhook.test` event to a configured endpoint now and wait for its
        answer; nothing is stored. EndpointNotFound if no endpoint has that name."""
        endpoint = next((e for e in self._config.endpoints if e.name == endpoint_name), None)
        if endpoint is None:
            raise EndpointNotFound(f"endpoint {endpoint_name!r} is not configured")
        if self._deliverer is None:
            raise DeliveryError("webhooks are not being sent (no deliverer)")
        return await self._deliverer.ping(endpoint)

    # -- the scheduler's sink ---------------------------------------------------------------------
    async def commit(self, watch: Watch, decision: Decision) -> bool:
        """Persist a decision's state change, event and deliveries (one transaction), then hand
        the deliveries to the deliverer. False when the task is no longer active."""
        now = self._timeline.wall()
        outcome = decision.outcome
        to_state = decision.new_state
        if outcome is not None:
            to_state = EVENT_STATE[outcome.type]
        if to_state is None:
            return True
        task = await self._store.get_task(watch.task_id)
        if task.state.terminal:
            return False
        event = None
        deliveries: tuple[Delivery, ...] = ()
        hold = None
        if outcome is not None:
            event = build_event(outcome, task, now=now)
        if (
            event is not None
            and outcome is not None
            and outcome.type is EventType.SUCCEEDED
            and outcome.result_urls
            and self._mirror is not None
        ):
            # The task is done upstream: that is committed now; its webhook waits for the copies.
            hold = MirrorHold(event, plan_files(task.task_id, outcome.result_urls, now=now))
            event = None
        elif event is not None:
            deliveries = plan_deliveries(
                event,
                task,
                self._config.endpoints,
                callback_enabled=self._config.delivery.callback_secret is not None,
                now=now,
                first_delay_s=self._config.delivery.retry_schedule_s[0],
            )
        transition = Transition(
            task_id=task.task_id,
            from_state=task.state,
            to_state=to_state,
            at=now,
            reason=decision.reason,
            upstream_state=decision.upstream_state,
            polls=watch.polls,
            event=event,
            deliveries=deliveries,
            mirror=hold,
        )
        try:
            await self._store.apply_transition(transition)
        except TaskFinished:
            return False
        except TaskNotHeld:
            log.warning("task_held_elsewhere", task_id=task.task_id)
            return False
        if deliveries and self._deliverer is not None:
            self._deliverer.enqueue(deliveries)
        if hold is not None and self._mirror is not None:
            self._mirror.hold(hold)
        if self._metrics is not None and outcome is not None and outcome.upstream is not None:
            completed_ms = outcome.upstream.get("completeTime")
            if isinstance(completed_ms, int | float) and not isinstance(completed_ms, bool):
                self._metrics.detection_delay(task.model, max(0.0, now - completed_ms / 1000))
        log.info(
            "task_finished" if to_state.terminal else "task_state_changed",
            task_id=task.task_id,
            model=task.model,
            from_state=task.state.value,
            to_state=to_state.value,
            event_type=event.type.value if event else None,
            deliveries=len(deliveries),
            polls=watch.polls,
            awaiting_mirror=len(hold.files) if hold is not None else None,
        )
        return True

    async def mirror_finished(self, hold: MirrorHold, extra: dict[str, Any]) -> None:
        """The mirror worker's hand-off: commit the held event, now with `extra` in its data,
        and its deliveries in one transaction, then send them. Sent once: a hold released
        already (by an earlier run or another instance) writes nothing."""
        now = self._timeline.wall()
        task = await self._store.get_task(hold.event.task_id)
        event = with_mirror(hold.event, extra, now=now)
        deliveries = plan_deliveries(
            event,
            task,
            self._config.endpoints,
            callback_enabled=self._config.delivery.callback_secret is not None,
            now=now,
            first_delay_s=self._config.delivery.retry_schedule_s[0],
        )
        if not await self._store.release_mirror(task.task_id, event, deliveries):
            return
        if deliveries and self._deliverer is not None:
            self._deliverer.enqueue(deliveries)
        log.info(
            "task_mirrored",
            task_id=task.task_id,
            model=task.model,
            mirrored=len(extra.get("mirrored") or ()),
            failed=len((extra.get("mirror_error") or {}).get("failed_urls") or ()),
            deliveries=len(deliveries),
        )

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        """Persist a credential pause (see Store.extend_deadlines)."""
        await self._store.extend_deadlines(since=since, until=until)
