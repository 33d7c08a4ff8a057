"""A running watcher for the console's browser tests and `make screenshots`.

The real daemon (in this process, on this event loop) with an intake token, the sandbox as its
upstream (scripted per task) and a webhook receiver that verifies every request with
`standardwebhooks`. The sandbox also serves small PNGs at `/img/{name}.png`, so tasks can have
result URLs whose previews load from a loopback server.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, write_config
from tests.helpers.receiver import Receiver, start_receiver
from watcher.config.settings import load_config
from watcher.daemon import Daemon
from watcher.upstream.sandbox import SANDBOX, SandboxResponse, SandboxState, make_sandbox_app
from watcher.webhook_secret import generate_secret

TOKEN = "console-test-token-0123456789"


def gradient_png(width: int = 160, height: int = 120, hue: int = 0) -> bytes:
    """A small RGB PNG (a diagonal gradient), made without an imaging library."""
    rows = []
    for y in range(height):
        row = bytearray([0])  # filter: none
        for x in range(width):
            t = (x + y) / (width + height)
            rgb = [int(40 + 200 * t), int(90 + 120 * (1 - t)), int(180 - 100 * t)]
            rgb = rgb[hue % 3 :] + rgb[: hue % 3]
            row.extend(rgb)
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


async def _image(request: web.Request) -> web.Response:
    hue = sum(request.match_info["name"].encode()) % 3
    return web.Response(body=gradient_png(hue=hue), content_type="image/png")


@dataclass
class Scene:
    """The daemon, its upstream and its receiver; `http` sends the token."""

    daemon: Daemon
    upstream: SandboxState
    upstream_server: TestServer
    receiver: Receiver
    secret: str
    base: str
    http: aiohttp.ClientSession
    token: str | None

    @property
    def ui(self) -> str:
        return f"{self.base}/ui/"

    def image_url(self, name: str) -> str:
        return str(self.upstream_server.make_url(f"/img/{name}.png"))

    async def add(
        self,
        task_id: str,
        answers: Sequence[SandboxResponse],
        *,
        model: str = "nano-banana",
        **fields: Any,
    ) -> dict[str, Any]:
        """Script the upstream's answers for a task, then register it."""
        self.upstream.script(task_id, *answers)
        async with self.http.post(
            f"{self.base}/v1/tasks", json={"task_id": task_id, "model": model, **fields}
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
            return dict(await resp.json())

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def wait_task(
        self, task_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll the task until predicate(task) holds (a condition wait, not a fixed sleep)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            task = dict(await self.get(f"/v1/tasks/{task_id}"))
            with contextlib.suppress(IndexError, KeyError):
                if predicate(task):
                    return task
            if loop.time() > deadline:
                raise AssertionError(f"task never matched: {task}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def console_scene(directory: Path, *, token: str | None = TOKEN) -> AsyncIterator[Scene]:
    """Start the upstream, the receiver and the daemon; stop them all on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    app = make_sandbox_app(api_key=API_KEY)
    app.router.add_get("/img/{name}.png", _image)
    upstream_server = TestServer(app, host="127.0.0.1")
    await upstream_server.start_server()
    secret = generate_secret()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with start_receiver(secrets=[secret]) as receiver:
            path = write_config(
                directory,
                upstream_url=str(upstream_server.make_url("/api/v1")),
                endpoints=[
                    {"name": "app", "url": receiver.url("/hook"), "secret": secret},
                    {"name": "crm", "url": receiver.url("/crm"), "secret": secret},
                ],
                delivery={"retry_schedule": ["0s", "50ms"]},
                extra={"intake": {"listen": "127.0.0.1:0", **({"token": token} if token else {})}},
            )
            daemon = Daemon(
                load_config(path), config_path=path, grace_s=2.0, reconfigure_logging=False
            )
            run = asyncio.create_task(daemon.run())
            ready = asyncio.ensure_future(daemon.ready.wait())
            done, _ = await asyncio.wait({ready, run}, timeout=10, return_when="FIRST_COMPLETED")
            if ready not in done:
                ready.cancel()
                raise AssertionError(f"daemon did not become ready: {run.result() if done else ''}")
            assert daemon.intake is not None
            http = aiohttp.ClientSession(headers=headers)
            try:
                yield Scene(
                    daemon=daemon,
                    upstream=app[SANDBOX],
                    upstream_server=upstream_server,
                    receiver=receiver,
                    secret=secret,
                    base=f"http://{daemon.intake.address}",
                    http=http,
                    token=token,
                )
            finally:
                await http.close()
                daemon.stop()
                await asyncio.wait_for(run, 10)
    finally:
        await upstream_server.close()
