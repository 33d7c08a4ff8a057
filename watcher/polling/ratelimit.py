"""The global request budget: at most `max_requests_per_second` starts in any 1-second window.

Two rules, both on the clock's monotonic time:
- an even spacing: starts are at least 1/rate apart (a token bucket of capacity 1, in its
  "virtual scheduling" form, GCRA);
- a sliding window as the hard ceiling: no start while `cap` starts already lie within the
  last second (and a millisecond), `cap` being the rate rounded up. So no 1-second window, even
  a closed one, holds more than `cap` starts: the budget, plus one for a fractional budget.
  It binds only where the spacing alone would let one more in (a start at each end of a
  window, or right after the rate was raised).

Why an even spacing rather than letting a burst of a second's worth go at once: a burst
would serve a wave of due polls (tasks registered together, hints) sooner, but the budget is
counted where the requests arrive, and the latency of requests varies: the first burst after
a start travels over new connections, the next one over warm ones, and a second burst that
arrives 0.1 s "early" puts both in one second as the upstream sees it. Measured with a burst
limiter against the bench's fake upstream: 60 requests in one second at a budget of 30. An
even spacing moves by the same jitter only a request or two across a window's edge. The price
is the wait of a burst spread over a second (`make bench`, section `budget`, has both
figures).

A 429 lowers the effective rate multiplicatively (halved, at most once per round trip: only a
429 to a request started after the last decrease counts) and it recovers additively (the full
rate again `recovery_s` after a halving); `pause_until` holds every start back until a
Retry-After has passed. A rate of zero or less means no limit (pauses still apply).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Final

from watcher.clock import Clock

WINDOW_S: Final = 1.0
# A start waits until the one `cap` starts back is this much more than a second old, so that
# even a closed window [t, t + 1 s] holds at most `cap` starts.
GUARD_S: Final = 0.001
DECREASE: Final = 0.5  # the effective rate is multiplied by this on a 429
# The effective rate recovers by the configured rate times WINDOW_S / RECOVERY_S per second:
# from half the budget to all of it in RECOVERY_S / 2.
RECOVERY_S: Final = 30.0
# The effective rate never falls below this fraction of the budget (nor below MIN_RATE).
FLOOR_FRACTION: Final = 1 / 64
MIN_RATE: Final = 0.05
# A start may come this much before its even-spacing slot (the average is kept: the next slot
# still counts from the last one), so that at thousands of requests per second the loop
# starts a few per wake-up instead of waking once per request, and a loop that wakes a
# little late loses no slot.
PACING_SLACK_S: Final = 0.002
# Float error in the window and GCRA arithmetic: a start due within 1 us is due.
_EPSILON: Final = 1e-6


class RequestBudget:
    """The daemon's request budget (see the module docstring). Acquirers are served in order."""

    def __init__(self, rate_per_s: float, clock: Clock, *, recovery_s: float = RECOVERY_S) -> None:
        self._clock = clock
        self._recovery_s = recovery_s
        self._rate = rate_per_s
        self._starts: deque[float] = deque()
        self._next_due = -math.inf  # GCRA: the theoretical time of the next start
        self._paused_until = 0.0
        # AIMD: the effective rate was set to `_reduced_to` at `_reduced_at`, and grows back
        # linearly from there; a 429 to a request started before `_reduced_at` is old news.
        self._reduced_to = rate_per_s
        self._reduced_at = -math.inf
        self._lock = asyncio.Lock()

    # -- state ----------------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        """The configured budget (requests per second; zero or less: none)."""
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def effective_rate(self, now: float | None = None) -> float:
        """The rate allowed now: the budget, or less while recovering from a 429."""
        if self._rate <= 0 or self._reduced_at == -math.inf:
            return self._rate  # no limit, or never lowered (what the formula gives then)
        if now is None:
            now = self._clock.monotonic()
        recovered = self._reduced_to + self._rate * (now - self._reduced_at) / self._recovery_s
        return min(self._rate, recovered)

    def _cap(self, rate: float) -> int:
        return max(1, math.ceil(rate - _EPSILON))

    # -- changes --------------------------------------------------------------------------------
    def update(self, rate_per_s: float) -> None:
        """Apply a reloaded budget at once (a slow-down in progress keeps its proportion)."""
        now = self._clock.monotonic()
        if self._rate > 0 and rate_per_s > 0:
            fraction = self.effective_rate(now) / self._rate
            self._reduced_to = rate_per_s * fraction
            self._reduced_at = now if fraction < 1.0 else -math.inf
        else:
            self._reduced_to, self._reduced_at = rate_per_s, -math.inf
        self._rate = rate_per_s
        self._next_due = min(self._next_due, now + self._interval(rate_per_s))

    def pause_until(self, t: float) -> None:
        """Hold every request back until `t` (monotonic); an earlier `t` than the current
        pause changes nothing."""
        self._paused_until = max(self._paused_until, t)

    def rate_limited(self, started_at: float) -> float | None:
        """The upstream answered 429 to a request started at `started_at`: lower the rate,
        unless it was already lowered after that request started. The new effective rate, or
        None if nothing changed."""
        if self._rate <= 0 or started_at <= self._reduced_at:
            return None
        now = self._clock.monotonic()
        floor = max(self._rate * FLOOR_FRACTION, min(MIN_RATE, self._rate))
        self._reduced_to = max(floor, self.effective_rate(now) * DECREASE)
        self._reduced_at = now
        return self._reduced_to

    # -- acquiring ------------------------------------------------------------------------------
    @staticmethod
    def _interval(rate: float) -> float:
        return 1.0 / rate if rate > 0 else 0.0

    def wait_time(self) -> float:
        """Seconds until `try_acquire` can succeed (0.0: now)."""
        return self._wait_at(self._clock.monotonic())

    def _wait_at(self, now: float) -> float:
        if now < self._paused_until:
            return self._paused_until - now
        if self._rate <= 0:
            return 0.0
        return self._limit_wait(now, self.effective_rate(now))

    def _limit_wait(self, now: float, rate: float) -> float:
        """The wait the window and the spacing impose at the effective `rate` (> 0)."""
        cap = self._cap(rate)
        starts = self._starts
        while starts and starts[0] + WINDOW_S + GUARD_S <= now:
            starts.popleft()
        wait = 0.0
        if len(starts) >= cap:
            wait = starts[-cap] + WINDOW_S + GUARD_S - now
        wait = max(wait, self._next_due - PACING_SLACK_S - now)
        return wait if wait > _EPSILON else 0.0

    def try_acquire(self) -> bool:
        """Start a request now if the budget allows it."""
        # One clock read and one effective rate for the check and the start it records
        # (called once per poll): `_wait_at`, unrolled.
        now = self._clock.monotonic()
        if now < self._paused_until:
            return False
        if self._rate <= 0:
            return True
        rate = self.effective_rate(now)
        if self._limit_wait(now, rate) > 0:
            return False
        self._starts.append(now)
        self._next_due = max(self._next_due, now) + self._interval(rate)
        return True

    async def acquire(self) -> None:
        """Wait until the budget allows a start (and any pause has ended), then take it."""
        async with self._lock:
            while not self.try_acquire():
                await self._clock.sleep(self.wait_time())
