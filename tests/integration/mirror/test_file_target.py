"""Downloads from a real loopback file server into the directory target on a real filesystem:
sizes from nothing to hundreds of MiB, the size cap, redirects, errors; never a partial file
under a final name, never a temporary left behind."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from tests.helpers.files import FileServer, sha256_of, start_file_server
from watcher.clock import ManualClock
from watcher.config.settings import MirrorConfig
from watcher.errors import MirrorError
from watcher.mirror.copy import copy_file
from watcher.mirror.fetch import BATCH_BYTES, Fetched
from watcher.mirror.targets import TEMP_PREFIX, WRITEBACK_BYTES, FileTarget
from watcher.mirror.worker import MirrorWorker
from watcher.store.adapter import AsyncAdapter
from watcher.store.memory import MemoryStore

MiB = 1024 * 1024
NOW = 1_800_000_000.0


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with start_file_server() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def target(tmp_path: Path) -> FileTarget:
    t = FileTarget(tmp_path / "results" / "deep")
    assert await t.prepare() == 0
    return t


def on_disk(target: FileTarget) -> list[str]:
    return sorted(str(p.relative_to(target.directory)) for p in target.directory.rglob("*"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


async def copy(
    session: aiohttp.ClientSession, target: FileTarget, url: str, key: str, max_bytes: int = 1 << 40
) -> Fetched:
    return await copy_file(session, target, url, key, max_bytes=max_bytes, timeout_s=30)


@pytest.mark.parametrize(
    ("size", "name"), [(0, "empty.bin"), (1, "one.png"), (3 * MiB + 7, "a.mp4")]
)
async def test_files_are_copied_whole_with_their_hash_and_type(
    files: FileServer, session: aiohttp.ClientSession, target: FileTarget, size: int, name: str
) -> None:
    fetched = await copy(session, target, files.file(size, name), f"t1/0-{name}")

    path = target.directory / "t1" / f"0-{name}"
    assert sha256_file(path) == sha256_of(size, name) == fetched.sha256  # checked on the bytes
    assert fetched.bytes == size == path.stat().st_size
    assert (
        fetched.content_type
        == {
            "empty.bin": "application/octet-stream",
            "one.png": "image/png",
            "a.mp4": "video/mp4",
        }[name]
    )
    assert on_disk(target) == ["t1", f"t1/0-{name}"]
    assert await target.stat(f"t1/0-{name}") == Fetched(fetched.sha256, size, fetched.content_type)
    assert await target.stat("t1/9-none") is None


async def test_a_file_of_hundreds_of_mib_without_content_length(
    files: FileServer, session: aiohttp.ClientSession, target: FileTarget
) -> None:
    size = 300 * MiB + 1
    fetched = await copy(session, target, files.file(size, "big.mp4", chunked=1), "t/0-big.mp4")
    assert fetched.bytes == size
    assert sha256_file(target.directory / "t" / "0-big.mp4") == sha256_of(size, "big.mp4")
    assert on_disk(target) == ["t", "t/0-big.mp4"]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize(
    "size",
    [
        BATCH_BYTES - 1,
        BATCH_BYTES,
        BATCH_BYTES + 1,
        3 * BATCH_BYTES + 12345,
        2 * WRITEBACK_BYTES + 1,  # the kernel is asked to write back as the file grows
    ],
)
async def test_every_byte_is_hashed_and_written_once_whatever_the_batch_boundaries(
    files: FileServer, session: aiohttp.ClientSession, target: FileTarget, size: int, chunked: bool
) -> None:
    query = {"chunked": 1} if chunked else {}
    fetched = await copy(session, target, files.file(size, "b.bin", **query), "t/0-b.bin")
    assert fetched == Fetched(sha256_of(size, "b.bin"), size, "application/octet-stream")
    assert sha256_file(target.directory / "t" / "0-b.bin") == fetched.sha256


async def test_a_slow_server_trickling_small_pieces_is_copied_whole(
    files: FileServer, session: aiohttp.ClientSession, target: FileTarget
) -> None:
    size = 300_000  # sent in pieces of 10 KB over half a second
    fetched = await copy(session, target, files.file(size, "s.bin", rate=600_000), "t/0-s.bin")
    assert fetched.sha256 == sha256_of(size, "s.bin")
    assert sha256_file(target.directory / "t" / "0-s.bin") == fetched.sha256


async def test_an_upload_written_from_the_event_loop_is_stored_whole(target: FileTarget) -> None:
    # The path a target without a blocking writer takes (S3); the directory target has both.
    upload = target.upload("t/0-x.bin")
    upload.start("application/octet-stream")
    await upload.write([b"ab", b"", b"cd"])
    await upload.write([b"e" * BATCH_BYTES])
    fetched = Fetched("unused", 4 + BATCH_BYTES, None)
    await upload.commit(fetched)
    await target.sync(["t/0-x.bin"])
    assert (target.directory / "t" / "0-x.bin").read_bytes() == b"abcd" + b"e" * BATCH_BYTES
    assert on_disk(target) == ["t", "t/0-x.bin"]


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_file_over_the_cap_is_refused_and_leaves_nothing(
    files: FileServer, session: aiohttp.ClientSession, target: FileTarget, chunked: bool
) -> None:
    query = {"chunked": 1} if chunked else {}
    with pytest.raises(MirrorError) as info:
        await copy(session, target, files.file(5 * MiB, "x.bin", **query), "t/0-x.bin", 4 * MiB)
    assert info.value.permanent
    assert "larger than mirror.max_file_bytes (4MiB)" in info.value.message
    assert on_disk(target) == []


@pytest.mark.parametrize(
    ("path", "message", "permanent"),
    [
        ("/missing", "HTTP 404", True),
        ("/status/410", "HTTP 410", True),
        ("/status/429", "HTTP 429", False),
        ("/status/503", "HTTP 503", False),
    ],
)
async def test_error_answers(
    files: FileServer,
    session: aiohttp.ClientSession,
    target: FileTarget,
    path: str,
    message: str,
    permanent: bool,
) -> None:
    with pytest.raises(MirrorError) as info:
        await copy(session, target, files.url(path), "t/0-x")
    assert (info.value.message, info.value.permanent) == (message, permanent)
    assert on_disk(target) == []


async def test_a_body_cut_short_is_worth_another_try_and_leaves_nothing(
    files: FileServer, session: aiohttp.ClientSession, target: FileTarget
) -> None:
    with pytest.raises(MirrorError) as info:
        await copy(session, target, files.file(4 * MiB, "x.bin", short=MiB), "t/0-x.bin")
    assert not info.value.permanent
    assert on_disk(target) == []


async def test_redirects_are_followed_to_http_only(
    files: FileServer, session: aiohttp.ClientSession, target: FileTarget
) -> None:
    good = files.url("/redirect") + "?to=" + "/files/10/r.png"
    assert (await copy(session, target, good, "t/0-r.png")).sha256 == sha256_of(10, "r.png")

    for scheme_url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://x/"):
        with pytest.raises(MirrorError) as info:
            await copy(session, target, files.url("/redirect") + "?to=" + scheme_url, "t/1-x")
        assert info.value.permanent
        assert "redirect to a URL that is not http(s)" in info.value.message
        assert scheme_url not in info.value.message
    assert on_disk(target) == ["t", "t/0-r.png"]


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a", "data:,x", "http:///x"]
)
async def test_only_http_result_urls_are_fetched(
    session: aiohttp.ClientSession, target: FileTarget, url: str
) -> None:
    with pytest.raises(MirrorError) as info:
        await copy(session, target, url, "t/0-x")
    assert info.value.permanent
    assert on_disk(target) == []


async def test_a_refused_write_is_an_error_not_a_crash(
    files: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Tests may run as root, which no permission stops: the directory is gone and a file has
    # taken its place, so creating the temporary file fails as a full disk would.
    target = FileTarget(tmp_path / "r")
    await target.prepare()
    target.directory.rmdir()
    target.directory.write_bytes(b"")
    with pytest.raises(MirrorError) as info:
        await copy(session, target, files.file(3 * MiB, "x.bin"), "t/0-x.bin")
    assert not info.value.permanent
    assert info.value.message == "cannot write the mirrored file: Not a directory"
    assert list(tmp_path.iterdir()) == [target.directory]


async def test_prepare_creates_the_directory_and_removes_leftover_temporaries(
    tmp_path: Path,
) -> None:
    target = FileTarget(tmp_path / "r")
    assert await target.prepare() == 0
    (target.directory / f"{TEMP_PREFIX}crashed").write_bytes(b"half")
    (target.directory / "t").mkdir()
    (target.directory / "t" / "0-kept.png").write_bytes(b"whole")
    assert await target.prepare() == 1
    assert on_disk(target) == ["t", "t/0-kept.png"]


async def test_with_other_instances_only_stale_leftovers_are_removed(tmp_path: Path) -> None:
    # Several instances share the target: a temporary file being written now is another
    # instance's copy in progress; one untouched for longer than mirror.timeout is a crash's.
    target = FileTarget(tmp_path / "r")
    await target.prepare()
    writing = target.directory / f"{TEMP_PREFIX}writing"
    writing.write_bytes(b"half")
    crashed = target.directory / f"{TEMP_PREFIX}crashed"
    crashed.write_bytes(b"half")
    now = time.time()
    os.utime(crashed, (now - 3600, now - 3600))
    assert await target.prepare(stale_before=now - 600) == 1
    assert writing.exists()
    assert not crashed.exists()


async def test_retention_deletes_old_files_and_empty_task_directories(tmp_path: Path) -> None:
    target = FileTarget(tmp_path / "r")
    await target.prepare()
    for key, mtime in (("old/0-a", 1000.0), ("old/1-b", 1000.0), ("mixed/0-a", 1000.0)):
        path = target.directory / key
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    (target.directory / "mixed" / "1-new").write_bytes(b"y")

    assert sorted(await target.delete_older_than(2000.0)) == ["mixed/0-a", "old/0-a", "old/1-b"]
    assert on_disk(target) == ["mixed", "mixed/1-new"]
    assert target.location("mixed/1-new") == (target.directory / "mixed/1-new").as_uri()


async def test_a_directory_removed_while_running_is_made_again(
    files: FileServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    target = FileTarget(tmp_path / "r")
    await target.prepare()
    target.directory.rmdir()
    fetched = await copy(session, target, files.file(10, "x.png"), "t/0-x.png")
    assert sha256_file(target.directory / "t" / "0-x.png") == fetched.sha256


async def test_the_worker_deletes_expired_files_logs_and_counts_them(tmp_path: Path) -> None:
    target = FileTarget(tmp_path / "r")
    await target.prepare()
    for key, age_days in (("old/0-a", 31), ("new/0-b", 1)):
        path = target.directory / key
        path.parent.mkdir()
        path.write_bytes(b"x")
        os.utime(path, (NOW - age_days * 86400, NOW - age_days * 86400))
    counted: list[int] = []

    class Observer:
        def mirror_file(self, outcome: str, size: int, duration_s: float) -> None: ...

        def mirror_deleted(self, files: int) -> None:
            counted.append(files)

    worker = MirrorWorker(
        store=AsyncAdapter(MemoryStore()),
        target=target,
        config=MirrorConfig(target="file:///r", directory=target.directory, retention_s=30 * 86400),
        sink=None,  # type: ignore[arg-type] - nothing is held
        clock=ManualClock(NOW),
        observer=Observer(),
    )
    with capture_logs() as logs:
        assert await worker.delete_expired() == 1
    assert on_disk(target) == ["new", "new/0-b"]
    assert counted == [1]
    assert {"event": "mirror_files_expired", "files": 1, "log_level": "info"} in logs
