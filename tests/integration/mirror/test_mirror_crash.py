"""kill -9 the real daemon in the middle of copying a result file, restart it, and check that
the copy is resumed: no partial file under its final name, the leftover temporary removed, a
completed file never fetched twice, and the webhook sent once with every file."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
from tests.helpers.files import sha256_of, start_file_server
from tests.helpers.receiver import start_receiver
from tests.helpers.wait import until
from watcher.mirror.targets import TEMP_PREFIX
from watcher.upstream.sandbox import SANDBOX, SandboxState, make_sandbox_app, success
from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, SandboxState]]:
    app = make_sandbox_app(api_key=API_KEY)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/api/v1")), app[SANDBOX]
    finally:
        await server.close()


async def test_kill_9_mid_download_resumes_and_sends_once(
    tmp_path: Path, upstream: tuple[str, SandboxState]
) -> None:
    url, state = upstream
    secret = generate_secret()
    results = tmp_path / "results"
    async with start_file_server() as files, start_receiver(secrets=[secret]) as receiver:
        small = files.file(1000, "small.png")
        slow_size = 16 * MiB
        slow = files.file(slow_size, "slow.mp4", rate=8 * MiB)  # two seconds
        state.script("t1", success((small, slow)))
        config = write_config(
            tmp_path,
            upstream_url=url,
            endpoints=[{"name": "app", "url": receiver.url("/hook"), "secret": secret}],
            extra={"mirror": {"target": f"file://{results}", "timeout": "30s"}},
        )
        first = DaemonProcess(config)
        await first.start()
        try:
            base = f"http://{first.intake_address()}"
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{base}/v1/tasks", json={"task_id": "t1", "model": "nano-banana"}
                ) as resp,
            ):
                assert resp.status == 201
            slow_path = f"/files/{slow_size}/slow.mp4"
            await until(lambda: files.bytes_sent[slow_path] > 2 * MiB)
            assert (results / "t1" / "0-small.png").exists()
            first.signal(signal.SIGKILL)
            assert await first.wait_exit() == -signal.SIGKILL
        finally:
            await first.close()

        assert receiver.received == []
        assert not (results / "t1" / "1-slow.mp4").exists()  # never a partial file
        leftovers = [p for p in results.iterdir() if p.name.startswith(TEMP_PREFIX)]
        assert len(leftovers) == 1  # the cut-short copy, under its temporary name only

        second = DaemonProcess(config)
        await second.start()
        try:
            (hook,) = await receiver.wait_for(1, timeout=20)
            assert hook.verified
            mirrored = hook.body["data"]["mirrored"]
            assert [m["sha256"] for m in mirrored] == [
                sha256_of(1000, "small.png"),
                sha256_of(slow_size, "slow.mp4"),
            ]
            for entry in mirrored:  # the receiver checks what it was given
                data = Path(entry["url"].removeprefix("file://")).read_bytes()
                assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert "mirror_error" not in hook.body["data"]
            assert files.hits["/files/1000/small.png"] == 1  # never fetched twice
            assert files.hits[slow_path] == 2  # restarted after the crash
            assert not [p for p in results.iterdir() if p.name.startswith(TEMP_PREFIX)]
            events = [e.get("event") for e in second.log_events()]
            assert "mirror_leftovers_removed" in events
            # The small copy was committed but not yet recorded (it waits for its task's
            # other copy): it is found in the directory, hashed there, not fetched again.
            assert "mirror_file_found" in events
            ready = [e for e in second.log_events() if e.get("event") == "daemon_ready"]
            assert ready[0]["resumed_mirrors"] == 1
        finally:
            second.signal(signal.SIGTERM)
            assert await second.wait_exit() == 0
            await second.close()
        assert len(receiver.received) == 1
