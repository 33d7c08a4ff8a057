"""The intake API on a real loopback server (and a unix socket), over a real SQLite store.

The scheduler, deliverer and daemon are small recording fakes: these tests are about what the
API answers and which domain operations it triggers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from watcher.api.metrics import Metrics
from watcher.api.server import IntakeServer
from watcher.api.status import DaemonSnapshot
from watcher.clock import ManualClock
from watcher.config.settings import (
    Config,
    DeliveryConfig,
    EndpointConfig,
    IntakeConfig,
    LoggingConfig,
    PollingConfig,
    Secret,
    StoreConfig,
    UpstreamConfig,
)
from watcher.delivery.events import build_event, plan_deliveries
from watcher.delivery.ping import PingResult
from watcher.errors import ConfigProblem, WatcherError
from watcher.models import (
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
    EventOutcome,
    EventType,
    Task,
    TaskState,
    Transition,
)
from watcher.polling.decide import Watch
from watcher.polling.learning import ModelStats
from watcher.service import WatchService
from watcher.store.adapter import AsyncAdapter
from watcher.store.postgres_cluster import InstanceRecord
from watcher.store.sqlite import SqliteStore

TOKEN = "intake-token-5f0c9e2a7b1d4c3e"
API_KEY = "sk-upstream-key-9a8b7c6d5e4f"
ENDPOINT_SECRET = "whsec_" + base64.b64encode(b"endpoint-secret-bytes-0123456789").decode()
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"callback-secret-bytes-0123456789").decode()
SECRETS = (TOKEN, API_KEY, ENDPOINT_SECRET, CALLBACK_SECRET)


def make_config(
    tmp_path: Path,
    *,
    token: str | None = None,
    unix_path: Path | None = None,
    max_body_bytes: int = 65536,
    allowed_hosts: tuple[str, ...] = (),
    idle_timeout_s: float = 15.0,
    body_timeout_s: float = 10.0,
    hint_token: str | None = None,
) -> Config:
    if unix_path is not None:
        intake = IntakeConfig(
            listen=f"unix:{unix_path}",
            host=None,
            port=None,
            unix_path=unix_path,
            token=Secret(token) if token else None,
            max_body_bytes=max_body_bytes,
            allowed_hosts=allowed_hosts,
            idle_timeout_s=idle_timeout_s,
            body_timeout_s=body_timeout_s,
            hint_token=Secret(hint_token) if hint_token else None,
        )
    else:
        intake = IntakeConfig(
            listen="127.0.0.1:0",
            host="127.0.0.1",
            port=0,
            token=Secret(token) if token else None,
            max_body_bytes=max_body_bytes,
            allowed_hosts=allowed_hosts,
            idle_timeout_s=idle_timeout_s,
            body_timeout_s=body_timeout_s,
            hint_token=Secret(hint_token) if hint_token else None,
        )
    endpoint_secrets = (Secret(ENDPOINT_SECRET),)
    return Config(
        upstream=UpstreamConfig(base_url="http://127.0.0.1:9", api_key=Secret(API_KEY)),
        polling=PollingConfig(),
        store=StoreConfig(path=tmp_path / "watcher.db"),
        intake=intake,
        tasks_file=None,
        endpoints=(
            EndpointConfig(name="app", url="http://127.0.0.1:9/hooks", secrets=endpoint_secrets),
            EndpointConfig(name="audit", url="http://127.0.0.1:9/audit", secrets=endpoint_secrets),
        ),
        delivery=DeliveryConfig(
            allowed_callback_hosts=("hooks.example.com",),
            callback_secret=Secret(CALLBACK_SECRET),
        ),
        logging=LoggingConfig(),
    )


class FakeScheduler:
    """Records what the service asks of the scheduler."""

    def __init__(self) -> None:
        self.watched: list[str] = []
        self.unwatched: list[str] = []
        self.hinted: list[str] = []
        self.stats = [ModelStats("nano-banana", 3, 10.0, 14.0, 15.5, "fixed", 5.2, 1.25)]

    def watch(self, task: Task) -> None:
        self.watched.append(task.task_id)

    def watch_new(
        self,
        task_ids: Sequence[str],
        models: Sequence[str],
        deadlines_s: Sequence[float | None],
        *,
        registered_at: float,
    ) -> None:
        self.watched.extend(task_ids)

    def unwatch(self, task_id: str) -> bool:
        self.unwatched.append(task_id)
        return True

    def get(self, task_id: str) -> Watch | None:
        return None

    def poll_soon(self, task_id: str) -> bool:
        self.hinted.append(task_id)
        return task_id in self.watched and task_id not in self.unwatched

    def model_stats(self) -> list[ModelStats]:
        return self.stats

    def expected_completion(self, task_id: str) -> tuple[float, float] | None:
        return None


class FakeDeliverer:
    def __init__(self) -> None:
        self.enqueued: list[Delivery] = []
        self.pinged: list[str] = []

    def enqueue(self, deliveries: Any) -> None:
        self.enqueued.extend(deliveries)

    async def ping(self, endpoint: EndpointConfig) -> PingResult:
        """What a receiver answering 200 would give (tests/integration/delivery/test_ping.py
        sends real ones)."""
        self.pinged.append(endpoint.name)
        return PingResult(
            endpoint=endpoint.name,
            event_type="webhook.test",
            webhook_id="msg_ping1",
            sent_at=1_767_225_600.0,
            signatures=len(endpoint.secrets),
            duration_ms=4.25,
            status_code=200,
            error=None,
            answer='{"ok": true}',
            answer_truncated=False,
        )


@dataclass
class FakeControl:
    """The daemon side of reload and health, set by each test."""

    reload_problems: list[ConfigProblem] = field(default_factory=list)
    reload_error: Exception | None = None
    liveness_reasons: list[str] = field(default_factory=list)
    readiness_reasons: list[str] = field(default_factory=list)
    status: DaemonSnapshot = field(default_factory=lambda: DaemonSnapshot(None, None))
    reloads: int = 0

    async def reload(self) -> list[ConfigProblem]:
        self.reloads += 1
        if self.reload_error is not None:
            raise self.reload_error
        return list(self.reload_problems)

    def liveness(self) -> list[str]:
        return list(self.liveness_reasons)

    async def readiness(self) -> list[str]:
        return list(self.readiness_reasons)

    def snapshot(self) -> DaemonSnapshot:
        return self.status

    async def instances(self) -> tuple[list[InstanceRecord], str]:
        me = InstanceRecord(
            instance_id="local",
            hostname="host",
            pid=1,
            version="0",
            intake="127.0.0.1:0",
            started_at=1_700_000_000.0,
            heartbeat_at=1_700_000_001.0,
            lease_until=1_700_000_001.0,
            tasks=0,
            deliveries=0,
        )
        return [me], "local"


@dataclass
class Answer:
    status: int
    body: Any
    headers: Any
    text: str


@dataclass
class Harness:
    server: IntakeServer
    service: WatchService
    store: SqliteStore
    scheduler: FakeScheduler
    deliverer: FakeDeliverer
    control: FakeControl
    metrics: Metrics
    clock: ManualClock
    config: Config
    session: aiohttp.ClientSession
    base_url: str
    token: str | None
    answers: list[Answer] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Answer:
        all_headers = dict(headers or {})
        if auth and self.token:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        async with self.session.request(
            method, self.base_url + path, json=json_body, data=data, headers=all_headers
        ) as resp:
            text = await resp.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            answer = Answer(resp.status, body, resp.headers, text)
        self.answers.append(answer)
        return answer

    def finish(
        self, task_id: str, *, fail_app: bool = False, retry_app: bool = False
    ) -> list[Delivery]:
        """Make a task succeed with its event and deliveries, as the scheduler would; with
        `fail_app` every delivery then fails for good (410), with `retry_app` the one to
        `app` fails once (500) and is due again in 5 minutes."""
        task = self.store.get_task(task_id)
        now = self.clock.now()
        outcome = EventOutcome(
            type=EventType.SUCCEEDED,
            upstream={"taskId": task_id, "state": "success"},
            result={"resultUrls": ["https://cdn.apixo.ai/output/x.jpg"]},
            result_urls=("https://cdn.apixo.ai/output/x.jpg",),
        )
        event = build_event(outcome, task, now=now)
        deliveries = plan_deliveries(
            event, task, self.config.endpoints, callback_enabled=True, now=now
        )
        self.store.apply_transition(
            Transition(
                task_id=task_id,
                from_state=task.state,
                to_state=TaskState.SUCCEEDED,
                at=now,
                reason="upstream state success",
                upstream_state="success",
                event=event,
                deliveries=deliveries,
            )
        )
        if fail_app:
            for delivery in deliveries:
                attempt = Attempt(
                    delivery_id=delivery.delivery_id,
                    number=1,
                    started_at=now,
                    duration_ms=3.5,
                    outcome=AttemptOutcome.FAILED,
                    status_code=410,
                    error="HTTP 410",
                    webhook_timestamp=int(now),
                )
                failed = dataclasses.replace(
                    delivery,
                    status=DeliveryStatus.FAILED,
                    attempts=1,
                    schedule_pos=1,
                    next_attempt_at=None,
                    last_status_code=410,
                    last_error="HTTP 410",
                    updated_at=now,
                )
                self.store.record_attempt(attempt, failed)
        if retry_app:
            delivery = next(d for d in deliveries if d.endpoint == "app")
            attempt = Attempt(
                delivery_id=delivery.delivery_id,
                number=1,
                started_at=now,
                duration_ms=3.5,
                outcome=AttemptOutcome.RETRY,
                status_code=500,
                error="HTTP 500",
                webhook_timestamp=int(now),
            )
            retried = dataclasses.replace(
                delivery,
                attempts=1,
                schedule_pos=1,
                next_attempt_at=now + 300,
                last_status_code=500,
                last_error="HTTP 500",
                updated_at=now,
            )
            self.store.record_attempt(attempt, retried)
        return list(deliveries)


Starter = Callable[..., Awaitable[Harness]]


@contextlib.asynccontextmanager
async def running_intake(
    tmp_path: Path,
    *,
    token: str | None = None,
    unix: bool = False,
    max_body_bytes: int = 65536,
    allowed_hosts: tuple[str, ...] = (),
    idle_timeout_s: float = 15.0,
    body_timeout_s: float = 10.0,
    hint_token: str | None = None,
) -> AsyncIterator[Harness]:
    """A started intake server over a real SQLite store, with recording fakes around it."""
    unix_path = tmp_path / "intake.sock" if unix else None
    config = make_config(
        tmp_path,
        token=token,
        unix_path=unix_path,
        max_body_bytes=max_body_bytes,
        allowed_hosts=allowed_hosts,
        idle_timeout_s=idle_timeout_s,
        body_timeout_s=body_timeout_s,
        hint_token=hint_token,
    )
    clock = ManualClock(start=1_767_225_600.0)  # 2026-01-01T00:00:00Z
    store = SqliteStore(config.store.path)
    scheduler, deliverer = FakeScheduler(), FakeDeliverer()
    service = WatchService(
        store=AsyncAdapter(store),
        config=config,
        clock=clock,
        scheduler=scheduler,
        deliverer=deliverer,
    )
    control, metrics = FakeControl(), Metrics()
    server = IntakeServer(service=service, config=config.intake, control=control, metrics=metrics)
    await server.start()
    if unix_path is not None:
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(unix_path)))
        base_url = "http://localhost"
    else:
        session = aiohttp.ClientSession()
        base_url = f"http://{server.address}"
    try:
        yield Harness(
            server=server,
            service=service,
            store=store,
            scheduler=scheduler,
            deliverer=deliverer,
            control=control,
            metrics=metrics,
            clock=clock,
            config=config,
            session=session,
            base_url=base_url,
            token=token,
        )
    finally:
        await session.close()
        await server.stop()
        store.close()


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:
    """Start intake servers on demand; everything is stopped and closed afterwards."""
    async with contextlib.AsyncExitStack() as stack:

        async def _start(**kwargs: Any) -> Harness:
            return await stack.enter_async_context(running_intake(tmp_path, **kwargs))

        yield _start


@pytest.fixture
async def h(start: Starter) -> Harness:
    return await start()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Captured structlog events, debug included."""
    old = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(wrapper_class=old["wrapper_class"])


