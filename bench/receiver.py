"""The webhook receiver for the benchmarks, run as its own process.

`python -m bench.receiver` prints `PORT <n>` and answers every POST with 200, recording its
arrival time (Unix seconds, taken as the request is parsed) and the task id in the body.
Signatures are not verified here (the test suite does that); this is a stopwatch.

Control: `GET /_bench/stats` -> `{"count", "first_at", "last_at"}`, `GET /_bench/arrivals` ->
`{"arrivals": [[task_id, at], ...]}`, `POST /_bench/reset`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bench.httpserver import bound_port, serve


class Receiver:
    """Arrival log of every webhook."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.arrivals: list[tuple[str, float]] = []

    def handle(self, method: bytes, target: bytes, body: bytes) -> tuple[int, bytes]:
        if method == b"POST" and not target.startswith(b"/_bench/"):
            now = time.time()
            try:
                task_id = str(json.loads(body)["data"]["task_id"])
            except (ValueError, KeyError, TypeError):
                task_id = ""
            self.arrivals.append((task_id, now))
            return 200, b"{}"
        if target == b"/_bench/stats":
            arrivals = self.arrivals
            stats = {
                "count": len(arrivals),
                "first_at": arrivals[0][1] if arrivals else None,
                "last_at": arrivals[-1][1] if arrivals else None,
            }
            return 200, json.dumps(stats).encode()
        if target == b"/_bench/arrivals":
            return 200, json.dumps({"arrivals": self.arrivals}).encode()
        if target == b"/_bench/reset":
            self.reset()
            return 200, b"{}"
        return 404, b"{}"


async def _main() -> None:
    receiver = Receiver()
    server = await serve(receiver.handle)
    print(f"PORT {bound_port(server)}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        sys.exit(0)
