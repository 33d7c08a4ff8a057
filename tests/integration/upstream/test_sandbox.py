"""The sandbox: the fake upstream users try the daemon with, and the tests' scripted upstream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from watcher.upstream.sandbox import (
    SANDBOX,
    SandboxState,
    error,
    failed,
    make_sandbox_app,
    malformed,
    pending,
    processing,
    run_sandbox,
    success,
)

KEY = "sk-sandbox"
AUTH = {"Authorization": f"Bearer {KEY}"}


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(state: SandboxState) -> tuple[TestServer, aiohttp.ClientSession]:
        server = TestServer(make_sandbox_app(state=state), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        session = aiohttp.ClientSession()
        sessions.append(session)
        return server, session

    yield start
    for session in sessions:
        await session.close()
    for server in servers:
        await server.close()


async def status(
    server: TestServer,
    session: aiohttp.ClientSession,
    task_id: str | None,
    *,
    model: str = "nano-banana",
    headers: dict[str, str] | None = None,
    prefix: str = "/api/v1",
) -> tuple[int, Any, Any]:
    params = {"taskId": task_id} if task_id is not None else {}
    async with session.get(
        server.make_url(f"{prefix}/statusTask/{model}"),
        params=params,
        headers=AUTH if headers is None else headers,
    ) as resp:
        body = await resp.read()
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body
        return resp.status, parsed, resp.headers


async def test_normal_mode_task_lifecycle(serve: Any, fake_time: FakeTime) -> None:
    state = SandboxState(api_key=KEY, finish_after_s=3.0, clock=fake_time)
    server, session = await serve(state)
    code, body, _ = await status(server, session, "task_abc")
    assert code == 200
    assert body["code"] == 200
    assert body["data"]["state"] == "pending"
    assert body["data"]["taskId"] == "task_abc"
    fake_time.now += 1.5
    _, body, _ = await status(server, session, "task_abc")
    assert body["data"]["state"] == "processing"
    fake_time.now += 1.5
    _, body, _ = await status(server, session, "task_abc")
    data = body["data"]
    assert data["state"] == "success"
    assert data["costTime"] == 3000
    assert data["completeTime"] - data["createTime"] == 3000
    urls = json.loads(data["resultJson"])["resultUrls"]
    assert len(urls) == 2
    # The fake result URLs are served by the sandbox itself.
    async with session.get(urls[0]) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        assert (await resp.read()).startswith(b"\x89PNG")


async def test_normal_mode_failures_are_deterministic(serve: Any, fake_time: FakeTime) -> None:
    state = SandboxState(api_key=KEY, finish_after_s=0.0, fail_ratio=0.5, seed=7, clock=fake_time)
    server, session = await serve(state)
    _, body, _ = await status(server, session, "task_will_fail")
    assert body["data"]["state"] == "failed"
    assert body["data"]["failCode"]
    assert body["data"]["failMsg"]
    states = []
    for n in range(40):
        _, body, _ = await status(server, session, f"task_{n}")
        states.append(body["data"]["state"])
    assert 5 < states.count("failed") < 35  # about half
    again = SandboxState(finish_after_s=0.0, fail_ratio=0.5, seed=7)
    assert [again.will_fail(f"task_{n}") for n in range(40)] == [s == "failed" for s in states]
    none_fail = SandboxState(fail_ratio=0.0)
    assert not any(none_fail.will_fail(f"task_{n}") for n in range(40))
    assert none_fail.will_fail("task_FAIL_1")


async def test_notfound_ids_answer_404(serve: Any) -> None:
    server, session = await serve(SandboxState(api_key=KEY))
    code, body, _ = await status(server, session, "task_notfound_1")
    assert code == 404
    assert body["code"] == 404


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": KEY}, 401),
        ({"Authorization": "Bearer sk-other"}, 401),
        (AUTH, 200),
    ],
    ids=["missing", "empty", "no scheme", "wrong key", "right key"],
)
async def test_bearer_key_is_required(serve: Any, headers: dict[str, str], expected: int) -> None:
    server, session = await serve(SandboxState(api_key=KEY))
    code, body, _ = await status(server, session, "t", headers=headers)
    assert code == expected
    assert body["code"] == expected
    assert len(server.app[SANDBOX].requests) == 1


async def test_any_key_is_accepted_without_a_configured_one(serve: Any) -> None:
    server, session = await serve(SandboxState())
    code, _, _ = await status(server, session, "t", headers={"Authorization": "Bearer x"})
    assert code == 200
    code, _, _ = await status(server, session, "t", headers={})
    assert code == 401


async def test_the_accepted_key_can_change(serve: Any) -> None:
    state = SandboxState(api_key=KEY)
    server, session = await serve(state)
    state.api_key = "sk-rotated"
    assert (await status(server, session, "t"))[0] == 401
    headers = {"Authorization": "Bearer sk-rotated"}
    assert (await status(server, session, "t", headers=headers))[0] == 200


async def test_submit_returns_a_task_that_can_be_polled(serve: Any) -> None:
    server, session = await serve(SandboxState(api_key=KEY))
    async with session.post(
        server.make_url("/api/v1/generateTask/nano-banana"), json={"prompt": "a cat"}, headers=AUTH
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    task_id = body["data"]["taskId"]
    assert task_id.startswith("task_")
    _, polled, _ = await status(server, session, task_id)
    assert polled["data"]["taskId"] == task_id
    async with session.post(server.make_url("/generateTask/nano-banana")) as resp:
        assert resp.status == 401


async def test_routes_are_served_with_and_without_the_api_prefix(serve: Any) -> None:
    server, session = await serve(SandboxState(api_key=KEY))
    assert (await status(server, session, "t", prefix=""))[0] == 200
    assert (await status(server, session, "t", prefix="/api/v1"))[0] == 200


async def test_missing_task_id_is_a_bad_request(serve: Any) -> None:
    server, session = await serve(SandboxState(api_key=KEY))
    code, body, _ = await status(server, session, None)
    assert code == 400
    assert body["code"] == 400


async def test_scripted_answers_are_consumed_in_order(serve: Any) -> None:
    state = SandboxState(api_key=KEY)
    server, session = await serve(state)
    state.script(
        "t1",
        error(429, "slow down", retry_after="3"),
        malformed(502),
        pending(),
        processing(),
        failed("NSFW", None),
    )
    seen = [await status(server, session, "t1") for _ in range(6)]
    assert [s[0] for s in seen] == [429, 502, 200, 200, 200, 200]
    assert seen[0][2]["Retry-After"] == "3"
    assert seen[1][1] == b"<html>upstream proxy error</html>"
    assert [s[1]["data"]["state"] for s in seen[2:]] == [
        "pending",
        "processing",
        "failed",
        "failed",  # the last answer repeats
    ]
    assert seen[4][1]["data"] == {
        "state": "failed",
        "failCode": "NSFW",
        "failMsg": None,
        "taskId": "t1",
    }
    assert state.polls("t1") == 6
    assert state.polls("other") == 0
    assert all(r.has_bearer and r.model == "nano-banana" for r in state.requests)


async def test_default_script_runs_per_task(serve: Any) -> None:
    state = SandboxState(api_key=KEY)
    server, session = await serve(state)
    state.script_default(pending(), success(("https://cdn/x.png",)))
    for task_id in ("a", "b"):
        assert (await status(server, session, task_id))[1]["data"]["state"] == "pending"
    _, body, _ = await status(server, session, "a")
    assert json.loads(body["data"]["resultJson"]) == {"resultUrls": ["https://cdn/x.png"]}


async def test_delays_and_concurrency_are_tracked(serve: Any) -> None:
    state = SandboxState(api_key=KEY)
    server, session = await serve(state)
    state.delay_s = 0.05
    await asyncio.gather(*(status(server, session, f"t{n}") for n in range(4)))
    assert state.max_in_flight == 4
    assert state.in_flight == 0


async def test_run_sandbox_serves_until_cancelled() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    task = asyncio.create_task(
        run_sandbox("127.0.0.1", port, finish_after_s=0.0, fail_ratio=0.0, seed=1)
    )
    url = f"http://127.0.0.1:{port}/api/v1/statusTask/nano-banana"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url, params={"taskId": "t"}, headers=AUTH) as resp:
                    body = await resp.json()
                    break
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.01)
        else:
            raise AssertionError("sandbox did not start")
        assert body["data"]["state"] == "success"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with pytest.raises(aiohttp.ClientConnectorError):
            async with session.get(url, params={"taskId": "t"}, headers=AUTH):
                pass
