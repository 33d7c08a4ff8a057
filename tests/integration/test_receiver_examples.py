"""The receiver examples of docs/receivers.md, run against webhooks the daemon really sent.

The daemon runs as a subprocess and delivers a task's webhook and a `ping` test event to a
loopback receiver, which records the exact headers and body bytes. Each example then runs as
its own server, and those requests are replayed to it byte for byte: it must accept them (and
take a repeated webhook-id as a duplicate), and reject a tampered body, a foreign webhook-id and
an old timestamp (signed by the independent `standardwebhooks` package, not by our signer).
Node examples run where `node` is installed; the npm one where `make test` has run `npm ci`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
from tests.helpers.receiver import start_receiver
from watcher.upstream.sandbox import SANDBOX, make_sandbox_app, success
from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PYTHON_DIR = ROOT / "examples" / "receivers" / "python"
NODE_DIR = ROOT / "examples" / "receivers" / "node"
TASK_ID = "task_receivers_1"
SENT_HEADERS = (
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)


@dataclass(frozen=True)
class Sent:
    """One request as the daemon sent it."""

    headers: Mapping[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass(frozen=True)
class Captured:
    secret: str  # the secret the examples hold: the second of the endpoint's two
    task_event: Sent
    test_event: Sent


async def _capture(tmp: Path) -> Captured:
    other, secret = generate_secret(), generate_secret()
    app = make_sandbox_app(api_key=API_KEY)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    app[SANDBOX].script(TASK_ID, success())
    daemon: DaemonProcess | None = None
    try:
        async with start_receiver(secrets=[secret]) as receiver:
            config = write_config(
                tmp,
                upstream_url=str(upstream.make_url("/api/v1")),
                # A rotation: both secrets sign; the examples know only the second.
                endpoints=[
                    {"name": "app", "url": receiver.url("/hook"), "secrets": [other, secret]}
                ],
            )
            daemon = DaemonProcess(config)
            await daemon.start()
            base = f"http://{daemon.intake_address()}"
            async with aiohttp.ClientSession() as http:
                body = {"task_id": TASK_ID, "model": "nano-banana", "metadata": {"order": 7}}
                async with http.post(f"{base}/v1/tasks", json=body) as resp:
                    assert resp.status == 201
                await receiver.wait_for(1, timeout=10)
                async with http.post(f"{base}/v1/endpoints/app/ping") as resp:
                    assert resp.status == 200
            task_request, test_request = await receiver.wait_for(2, timeout=10)
    finally:
        if daemon is not None:
            await daemon.close()
        await upstream.close()
    assert task_request.verified
    assert test_request.verified
    assert len(task_request.signatures) == 2
    return Captured(
        secret=secret,
        task_event=Sent({h: task_request.headers[h] for h in SENT_HEADERS}, task_request.raw_body),
        test_event=Sent({h: test_request.headers[h] for h in SENT_HEADERS}, test_request.raw_body),
    )


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Captured:
    """The daemon's real requests, captured once for every example (in a thread with its own
    event loop, so the synchronous tests below stay clear of pytest's loops)."""
    tmp = tmp_path_factory.mktemp("receivers")
    result: list[Captured] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(_capture(tmp)))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    assert result, "capturing the daemon's webhooks did not finish"
    return result[0]


class Example:
    """One example receiver running as a server; its stdout lines arrive in `lines`."""

    def __init__(self, command: list[str], secret: str, cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
        env.update({"APP_WEBHOOK_SECRET": secret, "PORT": "0", "HOST": "127.0.0.1"})
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line()
        assert first.startswith("listening on http://"), first
        self.url = first.removeprefix("listening on ").strip() + "/hooks/apixo"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = 10.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from {self.proc.args} in {timeout}s") from None

    def post(self, headers: Mapping[str, str], body: bytes) -> int:
        request = urllib.request.Request(self.url, data=body, headers=dict(headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def running(command: list[str], secret: str, cwd: Path) -> Iterator[Example]:
    example = Example(command, secret, cwd)
    try:
        yield example
    finally:
        example.close()


def check_example(command: list[str], captured: Captured, cwd: Path) -> None:
    task, test = captured.task_event, captured.test_event
    with running(command, captured.secret, cwd) as example:
        # The daemon's own requests, byte for byte: accepted, then worked on.
        assert example.post(task.headers, task.body) == 204
        assert example.next_line() == f"accepted task.succeeded {task.webhook_id} (task {TASK_ID})"
        assert example.post(test.headers, test.body) == 204
        assert example.next_line() == f"accepted webhook.test {test.webhook_id}"
        # At least once: the same webhook-id again is a duplicate, answered but not redone.
        assert example.post(task.headers, task.body) == 204
        assert example.next_line() == f"duplicate {task.webhook_id} (already accepted)"

        # A tampered body (same length), or the signature of another webhook-id: rejected.
        tampered = task.body.replace(TASK_ID.encode(), TASK_ID[:-1].encode() + b"2")
        assert tampered != task.body
        assert example.post(task.headers, tampered) == 400
        assert example.next_line().startswith("rejected: ")
        foreign = {**task.headers, "webhook-id": test.webhook_id}
        assert example.post(foreign, task.body) == 400
        assert example.next_line().startswith("rejected: ")
        # Correctly signed (by the standardwebhooks package) but 10 minutes old: a replay.
        old = datetime.now(tz=UTC) - timedelta(minutes=10)
        replay = {
            **task.headers,
            "webhook-timestamp": str(int(old.timestamp())),
            "webhook-signature": Webhook(captured.secret).sign(
                task.webhook_id, old, task.body.decode()
            ),
        }
        assert example.post(replay, task.body) == 400
        assert example.next_line().startswith("rejected: ")
        # And the same signing, fresh, is accepted: the rejection above was the timestamp.
        now = datetime.now(tz=UTC)
        fresh = {
            **replay,
            "webhook-id": "msg_fresh",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(captured.secret).sign(
                "msg_fresh", now, task.body.decode()
            ),
        }
        assert example.post(fresh, task.body) == 204
        assert example.next_line() == f"accepted task.succeeded msg_fresh (task {TASK_ID})"


@pytest.mark.parametrize("name", ["receiver_stdlib.py", "receiver_standardwebhooks.py"])
def test_python_receiver_example(name: str, captured: Captured) -> None:
    check_example([sys.executable, str(PYTHON_DIR / name)], captured, PYTHON_DIR)


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node receiver examples were not run")
    return node


def test_node_receiver_example_with_node_crypto(captured: Captured) -> None:
    node = node_or_skip()
    check_example([node, "receiver-crypto.mjs"], captured, NODE_DIR)


def test_node_receiver_example_with_the_standardwebhooks_package(captured: Captured) -> None:
    node = node_or_skip()
    if not (NODE_DIR / "node_modules" / "standardwebhooks" / "package.json").is_file():
        pytest.skip(
            "examples/receivers/node/node_modules is missing: `make test` runs npm ci there "
            "when node and npm are installed"
        )
    check_example([node, "receiver-standardwebhooks.mjs"], captured, NODE_DIR)
