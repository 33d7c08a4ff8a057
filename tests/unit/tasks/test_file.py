"""The tasks file importer: when it imports, what it skips, how requests coalesce.

A real file on disk, the in-memory store and the in-process reader; the child process reader
and the daemon around it are tested in tests/integration/tasks.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from watcher.clock import SystemClock
from watcher.config.settings import parse_config
from watcher.models import TaskSource, TaskSpec
from watcher.service import WatchService
from watcher.store.adapter import AsyncAdapter
from watcher.store.memory import MemoryStore
from watcher.store.sqlite import SqliteStore
from watcher.tasks.file import TasksFileImporter, settled
from watcher.tasks.reader import InlineReader, Message, ReaderFailed, ReadRequest, read_messages
from watcher.tasks.scan import scan_tasks
from watcher.tasks.spec import parse_task_spec

T0 = 1_700_000_000.0
CONFIG = """\
upstream: {api_key: k}
endpoints:
  - name: app
    url: http://127.0.0.1:9/h
    secret: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=
"""


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def service(tmp_path: Path) -> WatchService:
    config = parse_config(CONFIG, source="c.yaml", base_dir=tmp_path, environ={})
    return WatchService(store=AsyncAdapter(MemoryStore()), config=config, clock=SystemClock())


def write(path: Path, text: str, *, age_s: float = 60.0) -> None:
    path.write_text(text)
    at = time.time() - age_s
    os.utime(path, (at, at))


async def ids(service: WatchService) -> set[str]:
    tasks, _ = await service.list_tasks(limit=1000)
    return {t.task_id for t in tasks}


def importer(
    service: WatchService,
    path: Path,
    *,
    settle_s: float = 3.0,
    reader: object | None = None,
    monotonic: FakeMonotonic | None = None,
) -> TasksFileImporter:
    return TasksFileImporter(
        service=service,
        clock=SystemClock(),
        path=path,
        settle_s=settle_s,
        reader=reader or InlineReader(),  # type: ignore[arg-type]
        monotonic=monotonic or FakeMonotonic(),
    )


@pytest.mark.parametrize(
    ("mtime_age_s", "unchanged_for_s", "expected"),
    [
        (60.0, 0.0, True),  # written long ago, seen just now
        (3.0, 0.0, True),
        (2.9, 2.9, False),  # still being written
        (0.0, 3.0, True),  # watched unchanged long enough
        (-3600.0, 1.0, False),  # mtime in the future (clock stepped back): watch it instead
        (-3600.0, 3.0, True),
    ],
)
def test_a_file_has_settled_when_it_stopped_changing(
    mtime_age_s: float, unchanged_for_s: float, expected: bool
) -> None:
    assert (
        settled(mtime_age_s=mtime_age_s, unchanged_for_s=unchanged_for_s, settle_s=3.0) is expected
    )


async def test_imports_a_file_once_and_then_only_what_changed(
    service: WatchService, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    write(path, "tasks:\n  - {task_id: a, model: m}\n  - {task_id: b, model: m}\n")
    imp = importer(service, path)

    first = await imp.import_once()
    assert first is not None
    assert (first.outcome, first.registered) == ("imported", 2)
    assert await ids(service) == {"a", "b"}

    # Not asked and not changed: nothing at all. Asked (a reload): the bytes are compared.
    assert await imp.import_once(asked=False) is None
    again = await imp.import_once()
    assert again is not None
    assert again.outcome == "unchanged"

    write(path, path.read_text() + "  - {task_id: c, model: m}\n")
    third = await imp.import_once(asked=False)
    assert third is not None
    assert (third.outcome, third.registered, third.known, third.unchanged) == ("imported", 1, 0, 2)
    assert await ids(service) == {"a", "b", "c"}


async def test_removing_an_entry_cancels_nothing(service: WatchService, tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    write(path, "tasks:\n  - {task_id: a, model: m}\n  - {task_id: b, model: m}\n")
    imp = importer(service, path)
    await imp.import_once()
    write(path, "tasks:\n  - {task_id: b, model: m}\n", age_s=30)
    result = await imp.import_once(asked=False)
    assert result is not None
    assert (result.outcome, result.unchanged) == ("imported", 1)
    assert await ids(service) == {"a", "b"}
    assert (await service.get_task("a")).state.value == "pending"


async def test_a_file_still_changing_waits_for_the_settle_time(
    service: WatchService, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    clock = FakeMonotonic()
    imp = importer(service, path, settle_s=3.0, monotonic=clock)
    write(path, "tasks:\n  - {task_id: a, model: m}\n", age_s=0)

    result = await imp.import_once()
    assert result is not None
    assert result.outcome == "unsettled"
    clock.now += 2.0
    result = await imp.import_once(asked=False)
    assert result is not None
    assert result.outcome == "unsettled"
    assert await ids(service) == set()

    # Another piece arrives: the wait starts over.
    write(path, "tasks:\n  - {task_id: a, model: m}\n  - {task_id: b, model: m}\n", age_s=0)
    clock.now += 2.0
    result = await imp.import_once(asked=False)
    assert result is not None
    assert result.outcome == "unsettled"
    clock.now += 3.0
    result = await imp.import_once(asked=False)
    assert result is not None
    assert (result.outcome, result.registered) == ("imported", 2)


async def test_a_last_line_without_newline_is_unfinished_and_imports_nothing(
    service: WatchService, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    write(path, "tasks:\n  - {task_id: a, model: m}\n  - {task_id: order-00")
    imp = importer(service, path)
    with capture_logs() as logs:
        result = await imp.import_once()
    assert result is not None
    assert result.outcome == "unfinished"
    assert await ids(service) == set()
    (warning,) = [e for e in logs if e["event"] == "tasks_file_unfinished"]
    assert warning["line"] == 3

    write(path, path.read_text() + "42, model: m}\n")
    result = await imp.import_once(asked=False)
    assert result is not None
    assert result.outcome == "imported"
    assert await ids(service) == {"a", "order-0042"}


async def test_a_file_that_does_not_parse_registers_nothing(
    service: WatchService, tmp_path: Path
) -> None:
    # Cut off inside a flow list that spans lines: every line ends, the document does not.
    path = tmp_path / "tasks.yaml"
    write(path, "tasks: [\n  {task_id: a, model: m},\n  {task_id: order-00\n")
    imp = importer(service, path)
    with capture_logs() as logs:
        result = await imp.import_once()
    assert result is not None
    assert result.outcome == "rejected"
    assert await ids(service) == set()
    assert any(e["event"] == "tasks_file_rejected" for e in logs)
    (invalid,) = [e for e in logs if e["event"] == "tasks_file_invalid"]
    assert invalid["line"] == 4


async def test_bad_entries_are_logged_with_their_lines(
    service: WatchService, tmp_path: Path
) -> None:
    await service.register(TaskSpec(task_id="taken", model="other"), source=TaskSource.API)
    path = tmp_path / "tasks.yaml"
    write(
        path,
        "tasks:\n"
        "  - {task_id: a, model: m}\n"
        "  - {task_id: b}\n"
        "  - {task_id: taken, model: m}\n",  # registered with another model
    )
    imp = importer(service, path)
    with capture_logs() as logs:
        result = await imp.import_once()
    assert result is not None
    assert (result.outcome, result.registered) == ("imported", 1)
    invalid = [(e["line"], e["key"]) for e in logs if e["event"] == "tasks_file_entry_invalid"]
    assert invalid == [(3, "tasks[1].model"), (4, "tasks[2]")]
    assert await ids(service) == {"a", "taken"}


async def test_a_conflict_skips_only_its_entry_of_the_batch(
    service: WatchService, tmp_path: Path
) -> None:
    # One batch: new, known with the same model, known with another model, new, and the new
    # one again. The store refuses the batch; each entry is then registered on its own.
    await service.register(TaskSpec(task_id="same", model="m"), source=TaskSource.API)
    await service.register(TaskSpec(task_id="taken", model="other"), source=TaskSource.API)
    path = tmp_path / "tasks.yaml"
    write(
        path,
        "tasks:\n"
        "  - {task_id: a, model: m}\n"
        "  - {task_id: same, model: m}\n"
        "  - {task_id: taken, model: m}\n"
        "  - {task_id: b, model: m}\n"
        "  - {task_id: a, model: m}\n",
    )
    imp = importer(service, path)
    with capture_logs() as logs:
        result = await imp.import_once()
    assert result is not None
    assert (result.outcome, result.registered, result.known) == ("imported", 2, 2)
    invalid = [(e["line"], e["key"]) for e in logs if e["event"] == "tasks_file_entry_invalid"]
    assert invalid == [(4, "tasks[2]")]
    assert await ids(service) == {"a", "b", "same", "taken"}

    # The entries imported are skipped from now on; the conflicting one is read again.
    write(path, path.read_text() + "  - {task_id: c, model: m}\n")
    with capture_logs() as logs:
        again = await imp.import_once()
    assert again is not None
    assert (again.registered, again.known, again.unchanged) == (1, 0, 4)
    invalid = [(e["line"], e["key"]) for e in logs if e["event"] == "tasks_file_entry_invalid"]
    assert invalid == [(4, "tasks[2]")]


ENTRIES: list[dict[str, Any]] = [
    {"task_id": "plain", "model": "m"},
    {"task_id": "meta", "model": "m", "metadata": {"n": 1, "f": 0.5, "b": True, "z": None}},
    {"task_id": "deep", "model": "m", "metadata": {"l": [1, [2, {"k": "v"}]], "e": {}}},
    {"task_id": "text", "model": "m", "metadata": {"é": "日本", "q": 'a"b\\c', "nl": "x\ny"}},
    {"task_id": "keys", "model": "m", "metadata": {1: "int key", "big": 12345678901234567890}},
    {
        "task_id": "all",
        "model": "m2",
        "endpoints": ["app", "app"],
        "callback_url": "https://hooks.example.com/x",
        "deadline": "90s",
        "metadata": {"order": 7},
    },
]
# The shape programs write, which the reader takes without composing a node tree (scan.py).
PLAIN = (
    "tasks:\n"
    "  - task_id: plain\n    model: m\n"
    "  - task_id: meta\n    model: m\n    metadata: {n: 1, f: 0.5, b: true, z: null}\n"
    "  - task_id: all\n    model: m2\n    endpoints: [app, app]\n"
    "    callback_url: https://hooks.example.com/x\n    deadline: 90s\n"
    "    metadata: {order: 7}\n"
)


@pytest.mark.parametrize("shape", ["composed", "plain"])
async def test_a_file_registers_the_rows_the_intake_registers(tmp_path: Path, shape: str) -> None:
    # The file hands the store its entries' JSON as the validation wrote it; the intake's path
    # writes it in the store. The rows must be the same, byte for byte.
    config = parse_config(
        CONFIG + "delivery:\n  allowed_callback_hosts: [hooks.example.com]\n"
        "  callback_secret: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
        source="c.yaml",
        base_dir=tmp_path,
        environ={},
    )
    if shape == "plain":
        text = PLAIN
        entries = [e for e in ENTRIES if e["task_id"] in ("plain", "meta", "all")]
        assert scan_tasks(text) is not None
    else:
        text = yaml.safe_dump({"tasks": ENTRIES}, allow_unicode=True, sort_keys=False)
        entries = ENTRIES
        assert scan_tasks(text) is None
    path = tmp_path / "tasks.yaml"
    write(path, text)
    by_file = SqliteStore(tmp_path / "file.db")
    by_intake = SqliteStore(tmp_path / "intake.db")
    try:
        service = WatchService(store=AsyncAdapter(by_file), config=config, clock=SystemClock())
        result = await importer(service, path).import_once()
        assert result is not None
        assert (result.outcome, result.registered) == ("imported", len(entries))
        for raw in entries:
            spec = parse_task_spec(
                raw, endpoint_names=["app"], allowed_callback_hosts=["hooks.example.com"]
            )
            by_intake.add_task(spec, source=TaskSource.FILE, now=T0)
        assert rows(by_file) == rows(by_intake)
    finally:
        by_file.close()
        by_intake.close()


def rows(store: SqliteStore) -> list[tuple[object, ...]]:
    """Every task row without its registration times."""
    with sqlite3.connect(store.path) as conn:
        return conn.execute(
            "SELECT task_id, model, endpoints, callback_url, metadata, deadline_s, source, state"
            " FROM tasks ORDER BY task_id"
        ).fetchall()


async def test_the_import_line_counts_bad_entries_not_their_problems(
    service: WatchService, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    write(
        path,
        "tasks:\n"
        "  - {task_id: a, model: m}\n"
        "  - {deadline: soon}\n"  # no task_id, no model, a bad deadline: one entry
        "  - {task_id: b}\n",
    )
    imp = importer(service, path)
    with capture_logs() as logs:
        await imp.import_once()
    problems = [e for e in logs if e["event"] == "tasks_file_entry_invalid"]
    (imported,) = [e for e in logs if e["event"] == "tasks_file_imported"]
    assert len(problems) > 2  # the second entry has several
    assert (imported["registered"], imported["invalid"]) == (1, 2)


async def test_a_missing_file_is_one_warning_and_is_imported_once_it_appears(
    service: WatchService, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    imp = importer(service, path)
    with capture_logs() as logs:
        assert (await imp.import_once()) is not None
        assert (await imp.import_once(asked=False)) is None
    assert [e["event"] for e in logs] == ["tasks_file_missing"]
    write(path, "tasks:\n  - {task_id: a, model: m}\n")
    result = await imp.import_once(asked=False)
    assert result is not None
    assert result.outcome == "imported"


class FailingReader:
    async def read(self, request: ReadRequest) -> AsyncGenerator[Message, None]:
        for message in read_messages(request):
            yield message
            raise ReaderFailed("the tasks file reader failed: MemoryError")


async def test_a_failed_read_is_logged_and_the_daemon_goes_on(
    service: WatchService, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    write(path, "tasks:\n  - {task_id: a, model: m}\n")
    imp = importer(service, path, reader=FailingReader())
    with capture_logs() as logs:
        result = await imp.import_once()
    assert result is not None
    assert result.outcome == "failed"
    (error,) = [e for e in logs if e["event"] == "tasks_file_import_failed"]
    assert "MemoryError" in error["error"]
    # The next request reads it again (the failure was not remembered as "imported").
    imp._reader = InlineReader()
    result = await imp.import_once()
    assert result is not None
    assert result.outcome == "imported"


class GatedReader:
    """Counts reads; each read waits until the test opens the gate."""

    def __init__(self) -> None:
        self.reads = 0
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def read(self, request: ReadRequest) -> AsyncGenerator[Message, None]:
        self.reads += 1
        self.started.set()
        await self.gate.wait()
        for message in read_messages(request):
            yield message


async def test_requests_during_an_import_coalesce_into_one_more(
    service: WatchService, tmp_path: Path
) -> None:
    path = tmp_path / "tasks.yaml"
    write(path, "tasks:\n  - {task_id: a, model: m}\n")
    reader = GatedReader()
    imp = importer(service, path, reader=reader)
    runner = asyncio.create_task(imp.run(interval_s=0.01))
    try:
        await asyncio.wait_for(reader.started.wait(), 5)
        # The file changes and fifty reloads ask for it while the first import runs.
        write(path, path.read_text() + "  - {task_id: b, model: m}\n")
        for _ in range(50):
            imp.request()
        reader.gate.set()
        async with asyncio.timeout(5):
            while await ids(service) != {"a", "b"}:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # room for any further (wrong) imports
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    assert reader.reads == 2  # the one running, and one for all fifty requests
