"""The polling loop: one loop, one heap of due times, for every watched task.

The loop pops the earliest due task, checks its deadline, takes a slot of the request budget
(`max_concurrency` in flight, `max_requests_per_second` on average) and starts its poll as a
task; each poll applies `polling.decide` and, when something happened, hands the decision to the
`TransitionSink` (which persists it) before the task is rescheduled or forgotten. No coroutine
sleeps per task, so 100k watched tasks cost a heap entry and a `Watch` each, and polls due
within a few milliseconds of each other start in one wake-up of the loop (COALESCE_S).

Effects on the whole upstream: a 429 pauses the request budget until its Retry-After and
halves its effective rate, which recovers additively (watcher.polling.ratelimit); a
401/402/403 pauses all polling (every task is kept), then single probe polls ask again slowly
until an answer shows the key works again or `resume_credentials()` is called after a reload.
Deadlines are not enforced while polling is paused for credentials: a task must not time out
because of our own key. When the pause ends every deadline moves by the time it lasted, and the
sink persists that (when it ends, every minute while it lasts, and at shutdown), so a restart
keeps the extension.

Adaptive polling: every finished task's duration goes to the `Learner` (and, through
`learned_durations()`, to the store); each poll of a model with the adaptive strategy and
enough samples is placed by its learned plan (watcher.polling.adaptive), the rest by the fixed
rules. When the request budget is the bottleneck, due polls wait in a second heap ordered by
their chance of finding the task finished since its last poll (from the model's learned
distribution; without one, a scale-free guess), instead of first-due-first-served.

Time: the heap, the deadlines, the request budget and the credential probes all run on the
clock's monotonic time, so a step of the wall clock changes no schedule. Wall times (a task's
registration, the times shown in `show`) are converted at the edges through the `Timeline`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from watcher.clock import Clock, Timeline
from watcher.config.settings import PollingConfig, PollingPolicy, UpstreamConfig
from watcher.errors import StoreError, StoreUnavailable
from watcher.logs import enabled_for
from watcher.models import EventType, Task
from watcher.polling.adaptive import AdaptivePlan
from watcher.polling.decide import (
    Decision,
    Watch,
    apply,
    deadline_decision,
    deadline_for,
    decide,
    watch_for,
    watches_for_new,
)
from watcher.polling.learning import Learner, ModelStats, duration_of
from watcher.polling.ratelimit import RequestBudget
from watcher.store.base import DurationSample
from watcher.upstream.classify import PollOutcome, PollResult

log = structlog.get_logger(__name__)

CREDENTIALS_FIRST_PROBE_S = 30.0
CREDENTIALS_MAX_PROBE_S = 300.0
# While polling is paused for credentials, the time paused so far is persisted this often: a
# kill -9 during a long pause loses at most this much of the tasks' deadline extension.
PAUSE_SAVE_INTERVAL_S = 60.0
# The loop wakes at least this often, so `last_progress_at` proves it is alive.
TICK_S = 1.0
# At most this many polls are started (or tasks timed out) before the loop yields.
STARTS_PER_TURN = 32
# When the next poll is due sooner than this, the loop sleeps this long instead and then starts
# every poll that came due meanwhile in one wake-up. At 2,000 polls a second the polls are
# 0.5 ms apart, and waking the process for each one cost more CPU than the polls' own
# bookkeeping. The price: a poll starts at most this much after its due time, and only when the
# loop was awake less than this before it (polls further apart each start on time). The
# request budget's waits are not stretched: at a high rate its spacing is finer.
COALESCE_S = 0.005
# Durations that could not be saved (the store unreachable) are kept for the next flush, up to
# this many (the newest).
KEEP_UNSAVED_DURATIONS = 10_000
# A hint never brings a task's poll closer than this to its previous one: a flood of hints
# for one task costs at most one request per this many seconds.
HINT_MIN_GAP_S = 1.0
# While the budget holds due polls back, at most this many are moved into the priority heap
# per turn of the loop (computing a chance costs a few microseconds each).
PROMOTE_PER_STEP = 512
# Transient upstream problems are summarised in one warning per this many seconds.
PROBLEM_LOG_INTERVAL_S = 60.0
# Answers that prove the API key works (anything but a credential error, a 429 or a failure
# to get an answer at all).
_KEY_ACCEPTED = (
    PollOutcome.OK,
    PollOutcome.NOT_FOUND,
    PollOutcome.BAD_REQUEST,
    PollOutcome.TOO_LARGE,
)


class StatusClient(Protocol):
    """What the scheduler needs of the upstream client."""

    async def fetch_status(self, model: str, task_id: str) -> PollResult: ...


class TransitionSink(Protocol):
    """Persists what a decision says happened to a task."""

    async def commit(self, watch: Watch, decision: Decision) -> bool:
        """Persist the decision's state change and outcome. `watch` is as before the decision
        (its state is the from-state; `polls` includes this poll). False when the task was
        cancelled or finished meanwhile: the scheduler then forgets it."""
        ...

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        """Persist that polling was paused for credentials from `since` to `until` (Unix
        seconds): every active task's deadline moves by the part of that after its
        registration (Store.extend_deadlines)."""
        ...


class PollObserver(Protocol):
    """Optional metrics hooks (watcher.api.metrics.Metrics has these)."""

    def upstream_request(self, model: str, outcome: str, duration_s: float) -> None: ...

    def rate_limited(self) -> None: ...

    def credentials_paused(self, paused: bool) -> None: ...

    def contained_error(self, loop: str, error_type: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot for health checks, status lines and metrics."""

    watched: int
    in_flight: int
    credentials_paused: bool
    pause_reason: str | None
    rate_limited_until: float | None  # Unix seconds
    last_progress_at: float | None  # monotonic seconds (the clock's), for the watchdog
    request_rate: float = 0.0  # the effective budget (requests/s): lower after a 429


