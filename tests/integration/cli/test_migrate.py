"""`apixo-watcher migrate` on SQLite and on a real PostgreSQL, and `run` refusing store.url
(until the daemon runs on PostgreSQL), as an operator sees them: real subprocesses."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.helpers.daemon import write_config
from tests.helpers.postgres import fresh_schema
from tests.integration.cli.test_cli import cli
from watcher.config.dburl import url_passwords
from watcher.store.migrations import load_migrations

pytestmark = pytest.mark.slow

FAKE_PASSWORD = "pw-Hunter2-secret"


def _with_password(url: str) -> tuple[str, list[str]]:
    """`url` with a password in it (ignored by a trust-auth server), and the passwords that
    must not show."""
    if url_passwords(url):
        return url, url_passwords(url)
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':')[0] or 'postgres'}:{FAKE_PASSWORD}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), [FAKE_PASSWORD]


def _config(tmp_path: Path, url: str) -> Path:
    path = write_config(tmp_path, upstream_url="http://127.0.0.1:1/api/v1")
    text = path.read_text().replace(f"path: {tmp_path / 'watcher.db'}", f"url: '{url}'")
    path.write_text(text)
    return path


async def test_migrate_applies_the_postgres_schema_once(tmp_path: Path, postgres_url: str) -> None:
    with fresh_schema(postgres_url) as empty:
        url, secrets = _with_password(empty)
        config = _config(tmp_path, url)

        first = await cli("migrate", "-c", str(config))
        again = await cli("migrate", "-c", str(config))

        latest = len(load_migrations("postgres"))
        assert first.code == 0, first.err
        assert f"schema version 0 -> {latest} (applied 0001_initial.sql" in first.out
        assert again.code == 0, again.err
        assert f"schema version {latest}, up to date" in again.out
        for result in (first, again):
            assert all(s not in result.out + result.err for s in secrets)
        with psycopg.connect(empty) as conn:
            assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


async def test_migrate_says_why_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    config = _config(tmp_path, f"postgresql://watcher:{FAKE_PASSWORD}@127.0.0.1:1/watcher")

    result = await cli("migrate", "-c", str(config))

    assert result.code == 1
    assert "cannot connect to the store postgresql://watcher:***@127.0.0.1:1/watcher" in result.err
    assert FAKE_PASSWORD not in result.out + result.err


async def test_migrate_applies_the_sqlite_schema(tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream_url="http://127.0.0.1:1/api/v1")

    first = await cli("migrate", "-c", str(config))
    again = await cli("migrate", "-c", str(config))

    latest = len(load_migrations("sqlite"))
    assert first.code == 0, first.err
    assert first.out.startswith(f"store {tmp_path / 'watcher.db'}: schema version 0 -> {latest}")
    assert again.out.strip().endswith(f"schema version {latest}, up to date")
    assert (tmp_path / "watcher.db").exists()


async def test_run_and_check_config_with_a_postgres_url(tmp_path: Path) -> None:
    config = _config(tmp_path, f"postgresql://watcher:{FAKE_PASSWORD}@127.0.0.1:1/watcher")

    checked = await cli("check-config", "-c", str(config))
    run = await cli("run", "-c", str(config))

    assert checked.code == 0, checked.err
    assert "store postgresql://watcher:***@127.0.0.1:1/watcher" in checked.out
    # run takes the URL and says why it cannot start (the database is not there)
    assert run.code == 1
    assert "cannot connect to the store postgresql://watcher:***@127.0.0.1:1/watcher" in run.err
    for result in (checked, run):
        assert FAKE_PASSWORD not in result.out + result.err
