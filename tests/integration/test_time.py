"""Time and the whole daemon: wall-clock steps, and deadlines across restarts.

The daemon runs in this process against the fake upstream and a verifying receiver. Clock steps
are made with an injected clock whose wall time the test steps (stepping the machine's clock
needs root, and libfaketime is not available); restarts stop the daemon as SIGTERM would and
start a new one on the same SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.helpers.clock import SteppedClock
from tests.helpers.daemon import API_KEY
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
    assert abs((await store.get_task("slow")).deadline_extension_s) < 1.0
    pending, _ = await store.list_deliveries(status=DeliveryStatus.PENDING)
    assert all(d.next_attempt_at is None or d.next_attempt_at < time.time() + 60 for d in pending)

    upstream.state.script("slow", success())
    hooks = await receiver.wait_for(4)
    assert hooks[3].body["type"] == "task.succeeded"
    assert hooks[3].body["data"]["task_id"] == "slow"


async def test_a_credential_pause_survives_a_restart(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.api_key = "sk-someone-else"  # our key is refused: 401, polling pauses
    upstream.state.script("t", processing(), processing(), processing(), success())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("t", deadline="1s")
    registered = time.monotonic()
    await until(
        lambda: (
            running.daemon.scheduler is not None
            and running.daemon.scheduler.stats.credentials_paused
        )
    )
    assert any("API key" in reason for reason in await running.daemon.readiness())
    # Paused for longer than the task's deadline, then restarted (e.g. to pick up a new key).
    await asyncio.sleep(registered + 1.5 - time.monotonic())
    assert await running.stop() == 0
    upstream.state.api_key = API_KEY

    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    (hook,) = await receiver.wait_for(1)
    # The pause still counts after the restart: the task is polled through "processing" until
    # it succeeds, rather than timed out on its first answer (or without one).
    assert hook.body["type"] == "task.succeeded"
    assert upstream.state.polls("t") >= 4
    assert await state_of(running, "t") == "succeeded"


async def test_a_deadline_that_passed_while_the_daemon_was_down_ends_nothing_unasked(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("t", processing())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("t", deadline="400ms")
    registered = time.monotonic()
    await until(lambda: upstream.state.polls("t") >= 1)
    assert await running.stop() == 0
    await asyncio.sleep(registered + 0.5 - time.monotonic())  # down past the deadline
    upstream.state.script("t", success())  # it finished meanwhile

    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    (hook,) = await receiver.wait_for(1)
    assert hook.body["type"] == "task.succeeded"
    assert await state_of(running, "t") == "succeeded"
