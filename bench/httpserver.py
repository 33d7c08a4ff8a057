"""A minimal HTTP/1.1 server on asyncio.Protocol, for the fake upstream and receiver.

aiohttp's server costs several times more CPU per request than this; the benchmark's fakes
must not be the bottleneck on a 2-core machine. It supports exactly what the clients here
send: keep-alive (or `Connection: close`), `Content-Length` bodies, pipelining. Nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

Handler = Callable[[bytes, bytes, bytes], tuple[int, bytes]]
_REASONS = {200: b"OK", 404: b"Not Found", 400: b"Bad Request"}


class _Protocol(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        transport = self._transport
        assert transport is not None
        out = []
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = bytes(buf[:end]).split(b"\r\n")
            try:
                method, target, _ = lines[0].split(b" ", 2)
            except ValueError:
                transport.close()
                return
            length = 0
            closing = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                lname = name.strip().lower()
                if lname == b"content-length":
                    length = int(value)
                elif lname == b"connection" and value.strip().lower() == b"close":
                    closing = True
            total = end + 4 + length
            if len(buf) < total:
                break  # the rest of the body comes in a later read (then the answer, the close)
            close = closing
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            status, payload = self._handler(method, target, body)
            out.append(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
                % (
                    status,
                    _REASONS.get(status, b"X"),
                    len(payload),
                    b"Connection: close\r\n" if close else b"",
                )
                + payload
            )
            if close:
                break
        if out:
            transport.write(b"".join(out))
        if close:
            transport.close()


async def serve(handler: Handler, *, port: int = 0) -> asyncio.Server:
    """Listen on 127.0.0.1:`port` (0: any free port)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Protocol(handler), "127.0.0.1", port, backlog=4096, reuse_address=True
    )


def bound_port(server: asyncio.Server) -> int:
    """The port a server listens on."""
    port: int = server.sockets[0].getsockname()[1]
    return port
