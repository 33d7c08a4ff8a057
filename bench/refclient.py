"""The references: minimal aiohttp client loops, run as their own process.

`python -m bench.refclient get URL_BASE COUNT CONCURRENCY` does COUNT status GETs (bearer header,
body read and JSON-decoded, as any poller must) with CONCURRENCY workers over one pooled
session; `... post URL COUNT CONCURRENCY BODY_BYTES` does COUNT POSTs of a JSON body. Prints
`{"requests", "cpu_s", "elapsed_s"}`: the CPU of the loop itself (process_time, interpreter
start-up excluded) and its wall time.
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


def main(argv: list[str]) -> None:
    mode, target, count, concurrency = argv[0], argv[1], int(argv[2]), int(argv[3])
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
