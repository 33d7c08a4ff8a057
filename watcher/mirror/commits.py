"""A held task's copies made durable and recorded together (see `TaskCommits`)."""

from __future__ import annotations

import asyncio

from watcher.mirror.targets import Target
from watcher.models import MirrorFile
from watcher.store.base import AsyncStore


class TaskCommits:
    """The copies of one held task that are committed to the target but not yet durable nor
    recorded as done.

    A directory target makes a rename durable by fsyncing the directory, and one fsync covers
    every rename in it: so a task's copies are made durable (`Target.sync`) and recorded (one
    store transaction) together, by the copy that finishes while none of the task's other
    files is being copied; the others wait for it. A file is durable before the store records
    it, and long before the webhook names it. A target whose commits are durable by
    themselves (S3) has each copy recorded at once: a completed multipart upload has no
    sha256 to be found by after a crash, so its record is not left waiting.
    """

    def __init__(self, target: Target, store: AsyncStore) -> None:
        self._target = target
        self._store = store
        self.copying = 0  # the task's files being copied now (each in a slot)
        self._waiting: list[tuple[MirrorFile, asyncio.Future[None]]] = []

    async def done(self, file: MirrorFile) -> None:
        """Return once `file` (DONE, committed) is durable and recorded. MirrorError if the
        target could not make it durable (the copy is then worth another try); StoreError
        as the store raises it."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((file, waiter))
        if self.copying == 0 or not self._target.needs_sync:
            await self._flush()
        await waiter

    async def flush_if_idle(self) -> None:
        """Make durable and record the copies waiting, if no other file is being copied."""
        if self.copying == 0:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        files = [file for file, _ in batch]
        try:
            await self._target.sync([f.key for f in files])
            await self._store.update_mirror_files(files)
        except asyncio.CancelledError:
            _settle(batch, None, cancelled=True)
            raise
        except Exception as exc:
            # Each waiting copy raises it: a MirrorError is a failed try of that file, a
            # StoreError takes the daemon down.
            _settle(batch, exc)
            return
        _settle(batch, None)


def _settle(
    batch: list[tuple[MirrorFile, asyncio.Future[None]]],
    error: Exception | None,
    *,
    cancelled: bool = False,
) -> None:
    for _, waiter in batch:
        if waiter.done():  # its copy was cancelled meanwhile
            continue
        if cancelled:
            waiter.cancel()
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(None)
