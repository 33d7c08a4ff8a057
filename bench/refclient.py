"""The references: minimal aiohttp client loops, run as their own process.

`python -m bench.refclient get URL_BASE COUNT CONCURRENCY` does COUNT status GETs (bearer header,
body read and JSON-decoded, as any poller must) with CONCURRENCY workers over one pooled
session; `... post URL COUNT CONCURRENCY BODY_BYTES` does COUNT POSTs of a JSON body. Prints
`{"requests", "cpu_s", "elapsed_s"}`: the CPU of the loop itself (process_time, interpreter
start-up excluded) and its wall time.

`... paced URL_BASE TASKS CONCURRENCY WARMUP_S WINDOW_S [TICK_S]` asks each of TASKS ids once a
second, the ids' turns spread evenly over the second (TASKS requests/s, not flat out), waking
once per TICK_S (default 10 ms), for WARMUP_S + WINDOW_S seconds; it prints the same keys for
the window only (the requests answered in it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp


async def _get_loop(base: str, count: int, concurrency: int) -> int:
    done = 0
    headers = {"Authorization": "Bearer sk-bench", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(w: int) -> None:
            nonlocal done
            i = w
            while i < count:
                url = f"{base}/statusTask/nano-banana?taskId=p-{i % 1000}"
                async with session.get(url, headers=headers) as resp:
                    json.loads(await resp.read())
                done += 1
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done


async def _post_loop(url: str, count: int, concurrency: int, body_bytes: int) -> int:
    done = 0
    pad = "x" * max(0, body_bytes - 60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker(w: int) -> None:
            nonlocal done
            i = w
            while i < count:
                body = json.dumps({"type": "ref", "data": {"task_id": f"ref-{i}", "pad": pad}})
                async with session.post(
                    url, data=body.encode(), headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                done += 1
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done


async def _paced_loop(
    base: str, tasks: int, concurrency: int, warmup_s: float, window_s: float, tick_s: float
) -> dict[str, float]:
    """Task i is asked at start + i / tasks + k seconds: a request is started when its turn
    comes (one task per request in flight, as a poller has), the loop sleeps to the next turn."""
    done = 0
    headers = {"Authorization": "Bearer sk-bench", "Accept": "application/json"}
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def ask(i: int) -> None:
            nonlocal done
            url = f"{base}/statusTask/nano-banana?taskId=p-{i}"
            async with session.get(url, headers=headers) as resp:
                json.loads(await resp.read())
            done += 1

        loop = asyncio.get_running_loop()
        start = loop.time()
        step = 1.0 / tasks
        turn = 0
        window_at, end_at = start + warmup_s, start + warmup_s + window_s
        cpu0 = t0 = None
        done0 = 0
        while True:
            now = loop.time()
            if cpu0 is None and now >= window_at:
                cpu0, t0, done0 = time.process_time(), time.perf_counter(), done
            if now >= end_at:
                break
            while start + turn * step <= now:
                task = asyncio.create_task(ask(turn % tasks))
                pending.add(task)
                task.add_done_callback(pending.discard)
                turn += 1
            # Wake at most once a tick: the turns due meanwhile start together (20 requests per
            # 10 ms at 2,000/s), the cheapest even pacing; waking for every turn costs more.
            await asyncio.sleep(max(tick_s, start + turn * step - loop.time()))
        out = {
            "requests": done - done0,
            "cpu_s": time.process_time() - (cpu0 or 0.0),
            "elapsed_s": time.perf_counter() - (t0 or 0.0),
        }
        if pending:
            await asyncio.wait(pending, timeout=10)
    return out


def main(argv: list[str]) -> None:
    mode, target, count, concurrency = argv[0], argv[1], int(argv[2]), int(argv[3])
    if mode == "paced":
        warmup_s, window_s = float(argv[4]), float(argv[5])
        tick_s = float(argv[6]) if len(argv) > 6 else 0.01
        paced = asyncio.run(_paced_loop(target, count, concurrency, warmup_s, window_s, tick_s))
        print(json.dumps(paced), flush=True)
        return
    cpu0, t0 = time.process_time(), time.perf_counter()
    if mode == "get":
        done = asyncio.run(_get_loop(target, count, concurrency))
    else:
        done = asyncio.run(_post_loop(target, count, concurrency, int(argv[4])))
    out = {
        "requests": done,
        "cpu_s": time.process_time() - cpu0,
        "elapsed_s": time.perf_counter() - t0,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
