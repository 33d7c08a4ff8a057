"""The mirror benchmark (`make bench` row `mirror`, issue 12).

- throughput: a 1 GiB result file, and 1,000 files of 1 MiB (100 tasks of 10), mirrored by the
  daemon to a `file://` target, against a bare aiohttp download-to-file loop (same server, same
  concurrency as `mirror.max_concurrency`); target ratio >= 0.8. The daemon's time is from
  registering the tasks to the last webhook's arrival, so it includes a poll and a delivery.
- memory: the daemon's RSS growth while mirroring the 1 GiB file (sampled every 50 ms);
  target < 20 MB.
- latency: 200 tasks with one 1 MiB result each complete at 50/s, polled every 100 ms; p99 of
  (webhook arrival - upstream completion) with mirroring on, minus the same with it off.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench import report
from bench.procs import DaemonProcess, Server, log, write_config

MiB = 1024 * 1024
BIG = 1024 * MiB
SMALL_TASKS, SMALL_PER_TASK = 100, 10
CONCURRENCY = 4
LATENCY_TASKS, LATENCY_RATE = 200, 50.0


async def _bare_download(session: aiohttp.ClientSession, url: str, path: Path) -> None:
    """The reference: the plainest aiohttp download to a file, fsynced like a mirror copy."""
    async with session.get(url) as resp:
        resp.raise_for_status()
        with path.open("wb") as f:
            async for chunk in resp.content.iter_chunked(MiB):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())


async def _reference(server: str, out: Path) -> tuple[float, float]:
    """(seconds for the 1 GiB file, seconds for the 1,000 small ones)."""
    out.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as session:
        t0 = time.monotonic()
        await _bare_download(session, f"{server}/files/{BIG}/ref-big.bin", out / "big.bin")
        big_s = time.monotonic() - t0
        (out / "big.bin").unlink()
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with slots:
                await _bare_download(session, f"{server}/files/{MiB}/ref-{i}.bin", out / f"{i}")

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(SMALL_TASKS * SMALL_PER_TASK)))
        small_s = time.monotonic() - t0
    shutil.rmtree(out)
    return big_s, small_s


def _config(out: Path, name: str, server: str, receiver: str, mirror: Path | None) -> Path:
    db = out / f"mirror-{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    path = write_config(
        out,
        db=db,
        upstream_url=f"{server}/api/v1",
        receiver_url=receiver,
        upstream={"max_requests_per_second": 1_000_000, "max_concurrency": 64},
        polling={"initial_interval": "100ms", "max_interval": "100ms"},
    )
    config = yaml.safe_load(path.read_text())
    if mirror is not None:
        config["mirror"] = {
            "target": f"file://{mirror}",
            "max_concurrency": CONCURRENCY,
            "max_file_bytes": "2GiB",
            "retention": 0,
        }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def _receiver_count(session: aiohttp.ClientSession, receiver: str) -> int:
    async with session.get(f"{receiver}/_bench/stats") as resp:
        return int((await resp.json())["count"])


async def _register(session: aiohttp.ClientSession, intake: str, task_ids: list[str]) -> None:
    for task_id in task_ids:
        body = {"task_id": task_id, "model": "bench"}
        async with session.post(f"{intake}/v1/tasks", json=body) as resp:
            assert resp.status == 201, await resp.text()


async def _wait_webhooks(
    session: aiohttp.ClientSession, receiver: str, count: int, timeout: float
) -> None:
    end = time.monotonic() + timeout
    while await _receiver_count(session, receiver) < count:
        if time.monotonic() > end:
            raise RuntimeError(f"fewer than {count} webhooks after {timeout} s")
        await asyncio.sleep(0.02)


async def _latency_run(
    session: aiohttp.ClientSession, daemon: DaemonProcess, receiver: str, tag: str
) -> list[float]:
    async with session.post(f"{receiver}/_bench/reset"):
        pass
    start = time.time() + 0.5
    ids = [
        f"m{int((start + i / LATENCY_RATE) * 1000)}-{MiB}-1-{tag}{i}" for i in range(LATENCY_TASKS)
    ]
    await _register(session, daemon.intake_url(), ids)
    await _wait_webhooks(session, receiver, LATENCY_TASKS, timeout=60)
    async with session.get(f"{receiver}/_bench/arrivals") as resp:
        arrivals = (await resp.json())["arrivals"]
    first: dict[str, float] = {}
    for task_id, at in arrivals:
        first.setdefault(task_id, at)
    return [at - int(task_id[1:].split("-", 1)[0]) / 1000 for task_id, at in first.items()]


async def mirror(out: Path, receiver: str) -> dict[str, Any]:
    files = Server("bench.mirrorserver")
    target = out / "mirror-target"
    try:
        ref_big_s, ref_small_s = await _reference(files.url, out / "mirror-ref")
        log(f"mirror: reference 1 GiB {ref_big_s:.2f}s, 1000 x 1 MiB {ref_small_s:.2f}s")
        async with aiohttp.ClientSession() as session:
            path = _config(out, "on", files.url, receiver, target)
            daemon = DaemonProcess(path, out / "daemon-mirror.log")
            await daemon.start()
            try:
                intake = daemon.intake_url()
                async with session.post(f"{receiver}/_bench/reset"):
                    pass
                await asyncio.sleep(0.5)
                rss0 = daemon.rss_mb()
                peak = rss0
                t0 = time.monotonic()
                await _register(session, intake, [f"m0-{BIG}-1-big"])
                waiting = asyncio.create_task(_wait_webhooks(session, receiver, 1, timeout=120))
                while not waiting.done():
                    peak = max(peak, daemon.rss_mb())
                    await asyncio.sleep(0.05)
                await waiting
                big_s = time.monotonic() - t0

                async with session.post(f"{receiver}/_bench/reset"):
                    pass
                t0 = time.monotonic()
                ids = [f"m0-{MiB}-{SMALL_PER_TASK}-s{i}" for i in range(SMALL_TASKS)]
                await _register(session, intake, ids)
                await _wait_webhooks(session, receiver, SMALL_TASKS, timeout=120)
                small_s = time.monotonic() - t0
                for task_dir in target.iterdir():  # the copies are not needed; the disk is
                    shutil.rmtree(task_dir, ignore_errors=True)

                lags_on = await _latency_run(session, daemon, receiver, "on")
            finally:
                await daemon.stop()
                shutil.rmtree(target, ignore_errors=True)
            path = _config(out, "off", files.url, receiver, None)
            daemon = DaemonProcess(path, out / "daemon-mirror-off.log")
            await daemon.start()
            try:
                lags_off = await _latency_run(session, daemon, receiver, "off")
            finally:
                await daemon.stop()
    finally:
        files.close()
    return report.mirror_section(
        big_mib_s=BIG / MiB / big_s,
        ref_big_mib_s=BIG / MiB / ref_big_s,
        small_mib_s=SMALL_TASKS * SMALL_PER_TASK / small_s,
        ref_small_mib_s=SMALL_TASKS * SMALL_PER_TASK / ref_small_s,
        rss_growth_mb=peak - rss0,
        lags_on_s=lags_on,
        lags_off_s=lags_off,
    )
