"""The pure part of the daemon's health and watchdog decisions."""

from __future__ import annotations

import pytest

from watcher.daemon import stalled_loops


@pytest.mark.parametrize(
    ("progress", "now", "limit", "expected"),
    [
        ({"scheduler": 99.0, "deliverer": 99.5}, 100.0, 2.0, []),
        ({"scheduler": 90.0, "deliverer": 99.5}, 100.0, 2.0, [("scheduler", 10.0)]),
        (
            {"scheduler": 90.0, "deliverer": 80.0},
            100.0,
            5.0,
            [("scheduler", 10.0), ("deliverer", 20.0)],
        ),
        ({"scheduler": None, "deliverer": 99.0}, 100.0, 2.0, []),  # not started: caller decides
        ({"scheduler": 98.0}, 100.0, 2.0, []),  # exactly at the limit still counts as alive
    ],
)
def test_stalled_loops(
    progress: dict[str, float | None],
    now: float,
    limit: float,
    expected: list[tuple[str, float]],
) -> None:
    assert stalled_loops(progress, now, limit) == expected