def assert_error(answer: Answer, status: int, code: str, field: str | None = None) -> None:
    assert answer.status == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.body["error"]["code"] == code
    assert answer.body["error"]["message"]
    if field is not None:
        assert answer.body["error"]["field"] == field


# -- POST /v1/tasks ------------------------------------------------------------------------------
async def test_register_answers_201_after_the_task_is_committed_and_watched(
    h: Harness, tmp_path: Path
) -> None:
    answer = await h.call(
        "POST",
        "/v1/tasks",
        json_body={
            "task_id": "task_abc123",
            "model": "nano-banana",
            "endpoints": ["app"],
            "metadata": {"order_id": 42},
            "deadline": "30m",
        },
    )
    assert answer.status == 201, answer.text
    assert answer.headers["Location"] == "/v1/tasks/task_abc123"
    task = answer.body
    assert task["task_id"] == "task_abc123"
    assert task["model"] == "nano-banana"
    assert task["state"] == "pending"
    assert task["endpoints"] == ["app"]
    assert task["metadata"] == {"order_id": 42}
    assert task["deadline_seconds"] == 1800
    assert task["source"] == "api"
    assert task["registered_at"] == "2026-01-01T00:00:00.000Z"
    assert h.scheduler.watched == ["task_abc123"]
    # Committed: another connection to the file sees it at once.
    other = SqliteStore(tmp_path / "watcher.db")
    try:
        assert other.get_task("task_abc123").model == "nano-banana"
    finally:
        other.close()


