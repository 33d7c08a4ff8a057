"""The Scheduler with the real UpstreamClient against the sandbox on loopback.

Intervals are tens of milliseconds; the sink is a small recording fake (the real one is the
service's). Waits are on conditions with a timeout, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from watcher.clock import ManualClock, SystemClock
from watcher.config.settings import PollingConfig, PollingPolicy, Secret, UpstreamConfig
from watcher.errors import StoreError
from watcher.models import EventType, Task, TaskSource, TaskState
from watcher.polling.decide import BAD_RESULT_CODE, Decision, Watch
from watcher.polling.scheduler import Scheduler
from watcher.upstream.classify import PollOutcome, PollResult
from watcher.upstream.client import UpstreamClient
from watcher.upstream.sandbox import (
    SANDBOX,
    SandboxState,
    bad_result,
    error,
    failed,
    make_sandbox_app,
    pending,
    processing,
    success,
)

KEY = "sk-test-scheduler"
POLICY = PollingPolicy(
    initial_delay_s=0.0,
    initial_interval_s=0.02,
    max_interval_s=0.05,
    backoff=1.5,
    jitter=0.1,
    deadline_s=30.0,
    not_found_grace_s=0.0,
)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@dataclass
class Commit:
    task_id: str
    from_state: TaskState
    decision: Decision
    polls: int
    requests_seen: int  # status requests the sandbox had received for the task by then


class RecordingSink:
    """Records every commit; can refuse (task cancelled meanwhile) or fail (store error)."""

    def __init__(self, sandbox: SandboxState) -> None:
        self.sandbox = sandbox
        self.commits: list[Commit] = []
        self.refuse: set[str] = set()
        self.failures = 0
        self.pauses: list[tuple[float, float]] = []  # extend_deadlines(since, until) calls

    async def commit(self, watch: Watch, decision: Decision) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreError("disk full")
        self.commits.append(
            Commit(
                watch.task_id,
                watch.state,
                decision,
                watch.polls,
                self.sandbox.polls(watch.task_id),
            )
        )
        return watch.task_id not in self.refuse

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        self.pauses.append((since, until))

    def terminal(self, task_id: str | None = None) -> list[Commit]:
        return [
            c
            for c in self.commits
            if c.decision.terminal and (task_id is None or c.task_id == task_id)
        ]

    def events(self, task_id: str) -> list[EventType]:
        return [
            c.decision.outcome.type
            for c in self.commits
            if c.task_id == task_id and c.decision.outcome is not None
        ]


@dataclass
class Harness:
    server: TestServer
    sandbox: SandboxState
    client: UpstreamClient
    sink: RecordingSink
    scheduler: Scheduler
    run_task: asyncio.Task[None] | None = None
    tasks: list[str] = field(default_factory=list)

    def add(self, task_id: str, *, deadline_s: float | None = None, model: str = "m") -> None:
        now = time.time()
        self.scheduler.watch(
            Task(
                task_id=task_id,
                model=model,
                endpoints=None,
                callback_url=None,
                metadata={},
                deadline_s=deadline_s,
                source=TaskSource.API,
                state=TaskState.PENDING,
                registered_at=now,
                updated_at=now,
            )
        )
        self.tasks.append(task_id)

    def start(self) -> None:
        self.run_task = asyncio.create_task(self.scheduler.run())

    async def all_finished(self, timeout: float = 5.0) -> None:
        await wait_until(
            lambda: (
                all(self.sink.terminal(t) for t in self.tasks)
                and self.scheduler.stats.watched == 0
                and self.scheduler.stats.in_flight == 0
            ),
            timeout,
        )

    async def close(self) -> None:
        if self.run_task is not None:
            self.scheduler.stop()
            await self.scheduler.drain(1.0)
            if not self.run_task.done():
                await asyncio.wait_for(self.run_task, 5)
            elif not self.run_task.cancelled():
                self.run_task.exception()  # retrieved: a test that expects it checks it
        await self.client.close()


MakeHarness = Callable[..., Harness]


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[..., Any]]:
    made: list[Harness] = []
    servers: list[TestServer] = []

    async def make(
        *,
        policy: PollingPolicy = POLICY,
        rate: float = 200.0,
        concurrency: int = 8,
        timeout_s: float = 5.0,
        **scheduler_args: Any,
    ) -> Harness:
        server = TestServer(make_sandbox_app(api_key=KEY, finish_after_s=0.1), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        sandbox = server.app[SANDBOX]
        upstream = UpstreamConfig(
            base_url=str(server.make_url("/api/v1")),
            api_key=Secret(KEY),
            timeout_s=timeout_s,
            max_concurrency=concurrency,
            max_requests_per_second=rate,
        )
        client = UpstreamClient(upstream)
        sink = RecordingSink(sandbox)
        scheduler = Scheduler(
            client=client,
            polling=PollingConfig(default=policy),
            upstream=upstream,
            sink=sink,
            clock=SystemClock(),
            **scheduler_args,
        )
        harness = Harness(server, sandbox, client, sink, scheduler)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.close()
    for server in servers:
        await server.close()


async def test_every_task_ends_with_exactly_one_terminal_commit(make_harness: Any) -> None:
    h: Harness = await make_harness()
    sb = h.sandbox
    sb.script("ok", pending(), processing(), processing(), success(("https://x/1.png",)))
    sb.script("direct", success())
    sb.script("fails", pending(), failed("SensitiveContentDetected", "nope"))
    sb.script("bad", processing(), bad_result(), bad_result(), bad_result())
    sb.script("late-result", bad_result(), bad_result(), success())
    sb.script("gone", error(404, "Task not found"))
    sb.script("rejected", error(400, "invalid task id"))
    sb.script("flaky", error(500, "boom"), error(503, "busy"), pending(), success())
    sb.script("forever", processing())
    for task_id in ("ok", "direct", "fails", "bad", "late-result", "gone", "rejected", "flaky"):
        h.add(task_id)
    h.add("forever", deadline_s=0.3)
    # Unscripted ids use the sandbox's normal mode: done after 0.1 s, "fail" ids fail.
    h.add("sim_task_1")
    h.add("sim_fail_2")
    h.start()
    await h.all_finished()

    def final(task_id: str) -> Decision:
        [commit] = h.sink.terminal(task_id)
        return commit.decision

    assert final("ok").new_state is TaskState.SUCCEEDED
    ok_outcome = final("ok").outcome
    assert ok_outcome is not None
    assert ok_outcome.result_urls == ("https://x/1.png",)
    assert h.sink.events("ok") == [EventType.PROCESSING, EventType.SUCCEEDED]
    assert h.sink.events("direct") == [EventType.SUCCEEDED]
    fails = final("fails").outcome
    assert fails is not None
    assert (fails.fail_code, fails.fail_msg) == ("SensitiveContentDetected", "nope")
    bad = final("bad").outcome
    assert bad is not None
    assert bad.fail_code == BAD_RESULT_CODE
    assert h.sandbox.polls("bad") == 4
    assert final("late-result").new_state is TaskState.SUCCEEDED
    assert final("gone").new_state is TaskState.NOT_FOUND
    assert final("rejected").new_state is TaskState.FAILED
    assert final("flaky").new_state is TaskState.SUCCEEDED
    assert final("forever").new_state is TaskState.TIMED_OUT
    timed_out = final("forever").outcome
    assert timed_out is not None
    assert timed_out.last_state == "processing"
    assert final("sim_task_1").new_state is TaskState.SUCCEEDED
    assert final("sim_fail_2").new_state is TaskState.FAILED

    # Each finished on the answer it committed: no poll after the terminal one.
    for task_id in h.tasks:
        [commit] = h.sink.terminal(task_id)
        assert commit.requests_seen == h.sandbox.polls(task_id) == commit.polls, task_id
        assert h.scheduler.get(task_id) is None
    assert all(r.authorization == f"Bearer {KEY}" for r in h.sandbox.requests)


async def test_poll_counts_are_handed_out_once(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.script("a", error(500, "boom"), success())
    h.add("a")
    h.start()
    await h.all_finished()
    polls, errors = h.scheduler.poll_counts()
    assert polls == {"a": 2}
    assert errors == {"a": None}
    assert h.scheduler.poll_counts() == ({}, {})


async def test_last_errors_are_handed_out_when_they_change(make_harness: Any) -> None:
    """Every poll's count is handed out to be stored, a task's last error only when a poll
    changed it (an unchanged one is in the store already)."""
    h: Harness = await make_harness()
    h.sandbox.script("quiet", pending(), pending(), pending(), success())
    h.sandbox.script_default(error(503, "model temporarily unavailable"))
    h.add("quiet")
    h.add("failing")
    h.start()
    await wait_until(lambda: h.scheduler.get("quiet") is None)
    await wait_until(lambda: (w := h.scheduler.get("failing")) is not None and w.polls >= 2)
    polls, errors = h.scheduler.poll_counts()
    assert polls["quiet"] == 4
    assert polls["failing"] >= 2
    assert errors == {"failing": "HTTP 503: model temporarily unavailable"}
    seen = polls["failing"]  # more polls, with the same error
    await wait_until(lambda: (w := h.scheduler.get("failing")) is not None and w.polls >= seen + 2)
    polls, errors = h.scheduler.poll_counts()
    assert set(polls) == {"failing"}
    assert errors == {}


async def test_live_watch_shows_polls_and_last_error(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.script("a", error(503, "model temporarily unavailable"))
    h.add("a")
    h.start()
    await wait_until(lambda: (w := h.scheduler.get("a")) is not None and w.polls >= 2)
    watch = h.scheduler.get("a")
    assert watch is not None
    assert watch.last_error == "HTTP 503: model temporarily unavailable"
    assert watch.state is TaskState.PENDING


async def test_credentials_rejected_pauses_everything_until_resumed(make_harness: Any) -> None:
    h: Harness = await make_harness(probe_first_s=30.0)
    h.sandbox.api_key = "sk-someone-else"
    h.sandbox.script_default(pending(), success())
    for n in range(5):
        h.add(f"t{n}")
    with capture_logs() as logs:
        h.start()
        await wait_until(lambda: h.scheduler.stats.credentials_paused)
        await wait_until(lambda: h.scheduler.stats.in_flight == 0)
        stats = h.scheduler.stats
        assert stats.pause_reason is not None
        assert KEY not in stats.pause_reason
        assert stats.watched == 5  # every task is kept, untouched
        assert not h.sink.commits
        rejected_requests = len(h.sandbox.requests)

        # A reload with the right key resumes at once (the next probe is 30 s away).
        h.sandbox.api_key = KEY
        resumed = time.monotonic()
        h.scheduler.resume_credentials()
        await h.all_finished(timeout=3.0)
    assert not h.scheduler.stats.credentials_paused
    assert len(h.sink.terminal()) == 5
    # Nothing was asked while paused: the requests after the pause came after the resume.
    assert all(r.at >= resumed for r in h.sandbox.requests[rejected_requests:])
    rejected = [e for e in logs if e["event"] == "upstream_credentials_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["log_level"] == "error"
    assert all(KEY not in str(e) for e in logs)


async def test_paused_polling_probes_slowly_and_resumes_when_a_probe_passes(
    make_harness: Any,
) -> None:
    h: Harness = await make_harness(concurrency=1, probe_first_s=0.1, probe_max_s=0.2)
    h.sandbox.api_key = "sk-someone-else"
    h.sandbox.script_default(success())
    for n in range(4):
        h.add(f"t{n}")
    h.start()
    await wait_until(lambda: h.scheduler.stats.credentials_paused)
    paused_at = len(h.sandbox.requests)
    await wait_until(lambda: len(h.sandbox.requests) >= paused_at + 3)
    # Single probes, ever slower: 0.1 s, then 0.2 s (the cap), then 0.2 s.
    times = [r.at for r in h.sandbox.requests[paused_at - 1 : paused_at + 3]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.1 * 0.9
    assert gaps[1] >= 0.2 * 0.9
    assert gaps[2] >= 0.2 * 0.9
    assert h.scheduler.stats.credentials_paused
    h.sandbox.api_key = KEY  # e.g. the account was topped up
    await h.all_finished()
    assert not h.scheduler.stats.credentials_paused
    assert len(h.sink.terminal()) == 4


async def test_429_slows_the_whole_upstream(make_harness: Any) -> None:
    h: Harness = await make_harness(concurrency=1)
    h.sandbox.script("a", error(429, "slow down", retry_after="0.5"), success())
    h.sandbox.script_default(pending(), pending(), success())
    h.add("a")
    for n in range(4):
        h.add(f"t{n}")
    with capture_logs() as logs:
        h.start()
        await h.all_finished()
    limited = h.sandbox.status_requests("a")[0]
    later = [r for r in h.sandbox.requests if r.at > limited.at]
    assert later
    # No request for any task until the Retry-After has passed.
    assert min(r.at for r in later) >= limited.at + 0.5 - 0.05
    assert any(e["event"] == "upstream_rate_limited" for e in logs)


async def test_requests_per_second_is_respected(make_harness: Any) -> None:
    h: Harness = await make_harness(rate=20.0, policy=replace(POLICY, initial_interval_s=0.001))
    h.sandbox.script_default(pending())
    for n in range(30):
        h.add(f"t{n}")
    h.start()
    await wait_until(lambda: h.sandbox.polls() >= 45, timeout=10)
    times = [r.at for r in h.sandbox.requests]
    # A burst of 20, then 20 per second: 45 requests need at least 1.25 s.
    assert times[44] - times[0] >= (45 - 20) / 20 * 0.9
    # Any one second holds at most the burst plus a second's worth (and a little slack).
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= 20 + 20 + 2


async def test_max_concurrency_is_respected(make_harness: Any) -> None:
    h: Harness = await make_harness(concurrency=3)
    h.sandbox.delay_s = 0.05
    h.sandbox.script_default(pending(), success())
    for n in range(12):
        h.add(f"t{n}")
    h.start()
    await h.all_finished()
    assert h.sandbox.max_in_flight == 3


async def test_stop_lets_polls_in_flight_finish(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.delay_s = 0.2
    h.sandbox.script_default(success())
    for n in range(3):
        h.add(f"t{n}")
    h.start()
    await wait_until(lambda: h.sandbox.in_flight == 3)
    h.scheduler.stop()
    h.scheduler.stop()  # idempotent
    await h.scheduler.drain(5.0)
    assert h.run_task is not None
    await asyncio.wait_for(h.run_task, 5)
    assert len(h.sink.terminal()) == 3
    assert h.sandbox.polls() == 3


async def test_drain_cancels_polls_that_outlast_the_grace(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.delay_s = 1.0
    h.sandbox.script_default(success())
    for n in range(3):
        h.add(f"t{n}")
    h.start()
    await wait_until(lambda: h.sandbox.in_flight == 3)
    h.scheduler.stop()
    started = time.monotonic()
    await h.scheduler.drain(0.1)
    assert time.monotonic() - started < 0.8
    assert h.run_task is not None
    await asyncio.wait_for(h.run_task, 1)
    assert h.scheduler.stats.in_flight == 0
    assert not h.sink.commits
    assert h.scheduler.stats.watched == 3  # kept: still active in the store


async def test_a_failed_commit_is_retried_not_lost(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sink.failures = 1
    h.sandbox.script("a", success())
    h.add("a")
    with capture_logs() as logs:
        h.start()
        await h.all_finished()
    assert len(h.sink.terminal("a")) == 1
    assert h.sandbox.polls("a") == 2
    assert any(e["event"] == "transition_failed" and e.get("exc_info") for e in logs)


async def test_a_refused_commit_forgets_the_task(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sink.refuse.add("a")
    h.sandbox.script("a", processing())
    h.add("a")
    h.start()
    await wait_until(lambda: bool(h.sink.commits))
    await wait_until(lambda: h.scheduler.stats.in_flight == 0)
    assert h.scheduler.get("a") is None
    assert h.sandbox.polls("a") == 1


async def test_unwatch_stops_polling(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.script("a", pending())
    h.add("a")
    h.start()
    await wait_until(lambda: h.sandbox.polls("a") >= 2)
    assert h.scheduler.unwatch("a")
    assert not h.scheduler.unwatch("a")
    await wait_until(lambda: h.scheduler.stats.in_flight == 0)
    seen = h.sandbox.polls("a")
    h.add("b")  # the loop keeps going for other tasks
    h.sandbox.script("b", pending(), pending(), success())
    await wait_until(lambda: bool(h.sink.terminal("b")))
    assert h.sandbox.polls("a") == seen
    assert [c.task_id for c in h.sink.commits] == ["b"]


async def test_watch_is_idempotent(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.script("a", success())
    h.add("a")
    h.add("a")
    assert h.scheduler.stats.watched == 1
    h.start()
    await h.all_finished()
    assert h.sandbox.polls("a") == 1


async def test_unknown_state_is_logged_once(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.script("a", *[processing(state="queued")] * 3, success())
    h.add("a")
    with capture_logs() as logs:
        h.start()
        await h.all_finished()
    unknown = [e for e in logs if e["event"] == "upstream_unknown_state"]
    assert len(unknown) == 1
    assert unknown[0]["upstream_state"] == "queued"


async def test_reload_with_a_shorter_deadline_times_tasks_out(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.sandbox.script_default(processing())
    h.add("a")
    h.start()
    await wait_until(lambda: h.sandbox.polls("a") >= 1)
    upstream = h.client.config
    h.scheduler.update_config(PollingConfig(default=replace(POLICY, deadline_s=0.05)), upstream)
    await h.all_finished()
    [commit] = h.sink.terminal("a")
    assert commit.decision.new_state is TaskState.TIMED_OUT


async def test_the_loop_reports_progress_while_idle(make_harness: Any) -> None:
    h: Harness = await make_harness(tick_s=0.02)
    h.start()
    await wait_until(lambda: h.scheduler.stats.last_progress_at is not None)
    first = h.scheduler.stats.last_progress_at
    assert first is not None
    await wait_until(lambda: (h.scheduler.stats.last_progress_at or 0) > first + 0.03)


# -- without the network ----------------------------------------------------------------------
class NullSink:
    async def commit(self, watch: Watch, decision: Decision) -> bool:
        return True

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        pass


def offline_scheduler(client: Any, clock: Any) -> Scheduler:
    upstream = UpstreamConfig(
        base_url="http://127.0.0.1:9",
        api_key=Secret(KEY),
        timeout_s=1.0,
        max_concurrency=2,
        max_requests_per_second=10.0,
    )
    return Scheduler(
        client=client,
        polling=PollingConfig(default=POLICY),
        upstream=upstream,
        sink=NullSink(),
        clock=clock,
    )


def offline_task(task_id: str, at: float) -> Task:
    return Task(task_id, "m", None, None, {}, None, TaskSource.API, TaskState.PENDING, at, at)


class StoreFailingClient:
    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        raise StoreError("database disk image is malformed")


async def test_a_store_failure_inside_a_poll_ends_run_loudly() -> None:
    # The daemon's own machinery failing is not one task's problem: the daemon must stop.
    clock = ManualClock()
    scheduler = offline_scheduler(StoreFailingClient(), clock)
    scheduler.watch(offline_task("a", clock.now()))
    with pytest.raises(StoreError, match="malformed"):
        await asyncio.wait_for(scheduler.run(), 5)


class PoisonedClient:
    """Answers `pending` for every task, then `success`; handling an answer of a `poison`
    task raises, as a RecursionError out of a parser did (issue 9)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: dict[str, int] = {}

    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        self.calls[task_id] = self.calls.get(task_id, 0) + 1
        if task_id.startswith("poison"):
            raise self.error
        state = "pending" if self.calls[task_id] < 3 else "success"
        data = {"state": state, "resultJson": '{"resultUrls": []}'}
        return PollResult(PollOutcome.OK, 200, 200, data, None, "HTTP 200")


