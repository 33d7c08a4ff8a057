"""The pure part of the daemon's health and watchdog decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config.settings import Config, parse_config
from watcher.daemon import changes_needing_restart, stalled_loops


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


BASE = "upstream:\n  api_key: k\n  timeout: 2s\nstore:\n  url: postgresql://w@db/w\n"


@pytest.mark.parametrize(
    ("extra", "keys"),
    [
        ("", []),
        ("  lease: 45s\n", ["store.lease"]),  # an instance renews with the lease it started with
        ("  retention: 1d\n", []),  # read at each purge: applied
        ("intake:\n  listen: 127.0.0.1:9999\n", ["intake.listen"]),
    ],
)
def test_a_reload_says_which_changes_need_a_restart(extra: str, keys: list[str]) -> None:
    def config(text: str) -> Config:
        return parse_config(text, source="c.yaml", base_dir=Path("/w"), environ={})

    assert changes_needing_restart(config(BASE), config(BASE + extra)) == keys