async def test_registering_again_answers_200_with_the_existing_task(h: Harness) -> None:
    first = await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "flux-2"})
    h.clock.advance(60)
    again = await h.call(
        "POST",
        "/v1/tasks",
        json_body={"task_id": "t1", "model": "flux-2", "metadata": {"other": True}},
    )
    assert (first.status, again.status) == (201, 200)
    assert again.body == first.body
    assert h.scheduler.watched == ["t1"]


async def test_same_task_id_with_another_model_is_a_conflict(h: Harness) -> None:
    await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "flux-2"})
    answer = await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "sora-2"})
    assert_error(answer, 409, "task_conflict")
    assert h.store.get_task("t1").model == "flux-2"


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"not json", b"\xff\xfe{}", b'{"task_id": NaN}', b'{"a": 1e999}'],
    ids=["empty", "truncated", "text", "not-utf8", "nan", "infinite"],
)
async def test_a_body_that_is_not_json_is_400(h: Harness, data: bytes) -> None:
    answer = await h.call(
        "POST", "/v1/tasks", data=data, headers={"Content-Type": "application/json"}
    )
    assert_error(answer, 400, "invalid_json")
    assert h.scheduler.watched == []


BIG_METADATA = {"blob": "x" * 4100}


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ([1, 2], None, "invalid_type"),
        ("a string", None, "invalid_type"),
        ({"model": "flux-2"}, "task_id", "missing"),
        ({"task_id": 7, "model": "flux-2"}, "task_id", "invalid_type"),
        ({"task_id": "has space", "model": "flux-2"}, "task_id", "invalid"),
        ({"task_id": "t1"}, "model", "missing"),
        ({"task_id": "t1", "model": "m", "endpoints": ["nope"]}, "endpoints", "unknown_endpoint"),
        ({"task_id": "t1", "model": "m", "endpoints": "app"}, "endpoints", "invalid_type"),
        ({"task_id": "t1", "model": "m", "endpoints": []}, "endpoints", "invalid"),
        (
            {"task_id": "t1", "model": "m", "callback_url": "https://evil.example.net/h"},
            "callback_url",
            "callback_host_not_allowed",
        ),
        (
            {"task_id": "t1", "model": "m", "callback_url": "ftp://hooks.example.com/h"},
            "callback_url",
            "invalid",
        ),
        *(
            ({"task_id": "t1", "model": "m", "callback_url": url}, "callback_url", "invalid")
            for url in (
                "http://hooks.example.com:99999/x",
                "http://hooks.example.com:abc/x",
                "http://hooks.example.com:+80/x",
                "http://[x]/y",
            )
        ),
        ({"task_id": "t1", "model": "m", "metadata": BIG_METADATA}, "metadata", "too_large"),
        ({"task_id": "t1", "model": "m", "metadata": [1]}, "metadata", "invalid_type"),
        ({"task_id": "t1", "model": "m", "deadline": "soon"}, "deadline", "invalid"),
        ({"task_id": "t1", "model": "m", "deadline": 0}, "deadline", "invalid"),
        ({"task_id": "t1", "model": "m", "colour": "red"}, "colour", "unknown_field"),
    ],
)
async def test_an_invalid_registration_is_422_naming_the_field(
    h: Harness, body: Any, field: str | None, code: str
) -> None:
    answer = await h.call("POST", "/v1/tasks", json_body=body)
    assert_error(answer, 422, "validation_failed")
    assert answer.body["error"]["field"] == field
    assert answer.body["problems"][0] == {
        "field": field,
        "code": code,
        "message": answer.body["problems"][0]["message"],
    }
    assert h.scheduler.watched == []
    assert h.store.list_tasks()[0] == []


