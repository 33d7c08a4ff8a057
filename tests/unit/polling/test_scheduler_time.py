"""The Scheduler on a ManualClock: wall-clock steps and credential pauses, without the network.

The client is a fake that answers at once; time moves only when the test advances it, so every
schedule is checked exactly, on the monotonic clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from watcher.clock import ManualClock
from watcher.config.settings import PollingConfig, PollingPolicy, Secret, UpstreamConfig
from watcher.models import Task, TaskSource, TaskState
from watcher.polling.decide import Decision, Watch
from watcher.polling.scheduler import PAUSE_SAVE_INTERVAL_S, Scheduler
from watcher.upstream.classify import PollOutcome, PollResult

YEAR_S = 365 * 86_400.0
WALL0 = 1_700_000_000.0
POLICY = PollingPolicy(
    initial_delay_s=0.0,
    initial_interval_s=1.0,
    max_interval_s=4.0,
    backoff=2.0,
    jitter=0.0,
    deadline_s=60.0,
    not_found_grace_s=0.0,
)
PENDING = PollResult(PollOutcome.OK, 200, 200, {"state": "pending"}, None, "HTTP 200")
REJECTED = PollResult(PollOutcome.CREDENTIALS, 401, 401, None, None, "HTTP 401: bad key")


class FakeClient:
    """Answers every poll with `answer`; records (task_id, monotonic time) of each."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.answer = PENDING
        self.calls: list[tuple[str, float]] = []

    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        self.calls.append((task_id, self.clock.monotonic()))
        return self.answer

    def times(self, task_id: str) -> list[float]:
        return [at for tid, at in self.calls if tid == task_id]


@dataclass
class Sink:
    commits: list[tuple[str, Decision]] = field(default_factory=list)
    pauses: list[tuple[float, float]] = field(default_factory=list)

    async def commit(self, watch: Watch, decision: Decision) -> bool:
        self.commits.append((watch.task_id, decision))
        return True

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        self.pauses.append((since, until))


@dataclass
class Rig:
    clock: ManualClock
    client: FakeClient
    sink: Sink
    scheduler: Scheduler

    def add(self, task_id: str, *, deadline_s: float | None = None) -> None:
        self.scheduler.watch(self.task(task_id, deadline_s=deadline_s))

    def task(
        self, task_id: str, *, deadline_s: float | None = None, state: TaskState = TaskState.PENDING
    ) -> Task:
        now = self.clock.time()
        return Task(task_id, "m", None, None, {}, deadline_s, TaskSource.API, state, now, now)

    async def run_for(self, seconds: float, step_s: float = 0.25) -> None:
        """Let `seconds` pass in small steps, the loop running between them."""
        for _ in range(round(seconds / step_s)):
            self.clock.advance(step_s)
            await settle()

    def timed_out(self) -> list[str]:
        return [t for t, d in self.sink.commits if d.new_state is TaskState.TIMED_OUT]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(scheduler_class: type[Scheduler] = Scheduler) -> AsyncIterator[Rig]:
    """A scheduler of `scheduler_class` on a ManualClock, running until the block ends."""
    clock = ManualClock(start=WALL0)
    client = FakeClient(clock)
    sink = Sink()
    upstream = UpstreamConfig(
        base_url="http://127.0.0.1:9",
        api_key=Secret("sk-test"),
        max_concurrency=4,
        max_requests_per_second=100.0,
    )
    scheduler = scheduler_class(
        client=client,
        polling=PollingConfig(default=POLICY),
        upstream=upstream,
        sink=sink,
        clock=clock,
    )
    run = asyncio.create_task(scheduler.run())
    try:
        yield Rig(clock, client, sink, scheduler)
    finally:
        scheduler.stop()
        await scheduler.drain(1.0)
        await asyncio.wait_for(run, 5)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with running() as rig:
        yield rig


@pytest.mark.parametrize(
    "steps",
    [
        (YEAR_S * 10, -YEAR_S * 10),  # ahead for a while, then back: the reported fault
        (17.0, -17.0),
        (-YEAR_S * 30, YEAR_S * 30),  # booted in 1994, then NTP
        (3600.0,),
        (-3600.0,),
    ],
)
async def test_wall_clock_steps_move_no_poll_and_end_no_task(
    rig: Rig, steps: tuple[float, ...]
) -> None:
    rig.add("a")
    await settle()
    assert rig.client.times("a") == [0.0]
    for step in steps:
        rig.clock.step_wall(step)
        await rig.run_for(10.0)
    await rig.run_for(20.0 - rig.clock.monotonic())
    assert rig.timed_out() == []
    times = rig.client.times("a")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [1.0, 2.0, 4.0, 4.0]  # the backoff, in elapsed time, steps or not
    assert all(gap == 4.0 for gap in gaps[2:])
    # The deadline is 60 s of elapsed time, whatever the wall clock says.
    await rig.run_for(60.0 - rig.clock.monotonic() - 0.25)
    assert rig.timed_out() == []
    await rig.run_for(0.5)
    assert rig.timed_out() == ["a"]
    [(_, decision)] = [c for c in rig.sink.commits if c[1].new_state is TaskState.TIMED_OUT]
    assert decision.outcome is not None
    assert decision.outcome.watched_seconds == pytest.approx(60.0)


