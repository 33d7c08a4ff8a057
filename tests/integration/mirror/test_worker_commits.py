"""The mirror worker on a real loopback file server and a real directory: a task's copies are
made durable (one `sync`) and recorded (one store write) together; a copy whose `sync`
fails is tried again; a target whose commits are durable by themselves has each file recorded
at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.files import FileServer, sha256_of, start_file_server
from watcher.clock import SystemClock
from watcher.config.settings import MirrorConfig
from watcher.errors import MirrorError
from watcher.mirror.plan import plan_files
from watcher.mirror.targets import FileTarget
from watcher.mirror.worker import MirrorWorker
from watcher.models import Event, EventType, MirrorFile, MirrorHold, MirrorStatus

MiB = 1024 * 1024


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with start_file_server() as server:
        yield server


class RecordingStore:
    """The two store calls the worker makes, recorded (a fake: no task table behind it)."""

    def __init__(self) -> None:
        self.writes: list[list[MirrorFile]] = []

    async def held_mirrors(self) -> list[MirrorHold]:
        return []

    async def update_mirror_files(self, files: Sequence[MirrorFile]) -> None:
        self.writes.append(list(files))


class Sink:
    def __init__(self) -> None:
        self.finished: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def mirror_finished(self, hold: MirrorHold, extra: dict[str, Any]) -> None:
        await self.finished.put(extra)


class CountingTarget(FileTarget):
    """The directory target, counting its syncs; the first `failures` of them fail."""

    def __init__(self, directory: Path, *, failures: int = 0, needs_sync: bool = True) -> None:
        super().__init__(directory)
        self.needs_sync = needs_sync
        self.syncs: list[list[str]] = []
        self._failures = failures

    async def sync(self, keys: Sequence[str]) -> None:
        self.syncs.append(list(keys))
        if len(self.syncs) <= self._failures:
            raise MirrorError("cannot store the mirrored file: Input/output error")
        await super().sync(keys)


def hold_of(task_id: str, urls: Sequence[str]) -> MirrorHold:
    body = json.dumps({"type": "task.succeeded", "data": {"task_id": task_id}}).encode()
    event = Event(f"evt_{task_id}", task_id, EventType.SUCCEEDED, 1.0, body)
    return MirrorHold(event, plan_files(task_id, urls, now=1.0))


async def mirror(
    target: FileTarget, hold: MirrorHold, store: RecordingStore, *, timeout_s: float = 10.0
) -> dict[str, Any]:
    sink = Sink()
    worker = MirrorWorker(
        store=store,  # type: ignore[arg-type] - the two methods the worker uses
        target=target,
        config=MirrorConfig(
            target=target.directory.as_uri(),
            directory=target.directory,
            max_concurrency=4,
            timeout_s=timeout_s,
        ),
        sink=sink,
        clock=SystemClock(),
    )
    await worker.start()
    try:
        worker.hold(hold)
        return await asyncio.wait_for(sink.finished.get(), 30)
    finally:
        await worker.close()


async def test_a_tasks_copies_are_synced_and_recorded_together(
    files: FileServer, tmp_path: Path
) -> None:
    target = CountingTarget(tmp_path / "r")
    store = RecordingStore()
    names = [f"{i}.png" for i in range(3)]
    hold = hold_of("t1", [files.file(MiB + i, n) for i, n in enumerate(names)])

    extra = await mirror(target, hold, store)

    # All three copies ran at once (4 slots): the last to finish synced and recorded all.
    [synced] = target.syncs
    assert sorted(synced) == [f.key for f in hold.files]
    [written] = store.writes
    assert sorted(f.position for f in written) == [0, 1, 2]
    assert all(f.status is MirrorStatus.DONE and f.attempts == 1 for f in written)
    for entry, (i, name) in zip(extra["mirrored"], enumerate(names), strict=True):
        assert entry["sha256"] == sha256_of(MiB + i, name)
        data = (target.directory / entry["key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]


async def test_a_copy_that_cannot_be_made_durable_is_tried_again(
    files: FileServer, tmp_path: Path
) -> None:
    target = CountingTarget(tmp_path / "r", failures=1)
    store = RecordingStore()
    url = files.file(1000, "a.png")
    hold = hold_of("t2", [url])

    extra = await mirror(target, hold, store)

    assert files.hits["/files/1000/a.png"] == 2  # fetched again: the first copy never synced
    assert len(target.syncs) == 2
    retry, done = store.writes
    assert retry[0].status is MirrorStatus.PENDING
    assert retry[0].error == "cannot store the mirrored file: Input/output error"
    assert done[0].status is MirrorStatus.DONE
    assert done[0].attempts == 2
    assert [m["sha256"] for m in extra["mirrored"]] == [sha256_of(1000, "a.png")]
    assert "mirror_error" not in extra


async def test_a_target_durable_on_commit_has_each_file_recorded_at_once(
    files: FileServer, tmp_path: Path
) -> None:
    target = CountingTarget(tmp_path / "r", needs_sync=False)
    store = RecordingStore()
    hold = hold_of("t3", [files.file(10, "a.png"), files.file(20, "b.png")])

    extra = await mirror(target, hold, store)

    assert sorted(len(w) for w in store.writes) == [1, 1]
    assert sorted(len(s) for s in target.syncs) == [1, 1]
    assert len(extra["mirrored"]) == 2
