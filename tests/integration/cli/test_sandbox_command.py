"""`apixo-watcher sandbox`: the fake upstream a newcomer starts first."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

import aiohttp
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sandbox_command_serves_a_task_to_completion() -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "sandbox",
        "--port",
        str(port),
        "--finish-after",
        "0.3",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/v1/statusTask/nano-banana?taskId=task_demo"
    headers = {"Authorization": "Bearer any-key"}
    try:
        async with aiohttp.ClientSession() as http:
            states: list[str] = []
            for _ in range(200):  # until it answers and the task has finished
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(url, headers=headers) as resp:
                        body = await resp.json()
                        states.append(body["data"]["state"])
                        if states[-1] == "success":
                            break
                await asyncio.sleep(0.05)
            assert states[0] == "pending"
            assert states[-1] == "success"
            assert "resultUrls" in body["data"]["resultJson"]
            async with http.get(url) as resp:  # no key: like the real API
                assert resp.status == 401
    finally:
        proc.terminate()
        await proc.wait()
