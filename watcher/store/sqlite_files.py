"""The SQLite store's files seen from outside SQLite: the daemon's lock on the store, and the
identity of the database and its WAL, so that a file deleted or replaced under the running
daemon is noticed instead of silently swallowing commits.

Only stat(2) and flock(2) touch the database's files here, never an open-and-close: closing any
descriptor of a file drops every POSIX record lock the process holds on it, and SQLite keeps
its own locks on the database that way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import NamedTuple

from watcher.errors import StoreError, StoreInUse, StoreLost


class FileIdentity(NamedTuple):
    """What makes a file the same file: its device and inode (a path can be re-pointed)."""

    device: int
    inode: int


def identity(path: Path) -> FileIdentity | None:
    """The identity of the file at `path` now; None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot inspect the store file {path}: {exc.strerror}") from exc
    return FileIdentity(st.st_dev, st.st_ino)


def lock_path(db_path: Path) -> Path:
    """Where the lock of the store at `db_path` lives: beside it, `watcher.db.lock`."""
    return db_path.with_name(db_path.name + ".lock")


class StoreLock:
    """An exclusive flock(2) on `<database>.lock`, held until `release()` or the process ends.

    flock, not fcntl record locks: an flock belongs to the open file, so it neither mixes with
    SQLite's record locks nor vanishes when some other descriptor of the file is closed, and
    the kernel drops it when the process dies in any way (kill -9 included): a crash never
    leaves a stale lock behind. The file is never deleted: a second daemon could otherwise
    lock a new file of the same name while the first still holds the old one.
    """

    def __init__(self, db_path: Path) -> None:
        self.path = lock_path(db_path)
        self._db_path = db_path
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _recorded_pid(fd)
            os.close(fd)
            by = f" (pid {holder})" if holder else ""
            raise StoreInUse(
                f"the store {db_path} is in use by another apixo-watcher process{by}; "
                f"only one daemon may run on a store: stop the other one, or give this one "
                f"another store.path"
            ) from None
        except OSError as exc:  # e.g. ENOLCK: a network filesystem without locks
            os.close(fd)
            raise StoreError(
                f"cannot lock the store {db_path} ({self.path}): {exc.strerror}"
            ) from exc
        # For the message the next daemon prints; best effort (the file may be read-only).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        st = os.fstat(fd)
        self._identity = FileIdentity(st.st_dev, st.st_ino)
        self._fd: int | None = fd

    def _open(self) -> int:
        flags = os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            return os.open(self.path, flags | os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError:
            pass  # left by another user: locking needs no write access
        except OSError as exc:
            raise StoreError(
                f"cannot create the lock file {self.path} of the store: {exc.strerror}"
            ) from exc
        try:
            return os.open(self.path, flags | os.O_RDONLY)
        except OSError as exc:
            raise StoreError(
                f"cannot open the lock file {self.path} of the store: {exc.strerror}"
            ) from exc

    def check(self) -> None:
        """StoreLost unless the lock file at the path is still the one this process holds."""
        if self._fd is not None and identity(self.path) != self._identity:
            raise StoreLost(
                f"the lock file {self.path} was deleted or replaced while the daemon ran: "
                f"another daemon could now open the store {self._db_path}"
            )

    def release(self) -> None:
        """Let another daemon have the store; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock


def _recorded_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


__all__ = ["FileIdentity", "StoreLock", "identity", "lock_path"]
