"""The clock seam's wait: woken by the event, or by time (real or manual)."""

from __future__ import annotations

import asyncio

from watcher.clock import ManualClock, SystemClock


async def test_system_clock_wait_event_returns_on_the_event_or_the_time_out() -> None:
    clock, event = SystemClock(), asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    await asyncio.wait_for(clock.wait_event(event, 60), 5)  # woken by the event, not 60 s
    event.clear()
    await asyncio.wait_for(clock.wait_event(event, 0.01), 5)  # woken by the time-out


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_manual_clock_wait_event_wakes_when_time_is_advanced() -> None:
    clock, event = ManualClock(), asyncio.Event()
    waiter = asyncio.ensure_future(clock.wait_event(event, 10))
    await settle()  # let the waiter register its sleep
    clock.advance(5)
    await settle()
    assert not waiter.done()
    clock.advance(5)
    await asyncio.wait_for(waiter, 1)
    waiter = asyncio.ensure_future(clock.wait_event(event, 10))
    event.set()
    await asyncio.wait_for(waiter, 1)
