"""The whole watcher in one process: fake upstream -> scheduler -> store -> deliverer -> receiver.

Real loopback HTTP servers on both sides, a real SQLite file, the real intake API. Every webhook
is verified by the receiver with the independent `standardwebhooks` package.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.daemon import API_KEY
from tests.helpers.receiver import Receiver, Reply, start_receiver
from tests.integration.conftest import Upstream
from watcher.upstream.sandbox import (
    bad_result,
    error,
    failed,
    malformed,
    pending,
    processing,
    success,
)
from watcher.webhook_secret import generate_secret


def endpoint(receiver: Receiver, secret: str, path: str = "/hook", **extra: Any) -> dict[str, Any]:
    return {"name": extra.pop("name", "app"), "url": receiver.url(path), "secret": secret, **extra}


async def test_success_is_delivered_signed_with_parsed_results(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_ok", pending(), processing(), success(("https://cdn/a.jpg",)))
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_ok", metadata={"order_id": 42})

    (hook,) = await receiver.wait_for(1)
    assert hook.verified
    assert hook.webhook_id is not None
    assert hook.webhook_id.startswith("msg_")
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["user-agent"].startswith("apixo-watcher/")
    body = hook.body
    assert body["type"] == "task.succeeded"
    assert body["timestamp"].endswith("Z")
    data = body["data"]
    assert data["task_id"] == "task_ok"
    assert data["model"] == "nano-banana"
    assert data["state"] == "success"
    assert data["result_urls"] == ["https://cdn/a.jpg"]
    assert data["result"] == {"resultUrls": ["https://cdn/a.jpg"]}
    assert data["cost_time_ms"] == 12500
    assert data["created_at"] == "2024-01-01T00:00:00.000Z"
    assert data["completed_at"] == "2024-01-01T00:00:12.500Z"
    assert data["metadata"] == {"order_id": 42}
    assert data["upstream"]["taskId"] == "task_ok"
    assert data["upstream"]["resultJson"] == json.dumps({"resultUrls": ["https://cdn/a.jpg"]})

    task = await running.wait_task("task_ok", lambda t: t["deliveries"][0]["status"] == "succeeded")
    assert task["state"] == "succeeded"
    assert [c["to_state"] for c in task["state_changes"]] == ["processing", "succeeded"]
    assert task["deliveries"][0]["webhook_id"] == hook.webhook_id
    # exactly one webhook per task and endpoint
    await asyncio.sleep(0)
    assert len(receiver.received) == 1
    # every poll carried the bearer key
    assert all(r.authorization == f"Bearer {API_KEY}" for r in upstream.state.status_requests())


async def test_failed_task_passes_codes_through_verbatim(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_bad", failed("InputOutputSensitiveContentDetected", "flagged"))
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_bad")
    (hook,) = await receiver.wait_for(1)
    assert hook.verified
    assert hook.body["type"] == "task.failed"
    assert hook.body["data"]["fail_code"] == "InputOutputSensitiveContentDetected"
    assert hook.body["data"]["fail_msg"] == "flagged"
    assert hook.body["data"]["state"] == "failed"


async def test_unparseable_result_becomes_watcher_bad_result(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_br", bad_result())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_br")
    (hook,) = await receiver.wait_for(1)
    assert hook.body["type"] == "task.failed"
    assert hook.body["data"]["fail_code"] == "WATCHER_BAD_RESULT"
    assert upstream.state.polls("task_br") >= 2  # re-polled before giving up


async def test_a_5_mb_success_is_delivered_not_timed_out(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    # Once read with a 1 MiB cap: retried until the deadline, then task.timed_out.
    urls = tuple(f"https://cdn.apixo.ai/output/{i:07d}-{'x' * 40}.png" for i in range(70_000))
    upstream.state.script("task_big", pending(), success(urls))
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_big")
    (hook,) = await receiver.wait_for(1, timeout=20)
    assert hook.verified
    assert hook.body["type"] == "task.succeeded"
    assert len(hook.body["data"]["result_urls"]) == len(urls)
    assert len(hook.raw_body) > 5_000_000


async def test_answers_always_too_large_fail_the_task_soon(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    urls = tuple(f"https://cdn.apixo.ai/output/{i:05d}.png" for i in range(5000))
    upstream.state.script("task_huge", pending(), success(urls))
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)],
        extra_upstream={"max_response_bytes": "64KiB"},
        polling={"deadline": "1h"},
    )
    await running.add("task_huge")
    (hook,) = await receiver.wait_for(1, timeout=10)
    data = hook.body["data"]
    assert hook.body["type"] == "task.failed"
    assert data["fail_code"] == "WATCHER_ANSWER_TOO_LARGE"
    assert "upstream.max_response_bytes (64KiB)" in data["fail_msg"]
    assert data["upstream"] is None
    assert upstream.state.polls("task_huge") == 4  # pending, then 3 answers too large


async def test_not_found_then_found_is_delivered(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_late", error(404, "Task not found"), error(404), success())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_late")
    (hook,) = await receiver.wait_for(1)
    assert hook.body["type"] == "task.succeeded"


async def test_not_found_forever_ends_in_task_not_found(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_gone", error(404, "Task not found"))
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)], polling={"not_found_grace": "300ms"}
    )
    await running.add("task_gone")
    (hook,) = await receiver.wait_for(1)
    data = hook.body["data"]
    assert hook.body["type"] == "task.not_found"
    assert data["state"] == "not_found"
    assert data["watched_seconds"] >= 0.3
    assert "last_state" in data


async def test_never_finishing_task_times_out_at_its_deadline(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_slow", pending(), processing())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_slow", deadline="400ms")
    (hook,) = await receiver.wait_for(1)
    assert hook.body["type"] == "task.timed_out"
    assert hook.body["data"]["last_state"] == "processing"
    assert hook.body["data"]["watched_seconds"] >= 0.4


async def test_rejected_key_pauses_everything_until_a_reload_brings_a_good_one(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str, tmp_path: Path
) -> None:
    upstream.state.api_key = "the-new-key-0000"
    upstream.state.script("task_a", success())
    upstream.state.script("task_b", success())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_a")
    await running.add("task_b")

    async with running.http.get(running.base + "/readyz") as resp:
        pass
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # readiness reports the bad key once the first 401 came back
        async with running.http.get(running.base + "/readyz") as resp:
            body = await resp.json()
            if resp.status == 503:
                break
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.02)
    assert any("API key" in r for r in body["reasons"])
    polls_during_pause = upstream.state.polls()
    await asyncio.sleep(0.3)  # a pause is an absence of requests: give it a window to show
    assert upstream.state.polls() - polls_during_pause <= 1  # at most one slow probe
    for task_id in ("task_a", "task_b"):
        task = await running.get(f"/v1/tasks/{task_id}")
        assert task["state"] == "pending"  # kept, not failed

    config = yaml.safe_load(running.config_path.read_text())
    config["upstream"]["api_key"] = "the-new-key-0000"
    running.config_path.write_text(yaml.safe_dump(config))
    status, answer = await running.post("/v1/reload")
    assert status == 200, answer
    hooks = await receiver.wait_for(2)
    assert {h.body["data"]["task_id"] for h in hooks} == {"task_a", "task_b"}


async def test_rate_limit_retry_after_slows_the_whole_upstream(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_rl", error(429, "Rate limit exceeded", retry_after="1"), success())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_rl")
    await receiver.wait_for(1, timeout=5)
    first, second = upstream.state.status_requests("task_rl")[:2]
    assert second.at - first.at >= 1.0


async def test_server_errors_and_malformed_answers_are_retried(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script(
        "task_flaky",
        error(500, "boom"),
        malformed(),
        error(503, "model temporarily unavailable"),
        malformed(200, b'{"code": 200, "data": '),
        success(),
    )
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_flaky")
    (hook,) = await receiver.wait_for(1)
    assert hook.body["type"] == "task.succeeded"
    assert upstream.state.polls("task_flaky") == 5


async def test_receiver_error_is_retried_with_the_same_webhook_id(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_r", success())
    receiver.script("/hook", 500, 200)
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_r")
    first, second = await receiver.wait_for(2)
    assert first.verified
    assert second.verified
    assert first.webhook_id == second.webhook_id
    assert first.raw_body == second.raw_body
    task = await running.wait_task("task_r", lambda t: t["deliveries"][0]["status"] == "succeeded")
    log = task["deliveries"][0]["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 200]
    assert [a["outcome"] for a in log] == ["retry", "succeeded"]


async def test_gone_stops_the_delivery_at_once(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_410", success())
    receiver.script("/hook", 410)
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_410")
    await receiver.wait_for(1)
    task = await running.wait_task("task_410", lambda t: t["deliveries"][0]["status"] == "failed")
    assert task["deliveries"][0]["attempts"] == 1
    failed_list = await running.get("/v1/deliveries?status=failed")
    assert [d["task_id"] for d in failed_list["deliveries"]] == ["task_410"]


async def test_receiver_rate_limit_retry_after_is_honoured(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_429", success())
    receiver.script("/hook", Reply(429, headers={"Retry-After": "1"}), 200)
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_429")
    first, second = await receiver.wait_for(2, timeout=5)
    # the schedule's next slot is 100 ms; Retry-After asks for at least a second
    assert second.received_at - first.received_at >= 0.95
    assert first.webhook_id == second.webhook_id


async def test_secret_rotation_sends_one_signature_per_secret(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    new = generate_secret()
    upstream.state.script("task_rot", success())
    running = await start_daemon(
        endpoints=[{"name": "app", "url": receiver.url("/hook"), "secrets": [new, secret]}]
    )
    await running.add("task_rot")
    (hook,) = await receiver.wait_for(1)
    assert len(hook.signatures) == 2
    assert hook.verified  # the receiver only knows the old secret


async def test_processing_subscribers_get_progress_and_others_do_not(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_p", pending(), processing(), processing(), success())
    events = ["task.processing", "task.succeeded", "task.failed"]
    running = await start_daemon(
        endpoints=[
            endpoint(receiver, secret, "/progress", name="progress", events=events),
            endpoint(receiver, secret, "/final", name="final"),
        ]
    )
    await running.add("task_p")
    progress = await receiver.wait_for(2, path="/progress")
    final = await receiver.wait_for(1, path="/final")
    assert [h.body["type"] for h in progress] == ["task.processing", "task.succeeded"]
    assert [h.body["type"] for h in final] == ["task.succeeded"]
    assert progress[1].webhook_id != final[0].webhook_id  # one id per (event, endpoint)


async def test_task_endpoints_select_targets(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_sel", success())
    running = await start_daemon(
        endpoints=[
            endpoint(receiver, secret, "/one", name="one"),
            endpoint(receiver, secret, "/two", name="two"),
        ]
    )
    await running.add("task_sel", endpoints=["two"])
    await receiver.wait_for(1, path="/two")
    await running.wait_task("task_sel", lambda t: t["deliveries"][0]["status"] == "succeeded")
    assert receiver.on("/one") == []


async def test_cancelled_task_is_never_delivered(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_c", pending())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_c")
    await running.wait_task("task_c", lambda t: t["polls"] >= 1 or t["upstream_state"] is not None)
    async with running.http.delete(running.base + "/v1/tasks/task_c") as resp:
        assert resp.status == 200
    polls = upstream.state.polls("task_c")
    upstream.state.script("task_c", success())
    await asyncio.sleep(0.3)  # a cancelled task must stay silent: give it time to misbehave
    assert receiver.received == []
    assert upstream.state.polls("task_c") <= polls + 1  # at most one poll already in flight
    task = await running.get("/v1/tasks/task_c")
    assert task["state"] == "cancelled"


async def test_tasks_file_imports_good_entries_and_reports_bad_ones_with_lines(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str, tmp_path: Path
) -> None:
    upstream.state.script_default(success())
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)],
        tasks=[
            {"task_id": "file_1", "model": "nano-banana"},
            {"task_id": "file_2"},  # no model
            {"task_id": "file_3", "model": "flux-2", "metadata": {"k": "v"}},
        ],
    )
    hooks = await receiver.wait_for(2)
    assert {h.body["data"]["task_id"] for h in hooks} == {"file_1", "file_3"}

    # the file changes: the new entry is picked up without a reload
    tasks_path = tmp_path / "tasks.yaml"
    doc = yaml.safe_load(tasks_path.read_text())
    doc["tasks"].append({"task_id": "file_4", "model": "sora-2"})
    tasks_path.write_text(yaml.safe_dump(doc))
    hooks = await receiver.wait_for(3, timeout=5)
    assert hooks[-1].body["data"]["task_id"] == "file_4"
    listing = await running.get("/v1/tasks")
    assert {t["task_id"] for t in listing["tasks"]} == {"file_1", "file_3", "file_4"}
    assert all(t["source"] == "file" for t in listing["tasks"])


async def test_metrics_count_polls_attempts_and_lag_without_task_ids(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_m", pending(), success())
    receiver.script("/hook", 500, 200)
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_m", model="flux-2")
    await receiver.wait_for(2)
    await running.wait_task("task_m", lambda t: t["deliveries"][0]["status"] == "succeeded")
    async with running.http.get(running.base + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['apixo_watcher_upstream_requests_total{model="flux-2",outcome="ok"}'] == 2
    assert samples['apixo_watcher_webhook_attempts_total{endpoint="app",outcome="retry"}'] == 1
    assert samples['apixo_watcher_webhook_attempts_total{endpoint="app",outcome="succeeded"}'] == 1
    assert samples['apixo_watcher_tasks{state="succeeded"}'] == 1
    assert samples['apixo_watcher_detection_delay_seconds_count{model="flux-2"}'] == 1
    assert samples['apixo_watcher_delivery_latency_seconds_count{endpoint="app"}'] == 1
    assert "task_m" not in text


async def test_ad_hoc_callback_is_signed_with_the_callback_secret(
    start_daemon: Any, upstream: Upstream, secret: str
) -> None:
    callback_secret = generate_secret()
    upstream.state.script("task_cb", success())
    async with start_receiver(secrets=[callback_secret]) as callback_receiver:
        running = await start_daemon(
            delivery={"allowed_callback_hosts": ["127.0.0.1"], "callback_secret": callback_secret}
        )
        await running.add("task_cb", callback_url=callback_receiver.url("/cb"))
        (hook,) = await callback_receiver.wait_for(1)
        assert hook.verified
        assert hook.body["type"] == "task.succeeded"
        task = await running.wait_task(
            "task_cb", lambda t: t["deliveries"][0]["status"] == "succeeded"
        )
        assert task["deliveries"][0]["url"] == callback_receiver.url("/cb")

        async with running.http.post(
            f"{running.base}/v1/tasks",
            json={"task_id": "t2", "model": "m", "callback_url": "https://evil.example/x"},
        ) as resp:
            assert resp.status == 422
            error = (await resp.json())["error"]
        assert error["field"] == "callback_url"


async def test_finished_tasks_past_retention_are_purged_once_delivered(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.script("task_old", success())
    upstream.state.script("task_live", pending())
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)], extra_store={"retention": "50ms"}
    )
    await running.add("task_old")
    await running.add("task_live")
    await running.wait_task(
        "task_old", lambda t: bool(t["deliveries"]) and t["deliveries"][0]["status"] == "succeeded"
    )
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the purge runs hourly; here it is called as soon as the retention has passed
        await running.daemon._purge()
        async with running.http.get(running.base + "/v1/tasks/task_old") as resp:
            if resp.status == 404:
                break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    live = await running.get("/v1/tasks/task_live")
    assert live["state"] == "pending"  # active tasks are never purged
    assert (await running.get("/v1/deliveries"))["deliveries"] == []


async def test_a_credential_pause_does_not_use_up_task_deadlines(
    start_daemon: Any, upstream: Upstream, receiver: Receiver, secret: str
) -> None:
    upstream.state.api_key = "the-new-key-0000"
    upstream.state.script("task_dl", success())
    running = await start_daemon(endpoints=[endpoint(receiver, secret)])
    await running.add("task_dl", deadline="400ms")
    deadline = asyncio.get_running_loop().time() + 5
    while not (running.daemon.scheduler and running.daemon.scheduler.stats.credentials_paused):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.6)  # the pause outlasts the task's whole deadline

    config = yaml.safe_load(running.config_path.read_text())
    config["upstream"]["api_key"] = "the-new-key-0000"
    running.config_path.write_text(yaml.safe_dump(config))
    status, _ = await running.post("/v1/reload")
    assert status == 200
    (hook,) = await receiver.wait_for(1)
    assert hook.body["type"] == "task.succeeded"  # polled after the pause, not timed out
