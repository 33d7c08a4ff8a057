"""The store contract (tests/unit/store/test_contract.py) on PostgresStore, a real server.

The contract's tests are imported and collected here again; the `store` fixture below replaces
the contract's own (memory and SQLite), so every test runs against PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers.postgres import truncate
from tests.unit.store.test_contract import *  # noqa: F403 - the contract's tests, run on PostgreSQL
from watcher.store.base import AsyncStore
from watcher.store.postgres import PostgresStore


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[AsyncStore]:
    s = await PostgresStore.open(postgres_url, pool_size=2)
    truncate(postgres_url)
    yield s
    await s.close()