class Scheduler:
    """Polls every watched task until it reaches a terminal state, within a global budget."""

    def __init__(
        self,
        *,
        client: StatusClient,
        polling: PollingConfig,
        upstream: UpstreamConfig,
        sink: TransitionSink,
        clock: Clock,
        timeline: Timeline | None = None,
        rand: Callable[[], float] = random.random,
        observer: PollObserver | None = None,
        probe_first_s: float = CREDENTIALS_FIRST_PROBE_S,
        probe_max_s: float = CREDENTIALS_MAX_PROBE_S,
        tick_s: float = TICK_S,
        coalesce_s: float = COALESCE_S,
    ) -> None:
        self._client = client
        self._polling = polling
        self._upstream = upstream
        self._sink = sink
        self._clock = clock
        self._timeline = timeline if timeline is not None else Timeline(clock)
        self._rand = rand
        self._observer = observer
        self._probe_first_s = probe_first_s
        self._probe_max_s = probe_max_s
        self._tick_s = tick_s
        self._coalesce_s = coalesce_s

        self._watches: dict[str, Watch] = {}
        self._heap: list[tuple[float, int, str]] = []
        # Due polls held back by the budget, best chance of finding the task finished first:
        # (-chance, due time, heap_seq, task_id).
        self._ready: list[tuple[float, float, int, str]] = []
        self._learner = Learner()
        self._new_durations: list[DurationSample] = []
        self._heap_seq = itertools.count(1)
        # This instance's part of the upstream budget when several instances share it
        # (watcher/cluster/): 1.0 alone; 0.0 holds every poll back.
        self._share = 1.0
        # When this instance stops trusting its lease (monotonic; several instances): no poll
        # starts from then on until a renewal moves it. The cluster member also holds polls
        # back (set_share(0)) once it notices, but a process frozen past this moment (SIGSTOP,
        # a VM pause) wakes with all its timers overdue, and this loop's may fire first.
        self._fence_at = math.inf
        self._budget = RequestBudget(upstream.max_requests_per_second, clock)
        self._budget_lowered = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        # Set while the loop waits for a poll in flight to finish (a concurrency slot, the
        # credential probe): only then does a finished poll wake it.
        self._waiting_for_poll = False
        self._failure: BaseException | None = None
        self._dirty_polls: dict[str, int] = {}
        self._dirty_errors: dict[str, str | None] = {}
        self._last_progress_at: float | None = None

        # Polls are numbered as they start, to tell answers to requests made before a pause
        # (or before a resume) from those made after it.
        self._poll_seq = 0
        self._paused = False
        self._pause_reason: str | None = None
        self._paused_since = 0.0
        self._pause_saved_at = 0.0  # the pause is persisted (or being persisted) up to here
        self._pause_saves: set[asyncio.Task[None]] = set()
        self._paused_at_seq = 0
        self._resumed_at_seq = 0
        self._probe_at = 0.0
        self._probe_delay_s = probe_first_s
        self._probe_in_flight = False

        self._problems = 0
        self._problems_logged_at: float | None = None

    # -- registration ---------------------------------------------------------------------------
    def watch(self, task: Task) -> None:
        """Start watching an active task; a task already watched (or terminal) is left alone."""
        if task.state.terminal or task.task_id in self._watches:
            return
        policy = self._polling.for_model(task.model)
        now = self._clock.monotonic()
        # Never after now: a registration stored before the wall clock was stepped back must
        # not delay the first poll.
        registered_at = min(self._timeline.to_mono(task.registered_at), now)
        plan = self._learner.plan(task.model, policy)
        watch = watch_for(task, policy, now, registered_at=registered_at, plan=plan)
        self._watches[task.task_id] = watch
        self._push(watch)

    def watch_many(self, tasks: Sequence[Task]) -> None:
        """`watch` for a batch (the tasks an instance claims): the policy, plan and clock are
        read once per batch, and a batch as large as the heap is heapified rather than pushed
        one by one."""
        now = self._clock.monotonic()
        plans: dict[str, tuple[PollingPolicy, AdaptivePlan | None]] = {}
        to_mono = self._timeline.to_mono
        added: list[Watch] = []
        for task in tasks:
            if task.state.terminal or task.task_id in self._watches:
                continue
            planned = plans.get(task.model)
            if planned is None:
                planned = plans[task.model] = self._plan_for(task.model)
            registered_at = min(to_mono(task.registered_at), now)
            added.append(
                watch_for(task, planned[0], now, registered_at=registered_at, plan=planned[1])
            )
        self._add_watches(added)

    def watch_new(
        self,
        task_ids: Sequence[str],
        models: Sequence[str],
        deadlines_s: Sequence[float | None],
        *,
        registered_at: float,
    ) -> None:
        """`watch` for tasks just registered (pending, never polled, registered at
        `registered_at`, Unix seconds), given as columns: a tasks file registers thousands at
        once. As `watch_many`, without a `Task` per task."""
        now = self._clock.monotonic()
        self._add_watches(
            watches_for_new(
                task_ids,
                models,
                deadlines_s,
                self._plan_for,
                now,
                # Never after now: see `watch`.
                registered_at=min(self._timeline.to_mono(registered_at), now),
            )
        )

    def _plan_for(self, model: str) -> tuple[PollingPolicy, AdaptivePlan | None]:
        policy = self._polling.for_model(model)
        return policy, self._learner.plan(model, policy)

    def _add_watches(self, new: Iterable[Watch]) -> None:
        """Watch each of `new` whose task is not watched yet: `_push` for each, with the heap
        heapified instead when the batch is at least as large, and one wake-up at the end."""
        watches, heap, seqs = self._watches, self._heap, self._heap_seq
        first = heap[0] if heap else None
        entries: list[tuple[float, int, str]] = []
        for watch in new:
            if watch.task_id in watches:
                continue
            watches[watch.task_id] = watch
            watch.heap_seq = seq = next(seqs)
            assert watch.next_poll_at is not None
            entries.append((watch.next_poll_at, seq, watch.task_id))
        if len(entries) < len(heap):
            for entry in entries:
                heapq.heappush(heap, entry)
        else:
            heap.extend(entries)
            heapq.heapify(heap)
        if heap and heap[0] is not first:
            self._wakeup.set()  # the loop may be sleeping towards a later time

    def poll_soon(self, task_id: str) -> bool:
        """A hint (e.g. the upstream's callback) says the task may be done: poll it now, within
        the budget and first in line, but not within HINT_MIN_GAP_S of its last poll. The hint
        itself decides nothing: the poll does. False when the task is not watched."""
        watch = self._watches.get(task_id)
        if watch is None:
            return False
        watch.hinted = True
        if watch.next_poll_at is None:
            return True  # a poll is in flight: its answer decides
        now = self._clock.monotonic()
        at = now
        if watch.last_polled_at is not None:
            at = max(at, watch.last_polled_at + HINT_MIN_GAP_S)
        if at < watch.next_poll_at:
            watch.next_poll_at = at
            self._push(watch)
        return True

    def unwatch(self, task_id: str) -> bool:
        """Stop watching a task (cancelled); an answer already in flight for it is dropped."""
        self._dirty_polls.pop(task_id, None)
        self._dirty_errors.pop(task_id, None)
        return self._watches.pop(task_id, None) is not None

    def task_ids(self) -> set[str]:
        """The ids of the tasks watched here."""
        return set(self._watches)

    def unwatch_all(self) -> int:
        """Stop watching every task (this instance's claims were taken over); answers in flight
        are dropped. How many were watched."""
        count = len(self._watches)
        self._watches.clear()
        self._heap.clear()
        self._ready.clear()
        self._dirty_polls.clear()
        self._dirty_errors.clear()
        return count

    def release(self, count: int) -> dict[str, int]:
        """Stop watching up to `count` tasks that have no poll in flight, the ones due last
        first, so another instance can take them: task id -> its poll count."""
        idle = [w for w in self._watches.values() if w.next_poll_at is not None]
        idle.sort(key=lambda w: w.next_poll_at or 0.0, reverse=True)
        released: dict[str, int] = {}
        for watch in idle[: max(0, count)]:
            released[watch.task_id] = watch.polls
            self.unwatch(watch.task_id)
        return released

    def set_share(self, share: float) -> None:
        """Use `share` (0..1) of the configured budget: `max_requests_per_second` and
        `max_concurrency` are totals over the instances sharing the upstream (at least one
        poll at a time while the share is above zero); 0 holds every poll back."""
        share = min(1.0, max(0.0, share))
        if share == self._share:
            return
        self._share = share
        self._budget.update(self._share_of_rate(self._upstream.max_requests_per_second))
        self._wakeup.set()

    @property
    def share(self) -> float:
        return self._share

    def set_fence(self, at: float) -> None:
        """Start no poll at or after `at` (monotonic) until it is moved: the moment this
        instance stops trusting its lease (watcher/cluster/plan.py). Checked as each poll
        starts and again as it first runs, just before its request, so a process frozen past
        it polls nothing when it wakes."""
        self._fence_at = at
        self._wakeup.set()

    def _share_of_rate(self, rate: float) -> float:
        if rate <= 0 or self._share >= 1.0:
            return rate  # no limit stays no limit
        return rate * self._share if self._share > 0 else 0.0

    def _concurrency(self) -> int:
        if self._share <= 0:
            return 0
        return max(1, int(self._upstream.max_concurrency * self._share + 1e-9))

    def get(self, task_id: str) -> Watch | None:
        """The live record of a watched task (poll count, next poll time, last error); its
        times are monotonic (`wall_time` converts them)."""
        return self._watches.get(task_id)

    def wall_time(self, mono: float) -> float:
        """A time of a Watch as Unix seconds, for people."""
        return self._timeline.to_wall(mono)

    # -- learning -------------------------------------------------------------------------------
    def load_durations(self, durations: Mapping[str, Sequence[float]]) -> None:
        """Start from stored durations (Store.recent_durations), oldest first per model."""
        self._learner.load(durations, self._polling)

    def learned_durations(self) -> list[DurationSample]:
        """Durations learned since the last call, for `Store.record_durations`."""
        new, self._new_durations = self._new_durations, []
        return new

    def keep_durations(self, samples: list[DurationSample]) -> None:
        """Give back durations `learned_durations` returned that could not be saved (the
        newest KEEP_UNSAVED_DURATIONS are kept, however long the store is unreachable)."""
        self._new_durations[:0] = samples
        del self._new_durations[: max(0, len(self._new_durations) - KEEP_UNSAVED_DURATIONS)]

    def model_stats(self) -> list[ModelStats]:
        """Per model: what was learned and the strategy in use (GET /v1/stats/models)."""
        return self._learner.stats(self._polling)

    def expected_completion(self, task_id: str) -> tuple[float, float] | None:
        """When a watched task is likely to finish, as Unix seconds: the 10th and 90th
        percentile of its model's learned durations among tasks that lived as long as it has
        so far. None when the task is not watched or nothing is known about its model."""
        watch = self._watches.get(task_id)
        dist = self._learner.distribution(watch.model) if watch is not None else None
        if watch is None or dist is None:
            return None
        age = max(0.0, self._clock.monotonic() - watch.origin)
        window = dist.remaining_window(age, 0.1, 0.9)
        if window is None:
            return None
        start, end = window
        return self.wall_time(watch.origin + start), self.wall_time(watch.origin + end)

    def poll_counts(self) -> tuple[dict[str, int], dict[str, str | None]]:
        """Poll counts and last errors changed since the last call, for `Store.record_polls`."""
        polls, errors = self._dirty_polls, self._dirty_errors
        self._dirty_polls, self._dirty_errors = {}, {}
        return polls, errors

    def keep_poll_counts(self, polls: dict[str, int], errors: dict[str, str | None]) -> None:
        """Give back counts `poll_counts` returned that could not be saved; newer ones win."""
        for task_id, count in polls.items():
            self._dirty_polls.setdefault(task_id, count)
        for task_id, error in errors.items():
            self._dirty_errors.setdefault(task_id, error)

    def update_config(self, polling: PollingConfig, upstream: UpstreamConfig) -> None:
        """Apply a reloaded config: policies apply from each task's next answer on, deadlines of
        tasks without their own deadline move with their model's, the budget changes at once.

        The client's own config (key, URL, timeout) is updated by its owner.
        """
        old_polling, self._polling = self._polling, polling
        self._upstream = upstream
        self._learner.reconfigure(polling)
        self._budget.update(self._share_of_rate(upstream.max_requests_per_second))
        for watch in self._watches.values():
            # Move the deadline by the change of policy only, keeping any time added for a
            # credential pause.
            reg, own = watch.registered_at, watch.deadline_override_s
            delta = deadline_for(reg, own, polling.for_model(watch.model)) - deadline_for(
                reg, own, old_polling.for_model(watch.model)
            )
            if delta == 0:
                continue
            watch.deadline_at += delta
            if watch.next_poll_at is not None and watch.next_poll_at > watch.deadline_at:
                watch.next_poll_at = watch.deadline_at
                self._push(watch)
        self._wakeup.set()

    def resume_credentials(self) -> None:
        """Retry at once after the key was replaced (a reload); no-op unless paused."""
        if self._paused:
            self._resume("api key reloaded")

    # -- state ----------------------------------------------------------------------------------
    @property
    def stats(self) -> SchedulerStats:
        now = self._clock.monotonic()
        limited = self._budget.paused_until
        return SchedulerStats(
            watched=len(self._watches),
            in_flight=len(self._in_flight),
            credentials_paused=self._paused,
            pause_reason=self._pause_reason,
            rate_limited_until=self._timeline.to_wall(limited) if limited > now else None,
            last_progress_at=self._last_progress_at,
            request_rate=self._budget.effective_rate(now),
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Start no new polls; `run()` returns once the polls in flight have finished."""
        self._stop.set()
        self._wakeup.set()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (clock-based)
        """Wait up to `timeout` seconds for the polls in flight, then cancel the rest (their
        tasks stay active in the store and are polled again after a restart). A credential
        pause still going on is persisted up to now."""
        pending = set(self._in_flight)
        if pending:
            await self._race(asyncio.wait(pending), timeout)
        left = [t for t in self._in_flight if not t.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
            log.warning("polls_cancelled_at_shutdown", count=len(left))
        if self._paused:
            self._save_pause(self._clock.monotonic())
        if self._pause_saves:
            await asyncio.gather(*self._pause_saves, return_exceptions=True)

    async def run(self) -> None:
        """The loop. Returns after `stop()` once the polls in flight are done. An error of the
        loop itself, or the store failing inside a poll, propagates, so the daemon dies loudly;
        any other error inside one poll is that task's (see `_poll`)."""
        try:
            started = 0
            while not self._stop.is_set():
                self._raise_failure()
                now = self._clock.monotonic()
                self._last_progress_at = now
                if self._paused and now - self._pause_saved_at >= PAUSE_SAVE_INTERVAL_S:
                    self._save_pause(now)
                if self._budget_lowered:
                    self._check_recovered(now)
                delay = await self._step(now)
                if delay > 0:
                    started = 0
                    await self._wait(min(delay, self._tick_s))
                else:
                    started += 1
                    # Many due tasks must not starve the event loop, but a full turn of the
                    # loop per started poll costs more CPU than the poll's own bookkeeping.
                    if started >= STARTS_PER_TURN:
                        started = 0
                        await asyncio.sleep(0)
            while self._in_flight:
                await asyncio.wait(set(self._in_flight))
            self._raise_failure()
        except BaseException:
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            raise

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # -- the loop -------------------------------------------------------------------------------
    async def _step(self, now: float) -> float:
        """Start at most one poll (or time out one task); 0.0 if it did, else how long to wait."""
        if self._share <= 0 or now >= self._fence_at:
            return self._tick_s  # held back: set_share or set_fence wakes the loop
        if len(self._in_flight) >= self._concurrency():
            self._waiting_for_poll = True  # a finishing poll wakes the loop
            return self._tick_s
        if self._paused:
            if self._probe_in_flight:
                self._waiting_for_poll = True
                return self._tick_s
            if now < self._probe_at:
                return self._probe_at - now
        watch, ready = self._peek_ready(), True
        if watch is None:
            watch, ready = self._peek(), False
            if watch is None or watch.next_poll_at is None:
                return self._tick_s
            if watch.next_poll_at > now:
                # Not yet due: sleep until it is, but at least the coalescing window.
                return max(watch.next_poll_at - now, self._coalesce_s)
        if not self._paused:
            timed_out = deadline_decision(watch, now)
            if timed_out is not None:
                self._take(watch, ready=ready)
                await self._settle(watch, timed_out, now)
                return 0.0
        if not self._budget.try_acquire():
            self._promote(now)
            return max(self._budget.wait_time(), 0.001)
        self._take(watch, ready=ready)
        probe = self._paused
        if probe:
            self._probe_in_flight = True
        self._poll_seq += 1
        task = asyncio.create_task(
            self._poll(watch, probe=probe, seq=self._poll_seq, started=now),
            name=f"poll:{watch.task_id}",
        )
        self._in_flight.add(task)
        task.add_done_callback(self._poll_done)
        return 0.0

    def _poll_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._wakeup.set()  # the loop raises it
        elif self._waiting_for_poll:
            self._waiting_for_poll = False
            self._wakeup.set()
        # Otherwise the loop sleeps towards a due time that this poll does not move: a poll
        # rescheduled before it wakes the loop through `_push`.

    async def _wait(self, seconds: float) -> None:
        """Sleep on the clock until `seconds` pass or something wakes the loop."""
        if self._wakeup.is_set():
            self._wakeup.clear()
            return
        await self._clock.wait_event(self._wakeup, seconds)
        self._wakeup.clear()

    async def _race(self, awaitable: Awaitable[object], seconds: float) -> None:
        """Wait for `awaitable` or `seconds` on the clock, whichever comes first."""
        waiter = asyncio.ensure_future(awaitable)
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()

    def _push(self, watch: Watch) -> None:
        assert watch.next_poll_at is not None
        seq = next(self._heap_seq)
        watch.heap_seq = seq
        heapq.heappush(self._heap, (watch.next_poll_at, seq, watch.task_id))
        if self._heap[0][1] == seq:
            self._wakeup.set()  # the loop may be sleeping towards a later time

    def _peek(self) -> Watch | None:
        """The watch due first; stale heap entries (unwatched, rescheduled) are dropped."""
        heap = self._heap
        while heap:
            _, seq, task_id = heap[0]
            watch = self._watches.get(task_id)
            if watch is not None and watch.heap_seq == seq and watch.next_poll_at is not None:
                return watch
            heapq.heappop(heap)
        return None

    def _peek_ready(self) -> Watch | None:
        """The held-back due watch with the best chance; stale entries are dropped."""
        ready = self._ready
        while ready:
            _, _, seq, task_id = ready[0]
            watch = self._watches.get(task_id)
            if watch is not None and watch.heap_seq == seq and watch.next_poll_at is not None:
                return watch
            heapq.heappop(ready)
        return None

    def _take(self, watch: Watch, *, ready: bool = False) -> None:
        """Remove `watch` (the top of the ready heap, or else of the time heap) to poll it."""
        if ready:
            heapq.heappop(self._ready)
        else:
            heapq.heappop(self._heap)
        watch.next_poll_at = None  # in flight
        watch.heap_seq = 0

    def _promote(self, now: float) -> None:
        """The budget holds polls back: move the due ones into the ready heap, ordered by
        their chance of finding the task finished."""
        heap = self._heap
        for _ in range(PROMOTE_PER_STEP):
            watch = self._peek()
            if watch is None or watch.next_poll_at is None or watch.next_poll_at > now:
                return
            heapq.heappop(heap)
            chance = self._finish_chance(watch, now)
            heapq.heappush(
                self._ready, (-chance, watch.next_poll_at, watch.heap_seq, watch.task_id)
            )

    def _finish_chance(self, watch: Watch, now: float) -> float:
        """P(the task finished since its last poll | it had not then), from its model's learned
        distribution. Without one (or past it): a scale-free guess, 1 - (age then / age now),
        which ranks a poll higher the larger the share of the task's life it has not seen."""
        if watch.hinted:
            return 1.0
        origin = watch.origin
        last = watch.last_polled_at if watch.last_polled_at is not None else watch.registered_at
        since, until = max(0.0, last - origin), max(0.0, now - origin)
        dist = self._learner.distribution(watch.model)
        if dist is not None and since <= dist.max_s:
            return dist.finish_probability(since, until)
        if until <= 0.0:
            return 0.0
        return 1.0 - since / until if since > 0 else 0.5

    # -- one poll -------------------------------------------------------------------------------
    async def _poll(self, watch: Watch, *, probe: bool, seq: int, started: float) -> None:
        """One poll inside a boundary: whatever one task's answer makes go wrong (a parser's
        RecursionError, a bug it triggers) stays that task's error, and polling goes on for
        every other task. Only the store failing is the daemon's own failure."""
        try:
            await self._poll_once(watch, probe=probe, seq=seq, started=started)
        except StoreError:
            raise
        except Exception as exc:
            self._poll_crashed(watch, exc, probe=probe)

    def _poll_crashed(self, watch: Watch, exc: Exception, *, probe: bool) -> None:
        """Record an unexpected error of one poll as the task's error and back it off like a
        transient upstream failure (until its deadline, like any)."""
        error_type = type(exc).__name__
        log.error(
            "poll_error",
            task_id=watch.task_id,
            model=watch.model,
            error_type=error_type,
            exc_info=exc,
        )
        if self._observer is not None:
            self._observer.contained_error("scheduler", error_type)
        now = self._clock.monotonic()
        if probe and self._paused:
            self._probe_at = now + self._probe_delay_s
        if self._watches.get(watch.task_id) is not watch or watch.next_poll_at is not None:
            return  # cancelled meanwhile, or already rescheduled when it failed
        failure = PollResult(
            PollOutcome.TRANSIENT,
            None,
            None,
            None,
            None,
            f"internal error while handling the answer: {error_type}",
        )
        decision = decide(watch, failure, self._polling.for_model(watch.model), now, self._rand())
        apply(watch, decision)
        self._push(watch)
        self._dirty_polls[watch.task_id] = watch.polls
        self._dirty_errors[watch.task_id] = watch.last_error

    async def _poll_once(self, watch: Watch, *, probe: bool, seq: int, started: float) -> None:
        fence = self._fence_at
        if fence != math.inf and fence <= self._clock.monotonic():
            # Started, then the process froze past the fence (SIGSTOP, a VM pause) before this
            # poll first ran: the task may be another instance's by now. Due again, unpolled.
            if probe:
                self._probe_in_flight = False
            self._due_again(watch)
            return
        try:
            result = await self._client.fetch_status(watch.model, watch.task_id)
        except asyncio.CancelledError:
            # Cancelled by drain(): keep the task due, in case the loop is not stopping.
            self._due_again(watch)
            raise
        finally:
            if probe:
                self._probe_in_flight = False
        now = self._clock.monotonic()
        if self._observer is not None:
            self._observer.upstream_request(watch.model, _metric_outcome(result), result.duration_s)
        if self._watches.get(watch.task_id) is not watch:
            return  # cancelled while the request was in flight
        error = watch.last_error
        watch.polls += 1
        watch.last_polled_at = now
        watch.hinted = False
        data = result.data if result.outcome is PollOutcome.OK else None
        if data and watch.created_at is None:
            self._note_created(watch, data)
        policy = self._polling.for_model(watch.model)
        plan = self._learner.plan(watch.model, policy)
        decision = decide(watch, result, policy, now, self._rand(), plan)
        if enabled_for(logging.DEBUG):  # one line per poll: not even built unless wanted
            self._log_poll(watch, result, decision, now)
        # (The conditions under which `_upstream_effects` does anything: most answers have
        # none, and the call was a measurable part of a poll.)
        if (
            decision.credentials_bad
            or self._paused
            or decision.rate_limited_until is not None
            or result.outcome is PollOutcome.TRANSIENT
        ):
            self._upstream_effects(
                watch, result, decision, probe=probe, seq=seq, started=started, now=now
            )
        if decision.unknown_state and not watch.unknown_state_logged:
            watch.unknown_state_logged = True
            log.warning(
                "upstream_unknown_state",
                task_id=watch.task_id,
                model=watch.model,
                upstream_state=decision.upstream_state,
            )
        if decision.outcome is None and decision.new_state is None:
            self._reschedule(watch, decision)  # what `_settle` does with nothing to persist
        else:
            await self._settle(watch, decision, now)
        if decision.terminal and data and self._watches.get(watch.task_id) is not watch:
            self._learn(watch, decision, data, now)
        self._dirty_polls[watch.task_id] = watch.polls
        # The stored error is the watch's as of its last change (loaded with it, or written
        # by an earlier flush): an unchanged one is not written again.
        if watch.last_error != error:
            self._dirty_errors[watch.task_id] = watch.last_error

    def _due_again(self, watch: Watch) -> None:
        """A poll that did not happen: its task, still watched and not rescheduled, is due now."""
        if self._watches.get(watch.task_id) is watch and watch.next_poll_at is None:
            watch.next_poll_at = self._clock.monotonic()
            self._push(watch)

    def _note_created(self, watch: Watch, data: Mapping[str, Any]) -> None:
        """The upstream's createTime (Unix ms) on the monotonic clock: ages count from it. Not
        after the registration (a task is created before anyone can register it; a later
        createTime means the clocks disagree, and the registration is the better origin)."""
        created_ms = data.get("createTime")
        if isinstance(created_ms, int | float) and not isinstance(created_ms, bool):
            created = self._timeline.to_mono(created_ms / 1000.0)
            if math.isfinite(created):
                watch.created_at = min(created, watch.registered_at)

    def _learn(self, watch: Watch, decision: Decision, data: Mapping[str, Any], now: float) -> None:
        """A task finished (and its outcome is committed): learn how long it took and how late
        it was seen."""
        outcome = decision.outcome
        if outcome is None or outcome.type not in (EventType.SUCCEEDED, EventType.FAILED):
            return
        policy = self._polling.for_model(watch.model)
        wall = self._timeline.to_wall(now)
        duration = duration_of(data)
        if duration is not None:
            self._learner.add(watch.model, duration, window=policy.adaptive.window)
            self._new_durations.append((watch.model, duration, wall))
        completed_ms = data.get("completeTime")
        if isinstance(completed_ms, int | float) and not isinstance(completed_ms, bool):
            self._learner.detection_delay(watch.model, wall - completed_ms / 1000.0)

    @staticmethod
    def _log_poll(watch: Watch, result: PollResult, decision: Decision, now: float) -> None:
        log.debug(
            "task_polled",
            task_id=watch.task_id,
            model=watch.model,
            outcome=result.outcome.value,
            http_status=result.http_status,
            upstream_state=decision.upstream_state,
            duration_ms=round(result.duration_s * 1000, 1),
            detail=result.detail if result.outcome is not PollOutcome.OK else None,
            next_poll_in_s=(
                round(decision.next_poll_at - now, 3) if decision.next_poll_at is not None else None
            ),
        )

    async def _settle(self, watch: Watch, decision: Decision, now: float) -> None:
        """Persist the decision if it changes the task, then reschedule or forget the task."""
        if decision.outcome is not None or decision.new_state is not None:
            try:
                kept = await self._sink.commit(watch, decision)
            except Exception as exc:
                # The answer will come again: poll once more later rather than lose the task.
                # An unreachable database is one line per task, not a traceback each.
                log.error(
                    "transition_failed",
                    task_id=watch.task_id,
                    to_state=decision.new_state.value if decision.new_state else None,
                    error=exc.message if isinstance(exc, StoreUnavailable) else None,
                    exc_info=not isinstance(exc, StoreUnavailable),
                )
                if self._watches.get(watch.task_id) is watch:
                    watch.last_error = f"could not record the outcome: {type(exc).__name__}"
                    watch.next_poll_at = now + max(watch.interval_s, 0.05)
                    self._push(watch)
                return
            if not kept:
                self._forget(watch)
                return
        self._reschedule(watch, decision)

    def _reschedule(self, watch: Watch, decision: Decision) -> None:
        """Apply a (persisted) decision to the watch: poll it again, or forget it."""
        if self._watches.get(watch.task_id) is not watch:
            return
        apply(watch, decision)
        if decision.next_poll_at is None:
            self._forget(watch)
        else:
            self._push(watch)

    def _forget(self, watch: Watch) -> None:
        if self._watches.get(watch.task_id) is watch:
            del self._watches[watch.task_id]

    # -- effects on the whole upstream ----------------------------------------------------------
    def _upstream_effects(
        self,
        watch: Watch,
        result: PollResult,
        decision: Decision,
        *,
        probe: bool,
        seq: int,
        started: float,
        now: float,
    ) -> None:
        """What an answer means for every task. Only a credential error or a 429, an answer
        while paused, or a transient problem has any: `_poll_once` calls this only then."""
        if decision.credentials_bad:
            self._credentials_rejected(watch, result, decision, probe=probe, seq=seq, now=now)
        elif self._paused and seq > self._paused_at_seq:
            if result.outcome in _KEY_ACCEPTED:
                self._resume("upstream accepted the api key")
            elif probe:
                # A 5xx, timeout or 429 says nothing about the key: ask again later.
                self._probe_at = now + self._probe_delay_s
        if decision.rate_limited_until is not None:
            if self._observer is not None:
                self._observer.rate_limited()
            lowered = self._budget.rate_limited(started)
            if lowered is not None or self._budget.paused_until <= now:
                log.warning(
                    "upstream_rate_limited",
                    task_id=watch.task_id,
                    retry_after_s=result.retry_after_s,
                    paused_s=round(decision.rate_limited_until - now, 3),
                    request_rate=round(self._budget.effective_rate(now), 3),
                    max_requests_per_second=self._budget.rate,
                )
            if lowered is not None:
                self._budget_lowered = True
            self._budget.pause_until(decision.rate_limited_until)
        if result.outcome is PollOutcome.TRANSIENT:
            self._note_problem(result, now)

    def _credentials_rejected(
        self,
        watch: Watch,
        result: PollResult,
        decision: Decision,
        *,
        probe: bool,
        seq: int,
        now: float,
    ) -> None:
        if seq <= self._resumed_at_seq:
            return  # asked with the key from before the resume
        if not self._paused:
            self._paused = True
            self._paused_since = now
            self._pause_saved_at = now
            self._paused_at_seq = self._poll_seq
            self._pause_reason = f"upstream rejected the API key: {result.detail}"
            self._probe_delay_s = self._probe_first_s
            self._probe_at = now + self._probe_delay_s
            log.error(
                "upstream_credentials_rejected",
                task_id=watch.task_id,
                http_status=result.http_status,
                code=result.code,
                detail=result.detail,
                watched=len(self._watches),
                next_probe_in_s=self._probe_delay_s,
            )
            if self._observer is not None:
                self._observer.credentials_paused(True)
        elif probe:
            self._probe_delay_s = min(self._probe_delay_s * 2, self._probe_max_s)
            self._probe_at = now + self._probe_delay_s
            self._pause_reason = f"upstream rejected the API key: {result.detail}"
            log.warning(
                "upstream_credentials_still_rejected",
                detail=result.detail,
                next_probe_in_s=self._probe_delay_s,
            )
        if decision.pause_all_until is not None:
            self._probe_at = max(self._probe_at, decision.pause_all_until)

    def _check_recovered(self, now: float) -> None:
        if self._budget.effective_rate(now) >= self._budget.rate:
            self._budget_lowered = False
            log.info("upstream_rate_recovered", request_rate=self._budget.rate)

    def _resume(self, reason: str) -> None:
        # The pause was our credentials' fault, not the tasks': each deadline moves by the
        # time the task spent paused, so a long outage does not end every task in timed_out.
        now = self._clock.monotonic()
        self._save_pause(now)
        for watch in self._watches.values():
            paused_for = now - max(self._paused_since, watch.registered_at)
            if paused_for > 0:
                watch.deadline_at += paused_for
        self._paused = False
        self._pause_reason = None
        self._probe_delay_s = self._probe_first_s
        self._resumed_at_seq = self._poll_seq
        log.info("upstream_credentials_accepted", reason=reason, watched=len(self._watches))
        if self._observer is not None:
            self._observer.credentials_paused(False)
        self._wakeup.set()

    def _save_pause(self, now: float) -> None:
        """Persist the credential pause from where it was last saved up to `now` (in the
        background: this is called from inside a poll's bookkeeping and from a reload)."""
        since = self._pause_saved_at
        if now <= since:
            return
        self._pause_saved_at = now
        save = asyncio.ensure_future(self._persist_pause(since, now))
        self._pause_saves.add(save)
        save.add_done_callback(self._pause_saves.discard)

    async def _persist_pause(self, since: float, until: float) -> None:
        try:
            await self._sink.extend_deadlines(
                since=self._timeline.to_wall(since), until=self._timeline.to_wall(until)
            )
        except Exception:
            # Only a restart needs it, and a restart polls a task before timing it out: keep
            # polling (or resuming) and try again at the next save.
            log.error("pause_not_saved", paused_s=round(until - since, 3), exc_info=True)
            if self._paused:
                self._pause_saved_at = min(self._pause_saved_at, since)

    def _note_problem(self, result: PollResult, now: float) -> None:
        # One warning a minute, not one per poll: an upstream outage must not flood the log.
        self._problems += 1
        last = self._problems_logged_at
        if last is None or now - last >= PROBLEM_LOG_INTERVAL_S or now < last:
            log.warning("upstream_unavailable", failed_polls=self._problems, last=result.detail)
            self._problems = 0
            self._problems_logged_at = now


def _metric_outcome(result: PollResult) -> str:
    if result.outcome is PollOutcome.OK:
        return "ok"
    if result.outcome is PollOutcome.TOO_LARGE:
        return "too_large"
    if result.http_status is None:
        return "timeout" if result.detail.startswith("timeout") else "error"
    status = result.code if result.code is not None and result.code != 200 else result.http_status
    return f"http_{status}"
