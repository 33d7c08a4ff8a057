"""A real loopback HTTP server of result files, generated on the fly (never stored).

`/files/{size}/{name}` answers `size` bytes of a pattern derived from `name` (so a test knows
their sha256 without keeping them), with Content-Length and a Content-Type guessed from the
name. `?rate=BYTES_PER_S` sends slowly; `?chunked=1` leaves out Content-Length; `?short=N`
announces the size but stops after N bytes. `/missing` is a 404, `/status/{code}` answers that
status, `/redirect?to=URL` a 302. Every request is counted per path (`hits`), so a test can
tell that a file was never fetched twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

_BLOCK = 64 * 1024


def _block(name: str) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (_BLOCK // len(seed) + 1))[:_BLOCK]


def content(size: int, name: str) -> bytes:
    """The bytes `/files/{size}/{name}` answers (for small files only: it builds them)."""
    block = _block(name)
    return (block * (size // _BLOCK + 1))[:size]


def sha256_of(size: int, name: str) -> str:
    """The sha256 of `/files/{size}/{name}`, computed in blocks (fine for GBs)."""
    block = _block(name)
    digest = hashlib.sha256()
    whole, rest = divmod(size, _BLOCK)
    for _ in range(whole):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


@dataclass
class FileServer:
    server: TestServer
    hits: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def file(self, size: int, name: str, **query: str | int) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return self.url(f"/files/{size}/{name}") + (f"?{q}" if q else "")


def make_app(state: FileServer) -> web.Application:
    async def files(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        name = request.match_info["name"]
        state.hits[request.path] += 1
        rate = float(request.query.get("rate", 0))
        short = int(request.query.get("short", size))
        resp = web.StreamResponse()
        resp.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if "chunked" in request.query:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = size
        await resp.prepare(request)
        block = _block(name)
        step = min(_BLOCK, max(1, int(rate / 20))) if rate else _BLOCK
        sent = 0
        limit = min(size, short)
        while sent < limit:
            at = sent % _BLOCK  # a slow server's small pieces continue the pattern
            piece = block[at : at + min(step, limit - sent)]
            await resp.write(piece)
            sent += len(piece)
            state.bytes_sent[request.path] += len(piece)
            if rate:
                await asyncio.sleep(len(piece) / rate)
        if short < size:
            # Announced more than it sends: drop the connection, as a dying server would.
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    async def missing(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        return web.Response(status=404, text="no such file")

    async def status(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        return web.Response(status=int(request.match_info["code"]), text="status")

    async def redirect(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        return web.Response(status=302, headers={"Location": request.query["to"]})

    app = web.Application()
    app.router.add_get("/files/{size}/{name}", files)
    app.router.add_get("/missing", missing)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    return app


@asynccontextmanager
async def start_file_server() -> AsyncIterator[FileServer]:
    state = FileServer(server=None)  # type: ignore[arg-type]
    server = TestServer(make_app(state), host="127.0.0.1")
    state.server = server
    await server.start_server()
    try:
        yield state
    finally:
        await server.close()