async def test_every_problem_is_listed_and_field_names_the_first(h: Harness) -> None:
    answer = await h.call(
        "POST",
        "/v1/tasks",
        json_body={"model": 5, "endpoints": ["ghost"], "metadata": "x"},
    )
    assert_error(answer, 422, "validation_failed", field="task_id")
    fields = [p["field"] for p in answer.body["problems"]]
    assert fields == ["task_id", "model", "endpoints", "metadata"]


async def test_an_allowed_callback_host_is_accepted(h: Harness) -> None:
    url = "https://hooks.example.com/apixo?tenant=7"
    answer = await h.call(
        "POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m", "callback_url": url}
    )
    assert answer.status == 201
    assert answer.body["callback_url"] == url


async def test_a_body_over_max_body_bytes_is_413(start: Starter) -> None:
    h = await start(max_body_bytes=200)
    padded = {"task_id": "t1", "model": "m", "metadata": {"pad": "x" * 300}}
    answer = await h.call("POST", "/v1/tasks", json_body=padded)
    assert_error(answer, 413, "payload_too_large")

    # Without Content-Length (chunked), the bytes actually read count.
    async def chunks() -> AsyncIterator[bytes]:
        yield json.dumps(padded).encode()

    async with h.session.post(
        h.base_url + "/v1/tasks", data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"

    small = await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    assert small.status == 201
    assert h.scheduler.watched == ["t1"]


async def test_a_reloaded_body_limit_applies_at_once(start: Starter) -> None:
    h = await start(max_body_bytes=100)
    body = {"task_id": "t1", "model": "m", "metadata": {"pad": "x" * 150}}
    assert (await h.call("POST", "/v1/tasks", json_body=body)).status == 413
    h.server.update_config(dataclasses.replace(h.config.intake, max_body_bytes=1000))
    assert (await h.call("POST", "/v1/tasks", json_body=body)).status == 201


# -- GET /v1/tasks ------------------------------------------------------------------------------
async def test_list_is_newest_first_and_pages_with_the_cursor(h: Harness) -> None:
    for n in range(5):
        await h.call("POST", "/v1/tasks", json_body={"task_id": f"t{n}", "model": "m"})
        h.clock.advance(1)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        answer = await h.call("GET", "/v1/tasks" + query)
        assert answer.status == 200
        seen += [t["task_id"] for t in answer.body["tasks"]]
        pages += 1
        cursor = answer.body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["t4", "t3", "t2", "t1", "t0"]
    assert pages == 3


async def test_list_filters_by_state(h: Harness) -> None:
    for n in range(3):
        await h.call("POST", "/v1/tasks", json_body={"task_id": f"t{n}", "model": "m"})
    await h.call("DELETE", "/v1/tasks/t1")
    answer = await h.call("GET", "/v1/tasks?state=cancelled")
    assert [t["task_id"] for t in answer.body["tasks"]] == ["t1"]
    assert answer.body["next_cursor"] is None
    answer = await h.call("GET", "/v1/tasks?state=pending")
    assert sorted(t["task_id"] for t in answer.body["tasks"]) == ["t0", "t2"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=bogus", "state"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("cursor=%25%25not-a-cursor", "cursor"),
    ],
)
async def test_bad_list_parameters_are_400(h: Harness, query: str, field: str) -> None:
    assert_error(await h.call("GET", "/v1/tasks?" + query), 400, "invalid_parameter", field)


