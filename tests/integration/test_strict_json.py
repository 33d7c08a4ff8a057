"""Every body the daemon sends or serves is RFC 8259 JSON (issue 9, item 2).

`NaN`, `Infinity` and `1e999` in an upstream answer used to end up verbatim in stored event
bodies, webhook bodies and intake answers; a strict receiver rejects all three.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from tests.helpers.receiver import Receiver
from tests.integration.conftest import Upstream
from watcher.models import Event, EventType, TaskSource, TaskSpec, TaskState, Transition
from watcher.upstream.sandbox import SandboxResponse, pending

ANSWER = (
    b'{"code": 200, "message": "success", "data": {"state": "success", "costTime": NaN,'
    b' "createTime": Infinity, "completeTime": -Infinity, "score": 1e999,'
    b' "resultJson": "{\\"resultUrls\\": [\\"https://cdn/a.png\\"], \\"seed\\": NaN,'
    b' \\"big\\": -1e999}"}}'
)


def strict_loads(raw: bytes | str) -> Any:
    """A strict receiver: NaN, Infinity and -Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def endpoints(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    return [{"name": "app", "url": receiver.url("/hook"), "secret": secret}]


async def get_raw(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_non_json_numbers_in_an_answer_become_null_in_the_webhook(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_nan", pending(), SandboxResponse(200, ANSWER))
    running = await start_daemon(endpoints=endpoints(receiver, secret))
    await running.add("task_nan")
    (request,) = await receiver.wait_for(1)

    assert request.verified
    body = strict_loads(request.raw_body)
    data = body["data"]
    assert body["type"] == "task.succeeded"
    assert data["result_urls"] == ["https://cdn/a.png"]
    assert data["result"] == {"resultUrls": ["https://cdn/a.png"], "seed": None, "big": None}
    assert data["cost_time_ms"] is None
    assert data["created_at"] is None
    assert data["completed_at"] is None
    assert data["upstream"]["score"] is None
    assert data["upstream"]["costTime"] is None
    stored = await running.daemon.service.store.events_for_task("task_nan")  # type: ignore[union-attr]
    assert [e.body for e in stored] == [request.raw_body]
    raw = await get_raw(running.http, f"{running.base}/v1/tasks/task_nan")
    assert strict_loads(raw)["events"][0]["payload"] == body


async def test_records_stored_before_the_fix_are_served_as_strict_json(
    start_daemon: Any, upstream: Upstream
) -> None:
    # An event body and metadata written by an older version, with NaN and Infinity in them.
    running = await start_daemon()
    store = running.daemon.service.store  # type: ignore[union-attr]
    task, _ = await store.add_task(
        TaskSpec(task_id="old", model="m", metadata={"ratio": float("nan")}),
        source=TaskSource.API,
        now=1_700_000_000.0,
    )
    event = Event("evt_old", "old", EventType.FAILED, 1_700_000_001.0, b'{"data":{"x":NaN}}')
    await store.apply_transition(
        Transition(
            task_id="old",
            from_state=task.state,
            to_state=TaskState.FAILED,
            at=1_700_000_001.0,
            reason="test",
            event=event,
        )
    )
    raw_task = await get_raw(running.http, f"{running.base}/v1/tasks/old")
    raw_list = await get_raw(running.http, f"{running.base}/v1/tasks")
    detail = strict_loads(raw_task)
    assert detail["metadata"] == {"ratio": None}
    assert detail["events"][0]["payload"] == {"data": {"x": None}}
    assert strict_loads(raw_list)["tasks"][0]["metadata"] == {"ratio": None}


async def test_tasks_file_metadata_that_is_not_json_is_a_bad_entry(
    start_daemon: Any, upstream: Upstream
) -> None:
    # YAML has .nan and .inf; JSON does not. Such an entry is reported and skipped.
    with capture_logs() as logs:
        running = await start_daemon(
            tasks=[
                {"task_id": "nan_meta", "model": "m", "metadata": {"x": float("nan")}},
                {"task_id": "inf_meta", "model": "m", "metadata": {"x": [float("inf")]}},
                {"task_id": "fine", "model": "m", "metadata": {"x": 1.5}},
            ]
        )
        # The tasks file is imported by its own loop right after the daemon is ready.
        async with asyncio.timeout(10):
            while not any(e["event"] == "tasks_file_imported" for e in logs):
                await asyncio.sleep(0.02)
    async with running.http.get(f"{running.base}/v1/tasks") as resp:
        listed = {t["task_id"] for t in (await resp.json())["tasks"]}
    assert listed == {"fine"}
    bad = [e for e in logs if e["event"] == "tasks_file_entry_invalid"]
    assert len(bad) == 2
    assert all("metadata" in json.dumps(e, default=str) for e in bad)
