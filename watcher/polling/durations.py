"""How long one model's tasks take: a cheap empirical distribution learned from finished tasks.

Pure: built from a list of durations (seconds), never reads a clock or a store. The adaptive
schedule (watcher.polling.adaptive) asks it three things: the survival S(t) = P(duration > t),
the completion hazard h(t) = f(t) / S(t), and the integral of sqrt(h) (Keller's optimal
checking density is proportional to sqrt(h)) and its inverse.

The estimate is a histogram in log time (bins 5 % wide, so the schedule's resolution is 5 % of
a task's age at any scale, from 50 ms to 30 days), smoothed with a Gaussian kernel in log time
whose width follows Silverman's rule. Log time, because durations are positive and skewed
(lognormal-like); smoothing, because a raw histogram of 50 samples has empty bins, whose
zero hazard would put no poll there at all. Within each bin the hazard is taken as constant,
so S is exact at the bin edges and exponential between them, and the integral of sqrt(h) is
piecewise linear: every query is one binary search.

The quantiles shown to people (`quantile`) come from the samples themselves, not the smoothing.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Final

# The log-time grid shared by every distribution: edge k is at T_MIN_S * exp(k * BIN_WIDTH).
T_MIN_S: Final = 0.05
T_MAX_S: Final = 30 * 86_400.0
BIN_WIDTH: Final = 0.05  # in ln(seconds): each bin is ~5 % wide
_BINS: Final = math.ceil(math.log(T_MAX_S / T_MIN_S) / BIN_WIDTH)
_LOG_T_MIN: Final = math.log(T_MIN_S)
EDGES: Final = tuple(T_MIN_S * math.exp(k * BIN_WIDTH) for k in range(_BINS + 1))
# Kernel width: Silverman's rule of thumb, times this factor (below 1: a rule of thumb made for
# one Gaussian oversmooths a mix of two, e.g. images and videos under one model name), and
# never narrower than one bin.
BANDWIDTH_FACTOR: Final = 0.6
_KERNEL_SIGMAS: Final = 3.0
# The hazard of the last bin that holds any mass is finite: S there falls to this fraction.
_TAIL_FLOOR: Final = 1e-9


def _bin_of(duration_s: float) -> int:
    if duration_s <= T_MIN_S:
        return 0
    k = int((math.log(duration_s) - _LOG_T_MIN) / BIN_WIDTH)
    return min(k, _BINS - 1)


def _bandwidth_bins(logs: Sequence[float]) -> float:
    """The kernel's standard deviation in bins (Silverman: 0.9 min(sd, IQR/1.34) n^-1/5)."""
    n = len(logs)
    if n < 2:
        return 1.0
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    ordered = sorted(logs)
    iqr = _interpolated(ordered, 0.75) - _interpolated(ordered, 0.25)
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    width = BANDWIDTH_FACTOR * 0.9 * spread * math.pow(n, -0.2)
    return max(width / BIN_WIDTH, 1.0)


