"""The upstream and the result files for the mirror benchmark, in one process of its own.

`python -m bench.mirrorserver` prints `PORT <n>` and serves:
- `GET .../statusTask/{model}?taskId=m<ms>-<size>-<count>-<seq>`: `pending` until the Unix
  time `ms`, then `success` (completeTime = ms) with `count` result URLs of `size` bytes each,
  served by this process;
- `GET /files/{size}/{name}`: `size` bytes generated on the fly (a 1 MiB block repeated, never
  stored), with Content-Length, written 1 MiB at a time.

The daemon and the bare reference loop download from this same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from aiohttp import web

_BLOCK = os.urandom(1024 * 1024)


def parse_id(task_id: str) -> tuple[int, int, int] | None:
    """(completion ms, file size, file count) of an `m<ms>-<size>-<count>-<seq>` id."""
    if not task_id.startswith("m"):
        return None
    parts = task_id[1:].split("-")
    if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


async def status(request: web.Request) -> web.Response:
    task_id = request.query.get("taskId", "")
    parsed = parse_id(task_id)
    data: dict[str, object] = {"taskId": task_id, "state": "pending", "createTime": 1704067200000}
    if parsed is not None and time.time() * 1000 >= parsed[0]:
        done_ms, size, count = parsed
        base = f"http://{request.host}/files/{size}"
        urls = [f"{base}/{task_id}-{i}.bin" for i in range(count)]
        data.update(
            state="success",
            resultJson=json.dumps({"resultUrls": urls}),
            costTime=1000,
            completeTime=done_ms,
        )
    body = {"code": 200, "message": "success", "data": data}
    return web.json_response(body)


async def files(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    resp = web.StreamResponse()
    resp.content_type = "application/octet-stream"
    resp.content_length = size
    await resp.prepare(request)
    block = memoryview(_BLOCK)
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        await resp.write(piece)
        sent += len(piece)
    await resp.write_eof()
    return resp


async def serve() -> None:
    app = web.Application()
    app.router.add_get("/api/v1/statusTask/{model}", status)
    app.router.add_get("/files/{size}/{name}", files)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
