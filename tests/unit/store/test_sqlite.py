"""What only the SQLite store does: the file, WAL, migrations, durability, locking, scale."""

from __future__ import annotations

import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.errors import StoreError, StoreInUse, StoreLost
from watcher.models import (
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.migrations import Migration, load_migrations
from watcher.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
API = TaskSource.API
REPO = Path(__file__).resolve().parents[3]
SCHEMA_FILES = sorted(
    p.name for p in (REPO / "watcher" / "store" / "migrations" / "sqlite").glob("[0-9]*.sql")
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "watcher.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(db)
    yield s
    s.close()


def raw(db: Path) -> sqlite3.Connection:
    """A plain connection of our own, independent of the store under test."""
    return sqlite3.connect(db, isolation_level=None)


def user_version(db: Path) -> int:
    conn = raw(db)
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        conn.close()


# Child processes log to stderr, so their stdout carries only what the test reads.
_CHILD_PREAMBLE = """
import sys, structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


# -- the file ----------------------------------------------------------------------------------
def test_opening_creates_the_directory_and_a_wal_database(db: Path) -> None:
    store = SqliteStore(str(db))  # a str path works too
    try:
        assert db.is_file()
        conn = raw(db)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()
    finally:
        store.close()


def test_everything_survives_close_and_reopen(db: Path) -> None:
    store = SqliteStore(db)
    store.add_task(
        TaskSpec("t", "sora-2", endpoints=("app",), metadata={"k": [1, "x"]}, deadline_s=9.5),
        source=TaskSource.FILE,
        now=T0,
    )
    event = Event("evt_1", "t", EventType.SUCCEEDED, T0 + 1, b'{"type":"task.succeeded"}')
    delivery = Delivery(
        "dlv_1", "evt_1", "t", EventType.SUCCEEDED, "app", "msg_1",
        DeliveryStatus.PENDING, T0 + 1, T0 + 1, T0 + 1,
    )  # fmt: skip
    store.apply_transition(
        Transition(
            "t", TaskState.PENDING, TaskState.SUCCEEDED, T0 + 1, "upstream state success",
            "success", polls=4, event=event, deliveries=(delivery,),
        )
    )  # fmt: skip
    attempt = Attempt("dlv_1", 1, T0 + 2, 30.0, AttemptOutcome.SUCCEEDED, 200, None, int(T0 + 2))
    done = Delivery(
        "dlv_1", "evt_1", "t", EventType.SUCCEEDED, "app", "msg_1",
        DeliveryStatus.SUCCEEDED, T0 + 1, T0 + 2, None, attempts=1, schedule_pos=1,
        last_status_code=200,
    )  # fmt: skip
    store.record_attempt(attempt, done)
    before = (
        store.get_task("t"),
        store.state_changes("t"),
        store.events_for_task("t"),
        store.list_deliveries(),
        store.attempts("dlv_1"),
    )
    store.close()

    reopened = SqliteStore(db)
    try:
        after = (
            reopened.get_task("t"),
            reopened.state_changes("t"),
            reopened.events_for_task("t"),
            reopened.list_deliveries(),
            reopened.attempts("dlv_1"),
        )
    finally:
        reopened.close()
    assert after == before
    assert after[0].metadata == {"k": [1, "x"]}
    assert after[3][0] == [done]


def test_a_file_that_is_not_a_database_is_a_store_error(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite, just some bytes that happen to be here\n" * 20)

    with pytest.raises(StoreError, match=str(db)):
        SqliteStore(db)


# -- one daemon per store -------------------------------------------------------------------------
def test_an_exclusive_store_keeps_a_second_one_out_until_it_closes(db: Path) -> None:
    holder = SqliteStore(db, exclusive=True)
    lock_file = db.with_name("watcher.db.lock")
    assert lock_file.read_text() == f"{os.getpid()}\n"
    assert lock_file.stat().st_mode & 0o777 == 0o600

    # flock conflicts between two open files even within one process.
    with pytest.raises(
        StoreInUse, match=rf"in use by another apixo-watcher process \(pid {os.getpid()}\)"
    ):
        SqliteStore(db, exclusive=True)
    reader = SqliteStore(db)  # connections that are not the daemon's need no lock
    reader.close()

    holder.close()
    again = SqliteStore(db, exclusive=True)
    again.close()
    assert lock_file.exists()  # never deleted: see StoreLock


def test_a_store_that_fails_to_open_leaves_no_lock_behind(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database at all, but long enough to have a header" * 10)
    with pytest.raises(StoreError):
        SqliteStore(db, exclusive=True)
    db.unlink()
    SqliteStore(db, exclusive=True).close()


# -- the files deleted or replaced under the store -------------------------------------------------
def test_a_deleted_database_fails_every_write_after_the_commit_and_stays_lost(
    store: SqliteStore, db: Path
) -> None:
    store.add_task(TaskSpec("before", "m"), source=API, now=T0)
    store.check_files()
    for path in db.parent.glob("watcher.db*"):
        path.unlink()

    # The commit lands in the deleted file; the caller learns it before acknowledging.
    with pytest.raises(StoreLost, match=r"watcher\.db was deleted while the daemon ran"):
        store.add_task(TaskSpec("after", "m"), source=API, now=T0)
    with pytest.raises(StoreLost):
        store.check_writable()
    with pytest.raises(StoreLost):
        store.check_files()
    assert not db.exists()  # nothing recreates it behind the operator's back


def test_a_replaced_wal_or_database_is_noticed(db: Path) -> None:
    store = SqliteStore(db)
    wal = db.with_name("watcher.db-wal")
    copy = db.with_name("copy")
    copy.write_bytes(wal.read_bytes())
    copy.replace(wal)
    with pytest.raises(StoreLost, match=r"watcher\.db-wal was replaced by another file"):
        store.check_files()
    store.close()

    store = SqliteStore(db)
    copy.write_bytes(db.read_bytes())
    copy.replace(db)
    with pytest.raises(StoreLost, match=r"watcher\.db was replaced by another file"):
        store.record_polls({"t": 1}, errors={})
    store.close()


def test_a_deleted_lock_file_is_noticed(db: Path) -> None:
    store = SqliteStore(db, exclusive=True)
    try:
        db.with_name("watcher.db.lock").unlink()
        with pytest.raises(StoreLost, match=r"another daemon could now open the store"):
            store.check_files()
    finally:
        store.close()


def test_checking_the_files_costs_a_few_stat_calls(store: SqliteStore) -> None:
    started = time.perf_counter()
    for _ in range(1000):
        store.check_files()
    per_check = (time.perf_counter() - started) / 1000
    assert per_check < 0.001  # ~5 us here; a commit costs ~200 us


def test_the_database_is_never_memory_mapped(store: SqliteStore) -> None:
    # A mapped file that shrinks is SIGBUS. SQLite's compiled-in default is 0 here, not on
    # every build: the store sets it itself.
    assert store._live().execute("PRAGMA mmap_size").fetchone()[0] == 0


_TRUNCATED_SHM_CHILD = """
import os
from pathlib import Path
from watcher.errors import StoreLost
from watcher.models import TaskSource, TaskSpec
from watcher.store.sqlite import SqliteStore

db = Path(sys.argv[1])
store = SqliteStore(db)
for i in range(50):
    store.add_task(TaskSpec(f"t{i}", "m"), source=TaskSource.API, now=1.0)
shm = db.with_name(db.name + "-shm")
size = shm.stat().st_size
os.truncate(shm, 0)
for use in (lambda: store.get_task("t1"), lambda: store.check_writable()):
    try:
        use()
    except StoreLost as exc:
        print("lost:", exc)
print("size back:", shm.stat().st_size == size)
store.close()
print("closed")
"""


def test_a_truncated_shared_memory_file_is_a_store_error_not_sigbus(db: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD_PREAMBLE + _TRUNCATED_SHM_CHILD, str(db)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, (child.returncode, child.stderr)  # -7 is SIGBUS
    lines = child.stdout.splitlines()
    assert lines[0].startswith("lost: the store file ")
    assert "watcher.db-shm was truncated while the daemon ran" in lines[0]
    assert lines[1].startswith("lost: ")
    assert lines[2:] == ["size back: True", "closed"]
    reopened = SqliteStore(db)  # SQLite rebuilt the index from the WAL: nothing is lost
    try:
        assert sum(1 for _ in reopened.active_tasks()) == 50
    finally:
        reopened.close()


# -- migrations --------------------------------------------------------------------------------
def test_the_schema_version_is_the_number_of_migrations(store: SqliteStore, db: Path) -> None:
    assert SCHEMA_FILES
    assert [m.name for m in load_migrations()] == SCHEMA_FILES
    assert user_version(db) == len(SCHEMA_FILES)


def test_reopening_does_not_rerun_migrations(db: Path) -> None:
    # 0001 creates its tables without IF NOT EXISTS: running it again would fail.
    SqliteStore(db).close()
    store = SqliteStore(db)
    try:
        store.add_task(TaskSpec("t", "m"), source=API, now=T0)
    finally:
        store.close()
    assert user_version(db) == len(SCHEMA_FILES)


def test_a_new_migration_is_applied_once_on_an_older_database(db: Path) -> None:
    store = SqliteStore(db)
    store.add_task(TaskSpec("t", "m"), source=API, now=T0)
    store.close()
    step = Migration(
        len(SCHEMA_FILES) + 1,
        "9999_extra.sql",
        "-- adds a table; and a row\nCREATE TABLE extra (x TEXT);\n"
        "INSERT INTO extra VALUES ('a;b'); INSERT INTO extra VALUES ('c');\n-- done\n",
    )
    migrations = [*load_migrations(), step]

    for _ in range(2):
        SqliteStore(db, migrations=migrations).close()

    conn = raw(db)
    try:
        assert conn.execute("SELECT x FROM extra ORDER BY x").fetchall() == [("a;b",), ("c",)]
        assert conn.execute("SELECT task_id FROM tasks").fetchall() == [("t",)]
    finally:
        conn.close()
    assert user_version(db) == len(SCHEMA_FILES) + 1


def test_tasks_stored_before_deadline_extensions_get_none(db: Path) -> None:
    [extensions] = [m for m in load_migrations() if m.name == "0003_deadline_extension.sql"]
    SqliteStore(db, migrations=load_migrations()[: extensions.version - 1]).close()
    conn = raw(db)
    try:
        conn.execute(
            "INSERT INTO tasks (task_id, model, metadata, source, state, registered_at, "
            "updated_at) VALUES ('t', 'm', '{}', 'api', 'pending', ?, ?)",
            (T0, T0),
        )
    finally:
        conn.close()
    store = SqliteStore(db)
    try:
        assert store.get_task("t").deadline_extension_s == 0.0
        store.extend_deadlines(since=T0, until=T0 + 5)
        assert store.get_task("t").deadline_extension_s == 5.0
    finally:
        store.close()


def test_a_failing_migration_is_rolled_back_entirely(db: Path) -> None:
    SqliteStore(db).close()
    broken = Migration(
        len(SCHEMA_FILES) + 1,
        "9999_broken.sql",
        "CREATE TABLE extra (x TEXT);\nINSERT INTO no_such_table VALUES (1);\n",
    )

    with pytest.raises(StoreError, match="9999_broken"):
        SqliteStore(db, migrations=[*load_migrations(), broken])

    assert user_version(db) == len(SCHEMA_FILES)
    conn = raw(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert "extra" not in tables


def test_a_database_newer_than_the_code_is_refused(db: Path) -> None:
    SqliteStore(db).close()
    conn = raw(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()

    with pytest.raises(StoreError, match=r"schema version 99, newer .*upgrade apixo-watcher"):
        SqliteStore(db)


# -- commits and durability ------------------------------------------------------------------------
def test_an_added_task_is_committed_when_add_task_returns(store: SqliteStore, db: Path) -> None:
    other = SqliteStore(db)
    try:
        store.add_task(TaskSpec("t", "m"), source=API, now=T0)
        assert other.get_task("t").state == TaskState.PENDING
    finally:
        other.close()


def test_a_task_added_before_sigkill_is_in_the_file(db: Path, tmp_path: Path) -> None:
    code = _CHILD_PREAMBLE + textwrap.dedent(
        f"""
        import time
        from watcher.models import TaskSource, TaskSpec
        from watcher.store.sqlite import SqliteStore

        store = SqliteStore({str(db)!r})
        store.add_task(TaskSpec("task_killed", "nano-banana"), source=TaskSource.API, now=1.0)
        print("committed", flush=True)
        time.sleep(60)
        """
    )
    errors = tmp_path / "child.stderr"
    with errors.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # "" if the child dies first
        assert line == "committed\n", errors.read_text()
        os.kill(child.pid, signal.SIGKILL)  # no chance to close or checkpoint anything
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    store = SqliteStore(db)
    try:
        assert store.get_task("task_killed").model == "nano-banana"
    finally:
        store.close()


# -- writability -------------------------------------------------------------------------------
# Runs in a child process: as root it first drops every capability, so that file permissions
# bind it like any other user (root's CAP_DAC_OVERRIDE would otherwise ignore chmod).
_READ_ONLY_CHILD = """
import ctypes, os, sys
from watcher.errors import StoreError, StoreInUse, StoreLost
from watcher.store.sqlite import SqliteStore

if os.geteuid() == 0:
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    libc = ctypes.CDLL(None, use_errno=True)
    no_caps = (Data * 2)()
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), no_caps) != 0:
        print("cannot-drop-capabilities")
        sys.exit(0)