def _interpolated(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolating between the closest ranks."""
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class DurationDistribution:
    """The learned distribution of one model's task durations (immutable once built).

    `max_s` is the longest duration seen: past it the estimate knows nothing, and the adaptive
    schedule falls back to `fixed`.
    """

    __slots__ = ("_first", "_root_integral", "_root_rate", "_sorted", "_survival", "max_s")

    def __init__(self, durations: Iterable[float]) -> None:
        values = sorted(max(0.0, float(d)) for d in durations if math.isfinite(d))
        if not values:
            raise ValueError("a duration distribution needs at least one duration")
        self._sorted: tuple[float, ...] = tuple(values)
        self.max_s: float = values[-1]

        counts: dict[int, int] = {}
        logs = [math.log(max(v, T_MIN_S)) for v in values]
        for v in values:
            k = _bin_of(v)
            counts[k] = counts.get(k, 0) + 1
        sigma = _bandwidth_bins(logs)
        reach = math.ceil(_KERNEL_SIGMAS * sigma)
        kernel = [math.exp(-0.5 * (j / sigma) ** 2) for j in range(-reach, reach + 1)]
        norm = sum(kernel)
        first = max(0, min(counts) - reach)
        last = min(_BINS - 1, max(counts) + reach)
        mass = [0.0] * (last - first + 1)
        n = len(values)
        for k, count in counts.items():
            weight = count / (n * norm)
            for j, kv in enumerate(kernel):
                b = k - reach + j
                # Mass smoothed off either end of the grid stays in its end bin.
                b = min(max(b, first), last)
                mass[b - first] += weight * kv

        # Survival at each edge from `first` to `last + 1`, and per bin the constant hazard
        # and its square root times the bin's length (the integral of sqrt(h) across it).
        survival = [1.0]
        for m in mass:
            survival.append(max(survival[-1] - m, 0.0))
        survival[-1] = 0.0
        rates: list[float] = []
        integral = [0.0]
        for i in range(len(mass)):
            s0, s1 = survival[i], survival[i + 1]
            width = EDGES[first + i + 1] - EDGES[first + i]
            # Where no task lives this long there is nothing left to find: no hazard.
            rate = math.log(s0 / max(s1, s0 * _TAIL_FLOOR)) / width if s0 > 0.0 else 0.0
            rates.append(rate)
            integral.append(integral[-1] + math.sqrt(rate) * width)
        self._first = first
        self._survival = tuple(survival)
        self._root_rate = tuple(math.sqrt(r) for r in rates)
        self._root_integral = tuple(integral)

    # -- what the samples say ------------------------------------------------------------------
    @property
    def samples(self) -> int:
        """How many durations it was learned from."""
        return len(self._sorted)

    def quantile(self, q: float) -> float:
        """The q-quantile (0 <= q <= 1) of the durations seen, in seconds."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], not {q}")
        return _interpolated(self._sorted, q)

    # -- the smoothed estimate ------------------------------------------------------------------
    def _locate(self, t: float) -> int:
        """The index (relative to `_first`) of the bin holding `t`; -1 before the first
        edge, len(bins) at or after the last."""
        k = bisect.bisect_right(EDGES, t) - 1 - self._first
        return max(-1, min(k, len(self._root_rate)))

    def survival(self, t: float) -> float:
        """P(duration > t)."""
        i = self._locate(t)
        if i < 0:
            return 1.0
        if i >= len(self._root_rate):
            return 0.0
        rate = self._root_rate[i] ** 2
        return self._survival[i] * math.exp(-rate * (t - EDGES[self._first + i]))

    def hazard(self, t: float) -> float:
        """The completion rate at age `t` among tasks still running then (per second)."""
        i = self._locate(t)
        if i < 0 or i >= len(self._root_rate):
            return 0.0
        return self._root_rate[i] ** 2

    def age_at_survival(self, s: float) -> float:
        """The age by which all but a fraction `s` (0 < s <= 1) of tasks have finished."""
        survival = self._survival
        if s >= 1.0:
            return EDGES[self._first]
        if s <= 0.0 or s < survival[-2] * _TAIL_FLOOR:
            return EDGES[self._first + len(self._root_rate)]
        # survival falls along the edges: find the bin whose start is >= s > its end
        lo, hi = 0, len(self._root_rate) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if survival[mid] >= s:
                lo = mid
            else:
                hi = mid - 1
        rate = self._root_rate[lo] ** 2
        start = EDGES[self._first + lo]
        if rate <= 0.0 or survival[lo] <= 0.0:
            return start
        return start + math.log(survival[lo] / s) / rate

    def remaining_window(self, age: float, low: float, high: float) -> tuple[float, float] | None:
        """The `low` and `high` quantiles (e.g. 0.1, 0.9) of the duration of a task known to be
        running at `age`: the ages between which it will most likely finish. None past every
        duration seen."""
        alive = self.survival(age)
        if age > self.max_s or alive <= 0.0:
            return None
        start = max(age, self.age_at_survival(alive * (1.0 - low)))
        end = max(start, self.age_at_survival(alive * (1.0 - high)))
        return start, end

    def finish_probability(self, since: float, until: float) -> float:
        """P(a task still running at age `since` has finished by age `until`)."""
        if until <= since:
            return 0.0
        before = self.survival(since)
        if before <= 0.0:
            return 1.0  # older than any task seen: treat it as likely done
        return 1.0 - self.survival(until) / before

    def root_hazard_integral(self, t: float) -> float:
        """The integral of sqrt(h) from 0 to `t`."""
        i = self._locate(t)
        if i < 0:
            return 0.0
        if i >= len(self._root_rate):
            return self._root_integral[-1]
        return self._root_integral[i] + self._root_rate[i] * (t - EDGES[self._first + i])

    def root_hazard_inverse(self, value: float) -> float:
        """The earliest age at which the integral of sqrt(h) reaches `value`; infinity when
        it never does (past every duration the estimate knows of)."""
        integral = self._root_integral
        if value <= 0.0:
            return 0.0
        if value > integral[-1]:
            return math.inf
        i = bisect.bisect_left(integral, value) - 1  # integral[i] < value <= integral[i + 1]
        start = EDGES[self._first + i]
        rate = self._root_rate[i]
        return start + (value - integral[i]) / rate if rate > 0 else start
