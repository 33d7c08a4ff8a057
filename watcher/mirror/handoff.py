"""Handing a download's bytes on to be hashed and stored, in order, while the event loop reads
on: the `Sink` a download writes into, and the two ways of feeding it (`open_lane`).

A sink with a blocking writer (a local file) gets one worker thread for the whole file, fed
through a queue up to `DEPTH` batches ahead of the event loop (hashlib and writes let go of the
GIL, so this runs on another core). The thread hashes each batch; if the next one is already
waiting, it hands the write to a second thread (`_WRITES`) and hashes on, so that a large file
that arrives faster than one core can hash and write it is hashed and written on two cores at
once, one batch apart (sha256 is the larger half: ~0.6-0.9 s of CPU per GiB against ~0.35 s for
the writes); otherwise (a file of one batch, a slow source) it writes the batch itself. One
file's writes still run one after the other, in order. Only a written batch makes room for
another, and the thread never waits for the event loop between batches. A sink without a
blocking writer (an upload over the network) has each batch written on the event loop while it
is hashed in a thread, one batch at a time. Memory stays flat either way: a few batches per
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, Protocol

DEPTH: Final = 2  # batches handed on and not yet stored, beyond the one being read
# The worker threads of the files being downloaded (one each, reused from file to file).
# Beyond this many downloads at once, a download waits for a thread (mirror.max_concurrency
# is 4 by default).
_WORKERS: Final = ThreadPoolExecutor(max_workers=64, thread_name_prefix="mirror-worker")
# The threads that write a batch while its file's worker hashes the next. A write waits for
# nothing but the disk, so a file's worker waiting for one never waits for ever.
_WRITES: Final = ThreadPoolExecutor(max_workers=64, thread_name_prefix="mirror-writer")


class Sink(Protocol):
    """Where a download's bytes go, in order (an upload into a target)."""

    def start(self, content_type: str | None) -> None:
        """The content type, once the answer is known good, before the first byte."""
        ...

    @property
    def write_blocking(self) -> Callable[[bytes], None] | None:
        """A blocking write of one piece, run in a worker thread once the piece is hashed,
        one piece after another in order (see the module's docstring); None to have `write`
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
        # Read by the worker thread and the writes it hands on: drop what is still queued.
        self._stopped = False

    async def put(self, pieces: list[bytes]) -> None:
        self._raise()
        await self._room.acquire()
        self._raise()
        if self._worker is None:  # started with the first batch: most files are one batch
            self._worker = self._loop.run_in_executor(_WORKERS, self._work)
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
        # Shielded: a cancelled copy still waits for the threads to let go of the file.
        with contextlib.suppress(BaseException):
            await asyncio.shield(worker)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        # In the file's worker thread until the end of the file (None): each batch hashed
        # here, then written here if no other batch is waiting, else by a thread of
        # `_WRITES` while this one hashes the next (one file's writes one after another).
        writing: Future[bool] | None = None  # the batch being written by `_WRITES`
        failed = False
        while (pieces := self._queue.get()) is not None:
            if not (failed or self._stopped):
                for piece in pieces:
                    self._digest.update(piece)
            if writing is not None:
                failed = not writing.result() or failed
                writing = None
            if failed or self._stopped or self._queue.empty():
                failed = not self._store(pieces, failed)
            else:
                writing = _WRITES.submit(self._store, pieces, False)
        if writing is not None:
            writing.result()

    def _store(self, pieces: list[bytes], failed: bool) -> bool:
        """Write `pieces` (unless a batch failed or the lane was stopped) and tell the event
        loop; False if they could not be written."""
        error = None
        if not (failed or self._stopped):
            try:
                for piece in pieces:
                    self._write(piece)
            except BaseException as exc:  # handed to the event loop, raised there
                error, failed = exc, True
        self._loop.call_soon_threadsafe(self._done, error)
        return not failed

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
