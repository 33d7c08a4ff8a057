"""An instance must stop polling before another may take its tasks over, whatever keeps it from
renewing its lease: two daemons as subprocesses on one PostgreSQL database, and a fake upstream
recording who polls which task when (each instance has its own API key).

- Frozen past its lease (SIGSTOP, a VM pause): when it runs again (SIGCONT) every timer is
  overdue, and a poll due before its cluster loop has noticed the lapsed lease must be held
  back all the same.
- Cut off from the database while the other is not (a partition: its statements hang): its
  heartbeat never answers, and it must stop polling two thirds into the lease all the same,
  before the other takes its tasks over when the lease ends.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.helpers.daemon import DaemonProcess, write_config
from tests.helpers.netcut import netcut
from tests.helpers.status_server import serve_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = 60
LEASE_S = 3.0
INTERVAL_S = 0.1


@dataclass
class Poll:
    key: str
    task_id: str
    at: float  # wall clock, as the daemons' log lines


@dataclass
class Recorder:
    """The status endpoint: every task is still processing; each request is recorded."""

    polls: list[Poll] = field(default_factory=list)

    async def status(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        task_id = request.query.get("taskId", "")
        self.polls.append(Poll(key, task_id, time.time()))
        data = {"taskId": task_id, "state": "processing"}
        return web.json_response({"code": 200, "message": "success", "data": data})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    async with serve_status(recorder.status) as url:
        yield url, recorder


def _at(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def _configs(tmp_path: Path, upstream_url: str, urls: dict[str, str]) -> dict[str, Path]:
    configs = {}
    for name, url in urls.items():
        directory = tmp_path / name
        directory.mkdir()
        configs[name] = write_config(
            directory,
            upstream_url=upstream_url,
            api_key=f"key-{name}-0123456789abcdef",
            polling={
                "initial_interval": f"{int(INTERVAL_S * 1000)}ms",
                "max_interval": f"{int(INTERVAL_S * 1000)}ms",
                "jitter": 0,
            },
            extra={"store": {"url": url, "lease": f"{LEASE_S:g}s"}},
            extra_upstream={
                "timeout": "1s",
                "max_requests_per_second": 1000,
                "max_concurrency": 32,
            },
        )
    return configs


async def _register_and_share(http: aiohttp.ClientSession, base: str, recorder: Recorder) -> None:
    for i in range(TASKS):
        body = {"task_id": f"t{i:03}", "model": "m"}
        async with http.post(f"{base}/v1/tasks", json=body) as resp:
            assert resp.status == 201, await resp.text()

    async def both_poll() -> bool:
        return {p.key[:5] for p in recorder.polls} == {"key-a", "key-b"}

    await _until(both_poll, 20)


async def _taken_over(http: aiohttp.ClientSession, base: str) -> None:
    """Wait until the instance at `base` is the only one live and holds every task."""
    listed: list[dict[str, object]] = []

    async def alone() -> bool:
        nonlocal listed
        async with http.get(f"{base}/v1/instances") as resp:
            listed = (await resp.json())["instances"]
        return len(listed) == 1 and listed[0]["tasks"] == TASKS

    try:
        await _until(alone, 30)
    except AssertionError:
        raise AssertionError(f"not taken over: {listed}") from None


async def _stop(daemons: dict[str, DaemonProcess]) -> None:
    """Stop every daemon gracefully (and each is closed, killed if need be, whatever happens)."""
    codes = {}
    try:
        for name, daemon in daemons.items():
            if daemon.proc is not None and daemon.proc.returncode is None:
                daemon.signal(signal.SIGCONT)
                daemon.signal(signal.SIGTERM)
                codes[name] = await daemon.wait_exit()
    finally:
        for daemon in daemons.values():
            await daemon.close()
    assert all(code == 0 for code in codes.values()), codes


async def test_a_frozen_instance_does_not_poll_the_tasks_taken_over_when_it_wakes(
    tmp_path: Path, upstream: tuple[str, Recorder], database: str
) -> None:
    url, recorder = upstream
    configs = _configs(tmp_path, url, {"a": database, "b": database})
    daemons = {name: DaemonProcess(config) for name, config in configs.items()}
    frozen, other = daemons["a"], daemons["b"]
    try:
        for daemon in daemons.values():
            await daemon.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            base = f"http://{other.intake_address()}"
            await _register_and_share(http, base, recorder)
            frozen.signal(signal.SIGSTOP)
            await _taken_over(http, base)
            woken_at = time.time()
            frozen.signal(signal.SIGCONT)

            def claimed_again() -> list[dict[str, object]]:
                return [
                    e
                    for e in frozen.log_events()
                    if e.get("event") == "cluster_tasks_claimed" and _at(e) > woken_at
                ]

            await frozen.wait_log(lambda e: bool(claimed_again()), timeout=20)
            reclaimed_at = min(_at(e) for e in claimed_again())
    finally:
        await _stop(daemons)

    # Between waking and claiming tasks again, the frozen instance held nothing: every poll it
    # made then was of a task the other instance held. A poll it had started before the freeze
    # may still reach the upstream after waking (one that was opening a new connection sends
    # its request then; its answer is refused as held elsewhere): its own log says when each
    # poll started (`task_polled`: its end and duration), so those are told apart, one each.
    in_flight = Counter(
        str(e["task_id"])
        for e in frozen.log_events()
        if e.get("event") == "task_polled"
        and _at(e) >= woken_at
        # started before SIGCONT, so before the freeze (nothing runs while it lasts)
        and _at(e) - float(str(e["duration_ms"])) / 1000 < woken_at
    )
    stray = []
    for p in recorder.polls:
        if p.key.startswith("key-a") and woken_at <= p.at < reclaimed_at:
            if in_flight[p.task_id]:
                in_flight[p.task_id] -= 1
            else:
                stray.append((p.task_id, round(p.at - woken_at, 3)))
    assert stray == []
    events = [e.get("event") for e in frozen.log_events()]
    assert "cluster_lease_lapsed" in events
    assert "background_task_died" not in events


async def test_an_instance_cut_off_from_the_database_stops_polling_before_its_lease_ends(
    tmp_path: Path, upstream: tuple[str, Recorder], database: str
) -> None:
    url, recorder = upstream
    async with netcut(database) as cable:
        configs = _configs(tmp_path, url, {"a": cable.url, "b": database})
        daemons = {name: DaemonProcess(config) for name, config in configs.items()}
        other = daemons["b"]
        try:
            for daemon in daemons.values():
                await daemon.start()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                base = f"http://{other.intake_address()}"
                await _register_and_share(http, base, recorder)

                async def all_processing() -> bool:
                    async with http.get(f"{base}/v1/tasks?state=pending&limit=1") as resp:
                        return not (await resp.json())["tasks"]

                # From now on a poll writes nothing (the task stays processing): nothing but
                # its own lease can stop the cut-off instance from polling.
                await _until(all_processing, 20)
                cut_at = time.time()
                cable.cut()
                await _taken_over(http, base)
                taken_at = time.time()

                async def other_polled_every_task() -> bool:
                    polled = {p.task_id for p in recorder.polls if p.key.startswith("key-b")}
                    return len(polled) == TASKS

                await _until(other_polled_every_task, 10)
                cable.mend()
        finally:
            await _stop(daemons)

    # The other instance took the tasks over when the cut-off one's lease ended; by then the
    # cut-off one had stopped polling (two thirds into its lease), though its heartbeat hung.
    last_before: dict[str, Poll] = {}
    for p in recorder.polls:
        if p.at < cut_at:
            last_before[p.task_id] = p
    held = {task_id for task_id, p in last_before.items() if p.key.startswith("key-a")}
    assert held, "the cut came before the cut-off instance held anything"
    takeover = min(
        p.at
        for p in recorder.polls
        if p.key.startswith("key-b") and p.at > cut_at and p.task_id in held
    )
    late = [
        (p.task_id, round(p.at - takeover, 3))
        for p in recorder.polls
        if p.key.startswith("key-a") and takeover <= p.at <= taken_at
    ]
    assert late == []
    last = max(p.at for p in recorder.polls if p.key.startswith("key-a") and p.at <= taken_at)
    assert last - cut_at < LEASE_S  # it did poll until shortly before: the cut was mid-run
