"""A fake upstream's status endpoint on a real loopback server, around a handler of the test's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.test_utils import TestServer


@asynccontextmanager
async def serve_status(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """Serve `GET /api/v1/statusTask/{model}` with `handler`; yields the `upstream.base_url`."""
    app = web.Application()
    app.router.add_get("/api/v1/statusTask/{model}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/api/v1"))
    finally:
        await server.close()
