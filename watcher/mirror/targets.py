"""Where copies go: the `Target` interface and the directory target (`file://DIR`).

An upload writes under a temporary name and becomes visible under its key only when it is
whole (`commit`), so a crash never leaves a partial file under a final name. The directory
target writes `DIR/.tmp-*` files (the same filesystem, so the rename is atomic), fsyncs the
file and renames it; `sync` then fsyncs the directories of a task's files once for them all,
which makes the renames durable; `prepare` removes temporaries a crash left behind. It writes
in a worker thread once the bytes are hashed (`write_blocking`), and asks the kernel to start
writing a large file to disk as it grows, so the fsync at the end has little left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Protocol

from watcher.config.settings import MirrorConfig
from watcher.errors import MirrorError
from watcher.mirror.fetch import Fetched
from watcher.mirror.handoff import Sink

TEMP_PREFIX: Final = ".tmp-"
_READ_BYTES: Final = 1024 * 1024
# Every this many bytes written, the kernel is asked to start writing them to disk.
WRITEBACK_BYTES: Final = 8 * 1024 * 1024
_FADVISE: Final = hasattr(os, "posix_fadvise")  # not on macOS


class Upload(Sink, Protocol):
    """One file on its way into the target: `fetch` writes it (see `Sink`), then `commit` or
    `abort` ends it."""

    async def commit(self, fetched: Fetched) -> None:
        """Make the whole file visible under its key (replacing one there)."""
        ...

    async def abort(self) -> None:
        """Drop what was written; idempotent, never raises."""
        ...


class Target(Protocol):
    """A directory or a bucket that keeps mirrored files under keys."""

    # True when a commit is durable only once `sync` has run for its key (a directory);
    # False when `commit` makes it durable by itself (S3), `sync` then doing nothing.
    needs_sync: bool

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

    async def sync(self, keys: Sequence[str]) -> None:
        """Make the commits of `keys` durable (they survive a power loss once it returns)."""
        ...

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

    needs_sync = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Task directories created by a commit whose entry in `directory` is not yet known to
        # be durable (commits and syncs run in threads).
        self._new_dirs = _NewDirs()

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
        return FileUpload(str(self.directory), key, self._new_dirs)

    async def sync(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self._sync, keys)

    def _sync(self, keys: Sequence[str]) -> None:
        root = str(self.directory)
        directories = {os.path.dirname(os.path.join(root, key)) for key in keys}
        # A task's directory is new with its first file: its own entry is durable once the
        # directory holding it is fsynced too.
        new = self._new_dirs.among(directories)
        try:
            for directory in (*directories, *([root] if new else [])):
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise _os_error("cannot store the mirrored file", exc) from exc
        self._new_dirs.discard(new)  # only now: a sync running meanwhile fsyncs too

    async def stat(self, key: str) -> Fetched | None:
        return await asyncio.to_thread(self._stat, key)

    def _stat(self, key: str) -> Fetched | None:
        digest = hashlib.sha256()
        size = 0
        try:
            with (self.directory / key).open("rb") as f:
                while chunk := f.read(_READ_BYTES):
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


class _NewDirs:
    """A set of directories, shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: set[str] = set()

    def add(self, directory: str) -> None:
        with self._lock:
            self._dirs.add(directory)

    def among(self, directories: set[str]) -> set[str]:
        with self._lock:
            return directories & self._dirs

    def discard(self, directories: set[str]) -> None:
        with self._lock:
            self._dirs -= directories


class FileUpload:
    """A file written under `DIR/.tmp-RANDOM`, renamed to `DIR/KEY` when whole."""

    def __init__(self, directory: str, key: str, new_dirs: _NewDirs) -> None:
        # Paths as strings: this runs for every file, and pathlib costs more than the syscalls.
        self._final = os.path.join(directory, key)
        self._parent = os.path.dirname(self._final)
        self._new_dirs = new_dirs
        self._temp = os.path.join(directory, f"{TEMP_PREFIX}{secrets.token_hex(8)}")
        self._fd: int | None = None
        self._written = 0
        self._advised = 0  # bytes written when the kernel was last asked to write them back
        # A write runs in a thread that a cancelled coroutine cannot stop: abort takes this
        # lock, so it waits for that write to end, and a write after the abort does nothing.
        self._lock = threading.Lock()
        self._aborted = False

    def start(self, content_type: str | None) -> None:
        return None  # a file keeps no content type; the store records it

    @property
    def write_blocking(self) -> Callable[[bytes], None]:
        return self._write_piece

    async def write(self, pieces: Sequence[bytes]) -> None:
        await asyncio.to_thread(self._write_pieces, pieces)

    def _write_pieces(self, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            self._write_piece(piece)

    def _write_piece(self, data: bytes) -> None:
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
        self._written += len(data)
        if _FADVISE and self._written - self._advised >= WRITEBACK_BYTES:
            self._write_back()

    def _write_back(self) -> None:
        # The fsync at commit writes whatever is still dirty, and on a large file that is a
        # long wait at the end with the disk idle meanwhile. DONTNEED
        # starts the writeback of the range now (without waiting for it) and drops from the
        # page cache the pages already on disk: each range is advised twice, when written and
        # WRITEBACK_BYTES later, so the file's pages leave the cache as they reach the disk
        # and a copy of GiBs does not push other files out (PostgreSQL's *_flush_after ask
        # the kernel the same, with sync_file_range, which Python's os module lacks). Advice
        # only: an error is ignored; the fsync at commit is what makes the file durable.
        assert self._fd is not None
        start = max(0, self._advised - WRITEBACK_BYTES)
        with contextlib.suppress(OSError):
            os.posix_fadvise(self._fd, start, self._written - start, os.POSIX_FADV_DONTNEED)
        self._advised = self._written

    def _create(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            return os.open(self._temp, flags, 0o644)
        except FileNotFoundError:
            # The directory went away while the daemon ran (cleaned up by hand): make it again.
            os.makedirs(os.path.dirname(self._temp), exist_ok=True)
            return os.open(self._temp, flags, 0o644)

    async def commit(self, fetched: Fetched) -> None:
        await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        with self._lock:
            self._commit_locked()

    def _commit_locked(self) -> None:
        try:
            if self._fd is None:  # an empty file
                self._write_locked(b"")
            assert self._fd is not None
            # The bytes are on disk before the name points at them; the rename is made durable
            # by `sync`, before the store records the file as done.
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            try:
                os.mkdir(self._parent)
            except FileExistsError:
                pass
            else:
                self._new_dirs.add(self._parent)
            os.replace(self._temp, self._final)
        except OSError as exc:
            raise _os_error("cannot store the mirrored file", exc) from exc

    async def abort(self) -> None:
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
            os.unlink(self._temp)


def open_target(config: MirrorConfig) -> Target:
    """The target `config` names: a directory, or an S3 bucket."""
    if config.directory is not None:
        return FileTarget(config.directory)
    from watcher.mirror.s3 import S3Target  # botocore loads only when S3 is used

    return S3Target(config)
