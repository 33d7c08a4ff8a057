"""A real PostgreSQL for the tests, on every machine.

The server is, first that works:
1. `TEST_DATABASE_URL`: a postgresql:// URL whose user may create databases;
2. the machine's PostgreSQL at 127.0.0.1:5432 (user `postgres`, trust auth, as on developers'
   and CI machines; `.ci/run` starts it when it is installed but stopped), when it answers.
   `TEST_POSTGRES_PROBE=HOST:PORT` points this probe elsewhere, e.g. at a closed port to make a
   run take the next way;
3. a throw-away server from the `pgserver` package (a wheel bundling PostgreSQL), started once
   per test session in a temporary directory, then stopped and deleted. PostgreSQL refuses to
   run as root; as root, pgserver runs it as a system user `pgserver` that it creates
   (useradd). It listens on a unix socket only.

Every test module gets a fresh database `apixo_test_<random>`, dropped after the module.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

DEFAULT_PROBE = "127.0.0.1:5432"
TABLES = (
    "attempts",
    "deliveries",
    "events",
    "mirror_files",
    "mirror_holds",
    "state_changes",
    "tasks",
    "heartbeat",
    "instances",
    "task_durations",
)


def with_database(url: str, name: str) -> str:
    """`url` naming the database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


@dataclass
class PostgresServer:
    """A server the tests may create databases on: `admin_url` connects as a superuser (or a
    user with CREATEDB) to a database that is never dropped."""

    admin_url: str
    source: str  # "TEST_DATABASE_URL", "local" or "pgserver"
    _stop: Any = field(default=None, repr=False)

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"apixo_test_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # FORCE: a test that failed may have left a connection open.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def find_server() -> PostgresServer:
    """The server for this test session (see the module docstring)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return PostgresServer(url, "TEST_DATABASE_URL")
    probe = os.environ.get("TEST_POSTGRES_PROBE") or DEFAULT_PROBE
    local = f"postgresql://postgres@{probe}/postgres"
    if _answers(local):
        return PostgresServer(local, "local")
    return _start_pgserver()


def _start_pgserver() -> PostgresServer:
    with warnings.catch_warnings():
        # platformdirs warns on import when XDG_RUNTIME_DIR is unset (as under CI and root).
        warnings.simplefilter("ignore")
        import pgserver  # type: ignore[import-untyped,unused-ignore]

    top = Path(tempfile.mkdtemp(prefix="apixo-watcher-pg-"))
    server = pgserver.get_server(top / "data", cleanup_mode="delete")

    def stop() -> None:
        with contextlib.suppress(Exception):
            server.cleanup()
        shutil.rmtree(top, ignore_errors=True)

    return PostgresServer(server.get_uri(), "pgserver", stop)


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A URL of the database at `url` whose search_path is a new, empty schema, dropped after:
    an empty store without the cost of a database (DROP DATABASE waits for a checkpoint)."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, f"options=-csearch_path%3D{name}") if q)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def truncate(url: str) -> None:
    """Empty every table of the store (the schema stays). DELETE, children first: on a few
    rows it takes milliseconds where TRUNCATE takes a third of a second."""
    with psycopg.connect(url) as conn:
        for table in TABLES:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))


# -- fixtures (imported by tests/integration/conftest.py) --------------------------------------
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = find_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for this test module, dropped after it."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for this test alone, for daemons as subprocesses: dropped WITH (FORCE)
    after it (ending what a killed daemon left), open to connections again first (an outage
    test closes it)."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            name = sql.Identifier(urlsplit(url).path.lstrip("/"))
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
        postgres_server.drop_database(url)
