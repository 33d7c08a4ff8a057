"""copy-store (watcher/store/copy.py) from a real SQLite file into a real PostgreSQL: every
record equal after the copy, through the store APIs and in the raw rows; a second run changes
nothing; conflicts reported; records further along in SQLite updated; an interrupted copy
finished by the next run; the URL's password kept out of everything it says."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.helpers.postgres import fresh_schema
from tests.helpers.sqlite_sample import (
    DUMP_QUERIES,
    T0,
    attempt,
    build_sample_store,
    delivery,
    dump_sqlite,
    event,
)
from tests.integration.cli.test_migrate import _with_password
from watcher.errors import StoreError
from watcher.models import (
    AttemptOutcome,
    EventType,
    MirrorStatus,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.adapter import AsyncAdapter
from watcher.store.bulk import Conflict, ImportResult, TableCounts, TaskRecords
from watcher.store.copy import STEPS, CopyReport, CopyStep, copy_store
from watcher.store.postgres import PostgresStore
from watcher.store.postgres_import import WRITTEN_COLUMNS
from watcher.store.sqlite import SqliteStore

TABLES = tuple(DUMP_QUERIES)


@dataclasses.dataclass
class Heard:
    """A CopyObserver that keeps what it is told."""

    warnings: list[str] = dataclasses.field(default_factory=list)
    conflicts: list[Conflict] = dataclasses.field(default_factory=list)
    progress_seen: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def conflict(self, conflict: Conflict) -> None:
        self.conflicts.append(conflict)

    def progress(self, step: str, done: int, total: int, tables: Mapping[str, TableCounts]) -> None:
        self.progress_seen.append((step, done, total))


@pytest.fixture
def target(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL store of its own (a fresh schema)."""
    with fresh_schema(postgres_url) as url:
        yield url


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "watcher.db"
    build_sample_store(path).close()
    return path


def dump_postgres(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The rows as DUMP_QUERIES reads them from SQLite (json columns as their text)."""
    with psycopg.connect(url) as conn:
        found = {}
        for table, query in DUMP_QUERIES.items():
            query = query.replace("endpoints,", "endpoints::text,").replace(
                "metadata,", "metadata::text,"
            )
            found[table] = [tuple(row) for row in conn.execute(query).fetchall()]
        return found


def full_dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, every column, and the transaction that last wrote it (xmin):
    a row rewritten with the same values would show."""
    with psycopg.connect(url) as conn:
        found = {}
        for table in (*TABLES, "instances", "heartbeat"):
            query = sql.SQL("SELECT xmin::text, t::text FROM {} AS t ORDER BY 2").format(
                sql.Identifier(table)
            )
            found[table] = conn.execute(query).fetchall()
        return found


async def copy(source: Path, url: str, **kwargs: Any) -> tuple[CopyReport, Heard]:
    heard = Heard()
    report = await copy_store(source, url, observer=heard, **kwargs)
    return report, heard


# -- a copy --------------------------------------------------------------------------------------
async def test_every_record_is_equal_after_the_copy(source: Path, target: str) -> None:
    report, heard = await copy(source, target, batch_size=3)  # two batches

    assert report.complete
    assert heard.progress_seen == [
        ("tasks", 0, 5),
        ("tasks", 3, 5),
        ("tasks", 5, 5),
        ("durations", 0, 4),
        ("durations", 3, 4),
        ("durations", 4, 4),
    ]
    assert {t: c.new for t, c in report.tables.items()} == {
        "tasks": 5,
        "state_changes": 5,
        "events": 3,
        "deliveries": 3,
        "attempts": 6,
        "mirror_holds": 1,
        "mirror_files": 2,
        "task_durations": 4,
    }
    # The raw rows: every column of every record (bodies byte for byte, metadata as written).
    assert dump_postgres(target) == dump_sqlite(source)
    # And through the stores' own reads.
    sqlite = AsyncAdapter(SqliteStore(source))
    pg = await PostgresStore.open(target)
    try:
        tasks, _ = await sqlite.list_tasks(limit=1000)
        assert (await pg.list_tasks(limit=1000))[0] == tasks
        assert await pg.count_tasks() == await sqlite.count_tasks()
        assert await pg.count_deliveries() == await sqlite.count_deliveries()
        for task in tasks:
            assert await pg.state_changes(task.task_id) == await sqlite.state_changes(task.task_id)
            events = await sqlite.events_for_task(task.task_id)
            assert await pg.events_for_task(task.task_id) == events  # same order of ties
            ids = [e.event_id for e in events]
            assert await pg.event_bodies(ids) == await sqlite.event_bodies(ids)
            deliveries, _ = await sqlite.list_deliveries(task_id=task.task_id)
            assert (await pg.list_deliveries(task_id=task.task_id))[0] == deliveries
            for d in deliveries:
                assert await pg.attempts(d.delivery_id) == await sqlite.attempts(d.delivery_id)
        assert [d.delivery_id async for d in pg.pending_deliveries()] == [
            d.delivery_id async for d in sqlite.pending_deliveries()
        ]
        # The success waiting for its mirror still waits, for the same files.
        assert await pg.held_mirrors() == await sqlite.held_mirrors()
        assert [h.event.task_id for h in await pg.held_mirrors()] == ["t-held"]
        assert await pg.recent_durations(10) == await sqlite.recent_durations(10)
    finally:
        await pg.close()
        await sqlite.close()


async def test_a_second_run_changes_nothing(source: Path, target: str) -> None:
    await copy(source, target)
    before = full_dump(target)

    report, heard = await copy(source, target, batch_size=2)

    assert full_dump(target) == before
    assert report.complete
    for table, counts in report.tables.items():
        assert counts.read == counts.unchanged > 0, table
    assert heard.conflicts == []


async def test_every_column_of_the_schema_is_copied(target: str) -> None:
    store = await PostgresStore.open(target)  # applies the schema
    await store.close()
    own = {"id", "seq", "claimed_by"}  # the database's: surrogate keys and cluster claims
    # Every table of the schema is copied but the cluster's own.
    assert set(WRITTEN_COLUMNS) == set(TABLES)
    with psycopg.connect(target) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        assert {r[0] for r in tables} - set(TABLES) == {"instances", "heartbeat", "watcher_schema"}
        for table, written in WRITTEN_COLUMNS.items():
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = current_schema()",
                (table,),
            ).fetchall()
            assert {r[0] for r in rows} - own == set(written.split(", ")), table


