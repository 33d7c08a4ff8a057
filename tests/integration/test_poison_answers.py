"""Poison upstream answers against the real daemon (a subprocess): it stays up (issue 9, item 1).

A ~2 KB answer nesting ~1,000 levels deep used to raise RecursionError out of the answer
classification: the daemon exited 1, and died again within a second of every restart, because
the task was still there to be polled. Now such an answer is a bad answer of that one task.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.daemon import DaemonProcess, write_config
from tests.helpers.receiver import start_receiver
from tests.integration.conftest import Upstream
from watcher.upstream.sandbox import SandboxResponse, envelope, pending, success
from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow

LEVELS = 1000
DEEP_ENVELOPE = (
    '{"code": 200, "message": "success", "data": {"state": "success", "extra": '
    + "[" * LEVELS
    + "]" * LEVELS
    + "}}"
).encode()
DEEP_RESULT_JSON = '{"resultUrls": ' * LEVELS + "[]" + "}" * LEVELS
GOOD = [f"good_{i}" for i in range(4)]


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_poison_answers_leave_the_daemon_up_and_other_tasks_finish(
    tmp_path: Path, upstream: Upstream
) -> None:
    state = upstream.state
    state.script("poison_envelope", SandboxResponse(200, DEEP_ENVELOPE))
    state.script(
        "poison_result",
        SandboxResponse(200, envelope({"state": "success", "resultJson": DEEP_RESULT_JSON})),
    )
    state.script_default(pending(), success())
    secret = generate_secret()
    async with start_receiver(secrets=[secret]) as receiver:
        config = write_config(
            tmp_path,
            upstream_url=upstream.url,
            endpoints=[{"name": "app", "url": receiver.url("/hook"), "secret": secret}],
            tasks=[
                {"task_id": task_id, "model": "nano-banana"}
                for task_id in ["poison_envelope", "poison_result", *GOOD]
            ],
        )
        daemon = DaemonProcess(config)
        await daemon.start()
        try:

            def delivered() -> dict[str, Any]:
                return {r.body["data"]["task_id"]: r.body for r in receiver.received if r.verified}

            # The good tasks finish and deliver; the poisoned resultJson is a bad result.
            await receiver.wait_until(lambda: delivered().keys() >= {*GOOD, "poison_result"}, 20)
            bodies = delivered()
            assert {bodies[t]["type"] for t in GOOD} == {"task.succeeded"}
            assert bodies["poison_result"]["type"] == "task.failed"
            assert bodies["poison_result"]["data"]["fail_code"] == "WATCHER_BAD_RESULT"

            # The poisoned envelope keeps being asked (a malformed answer), and nothing died.
            await asyncio.wait_for(_polled_again(upstream, "poison_envelope"), 10)
            assert daemon.proc is not None
            assert daemon.proc.returncode is None
            base = f"http://{daemon.intake_address()}"
            async with aiohttp.ClientSession() as http:
                status, health = await _get(http, f"{base}/healthz")
                assert (status, health) == (200, {"status": "ok"})
                status, task = await _get(http, f"{base}/v1/tasks/poison_envelope")
            assert status == 200
            assert task["state"] == "pending"
            assert "malformed answer" in (task["last_error"] or "")
            starts = [e for e in daemon.log_events() if e.get("event") == "daemon_starting"]
            assert len(starts) == 1
        finally:
            await daemon.close()


async def _polled_again(upstream: Upstream, task_id: str) -> None:
    while upstream.state.polls(task_id) < 3:
        await asyncio.sleep(0.02)
