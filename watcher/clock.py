"""The one seam through which the daemon reads time.

Wall-clock time (`now`) is what the store records and what webhooks carry; monotonic time is
not used for scheduling because schedules must survive restarts. Tests pass a `ManualClock`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Reads the time and sleeps."""

    def now(self) -> float:
        """Unix time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (returns at once for zero or less)."""
        ...

    async def wait_event(self, event: asyncio.Event, seconds: float) -> None:
        """Wait until `event` is set or `seconds` pass, whichever comes first. The event is a
        wake-up flag: it may be set when this returns on time-out; callers clear it."""
        ...


class SystemClock:
    """The real clock."""

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
    """A clock that moves only when told to; sleepers wake when their time is reached."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
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
        """Move time forward and wake every sleeper whose time has come."""
        self._now += seconds
        due = [(t, f) for t, f in self._sleepers if t <= self._now]
        self._sleepers = [(t, f) for t, f in self._sleepers if t > self._now]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)
