"""The Scheduler's wake-ups on a ManualClock: polls due close together start together.

At thousands of polls a second, waking the loop for every poll (0.5 ms apart at 2,000/s) cost
more CPU than the polls' own bookkeeping; the loop sleeps at least a coalescing window instead,
which bounds how late a poll may start. Time moves only when the test advances it, in steps
that are exact in binary floating point, so every start time is checked exactly.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from watcher.clock import ManualClock
from watcher.config.settings import PollingConfig, PollingPolicy, Secret, UpstreamConfig
from watcher.models import Task, TaskSource, TaskState
from watcher.polling.decide import Decision, Watch
from watcher.polling.scheduler import COALESCE_S, Scheduler
from watcher.upstream.classify import PollOutcome, PollResult

WALL0 = 1_700_000_000.0
# Each task's first poll comes FIRST_DELAY_S after its registration: registering a task
# FIRST_DELAY_S - x ago makes it due x from now.
FIRST_DELAY_S = 10.0
POLICY = PollingPolicy(
    initial_delay_s=FIRST_DELAY_S,
    initial_interval_s=1.0,
    max_interval_s=1.0,
    backoff=1.0,
    jitter=0.0,
    deadline_s=3600.0,
    not_found_grace_s=0.0,
)
PENDING = PollResult(PollOutcome.OK, 200, 200, {"state": "pending"}, None, "HTTP 200")


class CountingClock(ManualClock):
    """A ManualClock that counts the loop's sleeps (each one is a wake-up later)."""

    def __init__(self) -> None:
        super().__init__(start=WALL0)
        self.waits = 0

    async def wait_event(self, event: asyncio.Event, seconds: float) -> None:
        self.waits += 1
        await super().wait_event(event, seconds)


