"""The request budget, simulated (no network): how long due polls wait for it, and the worst
1-second window, for the daemon's limiter (watcher.polling.ratelimit.RequestBudget: an even
spacing of 1/rate under a sliding-window ceiling) against a sliding window alone (a burst of
up to a second's worth goes at once), which meets the same ceiling as sent.

Due polls arrive in bursts (tasks registered together, a wave of hints) at random times and
are served in order; the wait of a poll before the budget lets it start is detection delay
added to its task. The worst window is counted as sent and as the upstream would see it with
a latency that varies by up to JITTER_S per request.
"""

from __future__ import annotations

import bisect
import random
from typing import Any

from watcher.polling.ratelimit import RequestBudget

RATE = 20.0
SECONDS = 600.0
JITTER_S = 0.05
CASES = (  # (polls per burst, load: arriving polls / budget)
    (1, 0.5),
    (5, 0.5),
    (20, 0.5),
    (5, 0.9),
    (20, 0.9),
)


class _Clock:
    """Just enough of watcher.clock.Clock for the limiter: a monotonic time set by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return self.t

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never awaited here
        raise NotImplementedError

    async def wait_event(self, event: Any, seconds: float) -> None:  # pragma: no cover
        raise NotImplementedError


def _arrivals(burst: int, load: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    rate = load * RATE / burst  # bursts per second
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= SECONDS:
            return out
        out.extend([t] * burst)


def _window(starts: list[float]) -> int:
    return max(bisect.bisect_right(starts, t + 1.0) - i for i, t in enumerate(starts))


def _sliding(arrivals: list[float]) -> list[float]:
    clock = _Clock()
    budget = RequestBudget(RATE, clock)
    starts = []
    for at in arrivals:
        clock.t = max(clock.t, at)
        while not budget.try_acquire():
            clock.t += budget.wait_time()
        starts.append(clock.t)
    return starts


def _burst(arrivals: list[float]) -> list[float]:
    """A sliding window alone: a start whenever fewer than RATE starts lie in the last second."""
    cap = int(RATE)
    starts: list[float] = []
    for at in arrivals:
        start = at
        if len(starts) >= cap:
            start = max(start, starts[-cap] + 1.001)
        starts.append(start)
    return starts


def run(seed: int = 7) -> dict[str, Any]:
    rows = []
    jitter = random.Random(seed)
    for i, (burst, load) in enumerate(CASES):
        arrivals = _arrivals(burst, load, seed + i)
        row: dict[str, Any] = {"burst": burst, "load": load, "polls": len(arrivals)}
        for name, limiter in (("daemon", _sliding), ("burst_window", _burst)):
            starts = limiter(arrivals)
            waits = [s - a for s, a in zip(starts, arrivals, strict=True)]
            seen = sorted(s + jitter.uniform(0.0, JITTER_S) for s in starts)
            row[f"{name}_mean_wait_ms"] = round(1000 * sum(waits) / len(waits), 1)
            row[f"{name}_worst_1s_window"] = _window(starts)
            row[f"{name}_worst_1s_window_seen"] = _window(seen)
        rows.append(row)
    worst = max(r["daemon_worst_1s_window"] for r in rows)
    return {
        "rate": RATE,
        "jitter_s": JITTER_S,
        "cases": rows,
        "worst_1s_window": worst,
        "target": f"worst 1-second window <= {int(RATE) + 1}",
        "met": worst <= int(RATE) + 1,
    }
