"""The Scheduler's request budget on a ManualClock: bursts of due polls, 429s."""

from __future__ import annotations

import asyncio
import bisect
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

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


# -- budget-aware priority and learning ---------------------------------------------------------


class OrderClient(FakeClient):
    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.order: list[str] = []

    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        self.order.append(task_id)
        return await super().fetch_status(model, task_id)


def lognormal(n: int, median: float) -> list[float]:
    rng = random.Random(5)
    return [median * math.exp(0.3 * rng.gauss(0.0, 1.0)) for _ in range(n)]


def task(task_id: str, registered_at: float) -> Task:
    return Task(
        task_id,
        "m",
        None,
        None,
        {},
        None,
        TaskSource.API,
        TaskState.PENDING,
        registered_at,
        registered_at,
    )


async def test_when_the_budget_binds_likely_finished_tasks_go_first() -> None:
    clock = ManualClock(start=WALL0)
    client = OrderClient(clock)
    upstream = UpstreamConfig(
        base_url="http://127.0.0.1:9", api_key=Secret("k"), max_requests_per_second=2.0
    )
    policy = replace(POLICY, initial_interval_s=600.0, max_interval_s=600.0)
    scheduler = Scheduler(
        client=client,
        polling=PollingConfig(default=policy),
        upstream=upstream,
        sink=Sink(),
        clock=clock,
    )
    scheduler.load_durations({"m": lognormal(200, median=20.0)})
    now = clock.time()
    # Registered first, so first in line by due time; but just registered: unlikely done.
    for i in range(8):
        scheduler.watch(task(f"young{i}", now))
    # Registered 20 s ago (e.g. resumed after a restart): about half are done by now.
    for i in range(8):
        scheduler.watch(task(f"ripe{i}", now - 20.0))
    run = asyncio.create_task(scheduler.run())
    try:
        rig = Rig(clock, client, scheduler)
        await rig.run_for(9.0, 0.05)
    finally:
        scheduler.stop()
        await scheduler.drain(1.0)
        await asyncio.wait_for(run, 5)
    order = client.order
    assert len(order) == 16
    # The first went while the budget was free (first due, first served); from then on the
    # budget binds and every ripe task goes before the remaining young ones.
    assert order[0] == "young0"
    assert all(t.startswith("ripe") for t in order[1:9]), order
    assert all(t.startswith("young") for t in order[9:]), order


async def test_finished_tasks_teach_the_learner(rig30: Rig) -> None:
    created_ms = int(WALL0 * 1000) - 4_000
    rig30.client.answer = PollResult(
        PollOutcome.OK,
        200,
        200,
        {"state": "pending", "createTime": created_ms},
        None,
        "HTTP 200",
    )
    rig30.add(1)
    await rig30.run_for(0.1, 0.01)
    watch = rig30.scheduler.get("t0")
    assert watch is not None
    assert watch.created_at == pytest.approx(-4.0)  # 4 s before registration, on this clock
    done = {
        "state": "success",
        "resultJson": '{"resultUrls": []}',
        "createTime": created_ms,
        "completeTime": created_ms + 12_500,
        "costTime": 12_500,
    }
    rig30.client.answer = PollResult(PollOutcome.OK, 200, 200, done, None, "HTTP 200")
    await rig30.run_for(1.0, 0.01)
    assert rig30.scheduler.get("t0") is None
    learned = rig30.scheduler.learned_durations()
    assert [(m, d) for m, d, _ in learned] == [("m", 12.5)]
    assert rig30.scheduler.learned_durations() == []  # handed over once
    (stats,) = rig30.scheduler.model_stats()
    assert (stats.model, stats.samples, stats.duration_p50_s) == ("m", 1, 12.5)
    assert stats.detection_delay_mean_s is not None
    assert stats.strategy == "fixed"


async def test_a_hint_moves_the_next_poll_to_now_but_not_within_a_second_of_the_last() -> None:
    clock = ManualClock(start=WALL0)
    client = OrderClient(clock)
    upstream = UpstreamConfig(base_url="http://127.0.0.1:9", api_key=Secret("k"))
    policy = replace(POLICY, initial_interval_s=600.0, max_interval_s=600.0)
    scheduler = Scheduler(
        client=client,
        polling=PollingConfig(default=policy),
        upstream=upstream,
        sink=Sink(),
        clock=clock,
    )
    scheduler.watch(task("a", clock.time()))
    run = asyncio.create_task(scheduler.run())
    rig = Rig(clock, client, scheduler)
    try:
        await rig.run_for(0.1, 0.05)
        assert client.order == ["a"]  # the first poll; the next is 600 s away
        assert scheduler.poll_soon("unknown") is False
        assert scheduler.poll_soon("a") is True
        await rig.run_for(0.5, 0.05)
        assert client.order == ["a"]  # not within HINT_MIN_GAP_S of the last poll
        await rig.run_for(0.6, 0.05)
        assert client.order == ["a", "a"]
        watch = scheduler.get("a")
        assert watch is not None
        assert watch.hinted is False  # the poll answered the hint
        assert watch.next_poll_at is not None
        assert watch.next_poll_at > clock.monotonic() + 500
    finally:
        scheduler.stop()
        await scheduler.drain(1.0)
        await asyncio.wait_for(run, 5)