# -- GET/DELETE /v1/tasks/{id} ------------------------------------------------------------------
async def test_show_has_state_changes_events_and_delivery_attempts(h: Harness) -> None:
    await h.call(
        "POST",
        "/v1/tasks",
        json_body={"task_id": "t1", "model": "m", "metadata": {"order": 42}},
    )
    h.clock.advance(12.5)
    deliveries = h.finish("t1", fail_app=True)
    answer = await h.call("GET", "/v1/tasks/t1")
    assert answer.status == 200
    task = answer.body
    assert task["state"] == "succeeded"
    assert task["finished_at"] == "2026-01-01T00:00:12.500Z"
    assert task["next_poll_at"] is None
    assert [(c["from_state"], c["to_state"]) for c in task["state_changes"]] == [
        ("pending", "succeeded")
    ]
    [event] = task["events"]
    assert event["type"] == "task.succeeded"
    assert event["payload"]["data"]["metadata"] == {"order": 42}
    assert event["payload"]["data"]["result_urls"] == ["https://cdn.apixo.ai/output/x.jpg"]
    assert sorted(d["endpoint"] for d in task["deliveries"]) == ["app", "audit"]
    assert {d["delivery_id"] for d in task["deliveries"]} == {d.delivery_id for d in deliveries}
    for delivery in task["deliveries"]:
        assert delivery["status"] == "failed"
        assert delivery["attempts"] == 1
        assert [(a["number"], a["status_code"]) for a in delivery["attempt_log"]] == [(1, 410)]


async def test_show_unknown_task_is_404(h: Harness) -> None:
    assert_error(await h.call("GET", "/v1/tasks/nope"), 404, "task_not_found")


async def test_cancel_stops_watching_and_show_says_cancelled(h: Harness) -> None:
    await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    answer = await h.call("DELETE", "/v1/tasks/t1")
    assert answer.status == 200
    assert answer.body["task_id"] == "t1"
    assert answer.body["state"] == "cancelled"
    assert answer.body["already_cancelled"] is False
    assert h.scheduler.unwatched == ["t1"]
    shown = await h.call("GET", "/v1/tasks/t1")
    assert shown.body["state"] == "cancelled"
    assert shown.body["events"] == []
    assert h.deliverer.enqueued == []
    again = await h.call("DELETE", "/v1/tasks/t1")  # a retried DELETE succeeds
    assert again.status == 200
    assert again.body["state"] == "cancelled"
    assert again.body["already_cancelled"] is True  # the same answer, told apart
    assert again.body["finished_at"] == answer.body["finished_at"]


async def test_cancel_unknown_is_404_and_finished_is_409(h: Harness) -> None:
    assert_error(await h.call("DELETE", "/v1/tasks/nope"), 404, "task_not_found")
    await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    h.finish("t1")
    assert_error(await h.call("DELETE", "/v1/tasks/t1"), 409, "task_finished")
    assert (await h.call("GET", "/v1/tasks/t1")).body["state"] == "succeeded"


