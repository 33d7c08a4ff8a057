"""kill -9 the real daemon mid-run, restart it, and check that nothing was lost.

The daemon runs as a subprocess (`python -m watcher run`) against a fake upstream and a
verifying receiver served by this test process. Durability is at-least-once: after a crash a
webhook may come twice, with the same webhook-id, but never not at all.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
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


async def _tasks(base: str, http: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        url = f"{base}/v1/tasks?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(url) as resp:
            assert resp.status == 200
            page = await resp.json()
        out.update({t["task_id"]: t for t in page["tasks"]})
        cursor = page["next_cursor"]
        if not cursor:
            return out


async def _deliveries(base: str, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with http.get(f"{base}/v1/deliveries?limit=1000") as resp:
        assert resp.status == 200
        return list((await resp.json())["deliveries"])


async def test_kill_9_mid_run_loses_no_task_and_no_delivery(
    tmp_path: Path, upstream: tuple[str, SandboxState]
) -> None:
    url, state = upstream
    secret = generate_secret()
    count = 40
    # Each task needs several polls, so tasks are at every stage when the kill comes.
    state.script_default(pending(), pending(), processing(), processing(), processing(), success())
    async with start_receiver(secrets=[secret]) as receiver:
        # The receiver fails the first deliveries, so some are waiting for a retry at the kill.
        receiver.script("/hook", *([500] * 8))
        config = write_config(
            tmp_path,
            upstream_url=url,
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
                    body = {"task_id": f"api_{i}", "model": "flux-2", "metadata": {"i": i}}
                    async with http.post(f"{base}/v1/tasks", json=body) as resp:
                        assert resp.status == 201
            # kill -9 once some, but not all, webhooks went through
            await receiver.wait_until(lambda: sum(r.verified for r in receiver.received) >= 12, 20)
            first.signal(signal.SIGKILL)
            assert await first.wait_exit() == -signal.SIGKILL
            delivered_before = {r.body["data"]["task_id"] for r in receiver.received}
            assert len(delivered_before) < count, "the kill came too late to prove anything"
        finally:
            await first.close()

        second = DaemonProcess(config)
        await second.start()
        try:
            await receiver.wait_until(
                lambda: (
                    {r.body["data"]["task_id"] for r in receiver.received if r.verified}
                    >= {f"file_{i}" for i in range(count // 2)}
                    | {f"api_{i}" for i in range(count // 2)}
                ),
                timeout=30,
            )
            base = f"http://{second.intake_address()}"
            async with aiohttp.ClientSession() as http:
                tasks = await _tasks(base, http)
                assert len(tasks) == count
                assert {t["state"] for t in tasks.values()} == {"succeeded"}

                # one delivery per task, all succeeded; duplicates carry the same webhook-id
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    deliveries = await _deliveries(base, http)
                    if len(deliveries) == count and all(
                        d["status"] == "succeeded" for d in deliveries
                    ):
                        break
                    assert asyncio.get_running_loop().time() < deadline, deliveries
                    await asyncio.sleep(0.05)
            ids_by_task: dict[str, set[str | None]] = {}
            for request in receiver.received:
                ids_by_task.setdefault(request.body["data"]["task_id"], set()).add(
                    request.webhook_id
                )
            assert all(len(ids) == 1 for ids in ids_by_task.values()), ids_by_task
            assert all(r.body["type"] == "task.succeeded" for r in receiver.received)
            resumed = [e for e in second.log_events() if e.get("event") == "daemon_ready"]
            assert resumed[0]["resumed_tasks"] > 0
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait_exit() == 0
            await second.close()


async def test_kill_9_right_after_acknowledged_posts_loses_none(
    tmp_path: Path, upstream: tuple[str, SandboxState]
) -> None:
    url, state = upstream
    state.script_default(pending())  # never finishes: we only care that tasks are kept
    config = write_config(
        tmp_path, upstream_url=url, polling={"initial_interval": "1s", "max_interval": "2s"}
    )
    daemon = DaemonProcess(config)
    await daemon.start()
    acknowledged: list[str] = []
    try:
        base = f"http://{daemon.intake_address()}"
        async with aiohttp.ClientSession() as http:

            async def post(i: int) -> None:
                body = {"task_id": f"burst_{i}", "model": "nano-banana"}
                async with http.post(f"{base}/v1/tasks", json=body) as resp:
                    if resp.status == 201:
                        acknowledged.append(body["task_id"])

            await asyncio.gather(*(post(i) for i in range(200)))
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    finally:
        await daemon.close()
    assert len(acknowledged) == 200

    again = DaemonProcess(config)
    await again.start()
    try:
        async with aiohttp.ClientSession() as http:
            tasks = await _tasks(f"http://{again.intake_address()}", http)
        assert set(acknowledged) <= set(tasks)
        assert Counter(t["state"] for t in tasks.values()) == Counter({"pending": 200})
    finally:
        await again.close()
