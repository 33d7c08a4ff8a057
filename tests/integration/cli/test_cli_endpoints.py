"""What an operator sees of a failing endpoint: `deliveries --status retrying`, the metrics, and
`ping` (real subprocesses against a live daemon, a real receiver that verifies signatures)."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
from tests.helpers.receiver import Receiver, Reply, start_receiver
from tests.integration.cli.test_cli import cli
from watcher.upstream.sandbox import SANDBOX, SandboxState, make_sandbox_app, success
from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow


@dataclass
class Site:
    config: Path
    socket: Path
    daemon: DaemonProcess
    upstream: SandboxState
    receiver: Receiver
    secrets: list[str]

    async def get(self, path: str) -> tuple[int, str]:
        connector = aiohttp.UnixConnector(path=str(self.socket))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get("http://localhost" + path) as resp,
        ):
            return resp.status, await resp.text()

    async def deliveries(self, **query: str) -> list[dict[str, Any]]:
        connector = aiohttp.UnixConnector(path=str(self.socket))
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get("http://localhost/v1/deliveries", params=query) as resp,
        ):
            body: dict[str, Any] = await resp.json()
            return list(body["deliveries"])


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    """A daemon with two endpoints on one receiver: `app` answers 200, `broken` 500 (and its
    retry is an hour away, so it stays retrying for the whole test)."""
    app = make_sandbox_app(api_key=API_KEY)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    secrets = [generate_secret(), generate_secret()]  # a rotation: both sign every webhook
    sock_dir = Path(tempfile.mkdtemp(prefix="awe-", dir="/tmp"))
    daemon: DaemonProcess | None = None
    try:
        async with start_receiver(secrets=[secrets[1]]) as receiver:
            receiver.script("/broken", *([500] * 50))
            config = write_config(
                tmp_path,
                upstream_url=str(server.make_url("/api/v1")),
                endpoints=[
                    {"name": "app", "url": receiver.url("/hook"), "secrets": secrets},
                    {"name": "broken", "url": receiver.url("/broken"), "secrets": secrets},
                ],
                intake_listen=f"unix:{sock_dir / 'intake.sock'}",
                delivery={"retry_schedule": ["0s", "1h"]},
            )
            daemon = DaemonProcess(config)
            await daemon.start()
            yield Site(config, sock_dir / "intake.sock", daemon, app[SANDBOX], receiver, secrets)
    finally:
        if daemon is not None:
            await daemon.close()
        await server.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


async def wait_for(site: Site, predicate: Any, timeout: float = 10.0, **query: str) -> None:
    """Wait until `predicate(deliveries)` holds (a condition wait on the delivery log)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate(await site.deliveries(**query)):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"deliveries never matched: {await site.deliveries()}")
        await asyncio.sleep(0.05)


async def test_a_failing_endpoint_shows_as_retrying_with_its_next_attempt_and_error(
    site: Site,
) -> None:
    c = str(site.config)
    site.upstream.script("task_dead_1", success())
    assert (await cli("add", "task_dead_1", "--model", "nano-banana", "-c", c)).code == 0
    await wait_for(site, lambda ds: len(ds) == 1, status="retrying")
    await wait_for(site, lambda ds: len(ds) == 1, status="succeeded")

    table = await cli("deliveries", "--status", "retrying", "-c", c)
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert "NEXT ATTEMPT" in header
    assert "LAST ERROR" in header
    assert len(rows) == 1
    assert "broken" in rows[0]
    assert "retrying" in rows[0]
    assert "HTTP 500" in rows[0]
    assert "Z" in rows[0]  # the next attempt's time, ISO 8601 UTC

    (retrying,) = (await cli("deliveries", "--status", "retrying", "--json", "-c", c)).json()[
        "deliveries"
    ]
    assert (retrying["endpoint"], retrying["status"]) == ("broken", "retrying")
    assert retrying["next_attempt_at"] is not None
    assert retrying["last_error"] == "HTTP 500"

    # `failed` keeps meaning "given up"; the list is empty, and it says where to look.
    failed = await cli("deliveries", "--status", "failed", "-c", c)
    assert failed.code == 0
    assert failed.out.splitlines()[0] == "no deliveries"
    assert "deliveries --status retrying" in failed.out
    # The whole log shows the failing one as retrying too.
    everything = (await cli("deliveries", "--json", "-c", c)).json()["deliveries"]
    assert sorted((d["endpoint"], d["status"]) for d in everything) == [
        ("app", "succeeded"),
        ("broken", "retrying"),
    ]

    status, metrics = await site.get("/metrics")
    assert status == 200
    assert 'apixo_watcher_deliveries{status="retrying"} 1.0' in metrics
    assert 'apixo_watcher_deliveries{status="pending"} 0.0' in metrics
    assert 'apixo_watcher_deliveries{status="failed"} 0.0' in metrics


async def test_an_unknown_delivery_status_is_a_usage_error() -> None:
    wrong = await cli("deliveries", "--status", "stuck")
    assert wrong.code == 2
    assert "retrying" in wrong.err


async def test_ping_sends_a_signed_test_event_and_shows_the_answer(
    site: Site, tmp_path: Path
) -> None:
    c = str(site.config)
    site.receiver.script("/hook", Reply(200, body=b'{"received": true}'))

    ok = await cli("ping", "app", "-c", c)
    assert ok.code == 0, ok.err
    first, second, third = ok.out.splitlines()
    assert re.fullmatch(r"app: HTTP 200 in \d+ ms", first)
    assert re.fullmatch(r"webhook-id msg_\w+, signed with 2 secret\(s\)", second)
    assert third == 'answer: {"received": true}'
    (request,) = site.receiver.on("/hook")
    assert request.verified  # standardwebhooks, with only the second secret of the rotation
    assert request.body["type"] == "webhook.test"
    assert request.body["data"]["endpoint"] == "app"
    assert second.split()[1].rstrip(",") == request.webhook_id

    as_json = await cli("ping", "app", "--json", "-c", c)
    assert as_json.code == 0
    assert as_json.json()["ok"] is True
    assert as_json.json()["status_code"] == 200

    refused = await cli("ping", "broken", "-c", c)
    assert refused.code == 1
    assert refused.out.startswith("broken: HTTP 500 in ")
    assert "did not accept the test event (HTTP 500)" in refused.err

    unknown = await cli("ping", "nope", "-c", c)
    assert unknown.code == 1
    assert "endpoint_not_found" in unknown.err
    assert (await cli("ping", "-c", c)).code == 2
    assert (await cli("ping", "app", "-c", str(tmp_path / "missing.yaml"))).code == 78

    # Not stored: no delivery in the log; and no secret in anything printed.
    assert (await cli("deliveries", "--json", "-c", c)).json()["deliveries"] == []
    printed = ok.out + ok.err + as_json.out + refused.out + refused.err + unknown.err
    for secret in site.secrets:
        assert secret not in printed
        assert secret.removeprefix("whsec_") not in printed
