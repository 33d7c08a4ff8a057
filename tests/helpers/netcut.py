"""A TCP proxy in front of PostgreSQL that a test can cut, as a network partition would: one
daemon loses its database while the others keep theirs.

`refuse()` is a server going away (a restart, a failover): every connection is closed and new
ones are closed as soon as they arrive, so clients fail fast instead of timing out.
`cut()` stops forwarding in both directions without closing anything (no RST, no FIN: what a
partition looks like from both ends), and new connections are accepted but go nowhere; so
statements in flight hang and new connections time out. `mend()` lets everything through again.
The upstream may be a TCP address or a unix socket directory (pgserver listens on one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict


class NetCut:
    def __init__(self, url: str) -> None:
        info = conninfo_to_dict(url)
        self._host = str(info.get("host") or "/var/run/postgresql")
        self._port = int(info.get("port") or 5432)
        self._url = url
        self._open = asyncio.Event()
        self._open.set()
        self._refusing = False
        self.accepted = 0  # connections the proxy was asked for, refused ones included
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """`url` pointing at the proxy (TCP on loopback) instead of the server."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self._url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        query = "&".join(
            q for q in parts.query.split("&") if q and not q.startswith(("host=", "port="))
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    def cut(self) -> None:
        self._open.clear()

    def refuse(self) -> None:
        self._refusing = True
        for pipe in self._pipes:
            pipe.cancel()

    def mend(self) -> None:
        self._refusing = False
        self._open.set()

    async def close(self) -> None:
        self._open.set()
        if self._server is not None:
            self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._host.startswith("/"):
            return await asyncio.open_unix_connection(f"{self._host}/.s.PGSQL.{self._port}")
        return await asyncio.open_connection(self._host, self._port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self.accepted += 1
        try:
            if self._refusing:
                return
            await self._open.wait()
            up_reader, up_writer = await self._connect()
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                up_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._pipes.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._open.wait()  # cut: the bytes wait, as if lost on the way
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()


@contextlib.asynccontextmanager
async def netcut(url: str) -> AsyncIterator[NetCut]:
    proxy = NetCut(url)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
