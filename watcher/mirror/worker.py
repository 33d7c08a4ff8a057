"""The mirror worker: copies the result files of each held success, then hands the success
back (`MirrorSink.mirror_finished`) so that its webhook goes out.

Each held task is one asyncio task; its files are copied concurrently, all tasks together
bounded by `mirror.max_concurrency`. Progress is durable, file by file: a failed try is
recorded when it ends (failed, with the message, or the error of a try to be repeated), a
copy once the target has made it durable (done, with sha256, size and type; with the task's
other copies finished meanwhile, see `TaskCommits`), with the count of tries. After a crash,
`start` resumes every held success: each file not recorded as done is first looked up in the
target (a copy committed before the crash counts as done, without fetching it again), then
fetched afresh; temporaries the crash left are removed by the target's `prepare`.

A file's own failures (the source, the network, the target) are contained to that file: retried
within its `timeout`, then recorded as failed and reported in `mirror_error`. A failure of the
store is the daemon's own and ends `run`, which takes the daemon down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from typing import Any, Protocol

import aiohttp
import structlog

from watcher.clock import Clock, Timeline
from watcher.config.settings import MirrorConfig
from watcher.errors import MirrorError
from watcher.mirror.commits import TaskCommits
from watcher.mirror.copy import copy_file
from watcher.mirror.fetch import Fetched
from watcher.mirror.plan import finished, mirror_error, mirrored, public_url, retry_delay
from watcher.mirror.targets import Target
from watcher.models import MirrorFile, MirrorHold, MirrorStatus
from watcher.store.base import AsyncStore

log = structlog.get_logger(__name__)


class MirrorSink(Protocol):
    """Where a held success goes once its files are copied or given up (the service)."""

    async def mirror_finished(self, hold: MirrorHold, extra: dict[str, Any]) -> None:
        """Send the held event with `extra` (`mirrored`, maybe `mirror_error`) in its data."""
        ...


class MirrorObserver(Protocol):
    """Measurements of mirroring (the daemon passes its Metrics); no per-task labels."""

    def mirror_file(self, outcome: str, size: int, duration_s: float) -> None: ...

    def mirror_deleted(self, files: int) -> None: ...


class MirrorWorker:
    """Owns the copies of held successes: start (prepare, resume), hold, run, stop."""

    def __init__(
        self,
        *,
        store: AsyncStore,
        target: Target,
        config: MirrorConfig,
        sink: MirrorSink,
        clock: Clock,
        timeline: Timeline | None = None,
        observer: MirrorObserver | None = None,
        user_agent: str = "apixo-watcher",
    ) -> None:
        self._store = store
        self._target = target
        self._config = config
        self._sink = sink
        self._clock = clock
        self._timeline = timeline if timeline is not None else Timeline(clock)
        self._observer = observer
        self._user_agent = user_agent
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._failure: asyncio.Future[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._shared = False  # other instances write to the target too

    @property
    def target(self) -> Target:
        return self._target

    def held(self) -> int:
        """How many successes are waiting for their mirror."""
        return len(self._jobs)

    async def start(self, *, shared: bool = False) -> int:
        """Prepare the target and resume every held success; returns how many. `shared`:
        other instances may write to the target now (several instances on PostgreSQL), so only
        leftovers older than `mirror.timeout` (which no live copy can be) are removed, here and
        with each retention sweep."""
        self._shared = shared
        self._failure = asyncio.get_running_loop().create_future()
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": self._user_agent},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60),
        )
        removed = await self._target.prepare(stale_before=self._stale_before())
        if removed:
            log.info("mirror_leftovers_removed", files=removed)
        holds = await self._store.held_mirrors()
        for hold in holds:
            self.hold(hold, resumed=True)
        return len(holds)

    def hold(self, hold: MirrorHold, *, resumed: bool = False) -> None:
        """Copy the files of `hold` (committed already), then hand it back. `resumed`: held
        before this start, so a copy may have been committed just before a crash."""
        task_id = hold.event.task_id
        if task_id not in self._jobs:
            job = asyncio.create_task(self._mirror(hold, resumed), name=f"mirror {task_id}")
            self._jobs[task_id] = job
            job.add_done_callback(functools.partial(self._done, task_id))

    def _done(self, task_id: str, job: asyncio.Task[None]) -> None:
        self._jobs.pop(task_id, None)
        if job.cancelled() or job.exception() is None:
            return
        if self._failure is not None and not self._failure.done():
            self._failure.set_exception(job.exception())  # type: ignore[arg-type]

    async def run(self) -> None:
        """Until cancelled; raises the first failure of the daemon's own machinery (the store)."""
        assert self._failure is not None, "start() first"
        await self._failure

    async def close(self) -> None:
        """Stop every copy (each resumes at the next start) and close the HTTP client."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._target.close()

    def _stale_before(self) -> float | None:
        """Before when a leftover must have been started to be removed (None: any)."""
        if not self._shared:
            return None
        return self._timeline.wall() - self._config.timeout_s

    async def delete_expired(self) -> int:
        """Delete the mirrored files older than `mirror.retention` (0: none); how many. With
        other instances on the target, also the leftovers of crashed copies (see start)."""
        if self._shared:
            try:
                removed = await self._target.prepare(stale_before=self._stale_before())
            except MirrorError as exc:
                log.warning("mirror_leftovers_not_removed", error=exc.message)
            else:
                if removed:
                    log.info("mirror_leftovers_removed", files=removed)
        if self._config.retention_s <= 0:
            return 0
        try:
            keys = await self._target.delete_older_than(
                self._timeline.wall() - self._config.retention_s
            )
        except MirrorError as exc:
            log.warning("mirror_retention_failed", error=exc.message)
            return 0
        if keys:
            log.info("mirror_files_expired", files=len(keys))
            if self._observer is not None:
                self._observer.mirror_deleted(len(keys))
        return len(keys)

    # -- one held success ---------------------------------------------------------------------
    async def _mirror(self, hold: MirrorHold, resumed: bool) -> None:
        commits = TaskCommits(self._target, self._store)
        files = await asyncio.gather(*(self._file(f, resumed, commits) for f in hold.files))
        assert finished(files)
        urls = [
            public_url(
                f.key,
                public_base_url=self._config.public_base_url,
                location=self._target.location(f.key),
            )
            for f in files
        ]
        extra: dict[str, Any] = {"mirrored": mirrored(files, urls)}
        error = mirror_error(files)
        if error is not None:
            extra["mirror_error"] = error
        await self._sink.mirror_finished(hold, extra)

    async def _file(self, file: MirrorFile, resumed: bool, commits: TaskCommits) -> MirrorFile:
        if file.status is not MirrorStatus.PENDING:
            return file
        if resumed:
            # A try may have been cut short by a crash after its copy was committed: one
            # look-up in the target, rather than fetching a whole file again.
            try:
                stored = await self._target.stat(file.key)
            except MirrorError:
                stored = None
            if stored is not None:
                log.info("mirror_file_found", task_id=file.task_id, key=file.key)
                found = self._changed(
                    file,
                    status=MirrorStatus.DONE,
                    sha256=stored.sha256,
                    bytes=stored.bytes,
                    content_type=stored.content_type,
                    error=None,
                )
                with contextlib.suppress(MirrorError):  # not made durable: fetched again
                    await commits.done(found)
                    return found
        started = self._clock.monotonic()
        tries = 0
        while True:
            fetched: Fetched | None = None
            async with self._slots:
                tries += 1
                # Recorded with the try's outcome (one write per try, or per task for the
                # copies made together): a try a crash cuts short is not counted, and the
                # look-up above covers its copy.
                attempts = file.attempts + 1
                began = self._clock.monotonic()
                remaining = self._config.timeout_s - (began - started)
                commits.copying += 1
                try:
                    assert self._session is not None
                    fetched = await copy_file(
                        self._session,
                        self._target,
                        file.source_url,
                        file.key,
                        max_bytes=self._config.max_file_bytes,
                        timeout_s=max(remaining, 0.001),
                    )
                except MirrorError as exc:
                    failure = exc
                finally:
                    commits.copying -= 1
                took_s = self._clock.monotonic() - began
            if fetched is not None:
                done = self._changed(
                    file,
                    attempts=attempts,
                    status=MirrorStatus.DONE,
                    sha256=fetched.sha256,
                    bytes=fetched.bytes,
                    content_type=fetched.content_type,
                    error=None,
                )
                try:
                    await commits.done(done)
                except MirrorError as exc:
                    failure = exc
                else:
                    self._observe("done", fetched.bytes, took_s)
                    log.info(
                        "mirror_file_done",
                        task_id=file.task_id,
                        key=file.key,
                        bytes=fetched.bytes,
                        attempt=attempts,
                    )
                    return done
            else:
                await commits.flush_if_idle()  # the task's copies that waited for this one
            delay = retry_delay(
                tries,
                elapsed_s=self._clock.monotonic() - started,
                timeout_s=self._config.timeout_s,
                permanent=failure.permanent,
            )
            if delay is None:
                self._observe("failed", 0, took_s)
                log.warning(
                    "mirror_file_failed",
                    task_id=file.task_id,
                    key=file.key,
                    error=failure.message,
                    attempt=attempts,
                )
                return await self._record(
                    file, attempts=attempts, status=MirrorStatus.FAILED, error=failure.message
                )
            log.info(
                "mirror_file_retry",
                task_id=file.task_id,
                key=file.key,
                error=failure.message,
                attempt=attempts,
                retry_in_s=delay,
            )
            file = await self._record(file, attempts=attempts, error=failure.message)
            await self._clock.sleep(delay)

    def _changed(self, file: MirrorFile, **changes: Any) -> MirrorFile:
        return dataclasses.replace(file, updated_at=self._timeline.wall(), **changes)

    async def _record(self, file: MirrorFile, **changes: Any) -> MirrorFile:
        updated = self._changed(file, **changes)
        await self._store.update_mirror_files([updated])
        return updated

    def _observe(self, outcome: str, size: int, duration_s: float) -> None:
        if self._observer is not None:
            self._observer.mirror_file(outcome, size, duration_s)
