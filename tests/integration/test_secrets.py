"""Secrets never appear in logs, errors, CLI output or API answers.

The daemon runs for real (a subprocess, debug logging) through a success, an upstream 401, an
invalid reload and the operator commands; then every byte it and the CLI wrote is searched for
the API key, the intake token, the webhook and callback secrets.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
from tests.helpers.receiver import start_receiver
from watcher.upstream.sandbox import SANDBOX, error, make_sandbox_app, success
from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow

TOKEN = "intake-token-s3cr3t-value-42"


async def _run_cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return out.decode()


async def _wait_log(daemon: DaemonProcess, event: str) -> None:
    while not any(e.get("event") == event for e in daemon.log_events()):
        await asyncio.sleep(0.05)


async def test_no_secret_reaches_logs_cli_or_api(tmp_path: Path) -> None:
    secret = generate_secret()
    old_secret = generate_secret()
    callback_secret = generate_secret()
    secrets = [API_KEY, TOKEN, secret, old_secret, callback_secret]
    # the raw key bytes' base64 (the part after whsec_) must not leak either
    secrets += [s.removeprefix("whsec_") for s in (secret, old_secret, callback_secret)]

    app = make_sandbox_app(api_key=API_KEY)
    state = app[SANDBOX]
    state.script("task_s1", success())
    state.script("task_s2", error(401, "Invalid or missing API key"))
    state.script("task_s3", success())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sock = Path(tempfile.mkdtemp(prefix="aws-", dir="/tmp")) / "intake.sock"
    outputs: list[str] = []
    async with start_receiver(secrets=[secret]) as receiver:
        config = write_config(
            tmp_path,
            upstream_url=str(server.make_url("/api/v1")),
            endpoints=[
                {
                    "name": "app",
                    "url": receiver.url("/hook"),
                    "secrets": [secret, old_secret],
                    "headers": {"Authorization": "Bearer receiver-side-token"},
                }
            ],
            intake_listen=f"unix:{sock}",
            delivery={"allowed_callback_hosts": ["127.0.0.1"], "callback_secret": callback_secret},
            extra={"intake": {"listen": f"unix:{sock}", "token": TOKEN}},
        )
        daemon = DaemonProcess(config)
        await daemon.start()
        try:
            c = str(config)
            outputs.append(await _run_cli("add", "task_s1", "--model", "flux-2", "-c", c))
            outputs.append(
                await _run_cli(
                    "add",
                    "task_s3",
                    "--model",
                    "flux-2",
                    "--callback-url",
                    receiver.url("/cb"),
                    "-c",
                    c,
                )
            )
            await receiver.wait_for(1, path="/hook", timeout=10)
            await receiver.wait_for(1, path="/cb", timeout=10)
            outputs.append(await _run_cli("add", "task_s2", "--model", "flux-2", "-c", c))
            await asyncio.wait_for(_wait_log(daemon, "upstream_credentials_rejected"), 10)
            for args in (
                ("list",),
                ("show", "task_s1"),
                ("show", "task_s1", "--json"),
                ("deliveries", "--json"),
                ("show", "task_s2", "--json"),
            ):
                outputs.append(await _run_cli(*args, "-c", c))

            connector = aiohttp.UnixConnector(path=str(sock))
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
                for path in (
                    "/v1/tasks",
                    "/v1/deliveries",
                    "/metrics",
                    "/openapi.json",
                    "/readyz",
                    "/v1/tasks/task_s1",
                ):
                    async with http.get("http://localhost" + path) as resp:
                        outputs.append(await resp.text())
                async with http.get(
                    "http://localhost/v1/tasks", headers={"Authorization": "Bearer wrong"}
                ) as resp:
                    assert resp.status == 401
                    outputs.append(await resp.text())

            # an invalid reload whose problems sit right next to secrets
            doc = yaml.safe_load(config.read_text())
            doc["upstream"]["timeout"] = API_KEY
            doc["endpoints"][0]["timeout"] = secret
            config.write_text(yaml.safe_dump(doc))
            outputs.append(await _run_cli("reload", "-c", c))
            outputs.append(await _run_cli("check-config", "-c", c))
        finally:
            await daemon.close()
            await server.close()
            shutil.rmtree(sock.parent, ignore_errors=True)

    everything = "\n".join(outputs) + daemon.log_text()
    assert "config_reload_problem" in everything  # the invalid reload was reported...
    assert "upstream_credentials_rejected" in everything  # ...and the 401 logged
    for value in secrets:
        assert value not in everything, f"a secret leaked: {value[:6]}..."
    assert "receiver-side-token" not in daemon.log_text()
