"""Time and the whole daemon: wall-clock steps.

The daemon runs in this process against the fake upstream and a verifying receiver. Clock steps
are made with an injected clock whose wall time the test steps (stepping the machine's clock
needs root, and libfaketime is not available).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers.clock import SteppedClock
from tests.helpers.receiver import Receiver
from tests.integration.conftest import Running, Upstream
from watcher import daemon as daemon_module
from watcher.models import DeliveryStatus
from watcher.upstream.sandbox import processing, success

YEAR_S = 365 * 86_400.0


def endpoint(receiver: Receiver, secret: str) -> dict[str, Any]:
    return {"name": "app", "url": receiver.url("/hook"), "secret": secret}


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def state_of(running: Running, task_id: str) -> str:
    task = await running.get(f"/v1/tasks/{task_id}")
    state: str = task["state"]
    return state


async def test_wall_clock_steps_end_no_task_and_delay_no_webhook(
    start_daemon: Any,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon_module, "CLOCK_CHECK_INTERVAL_S", 0.05)
    clock = SteppedClock()
    upstream.state.script("slow", processing())
    upstream.state.script("done", success())
    receiver.script("/hook", 500, 500, 200)
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)],
        delivery={"retry_schedule": ["0s", "300ms", "300ms"]},
        clock=clock,
    )
    with capture_logs() as logs:

        def steps() -> list[float]:
            return [e["step_s"] for e in logs if e["event"] == "clock_step_detected"]

        await running.add("slow", deadline="4s")
        await until(lambda: upstream.state.polls("slow") >= 1)
        clock.step_wall(10 * YEAR_S)  # ahead...
        await running.add("done")  # registered, finished and first sent while it is wrong
        await receiver.wait_for(1)
        await until(lambda: len(steps()) == 1)
        async with running.http.get(running.base + "/healthz") as resp:
            assert resp.status == 200  # no loop looks stalled
        clock.step_wall(-10 * YEAR_S)  # ...and back
        await until(lambda: len(steps()) == 2)
        first, second, third = await receiver.wait_for(3)

    assert steps() == [pytest.approx(10 * YEAR_S, abs=1), pytest.approx(-10 * YEAR_S, abs=1)]
    assert [e["log_level"] for e in logs if e["event"] == "clock_step_detected"] == [
        "warning",
        "warning",
    ]
    # Nothing timed out on the step: the slow task is still watched.
    assert await state_of(running, "slow") == "processing"
    # The webhook kept its retry schedule (300 ms, not ten years).
    assert first.webhook_id == second.webhook_id == third.webhook_id
    assert third.received_at - first.received_at < 5.0
    assert third.verified
    # Stored times to come moved with the steps, so a restart reads them right: the deadline
    # extension is back to (about) nothing, no pending delivery is due years from now.
    store = running.daemon.store
    assert store is not None
    assert abs(store.get_task("slow").deadline_extension_s) < 1.0
    pending, _ = store.list_deliveries(status=DeliveryStatus.PENDING)
    assert all(d.next_attempt_at is None or d.next_attempt_at < time.time() + 60 for d in pending)

    upstream.state.script("slow", success())
    hooks = await receiver.wait_for(4)
    assert hooks[3].body["type"] == "task.succeeded"
    assert hooks[3].body["data"]["task_id"] == "slow"
