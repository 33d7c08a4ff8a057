"""POST /v1/hints/apixo (contract section 8) and GET /v1/stats/models on a real intake server.

The hint body is never trusted: it only asks the scheduler to poll the named task soon. Here
the scheduler is a recording fake; tests/integration/test_adaptive.py drives the real daemon.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.integration.api.test_intake import TOKEN, running_intake

HINT = "hint-token-0f1e2d3c4b5a"
PATH = "/v1/hints/apixo"


def envelope(task_id: object, **data: object) -> dict[str, object]:
    """The upstream's callback body: its status envelope."""
    return {"code": 200, "message": "success", "data": {"taskId": task_id, **data}}


async def test_a_hint_polls_the_named_watched_task_and_trusts_nothing_else(
    tmp_path: Path,
) -> None:
    async with running_intake(tmp_path, token=TOKEN, hint_token=HINT) as h:
        created = await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
        assert created.status == 201
        # The body claims success with results: none of it is believed or stored.
        body = envelope(
            "t1", state="success", resultJson='{"resultUrls":["https://evil.example/x"]}'
        )
        started = time.monotonic()
        answer = await h.call("POST", f"{PATH}?token={HINT}", json_body=body, auth=False)
        assert time.monotonic() - started < 1.0
        assert (answer.status, answer.body) == (200, {"status": "accepted"})
        assert h.scheduler.hinted == ["t1"]
        task = h.store.get_task("t1")
        assert task.state.value == "pending"
        assert task.upstream_state is None
        assert h.store.events_for_task("t1") == []


async def test_unknown_task_ids_get_the_same_answer(tmp_path: Path) -> None:
    async with running_intake(tmp_path, hint_token=HINT) as h:
        for task_id in ("never-registered", "", "x" * 5000):
            answer = await h.call("POST", f"{PATH}?token={HINT}", json_body=envelope(task_id))
            assert (answer.status, answer.body) == (200, {"status": "accepted"})
        assert h.store.list_tasks()[0] == []


@pytest.mark.parametrize(
    "query", ["", "?token=", "?token=wrong", f"?token={HINT}x", "?tok=" + HINT]
)
async def test_without_the_right_token_401_and_no_poll(tmp_path: Path, query: str) -> None:
    async with running_intake(tmp_path, token=TOKEN, hint_token=HINT) as h:
        await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
        with capture_logs() as logs:
            # Not even the intake's own bearer token opens it.
            answer = await h.call("POST", PATH + query, json_body=envelope("t1"))
        assert answer.status == 401
        assert answer.body["error"]["code"] == "unauthorized"
        assert h.scheduler.hinted == []
        assert HINT not in json.dumps(logs)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"t1"',
        b"{}",
        b'{"data": null}',
        b'{"data": "t1"}',
        b'{"data": {}}',
        b'{"data": {"taskId": 42}}',
        b'{"data": {"taskId": null}}',
        b'{"data": {"task_id": "t1"}}',
        b'{"taskId": "t1"}',
        b"\xff\xfe",
        b"[" * 10_000 + b"]" * 10_000,
    ],
)
async def test_other_bodies_are_400(tmp_path: Path, body: bytes) -> None:
    async with running_intake(tmp_path, hint_token=HINT) as h:
        answer = await h.call("POST", f"{PATH}?token={HINT}", data=body)
        assert answer.status == 400
        assert answer.body["error"]["code"] == "invalid_hint"
        assert answer.body["error"]["field"] == "data.taskId"
        assert h.scheduler.hinted == []


async def test_over_64_kib_is_413_whatever_max_body_bytes_says(tmp_path: Path) -> None:
    async with running_intake(tmp_path, hint_token=HINT, max_body_bytes=1 << 20) as h:
        padding = "p" * (64 * 1024)
        big = json.dumps(envelope("t1", padding=padding)).encode()
        answer = await h.call("POST", f"{PATH}?token={HINT}", data=big)
        assert answer.status == 413
        assert h.scheduler.hinted == []
        fits = json.dumps(envelope("t1", padding="p" * 60_000)).encode()
        assert len(fits) <= 64 * 1024
        assert (await h.call("POST", f"{PATH}?token={HINT}", data=fits)).status == 200


async def test_without_a_hint_token_the_route_is_off(tmp_path: Path) -> None:
    async with running_intake(tmp_path, token=TOKEN) as h:
        answer = await h.call("POST", f"{PATH}?token=", json_body=envelope("t1"))
        assert answer.status == 404
        assert "intake.hint_token" in answer.body["error"]["message"]
        assert h.scheduler.hinted == []


async def test_stats_models_has_exactly_the_contract_fields(tmp_path: Path) -> None:
    async with running_intake(tmp_path, token=TOKEN) as h:
        assert (await h.call("GET", "/v1/stats/models", auth=False)).status == 401
        answer = await h.call("GET", "/v1/stats/models")
        assert answer.status == 200
        assert answer.body == {
            "models": [
                {
                    "model": "nano-banana",
                    "samples": 3,
                    "duration_p50_s": 10.0,
                    "duration_p90_s": 14.0,
                    "duration_p99_s": 15.5,
                    "strategy": "fixed",
                    "polls_per_task": 5.2,
                    "detection_delay_mean_s": 1.25,
                }
            ]
        }


async def test_the_body_decides_not_its_content_type_nor_the_host(tmp_path: Path) -> None:
    async with running_intake(tmp_path, token=TOKEN, hint_token=HINT) as h:
        body = json.dumps(envelope("t1")).encode()
        headers = {"Content-Type": "text/plain", "Host": "hooks.example.com"}
        answer = await h.call("POST", f"{PATH}?token={HINT}", data=body, headers=headers)
        assert answer.status == 200
        form = await h.call("POST", f"{PATH}?token={HINT}", data=b"a=b", headers=headers)
        assert form.status == 400


async def test_only_ids_a_task_could_have_are_passed_on_to_other_instances(
    tmp_path: Path,
) -> None:
    # Several instances: a hint for a task not watched here goes to the others as a database
    # notice. An id no registration could have names no task anywhere: nothing is sent (a
    # 5,000-character one would not even fit a notice).
    async with running_intake(tmp_path, hint_token=HINT) as h:
        forwarded: list[str] = []
        h.service.forward_hints(forwarded.append)
        for task_id in ("held-elsewhere", "", "x" * 5000, "has spaces", "-dash-first"):
            answer = await h.call("POST", f"{PATH}?token={HINT}", json_body=envelope(task_id))
            assert (answer.status, answer.body) == (200, {"status": "accepted"})
        assert forwarded == ["held-elsewhere"]
