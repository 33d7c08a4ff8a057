"""The daemon's own log lines (its JSON stdout): every wall time in them reads like `ts`.

The daemon runs as a subprocess through a day in miniature (a task registered, polled and
finished, a webhook that fails once and is retried, a reload, a cancel, a stop), and every line
it printed is checked: a time is ISO 8601 UTC text, never a float of Unix seconds.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.helpers.daemon import API_KEY, DaemonProcess, write_config
from tests.helpers.receiver import start_receiver
from watcher.upstream.sandbox import SANDBOX, make_sandbox_app, pending, processing, success
from watcher.webhook_secret import generate_secret

pytestmark = pytest.mark.slow

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
# Unix seconds (2001-09-09 .. 5138) and Unix milliseconds of the same span.
UNIX_SECONDS = (1e9, 1e11)
UNIX_MS = (1e12, 1e14)
# Integer Unix seconds that are a protocol value, not a time for people.
PROTOCOL_FIELDS = frozenset({"webhook_timestamp"})
TIME_NAME = re.compile(r"(^ts$|_at$|_until$|_time$)")


def walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, leaf value) of a log line, nested ones with their dotted path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{key}[{i}]")
    else:
        yield key, value


def time_problems(line: dict[str, Any]) -> list[str]:
    """What in one log line is a wall time not written like `ts`."""
    problems = []
    for key, value in walk(line):
        name = key.rsplit(".", 1)[-1]
        if TIME_NAME.search(name) and value is not None:
            if not (isinstance(value, str) and ISO_UTC.fullmatch(value)):
                problems.append(f"{key}={value!r} is not ISO 8601 UTC")
            continue
        if name in PROTOCOL_FIELDS or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and (
            UNIX_SECONDS[0] <= value < UNIX_SECONDS[1] or UNIX_MS[0] <= value < UNIX_MS[1]
        ):
            problems.append(f"{key}={value!r} looks like a Unix time")
    return problems


def test_the_checker_catches_a_float_time_under_any_name() -> None:
    assert time_problems({"event": "x", "next_attempt_at": 1767225600.5}) != []
    assert time_problems({"event": "x", "due": 1767225600.5}) != []
    assert time_problems({"event": "x", "detail": {"when_ms": 1767225600500}}) != []
    assert time_problems({"event": "x", "ts": "2026-01-01T00:00:00.000000Z", "polls": 3}) == []
    assert time_problems({"event": "x", "next_attempt_at": "2026-01-01T00:00:00.500000Z"}) == []


async def test_no_log_line_of_the_daemon_carries_a_float_time(tmp_path: Path) -> None:
    app = make_sandbox_app(api_key=API_KEY)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    sandbox = app[SANDBOX]
    sandbox.script("task_log_done", pending(), processing(), success())
    sandbox.script("task_log_cancel", pending())
    secret = generate_secret()
    daemon: DaemonProcess | None = None
    try:
        async with start_receiver(secrets=[secret]) as receiver:
            receiver.script("/hook", 500, 200)  # one failed attempt: a retry is scheduled
            config = write_config(
                tmp_path,
                upstream_url=str(upstream.make_url("/api/v1")),
                endpoints=[
                    {
                        "name": "app",
                        "url": receiver.url("/hook"),
                        "secret": secret,
                        "events": ["task.processing", "task.succeeded"],
                    }
                ],
                delivery={"retry_schedule": ["0s", "300ms", "300ms"]},
            )
            daemon = DaemonProcess(config)
            await daemon.start()
            base = f"http://{daemon.intake_address()}"
            async with aiohttp.ClientSession() as http:
                for task_id in ("task_log_done", "task_log_cancel"):
                    body = {"task_id": task_id, "model": "nano-banana"}
                    async with http.post(f"{base}/v1/tasks", json=body) as resp:
                        assert resp.status == 201
                # task.processing and task.succeeded, one of them twice (the 500, then a 200).
                await receiver.wait_for(3, timeout=10, path="/hook")
                async with http.delete(f"{base}/v1/tasks/task_log_cancel") as resp:
                    assert resp.status == 200
                async with http.post(f"{base}/v1/reload") as resp:
                    assert resp.status == 200
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait_exit() == 0
            lines = daemon.log_events()
    finally:
        if daemon is not None:
            await daemon.close()
        await upstream.close()

    events = {line.get("event") for line in lines}
    # The lines that carry times are among those checked.
    assert {"webhook_attempt_failed", "webhook_delivered", "task_finished"} <= events
    assert {"task_cancelled", "config_reloaded", "daemon_stopped"} <= events
    problems = [f"{line.get('event')}: {p}" for line in lines for p in time_problems(line)]
    assert problems == []
