"""The fake upstream status API for the benchmarks, run as its own process.

`python -m bench.upstream` prints `PORT <n>` and serves `GET .../statusTask/{model}?taskId=ID`:

- `ID = c<unix_ms>-...`: `pending` until `unix_ms`, then `success` (with `completeTime = unix_ms`)
  so "upstream completion" is a known instant on the machine clock, encoded in the id;
  `c<unix_ms>-k<created_ms>-...` also says when the task was created (`createTime`);
- any other id: `pending` forever.

Several daemons share it by each having its own `base_url` `.../i<n>` (the cluster row): the
first path segment names the instance.

Control: `GET /_bench/stats` -> `{"polls", "polls_by_model", "polls_by_instance",
"first_poll_at", "last_poll_at", "worst_1s_window"}` (Unix seconds; the most polls received in
any closed 1-second window), `POST /_bench/reset` zeroes them. `POST /_bench/mark?exclude=i<n>`
with task ids in the body (one a line) starts recording the first poll of each of them from
then on, not counting that instance's; `GET /_bench/marked` -> `{"count", "first_at", "last_at"}`,
`?full=1` -> `{task_id: at}`. Answers are built from byte templates: the fake must cost far
less per request than the client it serves.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sys
import time

from bench.httpserver import bound_port, serve

_PENDING = (
    b'{"code":200,"message":"success","data":{"taskId":"%s","state":"pending","createTime":%d}}'
)
_SUCCESS = (
    b'{"code":200,"message":"success","data":{"taskId":"%s","state":"success",'
    b'"resultJson":"{\\"resultUrls\\":[\\"https://cdn.example.invalid/out/%s.jpg\\"]}",'
    b'"costTime":%d,"createTime":%d,"completeTime":%d}}'
)
_DEFAULT_CREATED_MS = 1704067200000


class Upstream:
    """Request counters and the status logic."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.polls = 0
        self.polls_by_model: dict[str, int] = {}
        self.first_poll_at: float | None = None
        self.last_poll_at: float | None = None
        self.times: list[float] = []  # monotonic, for the worst 1-second window
        self.polls_by_instance: dict[str, int] = {}
        self.watched: frozenset[bytes] = frozenset()
        self.marked: dict[bytes, float] = {}
        self.mark_excludes = ""

    def worst_window(self) -> int:
        times = self.times
        return max(
            (bisect.bisect_right(times, t + 1.0) - i for i, t in enumerate(times)), default=0
        )

    def handle(self, method: bytes, target: bytes, body: bytes) -> tuple[int, bytes]:
        path, _, query = target.partition(b"?")
        if b"/statusTask/" in path:
            now = time.time()
            self.polls += 1
            model = path.rsplit(b"/", 1)[-1].decode("ascii", "replace")
            self.polls_by_model[model] = self.polls_by_model.get(model, 0) + 1
            instance = instance_of(path)
            self.polls_by_instance[instance] = self.polls_by_instance.get(instance, 0) + 1
            if self.first_poll_at is None:
                self.first_poll_at = now
            self.last_poll_at = now
            if len(self.times) < 2_000_000:
                self.times.append(time.monotonic())
            task_id = b""
            for part in query.split(b"&"):
                if part.startswith(b"taskId="):
                    task_id = part[7:]
            if task_id in self.watched and instance != self.mark_excludes:
                self.marked.setdefault(task_id, now)
            return 200, status_body(task_id, now)
        if path == b"/_bench/stats":
            stats = {
                "polls": self.polls,
                "polls_by_model": self.polls_by_model,
                "polls_by_instance": self.polls_by_instance,
                "first_poll_at": self.first_poll_at,
                "last_poll_at": self.last_poll_at,
                "worst_1s_window": self.worst_window(),
            }
            return 200, json.dumps(stats).encode()
        if path == b"/_bench/reset" and method == b"POST":
            self.reset()
            return 200, b"{}"
        if path == b"/_bench/mark" and method == b"POST":
            self.watched = frozenset(body.split())
            self.marked = {}
            self.mark_excludes = query.partition(b"exclude=")[2].decode()
            return 200, b"{}"
        if path == b"/_bench/marked":
            if b"full=1" in query:
                return 200, json.dumps({k.decode(): v for k, v in self.marked.items()}).encode()
            times = self.marked.values()
            summary = {
                "count": len(self.marked),
                "first_at": min(times, default=None),
                "last_at": max(times, default=None),
            }
            return 200, json.dumps(summary).encode()
        return 404, b'{"code":404,"message":"not found","data":null}'


def instance_of(path: bytes) -> str:
    """`i<n>` for a request under `/i<n>/...` (a daemon of the cluster row), else `""`."""
    if path.startswith(b"/i"):
        head = path[1:].split(b"/", 1)[0]
        if head[1:].isdigit():
            return head.decode()
    return ""


def completion_ms(task_id: bytes) -> int | None:
    """The completion instant (Unix ms) encoded in a `c<ms>-...` id, else None."""
    if not task_id.startswith(b"c"):
        return None
    head, sep, _ = task_id[1:].partition(b"-")
    if not sep or not head.isdigit():
        return None
    return int(head)


def created_ms(task_id: bytes) -> int:
    """The creation instant (Unix ms) in a `c<ms>-k<created_ms>-...` id, else a fixed one."""
    parts = task_id.split(b"-", 2)
    if len(parts) >= 2 and parts[1].startswith(b"k") and parts[1][1:].isdigit():
        return int(parts[1][1:])
    return _DEFAULT_CREATED_MS


def status_body(task_id: bytes, now: float) -> bytes:
    """The status answer for `task_id` at `now` (Unix seconds)."""
    done_ms = completion_ms(task_id)
    created = created_ms(task_id)
    if done_ms is not None and now * 1000 >= done_ms:
        cost = max(0, done_ms - created) if created != _DEFAULT_CREATED_MS else 1000
        return _SUCCESS % (task_id, task_id, cost, created, done_ms)
    return _PENDING % (task_id, created)


async def _main() -> None:
    upstream = Upstream()
    server = await serve(upstream.handle)
    print(f"PORT {bound_port(server)}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        sys.exit(0)
