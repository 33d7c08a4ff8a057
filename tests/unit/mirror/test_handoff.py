"""The lanes that hand a download's batches on: every byte hashed and stored once, in order;
a sink's error raised on the event loop, and nothing written after it."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Sequence

import pytest

from watcher.errors import MirrorError
from watcher.mirror.handoff import DEPTH, Lane, open_lane


class FakeSink:
    """Records what is written; the write that would pass `fail_after` bytes fails."""

    def __init__(
        self, *, blocking: bool, fail_after: int | None = None, gate: threading.Event | None = None
    ) -> None:
        self.blocking = blocking
        self.fail_after = fail_after
        self.gate = gate  # each write waits for it
        self.entered = threading.Event()  # a write has begun
        self.written = bytearray()
        self.threads: set[str] = set()

    def start(self, content_type: str | None) -> None:
        return None

    @property
    def write_blocking(self) -> Callable[[bytes], None] | None:
        return self._write if self.blocking else None

    async def write(self, pieces: Sequence[bytes]) -> None:
        for piece in pieces:
            self._write(piece)

    def _write(self, piece: bytes) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail_after is not None and len(self.written) + len(piece) > self.fail_after:
            raise MirrorError("cannot write the mirrored file: No space left on device")
        self.written += piece


async def send(lane: Lane, sent: list[list[bytes]]) -> None:
    for batch in sent:
        await lane.put(batch)
    await lane.finish()


def batches(count: int) -> list[list[bytes]]:
    """`count` batches of pieces of uneven sizes, each byte telling where it is."""
    return [[bytes([b % 251]) * (1000 + 7 * p) for p in range(3)] for b in range(count)]


@pytest.mark.parametrize("blocking", [True, False])
async def test_every_batch_is_hashed_and_written_once_in_order(blocking: bool) -> None:
    sink = FakeSink(blocking=blocking)
    digest = hashlib.sha256()
    lane = open_lane(digest, sink)
    sent = batches(4 * DEPTH + 1)
    await send(lane, sent)
    await lane.close()  # harmless once finished

    expected = b"".join(b"".join(batch) for batch in sent)
    assert bytes(sink.written) == expected
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()
    if blocking:  # in worker threads, never the event loop's
        assert sink.threads
        assert threading.current_thread().name not in sink.threads


@pytest.mark.parametrize("blocking", [True, False])
async def test_an_error_of_the_sink_is_raised_and_nothing_is_written_after_it(
    blocking: bool,
) -> None:
    sent = batches(4 * DEPTH + 2)
    one_batch = len(b"".join(sent[0]))
    sink = FakeSink(blocking=blocking, fail_after=2 * one_batch)  # the third batch fails
    lane = open_lane(hashlib.sha256(), sink)
    with pytest.raises(MirrorError, match="No space left on device"):
        await send(lane, sent)
    await lane.close()
    # The first two batches, then the failing write, then nothing: the later batches dropped.
    assert bytes(sink.written) == b"".join(b"".join(batch) for batch in sent[:2])


async def test_a_lane_closed_without_finishing_drops_what_is_queued() -> None:
    gate = threading.Event()
    sink = FakeSink(blocking=True, gate=gate)
    lane = open_lane(hashlib.sha256(), sink)
    sent = batches(DEPTH)
    for batch in sent:
        await lane.put(batch)
    # The first batch is being written (held at the gate), the others are queued.
    assert await asyncio.to_thread(sink.entered.wait, 10)
    closing = asyncio.create_task(lane.close())  # e.g. the download failed
    await asyncio.sleep(0)  # close has asked the worker to stop and waits for it
    gate.set()
    await closing
    assert bytes(sink.written) == b"".join(sent[0])  # the batch being written, no other
    await lane.close()
    assert bytes(sink.written) == b"".join(sent[0])


class GatedDigest:
    """A sha256 that records how many bytes it was given; the first update waits for `gate`."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.inner = hashlib.sha256()
        self.hashed = 0
        self.changed = threading.Condition()

    def update(self, piece: bytes) -> None:
        if self.hashed == 0:
            assert self.gate.wait(10)
        self.inner.update(piece)
        with self.changed:
            self.hashed += len(piece)
            self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.hashed >= count, timeout=10)

    def hexdigest(self) -> str:
        return self.inner.hexdigest()


async def test_the_next_batch_is_hashed_while_one_is_written() -> None:
    # A large file: its worker thread hashes a batch while another thread writes the one
    # before it, so the two take two cores rather than one after the other on one.
    hash_gate, write_gate = threading.Event(), threading.Event()
    digest = GatedDigest(hash_gate)
    sink = FakeSink(blocking=True, gate=write_gate)
    lane = open_lane(digest, sink)
    sent = batches(DEPTH)
    for batch in sent:  # both queued before the first is hashed
        await lane.put(batch)
    hash_gate.set()
    assert await asyncio.to_thread(sink.entered.wait, 10)  # the first batch is being written
    first, both = (len(b"".join(sent[0])), sum(len(b"".join(b)) for b in sent))
    # ... and held there, while the second is hashed.
    assert await asyncio.to_thread(digest.wait_for, both)
    assert len(sink.written) == 0
    write_gate.set()
    await lane.finish()
    expected = b"".join(b"".join(batch) for batch in sent)
    assert bytes(sink.written) == expected
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert first < both
    assert "mirror-writer" in {name.split("_")[0] for name in sink.threads}


async def test_a_failed_write_in_the_writing_thread_stops_the_file() -> None:
    hash_gate = threading.Event()
    sent = batches(DEPTH + 2)
    one_batch = len(b"".join(sent[0]))
    sink = FakeSink(blocking=True, fail_after=one_batch // 2)  # its second piece fails
    lane = open_lane(GatedDigest(hash_gate), sink)
    for batch in sent[:DEPTH]:  # queued together: the first is written by the other thread
        await lane.put(batch)
    hash_gate.set()
    with pytest.raises(MirrorError, match="No space left on device"):
        await send(lane, sent[DEPTH:])
    await lane.close()
    # The first piece, then the failing write, in the writing thread; then nothing.
    assert bytes(sink.written) == sent[0][0]
    assert {name.split("_")[0] for name in sink.threads} == {"mirror-writer"}
