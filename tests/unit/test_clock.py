"""The clock seam: waits woken by the event or by time, wall-clock steps, the Timeline."""

from __future__ import annotations

import asyncio

import pytest

from watcher.clock import ManualClock, SystemClock, Timeline


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


async def test_a_wall_clock_step_moves_no_sleeper() -> None:
    clock = ManualClock(start=1_700_000_000.0, monotonic_start=50.0)
    sleeper = asyncio.ensure_future(clock.sleep(10))
    await settle()
    clock.step_wall(86_400.0 * 365)  # a year ahead: no time has passed
    await settle()
    assert not sleeper.done()
    assert (clock.time(), clock.monotonic()) == (1_700_000_000.0 + 86_400.0 * 365, 50.0)
    clock.step_wall(-86_400.0 * 365 * 2)
    clock.advance(10)
    await asyncio.wait_for(sleeper, 1)
    assert clock.monotonic() == 60.0
    assert clock.now() == clock.time()


def test_the_timeline_converts_between_wall_and_monotonic_times() -> None:
    clock = ManualClock(start=1_700_000_000.0, monotonic_start=50.0)
    timeline = Timeline(clock)
    assert timeline.to_mono(1_700_000_010.0) == 60.0
    assert timeline.to_wall(40.0) == 1_699_999_990.0
    clock.advance(5)
    assert timeline.monotonic() == 55.0
    assert timeline.wall() == clock.time()
    assert timeline.check() is None


@pytest.mark.parametrize("step_s", [17.0, -17.0, 86_400.0 * 365 * 10, -3600.0])
def test_a_step_is_detected_once_and_re_anchors(step_s: float) -> None:
    clock = ManualClock(start=1_700_000_000.0)
    timeline = Timeline(clock)
    clock.advance(1)
    stored = timeline.wall() + 30  # e.g. a delivery due in 30 s, stored before the step
    due = timeline.to_mono(stored)
    clock.step_wall(step_s)
    clock.advance(1)
    # Until the step is noticed, times to store stay on the anchor the store uses.
    assert timeline.wall() == 1_700_000_002.0
    assert timeline.to_mono(stored) == due
    assert timeline.check() == pytest.approx(step_s)
    assert timeline.check() is None
    assert timeline.wall() == clock.time()
    # Re-anchored: the stored time, moved by the step (Store.shift_future_times), is the same
    # monotonic moment.
    assert timeline.to_mono(stored + step_s) == pytest.approx(due)


def test_drift_below_the_threshold_is_followed_silently() -> None:
    clock = ManualClock(start=1_700_000_000.0)
    timeline = Timeline(clock, step_threshold_s=2.0)
    for _ in range(10):  # 1.5 s of slewing in all, never more than 0.15 s between checks
        clock.step_wall(0.15)
        clock.advance(1)
        assert timeline.check() is None
    assert timeline.to_wall(clock.monotonic()) == pytest.approx(clock.time())
