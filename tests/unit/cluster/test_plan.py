"""The cluster's pure rules: heartbeat timing, the lease an instance may trust, shares."""

from __future__ import annotations

import pytest

from watcher.cluster import plan
from watcher.config.settings import LEASE_PER_UPSTREAM_TIMEOUT


@pytest.mark.parametrize(("lease_s", "interval_s"), [(30.0, 10.0), (3.0, 1.0), (0.09, 0.05)])
def test_a_heartbeat_comes_every_third_of_the_lease(lease_s: float, interval_s: float) -> None:
    assert plan.heartbeat_interval(lease_s) == pytest.approx(interval_s)


def test_polls_stop_after_two_missed_heartbeats_well_before_the_lease_ends() -> None:
    sent_at, lease = 100.0, 30.0
    until = plan.trusted_until(sent_at, lease)
    assert until == pytest.approx(120.0)
    # Two heartbeats (at +10 s, +20 s) may fail before it; a third of the lease is left for
    # polls in flight before another instance may take the tasks over.
    assert until >= sent_at + 2 * plan.heartbeat_interval(lease)
    assert sent_at + lease - until == pytest.approx(lease / 3)


@pytest.mark.parametrize(("live", "share"), [(0, 1.0), (1, 1.0), (2, 0.5), (4, 0.25)])
def test_each_live_instance_takes_an_equal_share_of_the_budget(live: int, share: float) -> None:
    assert plan.share(live) == share


@pytest.mark.parametrize(
    ("active", "live", "target"), [(0, 3, 0), (3000, 3, 1000), (10, 3, 4), (5, 1, 5), (7, 0, 7)]
)
def test_the_target_covers_every_active_task(active: int, live: int, target: int) -> None:
    assert plan.task_target(active, live) == target
    assert plan.task_target(active, live) * max(1, live) >= active


@pytest.mark.parametrize(
    ("held", "target", "expected"),
    [
        (0, 1000, (1000, 0)),  # a newcomer claims its share
        (999, 1000, (1, 0)),
        (1000, 1000, (0, 0)),
        (1050, 1000, (0, 0)),  # within the slack (5 %): nothing moves
        (1051, 1000, (0, 51)),  # beyond it: the excess goes
        (3000, 1000, (0, 2000)),  # one instance had everything: two thirds go
        (2, 0, (0, 0)),  # a small count never moves for the slack's sake
        (3, 0, (0, 3)),
    ],
)
def test_rebalance_claims_what_is_missing_and_lets_the_excess_go(
    held: int, target: int, expected: tuple[int, int]
) -> None:
    assert plan.rebalance(held, target) == expected


def test_the_takeover_is_looked_at_right_after_another_lease_ends() -> None:
    assert plan.takeover_wait(1000.0, None) is None
    assert plan.takeover_wait(1000.0, 1012.0) == pytest.approx(12.0 + plan.TAKEOVER_MARGIN_S)
    assert plan.takeover_wait(1000.0, 990.0) == pytest.approx(plan.TAKEOVER_MARGIN_S)


def test_the_config_asks_for_the_lease_the_fence_needs() -> None:
    # A poll started just before the fence may run for upstream.timeout: it must end within
    # the rest of the lease, which store.lease >= LEASE_PER_UPSTREAM_TIMEOUT x timeout ensures.
    last_third = 1 - plan.FENCE_FRACTION
    assert last_third * LEASE_PER_UPSTREAM_TIMEOUT == pytest.approx(1.0)