# -- endpoints ----------------------------------------------------------------------------------
async def test_ping_sends_a_test_event_to_the_named_endpoint_and_answers_what_it_met(
    h: Harness,
) -> None:
    answer = await h.call("POST", "/v1/endpoints/audit/ping")
    assert answer.status == 200
    assert h.deliverer.pinged == ["audit"]
    assert answer.body == {
        "endpoint": "audit",
        "event_type": "webhook.test",
        "webhook_id": "msg_ping1",
        "sent_at": "2026-01-01T00:00:00.000Z",
        "signatures": 1,
        "ok": True,
        "status_code": 200,
        "duration_ms": 4.25,
        "error": None,
        "answer": '{"ok": true}',
        "answer_truncated": False,
    }
    assert (await h.call("GET", "/v1/deliveries")).body["deliveries"] == []


async def test_ping_of_an_unknown_endpoint_is_404(h: Harness) -> None:
    for name in ("nope", "@callback"):
        assert_error(await h.call("POST", f"/v1/endpoints/{name}/ping"), 404, "endpoint_not_found")
    assert h.deliverer.pinged == []
    assert (await h.call("GET", "/v1/endpoints/app/ping")).status == 405


# -- deliveries ---------------------------------------------------------------------------------
async def test_delivery_log_filters_by_status_and_task(h: Harness) -> None:
    for task_id in ("t1", "t2"):
        await h.call("POST", "/v1/tasks", json_body={"task_id": task_id, "model": "m"})
    h.finish("t1", fail_app=True)
    h.finish("t2")
    everything = await h.call("GET", "/v1/deliveries")
    assert everything.status == 200
    assert len(everything.body["deliveries"]) == 4
    assert everything.body["next_cursor"] is None
    failed = await h.call("GET", "/v1/deliveries?status=failed")
    assert {d["task_id"] for d in failed.body["deliveries"]} == {"t1"}
    assert all(d["status"] == "failed" for d in failed.body["deliveries"])
    assert all("attempt_log" not in d for d in failed.body["deliveries"])
    of_t2 = await h.call("GET", "/v1/deliveries?task_id=t2")
    assert {d["status"] for d in of_t2.body["deliveries"]} == {"pending"}
    page = await h.call("GET", "/v1/deliveries?limit=3")
    assert len(page.body["deliveries"]) == 3
    rest = await h.call("GET", f"/v1/deliveries?limit=3&cursor={page.body['next_cursor']}")
    assert len(rest.body["deliveries"]) == 1
    assert_error(await h.call("GET", "/v1/deliveries?status=lost"), 400, "invalid_parameter")


async def test_a_delivery_whose_last_attempt_failed_is_retrying_with_when_and_why(
    h: Harness,
) -> None:
    await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    app = next(d for d in h.finish("t1", retry_app=True) if d.endpoint == "app")

    retrying = await h.call("GET", "/v1/deliveries?status=retrying")
    assert retrying.status == 200
    (shown,) = retrying.body["deliveries"]
    assert shown["delivery_id"] == app.delivery_id
    assert shown["status"] == "retrying"
    assert shown["next_attempt_at"] == "2026-01-01T00:05:00.000Z"
    assert (shown["last_status_code"], shown["last_error"]) == (500, "HTTP 500")
    detail = await h.call("GET", f"/v1/deliveries/{app.delivery_id}")
    assert detail.body["status"] == "retrying"
    # `pending` is what waits for its first attempt; `failed` keeps meaning "given up".
    pending = await h.call("GET", "/v1/deliveries?status=pending")
    assert {d["endpoint"] for d in pending.body["deliveries"]} == {"audit"}
    assert {d["status"] for d in pending.body["deliveries"]} == {"pending"}
    assert (await h.call("GET", "/v1/deliveries?status=failed")).body["deliveries"] == []


async def test_one_delivery_with_its_attempts_and_404(h: Harness) -> None:
    await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    [first, *_] = h.finish("t1", fail_app=True)
    answer = await h.call("GET", f"/v1/deliveries/{first.delivery_id}")
    assert answer.status == 200
    assert answer.body["webhook_id"] == first.webhook_id
    assert answer.body["attempt_log"][0]["outcome"] == "failed"
    assert_error(await h.call("GET", "/v1/deliveries/dlv_nope"), 404, "delivery_not_found")


async def test_redeliver_is_202_pending_again_and_handed_to_the_deliverer(h: Harness) -> None:
    await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    [first, *_] = h.finish("t1", fail_app=True)
    h.clock.advance(3600)
    answer = await h.call("POST", f"/v1/deliveries/{first.delivery_id}/redeliver")
    assert answer.status == 202
    assert answer.body["delivery_id"] == first.delivery_id
    assert answer.body["status"] == "pending"
    assert answer.body["webhook_id"] == first.webhook_id
    assert answer.body["next_attempt_at"] == "2026-01-01T01:00:00.000Z"
    assert [d.delivery_id for d in h.deliverer.enqueued] == [first.delivery_id]
    assert_error(
        await h.call("POST", "/v1/deliveries/dlv_nope/redeliver"), 404, "delivery_not_found"
    )


