"""The global request budget: a token bucket on the injected monotonic clock, with a pause for
429s."""

from __future__ import annotations

import asyncio

from watcher.clock import Clock


class TokenBucket:
    """At most `rate_per_s` requests per second on average, `burst` at once.

    `pause_until(t)` holds every acquirer back until `t` (the upstream asked us to slow down).
    A rate of zero or less means no limit (pauses still apply). Acquirers are served in order.
    """

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._clock = clock
        self._rate = rate_per_s
        self._burst = max(1, burst)
        self._tokens = float(self._burst)
        self._updated = clock.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def update(self, rate_per_s: float, burst: int) -> None:
        """Apply a reloaded budget; tokens saved up so far are kept, up to the new burst."""
        self._refill(self._clock.monotonic())
        self._rate = rate_per_s
        self._burst = max(1, burst)
        self._tokens = min(self._tokens, float(self._burst))

    def pause_until(self, t: float) -> None:
        """Hold every request back until `t` (on the clock's monotonic time); an earlier `t`
        than the current pause changes nothing."""
        self._paused_until = max(self._paused_until, t)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        if self._rate > 0:
            self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)

    def wait_time(self) -> float:
        """Seconds until `try_acquire` can succeed (0.0: now)."""
        now = self._clock.monotonic()
        if now < self._paused_until:
            return self._paused_until - now
        if self._rate <= 0:
            return 0.0
        self._refill(now)
        wait = (1.0 - self._tokens) / self._rate
        # Float error in the refill arithmetic: a token due within 1 us is due.
        return wait if wait > 1e-6 else 0.0

    def try_acquire(self) -> bool:
        """Take a token if one is available now."""
        if self.wait_time() > 0:
            return False
        if self._rate > 0:
            self._tokens -= 1.0
        return True

    async def acquire(self) -> None:
        """Wait for a token (and for any pause to end), then take it."""
        async with self._lock:
            while not self.try_acquire():
                await self._clock.sleep(self.wait_time())