store = SqliteStore(sys.argv[1])
print("read:", store.get_task("t").task_id)
try:
    store.check_writable()
except StoreError as exc:
    print("not writable:", exc)
else:
    print("writable")
store.close()
"""


def test_check_writable_fails_on_a_read_only_database(db: Path) -> None:
    store = SqliteStore(db)
    store.add_task(TaskSpec("t", "m"), source=API, now=T0)
    store.check_writable()
    store.close()
    db.chmod(0o444)

    child = subprocess.run(
        [sys.executable, "-c", _CHILD_PREAMBLE + _READ_ONLY_CHILD, str(db)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    if "cannot-drop-capabilities" in child.stdout:
        pytest.skip("running as root without the right to drop capabilities")
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "read: t"  # a read-only store still answers reads
    assert lines[1].startswith("not writable:")
    assert f"the store {db} is read-only (attempt to write a readonly database)" in lines[1]


def test_a_write_lock_held_elsewhere_becomes_a_store_error(db: Path) -> None:
    store = SqliteStore(db, busy_timeout_s=0.01)
    blocker = raw(db)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="locked"):
            store.check_writable()
        with pytest.raises(StoreError, match="locked"):
            store.add_task(TaskSpec("t", "m"), source=API, now=T0)
        blocker.execute("ROLLBACK")

        store.add_task(TaskSpec("t", "m"), source=API, now=T0)
        store.check_writable()
    finally:
        blocker.close()
        store.close()


# -- scale -------------------------------------------------------------------------------------
def test_active_tasks_streams_a_hundred_thousand_tasks(store: SqliteStore) -> None:
    n = 100_000
    store.add_tasks([TaskSpec(f"task_{i:06d}", "flux-2") for i in range(n)], source=API, now=T0)
    store.cancel_task("task_000007", now=T0 + 1)

    active = store.active_tasks()
    first = next(active)
    # Writes between items are safe: no statement stays open while the caller holds the stream.
    store.cancel_task("task_099999", now=T0 + 2)
    ids = [first.task_id, *(t.task_id for t in active)]

    assert inspect.isgenerator(active)  # a stream, not a list built up front
    assert len(ids) == n - 2
    assert len(set(ids)) == len(ids)
    assert "task_000007" not in ids
    assert "task_099999" not in ids


def test_active_tasks_come_once_each_pending_then_processing(store: SqliteStore) -> None:
    # The stream walks tasks_by_state one state after the other, in (registered_at, task_id)
    # batches of 500: several batches of each state, many registered at the same instant (the
    # key's tie-break), and finished ones in between.
    ids = [f"t{i:04d}" for i in range(1600)]
    for start in range(0, len(ids), 400):
        specs = [TaskSpec(task_id, "m") for task_id in ids[start : start + 400]]
        store.add_tasks(specs, source=API, now=T0 + start // 800)
    processing = set(ids[1:1100:2])
    for task_id in sorted(processing):
        store.apply_transition(
            Transition(task_id, TaskState.PENDING, TaskState.PROCESSING, T0 + 5, "processing")
        )
    finished = set(ids[::97])
    for task_id in sorted(finished):
        store.cancel_task(task_id, now=T0 + 6)

    active = [(t.task_id, t.state) for t in store.active_tasks()]

    pending = [i for i in ids if i not in processing and i not in finished]
    running = [i for i in ids if i in processing and i not in finished]
    assert active == [(i, TaskState.PENDING) for i in pending] + [
        (i, TaskState.PROCESSING) for i in running
    ]


def test_durations_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    first = SqliteStore(path)
    first.record_durations([("m", 3.5, T0)])
    first.close()
    second = SqliteStore(path)
    try:
        assert second.recent_durations(5) == {"m": [3.5]}
    finally:
        second.close()