# -- operations ---------------------------------------------------------------------------------
async def test_reload_answers_200_or_422_with_every_problem(h: Harness) -> None:
    answer = await h.call("POST", "/v1/reload")
    assert (answer.status, answer.body) == (200, {"status": "reloaded"})
    h.control.reload_problems = [
        ConfigProblem("endpoints[0].url", 12, "must be an http(s) URL"),
        ConfigProblem("", None, "not valid YAML"),
    ]
    answer = await h.call("POST", "/v1/reload")
    assert_error(answer, 422, "invalid_config")
    assert answer.body["problems"] == [
        {"path": "endpoints[0].url", "line": 12, "message": "must be an http(s) URL"},
        {"path": "", "line": None, "message": "not valid YAML"},
    ]
    assert h.control.reloads == 2


async def test_health_and_readiness(h: Harness) -> None:
    for path in ("/healthz", "/livez"):
        answer = await h.call("GET", path)
        assert (answer.status, answer.body) == (200, {"status": "ok"})
    answer = await h.call("GET", "/readyz")
    assert (answer.status, answer.body) == (200, {"status": "ready"})

    h.control.liveness_reasons = ["scheduler loop stopped"]
    h.control.readiness_reasons = ["store not writable: disk I/O error"]
    for path in ("/healthz", "/livez"):
        answer = await h.call("GET", path)
        assert answer.status == 503
        assert answer.body == {"status": "unhealthy", "reasons": ["scheduler loop stopped"]}
    answer = await h.call("GET", "/readyz")
    assert answer.status == 503
    assert answer.body == {
        "status": "not_ready",
        "reasons": ["store not writable: disk I/O error"],
    }


async def test_draining_refuses_new_tasks_and_is_not_ready(h: Harness) -> None:
    await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    h.server.set_draining()
    answer = await h.call("POST", "/v1/tasks", json_body={"task_id": "t2", "model": "m"})
    assert_error(answer, 503, "draining")
    ready = await h.call("GET", "/readyz")
    assert ready.status == 503
    assert any("draining" in r for r in ready.body["reasons"])
    assert (await h.call("GET", "/healthz")).status == 200
    assert (await h.call("GET", "/v1/tasks/t1")).status == 200
    assert h.scheduler.watched == ["t1"]


