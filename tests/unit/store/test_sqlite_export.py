"""SqliteSnapshot: a SQLite store read out for copy-store, read-only, as one snapshot, in
batches; and the stores it refuses to read."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.sqlite_sample import T0, build_sample_store
from watcher.errors import StoreError
from watcher.models import TaskSource, TaskSpec
from watcher.store.bulk import DurationRecord
from watcher.store.migrations import load_migrations
from watcher.store.sqlite import SqliteStore
from watcher.store.sqlite_export import SqliteSnapshot
from watcher.store.sqlite_files import lock_path


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "watcher.db"
    build_sample_store(path).close()
    return path


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_batches_hold_every_task_with_everything_recorded_about_it(sample: Path) -> None:
    store = SqliteStore(sample)
    try:
        with SqliteSnapshot(sample) as snapshot:
            assert snapshot.count_tasks() == 5
            batches = list(snapshot.task_batches(3))
            durations = list(snapshot.duration_batches(3))

        assert [len(b.tasks) for b in batches] == [3, 2]
        tasks = [t for b in batches for t in b.tasks]
        assert [t.task_id for t in tasks] == sorted(t.task_id for t in tasks)
        for batch in batches:
            ids = {t.task_id for t in batch.tasks}
            for t in batch.tasks:
                assert t == store.get_task(t.task_id)
                assert [c for c in batch.state_changes if c.task_id == t.task_id] == (
                    store.state_changes(t.task_id)
                )
                # Recording order, which orders two events of one instant.
                assert [e for e in batch.events if e.task_id == t.task_id] == (
                    store.events_for_task(t.task_id)
                )
                assert [f for f in batch.mirror_files if f.task_id == t.task_id] == (
                    store.mirror_files(t.task_id)
                )
            assert list(batch.mirror_holds) == [
                h.event for h in store.held_mirrors() if h.event.task_id in ids
            ]
            assert {d.task_id for d in batch.deliveries} <= ids
            for d in batch.deliveries:
                assert d == store.get_delivery(d.delivery_id)
                assert [a for a in batch.attempts if a.delivery_id == d.delivery_id] == (
                    store.attempts(d.delivery_id)
                )
        all_attempts = sum(len(b.attempts) for b in batches)
        assert all_attempts == 6
        assert sum(len(b.mirror_holds) for b in batches) == 1
        # Recording order; equal samples numbered, so a copy can tell them apart.
        assert durations == [
            [
                DurationRecord(("sora-2", 95.5, T0 + 5), 1),
                DurationRecord(("nano-banana", 10.25, T0 + 10), 1),
                DurationRecord(("sora-2", 95.5, T0 + 5), 2),
            ],
            [DurationRecord(("sora-2", 120.0, T0 + 35), 1)],
        ]
    finally:
        store.close()


def test_reading_never_changes_the_file(sample: Path) -> None:
    before = _fingerprint(sample)

    with SqliteSnapshot(sample) as snapshot:
        list(snapshot.task_batches(1))

    assert _fingerprint(sample) == before
    assert not lock_path(sample).exists()  # nothing created that a daemon would own


def test_the_copy_reads_one_snapshot_while_the_file_changes(sample: Path) -> None:
    writer = SqliteStore(sample)
    try:
        with SqliteSnapshot(sample) as snapshot:
            batches = snapshot.task_batches(2)
            first = next(batches)
            writer.add_task(TaskSpec("zz-late", "m"), source=TaskSource.API, now=T0 + 99)
            rest = list(batches)
        ids = [t.task_id for b in (first, *rest) for t in b.tasks]
        assert len(ids) == 5
        assert "zz-late" not in ids
    finally:
        writer.close()


# -- refusals -----------------------------------------------------------------------------------
def _set_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


def test_a_missing_file_is_refused_and_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"watcher\.db does not exist"):
        SqliteSnapshot(tmp_path / "watcher.db")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not a database, just text " * 100, r"is not an apixo-watcher store \(file is not"),
        (None, r"is not an apixo-watcher store \(no tasks table\)"),
    ],
)
def test_a_file_that_is_not_a_store_is_refused(
    tmp_path: Path, content: bytes | None, match: str
) -> None:
    path = tmp_path / "other.db"
    if content is None:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes (x)")
        conn.close()
    else:
        path.write_bytes(content)
    with pytest.raises(StoreError, match=match):
        SqliteSnapshot(path)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is not a file"):
        SqliteSnapshot(tmp_path)


def test_a_newer_schema_is_refused(sample: Path) -> None:
    latest = len(load_migrations("sqlite"))
    _set_version(sample, latest + 1)
    with pytest.raises(StoreError, match=f"schema version {latest + 1}, newer than"):
        SqliteSnapshot(sample)


def test_an_older_schema_is_refused_with_the_way_to_migrate_it(sample: Path) -> None:
    _set_version(sample, 1)
    with pytest.raises(StoreError, match=r"older than .*`apixo-watcher migrate -c CONFIG`"):
        SqliteSnapshot(sample)


@pytest.fixture
def daemon_lock(sample: Path) -> Iterator[int]:
    """The lock a running daemon holds on the store (flock, exclusive)."""
    fd = os.open(lock_path(sample), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield fd
    os.close(fd)


def test_a_store_whose_lock_a_daemon_holds_is_refused(sample: Path, daemon_lock: int) -> None:
    with pytest.raises(StoreError, match=r"in use by a running apixo-watcher daemon.*stop it"):
        SqliteSnapshot(sample)


def test_a_free_lock_is_held_while_reading_so_no_daemon_starts(sample: Path) -> None:
    lock_path(sample).touch()
    with SqliteSnapshot(sample) as snapshot:
        assert snapshot.guarded
        fd = os.open(lock_path(sample), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # what a starting daemon would meet
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock_path(sample), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the copy ends
    finally:
        os.close(fd)


def test_without_a_lock_file_the_snapshot_is_not_guarded(tmp_path: Path, sample: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(sample, copy)
    with SqliteSnapshot(copy) as snapshot:
        assert not snapshot.guarded
