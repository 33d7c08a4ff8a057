"""The real store: one SQLite file in WAL mode, schema versioned by `PRAGMA user_version`.

Every Store method is exactly one transaction: writes run inside `BEGIN IMMEDIATE ... COMMIT`
(the connection is in autocommit mode, `isolation_level=None`, so nothing is implicit), reads
are single statements. A write that meets "database is locked" (another process holds the write
lock longer than the busy timeout) is retried a few times with a short backoff, then raised as
StoreError like every other database error.

The SQL text and the row <-> record conversions live in watcher/store/sqlite_rows.py; the lock
and the file identity checks in watcher/store/sqlite_files.py; this module holds the connection,
its transactions and retries, and the Store methods.

The daemon opens its store `exclusive`: it holds `<file>.lock` for the life of the process, so a
second daemon on the same file refuses to start (StoreInUse) instead of polling and delivering
everything a second time. Other connections (tests, `sqlite3 .backup`) need no lock.

A database deleted or replaced under the running store (an `rm`, a restore over it) would keep
taking commits into a file nobody can open again. So the identity (device, inode) of the
database, its WAL, its shared-memory file and the lock file is checked after every commit,
before the caller acknowledges anything, and by `check_files()` (the daemon calls it every
second); the shared-memory file's size before every use (see StoreFiles: SIGBUS). A stat(2)
per file, a few microseconds in all; a commit takes ~200. Once lost, the store stays lost
(StoreLost).

The schema is versioned (watcher/store/migrations/sqlite): each missing migration is applied in
its own transaction on open; a database newer than the code is refused rather than misread.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import compress, repeat
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from watcher.errors import (
    DeliveryNotFound,
    StoreError,
    TaskConflict,
    TaskFinished,
    TaskNotFound,
)
from watcher.models import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    MirrorFile,
    MirrorHold,
    StateChange,
    Task,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.base import (
    DurationSample,
    SpecColumns,
    apply_transition_to,
    endpoints_json,
    metadata_json,
    new_task,
)
from watcher.store.migrations import Migration, check_numbering, load_migrations
from watcher.store.paging import clamp_limit, decode_cursor, encode_cursor
from watcher.store.sqlite_files import StoreFiles, StoreLock, read_only_message
from watcher.store.sqlite_rows import (
    COUNT_RETRYING_DELIVERIES,
    DELETE_MIRROR_HOLD,
    DELIVERY_BY_ID,
    DELIVERY_EXISTS,
    EVENT_BY_ID,
    EVENTS_OF_TASK,
    EXTEND_DEADLINES,
    FIRST_ACTIVE_TASKS,
    INSERT_ATTEMPT,
    INSERT_DELIVERY,
    INSERT_EVENT,
    INSERT_MIRROR_FILE,
    INSERT_MIRROR_HOLD,
    INSERT_STATE_CHANGE,
    INSERT_TASK,
    MIRROR_FILES_OF_TASK,
    NEXT_ACTIVE_TASKS,
    PURGE_CHILDREN,
    RECENT_DURATIONS,
    RETRYING_CONDITION,
    SELECT_ATTEMPTS,
    SELECT_DELIVERIES,
    SELECT_MIRROR_HOLDS,
    SELECT_STATE_CHANGES,
    SELECT_TASKS,
    SHIFT_DEADLINES,
    SHIFT_NEXT_ATTEMPTS,
    STREAM_PENDING_DELIVERIES,
    TASK_BY_ID,
    TRIM_DURATIONS,
    UPDATE_DELIVERY_PROGRESS,
    UPDATE_MIRROR_FILE,
    UPDATE_TASK_STATE,
    attempt_from_row,
    attempt_params,
    delivery_from_row,
    delivery_params,
    delivery_progress_params,
    event_from_row,
    event_params,
    hold_params,
    insert_tasks,
    mirror_file_from_row,
    mirror_file_params,
    mirror_progress_params,
    state_change_from_row,
    task_from_row,
    task_state_params,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Rows per query when streaming active tasks / pending deliveries: bounded memory, and no
# statement stays open between batches (an open read would pin a WAL snapshot and could see
# the caller's own writes made while it iterates).
_BATCH: Final = 500
_FIRST_RETRY_WAIT_S: Final = 0.05


def _is_locked(exc: BaseException) -> bool:
    # SQLITE_BUSY and its extended codes (BUSY_RECOVERY, BUSY_SNAPSHOT, ...) share the low byte.
    return isinstance(exc, sqlite3.OperationalError) and (
        (exc.sqlite_errorcode & 0xFF) == sqlite3.SQLITE_BUSY or "database is locked" in str(exc)
    )


def _explain(exc: sqlite3.Error, path: Path) -> str:
    """SQLite's message, and what it means for the operator where that is not obvious."""
    code = exc.sqlite_errorcode & 0xFF
    if code == sqlite3.SQLITE_READONLY:
        return read_only_message(path, str(exc))
    if code == sqlite3.SQLITE_CANTOPEN:
        return (
            f"cannot open the store {path} ({exc}): its directory must exist and be readable "
            f"and writable by the daemon's user"
        )
    if code == sqlite3.SQLITE_FULL:
        return f"the disk holding the store {path} is full ({exc})"
    return str(exc)


