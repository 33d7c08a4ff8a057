"""Shared fixtures."""

from __future__ import annotations

import pytest

from watcher.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