async def test_metrics_are_prometheus_text(h: Harness) -> None:
    await h.call("GET", "/v1/tasks/nope")
    answer = await h.call("GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert "apixo_watcher_build_info{" in answer.text
    assert (
        'apixo_watcher_intake_requests_total{method="GET",route="/v1/tasks/{task_id}",'
        'status="404"} 1.0' in answer.text
    )


async def test_openapi_document_is_served(h: Harness) -> None:
    answer = await h.call("GET", "/openapi.json")
    assert answer.status == 200
    assert answer.body["openapi"].startswith("3.")
    assert "/v1/tasks" in answer.body["paths"]


async def test_unknown_route_is_404_and_wrong_method_405_both_json(h: Harness) -> None:
    assert_error(await h.call("GET", "/v1/nothing"), 404, "not_found")
    answer = await h.call("PUT", "/v1/tasks")
    assert_error(answer, 405, "method_not_allowed")
    assert set(answer.headers["Allow"].split(",")) == {"GET", "POST"}


async def test_an_unexpected_failure_is_500_json_without_details(
    h: Harness, logs: list[dict[str, Any]]
) -> None:
    h.control.reload_error = RuntimeError("boom: /etc/secret/path")
    answer = await h.call("POST", "/v1/reload")
    assert answer.status == 500
    assert answer.body == {
        "error": {"code": "internal", "message": "internal error", "field": None}
    }
    assert "boom" not in answer.text
    assert "Traceback" not in answer.text
    [failure] = [e for e in logs if e["event"] == "intake_handler_failed"]
    assert failure["path"] == "/v1/reload"
    assert failure["exc_info"]


async def test_a_store_failure_is_503(h: Harness) -> None:
    h.store.close()
    answer = await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    assert_error(answer, 503, "store_unavailable")


async def test_requests_are_logged_at_debug(h: Harness, logs: list[dict[str, Any]]) -> None:
    await h.call("GET", "/v1/tasks?limit=5")
    [entry] = [e for e in logs if e["event"] == "intake_request"]
    assert entry["log_level"] == "debug"
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/v1/tasks", 200)
    assert entry["duration_ms"] >= 0


# -- the bearer token ---------------------------------------------------------------------------
async def test_token_is_required_on_every_route_but_the_probes(start: Starter) -> None:
    h = await start(token=TOKEN)
    protected = [
        ("GET", "/v1/tasks"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks/t1"),
        ("DELETE", "/v1/tasks/t1"),
        ("GET", "/v1/deliveries"),
        ("GET", "/v1/deliveries/dlv_1"),
        ("POST", "/v1/deliveries/dlv_1/redeliver"),
        ("POST", "/v1/endpoints/app/ping"),
        ("POST", "/v1/reload"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ]
    wrong_headers = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ]
    for method, path in protected:
        for headers in wrong_headers:
            answer = await h.call(method, path, headers=headers, auth=False)
            assert_error(answer, 401, "unauthorized")
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert h.control.reloads == 0
    assert h.deliverer.pinged == []
    for path in ("/healthz", "/livez", "/readyz"):
        assert (await h.call("GET", path, auth=False)).status == 200
    assert (await h.call("GET", "/v1/tasks")).status == 200
    ok = await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    assert ok.status == 201
    assert (await h.call("GET", "/metrics")).status == 200


async def test_a_reloaded_token_applies_at_once(start: Starter) -> None:
    h = await start(token=TOKEN)
    new_token = "rotated-token-0123456789"
    h.server.update_config(dataclasses.replace(h.config.intake, token=Secret(new_token)))
    assert (await h.call("GET", "/v1/tasks")).status == 401
    h.token = new_token
    assert (await h.call("GET", "/v1/tasks")).status == 200


async def test_no_secret_ever_appears_in_an_answer_or_a_log(
    start: Starter, logs: list[dict[str, Any]]
) -> None:
    h = await start(token=TOKEN)
    url = "https://hooks.example.com/cb"
    await h.call(
        "POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m", "callback_url": url}
    )
    [first, *_] = h.finish("t1", fail_app=True)
    h.control.reload_problems = [ConfigProblem("intake.token", 3, "too short")]
    for method, path in [
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/t1"),
        ("GET", "/v1/deliveries"),
        ("GET", f"/v1/deliveries/{first.delivery_id}"),
        ("POST", f"/v1/deliveries/{first.delivery_id}/redeliver"),
        ("POST", "/v1/endpoints/app/ping"),
        ("POST", "/v1/reload"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/readyz"),
        ("GET", "/nowhere"),
    ]:
        await h.call(method, path)
        await h.call(method, path, auth=False)
        await h.call(method, path, headers={"Authorization": "Bearer guess"}, auth=False)
    assert len(h.answers) >= 33
    shown = " ".join(a.text + " " + repr(dict(a.headers)) for a in h.answers)
    logged = repr(logs)
    for secret in SECRETS:
        assert secret not in shown
        assert secret not in logged


# -- listening ----------------------------------------------------------------------------------
async def test_unix_socket_serves_with_group_only_mode(start: Starter, tmp_path: Path) -> None:
    path = tmp_path / "intake.sock"
    # A stale socket file from a crashed daemon is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    h = await start(unix=True)
    assert h.server.address == f"unix:{path}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    answer = await h.call("POST", "/v1/tasks", json_body={"task_id": "t1", "model": "m"})
    assert answer.status == 201
    assert (await h.call("GET", "/v1/tasks/t1")).body["state"] == "pending"
    await h.server.stop()
    assert not path.exists()


async def test_a_live_unix_socket_is_not_taken_over(start: Starter, tmp_path: Path) -> None:
    h = await start(unix=True)
    second = IntakeServer(
        service=h.service, config=h.config.intake, control=h.control, metrics=Metrics()
    )
    with pytest.raises(WatcherError, match="another process is listening"):
        await second.start()
    assert (await h.call("GET", "/healthz")).status == 200


async def test_a_regular_file_at_the_socket_path_is_refused(h: Harness, tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    intake = IntakeConfig(listen=f"unix:{path}", host=None, port=None, unix_path=path)
    server = IntakeServer(service=h.service, config=intake, control=h.control, metrics=Metrics())
    with pytest.raises(WatcherError, match="not a socket"):
        await server.start()
    assert path.read_text() == "keep me"


async def test_a_busy_tcp_port_is_a_clear_error(h: Harness) -> None:
    port = int(h.server.address.rsplit(":", 1)[1])
    intake = IntakeConfig(listen=f"127.0.0.1:{port}", host="127.0.0.1", port=port)
    server = IntakeServer(service=h.service, config=intake, control=h.control, metrics=Metrics())
    with pytest.raises(WatcherError, match=f"cannot listen on 127.0.0.1:{port}"):
        await server.start()


async def test_stop_is_idempotent_and_closes_the_port(start: Starter) -> None:
    h = await start()
    port = int(h.server.address.rsplit(":", 1)[1])
    await h.server.stop()
    await h.server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
