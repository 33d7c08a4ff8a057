"""An instance frozen past its lease (SIGSTOP, a VM pause) must not poll the tasks taken over
while it was frozen when it runs again (SIGCONT): two daemons as subprocesses on one PostgreSQL
database, a fake upstream recording who polls which task when (each instance has its own API
key). The frozen instance's timers are all overdue when it wakes; a poll due before its
cluster loop has noticed the lapsed lease must be held back all the same."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from psycopg import sql

from tests.helpers.daemon import DaemonProcess, write_config
from tests.helpers.postgres import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = 60
LEASE_S = 3.0
INTERVAL_S = 0.1


@dataclass
class Poll:
    key: str
    task_id: str
    at: float  # wall clock, as the daemons' log lines


@dataclass
class Recorder:
    """The status endpoint: every task is still processing; each request is recorded."""

    polls: list[Poll] = field(default_factory=list)

    async def status(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        task_id = request.query.get("taskId", "")
        self.polls.append(Poll(key, task_id, time.time()))
        data = {"taskId": task_id, "state": "processing"}
        return web.json_response({"code": 200, "message": "success", "data": data})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_get("/api/v1/statusTask/{model}", recorder.status)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/api/v1")), recorder
    finally:
        await server.close()


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            name = url.rsplit("/", 1)[1].split("?")[0]
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_a_frozen_instance_does_not_poll_the_tasks_taken_over_when_it_wakes(
    tmp_path: Path, upstream: tuple[str, Recorder], database: str
) -> None:
    url, recorder = upstream
    daemons: dict[str, DaemonProcess] = {}
    for name in "ab":
        directory = tmp_path / name
        directory.mkdir()
        config = write_config(
            directory,
            upstream_url=url,
            api_key=f"key-{name}-0123456789abcdef",
            polling={
                "initial_interval": f"{int(INTERVAL_S * 1000)}ms",
                "max_interval": f"{int(INTERVAL_S * 1000)}ms",
                "jitter": 0,
            },
            extra={"store": {"url": database, "lease": f"{LEASE_S:g}s"}},
            extra_upstream={
                "timeout": "1s",
                "max_requests_per_second": 1000,
                "max_concurrency": 32,
            },
        )
        daemons[name] = DaemonProcess(config)
    frozen, other = daemons["a"], daemons["b"]
    try:
        for daemon in daemons.values():
            await daemon.start()
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            base = f"http://{other.intake_address()}"
            for i in range(TASKS):
                body = {"task_id": f"t{i:03}", "model": "m"}
                async with http.post(f"{base}/v1/tasks", json=body) as resp:
                    assert resp.status == 201, await resp.text()

            async def both_poll() -> bool:
                return {p.key[:5] for p in recorder.polls} == {"key-a", "key-b"}

            await _until(both_poll, 20)
            frozen.signal(signal.SIGSTOP)

            async def taken_over() -> bool:
                async with http.get(f"{base}/v1/instances") as resp:
                    listed = (await resp.json())["instances"]
                return len(listed) == 1 and listed[0]["tasks"] == TASKS

            await _until(taken_over, 30)
            woken_at = time.time()
            frozen.signal(signal.SIGCONT)

            def claimed_again() -> list[dict[str, object]]:
                return [
                    e
                    for e in frozen.log_events()
                    if e.get("event") == "cluster_tasks_claimed" and _at(e) > woken_at
                ]

            await frozen.wait_log(lambda e: bool(claimed_again()), timeout=20)
            reclaimed_at = min(_at(e) for e in claimed_again())
    finally:
        for daemon in daemons.values():
            if daemon.proc is not None and daemon.proc.returncode is None:
                daemon.signal(signal.SIGCONT)
                daemon.signal(signal.SIGTERM)
                assert await daemon.wait_exit() == 0
            await daemon.close()

    # Between waking and claiming tasks again, the frozen instance held nothing: every poll it
    # made then was of a task the other instance held.
    stray = [
        (p.task_id, round(p.at - woken_at, 3))
        for p in recorder.polls
        if p.key.startswith("key-a") and woken_at <= p.at < reclaimed_at
    ]
    assert stray == []
    events = [e.get("event") for e in frozen.log_events()]
    assert "cluster_lease_lapsed" in events
    assert "background_task_died" not in events
