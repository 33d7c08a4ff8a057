"""Handing a download's bytes on to be hashed and stored, in order, while the event loop reads
on: the `Sink` a download writes into, and the two ways of feeding it (`open_lane`).

A sink with a blocking writer (a local file) gets one worker thread for the whole file, fed
through a queue up to `DEPTH` batches ahead of the event loop: the thread hashes each piece and
writes it at once (hashlib and writes let go of the GIL, so this runs on a second core), and
always has the next batch at hand when it ends one, with no round trip to the event loop in
between. A sink without one (an upload over the network) has each batch written on the event
loop while it is hashed in a thread, one batch at a time. Memory stays flat either way: a few
batches per file.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol

DEPTH: Final = 2  # batches queued for a file's worker thread, beyond the one being read
# The worker threads of the files being downloaded (one each, reused from file to file).
# Beyond this many downloads at once, a download waits for a thread (mirror.max_concurrency
# is 4 by default).
_WRITERS: Final = ThreadPoolExecutor(max_workers=64, thread_name_prefix="mirror-writer")


class Sink(Protocol):
    """Where a download's bytes go, in order (an upload into a target)."""

    def start(self, content_type: str | None) -> None:
        """The content type, once the answer is known good, before the first byte."""
        ...

    @property
    def write_blocking(self) -> Callable[[bytes], None] | None:
        """A blocking write of one piece, run in the file's worker thread right after the
        piece is hashed there (while it is still in the CPU's cache); None to have `write`
        called on the event loop instead."""
        ...

    async def write(self, pieces: Sequence[bytes]) -> None:
        """Store `pieces` (on the event loop, while they are hashed in a thread)."""
        ...


class Lane(Protocol):
    """Batches of pieces on their way to be hashed and stored, in order."""

    async def put(self, pieces: list[bytes]) -> None:
        """Hand `pieces` on; waits while the lane is full. Raises the error of an earlier
        batch (the sink's own: a full disk, a refused upload)."""
        ...

    async def finish(self) -> None:
        """Wait until every batch is hashed and stored; raises the error of any."""
        ...

    async def close(self) -> None:
        """Stop after a failure: the batches still queued are dropped, the one being written
        is waited for (the upload's `abort` waits for it too); never raises."""
        ...


def open_lane(digest: Any, sink: Sink) -> Lane:
    """The lane into `sink`, updating `digest` (a hashlib object) with every byte."""
    write = sink.write_blocking
    if write is not None:
        return _ThreadLane(digest, write)
    return _LoopLane(digest, sink)


class _ThreadLane:
    def __init__(self, digest: Any, write: Callable[[bytes], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._room = asyncio.Semaphore(DEPTH)
        self._error: BaseException | None = None
        self._digest = digest
        self._write = write
        self._worker: asyncio.Future[None] | None = None
        self._stopped = False  # read by the worker thread: drop what is still queued

    async def put(self, pieces: list[bytes]) -> None:
        self._raise()
        await self._room.acquire()
        self._raise()
        if self._worker is None:  # started with the first batch: most files are one batch
            self._worker = self._loop.run_in_executor(_WRITERS, self._work)
        self._queue.put(pieces)

    async def finish(self) -> None:
        if self._worker is not None:
            self._queue.put(None)  # the worker ends after the batches before it
            worker, self._worker = self._worker, None
            await worker
        self._raise()

    async def close(self) -> None:
        if self._worker is None:
            return
        self._stopped = True
        self._queue.put(None)
        worker, self._worker = self._worker, None
        # Shielded: a cancelled copy still waits for the thread to let go of the file.
        with contextlib.suppress(BaseException):
            await asyncio.shield(worker)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        # In the worker thread until the end of the file (None).
        failed = False
        while (pieces := self._queue.get()) is not None:
            error = None
            if not (failed or self._stopped):
                try:
                    for piece in pieces:
                        self._digest.update(piece)
                        self._write(piece)
                except BaseException as exc:  # handed to the event loop, raised there
                    error, failed = exc, True
            self._loop.call_soon_threadsafe(self._done, error)

    def _done(self, error: BaseException | None) -> None:
        if error is not None and self._error is None:
            self._error = error
        self._room.release()


class _LoopLane:
    def __init__(self, digest: Any, sink: Sink) -> None:
        self._digest = digest
        self._sink = sink
        self._in_flight: asyncio.Future[Any] | None = None

    async def put(self, pieces: list[bytes]) -> None:
        await self.finish()
        self._in_flight = asyncio.gather(
            asyncio.to_thread(_hash, self._digest, pieces), self._sink.write(pieces)
        )

    async def finish(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    async def close(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.cancel()
            with contextlib.suppress(BaseException):
                await in_flight


def _hash(digest: Any, pieces: Sequence[bytes]) -> None:
    for piece in pieces:
        digest.update(piece)
