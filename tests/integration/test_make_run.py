"""`make run` as a new user runs it first: config.example.yaml, no APP_WEBHOOK_SECRET.

The real Makefile target runs against a fake upstream and a receiver. Only what a test cannot
share with other processes is moved: the venv (a stand-in whose `apixo-watcher` is this
interpreter's, so nothing is installed), the intake address and the endpoint URL of the example
config (free ones instead of 8787 and 9000), and the state directory (STATE_DIRECTORY, as
systemd would set it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY
from tests.helpers.receiver import start_receiver, verify
from tests.integration.cli.test_cli import cli
from watcher.upstream.sandbox import SANDBOX, make_sandbox_app, pending, success

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class MakeRun:
    proc: asyncio.subprocess.Process
    out: Path
    err: Path

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.out.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line[line.index("{") :] if "{" in line else line))
        return events

    async def wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any(e.get("event") == "daemon_ready" for e in self.log_events()):
            assert self.proc.returncode is None, self.transcript()
            assert loop.time() < deadline, f"no daemon_ready:\n{self.transcript()}"
            await asyncio.sleep(0.05)

    def transcript(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()}"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            # Ctrl-C as a terminal sends it: SIGINT to the whole group (make and the daemon it
            # exec'd, the session this test started). Not SIGTERM: make passes a SIGTERM on to
            # its child, which would then get two and force its exit.
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
                await asyncio.wait_for(self._group_gone(), 20)  # the daemon too
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()

    async def _group_gone(self) -> None:
        while True:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)


def _fake_venv(directory: Path) -> Path:
    """A venv as `make run` expects one, already 'installed', running this interpreter."""
    venv = directory / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").touch()
    script = venv / "bin" / "apixo-watcher"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m watcher "$@"\n')
    script.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: no install step
    return venv


def _example_config(directory: Path, *, listen: str, endpoint_url: str) -> Path:
    text = (REPO / "config.example.yaml").read_text()
    for old, new in (
        ("listen: 127.0.0.1:8787", f"listen: {listen}"),
        ("url: http://127.0.0.1:9000/hooks/apixo", f"url: {endpoint_url}"),
    ):
        assert text.count(old) == 1, f"config.example.yaml no longer has {old!r}"
        text = text.replace(old, new)
    path = directory / "config.yaml"
    path.write_text(text)
    return path


@pytest.fixture
async def make_run(tmp_path: Path) -> AsyncIterator[Any]:
    runs: list[MakeRun] = []

    async def start(config: Path, venv: Path, env: dict[str, str], name: str) -> MakeRun:
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = await asyncio.create_subprocess_exec(
                "make",
                "-s",
                "--no-print-directory",
                "-C",
                str(REPO),
                "run",
                f"VENV={venv}",
                f"CONFIG={config}",
                stdout=o,
                stderr=e,
                env=env,
                start_new_session=True,
            )
        run = MakeRun(proc, out, err)
        runs.append(run)
        return run

    yield start
    for run in runs:
        await run.stop()


async def test_first_make_run_keeps_a_secret_a_receiver_can_use(
    tmp_path: Path, make_run: Any
) -> None:
    app = make_sandbox_app(api_key=API_KEY)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    sock_dir = Path(tempfile.mkdtemp(prefix="amr-", dir="/tmp"))
    state = tmp_path / "state"
    secret_file = state / "webhook-secret"
    try:
        async with start_receiver() as receiver:
            config = _example_config(
                tmp_path,
                listen=f"unix:{sock_dir / 'intake.sock'}",
                endpoint_url=receiver.url("/hooks/apixo"),
            )
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("MAKE", "MFLAGS", "NOTIFY_", "APP_WEBHOOK_", "APIXO_"))
            }
            env.update(
                APIXO_API_KEY=API_KEY,
                APIXO_BASE_URL=str(upstream.make_url("/api/v1")),
                STATE_DIRECTORY=str(state),
                PYTHONUNBUFFERED="1",
            )
            venv = _fake_venv(tmp_path)

            first = await make_run(config, venv, env, "first")
            await first.wait_ready()
            err = first.err.read_text()
            assert f"created a webhook secret in {secret_file}" in err, first.transcript()
            assert f"APP_WEBHOOK_SECRET=$(cat {secret_file}) python examples/receiver.py" in err
            assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
            secret = secret_file.read_text().strip()
            assert secret.startswith("whsec_")

            app[SANDBOX].script("task_first_run", pending(), success())
            added = await cli("add", "task_first_run", "--model", "nano-banana", "-c", str(config))
            assert added.code == 0, added.err
            [hook] = await receiver.wait_for(1, timeout=15)
            # Verified with the secret read from the file, as the README tells a user to.
            assert verify(secret, hook.raw_body, hook.headers)
            assert hook.body["data"]["task_id"] == "task_first_run"

            await first.stop()
            logs = first.log_events()
            assert logs[-1]["event"] == "daemon_stopped", first.transcript()
            assert logs, first.transcript()
            assert secret not in first.out.read_text() + err.replace(secret, "")
            warnings = [e for e in logs if e.get("level") in ("warning", "error", "critical")]
            assert warnings == [], warnings  # e.g. no tasks_file_missing on a first run

            second = await make_run(config, venv, env, "second")
            await second.wait_ready()
            assert f"using the webhook secret in {secret_file}" in second.err.read_text()
            assert secret_file.read_text().strip() == secret
            await second.stop()
    finally:
        await upstream.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
