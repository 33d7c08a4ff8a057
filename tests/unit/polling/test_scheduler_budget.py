"""The Scheduler's request budget on a ManualClock: bursts of due polls, 429s."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from watcher.clock import ManualClock
from watcher.config.settings import PollingConfig, PollingPolicy, Secret, UpstreamConfig
from watcher.models import Task, TaskSource, TaskState
from watcher.polling.decide import Decision, Watch
from watcher.polling.scheduler import Scheduler
from watcher.upstream.classify import PollOutcome, PollResult

WALL0 = 1_700_000_000.0
POLICY = PollingPolicy(
    initial_delay_s=0.0,
    initial_interval_s=0.5,
    max_interval_s=0.5,
    backoff=1.0,
    jitter=0.0,
    deadline_s=3600.0,
    not_found_grace_s=0.0,
)
PENDING = PollResult(PollOutcome.OK, 200, 200, {"state": "pending"}, None, "HTTP 200")
LIMITED = PollResult(PollOutcome.RATE_LIMITED, 429, 429, None, 2.0, "HTTP 429")


class FakeClient:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.answer = PENDING
        self.starts: list[float] = []

    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        self.starts.append(self.clock.monotonic())
        return self.answer


class Sink:
    async def commit(self, watch: Watch, decision: Decision) -> bool:
        return True

    def extend_deadlines(self, *, since: float, until: float) -> None:
        pass


@dataclass
class Rig:
    clock: ManualClock
    client: FakeClient
    scheduler: Scheduler

    def add(self, n: int) -> None:
        now = self.clock.time()
        for i in range(n):
            task = Task(
                f"t{i}", "m", None, None, {}, None, TaskSource.API, TaskState.PENDING, now, now
            )
            self.scheduler.watch(task)

    async def run_for(self, seconds: float, step_s: float) -> None:
        for _ in range(round(seconds / step_s)):
            self.clock.advance(step_s)
            for _ in range(20):
                await asyncio.sleep(0)


def worst_window(starts: list[float]) -> int:
    starts = sorted(starts)
    return max(bisect.bisect_right(starts, t + 1.0 + 1e-9) - i for i, t in enumerate(starts))


async def make_rig(rate: float) -> tuple[Rig, asyncio.Task[None]]:
    clock = ManualClock(start=WALL0)
    client = FakeClient(clock)
    upstream = UpstreamConfig(
        base_url="http://127.0.0.1:9",
        api_key=Secret("sk-test"),
        max_concurrency=1000,
        max_requests_per_second=rate,
    )
    scheduler = Scheduler(
        client=client,
        polling=PollingConfig(default=POLICY),
        upstream=upstream,
        sink=Sink(),
        clock=clock,
    )
    return Rig(clock, client, scheduler), asyncio.create_task(scheduler.run())


@pytest.fixture
async def rig30() -> AsyncIterator[Rig]:
    rig, run = await make_rig(30.0)
    yield rig
    rig.scheduler.stop()
    await rig.scheduler.drain(1.0)
    await asyncio.wait_for(run, 5)


@pytest.mark.parametrize("step_s", [0.001, 0.01, 0.3])
async def test_a_burst_of_due_polls_never_exceeds_the_budget(rig30: Rig, step_s: float) -> None:
    # 500 tasks due at once, each due again every 0.5 s: demand far above 30/s.
    rig30.add(500)
    await rig30.run_for(6.0, step_s)
    starts = rig30.client.starts
    assert worst_window(starts) <= 31
    if step_s <= 0.01:  # coarser steps wake the loop too late to use the budget
        assert len(starts) >= 30 * 5


async def test_a_429_halves_the_rate_honours_retry_after_and_recovers(rig30: Rig) -> None:
    rig30.add(500)
    await rig30.run_for(2.0, 0.01)
    rig30.client.answer = LIMITED
    with capture_logs() as logs:
        await rig30.run_for(0.05, 0.01)
        limited_at = rig30.clock.monotonic()
        rig30.client.answer = PENDING
        assert rig30.scheduler.stats.request_rate == pytest.approx(15.0, abs=0.5)
        before = len(rig30.client.starts)
        await rig30.run_for(1.9, 0.01)
        assert len(rig30.client.starts) == before  # Retry-After: 2 s, honoured
        await rig30.run_for(3.0, 0.01)
        after = [t for t in rig30.client.starts if t > limited_at]
        # the lowered rate: 15/s, recovering by 1/s per second (RECOVERY_S = 30)
        assert min(after) >= limited_at + 1.9
        assert worst_window(after) <= 15 + 5 + 1
        await rig30.run_for(16.0, 0.05)
    events = [e["event"] for e in logs]
    # one decrease per round trip, however many answers of that round said 429
    assert events.count("upstream_rate_limited") == 1
    assert "upstream_rate_recovered" in events
    assert rig30.scheduler.stats.request_rate == 30.0
