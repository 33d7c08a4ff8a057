"""TokenBucket: the global request budget, on a manual clock (no real sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from watcher.clock import ManualClock
from watcher.polling.ratelimit import TokenBucket


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def take_all(bucket: TokenBucket) -> int:
    taken = 0
    while bucket.try_acquire():
        taken += 1
        assert taken < 10_000
    return taken


def test_burst_then_rate(clock: ManualClock) -> None:
    bucket = TokenBucket(10.0, 5, clock)
    assert take_all(bucket) == 5
    assert bucket.wait_time() == pytest.approx(0.1)
    clock.advance(0.1)
    assert take_all(bucket) == 1
    clock.advance(1.0)
    assert take_all(bucket) == 5  # saving up stops at the burst


def test_long_run_average(clock: ManualClock) -> None:
    bucket = TokenBucket(20.0, 20, clock)
    taken = take_all(bucket)
    for _ in range(100):  # ten seconds in 0.1 s steps
        clock.advance(0.1)
        taken += take_all(bucket)
    assert taken == pytest.approx(20 + 20 * 10, abs=1)


def test_fractional_rate(clock: ManualClock) -> None:
    bucket = TokenBucket(0.5, 1, clock)
    assert take_all(bucket) == 1
    assert bucket.wait_time() == pytest.approx(2.0)
    clock.advance(1.0)
    assert not bucket.try_acquire()
    clock.advance(1.0)
    assert bucket.try_acquire()


def test_zero_rate_means_no_limit(clock: ManualClock) -> None:
    bucket = TokenBucket(0.0, 1, clock)
    assert all(bucket.try_acquire() for _ in range(1000))


def test_pause_holds_everything_back(clock: ManualClock) -> None:
    bucket = TokenBucket(10.0, 5, clock)
    bucket.pause_until(clock.monotonic() + 3.0)
    assert not bucket.try_acquire()
    assert bucket.wait_time() == pytest.approx(3.0)
    bucket.pause_until(clock.monotonic() + 1.0)  # an earlier end does not shorten the pause
    assert bucket.paused_until == clock.monotonic() + 3.0
    clock.advance(3.0)
    assert take_all(bucket) == 5


def test_pause_applies_without_a_rate(clock: ManualClock) -> None:
    bucket = TokenBucket(0.0, 1, clock)
    bucket.pause_until(clock.monotonic() + 1.0)
    assert not bucket.try_acquire()
    clock.advance(1.0)
    assert bucket.try_acquire()


def test_update_changes_the_budget(clock: ManualClock) -> None:
    bucket = TokenBucket(1.0, 10, clock)
    assert take_all(bucket) == 10
    bucket.update(100.0, 2)
    clock.advance(1.0)
    assert take_all(bucket) == 2
    clock.advance(0.01)
    assert take_all(bucket) == 1


@pytest.mark.parametrize("step_s", [-86_400.0 * 365, -100.0, 100.0, 86_400.0 * 365])
def test_wall_clock_steps_change_nothing(clock: ManualClock, step_s: float) -> None:
    bucket = TokenBucket(1.0, 1, clock)
    assert bucket.try_acquire()
    bucket.pause_until(clock.monotonic() + 2.0)  # a 429's Retry-After
    clock.step_wall(step_s)
    assert not bucket.try_acquire()
    assert bucket.wait_time() == pytest.approx(2.0)  # a step neither ends nor stretches it
    clock.advance(2.0)
    assert bucket.try_acquire()  # and it credits no tokens
    assert not bucket.try_acquire()


async def test_acquire_waits_on_the_clock(clock: ManualClock) -> None:
    bucket = TokenBucket(2.0, 1, clock)
    await bucket.acquire()
    done: list[int] = []

    async def worker(n: int) -> None:
        await bucket.acquire()
        done.append(n)

    tasks = [asyncio.create_task(worker(n)) for n in range(3)]
    await settle()
    assert done == []
    clock.advance(0.5)
    await settle()
    assert done == [0]  # served in order, one per token
    clock.advance(0.5)
    await settle()
    assert done == [0, 1]
    clock.advance(0.5)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert done == [0, 1, 2]


async def test_acquire_waits_for_a_pause(clock: ManualClock) -> None:
    bucket = TokenBucket(100.0, 10, clock)
    bucket.pause_until(clock.monotonic() + 5.0)
    task = asyncio.create_task(bucket.acquire())
    await settle()
    clock.advance(4.0)
    await settle()
    assert not task.done()
    clock.advance(1.0)
    await asyncio.wait_for(task, 1)
