"""The tasks file importer: `tasks: [...]` of registrations, imported at start, on reload and
when the file changes.

Import is additive and idempotent: every run registers what is not known yet, removing a line
cancels nothing, and a bad entry is reported with its line and skipped while the good ones are
imported. Changes are noticed by checking the file's (inode, size, mtime) once a second: cheap,
dependency-free, and it works on every filesystem and with editors that replace the file.

A file is imported only when it is whole:
- it has stopped changing for `settle_s` (a writer that writes in pieces, seconds apart, is
  not read between two pieces), judged by its mtime and by watching it;
- its last line ends with a newline (a line without one is still being written);
- it parses as a whole: a file that does not parse registers nothing.
Writing the file elsewhere and renaming it into place avoids the question altogether.

Reading is off the event loop, in a child process (see `reader.py`); the valid entries come
back in batches and are registered on the loop a batch at a time, so the intake and the loops
keep answering while a big file is read. Requests coalesce: one import runs at a time and at
most one more is queued, however many reloads arrive meanwhile. A file whose bytes (and the
config its entries are checked against) are unchanged since the last import is not read again,
and entries imported before are skipped by fingerprint: appending a line to a big file
registers that line without re-validating the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from watcher.clock import Clock
from watcher.config.settings import Config
from watcher.errors import ConfigProblem, StoreError, StoreUnavailable
from watcher.models import TaskSource
from watcher.service import WatchService
from watcher.tasks.document import (
    FINGERPRINT_BYTES,
    parse_tasks_file,
    unfinished_line,
)
from watcher.tasks.reader import (
    ChildProcessReader,
    Done,
    Entries,
    Problems,
    ReaderFailed,
    ReadRequest,
    Rejected,
    TasksReader,
)

log = structlog.get_logger(__name__)

# How long a tasks file must have stopped changing before it is imported.
SETTLE_S = 3.0
# Bad entries logged one by one per import; a file with more gets a count for the rest.
MAX_LOGGED_PROBLEMS = 1000

Signature = tuple[int, int, int]  # (inode, size, mtime_ns)
_MISSING: Signature = (0, 0, 0)


def settled(*, mtime_age_s: float, unchanged_for_s: float, settle_s: float) -> bool:
    """Whether a file has stopped changing: its mtime is at least `settle_s` old, or it was
    watched unchanged that long (an mtime in the future, after a clock step, cannot be
    trusted)."""
    return mtime_age_s >= settle_s or unchanged_for_s >= settle_s


@dataclass(frozen=True, slots=True)
class TasksFileCheck:
    """What `check-config` says about the tasks file: one line, and the problems the daemon
    would log (bad entries are skipped, so they are warnings, not config errors)."""

    summary: str
    problems: list[ConfigProblem] = field(default_factory=list)
    headline: str = ""  # what the problems mean, when there are any


def check_tasks_file(config: Config) -> TasksFileCheck | None:
    """Read the config's tasks file as the daemon would; None when the config names none."""
    path = config.tasks_file
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return TasksFileCheck(f"tasks file {path}: does not exist yet (imported once it appears)")
    except OSError as exc:
        problem = ConfigProblem("", None, f"cannot be read: {exc.strerror or exc}")
        return TasksFileCheck(f"tasks file {path}: unreadable", [problem], "it cannot be read")
    line = unfinished_line(data)
    if line is not None:
        problem = ConfigProblem(
            "", line, "the last line has no newline: the daemon waits for one before importing"
        )
        return TasksFileCheck(f"tasks file {path}: unfinished", [problem], "not imported yet")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = ConfigProblem("", data.count(b"\n", 0, exc.start) + 1, "is not UTF-8 text")
        return TasksFileCheck(
            f"tasks file {path}: invalid", [problem], "nothing in it can be imported"
        )
    content = parse_tasks_file(
        text,
        source=str(path),
        endpoint_names=[e.name for e in config.endpoints],
        allowed_callback_hosts=config.delivery.allowed_callback_hosts,
    )
    entries = len(content.entries)
    bad = [p for p in content.problems if p.path.startswith("tasks[")]
    if len(bad) != len(content.problems):  # the document itself: nothing is imported
        return TasksFileCheck(
            f"tasks file {path}: invalid", content.problems, "nothing in it can be imported"
        )
    bad_entries = len({p.path.split("]", 1)[0] for p in bad})
    summary = f"tasks file {path}: {_entries(entries + bad_entries)}"
    if not bad:
        return TasksFileCheck(summary)
    return TasksFileCheck(
        f"{summary}, {bad_entries} bad", bad, "bad entries are skipped, the others imported"
    )


