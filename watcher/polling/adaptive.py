"""The adaptive schedule: each task's polls placed where its model's tasks tend to finish.

Pure. Keller (1974): the checking schedule that minimises the expected detection delay plus
the cost of the checks has density n(t) proportional to sqrt(h(t)), the square root of the
completion hazard at age t. So the polls of a task are the ages where the integral of
sqrt(h), times a scale c, crosses 1, 2, 3, ...; c is chosen so that the mean requests per task
on the learned distribution equal `polls_per_task`. Each gap is clamped to
[min_interval, max_interval]; past the longest duration ever seen the plan has nothing to say
(`next_age` answers None) and the caller falls back to the fixed schedule.

Ages count from the upstream's `createTime` when it is known, else from registration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from watcher.config.settings import PollingPolicy
from watcher.polling.durations import DurationDistribution

# The scale is searched within these bounds (polls per unit of the sqrt-hazard integral).
_SCALE_MIN: Final = 1e-3
_SCALE_MAX: Final = 1e3
_SEARCH_STEPS: Final = 40
_CLOSE_ENOUGH: Final = 1e-4  # relative: the search stops this close to the target
# A schedule is followed until a task is this unlikely to be still running...
_NEGLIGIBLE: Final = 1e-6
# ...or for at most this many polls (a guard for min_interval far below the durations).
_MAX_POLLS: Final = 10_000
# The first poll comes where the integral reaches FIRST_STEP / c rather than 1 / c: Keller's
# density is an asymptotic result, and at the start, where few tasks finish, the exact optimum
# (dynamic programming on the true distribution, `make bench`) waits a little longer. Measured
# on the benchmark's workloads: 1.25 is 1-3 % closer to the optimum than 1.0; 1.5 no better.
FIRST_STEP: Final = 1.25


class Survival(Protocol):
    def survival(self, t: float) -> float:
        """P(duration > t)."""
        ...


@dataclass(frozen=True, slots=True)
class AdaptivePlan:
    """One model's adaptive schedule: the learned distribution and the scale that spends
    `polls_per_task` requests per task on it (as nearly as the clamps allow)."""

    distribution: DurationDistribution
    scale: float
    polls_per_task: float  # the mean requests per task this plan makes on its distribution
    min_interval_s: float
    max_interval_s: float

    def next_age(self, age: float, *, first: bool = False) -> float | None:
        """The age at which a task of age `age` is polled next (the first poll if `first`);
        None once `age` is past every duration seen: fall back to the fixed schedule."""
        return _next_age(
            self.distribution, self.scale, self.min_interval_s, self.max_interval_s, age, first
        )

    def ages(self) -> list[float]:
        """The poll ages of a task from age 0 up to the first one past the longest duration
        seen (for the simulation and for `show`)."""
        return _schedule(self.distribution, self.scale, self.min_interval_s, self.max_interval_s)


def _next_age(
    dist: DurationDistribution,
    scale: float,
    min_interval_s: float,
    max_interval_s: float,
    age: float,
    first: bool,
) -> float | None:
    if age > dist.max_s:
        return None
    step = FIRST_STEP if first else 1.0
    at = dist.root_hazard_inverse(dist.root_hazard_integral(age) + step / scale)
    # The smallest step that still moves: the inverse lands on `age` itself only through
    # rounding.
    return min(max(at, age + min_interval_s), age + max(max_interval_s, min_interval_s))


def _schedule(
    dist: DurationDistribution, scale: float, min_interval_s: float, max_interval_s: float
) -> list[float]:
    ages: list[float] = []
    age: float | None = 0.0
    first = True
    while age is not None and len(ages) < _MAX_POLLS:
        age = _next_age(dist, scale, min_interval_s, max_interval_s, age, first)
        first = False
        if age is not None:
            ages.append(age)
            if dist.survival(age) < _NEGLIGIBLE:
                break
    return ages


def expected_polls(dist: Survival, ages: Sequence[float]) -> float:
    """The mean requests per task a schedule polling at `ages` makes on `dist`: a task that
    takes D is polled at every age below D and once more at or after it (a task outliving
    the schedule counts one poll more: its tail belongs to the fixed fallback)."""
    return 1.0 + sum(dist.survival(a) for a in ages)


def fixed_ages(policy: PollingPolicy, horizon_s: float) -> list[float]:
    """The poll ages of the fixed schedule (without jitter) up to the first one at or past
    `horizon_s`, counting from registration."""
    ages = [policy.initial_delay_s]
    interval = policy.initial_interval_s
    while ages[-1] < horizon_s and len(ages) < _MAX_POLLS:
        ages.append(ages[-1] + max(interval, 1e-3))
        interval = min(interval * policy.backoff, policy.max_interval_s)
    return ages


def fixed_polls_per_task(dist: DurationDistribution, policy: PollingPolicy) -> float:
    """`polls_per_task: auto`: the mean requests per task the model's fixed settings would
    make on the learned distribution (tasks registered as they are created)."""
    return expected_polls(dist, fixed_ages(policy, dist.max_s))


def plan(
    dist: DurationDistribution,
    *,
    polls_per_task: float,
    min_interval_s: float,
    max_interval_s: float,
) -> AdaptivePlan:
    """The plan whose mean requests per task on `dist` come closest to `polls_per_task`.

    The mean grows with the scale, so the scale is found by bisection (in log scale). When the
    clamps make the target unreachable (too few requests to respect max_interval, or more than
    min_interval allows), the plan comes as close as they allow.
    """
    lo, hi = math.log(_SCALE_MIN), math.log(_SCALE_MAX)

    def polls(log_scale: float) -> float:
        scale = math.exp(log_scale)
        return expected_polls(dist, _schedule(dist, scale, min_interval_s, max_interval_s))

    if polls(lo) >= polls_per_task:
        hi = lo
    elif polls(hi) <= polls_per_task:
        lo = hi
    else:
        for _ in range(_SEARCH_STEPS):
            mid = (lo + hi) / 2
            got = polls(mid)
            if abs(got - polls_per_task) <= _CLOSE_ENOUGH * polls_per_task:
                lo = hi = mid
                break
            if got < polls_per_task:
                lo = mid
            else:
                hi = mid
    scale = math.exp(hi)
    return AdaptivePlan(
        distribution=dist,
        scale=scale,
        polls_per_task=polls(hi),
        min_interval_s=min_interval_s,
        max_interval_s=max_interval_s,
    )
