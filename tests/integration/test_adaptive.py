"""Adaptive polling, hints and the request budget on the live daemon (in process, real clocks,
real loopback HTTP, a real SQLite file), measured at a fake upstream whose tasks take known
durations (tests/helpers/timed_upstream.py)."""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.daemon import API_KEY
from tests.helpers.timed_upstream import TimedUpstream, task_id, timed_upstream
from watcher.store.sqlite import SqliteStore

HINT = "hint-token-for-tests"


def lognormal(rng: random.Random, median: float, sigma: float, n: int) -> list[float]:
    return [median * math.exp(sigma * rng.gauss(0.0, 1.0)) for _ in range(n)]


def upstream_config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "api_key": API_KEY,
        "timeout": "2s",
        "max_concurrency": 64,
        "max_requests_per_second": 2000,
        **extra,
    }


def seed_durations(path: Path, samples: dict[str, list[float]]) -> None:
    """What an earlier run of the daemon would have learned (its store)."""
    store = SqliteStore(path)
    try:
        store.record_durations([(m, d, 0.0) for m, ds in samples.items() for d in ds])
    finally:
        store.close()


async def wait_until_finished(running: Any, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = await running.get("/v1/tasks?state=succeeded&limit=1000")
        if len(page["tasks"]) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {len(page['tasks'])} of {count} tasks finished")


def measured(up: TimedUpstream, ids: list[str]) -> tuple[float, float]:
    """(mean requests per task, mean detection delay) over `ids`."""
    delays = [up.detection_delay(t) for t in ids]
    assert all(d is not None for d in delays)
    return (
        statistics.mean(up.requests(t) for t in ids),
        statistics.mean(d for d in delays if d is not None),
    )


async def test_adaptive_beats_fixed_at_equal_requests(start_daemon: Any, tmp_path: Path) -> None:
    # Two models with the same workload (lognormal, median 1 s, sigma 0.4) and the same
    # learned history; one polled by the fixed schedule, one adaptively (auto: the requests
    # fixed would make). Seeded, so the workload is the same on every run.
    rng = random.Random(20260101)
    history = lognormal(rng, 1.0, 0.4, 300)
    seed_durations(tmp_path / "watcher.db", {"fixed-m": history, "adaptive-m": history})
    async with timed_upstream() as up:
        running = await start_daemon(
            upstream_url=up.url,
            polling={
                "initial_interval": "100ms",
                "max_interval": "1500ms",
                "backoff": 1.5,
                "jitter": 0,
                "adaptive": {"min_interval": "20ms"},
                "models": {"adaptive-m": {"strategy": "adaptive"}},
            },
            extra={"upstream": upstream_config(up.url)},
        )
        ids: dict[str, list[str]] = {"fixed-m": [], "adaptive-m": []}
        for i, duration in enumerate(lognormal(rng, 1.0, 0.4, 30)):
            for model, names in ids.items():
                tid = task_id(f"{model}{i}", time.time(), duration)
                await running.add(tid, model=model)
                names.append(tid)
        await wait_until_finished(running, 60)
        stats = {s["model"]: s for s in (await running.get("/v1/stats/models"))["models"]}

    fixed_requests, fixed_delay = measured(up, ids["fixed-m"])
    adaptive_requests, adaptive_delay = measured(up, ids["adaptive-m"])
    # Equal requests (what `auto` aims for), a far shorter delay: the simulation says ~0.2x at
    # this workload; the margin leaves room for a loaded machine.
    assert adaptive_requests <= fixed_requests * 1.15, (adaptive_requests, fixed_requests)
    assert adaptive_delay <= 0.6 * fixed_delay, (adaptive_delay, fixed_delay)
    assert stats["adaptive-m"]["strategy"] == "adaptive"
    assert stats["fixed-m"]["strategy"] == "fixed"
    assert stats["adaptive-m"]["samples"] == 330  # the history and the new ones
    assert stats["adaptive-m"]["detection_delay_mean_s"] is not None


async def test_what_was_learned_survives_a_restart(start_daemon: Any, tmp_path: Path) -> None:
    async with timed_upstream() as up:
        config: dict[str, Any] = {
            "upstream_url": up.url,
            "polling": {"initial_interval": "20ms", "max_interval": "50ms"},
        }
        running = await start_daemon(**config)
        for i in range(5):
            await running.add(task_id(f"t{i}", time.time(), 0.05 + 0.01 * i), model="m")
        await wait_until_finished(running, 5)
        assert await running.stop() == 0
        running = await start_daemon(**config)
        (row,) = (await running.get("/v1/stats/models"))["models"]
    assert (row["model"], row["samples"]) == ("m", 5)
    assert 0.05 <= row["duration_p50_s"] <= 0.08


async def test_a_hint_polls_at_once_and_the_poll_decides(start_daemon: Any, tmp_path: Path) -> None:
    async with timed_upstream() as up:
        running = await start_daemon(
            upstream_url=up.url,
            polling={"initial_interval": "30s", "max_interval": "30s"},
            extra={"intake": {"listen": "127.0.0.1:0", "hint_token": HINT}},
        )
        done = task_id("done", time.time() - 5, 1.0)  # finished upstream 4 s ago
        busy = task_id("busy", time.time(), 3600.0)  # still running
        await running.add(done)
        await running.add(busy)
        deadline = time.monotonic() + 5
        while len(up.polls) < 2 and time.monotonic() < deadline:  # the first polls: at once
            await asyncio.sleep(0.02)
        # The first poll of `done` already saw it finished: it is done. Hint `busy`, with a
        # body that lies: the poll it causes says pending, and that is what counts.
        before = len(up.of(busy))
        lie = {"code": 200, "data": {"taskId": busy, "state": "success", "resultJson": "{}"}}
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.post(f"{running.base}/v1/hints/apixo?token={HINT}", json=lie) as resp:
                assert resp.status == 200
            assert time.monotonic() - started < 1.0
            deadline = time.monotonic() + 2
            while len(up.of(busy)) == before and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert len(up.of(busy)) == before + 1  # polled at once, not in 30 s
            task = await running.get(f"/v1/tasks/{busy}")
            assert task["state"] == "pending"
            # a wrong token polls nothing
            async with http.post(f"{running.base}/v1/hints/apixo?token=nope", json=lie) as resp:
                assert resp.status == 401
            await asyncio.sleep(0.2)
            assert len(up.of(busy)) == before + 1


async def test_the_budget_holds_in_every_second(start_daemon: Any, tmp_path: Path) -> None:
    # 400 tasks all due at once and again every 10 ms: demand far over the budget of 20/s.
    async with timed_upstream() as up:
        running = await start_daemon(
            upstream_url=up.url,
            polling={"initial_interval": "10ms", "max_interval": "10ms"},
            extra={"upstream": upstream_config(up.url, max_requests_per_second=20)},
            tasks=[{"task_id": f"p{i}", "model": "m"} for i in range(400)],
        )
        # Until three seconds' worth of the budget is used (a loaded machine takes longer to
        # import the tasks file and start; the windows are what is checked).
        deadline = time.monotonic() + 30
        while len(up.polls) < 60 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await running.stop() == 0
    assert len(up.polls) >= 60  # the budget is used
    assert up.worst_window() <= 21


async def test_show_prints_the_expected_completion_window(
    start_daemon: Any, tmp_path: Path
) -> None:
    seed_durations(tmp_path / "watcher.db", {"m": [100.0 + i for i in range(50)]})
    sock_dir = Path(tempfile.mkdtemp(prefix="awa-", dir="/tmp"))
    try:
        async with timed_upstream() as up:
            running = await start_daemon(
                upstream_url=up.url, intake_listen=f"unix:{sock_dir / 'intake.sock'}"
            )
            created = time.time()
            tid = task_id("slow", created, 3600.0)
            async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(sock_dir / "intake.sock"))
            ) as http:
                body = {"task_id": tid, "model": "m"}
                async with http.post("http://localhost/v1/tasks", json=body) as resp:
                    assert resp.status == 201
                async with http.get(f"http://localhost/v1/tasks/{tid}") as resp:
                    window = (await resp.json())["expected_completion"]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "watcher",
                "show",
                tid,
                "-c",
                str(running.config_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert proc.returncode == 0, err
    # 8 in 10 tasks of the model took 105-145 s: that far after its creation.
    earliest = datetime.fromisoformat(window["earliest"]).timestamp() - created
    latest = datetime.fromisoformat(window["latest"]).timestamp() - created
    assert 100 <= earliest < latest <= 152
    line = next(x for x in out.decode().splitlines() if x.startswith("expected"))
    words = line.split()
    assert words[:2] == ["expected", "between"]
    assert words[3] == "and"
    # (the window can move by a millisecond once the first answer tells the createTime)
    shown = [datetime.fromisoformat(w).timestamp() - created for w in (words[2], words[4])]
    assert abs(shown[0] - earliest) < 0.05
    assert abs(shown[1] - latest) < 0.05
