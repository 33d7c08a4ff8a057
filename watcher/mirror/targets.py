"""Where copies go: the `Target` interface and the directory target (`file://DIR`).

An upload writes under a temporary name and becomes visible under its key only when it is
whole (`commit`), so a crash never leaves a partial file under a final name. The directory
target writes `DIR/.tmp-*` files (the same filesystem, so the rename is atomic), fsyncs the
file and then its directory; `prepare` removes temporaries a crash left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import secrets
import threading
from pathlib import Path
from typing import Final, Protocol

from watcher.config.settings import MirrorConfig
from watcher.errors import MirrorError
from watcher.mirror.fetch import Fetched

TEMP_PREFIX: Final = ".tmp-"
_BUFFER_BYTES: Final = 1024 * 1024  # handed to the writer thread in pieces of this size


class Upload(Protocol):
    """One file on its way into the target."""

    def start(self, content_type: str | None) -> None:
        """The file's content type, known before its first byte."""
        ...

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self, fetched: Fetched) -> None:
        """Make the whole file visible under its key (replacing one there)."""
        ...

    async def abort(self) -> None:
        """Drop what was written; idempotent, never raises."""
        ...


class Target(Protocol):
    """A directory or a bucket that keeps mirrored files under keys."""

    def location(self, key: str) -> str:
        """The target's own URL of `key` (`file:///...`, `s3://bucket/...`)."""
        ...

    async def prepare(self, *, stale_before: float | None = None) -> int:
        """Make the target ready (create the directory, check the bucket) and remove what a
        crash left half-written (only what was started before `stale_before`, Unix seconds,
        when given: other instances may be writing to the same target); returns how many
        leftovers were removed."""
        ...

    def upload(self, key: str) -> Upload: ...

    async def stat(self, key: str) -> Fetched | None:
        """What is stored under `key` (sha256, size, content type), or None: lets a file
        committed just before a crash count as done without fetching it again."""
        ...

    async def delete_older_than(self, before: float) -> list[str]:
        """Delete the files stored before `before` (Unix seconds); returns their keys."""
        ...

    async def close(self) -> None: ...


def _os_error(what: str, exc: OSError) -> MirrorError:
    # strerror only ("No space left on device"): the path is the operator's, but stays out.
    return MirrorError(f"{what}: {exc.strerror or type(exc).__name__}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone already: nothing to remove


class FileTarget:
    """Files under `directory`, one per key (`TASK_ID/N-NAME`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def location(self, key: str) -> str:
        return (self.directory / key).as_uri()

    async def prepare(self, *, stale_before: float | None = None) -> int:
        return await asyncio.to_thread(self._prepare, stale_before)

    def _prepare(self, stale_before: float | None) -> int:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            leftovers = [p for p in self.directory.iterdir() if p.name.startswith(TEMP_PREFIX)]
            if stale_before is not None:  # a file being written has a recent mtime
                leftovers = [p for p in leftovers if _mtime(p) < stale_before]
            for path in leftovers:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(f"cannot prepare the mirror directory {self.directory}", exc) from exc
        return len(leftovers)

    def upload(self, key: str) -> FileUpload:
        return FileUpload(self.directory, key)

    async def stat(self, key: str) -> Fetched | None:
        return await asyncio.to_thread(self._stat, key)

    def _stat(self, key: str) -> Fetched | None:
        digest = hashlib.sha256()
        size = 0
        try:
            with (self.directory / key).open("rb") as f:
                while chunk := f.read(_BUFFER_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error("cannot read a mirrored file", exc) from exc
        content_type, _ = mimetypes.guess_type(key)
        return Fetched(digest.hexdigest(), size, content_type)

    async def delete_older_than(self, before: float) -> list[str]:
        return await asyncio.to_thread(self._delete_older_than, before)

    def _delete_older_than(self, before: float) -> list[str]:
        deleted: list[str] = []
        try:
            task_dirs = [p for p in self.directory.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return deleted
        for task_dir in task_dirs:
            for path in task_dir.iterdir():
                try:
                    if path.is_file() and path.stat().st_mtime < before:
                        path.unlink()
                        deleted.append(f"{task_dir.name}/{path.name}")
                except FileNotFoundError:
                    continue
            with contextlib.suppress(OSError):
                task_dir.rmdir()  # only when empty
        return deleted

    async def close(self) -> None:
        return None


class FileUpload:
    """A file written under `DIR/.tmp-RANDOM`, renamed to `DIR/KEY` when whole."""

    def __init__(self, directory: Path, key: str) -> None:
        self._final = directory / key
        self._temp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        self._fd: int | None = None
        self._buffer = bytearray()
        # A write runs in a thread that a cancelled coroutine cannot stop: abort takes this
        # lock, so it waits for that write to end, and a write after the abort does nothing.
        self._lock = threading.Lock()
        self._aborted = False

    def start(self, content_type: str | None) -> None:
        return None  # a file keeps no content type; the store records it

    async def write(self, chunk: bytes) -> None:
        if not self._buffer and len(chunk) >= _BUFFER_BYTES:
            await asyncio.to_thread(self._write_all, chunk)  # no copy for a whole batch
            return
        self._buffer += chunk
        if len(self._buffer) >= _BUFFER_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        await asyncio.to_thread(self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        with self._lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        if self._aborted:
            raise MirrorError("the copy was abandoned")
        try:
            if self._fd is None:
                self._fd = self._create()
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise _os_error("cannot write the mirrored file", exc) from exc

    def _create(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            return os.open(self._temp, flags, 0o644)
        except FileNotFoundError:
            # The directory went away while the daemon ran (cleaned up by hand): make it again.
            self._temp.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self._temp, flags, 0o644)

    async def commit(self, fetched: Fetched) -> None:
        await self._flush()
        await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        with self._lock:
            self._commit_locked()

    def _commit_locked(self) -> None:
        try:
            if self._fd is None:  # an empty file
                self._write_locked(b"")
            assert self._fd is not None
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            # The task's directory is new for its first file: then its parent records it.
            new_dir = not self._final.parent.is_dir()
            self._final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._temp, self._final)
            # The rename is durable before the store records the file as done.
            for directory in (self._final.parent, self._final.parent.parent)[: 1 + new_dir]:
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise _os_error("cannot store the mirrored file", exc) from exc

    async def abort(self) -> None:
        self._buffer = bytearray()
        await asyncio.to_thread(self._abort)

    def _abort(self) -> None:
        with self._lock:
            self._aborted = True
            self._abort_locked()

    def _abort_locked(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self._temp.unlink(missing_ok=True)


def open_target(config: MirrorConfig) -> Target:
    """The target `config` names: a directory, or an S3 bucket."""
    if config.directory is not None:
        return FileTarget(config.directory)
    from watcher.mirror.s3 import S3Target  # botocore loads only when S3 is used

    return S3Target(config)
