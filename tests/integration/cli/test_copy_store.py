"""`apixo-watcher copy-store` as an operator runs it: real subprocesses, a real SQLite file,
a real PostgreSQL."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers.postgres import fresh_schema
from tests.helpers.sqlite_sample import build_sample_store, dump_sqlite
from tests.integration.cli.test_cli import cli
from tests.integration.cli.test_migrate import FAKE_PASSWORD, _config, _with_password
from tests.integration.store.test_copy import dump_postgres
from watcher.models import TaskSource, TaskSpec
from watcher.store.postgres import PostgresStore
from watcher.store.postgres_import import COPY_LOCK
from watcher.store.sqlite_files import lock_path

pytestmark = pytest.mark.slow


@pytest.fixture
def target(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url) as url:
        yield url


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The old daemon's store, in a directory of its own."""
    path = tmp_path / "old" / "watcher.db"
    path.parent.mkdir()
    build_sample_store(path).close()
    return path


async def test_copy_store_copies_and_a_second_run_changes_nothing(
    tmp_path: Path, source: Path, target: str
) -> None:
    url, secrets = _with_password(target)
    config = _config(tmp_path, url)

    first = await cli("copy-store", "--from", str(source), "-c", str(config))
    again = await cli("copy-store", "--from", str(source), "-c", str(config), "--json")

    assert first.code == 0, first.err
    (line,) = first.out.splitlines()
    assert line.startswith(f"copied {source} into postgresql://")
    assert ":***@" in line
    assert line.endswith(
        "tasks 5 (5 new), state_changes 5 (5 new), events 3 (3 new), deliveries 3 (3 new), "
        "attempts 6 (6 new), mirror_holds 1 (1 new), mirror_files 2 (2 new), "
        "task_durations 4 (4 new)"
    )
    assert "copy-store: tasks 5/5 (100%): tasks 5, state_changes 5, events 3" in first.err
    assert "copy-store: durations 4/4 (100%): " in first.err
    assert "warning: cannot tell whether a daemon is running" in first.err  # no lock file
    assert dump_postgres(target) == dump_sqlite(source)

    assert again.code == 0, again.err
    summary = again.json()
    assert summary["complete"] is True
    assert summary["conflicts"] == []
    assert {name: (t["read"], t["unchanged"]) for name, t in summary["tables"].items()} == {
        "tasks": (5, 5),
        "state_changes": (5, 5),
        "events": (3, 3),
        "deliveries": (3, 3),
        "attempts": (6, 6),
        "mirror_holds": (1, 1),
        "mirror_files": (2, 2),
        "task_durations": (4, 4),
    }
    for result in (first, again):
        assert all(s not in result.out + result.err for s in secrets)


async def test_copy_store_reports_a_conflict_and_copies_the_rest(
    tmp_path: Path, source: Path, target: str
) -> None:
    store = await PostgresStore.open(target)
    await store.add_task(TaskSpec("t-done", "sora-2"), source=TaskSource.API, now=1.0)
    await store.close()
    lock_path(source).touch()  # a daemon of this version ran here once, and stopped

    result = await cli("copy-store", "--from", str(source), "-c", str(_config(tmp_path, target)))

    assert result.code == 1
    assert (
        "apixo-watcher: conflict: task t-done is already in the target store with model "
        "'sora-2', not 'nano-banana': not copied"
    ) in result.err
    assert "warning" not in result.err  # the free lock proved no daemon runs
    assert "tasks 5 (4 new, 1 conflict)" in result.out
    assert result.out.rstrip().endswith("; 1 conflict not copied (listed on stderr)")


async def test_copy_store_refuses_clearly(tmp_path: Path, source: Path, target: str) -> None:
    def config(name: str, url: str = target) -> str:
        directory = tmp_path / name
        directory.mkdir()
        return str(_config(directory, url))

    not_a_store = tmp_path / "notes.db"
    conn = sqlite3.connect(not_a_store)
    conn.execute("CREATE TABLE notes (x)")
    conn.close()
    newer = tmp_path / "newer.db"
    newer.write_bytes(source.read_bytes())
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    unreachable = f"postgresql://watcher:{FAKE_PASSWORD}@127.0.0.1:1/watcher"
    before = hashlib.sha256(source.read_bytes()).hexdigest()

    fd = os.open(lock_path(source), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a daemon running on the source
    try:
        in_use = await cli("copy-store", "--from", str(source), "-c", config("a"))
    finally:
        os.close(fd)
    missing, other, too_new, down = await asyncio.gather(
        cli("copy-store", "--from", str(tmp_path / "nope.db"), "-c", config("b")),
        cli("copy-store", "--from", str(not_a_store), "-c", config("c")),
        cli("copy-store", "--from", str(newer), "-c", config("d")),
        cli("copy-store", "--from", str(source), "-c", config("e", unreachable)),
    )

    assert in_use.code == 75  # EX_TEMPFAIL, as a second daemon exits
    assert "is in use by a running apixo-watcher daemon" in in_use.err
    assert missing.code == 1
    assert f"the SQLite store {tmp_path / 'nope.db'} does not exist" in missing.err
    assert not (tmp_path / "nope.db").exists()
    assert other.code == 1
    assert f"{not_a_store} is not an apixo-watcher store (no tasks table)" in other.err
    assert too_new.code == 1
    assert "has schema version 99, newer than this apixo-watcher understands" in too_new.err
    assert down.code == 1
    assert "cannot connect to the store postgresql://watcher:***@127.0.0.1:1/watcher" in down.err
    assert FAKE_PASSWORD not in down.out + down.err
    for result in (in_use, missing, other, too_new, down):
        assert result.out == ""
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


async def test_copy_store_interrupted_with_ctrl_c_says_so_and_the_next_run_finishes(
    tmp_path: Path, source: Path, target: str
) -> None:
    config = str(_config(tmp_path, target))
    # Another copy-store run's batch holds the copy lock: ours waits inside its first batch.
    with psycopg.connect(target, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", (COPY_LOCK,))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watcher",
            "copy-store",
            "--from",
            str(source),
            "-c",
            config,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        seen = b""
        while b"copy-store: tasks 0/5" not in seen:
            seen += await asyncio.wait_for(proc.stderr.readline(), 20)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        other.execute("COMMIT")

    assert proc.returncode == 130
    assert out == b""
    assert "interrupted: what was copied stays; run copy-store again" in err.decode()
    assert "Traceback" not in err.decode()
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)

    again = await cli("copy-store", "--from", str(source), "-c", config)

    assert again.code == 0, again.err
    assert dump_postgres(target) == dump_sqlite(source)