def _log_retry(state: RetryCallState) -> None:
    log.warning("store_locked_retry", attempt=state.attempt_number + 1)


class SqliteStore:
    """The Store on one SQLite file. Opening creates the directory and file and migrates it.

    `exclusive`: hold the store's lock file until `close()` (the daemon does; StoreInUse when
    another process holds it).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 5.0,
        migrations: Sequence[Migration] | None = None,
        exclusive: bool = False,
    ) -> None:
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock: StoreLock | None = None
        # Cheap on purpose: SQLite's busy handler already waited busy_timeout_s on each try.
        # Tries 2 and 3 of a write that met a lock (the first is made directly in `_write`).
        self._retrying = Retrying(
            retry=retry_if_exception(_is_locked),
            stop=stop_after_attempt(2),
            wait=wait_exponential(multiplier=0.1, max=0.5),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open the store {self._path}: {exc}") from exc
        if exclusive:
            self._lock = StoreLock(self._path)
        self._files = StoreFiles(self._path, self._lock)
        try:
            conn = sqlite3.connect(self._path, timeout=busy_timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            self._release_lock()
            raise StoreError(self._open_failure(exc)) from exc
        self._conn = conn
        try:
            self._configure(conn, busy_timeout_s)
            self._migrate(conn, load_migrations() if migrations is None else list(migrations))
            self._files.remember()
        except BaseException:
            self._conn = None
            conn.close()
            self._release_lock()
            raise
        log.debug("store_opened", path=str(self._path))

    @property
    def path(self) -> Path:
        return self._path

    # -- plumbing ------------------------------------------------------------------------------
    def _configure(self, conn: sqlite3.Connection, busy_timeout_s: float) -> None:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            # NORMAL in WAL mode: a commit survives the process crashing or being killed
            # (kill -9), which is the contract; it may be lost on power loss or an OS crash,
            # which would need synchronous = FULL (an fsync per commit).
            conn.execute("PRAGMA synchronous = NORMAL")
            # A large import grows the WAL; cut it back after checkpoints rather than keep it.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            # Never map the database: a mapped file that shrinks under the daemon (truncated,
            # a full or read-only tmpfs) is SIGBUS, which kills the process outside any
            # Python code; read() calls fail with an error instead. Set explicitly because
            # SQLite's compiled-in default is not 0 everywhere.
            conn.execute("PRAGMA mmap_size = 0")
        except sqlite3.Error as exc:
            raise StoreError(self._open_failure(exc)) from exc
        if mode != "wal":
            log.warning("store_wal_unavailable", path=str(self._path), journal_mode=mode)

    def _open_failure(self, exc: sqlite3.Error) -> str:
        explained = _explain(exc, self._path)
        if explained != str(exc):
            return explained
        return f"cannot open the store {self._path}: {exc}"

    def _migrate(self, conn: sqlite3.Connection, migrations: list[Migration]) -> None:
        check_numbering(migrations)
        latest = len(migrations)
        # Read without a lock first so an up-to-date (or read-only) database opens without a write.
        self._check_not_newer(conn, latest)
        if self._user_version(conn) == latest:
            return
        for migration in migrations:

            def apply(conn: sqlite3.Connection, migration: Migration = migration) -> bool:
                current = self._user_version(conn)  # again, under the write lock
                if current >= migration.version:
                    return False
                for statement in migration.statements():
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
                return True

            try:
                applied = self._write(f"migration {migration.name}", apply)
            except StoreError as exc:
                raise StoreError(
                    f"cannot migrate the store {self._path} to schema version "
                    f"{migration.version} ({migration.name}): {exc}"
                ) from exc
            if applied:
                log.info("store_migrated", path=str(self._path), version=migration.version)
        self._check_not_newer(conn, latest)

    def _user_version(self, conn: sqlite3.Connection) -> int:
        try:
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store {self._path}: {exc}") from exc
        return version

    def _check_not_newer(self, conn: sqlite3.Connection, latest: int) -> None:
        version = self._user_version(conn)
        if version > latest:
            raise StoreError(
                f"the store {self._path} has schema version {version}, newer than this "
                f"apixo-watcher understands ({latest}); upgrade apixo-watcher or point "
                f"store.path at another file"
            )

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is closed")
        return self._conn

    def check_files(self) -> None:
        """StoreLost if the database, its WAL or its shared-memory file is no longer the file
        SQLite opened (deleted, replaced, truncated), or the daemon's lock file is gone; from
        then on every use of the store fails with it."""
        self._files.check()

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction, retried while the database is locked; then
        check that the commit went to the store's own file (StoreLost if not)."""
        conn = self._live()
        self._files.check_mapped()

        def once() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.warning("store_rollback_failed", what=what)
                raise
            return result

        try:
            # The first try runs without tenacity: its bookkeeping cost more than a small
            # commit, and a lock held elsewhere is rare.
            try:
                result = once()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
                log.warning("store_locked_retry", attempt=1)
                time.sleep(_FIRST_RETRY_WAIT_S)
                result = self._retrying(once)
        except sqlite3.Error as exc:
            raise StoreError(f"store write failed ({what}): {_explain(exc, self._path)}") from exc
        self.check_files()  # before anyone acknowledges what was just committed
        return result

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._live()
        self._files.check_mapped()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store read failed: {exc}") from exc

    def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _fetch_task(self, conn: sqlite3.Connection, task_id: str) -> Task:
        row = conn.execute(TASK_BY_ID, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_from_row(row)

    def _require_task(self, task_id: str) -> None:
        if self._row("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)) is None:
            raise TaskNotFound(f"task {task_id} not found")

    @staticmethod
    def _require_delivery_in(conn: sqlite3.Connection, delivery_id: str) -> None:
        if conn.execute(DELIVERY_EXISTS, (delivery_id,)).fetchone() is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")

    def _require_delivery(self, delivery_id: str) -> None:
        if self._row(DELIVERY_EXISTS, (delivery_id,)) is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")

    # -- tasks ---------------------------------------------------------------------------------
    def add_task(self, spec: TaskSpec, *, source: TaskSource, now: float) -> tuple[Task, bool]:
        """Register a task; committed when this returns. See Store.add_task."""
        return self.add_tasks([spec], source=source, now=now)[0]

    def add_tasks(
        self, specs: list[TaskSpec], *, source: TaskSource, now: float
    ) -> list[tuple[Task, bool]]:
        """Register many tasks in one transaction; a conflict writes none of them."""
        if not specs:
            self._live()
            return []
        return self._write("add_tasks", lambda conn: self._insert_tasks(conn, specs, source, now))

    def _insert_tasks(
        self, conn: sqlite3.Connection, specs: list[TaskSpec], source: TaskSource, now: float
    ) -> list[tuple[Task, bool]]:
        # One lookup per chunk of ids and one executemany: a big tasks file imports quickly.
        known: dict[str, Task] = {}
        ids = list(dict.fromkeys(spec.task_id for spec in specs))
        for i in range(0, len(ids), _BATCH):
            chunk = ids[i : i + _BATCH]
            marks = ", ".join("?" * len(chunk))
            for row in conn.execute(f"{SELECT_TASKS} WHERE task_id IN ({marks})", chunk):
                known[row[0]] = task_from_row(row)
        results: list[tuple[Task, bool]] = []
        rows: list[tuple[Any, ...]] = []
        for spec in specs:
            existing = known.get(spec.task_id)
            if existing is not None:
                if existing.model != spec.model:
                    raise TaskConflict(
                        f"task {spec.task_id} is already registered with model "
                        f"{existing.model!r}, not {spec.model!r}"
                    )
                # A copy: the same id may appear again in this batch, or was just created in it.
                clone = dataclasses.replace(existing, metadata=copy.deepcopy(existing.metadata))
                results.append((clone, False))
                continue
            metadata = metadata_json(spec.metadata)
            endpoints = endpoints_json(spec.endpoints)
            rows.append(
                (spec.task_id, spec.model, endpoints, spec.callback_url, metadata, spec.deadline_s)
            )
            task = new_task(spec, source=source, now=now, metadata=json.loads(metadata))
            known[spec.task_id] = task
            results.append((task, True))
        conn.executemany(
            INSERT_TASK,
            [(*row, source.value, TaskState.PENDING.value, now, now) for row in rows],
        )
        return results

    def add_tasks_bulk(self, batch: SpecColumns, *, source: TaskSource, now: float) -> list[bool]:
        """`add_tasks` answering only which specs created their task: the same rows and
        conflicts, without reading known tasks back or building a `Task` per row."""
        if not len(batch):
            self._live()
            return []
        return self._write(
            "add_tasks", lambda conn: self._insert_new_tasks(conn, batch, source, now)
        )

    @staticmethod
    def _insert_new_tasks(
        conn: sqlite3.Connection, batch: SpecColumns, source: TaskSource, now: float
    ) -> list[bool]:
        ids, models = batch.task_ids, batch.models
        known: dict[str, str] = {}  # task_id -> model, of the known and the just created
        unique = list(dict.fromkeys(ids))
        for i in range(0, len(unique), _BATCH):
            chunk = unique[i : i + _BATCH]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT task_id, model FROM tasks WHERE task_id IN ({marks})"  # noqa: S608
            known.update(conn.execute(query, chunk))
        created: list[bool] = []
        for task_id, model in zip(ids, models, strict=True):
            stored = known.get(task_id)
            if stored is None:
                known[task_id] = model  # a repeat of the id in this batch finds it known
                created.append(True)
            elif stored != model:
                raise TaskConflict(
                    f"task {task_id} is already registered with model {stored!r}, not {model!r}"
                )
            else:
                created.append(False)
        optional = {
            "endpoints": batch.endpoints,
            "callback_url": batch.callback_urls,
            "deadline_s": batch.deadlines_s,
        }
        used = [name for name, values in optional.items() if values.count(None) < len(values)]
        # The rows straight from the columns: no tuple built per row in Python.
        rows = zip(
            ids,
            models,
            batch.metadata,
            *(optional[name] for name in used),
            repeat(source.value),
            repeat(TaskState.PENDING.value),
            repeat(now),
            repeat(now),
            strict=False,  # the repeats are endless; the columns are one length
        )
        conn.executemany(insert_tasks(used), compress(rows, created))
        return created

    def get_task(self, task_id: str) -> Task:
        """The task, or TaskNotFound."""
        row = self._row(TASK_BY_ID, (task_id,))
        if row is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_from_row(row)

    def list_tasks(
        self, *, state: TaskState | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        """Tasks newest registration first (ties by task_id), optionally of one state."""
        filters = {"state": state.value} if state is not None else {}
        return self._page(
            SELECT_TASKS,
            ("registered_at", "task_id"),
            filters,
            limit,
            cursor,
            task_from_row,
            lambda t: (t.registered_at, t.task_id),
        )

    def _page(
        self,
        select: str,
        key: tuple[str, str],
        filters: Mapping[str, Any],
        limit: int,
        cursor: str | None,
        convert: Callable[[Sequence[Any]], T],
        key_of: Callable[[T], tuple[float, str]],
        conditions: Sequence[str] = (),
    ) -> tuple[list[T], str | None]:
        """One page, newest first by the (time, id) `key`, keyset-paginated: rows added
        between pages never shift a page. `filters` are column = value (constant names);
        `conditions` are more constant SQL conditions, without parameters."""
        limit = clamp_limit(limit)
        where = [f"{column} = ?" for column in filters]
        where.extend(f"({condition})" for condition in conditions)
        params: list[Any] = list(filters.values())
        if cursor is not None:
            where.append(f"({key[0]}, {key[1]}) < (?, ?)")
            params.extend(decode_cursor(cursor))
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._rows(
            f"{select} {clause}ORDER BY {key[0]} DESC, {key[1]} DESC LIMIT ?",
            (*params, limit + 1),
        )
        items = [convert(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return items, None
        return items, encode_cursor(*key_of(items[-1]))

    def active_tasks(self) -> Iterator[Task]:
        """Every PENDING task, then every PROCESSING one, each in (registered_at, task_id)
        order on tasks_by_state, streamed in bounded batches. A task that moves from pending to
        processing while the stream runs may come twice: the daemon reads it at startup, before
        anything polls, and `Scheduler.watch` ignores a task it already watches."""
        self._live()
        return self._stream_active()

    def _stream_active(self) -> Iterator[Task]:
        for state in (TaskState.PENDING.value, TaskState.PROCESSING.value):
            rows = self._rows(FIRST_ACTIVE_TASKS, (state, _BATCH))
            while True:
                for row in rows:
                    yield task_from_row(row)
                if len(rows) < _BATCH:
                    break
                last = rows[-1]  # SELECT_TASKS: task_id first, registered_at ninth
                rows = self._rows(NEXT_ACTIVE_TASKS, (state, last[8], last[0], _BATCH))

    def _stream(self, sql: str, convert: Callable[[Sequence[Any]], T]) -> Iterator[T]:
        # `sql` has "{op}" before its key parameter and the key is the first column; the
        # first batch starts at (>=) "".
        op, last = ">=", ""
        while True:
            rows = self._rows(sql.format(op=op), (last, _BATCH))
            for row in rows:
                yield convert(row)
            if len(rows) < _BATCH:
                return
            op, last = ">", rows[-1][0]

    def count_tasks(self) -> Mapping[TaskState, int]:
        """How many tasks are in each state (states with none are absent)."""
        rows = self._rows("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        return {TaskState(state): count for state, count in rows}

    def apply_transition(self, transition: Transition) -> Task:
        """Commit a state change with its event and deliveries in one transaction (outbox).

        A transition without `upstream_state` keeps the last one seen; `polls`, when given,
        replaces the stored count. A terminal state sets `finished_at` and clears `last_error`.
        """
        return self._write("apply_transition", lambda conn: self._apply(conn, transition))

    def _apply(self, conn: sqlite3.Connection, t: Transition) -> Task:
        task = self._fetch_task(conn, t.task_id)
        from_state = apply_transition_to(task, t)
        self._save_task_state(conn, task)
        if t.to_state != from_state:
            self._insert_change(
                conn, t.task_id, from_state, t.to_state, t.at, t.reason, t.upstream_state
            )
        if t.event is not None:
            conn.execute(INSERT_EVENT, event_params(t.event))
        if t.deliveries:
            conn.executemany(INSERT_DELIVERY, [delivery_params(d) for d in t.deliveries])
        if t.mirror is not None:
            conn.execute(INSERT_MIRROR_HOLD, hold_params(t.mirror))
            conn.executemany(INSERT_MIRROR_FILE, [mirror_file_params(f) for f in t.mirror.files])
        return task

    def _save_task_state(self, conn: sqlite3.Connection, task: Task) -> None:
        conn.execute(UPDATE_TASK_STATE, task_state_params(task))

    def _insert_change(
        self,
        conn: sqlite3.Connection,
        task_id: str,
        from_state: TaskState,
        to_state: TaskState,
        at: float,
        reason: str,
        upstream_state: str | None,
    ) -> None:
        conn.execute(
            INSERT_STATE_CHANGE,
            (task_id, from_state.value, to_state.value, at, reason, upstream_state),
        )

    def cancel_task(self, task_id: str, *, now: float) -> Task:
        """Move an active task to CANCELLED (no event). TaskFinished if it is terminal."""

        def cancel(conn: sqlite3.Connection) -> Task:
            task = self._fetch_task(conn, task_id)
            if task.state.terminal:
                raise TaskFinished(f"task {task_id} has already finished ({task.state.value})")
            from_state = task.state
            task.state = TaskState.CANCELLED
            task.updated_at = now
            task.finished_at = now
            task.last_error = None
            self._save_task_state(conn, task)
            self._insert_change(conn, task_id, from_state, task.state, now, "cancelled", None)
            return task

        return self._write("cancel_task", cancel)

    def record_polls(self, polls: Mapping[str, int], *, errors: Mapping[str, str | None]) -> None:
        """Persist live poll counts (any task) and last errors (active tasks only: a finished
        task's error was cleared by its final transition) in one transaction."""
        if not polls and not errors:
            self._live()
            return

        def record(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE tasks SET polls = ? WHERE task_id = ?",
                [(count, task_id) for task_id, count in polls.items()],
            )
            conn.executemany(
                "UPDATE tasks SET last_error = ? "
                "WHERE task_id = ? AND state IN ('pending', 'processing')",
                [(error, task_id) for task_id, error in errors.items()],
            )

        self._write("record_polls", record)

    def extend_deadlines(self, *, since: float, until: float) -> None:
        """A credential pause from `since` to `until`: each active task registered before
        `until` gains `until - max(since, registered_at)` of deadline extension. One UPDATE."""
        if until <= since:
            self._live()
            return
        self._write(
            "extend_deadlines", lambda conn: conn.execute(EXTEND_DEADLINES, (until, since, until))
        )

    def shift_future_times(self, step_s: float) -> None:
        """The wall clock was stepped by `step_s`: the deadline extensions of active tasks and
        the next attempts of pending deliveries move by it, in one transaction."""

        def shift(conn: sqlite3.Connection) -> None:
            conn.execute(SHIFT_DEADLINES, (step_s,))
            conn.execute(SHIFT_NEXT_ATTEMPTS, (step_s,))

        self._write("shift_future_times", shift)

    def state_changes(self, task_id: str) -> list[StateChange]:
        """The task's state changes, oldest first."""
        self._require_task(task_id)
        return [state_change_from_row(r) for r in self._rows(SELECT_STATE_CHANGES, (task_id,))]

    # -- events --------------------------------------------------------------------------------
    def get_event(self, event_id: str) -> Event:
        """The event; StoreError if it is missing."""
        row = self._row(EVENT_BY_ID, (event_id,))
        if row is None:
            raise StoreError(f"event {event_id} not found")
        return event_from_row(row)

    def event_bodies(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of many events, read in chunks of `_BATCH` ids; unknown ids are absent."""
        self._live()
        bodies: dict[str, bytes] = {}
        ids = list(dict.fromkeys(event_ids))
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            marks = ", ".join("?" * len(chunk))
            rows = self._rows(
                f"SELECT event_id, body FROM events WHERE event_id IN ({marks})",  # noqa: S608
                chunk,
            )
            bodies.update((event_id, bytes(body)) for event_id, body in rows)
        return bodies

    def events_for_task(self, task_id: str) -> list[Event]:
        """The task's events, oldest first."""
        self._require_task(task_id)
        return [event_from_row(r) for r in self._rows(EVENTS_OF_TASK, (task_id,))]

    # -- deliveries ----------------------------------------------------------------------------
    def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery, or DeliveryNotFound."""
        row = self._row(DELIVERY_BY_ID, (delivery_id,))
        if row is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")
        return delivery_from_row(row)

    def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        task_id: str | None = None,
        retrying: bool | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """Deliveries newest first (by created_at, ties by delivery_id), optionally filtered.
        An unknown task_id filter gives an empty page."""
        filters: dict[str, Any] = {}
        conditions: list[str] = []
        if retrying:
            if status not in (None, DeliveryStatus.PENDING):
                self._live()
                return [], None  # only pending deliveries retry
            status = DeliveryStatus.PENDING  # on the status index: walks the pending ones only
            conditions.append(RETRYING_CONDITION)
        elif retrying is not None:
            conditions.append(f"NOT ({RETRYING_CONDITION})")
        if status is not None:
            filters["status"] = status.value
        if task_id is not None:
            filters["task_id"] = task_id
        return self._page(
            SELECT_DELIVERIES,
            ("created_at", "delivery_id"),
            filters,
            limit,
            cursor,
            delivery_from_row,
            lambda d: (d.created_at, d.delivery_id),
            conditions,
        )

    def pending_deliveries(self) -> Iterator[Delivery]:
        """Every PENDING delivery, streamed in delivery_id order in bounded batches."""
        self._live()
        return self._stream(STREAM_PENDING_DELIVERIES, delivery_from_row)

    def count_deliveries(self) -> Mapping[DeliveryStatus, int]:
        """How many deliveries are in each status (statuses with none are absent)."""
        rows = self._rows("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        return {DeliveryStatus(status): count for status, count in rows}

    def count_retrying_deliveries(self) -> int:
        """How many deliveries are retrying (pending after a failed attempt of their round),
        counted on the partial index of the pending ones."""
        row = self._row(COUNT_RETRYING_DELIVERIES)
        return int(row[0]) if row is not None else 0

    def record_attempt(self, attempt: Attempt, delivery: Delivery) -> None:
        """Insert the attempt and store `delivery`'s progress (status, times, attempt counts,
        last result), in one transaction. DeliveryNotFound (nothing written) if the delivery
        is unknown."""
        self.record_attempts(((attempt, delivery),))

    def record_attempts(self, batch: Sequence[tuple[Attempt, Delivery]]) -> None:
        """`record_attempt` for every pair in one transaction: one COMMIT for many attempts.
        DeliveryNotFound (nothing written) if any delivery is unknown."""
        if not batch:
            self._live()
            return
        for attempt, delivery in batch:
            if attempt.delivery_id != delivery.delivery_id:
                raise StoreError(
                    f"attempt of delivery {attempt.delivery_id} recorded with "
                    f"{delivery.delivery_id}"
                )

        def record(conn: sqlite3.Connection) -> None:
            updated = conn.executemany(
                UPDATE_DELIVERY_PROGRESS, [delivery_progress_params(d) for _, d in batch]
            ).rowcount
            if updated < len(batch):
                for _, d in batch:
                    self._require_delivery_in(conn, d.delivery_id)
            conn.executemany(INSERT_ATTEMPT, [attempt_params(a) for a, _ in batch])

        self._write("record_attempts", record)

    def attempts(self, delivery_id: str) -> list[Attempt]:
        """The delivery's attempts, oldest first."""
        self._require_delivery(delivery_id)
        return [attempt_from_row(r) for r in self._rows(SELECT_ATTEMPTS, (delivery_id,))]

    def requeue_delivery(self, delivery_id: str, *, now: float) -> Delivery:
        """Make the delivery PENDING again, due now, schedule_pos 0; `attempts` and the
        webhook id are kept. Works from any status."""

        def requeue(conn: sqlite3.Connection) -> Delivery:
            # No UPDATE ... RETURNING: it needs SQLite 3.35, newer than some supported distros.
            updated = conn.execute(
                "UPDATE deliveries SET status = ?, next_attempt_at = ?, schedule_pos = 0, "
                "updated_at = ? WHERE delivery_id = ?",
                (DeliveryStatus.PENDING.value, now, now, delivery_id),
            ).rowcount
            if not updated:
                raise DeliveryNotFound(f"delivery {delivery_id} not found")
            row = conn.execute(DELIVERY_BY_ID, (delivery_id,)).fetchone()
            return delivery_from_row(row)

        return self._write("requeue_delivery", requeue)

    # -- result mirroring ----------------------------------------------------------------------
    def mirror_files(self, task_id: str) -> list[MirrorFile]:
        """The task's result files to mirror, in result_urls order."""
        return [mirror_file_from_row(r) for r in self._rows(MIRROR_FILES_OF_TASK, (task_id,))]

    def update_mirror_files(self, files: Sequence[MirrorFile]) -> None:
        """Record the files' progress in one transaction; StoreError if one is unknown."""

        def update(conn: sqlite3.Connection) -> None:
            for file in files:
                if not conn.execute(UPDATE_MIRROR_FILE, mirror_progress_params(file)).rowcount:
                    raise StoreError(f"mirror file {file.task_id}#{file.position} not found")

        self._write("update_mirror_files", update)

    def held_mirrors(self) -> list[MirrorHold]:
        """Every held success with its files, oldest first."""
        holds = [event_from_row(r) for r in self._rows(SELECT_MIRROR_HOLDS)]
        return [MirrorHold(e, tuple(self.mirror_files(e.task_id))) for e in holds]

    def release_mirror(self, task_id: str, event: Event, deliveries: Sequence[Delivery]) -> bool:
        """The final event and its deliveries, and the hold dropped, in one transaction."""

        def release(conn: sqlite3.Connection) -> bool:
            if not conn.execute(DELETE_MIRROR_HOLD, (task_id,)).rowcount:
                return False
            conn.execute(INSERT_EVENT, event_params(event))
            if deliveries:
                conn.executemany(INSERT_DELIVERY, [delivery_params(d) for d in deliveries])
            return True

        return self._write("release_mirror", release)

    # -- learned durations (adaptive polling) ---------------------------------------------------
    def record_durations(self, samples: Sequence[DurationSample]) -> None:
        """Persist finished tasks' durations, in the order given, in one transaction."""
        if not samples:
            self._live()
            return
        rows = [(model, float(d), float(at)) for model, d, at in samples]
        self._write(
            "record_durations",
            lambda conn: conn.executemany(
                "INSERT INTO task_durations (model, duration_s, finished_at) VALUES (?, ?, ?)",
                rows,
            ),
        )

    def recent_durations(self, per_model: int) -> dict[str, list[float]]:
        """Each model's `per_model` most recent durations, oldest first."""
        out: dict[str, list[float]] = {}
        for model, duration in self._rows(RECENT_DURATIONS, (max(0, per_model),)):
            out.setdefault(model, []).append(duration)
        return out

    def trim_durations(self, keep_per_model: int) -> int:
        """Delete all but each model's `keep_per_model` most recent durations."""
        return self._write(
            "trim_durations",
            lambda conn: int(conn.execute(TRIM_DURATIONS, (max(0, keep_per_model),)).rowcount),
        )

    # -- housekeeping --------------------------------------------------------------------------
    def purge_finished(self, *, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` tasks finished before `before` (oldest first) and everything
        recorded about them, in one transaction; tasks with a pending delivery stay."""

        def purge(conn: sqlite3.Connection) -> int:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (task_id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM purge_ids")
            conn.execute(
                "INSERT INTO purge_ids SELECT t.task_id FROM tasks AS t INDEXED BY tasks_finished"
                " WHERE t.finished_at IS NOT NULL AND t.finished_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM deliveries AS d"
                "  WHERE d.task_id = t.task_id AND d.status = 'pending')"
                " AND NOT EXISTS (SELECT 1 FROM mirror_holds AS h WHERE h.task_id = t.task_id)"
                " ORDER BY t.finished_at LIMIT ?",
                (before, clamp_limit(limit)),
            )
            for statement in PURGE_CHILDREN:
                conn.execute(statement)
            deleted = conn.execute(
                "DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM purge_ids)"
            ).rowcount
            conn.execute("DELETE FROM purge_ids")
            return int(deleted)

        return self._write("purge_finished", purge)

    def check_writable(self) -> None:
        """Commit a one-row heartbeat; StoreError if the write cannot be committed now."""
        self._write(
            "check_writable",
            lambda conn: conn.execute(
                "INSERT INTO heartbeat (id, beats) VALUES (1, 1) "
                "ON CONFLICT (id) DO UPDATE SET beats = beats + 1"
            ),
        )

    def close(self) -> None:
        """Close the database (the last connection checkpoints the WAL) and release the lock;
        idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        setconfig = getattr(conn, "setconfig", None)  # Python 3.12+
        if self._files.lost is not None and setconfig is not None:
            # Closing the last connection checkpoints and then deletes the WAL *by name*: once
            # the files were replaced, that name may belong to a new store.
            setconfig(getattr(sqlite3, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE"), True)  # noqa: B009
        try:
            conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot close the store {self._path}: {exc}") from exc
        finally:
            self._release_lock()
        log.debug("store_closed", path=str(self._path))

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
