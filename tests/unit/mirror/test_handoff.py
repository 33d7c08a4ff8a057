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
    if blocking:  # one worker thread for the whole file, never the event loop's
        assert len(sink.threads) == 1
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
