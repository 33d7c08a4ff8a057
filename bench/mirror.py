"""The mirror benchmark (`make bench` row `mirror`, issue 12).

- throughput: a 1 GiB result file, and 1,000 files of 1 MiB (100 tasks of 10), mirrored by the
  daemon to a `file://` target, against a bare aiohttp download-to-file loop (same server, same
  concurrency as `mirror.max_concurrency`); target ratio >= 0.8. The daemon's time is from
  registering the tasks to the last webhook's arrival, so it includes a poll and a delivery.
  Each case runs the reference and then the daemon right after it (one daemon for all);
  `BENCH_MIRROR_ROUNDS=N` repeats the cases and reports the median round.
- CPU: seconds of CPU per GiB copied, of the daemon (the whole process: its poll and webhook
  included) and of the reference loop (`process_time` of this process while it runs), for
  each case: on the shared 2 cores the wall-clock ratio moves with the load, the CPU less.
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
# BENCH_MIRROR_ROUNDS=N repeats both cases N times (reference, then daemon, each time); the
# round with the median ratio is reported, with every round's ratio.
ROUNDS = max(1, int(os.environ.get("BENCH_MIRROR_ROUNDS", "1")))


async def _bare_download(session: aiohttp.ClientSession, url: str, path: Path) -> None:
    """The reference: the plainest aiohttp download to a file, fsynced like a mirror copy."""
    async with session.get(url) as resp:
        resp.raise_for_status()
        with path.open("wb") as f:
            async for chunk in resp.content.iter_chunked(MiB):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())


async def _reference_big(server: str, out: Path, tag: str) -> tuple[float, float]:
    """(seconds, CPU seconds) of the bare loop for the 1 GiB file."""
    out.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as session:
        t0, cpu0 = time.monotonic(), time.process_time()
        await _bare_download(session, f"{server}/files/{BIG}/ref-big-{tag}.bin", out / "big.bin")
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
    shutil.rmtree(out)
    return seconds, cpu


async def _reference_small(server: str, out: Path, tag: str) -> tuple[float, float]:
    """(seconds, CPU seconds) of the bare loop for the 1,000 files of 1 MiB."""
    out.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as session:
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with slots:
                url = f"{server}/files/{MiB}/ref-{tag}-{i}.bin"
                await _bare_download(session, url, out / f"{i}")

        t0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(SMALL_TASKS * SMALL_PER_TASK)))
        seconds, cpu = time.monotonic() - t0, time.process_time() - cpu0
    shutil.rmtree(out)
    return seconds, cpu


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


async def _daemon_big(
    session: aiohttp.ClientSession, daemon: DaemonProcess, receiver: str, tag: str
) -> tuple[float, float, float]:
    """(seconds, CPU seconds, RSS growth in MB) of the daemon for the 1 GiB file."""
    async with session.post(f"{receiver}/_bench/reset"):
        pass
    rss0 = peak = daemon.rss_mb()
    t0, cpu0 = time.monotonic(), daemon.cpu_s()
    await _register(session, daemon.intake_url(), [f"m0-{BIG}-1-big{tag}"])
    waiting = asyncio.create_task(_wait_webhooks(session, receiver, 1, timeout=120))
    while not waiting.done():
        peak = max(peak, daemon.rss_mb())
        await asyncio.sleep(0.05)
    await waiting
    return time.monotonic() - t0, daemon.cpu_s() - cpu0, peak - rss0


async def _daemon_small(
    session: aiohttp.ClientSession, daemon: DaemonProcess, receiver: str, tag: str
) -> tuple[float, float]:
    """(seconds, CPU seconds) of the daemon for the 1,000 files of 1 MiB."""
    async with session.post(f"{receiver}/_bench/reset"):
        pass
    t0, cpu0 = time.monotonic(), daemon.cpu_s()
    ids = [f"m0-{MiB}-{SMALL_PER_TASK}-s{tag}x{i}" for i in range(SMALL_TASKS)]
    await _register(session, daemon.intake_url(), ids)
    await _wait_webhooks(session, receiver, SMALL_TASKS, timeout=120)
    return time.monotonic() - t0, daemon.cpu_s() - cpu0


def _median_round(rounds: list[tuple[float, float, float, float]]) -> tuple[float, ...]:
    """The round (daemon s, reference s, daemon CPU, reference CPU) of the median ratio."""
    ordered = sorted(rounds, key=lambda r: r[1] / r[0])
    return ordered[(len(ordered) - 1) // 2]


async def mirror(out: Path, receiver: str) -> dict[str, Any]:
    files = Server("bench.mirrorserver")
    target = out / "mirror-target"
    big: list[tuple[float, float, float, float]] = []
    small: list[tuple[float, float, float, float]] = []
    rss_growth = 0.0
    try:
        async with aiohttp.ClientSession() as session:
            path = _config(out, "on", files.url, receiver, target)
            daemon = DaemonProcess(path, out / "daemon-mirror.log")
            await daemon.start()
            try:
                await asyncio.sleep(0.5)
                # Each case runs the reference, then the daemon, right after it: on a shared
                # machine the load drifts, and a pair close in time compares like with like.
                for r in range(ROUNDS):
                    ref_s, ref_cpu = await _reference_big(files.url, out / "mirror-ref", str(r))
                    s, cpu, growth = await _daemon_big(session, daemon, receiver, str(r))
                    big.append((s, ref_s, cpu, ref_cpu))
                    rss_growth = max(rss_growth, growth)
                    _clear(target)
                    ref_s, ref_cpu = await _reference_small(files.url, out / "mirror-ref", str(r))
                    s, cpu = await _daemon_small(session, daemon, receiver, str(r))
                    small.append((s, ref_s, cpu, ref_cpu))
                    _clear(target)
                    log(
                        f"mirror round {r + 1}/{ROUNDS}: 1 GiB daemon {big[-1][0]:.2f}s "
                        f"({big[-1][2]:.2f}s CPU), reference {big[-1][1]:.2f}s "
                        f"({big[-1][3]:.2f}s CPU); 1000 x 1 MiB daemon {s:.2f}s ({cpu:.2f}s "
                        f"CPU), reference {ref_s:.2f}s ({ref_cpu:.2f}s CPU)"
                    )
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
    big_s, ref_big_s, big_cpu, ref_big_cpu = _median_round(big)
    small_s, ref_small_s, small_cpu, ref_small_cpu = _median_round(small)
    small_gib = SMALL_TASKS * SMALL_PER_TASK * MiB / BIG
    return report.mirror_section(
        big_mib_s=BIG / MiB / big_s,
        ref_big_mib_s=BIG / MiB / ref_big_s,
        small_mib_s=SMALL_TASKS * SMALL_PER_TASK / small_s,
        ref_small_mib_s=SMALL_TASKS * SMALL_PER_TASK / ref_small_s,
        rss_growth_mb=rss_growth,
        lags_on_s=lags_on,
        lags_off_s=lags_off,
        cpu_s_per_gib={
            "big_file": big_cpu,
            "big_file_reference": ref_big_cpu,
            "small_files": small_cpu / small_gib,
            "small_files_reference": ref_small_cpu / small_gib,
        },
        round_ratios={
            "big_file": [ref / s for s, ref, _, _ in big],
            "small_files": [ref / s for s, ref, _, _ in small],
        },
    )


def _clear(target: Path) -> None:
    """The copies are not needed; the disk space is."""
    if target.exists():
        for task_dir in target.iterdir():
            shutil.rmtree(task_dir, ignore_errors=True)