class FakeClient:
    """Answers `pending` at once, or, with `hold`, only once the test releases the poll."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.hold = False
        self.held: list[asyncio.Event] = []

    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        self.calls.append((task_id, self.clock.monotonic()))
        if self.hold:
            release = asyncio.Event()
            self.held.append(release)
            await release.wait()
        return PENDING

    def times(self, task_id: str) -> list[float]:
        return [at for tid, at in self.calls if tid == task_id]


class Sink:
    async def commit(self, watch: Watch, decision: Decision) -> bool:
        return True

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        pass


@dataclass
class Rig:
    clock: CountingClock
    client: FakeClient
    scheduler: Scheduler

    def due_in(self, task_id: str, seconds: float) -> None:
        """Watch a task whose first poll is due `seconds` from now."""
        at = self.clock.time() - FIRST_DELAY_S + seconds
        self.scheduler.watch(
            Task(task_id, "m", None, None, {}, None, TaskSource.API, TaskState.PENDING, at, at)
        )

    async def run_for(self, seconds: float, step_s: float) -> None:
        for _ in range(round(seconds / step_s)):
            self.clock.advance(step_s)
            await settle()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def make_rig(*, coalesce_s: float, rate: float = 0.0, concurrency: int = 1000) -> Rig:
    clock = CountingClock()
    client = FakeClient(clock)
    upstream = UpstreamConfig(
        base_url="http://127.0.0.1:9",
        api_key=Secret("sk-test"),
        max_concurrency=concurrency,
        max_requests_per_second=rate,  # 0: no budget
    )
    scheduler = Scheduler(
        client=client,
        polling=PollingConfig(default=POLICY),
        upstream=upstream,
        sink=Sink(),
        clock=clock,
        coalesce_s=coalesce_s,
    )
    return Rig(clock, client, scheduler)


@pytest.fixture
async def running() -> AsyncIterator[list[Rig]]:
    """Rigs appended to the list are run, then stopped at the end of the test."""
    rigs: list[Rig] = []
    runs: list[asyncio.Task[None]] = []

    async def start() -> None:
        while True:
            for rig in rigs[len(runs) :]:
                runs.append(asyncio.create_task(rig.scheduler.run()))
            await asyncio.sleep(0)

    starter = asyncio.create_task(start())
    yield rigs
    starter.cancel()
    for rig in rigs:
        rig.scheduler.stop()
        for release in rig.client.held:
            release.set()
        await rig.scheduler.drain(1.0)
    await asyncio.wait_for(asyncio.gather(*runs), 5)


def test_the_coalescing_window_is_a_few_milliseconds() -> None:
    # The bound documented for how late a poll may start (docs/performance.md).
    assert 0.001 <= COALESCE_S <= 0.01


async def test_polls_due_within_the_window_start_together_and_none_starts_early(
    running: list[Rig],
) -> None:
    # A window of 1/4 s on a clock moved in 1/8 s steps: exact times, same rule as 5 ms.
    rig = make_rig(coalesce_s=0.25)
    for task_id, due in (("a", 1.0), ("b", 1.125), ("c", 1.25), ("d", 2.0), ("e", 2.125)):
        rig.due_in(task_id, due)
    running.append(rig)
    await settle()
    await rig.run_for(2.5, 0.125)
    # a is on time; b came due 1/8 s after it, so the loop slept the whole window and started
    # b (late by 1/8 s) with c (on time) in one wake-up; d is on time (due more than a window
    # after c); e is late by 1/8 s, with a, b and c's next polls (1 s after their answers).
    assert {t: rig.client.times(t) for t in "abcde"} == {
        "a": [1.0, 2.0],
        "b": [1.25, 2.25],
        "c": [1.25, 2.25],
        "d": [2.0],
        "e": [2.25],
    }


async def test_a_steady_stream_of_polls_wakes_the_loop_once_per_window(
    running: list[Rig],
) -> None:
    # 256 tasks due 1/1024 s apart (about 1,000 polls a second), a window of 1/64 s: the loop
    # wakes once per window (16 polls each), not once per poll, and a finished poll does not
    # wake it; every poll starts within a window of its due time.
    rig = make_rig(coalesce_s=1 / 64)
    dues = {f"t{i}": 1.0 + i / 1024 for i in range(256)}
    for task_id, due in dues.items():
        rig.due_in(task_id, due)
    running.append(rig)
    await settle()
    await rig.run_for(1.0, 1 / 1024)
    waits_before = rig.clock.waits
    await rig.run_for(0.25, 1 / 1024)
    waits = rig.clock.waits - waits_before
    assert len(rig.client.calls) == 256
    assert waits <= 256 / 16 + 2, waits
    lateness = [at - dues[task_id] for task_id, at in rig.client.calls]
    assert min(lateness) >= 0.0
    assert max(lateness) < 1 / 64


async def test_a_freed_concurrency_slot_starts_the_next_due_poll_at_once(
    running: list[Rig],
) -> None:
    rig = make_rig(coalesce_s=0.25, concurrency=1)
    rig.client.hold = True
    rig.due_in("a", 1.0)
    rig.due_in("b", 1.0)
    running.append(rig)
    await settle()
    await rig.run_for(1.0, 0.125)
    assert [t for t, _ in rig.client.calls] == ["a"]  # b waits for the only slot
    rig.client.held[0].set()  # a's answer comes; no time passes
    await settle()
    assert rig.client.calls == [("a", 1.0), ("b", 1.0)]


def worst_window(starts: list[float]) -> int:
    starts = sorted(starts)
    return max(bisect.bisect_right(starts, t + 1.0 + 1e-9) - i for i, t in enumerate(starts))


async def test_an_even_stream_above_the_budget_uses_all_of_it_and_never_more(
    running: list[Rig],
) -> None:
    # 400 tasks due 1/400 s apart, each every second (400 polls/s wanted), a budget of 256/s
    # (polls 1/256 s apart, finer than the 1/64 s window): the budget's own waits are not
    # stretched to the window, so it is used in full, and never exceeded.
    rig = make_rig(coalesce_s=1 / 64, rate=256.0)
    for i in range(400):
        rig.due_in(f"t{i}", 1.0 + i / 400)
    running.append(rig)
    await settle()
    await rig.run_for(4.0, 1 / 1024)
    starts = [at for _, at in rig.client.calls]
    assert worst_window(starts) <= 257
    assert len([at for at in starts if 2.0 <= at < 4.0]) >= 2 * 256 - 2
