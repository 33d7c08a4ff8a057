"""The `apixo-watcher` command as an operator uses it: real subprocesses against a live daemon."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
from tests.helpers.receiver import Receiver, start_receiver
from watcher.upstream.sandbox import SANDBOX, SandboxState, make_sandbox_app, pending, success
from watcher.webhook_secret import decode_secret, generate_secret

pytestmark = pytest.mark.slow


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    result = Result(proc.returncode, out.decode(), err.decode())
    assert "Traceback" not in result.err, result.err
    return result


@dataclass
class Live:
    config: Path
    daemon: DaemonProcess
    upstream: SandboxState
    receiver: Receiver
    secret: str


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    app = make_sandbox_app(api_key=API_KEY)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    secret = generate_secret()
    async with start_receiver(secrets=[secret]) as receiver:
        daemon: DaemonProcess | None = None
        # A unix socket gives the client commands a fixed address without port races
        # (in /tmp: socket paths are limited to ~108 bytes).
        sock_dir = Path(tempfile.mkdtemp(prefix="awc-", dir="/tmp"))
        try:
            config = write_config(
                tmp_path,
                upstream_url=str(server.make_url("/api/v1")),
                endpoints=[{"name": "app", "url": receiver.url("/hook"), "secret": secret}],
                intake_listen=f"unix:{sock_dir / 'intake.sock'}",
            )
            daemon = DaemonProcess(config)
            await daemon.start()
            yield Live(config, daemon, app[SANDBOX], receiver, secret)
        finally:
            if daemon is not None:
                await daemon.close()
            await server.close()
            shutil.rmtree(sock_dir, ignore_errors=True)


async def test_operator_commands_against_a_live_daemon(live: Live) -> None:
    c = str(live.config)
    live.upstream.script("task_cli_1", pending(), success())
    live.upstream.script("task_cli_2", pending())

    added = await cli("add", "task_cli_1", "--model", "nano-banana", "--meta", "order=42", "-c", c)
    assert added.code == 0, added.err
    assert "task_cli_1: registered" in added.out
    again = await cli("add", "task_cli_1", "--model", "nano-banana", "-c", c)
    assert again.code == 0
    assert "already registered" in again.out
    conflict = await cli("add", "task_cli_1", "--model", "flux-2", "-c", c)
    assert conflict.code == 1
    assert "task_conflict" in conflict.err
    assert (await cli("add", "task_cli_2", "--model", "sora-2", "--json", "-c", c)).json()[
        "state"
    ] == "pending"

    await live.receiver.wait_for(1, timeout=10)
    listing = await cli("list", "-c", c)
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert lines[0].split()[:3] == ["TASK", "MODEL", "STATE"]
    assert lines[1].split()[0] == "task_cli_2"  # newest first
    as_json = (await cli("list", "--json", "-c", c)).json()
    assert [t["task_id"] for t in as_json["tasks"]] == ["task_cli_2", "task_cli_1"]
    only_pending = (await cli("list", "--state", "pending", "--json", "-c", c)).json()
    assert [t["task_id"] for t in only_pending["tasks"]] == ["task_cli_2"]

    for _ in range(100):  # the delivery is recorded right after the receiver answers
        detail = (await cli("show", "task_cli_1", "--json", "-c", c)).json()
        if detail["deliveries"] and detail["deliveries"][0]["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert detail["state"] == "succeeded"
    assert detail["metadata"] == {"order": "42"}  # --meta values are text
    delivery = detail["deliveries"][0]
    shown = await cli("show", "task_cli_1", "-c", c)
    assert shown.code == 0
    assert "succeeded" in shown.out
    assert delivery["delivery_id"] in shown.out
    assert delivery["webhook_id"] in shown.out

    deliveries = await cli("deliveries", "-c", c)
    assert delivery["delivery_id"] in deliveries.out
    assert (await cli("deliveries", "--status", "failed", "--json", "-c", c)).json()[
        "deliveries"
    ] == []

    redelivered = await cli("redeliver", delivery["delivery_id"], "-c", c)
    assert redelivered.code == 0, redelivered.err
    hooks = await live.receiver.wait_for(2, timeout=10)
    assert hooks[0].webhook_id == hooks[1].webhook_id
    assert hooks[1].verified

    cancelled = await cli("cancel", "task_cli_2", "-c", c)
    assert cancelled.code == 0
    assert "cancelled" in cancelled.out
    assert (await cli("show", "task_cli_2", "--json", "-c", c)).json()["state"] == "cancelled"

    missing = await cli("show", "no_such_task", "-c", c)
    assert missing.code == 1
    assert "task_not_found" in missing.err
    assert len(missing.err.strip().splitlines()) == 1


async def test_reload_command_applies_or_reports_every_problem(live: Live) -> None:
    c = str(live.config)
    ok = await cli("reload", "-c", c)
    assert ok.code == 0, ok.err

    good = live.config.read_text()
    config = yaml.safe_load(good)
    config["polling"]["backoff"] = 0.5
    config["endpoints"][0]["url"] = "ftp://nowhere"
    live.config.write_text(yaml.safe_dump(config))
    bad = await cli("reload", "-c", c)
    assert bad.code == 78
    assert "polling.backoff" in bad.err
    assert "endpoints[0].url" in bad.err
    assert "line" in bad.err
    assert live.secret not in bad.err + bad.out
    # the daemon keeps running on the old config
    live.config.write_text(good)
    assert (await cli("reload", "-c", c)).code == 0
    live.daemon.signal(signal.SIGTERM)
    assert await live.daemon.wait_exit() == 0


async def test_client_commands_explain_an_unreachable_daemon(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, upstream_url="http://127.0.0.1:9/api/v1", intake_listen="127.0.0.1:9"
    )
    result = await cli("list", "-c", str(config))
    assert result.code == 1
    assert "cannot reach the daemon" in result.err


async def test_check_config_summary_and_every_problem_with_lines(tmp_path: Path) -> None:
    secret = generate_secret()
    good = write_config(
        tmp_path,
        upstream_url="http://127.0.0.1:1/api/v1",
        endpoints=[{"name": "app", "url": "http://127.0.0.1:2/h", "secret": secret}],
    )
    ok = await cli("check-config", "-c", str(good))
    assert ok.code == 0
    assert ok.out.startswith("config OK")
    assert secret not in ok.out

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "upstream:\n"
        "  api_key: sk-very-secret-key-123\n"
        "  timeuot: 10s\n"
        "polling:\n"
        "  backoff: fast\n"
        "endpoints:\n"
        "  - name: app\n"
        "    url: http://127.0.0.1:2/h\n"
        "    secret: not-a-whsec-sk-very-secret\n"
    )
    result = await cli("check-config", "-c", str(bad))
    assert result.code == 78
    assert "upstream.timeuot (line 3)" in result.err
    assert "did you mean 'timeout'" in result.err
    assert "polling.backoff (line 5)" in result.err
    assert "endpoints[0].secret (line 9)" in result.err
    assert "sk-very-secret" not in result.err + result.out

    missing = await cli("check-config", "-c", str(tmp_path / "nope.yaml"))
    assert missing.code == 78


async def test_check_config_reports_bad_tasks_file_entries_with_their_lines(
    tmp_path: Path,
) -> None:
    # check-config said OK while an entry like these kept the daemon from starting.
    config = write_config(
        tmp_path,
        upstream_url="http://127.0.0.1:1/api/v1",
        delivery={"allowed_callback_hosts": ["h"], "callback_secret": generate_secret()},
        tasks=[],
    )
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(
        "tasks:\n"
        "  - {task_id: good, model: m}\n"
        "  - {task_id: bad_port, model: m, callback_url: 'http://h:99999/x'}\n"
        "  - {task_id: no_model}\n"
    )
    result = await cli("check-config", "-c", str(config))
    # The daemon skips bad entries and imports the rest, so they are warnings: exit 0.
    assert result.code == 0, result.err
    assert result.out.startswith("config OK")
    assert f"tasks file {tasks}: 3 entries, 2 bad" in result.out
    assert "tasks[1].callback_url (line 3): must be an http(s) URL" in result.err
    assert "tasks[2].model (line 4): is required" in result.err

    tasks.write_text("tasks:\n  - {task_id: a, model: m")
    result = await cli("check-config", "-c", str(config))
    assert result.code == 0
    assert "(line 2): the last line has no newline" in result.err

    tasks.write_text("tasks: [\n")
    result = await cli("check-config", "-c", str(config))
    assert result.code == 0
    assert "nothing in it can be imported" in result.err
    assert "(line 2): invalid YAML" in result.err

    tasks.unlink()  # merely absent: the daemon imports it once it appears
    result = await cli("check-config", "-c", str(config))
    assert result.code == 0
    assert result.err == ""
    assert f"tasks file {tasks}: does not exist yet" in result.out


async def test_usage_errors_and_gen_secret() -> None:
    usage = await cli("add")
    assert usage.code == 2
    assert "usage:" in usage.err
    for args in (("add", "t1", "--model", "m", "--meta", "novalue"), ("list", "--limit", "0")):
        bad = await cli(*args)
        assert bad.code == 2, args
        assert "usage:" in bad.err
    first = await cli("gen-secret")
    second = await cli("gen-secret")
    assert first.code == 0
    assert first.out.startswith("whsec_")
    assert len(decode_secret(first.out.strip())) == 32
    assert first.out != second.out


async def test_python_dash_m_and_console_script_agree() -> None:
    result = await cli("--version")
    assert result.code == 0
    assert result.out.startswith("apixo-watcher ")