class RecordingObserver:
    def __init__(self) -> None:
        self.contained: list[tuple[str, str]] = []

    def upstream_request(self, model: str, outcome: str, duration_s: float) -> None:
        pass

    def rate_limited(self) -> None:
        pass

    def credentials_paused(self, paused: bool) -> None:
        pass

    def contained_error(self, loop: str, error_type: str) -> None:
        self.contained.append((loop, error_type))


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth"), KeyError("x")])
async def test_an_unexpected_error_in_one_poll_is_that_tasks_error(error: Exception) -> None:
    clock = ManualClock()
    client = PoisonedClient(error)
    observer = RecordingObserver()
    sink = RecordingSink(SandboxState())
    scheduler = Scheduler(
        client=client,
        polling=PollingConfig(default=POLICY),
        upstream=UpstreamConfig("http://127.0.0.1:9", Secret(KEY), 1.0, 2, 1000.0),
        sink=sink,
        clock=clock,
        rand=lambda: 0.5,  # no jitter: the backoff is exact
        observer=observer,
    )
    for task_id in ("poison", "good_1", "good_2"):
        scheduler.watch(offline_task(task_id, clock.now()))
    with capture_logs() as logs:
        run = asyncio.create_task(scheduler.run())
        try:
            await wait_until(lambda: client.calls.get("poison") == 1)
            await wait_until(
                lambda: (w := scheduler.get("poison")) is not None and bool(w.next_poll_at)
            )
            watch = scheduler.get("poison")
            assert watch is not None
            assert watch.next_poll_at is not None
            # Backed off like a transient failure: the interval, then a longer one.
            assert watch.next_poll_at == pytest.approx(
                clock.monotonic() + POLICY.initial_interval_s
            )
            assert watch.last_error == (
                f"internal error while handling the answer: {type(error).__name__}"
            )
            # The loop goes on: the other tasks finish, the poisoned one is asked again.
            for _ in range(200):
                if len(sink.terminal()) == 2 and client.calls["poison"] >= 3:
                    break
                clock.advance(POLICY.max_interval_s)
                await asyncio.sleep(0.005)
            assert len(sink.terminal()) == 2
            assert client.calls["poison"] >= 3
            assert not run.done()
            assert scheduler.get("poison") is not None  # still watched, never lost
        finally:
            scheduler.stop()
            await asyncio.wait_for(run, 5)
    assert {c.task_id for c in sink.terminal()} == {"good_1", "good_2"}
    errors = [e for e in logs if e["event"] == "poll_error"]
    assert errors
    assert errors[0]["error_type"] == type(error).__name__
    assert errors[0]["task_id"] == "poison"
    assert errors[0].get("exc_info")
    assert observer.contained
    assert set(observer.contained) == {("scheduler", type(error).__name__)}


class CountingClient:
    def __init__(self) -> None:
        self.calls = 0

    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        self.calls += 1
        return PollResult(PollOutcome.OK, 200, 200, {"state": "pending"}, None, "HTTP 200")


async def test_schedule_runs_on_the_injected_clock() -> None:
    clock = ManualClock()
    client = CountingClient()
    scheduler = offline_scheduler(client, clock)
    scheduler.watch(offline_task("a", clock.now()))
    run = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: client.calls == 1)
        clock.advance(0.01)  # before the next poll (0.02 s +-10 %) is due
        for _ in range(20):
            await asyncio.sleep(0)
        assert client.calls == 1
        clock.advance(0.09)  # due, and the budget (10/s: 0.1 s apart) has a slot
        await wait_until(lambda: client.calls == 2)
    finally:
        scheduler.stop()
        await asyncio.wait_for(run, 5)
