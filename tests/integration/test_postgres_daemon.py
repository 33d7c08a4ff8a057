"""The daemon as a subprocess on a real PostgreSQL (one instance): tasks from the intake and
the tasks file polled against the fake upstream, webhooks verified with `standardwebhooks`,
`kill -9` and restart losing nothing, a second instance taking a share, and a database outage
waited out with the schedule kept in memory."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestServer
from psycopg import sql

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
from tests.helpers.postgres import PostgresServer
from tests.helpers.receiver import start_receiver
from watcher.upstream.sandbox import (
    SANDBOX,
    SandboxState,
    make_sandbox_app,
    pending,
    processing,
    success,
)
from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, SandboxState]]:
    app = make_sandbox_app(api_key=API_KEY)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/api/v1")), app[SANDBOX]
    finally:
        await server.close()


def _pg_config(tmp_path: Path, url: str, upstream_url: str, **kwargs: Any) -> Path:
    return write_config(
        tmp_path, upstream_url=upstream_url, extra={"store": {"url": url}}, **kwargs
    )


async def _task_states(base: str, http: aiohttp.ClientSession) -> dict[str, str]:
    states: dict[str, str] = {}
    cursor = None
    while True:
        url = f"{base}/v1/tasks?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        states.update({t["task_id"]: t["state"] for t in page["tasks"]})
        cursor = page["next_cursor"]
        if not cursor:
            return states


async def _until(condition: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_kill_9_and_restart_on_postgres_loses_nothing(
    tmp_path: Path, upstream: tuple[str, SandboxState], database: str
) -> None:
    url, state = upstream
    secret = generate_secret()
    count = 30
    state.script_default(pending(), pending(), processing(), processing(), processing(), success())
    wanted = {f"file_{i}" for i in range(count // 2)} | {f"api_{i}" for i in range(count // 2)}
    async with start_receiver(secrets=[secret]) as receiver:
        receiver.script("/hook", *([500] * 6))  # some deliveries are waiting for a retry
        config = _pg_config(
            tmp_path,
            database,
            url,
            endpoints=[{"name": "app", "url": receiver.url("/hook"), "secret": secret}],
            polling={"initial_interval": "100ms", "max_interval": "200ms"},
            delivery={"retry_schedule": ["0s"] + ["300ms"] * 10},
            tasks=[{"task_id": f"file_{i}", "model": "nano-banana"} for i in range(count // 2)],
        )
        first = DaemonProcess(config)
        await first.start()
        try:
            base = f"http://{first.intake_address()}"
            async with aiohttp.ClientSession() as http:
                for i in range(count // 2):
                    body = {"task_id": f"api_{i}", "model": "flux-2"}
                    async with http.post(f"{base}/v1/tasks", json=body) as resp:
                        assert resp.status == 201, await resp.text()
            await receiver.wait_until(lambda: sum(r.verified for r in receiver.received) >= 8, 30)
            first.signal(signal.SIGKILL)
            assert await first.wait_exit() == -signal.SIGKILL
            before = {r.body["data"]["task_id"] for r in receiver.received}
            assert len(before) < count, "the kill came too late to prove anything"
        finally:
            await first.close()

        second = DaemonProcess(config)
        await second.start()
        try:
            await receiver.wait_until(
                lambda: (
                    {r.body["data"]["task_id"] for r in receiver.received if r.verified} >= wanted
                ),
                timeout=30,
            )
            base = f"http://{second.intake_address()}"
            async with aiohttp.ClientSession() as http:
                states = await _task_states(base, http)
            assert set(states) == wanted
            assert set(states.values()) == {"succeeded"}
            ids: dict[str, set[str | None]] = {}
            for request in receiver.received:
                assert request.verified  # standardwebhooks accepts every one
                ids.setdefault(request.body["data"]["task_id"], set()).add(request.webhook_id)
            assert all(len(v) == 1 for v in ids.values()), ids  # repeats keep the webhook-id
            resumed = [e for e in second.log_events() if e.get("event") == "daemon_ready"]
            assert resumed[0]["resumed_tasks"] > 0
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait_exit() == 0
            await second.close()


async def test_a_second_instance_joins_and_takes_a_share_of_the_tasks(
    tmp_path: Path, upstream: tuple[str, SandboxState], database: str
) -> None:
    url, state = upstream
    state.script_default(*([processing()] * 400), success())  # still running throughout
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    polling = {"initial_interval": "200ms", "max_interval": "200ms", "jitter": 0}
    first = DaemonProcess(_pg_config(tmp_path / "a", database, url, polling=polling))
    second = DaemonProcess(_pg_config(tmp_path / "b", database, url, polling=polling))
    await first.start()
    try:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            base = f"http://{first.intake_address()}"
            for i in range(40):
                async with http.post(
                    f"{base}/v1/tasks", json={"task_id": f"t{i:02}", "model": "m"}
                ) as resp:
                    assert resp.status == 201
            await second.start()
            other = f"http://{second.intake_address()}"

            async def shared() -> bool:
                async with http.get(f"{other}/v1/instances") as resp:
                    assert resp.status == 200
                    listed = (await resp.json())["instances"]
                return len(listed) == 2 and sorted(i["tasks"] for i in listed) == [20, 20]

            await _until(shared, 20)
            async with http.get(f"{other}/v1/instances") as resp:
                listed = (await resp.json())["instances"]
            assert [i["self"] for i in listed] == [False, True]  # first started first
            assert [i["intake"] for i in listed] == [
                first.intake_address(),
                second.intake_address(),
            ]
            assert {i["pid"] for i in listed} == {first.proc.pid, second.proc.pid}  # type: ignore[union-attr]
            # A graceful stop hands the work over at once.
            second.signal(signal.SIGTERM)
            assert await second.wait_exit() == 0

            async def alone() -> bool:
                async with http.get(f"{base}/v1/instances") as resp:
                    listed = (await resp.json())["instances"]
                return len(listed) == 1 and listed[0]["tasks"] == 40

            await _until(alone, 10)
    finally:
        await second.close()
        first.signal(signal.SIGTERM)
        assert await first.wait_exit() == 0
        await first.close()


def _block(admin_url: str, url: str, *, allow: bool) -> None:
    """Close the database to new connections and end the daemon's (or open it again)."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allow else "false")
            )
        )
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


