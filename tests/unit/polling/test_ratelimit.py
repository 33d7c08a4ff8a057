"""RequestBudget: the global request budget, on a manual clock (no real sleeping)."""

from __future__ import annotations

import asyncio
import bisect
import itertools

import pytest

from watcher.clock import ManualClock
from watcher.polling.ratelimit import DECREASE, PACING_SLACK_S, RECOVERY_S, RequestBudget


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def take_all(budget: RequestBudget) -> int:
    taken = 0
    while budget.try_acquire():
        taken += 1
        assert taken < 10_000
    return taken


def worst_window(starts: list[float], window: float = 1.0) -> int:
    """The most starts in any closed window [t, t + window] (the worst case is one that
    begins at a start)."""
    starts = sorted(starts)
    return max(
        (bisect.bisect_right(starts, t + window + 1e-9) - i for i, t in enumerate(starts)),
        default=0,
    )


def run_flat_out(
    budget: RequestBudget, clock: ManualClock, seconds: float, step: float | None = None
) -> list[float]:
    """Start a request whenever the budget allows, advancing the clock by `step`, or (None)
    exactly to the next moment the budget allows one."""
    starts: list[float] = []
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        while budget.try_acquire():
            starts.append(clock.monotonic())
        clock.advance(step if step is not None else max(budget.wait_time(), 1e-9))
    return starts


def test_a_fresh_budget_allows_one_second_of_requests_not_two(clock: ManualClock) -> None:
    # The regression: a token bucket that starts full and holds a second of tokens let 57
    # requests into one second at a budget of 30.
    budget = RequestBudget(30.0, clock)
    starts = run_flat_out(budget, clock, 5.0)
    assert worst_window(starts) <= 31
    assert len(starts) == pytest.approx(30 * 5, abs=31)


RATES = [0.5, 1.0, 2.5, 7.0, 20.0, 30.0, 100.0]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("step", [0.0007, 0.013, 0.25, 1.0])
def test_no_window_exceeds_the_budget_by_more_than_one(
    clock: ManualClock, rate: float, step: float
) -> None:
    budget = RequestBudget(rate, clock)
    starts = run_flat_out(budget, clock, 10.0, step)
    assert worst_window(starts) <= int(rate) + 1


@pytest.mark.parametrize("rate", RATES)
def test_the_long_run_average_is_the_budget(clock: ManualClock, rate: float) -> None:
    # (the window alone would round 2.5 up to 3)
    budget = RequestBudget(rate, clock)
    starts = run_flat_out(budget, clock, 20.0)
    assert worst_window(starts) <= int(rate) + 1
    assert len(starts) / 20.0 == pytest.approx(rate, rel=0.06, abs=0.1)


def test_requests_are_spaced_evenly(clock: ManualClock) -> None:
    # A burst of due polls is spread over the second, not sent at once: bursts merge into one
    # second as the upstream sees them when their latencies differ.
    budget = RequestBudget(10.0, clock)
    assert take_all(budget) == 1
    assert budget.wait_time() == pytest.approx(0.1 - PACING_SLACK_S)
    clock.advance(0.05)
    assert take_all(budget) == 0
    clock.advance(0.05)
    assert take_all(budget) == 1
    starts = run_flat_out(budget, clock, 3.0)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.1 - PACING_SLACK_S - 1e-9


def test_slack_lets_a_fast_budget_start_a_few_per_wake_up(clock: ManualClock) -> None:
    budget = RequestBudget(2000.0, clock)
    assert take_all(budget) == 5  # 2 ms of slack at 0.5 ms spacing: 1 + 4
    starts = run_flat_out(budget, clock, 2.0, 0.002)
    assert worst_window(starts) <= 2001
    assert len(starts) / 2.0 == pytest.approx(2000, rel=0.01)


def test_fractional_rate_spaces_requests(clock: ManualClock) -> None:
    budget = RequestBudget(0.5, clock)
    assert take_all(budget) == 1
    assert budget.wait_time() == pytest.approx(2.0 - PACING_SLACK_S)
    clock.advance(1.0)
    assert not budget.try_acquire()
    clock.advance(1.0)
    assert budget.try_acquire()


def test_zero_rate_means_no_limit(clock: ManualClock) -> None:
    budget = RequestBudget(0.0, clock)
    assert all(budget.try_acquire() for _ in range(1000))
    assert budget.rate_limited(clock.monotonic()) is None


def test_pause_holds_everything_back(clock: ManualClock) -> None:
    budget = RequestBudget(10.0, clock)
    budget.pause_until(clock.monotonic() + 3.0)
    assert not budget.try_acquire()
    assert budget.wait_time() == pytest.approx(3.0)
    budget.pause_until(clock.monotonic() + 1.0)  # an earlier end does not shorten the pause
    assert budget.paused_until == clock.monotonic() + 3.0
    clock.advance(3.0)
    assert take_all(budget) == 1


