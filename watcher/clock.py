"""The one seam through which the daemon reads time, and the link between its two clocks.

The monotonic clock runs every schedule: poll times, deadlines, delivery due times, the request
budget, the watchdog. It never jumps. The wall clock (Unix time) is what the store records, what
people read and what webhooks carry; it can be stepped at any moment (NTP syncing a machine that
booted with a wrong clock, `date -s`, a VM restored from a snapshot, waking from suspend), so no
schedule may depend on it.

`Timeline` links the two: wall = monotonic + offset, the offset taken at start. Stored wall times
are converted to monotonic ones where they are loaded, and monotonic ones to wall times where
they are stored or shown. `Timeline.check()` notices a step (the offset moved by more than
`STEP_THRESHOLD_S` since the last check) and re-anchors; whoever calls it (the daemon) rewrites
the stored times still to come by the step, so they keep meaning the same moment. Tests pass a
`ManualClock`, which can step its wall clock without moving its monotonic one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, Protocol

# A change of (wall - monotonic) larger than this between two checks is a step of the wall
# clock; smaller changes are drift (NTP slewing) and are followed silently.
STEP_THRESHOLD_S: Final = 2.0


class Clock(Protocol):
    """Reads the time and sleeps."""

    def time(self) -> float:
        """Wall-clock time: Unix seconds. May jump; never schedule on it."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (its zero is arbitrary)."""
        ...

    def now(self) -> float:
        """The same as `time()` (the name this seam had before it had two clocks)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of monotonic time (returns at once for zero or less)."""
        ...

    async def wait_event(self, event: asyncio.Event, seconds: float) -> None:
        """Wait until `event` is set or `seconds` pass, whichever comes first. The event is a
        wake-up flag: it may be set when this returns on time-out; callers clear it."""
        ...


class SystemClock:
    """The real clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait_event(self, event: asyncio.Event, seconds: float) -> None:
        # A timer handle that sets the event is much cheaper than racing two tasks, and the
        # daemon's loops wake through here once per finished poll or attempt. The event is
        # their wake-up flag, which they clear after waiting, so setting it on time-out is fine.
        timer = asyncio.get_running_loop().call_later(max(0.0, seconds), event.set)
        try:
            await event.wait()
        finally:
            timer.cancel()


class ManualClock:
    """Clocks that move only when told to; sleepers wake when their (monotonic) time is reached.

    `advance()` lets time pass (both clocks move); `step_wall()` steps the wall clock alone, as
    NTP or an operator would.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, monotonic_start: float = 0.0) -> None:
        self._wall = start
        self._mono = monotonic_start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> float:
        return self._wall

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._mono + seconds, fut))
        await fut

    async def wait_event(self, event: asyncio.Event, seconds: float) -> None:
        if event.is_set():
            return
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        waker = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass and wake every sleeper whose time has come."""
        self._wall += seconds
        self._mono += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self._mono]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._mono]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock by `seconds` (negative: back); no time passes, nobody wakes."""
        self._wall += seconds


class Timeline:
    """Monotonic time for schedules, wall time for storage, and the conversion between them.

    One instance is shared by everything that converts (the daemon makes it at start, which
    anchors it), so a stored wall time and an in-memory monotonic time always agree.
    """

    def __init__(self, clock: Clock, *, step_threshold_s: float = STEP_THRESHOLD_S) -> None:
        self._clock = clock
        self._threshold = step_threshold_s
        self._offset = clock.time() - clock.monotonic()  # wall = monotonic + offset

    def monotonic(self) -> float:
        """Now, on the monotonic clock."""
        return self._clock.monotonic()

    def wall(self) -> float:
        """Now as a wall time to store: the real wall time, except between a step and its
        detection by `check()`, when it is the time on the anchor the stored times still use
        (so nothing written in that window is shifted twice)."""
        wall, mono = self._clock.time(), self._clock.monotonic()
        if abs(wall - mono - self._offset) > self._threshold:
            return mono + self._offset
        return wall

    def to_mono(self, wall: float) -> float:
        """The monotonic time of a stored wall time."""
        return wall - self._offset

    def to_wall(self, mono: float) -> float:
        """The wall time of a monotonic time, to store or show."""
        return mono + self._offset

    def check(self) -> float | None:
        """Re-anchor on the wall clock; the size of the step (seconds, negative: back) if the
        wall clock was stepped since the last check, else None."""
        offset = self._clock.time() - self._clock.monotonic()
        moved, self._offset = offset - self._offset, offset
        return moved if abs(moved) > self._threshold else None
