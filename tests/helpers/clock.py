"""A real clock whose wall time a test can step, as NTP or `date -s` would.

libfaketime is not available here, and stepping the machine's clock needs root; the daemon reads
time only through its injected clock, so an in-process daemon given this one sees the step.
"""

from __future__ import annotations

import time

from watcher.clock import SystemClock


class SteppedClock(SystemClock):
    """The system's clocks, with `step_wall()` moving the wall clock alone."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def step_wall(self, seconds: float) -> None:
        self.offset_s += seconds

    def time(self) -> float:
        return time.time() + self.offset_s

    def now(self) -> float:
        return self.time()