# -- what the database holds already -----------------------------------------------------------
async def test_a_task_with_another_model_is_a_conflict_and_the_rest_is_copied(
    source: Path, target: str
) -> None:
    store = await PostgresStore.open(target)
    await store.add_task(TaskSpec("t-done", "sora-2"), source=TaskSource.API, now=T0)
    await store.close()

    report, heard = await copy(source, target)

    assert not report.complete
    assert report.conflicts_total == 1
    (conflict,) = heard.conflicts
    assert conflict == report.conflicts[0]
    assert (conflict.table, conflict.key) == ("tasks", "t-done")
    assert "model 'sora-2', not 'nano-banana'" in conflict.message
    tables = report.tables
    assert (tables["tasks"].conflicts, tables["tasks"].new) == (1, 4)
    # t-done's history, events, deliveries and attempts are not copied; everything else is.
    assert tables["events"].skipped == 2
    assert tables["deliveries"].skipped == 2
    assert tables["attempts"].skipped == 5
    rows, expected = dump_postgres(target), dump_sqlite(source)
    for table in TABLES:
        theirs = [r for r in rows[table] if "t-done" not in repr(r)]
        assert theirs == [r for r in expected[table] if "t-done" not in repr(r)], table
    assert [r[:2] for r in rows["tasks"] if r[0] == "t-done"] == [("t-done", "sora-2")]

    again, _ = await copy(source, target)  # still reported, still nothing else to do
    assert again.conflicts_total == 1
    assert again.tables["tasks"].unchanged == 4


async def test_an_event_with_another_body_is_a_conflict(source: Path, target: str) -> None:
    await copy(source, target)
    with psycopg.connect(target) as conn:
        conn.execute(
            "UPDATE events SET body = %s WHERE event_id = 'evt_t-busy_1'", (b'{"other":1}',)
        )

    report, heard = await copy(source, target)

    (conflict,) = heard.conflicts
    assert (conflict.table, conflict.key) == ("events", "evt_t-busy_1")
    assert "another body" in conflict.message
    assert report.tables["deliveries"].skipped == 1  # its delivery, left as it is


async def test_records_further_along_in_sqlite_are_updated(source: Path, target: str) -> None:
    await copy(source, target)
    # The old daemon ran on after the copy: t-pending finished (event, delivery, attempt),
    # t-busy's callback got through, and polls went on.
    store = SqliteStore(source)
    done = event("t-pending", EventType.FAILED, T0 + 40, 1)
    d = delivery(done, "app")
    store.apply_transition(
        Transition(
            "t-pending",
            TaskState.PENDING,
            TaskState.FAILED,
            T0 + 40,
            "upstream state fail",
            "fail",
            polls=9,
            event=done,
            deliveries=(d,),
        )
    )
    attempt(store, d, T0 + 41, AttemptOutcome.SUCCEEDED)
    cb = store.get_delivery("dlv_evt_t-busy_1_callback")
    attempt(store, cb, T0 + 50, AttemptOutcome.SUCCEEDED)
    store.record_polls({"t-busy": 11}, errors={})
    # t-held's second file was copied and its webhook released; one more duration learned.
    (_, second) = store.mirror_files("t-held")
    store.update_mirror_files(
        [dataclasses.replace(second, status=MirrorStatus.DONE, updated_at=T0 + 51, attempts=1)]
    )
    released = event("t-held", EventType.SUCCEEDED, T0 + 52, 1)  # the held one's id
    assert store.release_mirror("t-held", released, [delivery(released, "app")])
    store.record_durations([("flux-2", 30.0, T0 + 40)])
    store.close()

    report, _ = await copy(source, target)

    assert dump_postgres(target) == dump_sqlite(source)
    tables = report.tables
    assert (tables["tasks"].updated, tables["tasks"].unchanged) == (2, 3)
    assert (tables["state_changes"].new, tables["events"].new) == (1, 2)
    assert (tables["deliveries"].new, tables["deliveries"].updated) == (2, 1)
    assert tables["attempts"].new == 2
    # The hold the source released is dropped with its event's arrival: sent once, from here.
    assert (tables["mirror_holds"].read, tables["mirror_holds"].updated) == (0, 1)
    assert (tables["mirror_files"].updated, tables["mirror_files"].unchanged) == (1, 1)
    assert (tables["task_durations"].new, tables["task_durations"].unchanged) == (1, 4)
    pg = await PostgresStore.open(target)
    try:
        assert await pg.held_mirrors() == []
    finally:
        await pg.close()


