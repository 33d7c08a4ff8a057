"""UpstreamClient against the sandbox on loopback: what is sent, and every failure as a result."""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from watcher.config.settings import Secret, UpstreamConfig
from watcher.upstream.classify import PollOutcome
from watcher.upstream.client import UpstreamClient
from watcher.upstream.sandbox import (
    SANDBOX,
    SandboxResponse,
    SandboxState,
    error,
    make_sandbox_app,
    malformed,
    pending,
    success,
)

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    srv = TestServer(make_sandbox_app(api_key=KEY), host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture
def sandbox(server: TestServer) -> SandboxState:
    return server.app[SANDBOX]


def config_for(server: TestServer, **changes: object) -> UpstreamConfig:
    config = UpstreamConfig(
        base_url=str(server.make_url("/api/v1")),
        api_key=Secret(KEY),
        timeout_s=5.0,
        max_concurrency=4,
        max_requests_per_second=100.0,
    )
    return replace(config, **changes)


@pytest.fixture
async def client(server: TestServer) -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(config_for(server))
    yield upstream
    await upstream.close()


async def test_sends_the_bearer_key_and_reads_the_answer(
    client: UpstreamClient, sandbox: SandboxState
) -> None:
    sandbox.script("task_1", pending())
    result = await client.fetch_status("nano-banana", "task_1")
    assert result.outcome is PollOutcome.OK
    assert result.data == {"state": "pending", "taskId": "task_1"}
    assert result.http_status == 200
    assert result.duration_s > 0
    [request] = sandbox.requests
    assert request.authorization == f"Bearer {KEY}"
    assert request.path == "/api/v1/statusTask/nano-banana"
    assert (request.model, request.task_id) == ("nano-banana", "task_1")


async def test_success_data_is_verbatim(client: UpstreamClient, sandbox: SandboxState) -> None:
    sandbox.script("task_1", success(("https://cdn.apixo.ai/output/x.jpg",), extra={"a": [1]}))
    result = await client.fetch_status("flux-2", "task_1")
    assert result.data is not None
    assert result.data["resultJson"] == '{"resultUrls": ["https://cdn.apixo.ai/output/x.jpg"]}'
    assert result.data["extra"] == {"a": [1]}


ANSWERS = [
    ("401", error(401, "Invalid API key"), PollOutcome.CREDENTIALS, None),
    ("402", error(402, "Insufficient balance"), PollOutcome.CREDENTIALS, None),
    ("404", error(404, "Task not found"), PollOutcome.NOT_FOUND, None),
    ("400", error(400, "bad"), PollOutcome.BAD_REQUEST, None),
    ("429", error(429, "slow down", retry_after="3"), PollOutcome.RATE_LIMITED, 3.0),
    ("500", error(500, "boom"), PollOutcome.TRANSIENT, None),
    ("503", error(503, "unavailable", retry_after="7"), PollOutcome.TRANSIENT, 7.0),
    ("body code 402 on 200", error(200, "no money", code=402), PollOutcome.CREDENTIALS, None),
    ("html", malformed(200), PollOutcome.TRANSIENT, None),
    ("html 502", malformed(502), PollOutcome.TRANSIENT, None),
]


@pytest.mark.parametrize(
    ("response", "outcome", "retry_after"), [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS]
)
async def test_answers_are_classified(
    client: UpstreamClient,
    sandbox: SandboxState,
    response: SandboxResponse,
    outcome: PollOutcome,
    retry_after: float | None,
) -> None:
    sandbox.script("task_1", response)
    result = await client.fetch_status("nano-banana", "task_1")
    assert result.outcome is outcome
    assert result.retry_after_s == retry_after


async def test_wrong_key_is_a_credentials_problem_and_never_shown(
    server: TestServer, sandbox: SandboxState
) -> None:
    wrong = "sk-wrong-key-do-not-print"
    client = UpstreamClient(config_for(server, api_key=Secret(wrong)))
    try:
        result = await client.fetch_status("nano-banana", "task_1")
        assert result.outcome is PollOutcome.CREDENTIALS
        assert wrong not in result.detail
        # An upstream that echoes the key in its message does not get it into the detail.
        sandbox.api_key = wrong
        sandbox.script("task_2", error(500, f"key {wrong} is weird"))
        echoed = await client.fetch_status("nano-banana", "task_2")
        assert echoed.outcome is PollOutcome.TRANSIENT
        assert wrong not in echoed.detail
        assert "**********" in echoed.detail
    finally:
        await client.close()


async def test_timeout_is_transient(server: TestServer, sandbox: SandboxState) -> None:
    sandbox.script("task_1", replace(pending(), delay_s=0.5))
    client = UpstreamClient(config_for(server, timeout_s=0.1))
    try:
        result = await client.fetch_status("nano-banana", "task_1")
    finally:
        await client.close()
    assert result.outcome is PollOutcome.TRANSIENT
    assert result.http_status is None
    assert result.detail == "timeout after 0.1s"
    assert KEY not in result.detail


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = UpstreamConfig(
        base_url=f"http://127.0.0.1:{port}/api/v1",
        api_key=Secret(KEY),
        timeout_s=2.0,
        max_concurrency=2,
        max_requests_per_second=10.0,
    )
    client = UpstreamClient(config)
    try:
        result = await client.fetch_status("nano-banana", "task_1")
    finally:
        await client.close()
    assert result.outcome is PollOutcome.TRANSIENT
    assert result.http_status is None
    assert result.detail.startswith("connection refused")
    assert KEY not in result.detail


async def test_model_and_task_id_are_quoted(client: UpstreamClient, sandbox: SandboxState) -> None:
    await client.fetch_status("nano banana", "task_1&taskId=other#x")
    [request] = sandbox.requests
    assert request.model == "nano banana"
    assert request.task_id == "task_1&taskId=other#x"


async def test_plain_task_ids_reach_the_upstream_verbatim_on_a_quoted_model(
    client: UpstreamClient, sandbox: SandboxState
) -> None:
    # Plain ids take the cached URL of their model and set only the query; any other id is
    # quoted in full. Each asks for exactly the task it names.
    ids = ["task_1", "a.B_~-9", "task_1", "x y", "task_2"]
    for task_id in ids:
        await client.fetch_status("nano banana/v2", task_id)
    assert [(r.model, r.task_id) for r in sandbox.requests] == [
        ("nano banana/v2", task_id) for task_id in ids
    ]


async def test_reload_takes_effect_on_the_next_request(
    client: UpstreamClient, server: TestServer, sandbox: SandboxState
) -> None:
    assert (await client.fetch_status("m", "t")).outcome is PollOutcome.OK
    sandbox.api_key = "sk-new"
    assert (await client.fetch_status("m", "t")).outcome is PollOutcome.CREDENTIALS
    client.update_config(config_for(server, api_key=Secret("sk-new"), max_concurrency=8))
    assert (await client.fetch_status("m", "t")).outcome is PollOutcome.OK
    assert sandbox.requests[-1].authorization == "Bearer sk-new"
    client.update_config(
        config_for(server, api_key=Secret("sk-new"), base_url="http://127.0.0.1:1")
    )
    assert (await client.fetch_status("m", "t")).outcome is PollOutcome.TRANSIENT
    assert len(sandbox.requests) == 3


async def test_a_given_session_is_used_and_left_open(
    server: TestServer, sandbox: SandboxState
) -> None:
    async with aiohttp.ClientSession() as session:
        client = UpstreamClient(config_for(server), session=session)
        assert (await client.fetch_status("m", "t")).outcome is PollOutcome.OK
        await client.close()
        await client.close()
        assert not session.closed
    assert sandbox.polls() == 1


@pytest.mark.parametrize("pad", [155, 160, 165, 170])
async def test_a_key_echoed_where_the_detail_is_cut_is_never_shown_in_part(
    server: TestServer, sandbox: SandboxState, pad: int
) -> None:
    # The detail is cut at 200 characters: the cut used to fall inside the echoed key, after
    # the key had been looked for, so its first characters were logged and shown.
    sandbox.script("task_1", error(401, "x" * pad + f" invalid key {KEY} given"))
    client = UpstreamClient(config_for(server))
    try:
        result = await client.fetch_status("nano-banana", "task_1")
    finally:
        await client.close()
    assert result.outcome is PollOutcome.CREDENTIALS
    assert not any(KEY[:end] in result.detail for end in range(6, len(KEY) + 1))


# --- answer sizes (issue 9, item 3) -------------------------------------------------------------

BIG_URLS = tuple(f"https://cdn.apixo.ai/output/{i:07d}-{'x' * 40}.png" for i in range(70_000))


async def test_a_5_mb_success_is_read_whole_by_default(
    client: UpstreamClient, sandbox: SandboxState
) -> None:
    sandbox.script("task_big", success(BIG_URLS))
    result = await client.fetch_status("nano-banana", "task_big")
    assert client.config.max_response_bytes == 16 * 1024 * 1024
    assert result.outcome is PollOutcome.OK
    assert result.data is not None
    assert len(result.data["resultJson"]) > 5_000_000


async def test_a_2xx_answer_over_the_cap_is_too_large_not_transient(
    server: TestServer, sandbox: SandboxState
) -> None:
    sandbox.script("task_big", success(BIG_URLS[:2000]))
    client = UpstreamClient(config_for(server, max_response_bytes=64 * 1024))
    try:
        result = await client.fetch_status("nano-banana", "task_big")
    finally:
        await client.close()
    assert result.outcome is PollOutcome.TOO_LARGE
    assert result.http_status == 200
    assert result.data is None
    assert result.detail == "HTTP 200: answer larger than upstream.max_response_bytes (64KiB)"


async def test_an_error_answer_over_the_cap_is_classified_by_its_status(
    server: TestServer, sandbox: SandboxState
) -> None:
    html = b"<html>" + b"x" * 1_200_000 + b"</html>"
    sandbox.script("t503", malformed(503, html))
    sandbox.script("t401", malformed(401, html))
    client = UpstreamClient(config_for(server, max_response_bytes=64 * 1024))
    try:
        busy = await client.fetch_status("m", "t503")
        rejected = await client.fetch_status("m", "t401")
    finally:
        await client.close()
    assert (busy.outcome, busy.detail) == (PollOutcome.TRANSIENT, "HTTP 503")
    assert (rejected.outcome, rejected.detail) == (PollOutcome.CREDENTIALS, "HTTP 401")


def _raw_app(handler: Any) -> web.Application:
    app = web.Application()
    app.router.add_get("/api/v1/statusTask/{model}", handler)
    return app


async def test_the_cap_holds_without_content_length_and_for_compressed_bodies() -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        await resp.write(b'{"code": 200, "data": {"state": "success", "pad": "')
        for _ in range(64):
            await resp.write(b"x" * 4096)
        await resp.write(b'"}}')
        return resp

    async def bomb(request: web.Request) -> web.Response:
        # 300 KB of JSON in a ~1 KB gzip body: the cap counts what is decompressed.
        raw = b'{"code": 200, "data": {"state": "success", "pad": "' + b"0" * 300_000 + b'"}}'
        return web.Response(
            body=gzip.compress(raw),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    for handler in (chunked, bomb):
        server = TestServer(_raw_app(handler), host="127.0.0.1")
        await server.start_server()
        client = UpstreamClient(config_for(server, max_response_bytes=64 * 1024))
        try:
            result = await client.fetch_status("m", "t")
        finally:
            await client.close()
            await server.close()
        assert result.outcome is PollOutcome.TOO_LARGE, handler.__name__
