"""The daemon as systemd runs it: notify protocol, reload, graceful stop, watchdog.

The real daemon runs as a subprocess (tests/helpers/daemon.py) with `NOTIFY_SOCKET` pointing at
a unix datagram socket owned by the test, so every READY=1 / STATUS= / RELOADING=1 /
STOPPING=1 / WATCHDOG=1 is seen exactly as systemd would see it. The upstream is the sandbox,
the webhook receiver verifies every signature with the standardwebhooks package.

The watchdog's decision (ping only while the loops make progress) is tested in-process at the
end, with fake loops whose progress the test sets and a Notifier bound to a real socket.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from structlog.testing import capture_logs

from tests.helpers.daemon import DaemonProcess, write_config
from tests.helpers.receiver import Receiver, Reply
from tests.integration.conftest import Upstream
from watcher.clock import ManualClock
from watcher.config.settings import load_config
from watcher.daemon import Daemon
from watcher.logs import scrubber
from watcher.notify import Notifier
from watcher.upstream.sandbox import pending, processing, success

pytestmark = pytest.mark.slow

MODEL = "nano-banana"


def _endpoint(receiver: Receiver, secret: str, name: str = "a", path: str = "/a") -> dict[str, Any]:
    return {"name": name, "url": receiver.url(path), "secret": secret}


async def _register(daemon: DaemonProcess, *task_ids: str) -> None:
    base = f"http://{daemon.intake_address()}"
    async with aiohttp.ClientSession() as http:
        for task_id in task_ids:
            body = {"task_id": task_id, "model": MODEL}
            async with http.post(f"{base}/v1/tasks", json=body) as resp:
                assert resp.status == 201, await resp.text()


async def _wait_log(
    daemon: DaemonProcess, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Wait until a log event matches; returns every event so far."""
    deadline = time.monotonic() + timeout
    while True:
        events = daemon.log_events()
        if any(predicate(e) for e in events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"no such log event in {timeout}s:\n{daemon.log_text()}")
        await asyncio.sleep(0.05)


def _count(daemon: DaemonProcess, text: str) -> int:
    return sum(text in m for m in daemon.messages)


def _after(messages: list[str], first: str, then: str) -> bool:
    """Whether a message containing `then` came after one containing `first`."""
    for i, message in enumerate(messages):
        if first in message:
            return any(then in later for later in messages[i + 1 :])
    return False


async def _run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _active_tasks(daemon: DaemonProcess) -> set[str]:
    """Ids of the tasks still being watched (not in a terminal state)."""
    base = f"http://{daemon.intake_address()}"
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/tasks?limit=1000") as resp:
        assert resp.status == 200
        tasks = (await resp.json())["tasks"]
    return {t["task_id"] for t in tasks if t["state"] in ("pending", "processing")}


def _invalid(config_path: Path) -> dict[str, Any]:
    """The config at `config_path` with two mistakes; returns it (written back)."""
    data = yaml.safe_load(config_path.read_text())
    data["polling"]["backoff"] = "fast"
    data["upstream"]["timeout"] = "soon"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="aw-life-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- start ----------------------------------------------------------------------------------------
