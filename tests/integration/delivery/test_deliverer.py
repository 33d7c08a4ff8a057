"""The dispatcher against real loopback receivers that verify every request independently."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers.receiver import Reply, start_receiver, verify
from watcher.clock import Clock, ManualClock, SystemClock
from watcher.config.settings import DeliveryConfig, EndpointConfig, Secret
from watcher.delivery.deliverer import Deliverer, Target
from watcher.delivery.events import build_event, plan_deliveries
from watcher.errors import StoreError, StoreUnavailable
from watcher.models import (
    CALLBACK_ENDPOINT,
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
    EventOutcome,
    EventType,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.adapter import AsyncAdapter
from watcher.store.memory import MemoryStore
from watcher.webhook_secret import generate_secret

SECRET = generate_secret()
FAST = (0.0, 0.02, 0.02)  # retry schedule for tests that use the real clock
USER_AGENT = "apixo-watcher/test"


def endpoint(
    name: str,
    url: str,
    *secrets: str,
    timeout_s: float = 2.0,
    headers: dict[str, str] | None = None,
) -> EndpointConfig:
    return EndpointConfig(
        name=name,
        url=url,
        secrets=tuple(Secret(s) for s in (secrets or (SECRET,))),
        timeout_s=timeout_s,
        headers=headers or {},
    )


def settings(
    schedule: tuple[float, ...] = FAST,
    *,
    max_concurrency: int = 4,
    callback_secret: str | None = None,
) -> DeliveryConfig:
    return DeliveryConfig(
        retry_schedule_s=schedule,
        max_concurrency=max_concurrency,
        allowed_callback_hosts=("127.0.0.1",),
        callback_secret=Secret(callback_secret) if callback_secret else None,
    )


_task_numbers = iter(range(1_000_000))


def submit(
    store: MemoryStore,
    endpoints: Sequence[EndpointConfig],
    clock: Clock,
    *,
    callback_url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[Delivery]:
    """Register a task and commit its task.succeeded event with its deliveries (the outbox)."""
    now = clock.now()
    task, _ = store.add_task(
        TaskSpec(
            task_id=f"task_{next(_task_numbers)}",
            model="nano-banana",
            callback_url=callback_url,
            metadata=metadata or {"order_id": 42},
        ),
        source=TaskSource.API,
        now=now,
    )
    outcome = EventOutcome(
        type=EventType.SUCCEEDED,
        upstream={"taskId": task.task_id, "state": "success", "costTime": 1200},
        result={"resultUrls": ["https://cdn.example/a.png"]},
        result_urls=("https://cdn.example/a.png",),
    )
    event = build_event(outcome, task, now=now)
    deliveries = plan_deliveries(
        event, task, endpoints, callback_enabled=callback_url is not None, now=now
    )
    store.apply_transition(
        Transition(
            task_id=task.task_id,
            from_state=task.state,
            to_state=TaskState.SUCCEEDED,
            at=now,
            reason="upstream state success",
            event=event,
            deliveries=deliveries,
        )
    )
    return list(deliveries)


@contextlib.asynccontextmanager
async def running(
    store: MemoryStore,
    endpoints: Sequence[EndpointConfig],
    config: DeliveryConfig | None = None,
    *,
    clock: Clock | None = None,
) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(
        store=AsyncAdapter(store),
        delivery=config or settings(),
        endpoints=endpoints,
        clock=clock or SystemClock(),
        user_agent=USER_AGENT,
    )
    await deliverer.start()
    loop = asyncio.create_task(deliverer.run())
    try:
        yield deliverer
    finally:
        deliverer.stop()
        await deliverer.drain(2.0)
        await deliverer.close()
        await asyncio.wait_for(loop, 2.0)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `predicate()` holds (checked every few milliseconds), or fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def status_of(store: MemoryStore, delivery: Delivery) -> DeliveryStatus:
    return store.get_delivery(delivery.delivery_id).status


async def settled(store: MemoryStore, deliverer: Deliverer, delivery: Delivery) -> Delivery:
    """Wait until the delivery is no longer pending and nothing is in flight; return it."""
    await eventually(
        lambda: (
            status_of(store, delivery) is not DeliveryStatus.PENDING
            and deliverer.stats.in_flight == 0
        )
    )
    return store.get_delivery(delivery.delivery_id)


async def test_success_on_first_try() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"), headers={"X-Env": "test"})]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            (request,) = await receiver.wait_for(1)
            done = await settled(store, deliverer, delivery)

    assert request.verified
    assert request.webhook_id == delivery.webhook_id
    assert request.raw_body == store.get_event(delivery.event_id).body
    assert request.body["type"] == "task.succeeded"
    assert request.body["data"]["metadata"] == {"order_id": 42}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["x-env"] == "test"
    assert request.timestamp is not None
    assert abs(request.timestamp - time.time()) < 5
    assert done.status is DeliveryStatus.SUCCEEDED
    assert done.last_status_code == 200
    assert done.next_attempt_at is None
    (attempt,) = store.attempts(delivery.delivery_id)
    assert attempt.outcome is AttemptOutcome.SUCCEEDED
    assert attempt.status_code == 200
    assert attempt.number == 1
    assert attempt.webhook_timestamp == request.timestamp
    assert deliverer.stats.pending == 0


async def test_500_then_200_same_id_fresh_timestamp() -> None:
    clock = ManualClock(start=time.time())
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", 500, 200)
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints, settings((0.0, 30.0)), clock=clock) as deliverer:
            (delivery,) = submit(store, endpoints, clock)
            deliverer.enqueue([delivery])
            await receiver.wait_for(1)
            await eventually(lambda: len(store.attempts(delivery.delivery_id)) == 1)
            waiting = store.get_delivery(delivery.delivery_id)
            assert waiting.status is DeliveryStatus.PENDING
            assert waiting.next_attempt_at == clock.now() + 30.0
            assert waiting.last_error == "HTTP 500"
            clock.advance(30.0)
            first, second = await receiver.wait_for(2)
            done = await settled(store, deliverer, delivery)

    assert first.verified
    assert second.verified
    assert first.webhook_id == second.webhook_id == delivery.webhook_id
    assert first.timestamp is not None
    assert second.timestamp == first.timestamp + 30
    assert first.signature != second.signature
    assert first.raw_body == second.raw_body
    assert done.status is DeliveryStatus.SUCCEEDED
    assert done.attempts == 2
    assert [a.outcome for a in store.attempts(delivery.delivery_id)] == [
        AttemptOutcome.RETRY,
        AttemptOutcome.SUCCEEDED,
    ]


async def test_410_stops_at_once() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", 410, 200)
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            done = await settled(store, deliverer, delivery)
            assert deliverer.stats.pending == 0

    assert done.status is DeliveryStatus.FAILED
    assert done.last_status_code == 410
    assert len(receiver.received) == 1
    assert [a.outcome for a in store.attempts(delivery.delivery_id)] == [AttemptOutcome.FAILED]


async def test_retry_after_is_honoured() -> None:
    clock = ManualClock(start=time.time())
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", Reply(429, headers={"Retry-After": "20"}), 200)
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints, settings((0.0, 5.0)), clock=clock) as deliverer:
            (delivery,) = submit(store, endpoints, clock)
            deliverer.enqueue([delivery])
            await eventually(lambda: len(store.attempts(delivery.delivery_id)) == 1)
            failed_at = clock.now()
            assert store.get_delivery(delivery.delivery_id).next_attempt_at == failed_at + 20
            # The schedule alone would retry after 5 s; Retry-After asks for 20.
            clock.advance(19.0)
            # Once the loop has looked at the new time, a due attempt would have started.
            await eventually(lambda: deliverer.stats.last_progress_at == clock.monotonic())
            assert deliverer.stats.in_flight == 0
            assert len(store.attempts(delivery.delivery_id)) == 1
            clock.advance(1.0)
            await receiver.wait_for(2)
            done = await settled(store, deliverer, delivery)

    assert done.status is DeliveryStatus.SUCCEEDED
    assert receiver.received[1].timestamp is not None
    assert receiver.received[1].timestamp >= int(failed_at + 20)


async def test_schedule_used_up_fails_and_is_kept() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", 500, 502, 503, 200)
        endpoints = [endpoint("app", receiver.url("/hook"))]
        with capture_logs() as logs:
            async with running(store, endpoints) as deliverer:
                (delivery,) = submit(store, endpoints, SystemClock())
                deliverer.enqueue([delivery])
                done = await settled(store, deliverer, delivery)

    assert len(receiver.received) == 3
    assert all(r.verified for r in receiver.received)
    assert done.status is DeliveryStatus.FAILED
    assert done.attempts == 3
    assert done.last_error == "HTTP 503"
    failed, _ = store.list_deliveries(status=DeliveryStatus.FAILED)
    assert [d.delivery_id for d in failed] == [delivery.delivery_id]
    events = [entry["event"] for entry in logs]
    assert events.count("webhook_attempt_failed") == 2
    assert events.count("webhook_delivery_failed") == 1
    # A wall time in a log line reads like `ts` (ISO 8601 UTC), not as a float.
    retry = next(e for e in logs if e["event"] == "webhook_attempt_failed")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", retry["next_attempt_at"])
    final = next(e for e in logs if e["event"] == "webhook_delivery_failed")
    assert final["log_level"] == "error"
    assert final["delivery_id"] == delivery.delivery_id
    assert final["attempt"] == 3


async def test_timeout_is_retried() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", Reply(hang=True), 200)
        endpoints = [endpoint("app", receiver.url("/hook"), timeout_s=0.2)]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            done = await settled(store, deliverer, delivery)

    assert done.status is DeliveryStatus.SUCCEEDED
    first, second = store.attempts(delivery.delivery_id)
    assert (first.outcome, first.error, first.status_code) == (
        AttemptOutcome.RETRY,
        "timeout",
        None,
    )
    assert first.duration_ms >= 150  # the 0.2 s timeout, give or take timer granularity
    assert second.outcome is AttemptOutcome.SUCCEEDED


async def test_connection_refused_is_retried_then_fails() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        dead_url = receiver.url("/hook")
    endpoints = [endpoint("app", dead_url)]  # the receiver is gone: nothing listens there
    async with running(store, endpoints) as deliverer:
        (delivery,) = submit(store, endpoints, SystemClock())
        deliverer.enqueue([delivery])
        done = await settled(store, deliverer, delivery)

    assert done.status is DeliveryStatus.FAILED
    assert done.attempts == 3
    assert done.last_error is not None
    assert done.last_error.startswith("connection failed")


async def test_redirect_is_a_failed_attempt() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", Reply(302, headers={"Location": receiver.url("/other")}), 200)
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            done = await settled(store, deliverer, delivery)

    assert [r.path for r in receiver.received] == ["/hook", "/hook"]
    first, _ = store.attempts(delivery.delivery_id)
    assert first.error == "HTTP 302"
    assert done.status is DeliveryStatus.SUCCEEDED


async def test_rotation_signs_with_every_secret() -> None:
    old, new = generate_secret(), generate_secret()
    store = MemoryStore()
    async with start_receiver([old]) as receiver:  # the receiver has not rotated yet
        endpoints = [endpoint("app", receiver.url("/hook"), new, old)]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            (request,) = await receiver.wait_for(1)
            await settled(store, deliverer, delivery)

    assert request.verified
    assert len(request.signatures) == 2
    assert verify(new, request.raw_body, request.headers)
    assert verify(old, request.raw_body, request.headers)
    assert not verify(generate_secret(), request.raw_body, request.headers)


async def test_slow_endpoint_does_not_delay_another() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/slow", *[Reply(hang=True)] * 3)
        endpoints = [
            endpoint("slow", receiver.url("/slow"), timeout_s=10.0),
            endpoint("fast", receiver.url("/fast")),
        ]
        async with running(store, endpoints, settings(max_concurrency=1)) as deliverer:
            deliveries = [d for _ in range(3) for d in submit(store, endpoints, SystemClock())]
            deliverer.enqueue(deliveries)
            await receiver.wait_for(3, path="/fast")
            fast = [d for d in deliveries if d.endpoint == "fast"]
            await eventually(
                lambda: all(status_of(store, d) is DeliveryStatus.SUCCEEDED for d in fast)
            )
            # The slow endpoint holds its single slot; its other deliveries wait their turn.
            assert len(receiver.on("/slow")) == 1
            assert receiver.in_flight("/slow") == 1
            receiver.release()
            await receiver.wait_for(3, path="/slow")
            await eventually(
                lambda: all(status_of(store, d) is DeliveryStatus.SUCCEEDED for d in deliveries)
            )
    assert receiver.max_in_flight("/slow") == 1


async def test_max_concurrency_is_per_endpoint() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/a", *[Reply(hang=True)] * 5)
        receiver.script("/b", *[Reply(hang=True)] * 5)
        endpoints = [endpoint("a", receiver.url("/a")), endpoint("b", receiver.url("/b"))]
        async with running(store, endpoints, settings(max_concurrency=2)) as deliverer:
            deliveries = [d for _ in range(5) for d in submit(store, endpoints, SystemClock())]
            deliverer.enqueue(deliveries)
            await receiver.wait_until(
                lambda: receiver.in_flight("/a") == receiver.in_flight("/b") == 2
            )
            assert deliverer.stats.in_flight == 4
            assert deliverer.stats.pending == 6
            receiver.release()
            await eventually(
                lambda: all(status_of(store, d) is DeliveryStatus.SUCCEEDED for d in deliveries)
            )
    assert receiver.max_in_flight("/a") == 2
    assert receiver.max_in_flight("/b") == 2
    assert len(receiver.received) == 10


async def test_start_resumes_pending_deliveries_from_the_store() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"))]
        first = submit(store, endpoints, SystemClock())[0]
        # One that a previous run already tried twice: it goes on where its schedule stood.
        second = submit(store, endpoints, SystemClock())[0]
        mid_schedule = store.get_delivery(second.delivery_id)
        mid_schedule.attempts = 2
        mid_schedule.schedule_pos = 2
        mid_schedule.last_error = "HTTP 500"
        store.record_attempt(
            _attempt(second, number=2), mid_schedule
        )  # the store's record of the earlier run
        async with running(store, endpoints) as deliverer:  # no enqueue: start() loads them
            await receiver.wait_for(2)
            done_first = await settled(store, deliverer, first)
            done_second = await settled(store, deliverer, second)

    assert {r.webhook_id for r in receiver.received} == {first.webhook_id, second.webhook_id}
    assert done_first.status is DeliveryStatus.SUCCEEDED
    assert done_second.status is DeliveryStatus.SUCCEEDED
    assert done_second.attempts == 3
    assert store.attempts(second.delivery_id)[-1].number == 3


def _attempt(delivery: Delivery, *, number: int) -> Attempt:
    return Attempt(
        delivery_id=delivery.delivery_id,
        number=number,
        started_at=time.time() - 60,
        duration_ms=3.0,
        outcome=AttemptOutcome.RETRY,
        status_code=500,
        error="HTTP 500",
    )


async def test_future_deliveries_wait_for_their_time() -> None:
    clock = ManualClock(start=time.time())
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"))]
        (delivery,) = submit(store, endpoints, clock)
        later = store.get_delivery(delivery.delivery_id)
        later.next_attempt_at = clock.now() + 60
        store.record_attempt(_attempt(delivery, number=1), later)
        async with running(store, endpoints, clock=clock) as deliverer:
            await eventually(lambda: deliverer.stats.pending == 1)
            clock.advance(59.0)
            await eventually(lambda: deliverer.stats.last_progress_at == clock.monotonic())
            assert deliverer.stats.in_flight == 0
            assert receiver.received == []
            clock.advance(1.0)
            (request,) = await receiver.wait_for(1)
            await settled(store, deliverer, delivery)
    assert request.webhook_id == delivery.webhook_id


async def test_redelivery_keeps_webhook_id() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            await settled(store, deliverer, delivery)
            requeued = store.requeue_delivery(delivery.delivery_id, now=time.time())
            deliverer.enqueue([requeued])
            deliverer.enqueue([requeued])  # a double click sends once
            first, second = await receiver.wait_for(2)
            await eventually(lambda: len(store.attempts(delivery.delivery_id)) == 2)
            done = await settled(store, deliverer, delivery)
            assert deliverer.stats.pending == 0

    assert first.webhook_id == second.webhook_id == delivery.webhook_id
    assert second.verified
    assert done.status is DeliveryStatus.SUCCEEDED
    assert done.attempts == 2
    assert len(receiver.received) == 2


async def test_enqueue_is_idempotent() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery, delivery])
            deliverer.enqueue([delivery])
            await settled(store, deliverer, delivery)
            assert deliverer.stats.pending == 0
    assert len(receiver.received) == 1


async def test_redeliver_while_in_flight_sends_again_afterwards() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", Reply(hang=True))
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            await receiver.wait_for(1)
            deliverer.enqueue([store.requeue_delivery(delivery.delivery_id, now=time.time())])
            assert receiver.in_flight("/hook") == 1
            receiver.release()
            await receiver.wait_for(2)
            await eventually(lambda: len(store.attempts(delivery.delivery_id)) == 2)
            done = await settled(store, deliverer, delivery)

    assert receiver.max_in_flight("/hook") == 1
    assert done.status is DeliveryStatus.SUCCEEDED
    assert [a.number for a in store.attempts(delivery.delivery_id)] == [1, 2]


async def test_a_redelivery_during_an_attempt_survives_a_database_outage() -> None:
    class FlakyStore(MemoryStore):
        outage = False
        refused = 0

        def requeue_delivery(self, delivery_id: str, *, now: float) -> Delivery:
            if self.outage:
                self.refused += 1
                raise StoreUnavailable("the database cannot be reached")
            return super().requeue_delivery(delivery_id, now=now)

    store = FlakyStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", Reply(hang=True))
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints) as deliverer:
            (delivery,) = submit(store, endpoints, SystemClock())
            deliverer.enqueue([delivery])
            await receiver.wait_for(1)
            deliverer.enqueue([store.requeue_delivery(delivery.delivery_id, now=time.time())])
            store.outage = True  # the attempt's record lands, its requeue does not
            receiver.release()
            await eventually(lambda: store.refused >= 1)
            store.outage = False
            await receiver.wait_for(2, timeout=10)
            done = await settled(store, deliverer, delivery)

    assert done.status is DeliveryStatus.SUCCEEDED
    assert [a.number for a in store.attempts(delivery.delivery_id)] == [1, 2]


async def test_reload_applies_to_pending_retries() -> None:
    clock = ManualClock(start=time.time())
    new_secret = generate_secret()
    store = MemoryStore()
    async with start_receiver([new_secret]) as receiver:
        receiver.script("/old", 500)
        endpoints = [endpoint("app", receiver.url("/old"))]
        config = settings((0.0, 10.0))
        async with running(store, endpoints, config, clock=clock) as deliverer:
            (delivery,) = submit(store, endpoints, clock)
            deliverer.enqueue([delivery])
            await eventually(lambda: len(store.attempts(delivery.delivery_id)) == 1)
            deliverer.update_config(config, [endpoint("app", receiver.url("/new"), new_secret)])
            clock.advance(10.0)
            (request,) = await receiver.wait_for(1, path="/new")
            await settled(store, deliverer, delivery)

    assert request.verified
    assert not receiver.on("/old")[0].verified  # signed with the old secret
    assert store.get_delivery(delivery.delivery_id).status is DeliveryStatus.SUCCEEDED


async def test_removed_endpoint_fails_the_delivery_honestly() -> None:
    store = MemoryStore()
    endpoints = [endpoint("app", "http://127.0.0.1:9/never")]
    (delivery,) = submit(store, endpoints, SystemClock())
    async with running(store, []) as deliverer:
        deliverer.enqueue([delivery])
        done = await settled(store, deliverer, delivery)

    assert done.status is DeliveryStatus.FAILED
    assert done.last_error == "endpoint 'app' is not configured"
    (attempt,) = store.attempts(delivery.delivery_id)
    assert attempt.outcome is AttemptOutcome.FAILED
    assert attempt.status_code is None
    assert attempt.webhook_timestamp is None  # nothing was sent
    assert attempt.error == "endpoint 'app' is not configured"


async def test_callback_url_signed_with_callback_secret() -> None:
    callback_secret = generate_secret()
    store = MemoryStore()
    async with start_receiver([callback_secret]) as receiver:
        config = settings(callback_secret=callback_secret)
        async with running(store, [], config) as deliverer:
            (delivery,) = submit(
                store, [], SystemClock(), callback_url=receiver.url("/cb?token=abc")
            )
            assert delivery.endpoint == CALLBACK_ENDPOINT
            deliverer.enqueue([delivery])
            (request,) = await receiver.wait_for(1)
            done = await settled(store, deliverer, delivery)

    assert request.verified
    assert request.path == "/cb"
    assert done.status is DeliveryStatus.SUCCEEDED


async def test_callback_without_secret_fails() -> None:
    store = MemoryStore()
    async with start_receiver() as receiver:
        (delivery,) = submit(store, [], SystemClock(), callback_url=receiver.url("/cb"))
        async with running(store, [], settings()) as deliverer:  # callback_secret removed
            deliverer.enqueue([delivery])
            done = await settled(store, deliverer, delivery)
    assert receiver.received == []
    assert done.status is DeliveryStatus.FAILED
    assert done.last_error == "delivery.callback_secret is not configured"


async def test_drain_leaves_an_interrupted_attempt_pending() -> None:
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", Reply(hang=True))
        endpoints = [endpoint("app", receiver.url("/hook"), timeout_s=30.0)]
        deliverer = Deliverer(
            store=AsyncAdapter(store),
            delivery=settings(),
            endpoints=endpoints,
            clock=SystemClock(),
            user_agent=USER_AGENT,
        )
        await deliverer.start()
        loop = asyncio.create_task(deliverer.run())
        (delivery,) = submit(store, endpoints, SystemClock())
        deliverer.enqueue([delivery])
        await receiver.wait_for(1)
        deliverer.stop()
        deliverer.stop()  # idempotent
        await asyncio.wait_for(loop, 2.0)  # run() returns on stop
        started = time.monotonic()
        await deliverer.drain(0.1)
        assert time.monotonic() - started < 2.0
        await deliverer.close()

    stored = store.get_delivery(delivery.delivery_id)
    assert stored.status is DeliveryStatus.PENDING  # sent again after a restart: at-least-once
    assert store.attempts(delivery.delivery_id) == []
    assert [d.delivery_id for d in store.pending_deliveries()] == [delivery.delivery_id]


async def test_store_failure_propagates_from_run() -> None:
    class BrokenStore(MemoryStore):
        def record_attempts(self, batch: Any) -> None:
            raise RuntimeError("disk on fire")

    store = BrokenStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"))]
        deliverer = Deliverer(
            store=AsyncAdapter(store),
            delivery=settings(),
            endpoints=endpoints,
            clock=SystemClock(),
            user_agent=USER_AGENT,
        )
        await deliverer.start()
        (delivery,) = submit(store, endpoints, SystemClock())
        deliverer.enqueue([delivery])
        with capture_logs(), pytest.raises(RuntimeError, match="disk on fire"):
            await asyncio.wait_for(deliverer.run(), 5.0)
        await deliverer.close()


class ObserverRecorder:
    def __init__(self) -> None:
        self.contained: list[tuple[str, str]] = []
        self.attempts: list[tuple[str, str]] = []

    def webhook_attempt(self, endpoint: str, outcome: str, duration_s: float) -> None:
        self.attempts.append((endpoint, outcome))

    def delivery_latency(self, endpoint: str, seconds: float) -> None:
        pass

    def contained_error(self, loop: str, error_type: str) -> None:
        self.contained.append((loop, error_type))


async def test_an_unexpected_error_in_one_attempt_is_that_deliverys_error() -> None:
    # A header value with a control character passes into aiohttp, which raises ValueError
    # ("Forbidden control character") from the POST: once a crash loop of the whole daemon.
    store = MemoryStore()
    observer = ObserverRecorder()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [
            endpoint("poisoned", receiver.url("/poisoned"), headers={"X-Note": "a\x01b"}),
            endpoint("app", receiver.url("/hook")),
        ]
        deliverer = Deliverer(
            store=AsyncAdapter(store),
            delivery=settings(),
            endpoints=endpoints,
            clock=SystemClock(),
            user_agent=USER_AGENT,
            observer=observer,
        )
        await deliverer.start()
        loop = asyncio.create_task(deliverer.run())
        try:
            with capture_logs() as logs:
                first = submit(store, endpoints, SystemClock())
                deliverer.enqueue(first)
                poisoned = next(d for d in first if d.endpoint == "poisoned")
                done = await settled(store, deliverer, poisoned)
                # The loop is alive: a later event is delivered too.
                second = submit(store, endpoints, SystemClock())
                deliverer.enqueue(second)
                await receiver.wait_for(2, path="/hook")
                assert not loop.done()
        finally:
            deliverer.stop()
            await deliverer.drain(2.0)
            await deliverer.close()
            await asyncio.wait_for(loop, 2.0)

    # Backed off on the schedule like a failed attempt, then failed and kept for redeliver.
    assert done.status is DeliveryStatus.FAILED
    assert done.attempts == len(FAST)
    assert done.last_error == "internal error: ValueError"
    attempts = store.attempts(poisoned.delivery_id)
    assert [a.outcome for a in attempts] == [AttemptOutcome.RETRY] * 2 + [AttemptOutcome.FAILED]
    assert all(a.error == "internal error: ValueError" for a in attempts)
    assert not any(r.path == "/poisoned" for r in receiver.received)
    errors = [
        e
        for e in logs
        if e["event"] == "webhook_attempt_error" and e["delivery_id"] == poisoned.delivery_id
    ]
    assert len(errors) == len(FAST)
    assert errors[0]["error_type"] == "ValueError"
    assert errors[0].get("exc_info")
    assert len(observer.contained) >= len(FAST)
    assert set(observer.contained) == {("deliverer", "ValueError")}


async def test_a_store_failure_inside_an_attempt_still_ends_run() -> None:
    class LosingStore(MemoryStore):
        def event_bodies(self, event_ids: Any) -> dict[str, bytes]:
            raise StoreError("database disk image is malformed")

    store = LosingStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"))]
        deliverer = Deliverer(
            store=AsyncAdapter(store),
            delivery=settings(),
            endpoints=endpoints,
            clock=SystemClock(),
            user_agent=USER_AGENT,
        )
        await deliverer.start()
        deliverer.enqueue(submit(store, endpoints, SystemClock()))
        with capture_logs(), pytest.raises(StoreError, match="malformed"):
            await asyncio.wait_for(deliverer.run(), 5.0)
        await deliverer.close()


async def test_secrets_never_logged_nor_stored() -> None:
    callback_secret = generate_secret()
    store = MemoryStore()
    with capture_logs() as logs:
        async with start_receiver([SECRET]) as receiver:
            receiver.script("/hook", 500, Reply(429, headers={"Retry-After": "0"}), 410)
            endpoints = [
                endpoint("app", receiver.url("/hook")),
                endpoint("gone", receiver.url("/x"), "whsec_!!notbase64!!"),
            ]
            config = settings(callback_secret=callback_secret)
            async with running(store, endpoints, config) as deliverer:
                deliveries = submit(
                    store, endpoints, SystemClock(), callback_url=receiver.url("/cb?token=tok")
                )
                deliverer.enqueue(deliveries)
                for delivery in deliveries:
                    await settled(store, deliverer, delivery)
                signatures = [r.signature for r in receiver.received]

    assert len(receiver.received) == 4  # app 3x, callback 1x; "gone" has a bad secret
    forbidden = [SECRET, callback_secret, "notbase64", "token=tok", *filter(None, signatures)]
    forbidden += [s.removeprefix("whsec_") for s in (SECRET, callback_secret)]
    logged = json.dumps(logs, default=str)
    stored = json.dumps(
        [
            (d.last_error, [a.error for a in store.attempts(d.delivery_id)])
            for d in store.list_deliveries()[0]
        ]
    )
    for secret in forbidden:
        assert secret not in logged
        assert secret not in stored
    assert {e["event"] for e in logs} >= {
        "webhook_delivered",
        "webhook_attempt_failed",
        "webhook_delivery_failed",
    }
    bad_secret = next(d for d in store.list_deliveries()[0] if d.endpoint == "gone")
    assert bad_secret.status is DeliveryStatus.FAILED
    assert bad_secret.last_error is not None
    assert "secret" in bad_secret.last_error


def test_target_repr_hides_secrets() -> None:
    target = Target(url="http://x", secrets=(SECRET,), timeout_s=1.0, headers={})
    assert SECRET not in repr(target)


async def test_wall_clock_steps_move_no_attempt() -> None:
    """Due times are elapsed time: a step ahead neither sends early nor stores a retry years
    ahead, a step back delays nothing; each attempt still carries the real wall time."""
    year_s = 365 * 86_400.0
    start = float(int(time.time()))
    clock = ManualClock(start=start)
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        receiver.script("/hook", 500, 500, 200)
        endpoints = [endpoint("app", receiver.url("/hook"))]
        async with running(store, endpoints, settings((0.0, 30.0, 30.0)), clock=clock) as deliverer:
            (delivery,) = submit(store, endpoints, clock)
            deliverer.enqueue([delivery])

            def attempts() -> int:
                return len(store.attempts(delivery.delivery_id))

            await eventually(lambda: attempts() == 1)
            assert store.get_delivery(delivery.delivery_id).next_attempt_at == start + 30.0
            clock.step_wall(10 * year_s)
            clock.advance(29.0)
            await eventually(lambda: deliverer.stats.last_progress_at == clock.monotonic())
            assert attempts() == 1  # the step sent nothing early
            clock.advance(1.0)
            await eventually(lambda: attempts() == 2)
            # Stored on the anchor the store's times use, 30 s on: not ten years ahead.
            assert store.get_delivery(delivery.delivery_id).next_attempt_at == start + 60.0
            clock.step_wall(-10 * year_s - 17.0)
            clock.advance(29.0)
            await eventually(lambda: deliverer.stats.last_progress_at == clock.monotonic())
            assert attempts() == 2
            clock.advance(1.0)
            first, second, third = await receiver.wait_for(3)
            done = await settled(store, deliverer, delivery)

    assert done.status is DeliveryStatus.SUCCEEDED
    assert first.webhook_id == second.webhook_id == third.webhook_id
    # webhook-timestamp: the real wall time at each attempt, as the contract says.
    assert (first.timestamp, second.timestamp, third.timestamp) == (
        int(start),
        int(start + 10 * year_s + 30.0),
        int(start + 60.0 - 17.0),
    )
    assert first.verified
    assert third.verified


async def test_no_attempt_starts_past_the_fence_until_a_renewal_moves_it() -> None:
    # Several instances: a process frozen past the end of its trusted lease must not send a
    # webhook another instance may hold now, before the cluster member has noticed.
    clock = ManualClock(start=time.time())
    store = MemoryStore()
    async with start_receiver([SECRET]) as receiver:
        endpoints = [endpoint("app", receiver.url("/hook"))]
        (delivery,) = submit(store, endpoints, clock)
        later = store.get_delivery(delivery.delivery_id)
        later.next_attempt_at = clock.now() + 5
        store.record_attempt(_attempt(delivery, number=1), later)
        async with running(store, endpoints, clock=clock) as deliverer:
            await eventually(lambda: deliverer.stats.pending == 1)
            deliverer.set_fence(clock.monotonic() + 1.0)
            clock.advance(60.0)  # one jump: the freeze
            await eventually(lambda: deliverer.stats.last_progress_at == clock.monotonic())
            assert deliverer.stats.in_flight == 0
            assert receiver.received == []
            deliverer.set_fence(clock.monotonic() + 20.0)  # a heartbeat renewed the lease
            (request,) = await receiver.wait_for(1)
            await settled(store, deliverer, delivery)
    assert request.webhook_id == delivery.webhook_id
