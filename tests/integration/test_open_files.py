"""File descriptors: idle clients cannot starve the intake and the webhooks of them.

The daemon runs as a subprocess under `prlimit`, so its open-files limit is one the test chose
(soft and hard), and the test holds more idle connections than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.daemon import DaemonProcess, write_config
from tests.helpers.receiver import Receiver
from tests.integration.conftest import Upstream
from watcher.upstream.sandbox import success

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit is not installed"),
]

MODEL = "nano-banana"
LIMIT = 128  # the daemon's soft and hard limit on open files


def _prlimit(soft: int, hard: int) -> list[str]:
    return ["prlimit", f"--nofile={soft}:{hard}", "--"]


@pytest.fixture
async def daemons() -> AsyncIterator[list[DaemonProcess]]:
    made: list[DaemonProcess] = []
    try:
        yield made
    finally:
        for daemon in made:
            await daemon.close()


def _starting(daemon: DaemonProcess) -> dict[str, object]:
    return next(e for e in daemon.log_events() if e.get("event") == "daemon_starting")


async def test_the_soft_limit_is_raised_to_the_hard_one_and_logged(
    tmp_path: Path, upstream: Upstream, daemons: list[DaemonProcess]
) -> None:
    daemon = DaemonProcess(
        write_config(tmp_path, upstream_url=upstream.url), wrapper=_prlimit(64, 512)
    )
    daemons.append(daemon)
    await daemon.start()
    starting = _starting(daemon)
    assert starting["open_files_limit_was"] == 64
    assert starting["open_files_limit"] == 512
    assert starting["open_files_hard_limit"] == 512


async def _healthz(base: str) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"{base}/healthz") as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_idle_connections_beyond_the_limit_leave_the_intake_and_webhooks_working(
    tmp_path: Path,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    daemons: list[DaemonProcess],
) -> None:
    upstream.state.script_default(success())
    config = write_config(
        tmp_path,
        upstream_url=upstream.url,
        endpoints=[{"name": "app", "url": receiver.url(), "secret": secret}],
        extra={"intake": {"listen": "127.0.0.1:0", "idle_timeout": "1s"}},
    )
    daemon = DaemonProcess(config, wrapper=_prlimit(LIMIT, LIMIT))
    daemons.append(daemon)
    await daemon.start()
    assert _starting(daemon)["open_files_limit"] == LIMIT
    address = daemon.intake_address()
    host, _, port = address.rpartition(":")

    # More connections that never send a byte than the daemon has descriptors.
    idle: list[socket.socket] = []
    try:
        for _ in range(LIMIT + 100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((host, int(port)))
            idle.append(sock)

        # The idle ones are dropped after intake.idle_timeout: the intake answers again
        # (without the timeout they stayed open for an hour, and nothing else got in).
        deadline = asyncio.get_running_loop().time() + 20
        while await _healthz(f"http://{address}") != 200:
            assert asyncio.get_running_loop().time() < deadline, daemon.log_text()[-3000:]
            await asyncio.sleep(0.2)

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://{address}/v1/tasks", json={"task_id": "after-idle", "model": MODEL}
            ) as resp,
        ):
            assert resp.status == 201, await resp.text()
        delivered = await receiver.wait_for(1, timeout=15)
        assert delivered[0].verified
        assert delivered[0].body["data"]["task_id"] == "after-idle"
    finally:
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()
    assert daemon.proc is not None
    assert daemon.proc.returncode is None  # nothing died of running out