def test_pause_applies_without_a_rate(clock: ManualClock) -> None:
    budget = RequestBudget(0.0, clock)
    budget.pause_until(clock.monotonic() + 1.0)
    assert not budget.try_acquire()
    clock.advance(1.0)
    assert budget.try_acquire()


def test_update_changes_the_budget_at_once(clock: ManualClock) -> None:
    budget = RequestBudget(1.0, clock)
    assert take_all(budget) == 1
    assert budget.wait_time() > 0.9
    budget.update(100.0)  # the next slot moves to 1/100 s after now
    assert budget.wait_time() == pytest.approx(0.01 - PACING_SLACK_S)
    clock.advance(0.01)
    assert take_all(budget) == 1
    clock.advance(1.01)
    budget.update(2.0)  # the next slot moves to at most 1/2 s after now
    assert take_all(budget) == 1
    clock.advance(0.25)
    assert take_all(budget) == 0
    clock.advance(0.25)
    assert take_all(budget) == 1
    clock.advance(0.25)
    assert take_all(budget) == 0  # two starts in the last second already


def test_a_429_halves_the_rate_and_it_recovers_additively(clock: ManualClock) -> None:
    budget = RequestBudget(20.0, clock, recovery_s=RECOVERY_S)
    started = clock.monotonic()
    clock.advance(0.1)
    assert budget.rate_limited(started) == pytest.approx(20.0 * DECREASE)
    assert budget.effective_rate() == pytest.approx(10.0)
    # Answers to requests started before the decrease were sent at the old rate: no more cuts.
    assert budget.rate_limited(started) is None
    assert budget.effective_rate() == pytest.approx(10.0)
    clock.advance(RECOVERY_S / 4)
    assert budget.effective_rate() == pytest.approx(15.0)
    clock.advance(RECOVERY_S / 4)
    assert budget.effective_rate() == pytest.approx(20.0)
    clock.advance(RECOVERY_S)
    assert budget.effective_rate() == pytest.approx(20.0)  # never above the budget


def test_repeated_429s_lower_the_rate_to_a_floor(clock: ManualClock) -> None:
    budget = RequestBudget(64.0, clock)
    for _ in range(20):
        budget.rate_limited(clock.monotonic())
        clock.advance(0.001)
    assert budget.effective_rate() == pytest.approx(1.0, abs=0.01)  # 1/64 of the budget


def test_a_lowered_rate_is_what_the_window_allows(clock: ManualClock) -> None:
    budget = RequestBudget(20.0, clock, recovery_s=1e9)  # no recovery within the test
    budget.rate_limited(clock.monotonic())
    starts = run_flat_out(budget, clock, 5.0)
    assert worst_window(starts) <= 11
    assert len(starts) / 5.0 == pytest.approx(10.0, rel=0.1)


@pytest.mark.parametrize("step_s", [-86_400.0 * 365, -100.0, 100.0, 86_400.0 * 365])
def test_wall_clock_steps_change_nothing(clock: ManualClock, step_s: float) -> None:
    budget = RequestBudget(1.0, clock)
    assert budget.try_acquire()
    budget.pause_until(clock.monotonic() + 2.0)  # a 429's Retry-After
    clock.step_wall(step_s)
    assert not budget.try_acquire()
    assert budget.wait_time() == pytest.approx(2.0)  # a step neither ends nor stretches it
    clock.advance(2.0)
    assert budget.try_acquire()
    assert not budget.try_acquire()


async def test_acquire_waits_on_the_clock(clock: ManualClock) -> None:
    budget = RequestBudget(2.0, clock)
    await budget.acquire()
    done: list[int] = []

    async def worker(n: int) -> None:
        await budget.acquire()
        done.append(n)

    tasks = [asyncio.create_task(worker(n)) for n in range(3)]
    await settle()
    assert done == []
    clock.advance(0.51)
    await settle()
    assert done == [0]  # served in order, one per slot
    clock.advance(0.51)
    await settle()
    assert done == [0, 1]
    clock.advance(0.51)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert done == [0, 1, 2]


async def test_acquire_waits_for_a_pause(clock: ManualClock) -> None:
    budget = RequestBudget(100.0, clock)
    budget.pause_until(clock.monotonic() + 5.0)
    task = asyncio.create_task(budget.acquire())
    await settle()
    clock.advance(4.0)
    await settle()
    assert not task.done()
    clock.advance(1.0)
    await asyncio.wait_for(task, 1)