async def test_a_database_outage_is_waited_out_and_loses_nothing(
    tmp_path: Path,
    upstream: tuple[str, SandboxState],
    database: str,
    postgres_server: PostgresServer,
) -> None:
    url, state = upstream
    secret = generate_secret()
    # Each task takes about two seconds of polls: they finish during the outage.
    state.script_default(*([processing()] * 12), success())
    async with start_receiver(secrets=[secret]) as receiver:
        config = _pg_config(
            tmp_path,
            database,
            url,
            endpoints=[{"name": "app", "url": receiver.url("/hook"), "secret": secret}],
            polling={"initial_interval": "150ms", "max_interval": "150ms", "jitter": 0},
        )
        daemon = DaemonProcess(config)
        await daemon.start()
        try:
            base = f"http://{daemon.intake_address()}"
            timeout = aiohttp.ClientTimeout(total=15)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                for i in range(10):
                    async with http.post(
                        f"{base}/v1/tasks", json={"task_id": f"t{i}", "model": "m"}
                    ) as resp:
                        assert resp.status == 201
                _block(postgres_server.admin_url, database, allow=False)
                try:
                    async with http.get(f"{base}/readyz") as resp:
                        assert resp.status == 503
                        reasons = (await resp.json())["reasons"]
                    assert any(r.startswith("store unreachable") for r in reasons), reasons
                    async with http.post(
                        f"{base}/v1/tasks", json={"task_id": "x", "model": "m"}
                    ) as resp:
                        assert resp.status == 503
                        assert (await resp.json())["error"]["code"] == "store_unavailable"
                    await asyncio.sleep(3)  # the tasks finish upstream meanwhile
                    assert daemon.proc is not None
                    assert daemon.proc.returncode is None
                    assert not receiver.received  # nothing committed, nothing sent
                finally:
                    _block(postgres_server.admin_url, database, allow=True)

                async def ready() -> bool:
                    async with http.get(f"{base}/readyz") as resp:
                        return resp.status == 200

                await _until(ready, 20)
                async with http.post(
                    f"{base}/v1/tasks", json={"task_id": "x", "model": "m"}
                ) as resp:
                    assert resp.status == 201
                wanted = {f"t{i}" for i in range(10)} | {"x"}
                await receiver.wait_until(
                    lambda: (
                        {r.body["data"]["task_id"] for r in receiver.received if r.verified}
                        >= wanted
                    ),
                    timeout=30,
                )
                states = await _task_states(base, http)
            assert states == dict.fromkeys(wanted, "succeeded")
            events = {e.get("event") for e in daemon.log_events()}
            assert "background_task_died" not in events
        finally:
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
            await daemon.close()
