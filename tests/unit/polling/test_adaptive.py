"""The adaptive schedule: sqrt-hazard density, scaling to polls per task, clamps, fallback."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import pytest

from watcher.config.settings import PollingPolicy
from watcher.polling.adaptive import (
    FIRST_STEP,
    expected_polls,
    fixed_ages,
    fixed_polls_per_task,
    plan,
)
from watcher.polling.durations import DurationDistribution


def lognormal(median: float, sigma: float, n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(n)]


@pytest.fixture(scope="module")
def dist() -> DurationDistribution:
    return DurationDistribution(lognormal(20.0, 0.5, 1000))


@dataclass
class Step:
    """A distribution where every task takes exactly `at` seconds."""

    at: float

    def survival(self, t: float) -> float:
        return 1.0 if t < self.at else 0.0


@pytest.mark.parametrize(
    ("ages", "expected"),
    [
        ([], 1.0),  # no schedule: the fixed fallback's one poll
        ([5.0, 10.0, 15.0], 2.0),  # 5 misses it, 10 sees it, 15 is never made
        ([0.0, 2.0, 5.0, 9.5, 16.25], 5.0),  # 0, 2, 5, 9.5 miss it, 16.25 sees it
        ([12.0], 1.0),
        ([10.0], 1.0),  # a poll at the very moment it finishes sees it
    ],
)
def test_expected_polls_counts_every_poll_up_to_the_one_that_sees_it(
    ages: list[float], expected: float
) -> None:
    # Every task takes exactly 10 s.
    assert expected_polls(Step(10.0), ages) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("policy", "horizon", "expected"),
    [
        (
            PollingPolicy(initial_delay_s=0.0, initial_interval_s=2.0, backoff=1.5),
            10.0,
            [0.0, 2.0, 5.0, 9.5, 16.25],
        ),
        (
            PollingPolicy(initial_delay_s=3.0, initial_interval_s=3.0, backoff=1.0),
            9.0,
            [3.0, 6.0, 9.0],
        ),
        (
            PollingPolicy(
                initial_delay_s=0.0, initial_interval_s=10.0, max_interval_s=15.0, backoff=2.0
            ),
            40.0,
            [0.0, 10.0, 25.0, 40.0],
        ),
    ],
)
def test_fixed_ages(policy: PollingPolicy, horizon: float, expected: list[float]) -> None:
    assert fixed_ages(policy, horizon) == pytest.approx(expected)


def test_auto_is_what_fixed_spends_on_the_learned_distribution() -> None:
    dist = DurationDistribution([10.0] * 50)
    policy = PollingPolicy(initial_delay_s=0.0, initial_interval_s=2.0, backoff=1.5)
    # polls at 0, 2, 5, 9.5 miss a task of ~10 s (smoothed over a few % either side), the
    # one at 16.25 sees it
    assert fixed_polls_per_task(dist, policy) == pytest.approx(5.0, abs=0.3)


@pytest.mark.parametrize("target", [2.0, 3.0, 4.5, 6.0, 10.0])
def test_the_plan_spends_the_requests_it_is_given(
    dist: DurationDistribution, target: float
) -> None:
    p = plan(dist, polls_per_task=target, min_interval_s=0.5, max_interval_s=30.0)
    assert p.polls_per_task == pytest.approx(target, rel=1e-3)
    assert expected_polls(dist, p.ages()) == pytest.approx(p.polls_per_task)


def test_more_requests_make_a_denser_schedule(dist: DurationDistribution) -> None:
    few = plan(dist, polls_per_task=3.0, min_interval_s=0.5, max_interval_s=30.0)
    many = plan(dist, polls_per_task=8.0, min_interval_s=0.5, max_interval_s=30.0)
    assert many.scale > few.scale
    assert len(many.ages()) > len(few.ages())


def test_polls_follow_the_square_root_of_the_hazard(dist: DurationDistribution) -> None:
    p = plan(dist, polls_per_task=8.0, min_interval_s=0.01, max_interval_s=1e6)
    ages = p.ages()
    # Each unclamped gap spans 1/scale of the integral of sqrt(h); the first FIRST_STEP/scale.
    spans = [
        dist.root_hazard_integral(b) - dist.root_hazard_integral(a)
        for a, b in zip([0.0, *ages], ages, strict=False)
    ]
    assert spans[0] == pytest.approx(FIRST_STEP / p.scale, rel=1e-6)
    for span, age in zip(spans[1:], ages[1:], strict=False):
        if age <= dist.max_s:
            assert span == pytest.approx(1.0 / p.scale, rel=1e-6)
    # so the gaps are shortest where the hazard is highest, not at the start
    gaps = [b - a for a, b in itertools.pairwise(ages)]
    assert ages[0] > 5.0  # nothing finishes in the first seconds: no poll there
    assert min(gaps) < 0.5 * ages[0]


@pytest.mark.parametrize(
    ("min_s", "max_s"),
    [(0.5, 30.0), (2.0, 30.0), (0.5, 4.0), (5.0, 5.0), (3.0, 1.0)],
)
def test_gaps_are_clamped(dist: DurationDistribution, min_s: float, max_s: float) -> None:
    p = plan(dist, polls_per_task=20.0, min_interval_s=min_s, max_interval_s=max_s)
    ages = p.ages()
    gaps = [b - a for a, b in zip([0.0, *ages], ages, strict=False)]
    upper = max(max_s, min_s)  # a max below the min gives way to the min
    assert all(min_s - 1e-9 <= g <= upper + 1e-9 for g in gaps), gaps


def test_an_unreachable_target_comes_as_close_as_the_clamps_allow(
    dist: DurationDistribution,
) -> None:
    cheap = plan(dist, polls_per_task=1.0, min_interval_s=0.5, max_interval_s=5.0)
    # a poll at least every 5 s until ~20 s: at least 4 requests, whatever the target
    assert cheap.polls_per_task > 4.0
    dense = plan(dist, polls_per_task=1e6, min_interval_s=1.0, max_interval_s=30.0)
    assert dense.polls_per_task < 60.0


@pytest.mark.parametrize(
    ("age", "first", "expect_none"),
    [(0.0, True, False), (10.0, False, False), (25.0, False, False), (1e5, False, True)],
)
def test_fallback_past_the_longest_duration_seen(
    dist: DurationDistribution, age: float, first: bool, expect_none: bool
) -> None:
    p = plan(dist, polls_per_task=5.0, min_interval_s=0.5, max_interval_s=30.0)
    at = p.next_age(age, first=first)
    assert (at is None) == expect_none
    if at is not None:
        assert age + 0.5 <= at <= age + 30.0
    assert p.next_age(dist.max_s + 0.001) is None


def test_the_plan_is_pure(dist: DurationDistribution) -> None:
    a = plan(dist, polls_per_task=5.0, min_interval_s=0.5, max_interval_s=30.0)
    b = plan(dist, polls_per_task=5.0, min_interval_s=0.5, max_interval_s=30.0)
    assert a == b
    assert a.next_age(12.0) == b.next_age(12.0)
