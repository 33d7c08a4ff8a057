"""DurationDistribution: the learned distribution of a model's task durations."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from watcher.polling.durations import DurationDistribution


def lognormal(median: float, sigma: float, n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(n)]


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@pytest.fixture(scope="module")
def big() -> DurationDistribution:
    return DurationDistribution(lognormal(20.0, 0.5, 5000))


def test_needs_at_least_one_duration() -> None:
    with pytest.raises(ValueError, match="at least one"):
        DurationDistribution([])
    with pytest.raises(ValueError, match="at least one"):
        DurationDistribution([math.nan, math.inf])


@pytest.mark.parametrize(
    ("durations", "q", "expected"),
    [
        ([10.0], 0.5, 10.0),
        ([1.0, 2.0, 3.0, 4.0], 0.0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 1.0, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 0.5, 2.5),  # order does not matter
        ([0.0, 10.0], 0.9, 9.0),
    ],
)
def test_quantiles_come_from_the_samples(durations: list[float], q: float, expected: float) -> None:
    dist = DurationDistribution(durations)
    assert dist.quantile(q) == pytest.approx(expected)
    assert dist.samples == len(durations)
    assert dist.max_s == max(durations)


def test_quantile_outside_zero_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="quantile"):
        DurationDistribution([1.0]).quantile(1.5)


@pytest.mark.parametrize("t", [1.0, 10.0, 15.0, 20.0, 30.0, 50.0])
def test_survival_matches_the_true_distribution(big: DurationDistribution, t: float) -> None:
    true = 1.0 - normal_cdf(math.log(t / 20.0) / 0.5)
    assert big.survival(t) == pytest.approx(true, abs=0.03)


def test_survival_falls_from_one_to_zero(big: DurationDistribution) -> None:
    ages = [0.01 * 1.05**k for k in range(400)]
    values = [big.survival(a) for a in ages]
    assert values[0] == 1.0
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values))
    assert big.survival(1e7) == 0.0


def test_hazard_of_a_lognormal_rises_then_falls(big: DurationDistribution) -> None:
    # The lognormal's hazard is near zero early, peaks after the median, and then declines.
    assert big.hazard(2.0) < 1e-3
    assert big.hazard(20.0) > big.hazard(10.0)
    assert big.hazard(35.0) > big.hazard(20.0)
    assert big.hazard(0.0) == 0.0


def test_finish_probability(big: DurationDistribution) -> None:
    assert big.finish_probability(10.0, 10.0) == 0.0
    assert 0.4 < big.finish_probability(0.0, 20.0) < 0.6
    p1 = big.finish_probability(15.0, 20.0)
    p2 = big.finish_probability(15.0, 25.0)
    assert 0.0 < p1 < p2 < 1.0
    assert big.finish_probability(1e7, 2e7) == 1.0  # older than any task: likely done


def test_the_root_hazard_integral_and_its_inverse_agree(big: DurationDistribution) -> None:
    for t in (5.0, 12.0, 20.0, 33.3, 60.0):
        value = big.root_hazard_integral(t)
        assert big.root_hazard_inverse(value) == pytest.approx(t, rel=1e-9)
    assert big.root_hazard_integral(0.0) == 0.0
    assert big.root_hazard_inverse(0.0) == 0.0
    assert big.root_hazard_inverse(big.root_hazard_integral(1e9) + 1.0) == math.inf


def test_the_integral_of_root_hazard_grows_where_tasks_finish(big: DurationDistribution) -> None:
    # d/dt integral = sqrt(h): flat before anything finishes, steep around the median.
    early = big.root_hazard_integral(4.0) - big.root_hazard_integral(2.0)
    middle = big.root_hazard_integral(22.0) - big.root_hazard_integral(20.0)
    assert early < 0.05 * middle


def test_one_sample_and_tiny_durations_work() -> None:
    dist = DurationDistribution([0.0, 0.001])
    assert dist.survival(0.0) == 1.0
    assert dist.survival(10.0) == 0.0
    single = DurationDistribution([12.5])
    assert single.survival(10.0) > 0.5 > single.survival(15.0)


def test_a_bimodal_mix_keeps_its_gap() -> None:
    # images (~12 s) and videos (~150 s) under one model name: little finishes in between.
    durations = lognormal(12.0, 0.3, 700, seed=2) + lognormal(150.0, 0.3, 300, seed=3)
    dist = DurationDistribution(durations)
    assert dist.survival(40.0) == pytest.approx(0.3, abs=0.03)
    assert dist.hazard(50.0) < 0.1 * dist.hazard(12.0)
