"""Fixtures for running the whole watcher in-process against a fake upstream and a receiver."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, write_config
from tests.helpers.postgres import (  # noqa: F401 - fixtures
    database,
    postgres_server,
    postgres_url,
)
from tests.helpers.receiver import Receiver, start_receiver
from watcher.clock import Clock
from watcher.config.settings import load_config
from watcher.daemon import Daemon
from watcher.upstream.sandbox import SANDBOX, SandboxState, make_sandbox_app
from watcher.webhook_secret import generate_secret


@dataclass
class Upstream:
    server: TestServer
    state: SandboxState

    @property
    def url(self) -> str:
        return str(self.server.make_url("/api/v1"))


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = make_sandbox_app(api_key=API_KEY)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Upstream(server, app[SANDBOX])
    finally:
        await server.close()


@pytest.fixture
def secret() -> str:
    return generate_secret()


@pytest.fixture
async def receiver(secret: str) -> AsyncIterator[Receiver]:
    async with start_receiver(secrets=[secret]) as r:
        yield r


@dataclass
class Running:
    """A daemon running in this process, and a client of its intake API."""

    daemon: Daemon
    config_path: Path
    task: asyncio.Task[int]
    http: aiohttp.ClientSession
    base: str
    extra: dict[str, Any] = field(default_factory=dict)

    async def add(self, task_id: str, model: str = "nano-banana", **fields: Any) -> Any:
        async with self.http.post(
            f"{self.base}/v1/tasks", json={"task_id": task_id, "model": model, **fields}
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
            return await resp.json()

    async def get(self, path: str) -> Any:
        async with self.http.get(self.base + path) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def post(self, path: str) -> tuple[int, Any]:
        async with self.http.post(self.base + path) as resp:
            return resp.status, await resp.json()

    async def wait_task(
        self, task_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Poll GET /v1/tasks/{id} until predicate(task) holds (condition wait, not a sleep)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            task = await self.get(f"/v1/tasks/{task_id}")
            with contextlib.suppress(IndexError, KeyError):  # e.g. no delivery yet
                if predicate(task):
                    return task
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"task never matched: {task}")
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        """Stop the daemon as SIGTERM would (graceful); its exit code."""
        self.daemon.stop()
        code = await asyncio.wait_for(self.task, 10)
        await self.http.close()
        return code


@pytest.fixture
async def start_daemon(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Callable[..., Any]]:
    """`await start_daemon(endpoints=[...], polling={...}, ...)` -> Running. Starting it
    again (after `Running.stop()`) restarts it on the same store; `clock=` injects a clock."""
    running: list[Running] = []

    async def start(
        *, clock: Clock | None = None, tasks_settle_s: float = 0.2, **kwargs: Any
    ) -> Running:
        kwargs.setdefault("upstream_url", upstream.url)
        path = write_config(tmp_path, **kwargs)
        daemon = Daemon(
            load_config(path),
            config_path=path,
            clock=clock,
            grace_s=2.0,
            reconfigure_logging=False,
            tasks_settle_s=tasks_settle_s,
        )
        task = asyncio.create_task(daemon.run())
        ready = asyncio.ensure_future(daemon.ready.wait())
        done, _ = await asyncio.wait({ready, task}, timeout=10, return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            raise AssertionError(f"daemon did not become ready: {task.result() if done else ''}")
        assert daemon.intake is not None
        http = aiohttp.ClientSession()
        base = f"http://{daemon.intake.address}"
        r = Running(daemon, path, task, http, base)
        running.append(r)
        return r

    yield start
    for r in running:
        r.daemon.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(r.task, 10)
        await r.http.close()
