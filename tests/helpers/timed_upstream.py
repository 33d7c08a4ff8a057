"""A fake upstream status API whose tasks take known durations, for measuring polling.

A task id `<name>.<created_ms>.<duration_ms>` is `pending` (with `createTime`) until
`created_ms + duration_ms` (Unix ms, the machine's clock), then `success` with `createTime`,
`completeTime` and `costTime`. Any other id is `pending` forever. Every status request is
recorded with its arrival time, so a test can count requests per task, the delay between a
task's completion and the poll that saw it, and requests in any 1-second window.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.helpers.status_server import serve_status


def task_id(name: str, created_s: float, duration_s: float) -> str:
    return f"{name}.{int(created_s * 1000)}.{int(duration_s * 1000)}"


def _times(tid: str) -> tuple[int, int] | None:
    parts = tid.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    created = int(parts[1])
    return created, created + int(parts[2])


@dataclass
class Poll:
    task_id: str
    wall: float  # time.time() at arrival
    mono: float  # time.monotonic() at arrival
    done: bool  # answered success


@dataclass
class TimedUpstream:
    url: str = ""
    polls: list[Poll] = field(default_factory=list)

    def of(self, tid: str) -> list[Poll]:
        return [p for p in self.polls if p.task_id == tid]

    def requests(self, tid: str) -> int:
        """Status requests for a task up to and including the first that saw it done."""
        count = 0
        for poll in self.of(tid):
            count += 1
            if poll.done:
                return count
        return count

    def detection_delay(self, tid: str) -> float | None:
        """Seconds from the task's completion to the first poll that saw it."""
        times = _times(tid)
        first = next((p for p in self.of(tid) if p.done), None)
        if times is None or first is None:
            return None
        return first.wall - times[1] / 1000

    def worst_window(self, seconds: float = 1.0) -> int:
        """The most requests that arrived within any closed window of `seconds`."""
        arrivals = sorted(p.mono for p in self.polls)
        return max(
            (bisect.bisect_right(arrivals, t + seconds) - i for i, t in enumerate(arrivals)),
            default=0,
        )

    async def _status(self, request: web.Request) -> web.Response:
        tid = request.query.get("taskId", "")
        now = time.time()
        times = _times(tid)
        done = times is not None and now * 1000 >= times[1]
        self.polls.append(Poll(tid, now, time.monotonic(), done))
        data: dict[str, object] = {"taskId": tid, "state": "pending"}
        if times is not None:
            data["createTime"] = times[0]
        if done and times is not None:
            data.update(
                state="success",
                resultJson=json.dumps({"resultUrls": [f"https://cdn.example/{tid}.png"]}),
                completeTime=times[1],
                costTime=times[1] - times[0],
            )
        return web.json_response({"code": 200, "message": "success", "data": data})


@asynccontextmanager
async def timed_upstream() -> AsyncIterator[TimedUpstream]:
    upstream = TimedUpstream()
    async with serve_status(upstream._status) as url:
        upstream.url = url
        yield upstream
