"""The files a new user runs first: examples/receiver.py, as the README uses it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from standardwebhooks import Webhook

from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_for_text(path: Path, text: str, proc: asyncio.subprocess.Process) -> str:
    """Wait (up to 10 s) until the file holds `text`; the process must still be running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        content = path.read_text()
        if text in content:
            return content
        assert proc.returncode is None, f"receiver exited {proc.returncode}: {content}"
        assert loop.time() < deadline, f"{text!r} never reached the file; it holds {content!r}"
        await asyncio.sleep(0.05)


async def test_example_receiver_writes_each_line_at_once_when_redirected(tmp_path: Path) -> None:
    secret = generate_secret()
    port = _free_port()
    out = tmp_path / "hooks.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["APP_WEBHOOK_SECRET"] = secret
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "examples" / "receiver.py"),
            "--port",
            str(port),
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    try:
        await _wait_for_text(out, f"127.0.0.1:{port}", proc)
        body = json.dumps(
            {
                "type": "task.succeeded",
                "timestamp": "2026-01-01T00:00:00.000Z",
                "data": {"task_id": "task_example", "result_urls": ["https://cdn/x.jpg"]},
            }
        )
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": "msg_example",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("msg_example", now, body),
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{port}/hooks/apixo", data=body, headers=headers) as r,
        ):
            assert r.status == 204
        content = await _wait_for_text(out, "https://cdn/x.jpg", proc)
        assert "verified task.succeeded for task_example [msg_example]" in content
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
