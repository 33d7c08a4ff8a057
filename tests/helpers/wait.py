"""Waiting on a condition in tests: re-checked every 10 ms until a deadline, never a fixed
sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Return once `predicate()` holds; AssertionError after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)
