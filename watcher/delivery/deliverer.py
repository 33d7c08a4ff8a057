"""The webhook dispatcher: sends pending deliveries when they are due, durably, at least once.

One in-memory heap of (due time, delivery id) drives every delivery; no coroutine sleeps per
delivery. The store is the truth: each attempt and the delivery's new state are committed
together, so after a crash or restart `start()` reloads every pending delivery and carries on
where its schedule stood. Attempts that finish in the same event-loop turn are committed in one
transaction (`store.record_attempts`, group commit); each attempt waits for that commit before
its delivery counts as done or is rescheduled, so a crash before the commit only means the
webhook is sent again, with the same `webhook-id`. An attempt cancelled by shutdown is not
recorded and stays pending, so it is sent again later (at-least-once; receivers dedupe by
`webhook-id`).

Concurrency: `delivery.max_concurrency` is the number of requests in flight *per endpoint*
(per host for ad-hoc callback URLs). Due deliveries wait in their endpoint's ready queue; up to
`max_concurrency` worker coroutines per endpoint take them one after another while the queue
has any (and end when it is empty), instead of one asyncio task per attempt. A slow or dead
endpoint ties up only its own workers and never blocks another endpoint.

Targets are resolved at attempt time from the current config, so a reload that changes an
endpoint's URL, secrets or headers applies to pending retries too. A delivery whose endpoint is
no longer configured fails with a recorded (unsent) attempt saying so. The HTTP side of an
attempt (its target, signed headers, the POST and its result) is in watcher/delivery/sender.py.

Time: the heap is keyed on the clock's monotonic time, so a step of the wall clock neither
delays nor hurries any attempt. A delivery's stored `next_attempt_at` is a wall time, converted
through the `Timeline` when it is loaded; the `webhook-timestamp` of an attempt is the real wall
time at that moment (the contract), whatever the clock did before.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlsplit

import aiohttp
import structlog

from watcher.clock import Clock, Timeline
from watcher.delivery import retry
from watcher.delivery.ping import PingResult, send_test_event
from watcher.delivery.sender import (
    Target,
    WebhookClient,
    callback_target,
    endpoint_target,
    request_headers,
)
from watcher.errors import InvalidSecret, StoreError, StoreUnavailable
from watcher.logs import log_time
from watcher.models import (
    CALLBACK_ENDPOINT,
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
)
from watcher.store.base import AsyncStore

if TYPE_CHECKING:
    from watcher.config.settings import DeliveryConfig, EndpointConfig

__all__ = [
    "BODY_CACHE_SIZE",
    "BODY_PREFETCH",
    "COMMIT_WINDOW_S",
    "IDLE_TICK_S",
    "Deliverer",
    "DeliveryObserver",
    "DeliveryStats",
    "Target",  # re-exported: it moved to watcher.delivery.sender
]

log = structlog.get_logger(__name__)

IDLE_TICK_S: Final = 1.0  # the loop reports progress at least this often, for the watchdog
BODY_CACHE_SIZE: Final = 1024  # event bodies kept in memory between retries
# On a cache miss, the bodies of up to this many deliveries waiting for the same slots are read
# with it in one query (a backlog would otherwise cost one SELECT per webhook).
BODY_PREFETCH: Final = 128
# Finished attempts are committed together within this window (or as soon as every attempt in
# flight has finished): one transaction for many instead of one each.
COMMIT_WINDOW_S: Final = 0.01
# Due times converted from stored Unix times (near 1.7e9) carry ~0.2 us of float error: an
# attempt due within this much is due.
DUE_SLACK_S: Final = 1e-6
# While the database cannot be reached, a delivery whose body cannot be read, or a batch of
# attempts that cannot be recorded, is tried again after this long.
STORE_RETRY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class _Finished:
    """An answered attempt waiting for the group commit."""

    delivery: Delivery  # as it was before the attempt
    decision: retry.Decision
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """What the dispatcher is doing, for metrics and the watchdog."""

    pending: int  # scheduled, waiting for their time or for a free slot
    in_flight: int
    last_progress_at: float  # the loop's last turn, in the clock's monotonic seconds


class DeliveryObserver(Protocol):
    """Receives per-attempt measurements (the daemon passes its Metrics)."""

    def webhook_attempt(self, endpoint: str, outcome: str, duration_s: float) -> None: ...

    def delivery_latency(self, endpoint: str, seconds: float) -> None: ...

    def contained_error(self, loop: str, error_type: str) -> None: ...


class Deliverer:
    """Sends webhook deliveries on their retry schedule. See the module docstring."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        delivery: DeliveryConfig,
        endpoints: Sequence[EndpointConfig],
        clock: Clock,
        timeline: Timeline | None = None,
        session: aiohttp.ClientSession | None = None,
        user_agent: str,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer
        self._clock = clock
        self._timeline = timeline if timeline is not None else Timeline(clock)
        self._user_agent = user_agent
        self._config = delivery
        self._endpoints = {endpoint.name: endpoint for endpoint in endpoints}
        self._targets: dict[str, Target] = {}  # resolved per configured endpoint, per config
        self._http = WebhookClient(session)
        # Scheduled deliveries by id, with the sequence number of their valid heap entry;
        # heap entries whose sequence differs are stale (the delivery was rescheduled). The
        # heap's due times are monotonic.
        self._scheduled: dict[str, tuple[int, Delivery]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        # Due deliveries waiting for a free slot, per slot key (endpoint), in due order.
        self._ready: dict[str, collections.deque[str]] = {}
        self._ready_ids: set[str] = set()
        # Attempts started and not yet committed and handled (sending, or answered and waiting
        # for the group commit): out of the schedule, never started twice at once.
        self._in_flight: set[str] = set()
        # Worker coroutines per slot key; each holds one of the endpoint's slots and sends one
        # request at a time. An answered attempt waiting for the group commit holds none: its
        # worker has already moved on to the next due delivery.
        self._busy: collections.Counter[str] = collections.Counter()
        self._workers: set[asyncio.Task[None]] = set()
        self._requeued: set[str] = set()  # redelivered while an attempt was in flight
        # Held by another instance now (watcher/cluster/): dropped once their attempt in
        # flight has been recorded.
        self._forgotten: set[str] = set()
        self._paused = False  # no new attempt starts (this instance's lease is in doubt)
        # When this instance stops trusting its lease (monotonic; several instances): no
        # attempt starts from then on until a renewal moves it, even before the cluster member
        # has noticed and paused (a process frozen past it wakes with every timer overdue).
        self._fence_at = math.inf
        self._bodies: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        # Finished attempts waiting for the group commit; each is handled once it is committed.
        self._records: list[_Finished] = []
        self._record_batch: list[tuple[Attempt, Delivery]] = []
        self._commit_timer: asyncio.Handle | None = None
        self._commits: set[asyncio.Task[None]] = set()
        self._store_down_logged = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._failure: BaseException | None = None
        self._last_progress_at = clock.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the HTTP session (unless one was given) and load every pending delivery."""
        self._http.open()
        loaded = 0
        async for delivery in self._store.pending_deliveries():
            self._schedule(delivery)
            loaded += 1
        log.info("deliveries_resumed", pending=loaded)
        self._wake.set()

    def enqueue(self, deliveries: Iterable[Delivery]) -> None:
        """Schedule newly committed (or requeued) pending deliveries.

        Idempotent by delivery id: a delivery already scheduled is rescheduled with the latest
        record; one with an attempt in flight is requeued in the store again once that attempt
        has been recorded, so it is neither sent twice at once nor lost.
        """
        for delivery in deliveries:
            if delivery.status is not DeliveryStatus.PENDING:
                continue
            if delivery.delivery_id in self._in_flight:
                self._requeued.add(delivery.delivery_id)
            else:
                self._schedule(delivery)
        self._wake.set()

    def forget(self, delivery_ids: Iterable[str]) -> int:
        """Drop deliveries another instance holds now: unscheduled at once, or after the
        attempt in flight is recorded. How many were scheduled or in flight here."""
        dropped = 0
        for delivery_id in delivery_ids:
            if delivery_id in self._in_flight:
                self._forgotten.add(delivery_id)
                self._requeued.discard(delivery_id)
                dropped += 1
                continue
            entry = self._scheduled.pop(delivery_id, None)
            if entry is None:
                continue
            dropped += 1
            if delivery_id in self._ready_ids:
                self._ready_ids.discard(delivery_id)
                key = self._slot_key(entry[1])
                self._ready[key].remove(delivery_id)
                if not self._ready[key]:
                    del self._ready[key]
        return dropped

    def delivery_ids(self) -> set[str]:
        """The deliveries scheduled or with an attempt in flight here (not the forgotten)."""
        return (set(self._scheduled) | self._in_flight) - self._forgotten

    def forget_all(self) -> int:
        """`forget` every delivery (this instance's claims were taken over)."""
        return self.forget([*self._scheduled, *self._in_flight])

    def set_paused(self, paused: bool) -> None:
        """Start no new attempt while paused (attempts in flight finish)."""
        self._paused = paused
        self._wake.set()

    def set_fence(self, at: float) -> None:
        """Start no attempt at or after `at` (monotonic) until it is moved: the moment this
        instance stops trusting its lease (watcher/cluster/plan.py)."""
        self._fence_at = at
        self._wake.set()

    def _fenced(self) -> bool:
        return self._paused or self._clock.monotonic() >= self._fence_at

    def update_config(self, delivery: DeliveryConfig, endpoints: Sequence[EndpointConfig]) -> None:
        """Use a reloaded config for every attempt from now on."""
        self._config = delivery
        self._endpoints = {endpoint.name: endpoint for endpoint in endpoints}
        self._targets = {}
        self._wake.set()

    async def run(self) -> None:
        """Start attempts as they fall due until `stop()`. The store failing (in an attempt or
        in the group commit) is raised here, so the daemon goes down loudly instead of hanging;
        any other error of one attempt is that delivery's (see `_work`)."""
        while not self._stopping:
            self._raise_failure()
            now = self._clock.monotonic()
            self._start_due(now)
            self._last_progress_at = now
            delay = IDLE_TICK_S
            if self._heap:
                delay = min(delay, max(0.0, self._heap[0][0] - now))
            self._wake.clear()
            await self._wait(delay)
        self._raise_failure()

    def stop(self) -> None:
        """Start no new attempts; `run()` returns. Idempotent."""
        self._stopping = True
        self._wake.set()

    # The grace period is a parameter, not the caller's asyncio.timeout: what is left after it
    # is cancelled here, attempt by attempt, and not recorded.
    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """Stop, let attempts in flight finish for up to `timeout` seconds, cancel the rest
        (they stay pending in the store and are sent after a restart)."""
        self.stop()
        workers = list(self._workers)
        if workers:
            # Workers take no new delivery once stopped: each ends after its current attempt.
            _, unfinished = await asyncio.wait(workers, timeout=timeout)
            for task in unfinished:
                task.cancel()
            if unfinished:
                log.warning("deliveries_cancelled_at_shutdown", count=len(unfinished))
                await asyncio.gather(*unfinished, return_exceptions=True)
        self._commit_records()  # answered attempts still waiting for the group commit
        while self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)

    async def close(self) -> None:
        """Close the HTTP session if this dispatcher opened it (after `drain`). Idempotent."""
        await self._http.close()

    async def ping(self, endpoint: EndpointConfig) -> PingResult:
        """Send one signed `webhook.test` event to `endpoint` now, outside the schedule and
        the store (watcher/delivery/ping.py), on this dispatcher's HTTP session."""
        result = await send_test_event(
            self._http,
            endpoint.name,
            endpoint_target(endpoint),
            now=self._clock.time(),
            user_agent=self._user_agent,
        )
        log.info(
            "webhook_test_sent",
            endpoint=endpoint.name,
            webhook_id=result.webhook_id,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            error=result.error,
        )
        return result

    @property
    def stats(self) -> DeliveryStats:
        return DeliveryStats(
            pending=len(self._scheduled),
            in_flight=len(self._in_flight),
            last_progress_at=self._last_progress_at,
        )

    # -- scheduling ----------------------------------------------------------------------------
    def _schedule(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        delivery_id = delivery.delivery_id
        if delivery_id in self._ready_ids:
            self._ready_ids.discard(delivery_id)
            key = self._slot_key(delivery)
            self._ready[key].remove(delivery_id)
            if not self._ready[key]:
                del self._ready[key]
        self._seq += 1
        due = (
            self._timeline.to_mono(delivery.next_attempt_at)
            if delivery.next_attempt_at is not None
            else self._clock.monotonic()
        )
        if delay_s:
            due = max(due, self._clock.monotonic() + delay_s)
        self._scheduled[delivery_id] = (self._seq, delivery)
        heapq.heappush(self._heap, (due, self._seq, delivery_id))

    def _start_due(self, now: float) -> None:
        ready = self._ready
        while self._heap and self._heap[0][0] <= now + DUE_SLACK_S:
            _, seq, delivery_id = heapq.heappop(self._heap)
            entry = self._scheduled.get(delivery_id)
            if entry is None or entry[0] != seq:
                continue  # stale: rescheduled since
            key = self._slot_key(entry[1])
            queue = ready.get(key)
            if queue is None:
                queue = ready[key] = collections.deque()
            queue.append(delivery_id)
            self._ready_ids.add(delivery_id)
        if self._fenced():
            return
        limit = max(1, self._config.max_concurrency)
        for key, queue in ready.items():
            for _ in range(min(len(queue), limit - self._busy[key])):
                self._busy[key] += 1
                worker = asyncio.create_task(self._work(key), name=f"deliver to {key}")
                self._workers.add(worker)
                worker.add_done_callback(self._workers.discard)

    async def _work(self, key: str) -> None:
        """One of `key`'s workers: send its due deliveries one after another while there are
        any (the worker holds one of the endpoint's slots), then end."""
        try:
            while not self._stopping and not self._fenced():
                if self._busy[key] > max(1, self._config.max_concurrency):
                    return  # lowered by a reload: the surplus workers end one by one
                queue = self._ready.get(key)
                if not queue:
                    return
                delivery_id = queue.popleft()
                self._ready_ids.discard(delivery_id)
                if not queue:
                    del self._ready[key]
                delivery = self._scheduled.pop(delivery_id)[1]
                self._in_flight.add(delivery_id)
                try:
                    attempt, decision = await self._try(delivery)
                except asyncio.CancelledError:
                    # Shutdown: not recorded, so the delivery stays pending in the store.
                    self._in_flight.discard(delivery_id)
                    raise
                except StoreUnavailable as exc:
                    # The database is down: nothing was sent (the body could not be read).
                    # Try again shortly; the daemon stays up and waits for it.
                    self._in_flight.discard(delivery_id)
                    self._store_down(exc)
                    if delivery_id in self._forgotten:
                        self._forgotten.discard(delivery_id)
                    else:
                        self._schedule(delivery, delay_s=STORE_RETRY_S)
                    continue
                except StoreError as exc:  # the daemon's own machinery: go down loudly
                    self._in_flight.discard(delivery_id)
                    self._crashed(delivery_id, exc)
                    return
                except Exception as exc:
                    # Whatever one delivery makes go wrong (its endpoint's headers, a reply
                    # aiohttp chokes on, a bug it triggers) is that delivery's failed attempt:
                    # retried on its schedule, and every other delivery goes on.
                    attempt, decision = self._attempt_crashed(delivery, exc)
                self._record(_Finished(delivery, decision, attempt))
        finally:
            self._busy[key] -= 1
            if self._busy[key] <= 0:
                del self._busy[key]

    def _attempt_crashed(
        self, delivery: Delivery, exc: Exception
    ) -> tuple[Attempt, retry.Decision]:
        """An attempt that raised, as a failed attempt backed off on the retry schedule."""
        error_type = type(exc).__name__
        log.error(
            "webhook_attempt_error",
            delivery_id=delivery.delivery_id,
            task_id=delivery.task_id,
            endpoint=delivery.endpoint,
            error_type=error_type,
            exc_info=exc,
        )
        if self._observer is not None:
            self._observer.contained_error("deliverer", error_type)
        now = self._timeline.wall()  # stored, like every attempt's times
        result = retry.HttpResult(error=f"internal error: {error_type}")
        decision = retry.decide(delivery, result, self._config.retry_schedule_s, now=now)
        attempt = Attempt(
            delivery_id=delivery.delivery_id,
            number=decision.delivery.attempts,
            started_at=now,
            duration_ms=0.0,
            outcome=decision.outcome,
            status_code=None,
            error=result.describe(),
            webhook_timestamp=None,
        )
        return attempt, decision

    def _crashed(self, delivery_id: str, exc: BaseException) -> None:
        log.error("webhook_attempt_crashed", delivery_id=delivery_id, exc_info=exc)
        if self._failure is None:
            self._failure = exc
        self._wake.set()

    @staticmethod
    def _slot_key(delivery: Delivery) -> str:
        if delivery.endpoint == CALLBACK_ENDPOINT:
            return f"{CALLBACK_ENDPOINT}:{_host(delivery.url)}"
        return delivery.endpoint

    async def _wait(self, delay: float) -> None:
        """Sleep on the clock until `delay` passes or something wakes the loop."""
        if delay <= 0:
            await asyncio.sleep(0)
            return
        await self._clock.wait_event(self._wake, delay)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # -- one attempt ---------------------------------------------------------------------------
    async def _try(self, delivery: Delivery) -> tuple[Attempt, retry.Decision]:
        """Send one attempt (unless its target is unusable) and decide what follows."""
        started_at = self._timeline.wall()
        target = self._resolve(delivery)
        webhook_timestamp: int | None = None
        duration_ms = 0.0
        if isinstance(target, str):
            decision = retry.give_up(delivery, target, now=started_at)
            result = retry.HttpResult(error=target)
        else:
            body = self._cached_body(delivery.event_id) or await self._body(delivery)
            # The real wall time, as the contract says, even in the moment before a step of the
            # clock has been noticed (started_at, which is stored, is on the stored times' anchor).
            webhook_timestamp = int(self._clock.time())
            try:
                headers = request_headers(
                    delivery.webhook_id, target, body, webhook_timestamp, self._user_agent
                )
            except InvalidSecret as exc:
                reason = f"endpoint '{delivery.endpoint}' has an unusable secret: {exc}"
                decision = retry.give_up(delivery, reason, now=started_at)
                result = retry.HttpResult(error=decision.reason)
            else:
                clock_start = time.perf_counter()
                result = await self._http.post(target, body, headers)
                duration_ms = round((time.perf_counter() - clock_start) * 1000, 3)
                decision = retry.decide(
                    delivery, result, self._config.retry_schedule_s, now=self._timeline.wall()
                )
        updated = decision.delivery
        attempt = Attempt(
            delivery_id=delivery.delivery_id,
            number=updated.attempts,
            started_at=started_at,
            duration_ms=duration_ms,
            outcome=decision.outcome,
            status_code=result.status_code,
            error=None if result.ok else result.describe(),
            webhook_timestamp=webhook_timestamp,
        )
        return attempt, decision

    def _after(self, delivery: Delivery, decision: retry.Decision, attempt: Attempt) -> bool:
        """Once the attempt is committed: log, observe, reschedule. True when the delivery
        was redelivered meanwhile and must be requeued in the store now."""
        updated = decision.delivery
        self._log(decision, attempt)
        if self._observer is not None:
            self._observe(delivery, attempt)
        if delivery.delivery_id in self._forgotten:
            self._forgotten.discard(delivery.delivery_id)
            return False
        if delivery.delivery_id in self._requeued:
            self._requeued.discard(delivery.delivery_id)
            return True
        if decision.outcome is AttemptOutcome.RETRY:
            self._schedule(updated)
            self._wake.set()  # the loop may be sleeping towards a later due time
        return False

    def _resolve(self, delivery: Delivery) -> Target | str:
        """The target of `delivery` in the current config, or why there is none."""
        if delivery.endpoint == CALLBACK_ENDPOINT:
            return callback_target(delivery.url, self._config.callback_secret)
        target = self._targets.get(delivery.endpoint)
        if target is not None:
            return target
        endpoint = self._endpoints.get(delivery.endpoint)
        if endpoint is None:
            return f"endpoint '{delivery.endpoint}' is not configured"
        resolved = endpoint_target(endpoint)
        if isinstance(resolved, Target):
            self._targets[delivery.endpoint] = resolved  # until the next reload
        return resolved

    def _record(self, finished: _Finished) -> None:
        """Queue an answered attempt for the group commit; it is handled once committed."""
        self._records.append(finished)
        self._record_batch.append((finished.attempt, finished.decision.delivery))
        if len(self._records) >= len(self._in_flight):
            # Every attempt in flight is waiting for this commit: none can join it any more.
            if self._commit_timer is not None:
                self._commit_timer.cancel()
            self._commit_timer = asyncio.get_running_loop().call_soon(self._commit_records)
        elif self._commit_timer is None:
            # Attempts finishing within the next few milliseconds share the transaction.
            self._commit_timer = asyncio.get_running_loop().call_later(
                COMMIT_WINDOW_S, self._commit_records
            )

    def _commit_records(self) -> None:
        """Start the group commit of the answered attempts waiting for it."""
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        records, batch = self._records, self._record_batch
        self._records, self._record_batch = [], []
        if not records:
            return
        commit = asyncio.ensure_future(self._commit(records, batch))
        self._commits.add(commit)
        commit.add_done_callback(self._commits.discard)

    async def _commit(
        self, records: list[_Finished], batch: list[tuple[Attempt, Delivery]]
    ) -> None:
        try:
            await self._store.record_attempts(batch)
        except StoreUnavailable as exc:
            # The webhooks were sent; their attempts wait here (in flight, so none is sent
            # again meanwhile) until the database is back. A restart before that sends
            # them again, with the same webhook-id.
            self._store_down(exc)
            self._records[:0] = records
            self._record_batch[:0] = batch
            if self._commit_timer is not None:
                self._commit_timer.cancel()
            self._commit_timer = asyncio.get_running_loop().call_later(
                STORE_RETRY_S, self._commit_records
            )
            return
        except Exception as exc:
            # Every attempt of the batch fails with it: the daemon goes down loudly, and the
            # deliveries stay pending in the store (sent again after a restart).
            for finished in records:
                self._in_flight.discard(finished.delivery.delivery_id)
                self._crashed(finished.delivery.delivery_id, exc)
            return
        if self._store_down_logged:
            self._store_down_logged = False
            log.info("deliveries_store_back")
        for finished in records:
            self._in_flight.discard(finished.delivery.delivery_id)
            try:
                # Synchronous but for a redelivery that came in during the attempt: the
                # common path costs no extra coroutine per webhook.
                if self._after(finished.delivery, finished.decision, finished.attempt):
                    delivery_id = finished.delivery.delivery_id
                    try:
                        await self._requeue(delivery_id)
                    except StoreUnavailable as exc:
                        self._store_down(exc)
                        self._requeue_later(delivery_id)
            except Exception as exc:
                self._crashed(finished.delivery.delivery_id, exc)

    async def _requeue(self, delivery_id: str) -> None:
        """Requeue in the store a delivery redelivered while its attempt was in flight (the
        attempt's record overwrote the redelivery), and schedule it."""
        delivery = await self._store.requeue_delivery(delivery_id, now=self._timeline.wall())
        self._schedule(delivery)
        self._wake.set()

    def _requeue_later(self, delivery_id: str) -> None:
        """The database is down: the redelivery is not lost, it is requeued once it is back
        (tried every STORE_RETRY_S until then, or until the daemon stops)."""

        async def again() -> None:
            while not self._stopping:
                await self._clock.sleep(STORE_RETRY_S)
                try:
                    await self._requeue(delivery_id)
                except StoreUnavailable:
                    continue
                except Exception as exc:
                    self._crashed(delivery_id, exc)
                return
            log.warning("redelivery_not_saved", delivery_id=delivery_id)

        retry = asyncio.ensure_future(again())
        self._commits.add(retry)
        retry.add_done_callback(self._commits.discard)

    def _store_down(self, exc: StoreUnavailable) -> None:
        if not self._store_down_logged:
            self._store_down_logged = True
            log.warning("deliveries_waiting_for_store", error=exc.message)

    def _cached_body(self, event_id: str) -> bytes | None:
        body = self._bodies.get(event_id)
        if body is not None:
            self._bodies.move_to_end(event_id)
        return body

    async def _body(self, delivery: Delivery) -> bytes:
        """The event's body from the store, with those of deliveries waiting behind it."""
        event_id = delivery.event_id
        wanted = [event_id]
        queue = self._ready.get(self._slot_key(delivery))
        if queue:
            for delivery_id in itertools.islice(queue, BODY_PREFETCH):
                entry = self._scheduled.get(delivery_id)
                if entry is not None and entry[1].event_id not in self._bodies:
                    wanted.append(entry[1].event_id)
        bodies = await self._store.event_bodies(wanted)
        if event_id not in bodies:
            bodies[event_id] = (await self._store.get_event(event_id)).body  # raises StoreError
        for key, value in bodies.items():
            self._bodies[key] = value
        self._bodies.move_to_end(event_id)
        while len(self._bodies) > BODY_CACHE_SIZE:
            self._bodies.popitem(last=False)
        return bodies[event_id]

    def _observe(self, delivery: Delivery, attempt: Attempt) -> None:
        assert self._observer is not None
        # Callback targets are many and ad hoc: one label value for all keeps cardinality flat.
        endpoint = delivery.endpoint
        self._observer.webhook_attempt(endpoint, attempt.outcome.value, attempt.duration_ms / 1000)
        if attempt.outcome is AttemptOutcome.SUCCEEDED:
            latency = max(0.0, self._timeline.wall() - delivery.created_at)
            self._observer.delivery_latency(endpoint, latency)

    def _log(self, decision: retry.Decision, attempt: Attempt) -> None:
        delivery = decision.delivery
        context: dict[str, object] = {
            "delivery_id": delivery.delivery_id,
            "task_id": delivery.task_id,
            "event_type": str(delivery.event_type),
            "endpoint": delivery.endpoint,
            "webhook_id": delivery.webhook_id,
            "attempt": attempt.number,
            "status_code": attempt.status_code,
            "duration_ms": attempt.duration_ms,
        }
        if delivery.endpoint == CALLBACK_ENDPOINT:
            context["callback_host"] = _host(delivery.url)
        if decision.outcome is AttemptOutcome.SUCCEEDED:
            log.info("webhook_delivered", **context)
        elif decision.outcome is AttemptOutcome.RETRY:
            log.warning(
                "webhook_attempt_failed",
                error=attempt.error,
                next_attempt_at=log_time(delivery.next_attempt_at),
                **context,
            )
        else:
            log.error(
                "webhook_delivery_failed", error=attempt.error, reason=decision.reason, **context
            )


def _host(url: str | None) -> str:
    """A URL's host only: logs never carry a full URL, which may hold a token."""
    try:
        return urlsplit(url or "").hostname or ""
    except ValueError:
        return ""