def _entries(n: int) -> str:
    return "1 entry" if n == 1 else f"{n} entries"


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one import attempt did."""

    outcome: str  # imported, unchanged, unsettled, unfinished, rejected, missing, failed
    registered: int = 0  # new tasks
    known: int = 0  # already registered (no change)
    unchanged: int = 0  # entries skipped as imported before
    problems: list[ConfigProblem] = field(default_factory=list)


class TasksFileImporter:
    """Imports the tasks file into the service when it changes or when asked."""

    def __init__(
        self,
        *,
        service: WatchService,
        clock: Clock,
        path: Path | None,
        settle_s: float = SETTLE_S,
        reader: TasksReader | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._clock = clock
        self._path = path
        self._settle_s = settle_s
        self._reader = reader or ChildProcessReader()
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._asked = False
        self._seen: Signature | None = None  # the last signature observed ...
        self._seen_at = 0.0  # ... and since when (monotonic)
        self._done: Signature | None = None  # the signature of the last version dealt with
        self._digest: tuple[bytes, tuple[object, ...]] | None = None  # of the last import
        self._known = b""  # fingerprints of the entries imported from the file

    def set_path(self, path: Path | None) -> None:
        if path != self._path:
            self._path = path
            self._seen = self._done = self._digest = None
            self._known = b""

    def request(self) -> None:
        """Ask for an import (a reload): coalesced with any already asked for; a file that is
        still changing is imported once it has settled."""
        self._asked = True
        self._wake.set()

    async def run(self, *, interval_s: float = 1.0) -> None:
        """Import at once, then when asked or when a change has settled; runs until cancelled.

        A store failure ends it (the daemon's own machinery); anything wrong with the file
        only fails that import.
        """
        self._asked = True
        while True:
            asked, self._asked = self._asked, False
            self._wake.clear()
            await self.import_once(asked=asked)
            if not self._asked:
                await self._clock.wait_event(self._wake, interval_s)

    async def import_once(self, *, asked: bool = True) -> ImportResult | None:
        """One import attempt. Not asked: only when the file changed since the last attempt.
        None when there is nothing to do."""
        path = self._path
        if path is None:
            return None
        signature = self._observe(path)
        if signature is None:
            return None
        if not asked and signature == self._done:
            return None
        if signature == _MISSING:
            if self._done != _MISSING:
                log.warning("tasks_file_missing", path=str(path))
                self._done = _MISSING
            return ImportResult("missing")
        if not self._settled(path, signature):
            return ImportResult("unsettled")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            log.error("tasks_file_unreadable", path=str(path), error=str(exc))
            self._done = signature
            return ImportResult("failed")
        if self._observe(path) != signature:
            return ImportResult("unsettled")  # changed while being read: wait for it to settle
        self._done = signature
        try:
            return await self._import(path, data)
        except StoreUnavailable as exc:
            # The database is down: import the file again (registrations are idempotent) at
            # the next check, once it is back.
            log.warning("tasks_file_waiting_for_store", path=str(path), error=exc.message)
            self._done = None
            return ImportResult("failed")
        except StoreError:
            raise  # the daemon's own machinery: it stops loudly
        except Exception as exc:
            # Whatever else goes wrong is this file's fault or a bug it triggered; either way a
            # restart would meet it again, so the daemon goes on without this import.
            log.error("tasks_file_import_failed", path=str(path), error=repr(exc), exc_info=exc)
            return ImportResult("failed")

    def _observe(self, path: Path) -> Signature | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            signature = _MISSING
        except OSError as exc:
            if self._done != _MISSING:
                log.error("tasks_file_unreadable", path=str(path), error=str(exc))
            return None
        else:
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if signature != self._seen:
            self._seen, self._seen_at = signature, self._monotonic()
        return signature

    def _settled(self, path: Path, signature: Signature) -> bool:
        mtime_age_s = self._clock.now() - signature[2] / 1e9
        unchanged_for_s = self._monotonic() - self._seen_at
        if settled(
            mtime_age_s=mtime_age_s, unchanged_for_s=unchanged_for_s, settle_s=self._settle_s
        ):
            return True
        log.debug("tasks_file_settling", path=str(path), settle_s=self._settle_s)
        return False

    async def _import(self, path: Path, data: bytes) -> ImportResult:
        started = time.perf_counter()
        line = unfinished_line(data)
        if line is not None:
            log.warning(
                "tasks_file_unfinished",
                path=str(path),
                line=line,
                problem="the last line has no newline: waiting for the writer to finish it",
            )
            return ImportResult("unfinished")
        config = self._service.config
        endpoint_names = tuple(e.name for e in config.endpoints)
        hosts = tuple(config.delivery.allowed_callback_hosts)
        digest = (hashlib.blake2b(data, digest_size=16).digest(), (endpoint_names, hosts))
        if digest == self._digest:
            log.info("tasks_file_unchanged", path=str(path), duration_s=_since(started))
            return ImportResult("unchanged")
        request = ReadRequest(
            data=data,
            source=str(path),
            endpoint_names=endpoint_names,
            allowed_callback_hosts=hosts,
            known=self._known,
        )
        del data
        run = _Run(path)
        try:
            async with contextlib.aclosing(self._reader.read(request)) as messages:
                async for message in messages:
                    if run.first_message_s is None:
                        run.first_message_s = _since(started)
                    if isinstance(message, Entries):
                        begun = time.perf_counter()
                        await self._register(message, run)
                        run.register_s += time.perf_counter() - begun
                    elif isinstance(message, Problems):
                        run.report(message.problems)
                    elif isinstance(message, Rejected):
                        run.reject(message.problems)
                        return ImportResult("rejected", problems=message.problems)
                    elif isinstance(message, Done):
                        run.entries, run.unchanged = (
                            message.entries,
                            len(message.unchanged) // FINGERPRINT_BYTES,
                        )
                        run.imported += message.unchanged
        except ReaderFailed as exc:
            log.error(
                "tasks_file_import_failed",
                path=str(path),
                error=exc.message,
                registered=run.registered,
            )
            return ImportResult("failed", registered=run.registered, problems=run.problems)
        self._digest = digest
        self._known = bytes(run.imported)
        log.info(
            "tasks_file_imported",
            path=str(path),
            entries=run.entries,
            registered=run.registered,
            known=run.known,
            unchanged=run.unchanged,
            invalid=_bad_entries(run.problems),  # entries, not problems: one may have two
            duration_s=_since(started),
            parsed_s=run.first_message_s,  # until the first batch: reading and parsing
            register_s=round(run.register_s, 3),  # registering, on the event loop
        )
        return ImportResult(
            "imported",
            registered=run.registered,
            known=run.known,
            unchanged=run.unchanged,
            problems=run.problems,
        )

    async def _register(self, entries: Entries, run: _Run) -> None:
        results = await self._service.register_many(entries.specs, source=TaskSource.FILE)
        conflicts = [
            ConfigProblem(entries.paths[i], entries.lines[i], error)
            for i, (_, error) in enumerate(results)
            if error is not None
        ]
        if not conflicts:
            run.imported += entries.fingerprints
        else:
            for i, (_, error) in enumerate(results):
                if error is None:
                    run.imported += entries.fingerprint(i)
        registered = sum(created for created, _ in results)
        run.registered += registered
        run.known += len(results) - registered - len(conflicts)
        run.report(conflicts)


class _Run:
    """The counts and problems of one import, and its logging of bad entries."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.entries = self.registered = self.known = self.unchanged = 0
        self.imported = bytearray()  # fingerprints of the entries now known to the store
        self.problems: list[ConfigProblem] = []
        self.first_message_s: float | None = None
        self.register_s = 0.0

    def report(self, problems: list[ConfigProblem]) -> None:
        for problem in problems:
            self.problems.append(problem)
            if len(self.problems) <= MAX_LOGGED_PROBLEMS:
                log.error(
                    "tasks_file_entry_invalid",
                    path=self.path,
                    line=problem.line,
                    key=problem.path,
                    problem=problem.message,
                )
            elif len(self.problems) == MAX_LOGGED_PROBLEMS + 1:
                log.error(
                    "tasks_file_entries_invalid_not_logged",
                    path=self.path,
                    problem=f"more than {MAX_LOGGED_PROBLEMS} bad entries: the rest are "
                    "counted, not logged (apixo-watcher check-config lists them all)",
                )

    def reject(self, problems: list[ConfigProblem]) -> None:
        for problem in problems:
            log.error(
                "tasks_file_invalid",
                path=self.path,
                line=problem.line,
                key=problem.path,
                problem=problem.message,
            )
        log.error("tasks_file_rejected", path=self.path, problems=len(problems), registered=0)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


_ENTRY = re.compile(r"tasks\[(\d+)\]")


def _bad_entries(problems: Sequence[ConfigProblem]) -> int:
    """How many entries the problems are about (an entry with two problems counts once; a
    problem that names no entry counts on its own)."""
    entries: set[str] = set()
    others = 0
    for problem in problems:
        match = _ENTRY.match(problem.path)
        if match:
            entries.add(match.group(1))
        else:
            others += 1
    return len(entries) + others
