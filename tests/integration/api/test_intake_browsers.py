"""A web page in the operator's browser cannot drive the intake (CSRF, DNS rebinding).

Real loopback server, real SQLite store; the requests are the ones a browser would send for a
hostile page: a form or `fetch` POST with a `text/plain` body, a foreign `Origin`, a rebound
name in `Host`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.api.test_intake import Answer, Harness, assert_error, running_intake
from watcher.config.settings import IntakeConfig

Starter = Callable[..., Awaitable[Harness]]
TASK = {"task_id": "task_abc123", "model": "nano-banana"}


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:
    async with contextlib.AsyncExitStack() as stack:

        async def _start(**kwargs: Any) -> Harness:
            return await stack.enter_async_context(running_intake(tmp_path, **kwargs))

        yield _start


def _port(h: Harness) -> int:
    return int(h.server.address.rpartition(":")[2])


async def _post_text(h: Harness, path: str, content_type: str | None, **headers: str) -> Answer:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await h.call("POST", path, data=json.dumps(TASK).encode(), headers=headers)


# -- content type ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_task_body_that_is_not_declared_json_is_refused(
    start: Starter, content_type: str | None
) -> None:
    h = await start()
    answer = await _post_text(h, "/v1/tasks", content_type)

    assert_error(answer, 415, "unsupported_media_type")
    assert "application/json" in answer.body["error"]["message"]
    assert h.scheduler.watched == []
    assert (await h.call("GET", "/v1/tasks")).body["tasks"] == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
async def test_a_json_body_is_accepted(start: Starter, content_type: str) -> None:
    h = await start()
    answer = await _post_text(h, "/v1/tasks", content_type)
    assert answer.status == 201, answer.text


async def test_a_non_json_body_on_a_route_without_one_is_refused(start: Starter) -> None:
    h = await start()
    answer = await h.call("POST", "/v1/reload", data=b"x=1", headers={"Content-Type": "text/plain"})
    assert_error(answer, 415, "unsupported_media_type")
    assert h.control.reloads == 0
    # What the CLI sends: no body at all.
    assert (await h.call("POST", "/v1/reload")).status == 200
    assert h.control.reloads == 1


# -- Host: DNS rebinding --------------------------------------------------------------------------
async def test_a_foreign_host_is_refused_on_every_route_but_the_probes(start: Starter) -> None:
    h = await start()
    rebound = {"Host": f"attacker.example:{_port(h)}"}

    answer = await h.call("POST", "/v1/tasks", json_body=TASK, headers=rebound)
    assert_error(answer, 403, "host_not_allowed")
    assert "intake.allowed_hosts" in answer.body["error"]["message"]
    assert_error(await h.call("GET", "/v1/tasks", headers=rebound), 403, "host_not_allowed")
    assert_error(await h.call("GET", "/metrics", headers=rebound), 403, "host_not_allowed")
    assert h.scheduler.watched == []
    # Probes answer anyone who can connect (load balancers use their own names for us).
    assert (await h.call("GET", "/healthz", headers=rebound)).status == 200
    assert (await h.call("GET", "/readyz", headers=rebound)).status == 200


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST"])
async def test_the_loopback_names_with_the_port_are_the_daemon(start: Starter, name: str) -> None:
    h = await start()
    answer = await h.call("GET", "/v1/tasks", headers={"Host": f"{name}:{_port(h)}"})
    assert answer.status == 200, answer.text


async def test_a_loopback_name_with_another_port_is_another_service(start: Starter) -> None:
    h = await start()
    answer = await h.call("GET", "/v1/tasks", headers={"Host": f"localhost:{_port(h) + 1}"})
    assert_error(answer, 403, "host_not_allowed")


async def test_configured_names_are_allowed_and_follow_a_reload(start: Starter) -> None:
    h = await start(allowed_hosts=("watcher.internal",))
    proxied = {"Host": "watcher.internal", "Origin": "https://watcher.internal"}
    assert (await h.call("POST", "/v1/tasks", json_body=TASK, headers=proxied)).status == 201

    h.server.update_config(IntakeConfig(**{**_fields(h.config.intake), "allowed_hosts": ()}))
    assert_error(await h.call("GET", "/v1/tasks", headers=proxied), 403, "host_not_allowed")


def _fields(config: IntakeConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__slots__}


async def test_any_host_goes_on_a_unix_socket(start: Starter) -> None:
    h = await start(unix=True)
    answer = await h.call("GET", "/v1/tasks", headers={"Host": "anything.example"})
    assert answer.status == 200, answer.text


# -- Origin: CSRF ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "origin", ["https://attacker.example", "null", "http://127.0.0.1:1", "http://localhost:3000"]
)
async def test_a_cross_origin_request_is_refused(start: Starter, origin: str) -> None:
    h = await start()
    answer = await _post_text(h, "/v1/tasks", "application/json", Origin=origin)
    assert_error(answer, 403, "origin_not_allowed")
    delete = await h.call("DELETE", "/v1/tasks/t1", headers={"Origin": origin})
    assert_error(delete, 403, "origin_not_allowed")
    reload = await h.call("POST", "/v1/reload", headers={"Origin": origin})
    assert_error(reload, 403, "origin_not_allowed")
    assert h.control.reloads == 0
    assert h.scheduler.watched == []


async def test_a_same_origin_request_is_allowed(start: Starter) -> None:
    # What a page the daemon serves itself (the coming console) sends.
    h = await start()
    answer = await _post_text(
        h, "/v1/tasks", "application/json", Origin=f"http://{h.server.address}"
    )
    assert answer.status == 201, answer.text


async def test_the_host_and_origin_checks_come_before_the_token(start: Starter) -> None:
    h = await start(token="a-token-0123456789abcdef")
    answer = await h.call(
        "GET", "/v1/tasks", headers={"Origin": "https://attacker.example"}, auth=False
    )
    assert_error(answer, 403, "origin_not_allowed")
