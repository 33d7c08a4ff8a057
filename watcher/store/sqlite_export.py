"""Reading a whole SQLite store out, for `apixo-watcher copy-store`: read-only, one snapshot.

`SqliteSnapshot` opens the file read-only (SQLite's `mode=ro`: nothing is ever written to it;
SQLite may create the empty `-wal`/`-shm` files beside a WAL database it reads) and reads it in
ONE read transaction, so every batch comes from the same consistent state even if something
writes to the file meanwhile: a state change always comes with its event and deliveries.
Batches are keyset pages of task ids; memory stays bounded whatever the store's size.

A daemon that runs on the file holds `<file>.lock` (flock, exclusive): the snapshot refuses to
read a store whose lock is held, and otherwise holds the lock shared while it reads, so no
daemon can start on the file until the copy is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from watcher.errors import StoreError, StoreInUse
from watcher.models import Task
from watcher.store.bulk import TASK_TABLES, DurationRecord, TaskRecords
from watcher.store.migrations import load_migrations
from watcher.store.sqlite_files import lock_path
from watcher.store.sqlite_rows import (
    SELECT_DELIVERIES,
    SELECT_MIRROR_FILES,
    SELECT_TASKS,
    attempt_from_row,
    delivery_from_row,
    event_from_row,
    mirror_file_from_row,
    state_change_from_row,
    task_from_row,
)

DEFAULT_BATCH: Final = 500  # tasks per batch; their children come with them
# SQLite builds before 3.32 allow 999 parameters in one statement.
_MAX_BATCH: Final = 900

# The children of the tasks named by the `{ids}` parameters, in the order TaskRecords wants.
_STATE_CHANGES: Final = (
    "SELECT task_id, from_state, to_state, at, reason, upstream_state FROM state_changes "
    "WHERE task_id IN ({ids}) ORDER BY task_id, id"
)
_EVENTS: Final = (
    "SELECT event_id, task_id, type, created_at, body FROM events "
    "WHERE task_id IN ({ids}) ORDER BY rowid"
)
_DELIVERIES: Final = SELECT_DELIVERIES + " WHERE task_id IN ({ids}) ORDER BY delivery_id"
_ATTEMPTS: Final = (
    "SELECT delivery_id, number, started_at, duration_ms, outcome, status_code, error, "
    "webhook_timestamp FROM attempts WHERE delivery_id IN "
    "(SELECT delivery_id FROM deliveries WHERE task_id IN ({ids})) ORDER BY delivery_id, id"
)
_MIRROR_HOLDS: Final = (
    "SELECT event_id, task_id, type, created_at, body FROM mirror_holds "
    "WHERE task_id IN ({ids}) ORDER BY task_id"
)
_MIRROR_FILES: Final = SELECT_MIRROR_FILES + " WHERE task_id IN ({ids}) ORDER BY task_id, position"
# Learned durations in the order they were recorded (which is what "most recent" means), each
# with which of the samples of its values it is.
_DURATIONS: Final = (
    "SELECT id, model, duration_s, finished_at, n FROM (SELECT id, model, duration_s, "
    "finished_at, ROW_NUMBER() OVER (PARTITION BY model, duration_s, finished_at ORDER BY id) "
    "AS n FROM task_durations) WHERE id > ? ORDER BY id LIMIT ?"
)


class SqliteSnapshot:
    """A SQLite store opened read-only and read as one snapshot. StoreError (a clear message)
    when the file is missing, is not an apixo-watcher store, has another schema version than
    this one's, or is in use by a running daemon."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        # True when the store's lock proved that no daemon runs on it (and holds it off).
        self.guarded = False
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "does not exist"
            raise StoreError(f"the SQLite store {self.path} {what}")
        self._take_lock()
        try:
            self._conn = self._open(busy_timeout_s)
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        lock = lock_path(self.path)
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # no daemon of this version ever ran on it, or none left a lock file
        except OSError as exc:
            raise StoreError(
                f"cannot open the lock file {lock} of the store: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreInUse(
                f"the SQLite store {self.path} is in use by a running apixo-watcher daemon "
                f"(it holds {lock}); stop it first (systemctl stop apixo-watcher), then copy"
            ) from None
        except OSError as exc:  # e.g. a filesystem without locks: we cannot tell
            os.close(fd)
            raise StoreError(f"cannot check the lock {lock} of the store: {exc.strerror}") from exc
        self._lock_fd = fd
        self.guarded = True

    def _open(self, busy_timeout_s: float) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=busy_timeout_s,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store {self.path}: {exc}") from exc
        try:
            conn.execute("BEGIN")  # the snapshot starts at the first read and lasts to close()
            self._check_schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
                raise StoreError(f"{self.path} is not an apixo-watcher store ({exc})") from exc
            raise StoreError(f"cannot read the SQLite store {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        missing = [t for t in TASK_TABLES if t not in tables]
        if version == 0 or missing:
            why = f"no {missing[0]} table" if missing else "schema version 0"
            raise StoreError(f"{self.path} is not an apixo-watcher store ({why})")
        latest = len(load_migrations("sqlite"))
        if version > latest:
            raise StoreError(
                f"the SQLite store {self.path} has schema version {version}, newer than this "
                f"apixo-watcher understands ({latest}): copy it with the newer apixo-watcher"
            )
        if version < latest:
            # Reading an older layout would need every old column list; migrating is one step.
            raise StoreError(
                f"the SQLite store {self.path} has schema version {version}, older than this "
                f"apixo-watcher's ({latest}): bring it up to date first with "
                f"`apixo-watcher migrate -c CONFIG`, CONFIG being the config whose store.path "
                f"is this file (the daemon does the same when it starts)"
            )

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the SQLite store is closed")
        return self._conn

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._live().execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the SQLite store {self.path}: {exc}") from exc

    def count_tasks(self) -> int:
        """How many tasks the snapshot holds."""
        return int(self._rows("SELECT count(*) FROM tasks")[0][0])

    def task_batches(self, size: int = DEFAULT_BATCH) -> Iterator[TaskRecords]:
        """Every task with everything recorded about it, `size` tasks at a time, in task_id
        order."""
        size = max(1, min(size, _MAX_BATCH))
        last: str | None = None
        while True:
            if last is None:
                rows = self._rows(f"{SELECT_TASKS} ORDER BY task_id LIMIT ?", (size,))
            else:
                rows = self._rows(
                    f"{SELECT_TASKS} WHERE task_id > ? ORDER BY task_id LIMIT ?", (last, size)
                )
            if not rows:
                return
            yield self._records([task_from_row(row) for row in rows])
            if len(rows) < size:
                return
            last = rows[-1][0]

    def _records(self, tasks: list[Task]) -> TaskRecords:
        ids = [task.task_id for task in tasks]
        marks = ", ".join("?" * len(ids))
        return TaskRecords(
            tasks=tasks,
            state_changes=[
                state_change_from_row(r) for r in self._rows(_STATE_CHANGES.format(ids=marks), ids)
            ],
            events=[event_from_row(r) for r in self._rows(_EVENTS.format(ids=marks), ids)],
            deliveries=[
                delivery_from_row(r) for r in self._rows(_DELIVERIES.format(ids=marks), ids)
            ],
            attempts=[attempt_from_row(r) for r in self._rows(_ATTEMPTS.format(ids=marks), ids)],
            mirror_holds=[
                event_from_row(r) for r in self._rows(_MIRROR_HOLDS.format(ids=marks), ids)
            ],
            mirror_files=[
                mirror_file_from_row(r) for r in self._rows(_MIRROR_FILES.format(ids=marks), ids)
            ],
        )

    def count_durations(self) -> int:
        """How many learned polling durations the snapshot holds."""
        return int(self._rows("SELECT count(*) FROM task_durations")[0][0])

    def duration_batches(self, size: int = DEFAULT_BATCH) -> Iterator[list[DurationRecord]]:
        """Every learned duration, `size` at a time, in the order they were recorded."""
        size = max(1, size)
        last = 0
        while True:
            rows = self._rows(_DURATIONS, (last, size))
            if not rows:
                return
            yield [DurationRecord((model, float(d), float(at)), n) for _, model, d, at, n in rows]
            if len(rows) < size:
                return
            last = rows[-1][0]

    def close(self) -> None:
        """End the snapshot, close the file and release the lock; idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()  # a read transaction: nothing to commit
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> SqliteSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
