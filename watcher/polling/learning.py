"""What the daemon has learned per model: recent durations, the distribution and plan built from
them, and the detection delays seen. In memory, no I/O, no clock: the scheduler feeds it and
the daemon persists the durations (Store.record_durations) and loads them at start.

Building a distribution and its plan costs a few milliseconds, so they are rebuilt lazily, when
a model's samples have changed by REBUILD_FRACTION since the last build (every new sample while
there are few), not on every finished task.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from watcher.config.settings import PollingConfig, PollingPolicy
from watcher.polling.adaptive import AdaptivePlan, fixed_polls_per_task, plan
from watcher.polling.durations import DurationDistribution

REBUILD_FRACTION: Final = 0.05
# Detection delays kept per model for the mean shown by GET /v1/stats/models.
DELAYS_KEPT: Final = 1000
# Durations longer than this are not learned from (an upstream clock far off, a bogus field).
MAX_DURATION_S: Final = 30 * 86_400.0


def duration_of(data: Mapping[str, Any]) -> float | None:
    """How long a finished task took, from the upstream's answer: `completeTime - createTime`
    (Unix ms) when both are there, else `costTime` (ms); None when neither is usable."""
    complete, create = _ms(data.get("completeTime")), _ms(data.get("createTime"))
    if complete is not None and create is not None and complete >= create:
        seconds = (complete - create) / 1000.0
    else:
        cost = _ms(data.get("costTime"))
        if cost is None or cost < 0:
            return None
        seconds = cost / 1000.0
    return seconds if seconds <= MAX_DURATION_S else None


def _ms(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One row of GET /v1/stats/models."""

    model: str
    samples: int
    duration_p50_s: float | None
    duration_p90_s: float | None
    duration_p99_s: float | None
    strategy: str  # the one in use now: adaptive only once it has min_samples
    polls_per_task: float | None  # what the strategy in use spends per task, on the samples
    detection_delay_mean_s: float | None


class _Model:
    __slots__ = ("built_at", "delays", "dist", "plan", "plan_key", "samples")

    def __init__(self, window: int) -> None:
        self.samples: deque[float] = deque(maxlen=max(1, window))
        self.delays: deque[float] = deque(maxlen=DELAYS_KEPT)
        self.dist: DurationDistribution | None = None
        self.built_at = 0  # samples added when `dist` was built (counting every one ever)
        self.plan: AdaptivePlan | None = None
        self.plan_key: tuple[int, PollingPolicy] | None = None


class Learner:
    """Per model: the last `window` durations, and what is built from them."""

    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}
        self._added: dict[str, int] = {}  # samples ever added per model

    def _model(self, name: str, window: int) -> _Model:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model(window)
            self._added[name] = 0
        elif model.samples.maxlen != max(1, window):  # the window was reloaded
            model.samples = deque(model.samples, maxlen=max(1, window))
            model.dist, model.plan, model.plan_key = None, None, None
        return model

    def reconfigure(self, polling: PollingConfig) -> None:
        """Apply reloaded windows at once (a shorter one drops the oldest samples)."""
        for name in list(self._models):
            self._model(name, polling.for_model(name).adaptive.window)

    def load(self, durations: Mapping[str, Sequence[float]], polling: PollingConfig) -> None:
        """Start from stored durations (oldest first), e.g. after a restart."""
        for name, values in durations.items():
            window = polling.for_model(name).adaptive.window
            for value in values:
                self.add(name, value, window=window)

    def add(self, model: str, duration_s: float, *, window: int) -> None:
        """A finished task of `model` took `duration_s`."""
        if not math.isfinite(duration_s) or duration_s < 0:
            return
        self._model(model, window).samples.append(duration_s)
        self._added[model] += 1

    def detection_delay(self, model: str, seconds: float) -> None:
        """A finished task of `model` was seen `seconds` after it completed."""
        entry = self._models.get(model)
        if entry is None:
            entry = self._models[model] = _Model(1000)
            self._added[model] = 0
        entry.delays.append(max(0.0, seconds))

    def samples(self, model: str) -> int:
        entry = self._models.get(model)
        return len(entry.samples) if entry is not None else 0

    def distribution(self, model: str) -> DurationDistribution | None:
        """The learned distribution of `model` (None without samples); rebuilt once its
        samples changed by REBUILD_FRACTION."""
        entry = self._models.get(model)
        if entry is None or not entry.samples:
            return None
        added = self._added[model]
        stale = added - entry.built_at
        if entry.dist is None or stale >= max(1, int(len(entry.samples) * REBUILD_FRACTION)):
            entry.dist = DurationDistribution(entry.samples)
            entry.built_at = added
        return entry.dist

    def plan(self, model: str, policy: PollingPolicy) -> AdaptivePlan | None:
        """The adaptive plan for `model` under `policy`, or None when the fixed schedule
        applies (strategy fixed, or fewer than min_samples finished tasks)."""
        if not policy.adaptive_enabled or self.samples(model) < policy.adaptive.min_samples:
            return None
        dist = self.distribution(model)
        if dist is None:
            return None
        entry = self._models[model]
        key = (entry.built_at, policy)
        if entry.plan is None or entry.plan_key != key:
            settings = policy.adaptive
            target = settings.polls_per_task
            if target is None:
                target = fixed_polls_per_task(dist, policy)
            entry.plan = plan(
                dist,
                polls_per_task=target,
                min_interval_s=settings.min_interval_s,
                max_interval_s=policy.max_interval_s,
            )
            entry.plan_key = key
        return entry.plan

    def stats(self, polling: PollingConfig) -> list[ModelStats]:
        """One row per model with samples, detection delays or a configured override."""
        names = sorted(set(self._models) | set(polling.models))
        rows = []
        for name in names:
            policy = polling.for_model(name)
            dist = self.distribution(name)
            plan_ = self.plan(name, policy)
            entry = self._models.get(name)
            delays = entry.delays if entry is not None else ()
            ppt: float | None
            if plan_ is not None:
                strategy, ppt = "adaptive", plan_.polls_per_task
            else:
                strategy = "fixed"
                ppt = fixed_polls_per_task(dist, policy) if dist is not None else None
            rows.append(
                ModelStats(
                    model=name,
                    samples=self.samples(name),
                    duration_p50_s=_q(dist, 0.5),
                    duration_p90_s=_q(dist, 0.9),
                    duration_p99_s=_q(dist, 0.99),
                    strategy=strategy,
                    polls_per_task=round(ppt, 3) if ppt is not None else None,
                    detection_delay_mean_s=(
                        round(sum(delays) / len(delays), 3) if delays else None
                    ),
                )
            )
        return rows


def _q(dist: DurationDistribution | None, q: float) -> float | None:
    return round(dist.quantile(q), 3) if dist is not None else None