async def test_ready_comes_only_once_the_intake_answers(
    tmp_path: Path, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    config = write_config(
        tmp_path, upstream_url=upstream.url, endpoints=[_endpoint(receiver, secret)]
    )
    daemon = DaemonProcess(config)
    try:
        await daemon.start(wait_ready=False)
        ready = await daemon.wait_message(lambda m: "READY=1" in m, timeout=20)
        # Right away, as systemd would consider the service started: the intake answers.
        base = f"http://{daemon.intake_address()}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200, await resp.text()
        assert "STATUS=watching 0 tasks, 0 deliveries pending" in ready.splitlines()
        assert daemon.messages[0] == ready  # nothing claimed readiness earlier
        assert not any("WATCHDOG=1" in m for m in daemon.messages)  # no WATCHDOG_USEC: off
    finally:
        await daemon.close()


async def test_no_ready_and_exit_78_on_an_invalid_config(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = write_config(tmp_path, upstream_url=upstream.url)
    _invalid(config)
    daemon = DaemonProcess(config)
    try:
        await daemon.start(wait_ready=False)
        assert await daemon.wait_exit() == 78  # RestartPreventExitStatus=78: no restart loop
        assert daemon.messages == []
        assert "polling.backoff" in daemon.log_text()
        assert "upstream.timeout" in daemon.log_text()
    finally:
        await daemon.close()


async def test_no_ready_when_the_intake_cannot_listen(tmp_path: Path, upstream: Upstream) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path, upstream_url=upstream.url, intake_listen=f"127.0.0.1:{port}"
        )
        daemon = DaemonProcess(config)
        try:
            await daemon.start(wait_ready=False)
            assert await daemon.wait_exit() == 1  # Restart=on-failure retries it
            assert not any("READY=1" in m for m in daemon.messages)
            # the reason is a clear line on stderr (merged into the log file here) as well
            assert "apixo-watcher: cannot listen on" in daemon.log_text()
            assert "Traceback" not in daemon.log_text()
        finally:
            await daemon.close()


# -- stop -----------------------------------------------------------------------------------------
async def test_sigterm_mid_work_exits_0_within_the_grace_and_a_restart_loses_nothing(
    tmp_path: Path, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    grace_s = 1.0
    quick = [f"quick_{i:02d}" for i in range(20)]  # done after ~13 polls (1.3 s)
    slow = [f"slow_{i:02d}" for i in range(10)]  # still being polled at SIGTERM (4 s)
    task_ids = quick + slow
    upstream.state.script_default(pending(), pending(), *[processing()] * 10, success())
    for task_id in slow:
        upstream.state.script(task_id, pending(), *[processing()] * 38, success())
    # The first webhooks hang: those deliveries are in flight at SIGTERM.
    receiver.script("/a", *[Reply(hang=True)] * 3)
    config = write_config(
        tmp_path,
        upstream_url=upstream.url,
        endpoints=[_endpoint(receiver, secret)],
        polling={"initial_interval": "100ms", "max_interval": "100ms", "backoff": 1.0},
    )
    first = DaemonProcess(config, grace_s=grace_s)
    try:
        await first.start()
        await _register(first, *task_ids)
        await receiver.wait_until(lambda: receiver.in_flight("/a") >= 3, timeout=20)
        watched = await _active_tasks(first)
        assert watched >= set(slow), "SIGTERM came too late to prove anything"

        sent_at = time.monotonic()
        first.signal(signal.SIGTERM)
        await first.wait_message(lambda m: "STOPPING=1" in m, timeout=5)
        assert await first.wait_exit() == 0
        # The grace period bounds the stop (the hanging deliveries are cut at its end).
        assert time.monotonic() - sent_at < grace_s + 3
        events = [e["event"] for e in first.log_events()]
        assert "daemon_stopped" in events
    finally:
        await first.close()

    receiver.release()  # the receiver answers from now on
    second = DaemonProcess(config, grace_s=grace_s)
    try:
        await second.start()
        ready = next(m for m in second.messages if "READY=1" in m)
        assert "STATUS=watching 0 tasks, 0 deliveries pending" not in ready  # work was resumed
        await receiver.wait_until(
            lambda: (
                {r.body["data"]["task_id"] for r in receiver.received if r.verified}
                >= set(task_ids)
            ),
            timeout=30,
        )
    finally:
        await second.close()

    by_task: dict[str, set[str | None]] = defaultdict(set)
    for request in receiver.on("/a"):
        assert request.verified
        assert request.body["type"] == "task.succeeded"
        by_task[request.body["data"]["task_id"]].add(request.webhook_id)
    # Every task delivered; a repeat (the attempts cut by SIGTERM) carries the same webhook-id.
    assert set(by_task) == set(task_ids)
    assert all(len(ids) == 1 for ids in by_task.values()), by_task


async def test_a_second_sigterm_exits_at_once_and_loses_nothing(
    tmp_path: Path, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("slow_1", success())
    receiver.script("/a", Reply(hang=True))
    config = write_config(
        tmp_path, upstream_url=upstream.url, endpoints=[_endpoint(receiver, secret)]
    )
    first = DaemonProcess(config, grace_s=60.0)
    try:
        await first.start()
        await _register(first, "slow_1")
        await receiver.wait_until(lambda: receiver.in_flight("/a") == 1, timeout=10)
        first.signal(signal.SIGTERM)
        await first.wait_message(lambda m: "STOPPING=1" in m, timeout=5)
        sent_at = time.monotonic()
        first.signal(signal.SIGTERM)
        # Not the 60 s grace: at once (the exit code says it was forced).
        assert await first.wait_exit(timeout=5) != 0
        assert time.monotonic() - sent_at < 3
    finally:
        await first.close()

    receiver.release()
    second = DaemonProcess(config)
    try:
        await second.start()
        requests = await receiver.wait_for(2, path="/a", timeout=10)
        assert {r.webhook_id for r in requests} == {requests[0].webhook_id}
        assert requests[-1].verified
    finally:
        await second.close()


# -- reload ---------------------------------------------------------------------------------------
async def test_sighup_applies_a_valid_config_and_keeps_the_old_one_when_invalid(
    tmp_path: Path, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    endpoint_a = _endpoint(receiver, secret)
    config = write_config(tmp_path, upstream_url=upstream.url, endpoints=[endpoint_a])
    daemon = DaemonProcess(config)
    try:
        await daemon.start()

        # Valid: a new endpoint receives the next webhooks.
        endpoint_b = _endpoint(receiver, secret, name="b", path="/b")
        write_config(tmp_path, upstream_url=upstream.url, endpoints=[endpoint_a, endpoint_b])
        daemon.signal(signal.SIGHUP)
        await _wait_log(daemon, lambda e: e.get("event") == "config_reloaded")
        await daemon.wait_message(lambda m: _count(daemon, "READY=1") >= 2, timeout=5)
        assert _after(daemon.messages, "RELOADING=1", "READY=1")
        upstream.state.script("after_reload", success())
        await _register(daemon, "after_reload")
        await receiver.wait_for(1, path="/b")
        await receiver.wait_for(1, path="/a")

        # Invalid: every problem is logged, the running config stays.
        _invalid(config)
        daemon.signal(signal.SIGHUP)
        events = await _wait_log(daemon, lambda e: e.get("event") == "config_reload_failed")
        problems = {e["key"]: e for e in events if e.get("event") == "config_reload_problem"}
        assert set(problems) == {"polling.backoff", "upstream.timeout"}
        assert all(isinstance(p["line"], int) for p in problems.values())
        # systemd leaves "reloading" again: READY=1 follows the failed reload too.
        await daemon.wait_message(lambda m: _count(daemon, "READY=1") >= 3, timeout=5)
        assert _count(daemon, "RELOADING=1") == 2
        assert "READY=1" in daemon.messages[-1]
        upstream.state.script("after_bad_reload", success())
        await _register(daemon, "after_bad_reload")
        received = await receiver.wait_for(2, path="/b")  # still both endpoints
        assert received[-1].body["data"]["task_id"] == "after_bad_reload"
        assert daemon.proc is not None
        assert daemon.proc.returncode is None
    finally:
        await daemon.close()


async def test_reload_command_exits_0_when_applied_and_78_with_every_problem(
    tmp_path: Path, upstream: Upstream, receiver: Receiver, secret: str, sock_dir: Path
) -> None:
    # A unix intake socket: `apixo-watcher reload` finds the daemon through the config.
    listen = f"unix:{sock_dir / 'intake.sock'}"
    endpoint_a = _endpoint(receiver, secret)
    config = write_config(
        tmp_path, upstream_url=upstream.url, endpoints=[endpoint_a], intake_listen=listen
    )
    daemon = DaemonProcess(config)
    try:
        await daemon.start()
        endpoint_b = _endpoint(receiver, secret, name="b", path="/b")
        write_config(
            tmp_path,
            upstream_url=upstream.url,
            endpoints=[endpoint_a, endpoint_b],
            intake_listen=listen,
        )
        code, out, err = await _run_cli("reload", "-c", str(config))
        assert (code, err) == (0, ""), err
        assert "reloaded" in out
        assert any(e.get("event") == "config_reloaded" for e in daemon.log_events())

        _invalid(config)
        code, out, err = await _run_cli("reload", "-c", str(config))
        assert code == 78, (out, err)
        assert "polling.backoff" in err
        assert "upstream.timeout" in err
        assert "Traceback" not in err
        # The daemon still runs with the last good config (both endpoints).
        upstream.state.script("after_reload_cmd", success())
        async with aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(sock_dir / "intake.sock"))
        ) as http:
            body = {"task_id": "after_reload_cmd", "model": MODEL}
            async with http.post("http://localhost/v1/tasks", json=body) as resp:
                assert resp.status == 201
        await receiver.wait_for(1, path="/b")
    finally:
        await daemon.close()


# -- watchdog and status --------------------------------------------------------------------------
async def test_watchdog_pings_and_status_lines_while_running(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = write_config(tmp_path, upstream_url=upstream.url)
    # WatchdogSec=2s: a ping every second.
    daemon = DaemonProcess(config, env={"WATCHDOG_USEC": "2000000"})
    try:
        await daemon.start()
        await daemon.wait_message(lambda m: _count(daemon, "WATCHDOG=1") >= 2, timeout=10)
        # The periodic STATUS= line (besides the one that came with READY=1).
        status = await daemon.wait_message(lambda m: m.startswith("STATUS="), timeout=10)
        assert status == "STATUS=watching 0 tasks, 0 deliveries pending"
    finally:
        await daemon.close()


@dataclass
class _LoopStats:
    last_progress_at: float | None


@dataclass
class _FakeLoop:
    """Stands in for the scheduler or the deliverer: only its progress matters here."""

    stats: _LoopStats


@pytest.fixture
def notify_socket(sock_dir: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(sock_dir / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def _pending_datagrams(sock: socket.socket) -> list[str]:
    # sendto() on a unix datagram socket has delivered by the time it returns.
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_watchdog_is_withheld_while_a_loop_is_wedged(
    tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    config_path = write_config(tmp_path, upstream_url="http://127.0.0.1:9/api/v1")
    clock = ManualClock()
    notifier = Notifier(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    )
    daemon = Daemon(
        load_config(config_path),
        config_path=config_path,
        clock=clock,
        notifier=notifier,
        reconfigure_logging=False,
    )
    scheduler, deliverer = _LoopStats(None), _LoopStats(None)
    daemon.scheduler = _FakeLoop(scheduler)  # type: ignore[assignment]
    daemon.deliverer = _FakeLoop(deliverer)  # type: ignore[assignment]
    try:
        now = clock.monotonic()
        cases = [
            # (scheduler's last progress, deliverer's last progress, ping expected)
            (None, None, False),  # neither loop has turned yet
            (now, now, True),
            (now - 0.5, now - 0.9, True),  # within the 1 s ping interval
            (now - 60, now, False),  # the scheduler is wedged
            (now, now - 60, False),  # the deliverer is wedged
            (now - 60, now - 60, False),
            (now, now, True),  # unwedged: pings resume
        ]
        for sched_at, deliv_at, expected in cases:
            scheduler.last_progress_at, deliverer.last_progress_at = sched_at, deliv_at
            with capture_logs() as logs:
                daemon._watchdog()
            sent = _pending_datagrams(sock)
            assert sent == (["WATCHDOG=1"] if expected else []), (sched_at, deliv_at)
            withheld = [e for e in logs if e["event"] == "watchdog_withheld"]
            assert bool(withheld) is not expected
    finally:
        notifier.close()
        scrubber.set_secrets(())