async def test_a_hold_released_in_postgres_is_not_put_back(source: Path, target: str) -> None:
    await copy(source, target)
    # The new daemon released t-held's webhook; the SQLite file still holds it.
    pg = await PostgresStore.open(target)
    try:
        (hold,) = await pg.held_mirrors()
        released = dataclasses.replace(hold.event, created_at=T0 + 60)
        assert await pg.release_mirror("t-held", released, [delivery(released, "app")])
    finally:
        await pg.close()
    before = full_dump(target)

    report, heard = await copy(source, target)

    assert full_dump(target) == before
    assert report.tables["mirror_holds"].unchanged == 1
    assert heard.conflicts == []


async def test_a_hold_of_another_event_is_a_conflict(source: Path, target: str) -> None:
    await copy(source, target)
    with psycopg.connect(target) as conn:
        conn.execute("UPDATE mirror_holds SET body = %s WHERE task_id = 't-held'", (b"{}",))
        conn.execute("UPDATE mirror_files SET attempts = 0, updated_at = 0")

    report, heard = await copy(source, target)

    (conflict,) = heard.conflicts
    assert (conflict.table, conflict.key) == ("mirror_holds", "t-held")
    assert "another body" in conflict.message
    assert report.tables["mirror_files"].skipped == 2  # its files, left as they are
    assert report.tables["mirror_files"].updated == 0


async def test_durations_already_learned_in_postgres_are_not_doubled(
    source: Path, target: str
) -> None:
    pg = await PostgresStore.open(target)
    try:  # the new daemon learned one sample the old one has too, and one of its own
        await pg.record_durations([("sora-2", 95.5, T0 + 5), ("sora-2", 60.0, T0 + 90)])
    finally:
        await pg.close()

    report, _ = await copy(source, target, batch_size=2)

    counts = report.tables["task_durations"]
    assert (counts.read, counts.new, counts.unchanged) == (4, 3, 1)
    # Each of SQLite's samples is there as many times as it is in SQLite (its twice, once
    # copied), then what PostgreSQL had of its own.
    rows = dump_postgres(target)["task_durations"]
    assert sorted(rows) == sorted(
        [*dump_sqlite(source)["task_durations"], ("sora-2", 60.0, T0 + 90)]
    )
    again, _ = await copy(source, target)
    assert again.tables["task_durations"].new == 0


async def test_an_interrupted_copy_is_finished_by_the_next_run(source: Path, target: str) -> None:
    step = STEPS[0]
    written = 0

    async def fail_after_one(store: PostgresStore, batch: TaskRecords) -> ImportResult:
        nonlocal written
        if written == 1:
            raise StoreError("the connection was lost")
        written += 1
        return await store.import_task_records(batch)

    broken: CopyStep[TaskRecords] = dataclasses.replace(step, write=fail_after_one)
    with pytest.raises(StoreError, match="connection was lost"):
        await copy(source, target, batch_size=2, steps=[broken])

    # The first batch is there whole: its tasks with every record under them.
    rows, expected = dump_postgres(target), dump_sqlite(source)
    first = {r[0] for r in rows["tasks"]}
    assert len(first) == 2
    for table in TABLES:
        assert rows[table] == [r for r in expected[table] if any(t in repr(r) for t in first)]

    report, _ = await copy(source, target, batch_size=2)

    assert dump_postgres(target) == expected
    assert report.tables["tasks"].unchanged == 2
    assert report.tables["tasks"].new == 3


# -- what it says ----------------------------------------------------------------------------------
async def test_the_password_never_shows(source: Path, target: str) -> None:
    url, secrets = _with_password(target)

    report, heard = await copy(source, url)

    said = [report.target, *heard.warnings, *(c.message for c in heard.conflicts)]
    assert all(s not in text for s in secrets for text in said)
    assert "***" in report.target
    with pytest.raises(StoreError) as refused:
        await copy(source, "postgresql://watcher:pw-Hunter2-secret@127.0.0.1:1/watcher")
    assert "pw-Hunter2-secret" not in str(refused.value)
    assert "postgresql://watcher:***@127.0.0.1:1/watcher" in str(refused.value)


async def test_a_refused_source_writes_nothing(tmp_path: Path, target: str) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await copy(tmp_path / "missing.db", target)
    with psycopg.connect(target) as conn:  # not even the schema: the database was not opened
        assert conn.execute("SELECT to_regclass('tasks')").fetchone() == (None,)
