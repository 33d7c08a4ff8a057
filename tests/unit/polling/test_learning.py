"""The Learner: durations per model, when a plan is used, and the stats it reports."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import pytest

from watcher.config.settings import AdaptiveSettings, PollingConfig, PollingPolicy
from watcher.polling.learning import Learner, duration_of

FIXED = PollingPolicy()
ADAPTIVE = replace(FIXED, strategy="adaptive", adaptive=AdaptiveSettings(min_samples=5, window=50))


def lognormal(n: int, median: float = 20.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [median * math.exp(0.4 * rng.gauss(0.0, 1.0)) for _ in range(n)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"createTime": 1_000, "completeTime": 13_500, "costTime": 99_000}, 12.5),
        ({"costTime": 12_500}, 12.5),
        ({"createTime": 1_000, "costTime": 4_000}, 4.0),  # no completeTime
        ({"createTime": 5_000, "completeTime": 1_000, "costTime": 2_000}, 2.0),  # inverted
        ({"createTime": 1_000, "completeTime": 1_000}, 0.0),
        ({"costTime": "12500"}, None),
        ({"costTime": True}, None),
        ({"costTime": -5}, None),
        ({"costTime": float("nan")}, None),
        ({"costTime": 40 * 86_400_000}, None),  # longer than any task could take
        ({}, None),
    ],
)
def test_duration_of(data: dict[str, Any], expected: float | None) -> None:
    assert duration_of(data) == expected


def test_no_plan_before_min_samples_nor_with_the_fixed_strategy() -> None:
    learner = Learner()
    assert learner.plan("m", ADAPTIVE) is None
    for d in lognormal(4):
        learner.add("m", d, window=50)
    assert learner.plan("m", ADAPTIVE) is None  # 4 < min_samples
    learner.add("m", 20.0, window=50)
    assert learner.plan("m", ADAPTIVE) is not None
    assert learner.plan("m", FIXED) is None
    assert learner.plan("other", ADAPTIVE) is None


def test_auto_spends_what_fixed_would() -> None:
    learner = Learner()
    for d in lognormal(50):
        learner.add("m", d, window=50)
    auto = learner.plan("m", ADAPTIVE)
    stats = {s.model: s for s in learner.stats(PollingConfig(default=FIXED))}
    assert auto is not None
    assert stats["m"].strategy == "fixed"
    assert stats["m"].polls_per_task == pytest.approx(auto.polls_per_task, rel=1e-3)
    explicit = replace(ADAPTIVE, adaptive=replace(ADAPTIVE.adaptive, polls_per_task=3.0))
    p = learner.plan("m", explicit)
    assert p is not None
    assert p.polls_per_task == pytest.approx(3.0, rel=1e-3)


def test_the_window_keeps_the_most_recent() -> None:
    learner = Learner()
    for i in range(10):
        learner.add("m", float(i + 1), window=4)
    dist = learner.distribution("m")
    assert dist is not None
    assert (dist.samples, dist.max_s) == (4, 10.0)
    learner.reconfigure(PollingConfig(default=replace(FIXED, adaptive=AdaptiveSettings(window=2))))
    assert learner.samples("m") == 2


def test_the_distribution_is_rebuilt_lazily() -> None:
    learner = Learner()
    for d in lognormal(100):
        learner.add("m", d, window=1000)
    first = learner.distribution("m")
    learner.add("m", 20.0, window=1000)
    assert learner.distribution("m") is first  # 1 new sample of 101: not yet
    for d in lognormal(5, seed=2):
        learner.add("m", d, window=1000)
    second = learner.distribution("m")
    assert second is not first
    assert second is not None
    assert second.samples == 106


def test_invalid_durations_are_ignored() -> None:
    learner = Learner()
    for bad in (-1.0, math.nan, math.inf):
        learner.add("m", bad, window=10)
    assert learner.samples("m") == 0


def test_stats() -> None:
    learner = Learner()
    learner.load({"m": [10.0, 20.0, 30.0, 40.0, 50.0]}, PollingConfig(default=ADAPTIVE))
    learner.detection_delay("m", 1.0)
    learner.detection_delay("m", 2.0)
    learner.detection_delay("m", -5.0)  # clocks disagree: counted as 0
    learner.detection_delay("unseen", 4.0)
    polling = PollingConfig(default=ADAPTIVE, models=MappingProxyType({"sora-2": FIXED}))
    rows = {s.model: s for s in learner.stats(polling)}
    assert set(rows) == {"m", "unseen", "sora-2"}
    m = rows["m"]
    assert (m.samples, m.strategy) == (5, "adaptive")
    assert (m.duration_p50_s, m.duration_p90_s, m.duration_p99_s) == (30.0, 46.0, 49.6)
    assert m.detection_delay_mean_s == 1.0
    assert m.polls_per_task is not None
    unseen = rows["unseen"]
    assert (unseen.samples, unseen.strategy, unseen.duration_p50_s) == (0, "fixed", None)
    assert unseen.polls_per_task is None
    assert unseen.detection_delay_mean_s == 4.0
    assert rows["sora-2"].samples == 0
