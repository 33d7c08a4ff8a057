"""The SQLite store's files seen from outside SQLite: the daemon's lock on the store, and the
identity of the database, its WAL and its shared-memory file, so that a file deleted, replaced
or truncated under the running daemon is noticed instead of silently swallowing commits or
killing the process with SIGBUS.

Only stat(2) and flock(2) touch the database's files here, never an open-and-close: closing any
descriptor of a file drops every POSIX record lock the process holds on it, and SQLite keeps
its own locks on the database that way.
"""

from __future__ import annotations

import contextlib
import errno
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


def read_only_message(db_path: Path, detail: str) -> str:
    """What to say when the store cannot be written: where, why, and what to check."""
    return (
        f"the store {db_path} is read-only ({detail}): the daemon's user must be able to write "
        f"it, its -wal and -shm files and its directory, on a filesystem mounted read-write"
    )


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
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StoreError(
                    f"cannot create the lock file {self.path} of the store: {exc.strerror}"
                ) from exc
            refused = exc  # locking needs no write access: an existing file will do
        try:
            return os.open(self.path, flags | os.O_RDONLY)
        except OSError:
            raise StoreError(
                read_only_message(self._db_path, f"cannot create {self.path}: {refused.strerror}")
            ) from refused

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


class StoreFiles:
    """The database, its WAL and its shared-memory file as SQLite opened them, and whether
    they are still those files.

    Deleted or replaced (an `rm`, a restore over a running daemon): commits would go to files
    nobody can open again. The shared-memory file (`-shm`, the WAL index) is mapped into
    memory by SQLite, and touching a mapped page past the end of a file that shrank is SIGBUS,
    which kills the process outside any Python code; while a connection is open the file only
    grows, so a smaller size means someone truncated it. `check_mapped()` runs before every
    use of the connection: it puts the old size back (by path: opening and closing the file
    here would drop SQLite's locks on it), which SQLite then reads as an empty WAL index and
    rebuilds from the WAL, and reports the store lost so that the daemon stops.
    """

    def __init__(self, db_path: Path, lock: StoreLock | None) -> None:
        self._db_path = db_path
        self._lock = lock
        self._shm = db_path.with_name(db_path.name + "-shm")
        self._known: dict[Path, FileIdentity] = {}
        self._shm_size = 0
        self.lost: str | None = None  # why the store is lost, once it is

    def remember(self) -> None:
        """Note the files SQLite has open now (call once the database has been read)."""
        # The WAL and the shared-memory file exist from the first read in WAL mode until the
        # last connection closes; checkpoints truncate the WAL but never remove it.
        for suffix in ("", "-wal", "-shm"):
            path = self._db_path.with_name(self._db_path.name + suffix)
            try:
                st = os.stat(path)
            except OSError:
                continue
            self._known[path] = FileIdentity(st.st_dev, st.st_ino)
            if suffix == "-shm":
                self._shm_size = st.st_size

    def check_mapped(self) -> None:
        """StoreLost if the shared-memory file shrank (after making it safe to touch again)."""
        if self.lost is not None:
            raise StoreLost(self.lost)
        known = self._known.get(self._shm)
        if known is None:
            return
        try:
            st = os.stat(self._shm)
        except OSError:
            return  # check() tells a deleted file apart
        if FileIdentity(st.st_dev, st.st_ino) != known:
            return
        if st.st_size >= self._shm_size:
            self._shm_size = st.st_size
            return
        with contextlib.suppress(OSError):
            os.truncate(self._shm, self._shm_size)  # zeros: read as an index to rebuild
        self._lose(
            f"the store file {self._shm} was truncated while the daemon ran (by another "
            f"program): stopping before SQLite touches the missing part"
        )

    def check(self) -> None:
        """StoreLost if any of the files is no longer at its path, or the lock file is gone."""
        self.check_mapped()
        for path, known in self._known.items():
            now = identity(path)
            if now != known:
                what = "deleted" if now is None else "replaced by another file"
                self._lose(
                    f"the store file {path} was {what} while the daemon ran: what it commits "
                    f"now would be lost at the next start"
                )
        if self._lock is not None:
            try:
                self._lock.check()
            except StoreLost as exc:
                self._lose(exc.message)

    def _lose(self, reason: str) -> None:
        self.lost = reason
        raise StoreLost(reason)


__all__ = [
    "FileIdentity",
    "StoreFiles",
    "StoreLock",
    "identity",
    "lock_path",
    "read_only_message",
]
