"""Idle and slow clients cannot hold the intake's connections (and file descriptors) forever.

Raw sockets against a real loopback server: a client that connects and says nothing, one that
sends its headers a byte at a time, one that never finishes its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api.test_intake import Harness, running_intake

Starter = Callable[..., Awaitable[Harness]]
TIMEOUT = 0.5


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:
    async with contextlib.AsyncExitStack() as stack:

        async def _start(**kwargs: Any) -> Harness:
            return await stack.enter_async_context(running_intake(tmp_path, **kwargs))

        yield _start


async def _connect(h: Harness) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = h.server.address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> tuple[float, bytes]:
    """Read until the server closes; (seconds it took, what it sent)."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit)
    return time.monotonic() - started, data


async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    start: Starter,
) -> None:
    h = await start(idle_timeout_s=TIMEOUT)
    reader, writer = await _connect(h)
    try:
        took, data = await _closed_after(reader, 10)
    finally:
        writer.close()
    assert data == b""
    assert TIMEOUT * 0.8 <= took < TIMEOUT + 2


async def test_headers_trickling_in_are_cut_off_at_the_idle_timeout(start: Starter) -> None:
    h = await start(idle_timeout_s=TIMEOUT)
    reader, writer = await _connect(h)
    request = f"GET /v1/tasks HTTP/1.1\r\nHost: {h.server.address}\r\nX-Slow: ".encode()

    async def trickle() -> None:
        for byte in request + b"a" * 200:  # 10 s at this pace, unless cut off
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    sending = asyncio.create_task(trickle())
    started = time.monotonic()
    try:
        try:
            data = await asyncio.wait_for(reader.read(), TIMEOUT + 5)
        except ConnectionError:
            data = b""  # closed while we were still writing: a reset
        took = time.monotonic() - started
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
    assert data == b""  # no answer: the request never arrived
    assert took < TIMEOUT + 3


async def test_a_keep_alive_connection_is_closed_once_idle(start: Starter) -> None:
    h = await start(idle_timeout_s=TIMEOUT)
    reader, writer = await _connect(h)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {h.server.address}\r\n\r\n".encode())
        await writer.drain()
        took, data = await _closed_after(reader, 10)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert took < TIMEOUT + 2


async def test_a_body_that_never_finishes_is_answered_408(start: Starter) -> None:
    h = await start(body_timeout_s=TIMEOUT)
    reader, writer = await _connect(h)
    body = json.dumps({"task_id": "t1", "model": "m"}).encode()
    try:
        writer.write(
            (
                f"POST /v1/tasks HTTP/1.1\r\nHost: {h.server.address}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body) + 100}\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        took, data = await _closed_after(reader, 20)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), data
    assert json.loads(rest)["error"]["code"] == "request_timeout"
    assert took < TIMEOUT * 2 + 2  # the answer, a short linger, then closed
    assert h.scheduler.watched == []
