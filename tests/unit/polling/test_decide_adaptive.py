"""decide() and watch_for() with an adaptive plan: where the next poll goes, and when the fixed
rules apply instead."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import pytest

from watcher.config.settings import PollingPolicy
from watcher.models import Task, TaskSource, TaskState
from watcher.polling.adaptive import AdaptivePlan, plan
from watcher.polling.decide import Watch, decide, watch_for, watches_for_new
from watcher.polling.durations import DurationDistribution
from watcher.upstream.classify import PollOutcome, PollResult

T0 = 1000.0  # monotonic seconds
POLICY = PollingPolicy(
    initial_delay_s=0.0,
    initial_interval_s=2.0,
    max_interval_s=30.0,
    backoff=1.5,
    jitter=0.0,
    deadline_s=3600.0,
    not_found_grace_s=120.0,
    strategy="adaptive",
)


def lognormal(median: float, sigma: float, n: int) -> list[float]:
    rng = random.Random(3)
    return [median * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(n)]


@pytest.fixture(scope="module")
def adaptive_plan() -> AdaptivePlan:
    dist = DurationDistribution(lognormal(20.0, 0.4, 500))
    return plan(dist, polls_per_task=5.0, min_interval_s=0.5, max_interval_s=30.0)


def make_watch(**changes: Any) -> Watch:
    watch = Watch(
        task_id="t",
        model="m",
        registered_at=T0,
        deadline_at=T0 + 3600.0,
        deadline_override_s=None,
        state=TaskState.PENDING,
        upstream_state="pending",
        interval_s=2.0,
        next_poll_at=None,
        polls=1,
        answered=True,
    )
    for key, value in changes.items():
        setattr(watch, key, value)
    return watch


def ok(state: str) -> PollResult:
    return PollResult(PollOutcome.OK, 200, 200, {"state": state}, None, "HTTP 200")


def problem(outcome: PollOutcome, http: int) -> PollResult:
    return PollResult(outcome, http, http, None, None, f"HTTP {http}")


@pytest.mark.parametrize(
    ("age", "created_offset"),
    [
        (3.0, None),  # age from registration
        (14.0, None),
        (22.0, None),
        (14.0, -6.0),  # created 6 s before registration: ages count from creation
    ],
)
def test_the_next_poll_is_where_the_plan_puts_it(
    adaptive_plan: AdaptivePlan, age: float, created_offset: float | None
) -> None:
    created = None if created_offset is None else T0 + created_offset
    watch = make_watch(created_at=created)
    origin = created if created is not None else T0
    now = origin + age
    decision = decide(watch, ok("pending"), POLICY, now, 0.5, adaptive_plan)
    expected = adaptive_plan.next_age(age)
    assert expected is not None
    assert decision.next_poll_at == pytest.approx(origin + expected)
    assert decision.interval_s == 3.0  # the fixed interval keeps growing for the fallback


def test_polls_come_where_tasks_finish_not_at_the_start(adaptive_plan: AdaptivePlan) -> None:
    watch = make_watch()
    early = decide(watch, ok("pending"), POLICY, T0 + 1.0, 0.5, adaptive_plan)
    assert early.next_poll_at is not None
    assert early.next_poll_at - (T0 + 1.0) > 5.0  # little finishes before ~10 s
    busy = decide(watch, ok("pending"), POLICY, T0 + 20.0, 0.5, adaptive_plan)
    assert busy.next_poll_at is not None
    assert busy.next_poll_at - (T0 + 20.0) < 5.0  # around the median: dense


def test_past_the_longest_duration_seen_the_fixed_rules_apply(
    adaptive_plan: AdaptivePlan,
) -> None:
    watch = make_watch(interval_s=7.0)
    now = T0 + adaptive_plan.distribution.max_s + 1.0
    decision = decide(watch, ok("processing"), POLICY, now, 0.5, adaptive_plan)
    assert decision.next_poll_at == pytest.approx(now + 7.0)
    assert decision.interval_s == pytest.approx(10.5)


@pytest.mark.parametrize(
    "result",
    [
        problem(PollOutcome.TRANSIENT, 500),
        problem(PollOutcome.NOT_FOUND, 404),
    ],
)
def test_problem_answers_back_off_as_fixed_does(
    adaptive_plan: AdaptivePlan, result: PollResult
) -> None:
    watch = make_watch(interval_s=4.0)
    decision = decide(watch, result, POLICY, T0 + 20.0, 0.5, adaptive_plan)
    assert decision.next_poll_at == pytest.approx(T0 + 24.0)


def test_without_a_plan_fixed_applies() -> None:
    decision = decide(make_watch(), ok("pending"), POLICY, T0 + 20.0, 0.5, None)
    assert decision.next_poll_at == pytest.approx(T0 + 22.0)


def test_never_past_the_deadline(adaptive_plan: AdaptivePlan) -> None:
    watch = make_watch(deadline_at=T0 + 3.5)
    decision = decide(watch, ok("pending"), POLICY, T0 + 3.0, 0.5, adaptive_plan)
    assert decision.next_poll_at == T0 + 3.5


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_jitter_never_takes_a_gap_under_min_interval(rand: float) -> None:
    dist = DurationDistribution(lognormal(20.0, 0.4, 500))
    dense = plan(dist, polls_per_task=200.0, min_interval_s=0.5, max_interval_s=30.0)
    policy = replace(POLICY, jitter=0.5)
    decision = decide(make_watch(), ok("pending"), policy, T0 + 20.0, rand, dense)
    assert decision.next_poll_at is not None
    assert decision.next_poll_at - (T0 + 20.0) >= 0.5 - 1e-9


def make_task() -> Task:
    return Task("t", "m", None, None, {}, None, TaskSource.API, TaskState.PENDING, T0, T0)


def test_the_first_poll_waits_for_the_plan(adaptive_plan: AdaptivePlan) -> None:
    first = adaptive_plan.next_age(0.0, first=True)
    assert first is not None
    assert first > 5.0
    watch = watch_for(make_task(), POLICY, T0, registered_at=T0, plan=adaptive_plan)
    assert watch.next_poll_at == pytest.approx(T0 + first)
    # an initial_delay later than the plan's first poll wins
    late = replace(POLICY, initial_delay_s=first + 10.0)
    watch = watch_for(make_task(), late, T0, registered_at=T0, plan=adaptive_plan)
    assert watch.next_poll_at == pytest.approx(T0 + first + 10.0)
    # overdue after a restart: at once
    watch = watch_for(make_task(), POLICY, T0 + 500.0, registered_at=T0, plan=adaptive_plan)
    assert watch.next_poll_at == T0 + 500.0
    # no plan: initial_delay as before
    watch = watch_for(make_task(), POLICY, T0, registered_at=T0)
    assert watch.next_poll_at == T0


@pytest.mark.parametrize("with_plan", [False, True], ids=["fixed", "adaptive"])
@pytest.mark.parametrize(
    ("initial_delay_s", "now"),
    [(0.0, T0), (5.0, T0), (5.0, T0 + 100.0), (60.0, T0), (0.0, T0 + 4000.0)],
    ids=["at-once", "delayed", "overdue", "late-delay", "past-deadline"],
)
def test_watches_for_new_are_the_watches_watch_for_builds(
    adaptive_plan: AdaptivePlan, with_plan: bool, initial_delay_s: float, now: float
) -> None:
    # The batch path (a tasks file) and the one-task path (the intake) must watch a new task
    # the same way: every field of the Watch, for each model's policy and each own deadline.
    policies = {
        "m": replace(POLICY, initial_delay_s=initial_delay_s),
        "slow": replace(POLICY, initial_delay_s=initial_delay_s, initial_interval_s=15.0),
    }
    plans = {"m": adaptive_plan if with_plan else None, "slow": None}  # "slow": too few samples
    rows = [("a", "m", None), ("b", "slow", 90.0), ("c", "m", 3.0), ("d", "slow", None)]
    asked: list[str] = []

    def plan_for(model: str) -> tuple[PollingPolicy, AdaptivePlan | None]:
        asked.append(model)
        return policies[model], plans[model]

    batch = list(
        watches_for_new(
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            plan_for,
            now,
            registered_at=T0,
        )
    )

    singles = [
        watch_for(
            Task(
                task_id,
                model,
                None,
                None,
                {},
                deadline_s,
                TaskSource.FILE,
                TaskState.PENDING,
                T0,
                T0,
            ),
            policies[model],
            now,
            registered_at=T0,
            plan=plans[model],
        )
        for task_id, model, deadline_s in rows
    ]
    assert batch == singles
    assert asked == ["m", "slow"]  # once per model