async def test_a_step_forward_during_a_rate_limit_ends_no_pause_early(rig: Rig) -> None:
    rig.client.answer = PollResult(PollOutcome.RATE_LIMITED, 429, 429, None, 5.0, "HTTP 429")
    rig.add("a")
    await settle()
    rig.client.answer = PENDING
    rig.clock.step_wall(YEAR_S)
    await rig.run_for(4.5)
    assert rig.client.times("a") == [0.0]  # still waiting for the Retry-After
    limited = rig.scheduler.stats.rate_limited_until
    assert limited is not None
    assert limited == pytest.approx(WALL0 + 5.0)  # shown as a wall time (on the anchor)
    await rig.run_for(0.5)
    assert rig.client.times("a") == [0.0, 5.0]


async def test_a_credential_pause_is_persisted_while_it_lasts_and_when_it_ends(rig: Rig) -> None:
    rig.client.answer = REJECTED
    rig.add("a")
    await settle()
    assert rig.scheduler.stats.credentials_paused
    await rig.run_for(PAUSE_SAVE_INTERVAL_S + 1.0)
    # Saved once a minute while it lasts (wall times: the tasks' registrations are wall times).
    assert rig.sink.pauses == [(WALL0, WALL0 + PAUSE_SAVE_INTERVAL_S)]
    rig.client.answer = PENDING  # the next probe (30 s, then 60 s later) passes
    await rig.run_for(90.0 - rig.clock.monotonic())
    assert not rig.scheduler.stats.credentials_paused
    assert rig.sink.pauses == [
        (WALL0, WALL0 + PAUSE_SAVE_INTERVAL_S),
        (WALL0 + PAUSE_SAVE_INTERVAL_S, WALL0 + 90.0),
    ]
    watch = rig.scheduler.get("a")
    assert watch is not None
    assert watch.deadline_at == 60.0 + 90.0  # in memory too
    assert rig.timed_out() == []


async def test_a_pause_still_going_at_shutdown_is_persisted(rig: Rig) -> None:
    rig.client.answer = REJECTED
    rig.add("a")
    await settle()
    await rig.run_for(45.0)
    rig.scheduler.stop()
    await rig.scheduler.drain(1.0)
    assert rig.sink.pauses == [(WALL0, WALL0 + 45.0)]


async def test_a_task_never_answered_is_polled_before_its_deadline_ends_it(rig: Rig) -> None:
    # Registered long ago (the daemon was down past its deadline): asked once, then ended.
    long_ago = rig.clock.time() - 3600.0
    rig.scheduler.watch(
        Task(
            "old", "m", None, None, {}, None, TaskSource.API, TaskState.PENDING, long_ago, long_ago
        )
    )
    await settle()
    assert rig.client.times("old") == [0.0]
    assert rig.timed_out() == ["old"]


async def test_watch_many_watches_each_task_as_watch_does_and_wakes_the_loop(rig: Rig) -> None:
    rig.add("a", deadline_s=30.0)
    await settle()
    await rig.run_for(0.25)  # the loop now sleeps towards a's next poll, at 1.0
    # A batch larger than the heap (heapified), with a repeat, a terminal and a watched task.
    rig.scheduler.watch_many(
        [
            rig.task("b", deadline_s=30.0),
            rig.task("c"),
            rig.task("c"),
            rig.task("done", state=TaskState.SUCCEEDED),
            rig.task("a"),
            rig.task("d"),
        ]
    )
    await settle()
    await rig.run_for(0.04, step_s=0.01)  # the budget (100/s) spaces the polls 10 ms apart
    # Polled at once, not when the loop would have woken for a (1.0).
    assert {t: at for t, at in rig.client.calls if at > 0} == pytest.approx(
        {"b": 0.25, "c": 0.26, "d": 0.27}
    )
    assert rig.scheduler.get("done") is None
    a, b = rig.scheduler.get("a"), rig.scheduler.get("b")
    assert a is not None
    assert b is not None
    assert b.deadline_at == a.deadline_at + 0.25  # registered 0.25 s later, same own deadline
    assert (b.interval_s, b.polls, b.state) == (a.interval_s, 1, TaskState.PENDING)
    # A batch smaller than the heap is pushed entry by entry, and still wakes the loop.
    await rig.run_for(0.21, step_s=0.01)
    rig.scheduler.watch_many([rig.task("e")])
    await settle()
    assert rig.client.times("e") == [pytest.approx(0.5)]
    assert rig.client.times("a") == [0.0]
    await rig.run_for(0.5)
    assert rig.client.times("a") == [0.0, pytest.approx(1.0)]  # its own schedule is unchanged


async def test_watch_new_watches_each_task_as_watch_does_and_wakes_the_loop(rig: Rig) -> None:
    rig.add("a", deadline_s=30.0)
    await settle()
    await rig.run_for(0.25)  # the loop now sleeps towards a's next poll, at 1.0
    # A batch larger than the heap (heapified), with a repeat and a watched task.
    rig.scheduler.watch_new(
        ["b", "c", "c", "a", "d"],
        ["m"] * 5,
        [30.0, None, None, None, None],
        registered_at=rig.clock.time(),
    )
    await settle()
    await rig.run_for(0.04, step_s=0.01)  # the budget (100/s) spaces the polls 10 ms apart
    # Polled at once, not when the loop would have woken for a (1.0).
    assert {t: at for t, at in rig.client.calls if at > 0} == pytest.approx(
        {"b": 0.25, "c": 0.26, "d": 0.27}
    )
    a, b = rig.scheduler.get("a"), rig.scheduler.get("b")
    assert a is not None
    assert b is not None
    assert b.deadline_at == a.deadline_at + 0.25  # registered 0.25 s later, same own deadline
    assert (b.interval_s, b.polls, b.state) == (a.interval_s, 1, TaskState.PENDING)
    # A batch smaller than the heap is pushed entry by entry, and still wakes the loop.
    await rig.run_for(0.21, step_s=0.01)
    rig.scheduler.watch_new(["e"], ["m"], [None], registered_at=rig.clock.time())
    await settle()
    assert rig.client.times("e") == [pytest.approx(0.5)]
    assert rig.client.times("a") == [0.0]
    await rig.run_for(0.5)
    assert rig.client.times("a") == [0.0, pytest.approx(1.0)]  # its own schedule is unchanged


async def test_no_poll_starts_past_the_fence_until_a_renewal_moves_it(rig: Rig) -> None:
    # Several instances: the process was frozen (SIGSTOP, a VM pause) past the moment it
    # stops trusting its lease. It wakes with every timer overdue; the scheduler's may fire
    # before the cluster member has noticed, and must start no poll all the same.
    rig.add("a")
    await settle()
    assert rig.client.times("a") == [0.0]
    rig.scheduler.set_fence(0.5)
    rig.clock.advance(10.0)  # one jump: the freeze
    await settle()
    assert rig.client.times("a") == [0.0]
    rig.scheduler.set_fence(20.0)  # a heartbeat renewed the lease
    await settle()
    assert rig.client.times("a") == [0.0, 10.0]


async def test_a_poll_started_just_before_a_freeze_past_the_fence_is_not_sent() -> None:
    # The freeze can also land between a poll's start and its request: the scheduler took
    # the task and created the poll, and the process stopped before the poll first ran.
    class FreezesAfterAStart(Scheduler):
        freeze_s = 0.0

        def _take(self, watch: Watch, *, ready: bool = False) -> None:
            super()._take(watch, ready=ready)
            if self.freeze_s:
                assert isinstance(self._clock, ManualClock)
                self._clock.advance(self.freeze_s)  # frozen right after starting this poll
                self.freeze_s = 0.0

    async with running(FreezesAfterAStart) as rig:
        scheduler = rig.scheduler
        assert isinstance(scheduler, FreezesAfterAStart)
        rig.add("a")
        await settle()
        assert rig.client.times("a") == [0.0]
        scheduler.set_fence(1.5)
        scheduler.freeze_s = 10.0
        rig.clock.advance(1.0)  # "a" is due: it is started, and the freeze comes
        await settle()
        assert rig.client.times("a") == [0.0]  # no request after waking past the fence
        watch = scheduler.get("a")
        assert watch is not None
        assert watch.next_poll_at is not None  # due again, not lost
        scheduler.set_fence(30.0)  # a heartbeat renewed the lease
        await settle()
        assert rig.client.times("a") == [0.0, 11.0]
