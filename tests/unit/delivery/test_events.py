"""Event bodies (the exact JSON receivers get) and the deliveries an event fans out to."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from watcher.config.settings import EndpointConfig, Secret
from watcher.delivery.events import build_event, iso_timestamp, plan_deliveries
from watcher.models import (
    CALLBACK_ENDPOINT,
    DEFAULT_EVENTS,
    DeliveryStatus,
    Event,
    EventOutcome,
    EventType,
    Task,
    TaskSource,
    TaskState,
)
from watcher.webhook_secret import generate_secret

NOW = 1_767_225_612.5  # 2026-01-01T00:00:12.500Z

UPSTREAM_SUCCESS = {
    "taskId": "task_abc123",
    "state": "success",
    "resultJson": '{"resultUrls":["https://cdn.apixo.ai/output/abc123.jpg"]}',
    "costTime": 12500,
    "createTime": 1704067200000,
    "completeTime": 1704067212500,
}
UPSTREAM_FAILED = {
    "taskId": "task_abc123",
    "state": "failed",
    "failCode": "CONTENT_VIOLATION",
    "failMsg": "Content violates usage policy",
    "createTime": 1704067200000,
    "completeTime": 1704067205000,
}
UPSTREAM_PROCESSING = {"taskId": "task_abc123", "state": "processing", "createTime": 1704067200000}


def make_task(
    *,
    metadata: dict[str, Any] | None = None,
    endpoints: tuple[str, ...] | None = None,
    callback_url: str | None = None,
) -> Task:
    return Task(
        task_id="task_abc123",
        model="nano-banana",
        endpoints=endpoints,
        callback_url=callback_url,
        metadata={} if metadata is None else metadata,
        deadline_s=None,
        source=TaskSource.API,
        state=TaskState.PROCESSING,
        registered_at=NOW - 100.25,
        updated_at=NOW - 1,
    )


def body_of(outcome: EventOutcome, task: Task | None = None) -> dict[str, Any]:
    event = build_event(outcome, task or make_task(metadata={"order_id": 42}), now=NOW)
    parsed: dict[str, Any] = json.loads(event.body)
    return parsed


def test_succeeded_body_matches_the_contract_example() -> None:
    outcome = EventOutcome(
        type=EventType.SUCCEEDED,
        upstream=UPSTREAM_SUCCESS,
        result={"resultUrls": ["https://cdn.apixo.ai/output/abc123.jpg"]},
        result_urls=("https://cdn.apixo.ai/output/abc123.jpg",),
    )
    assert body_of(outcome) == {
        "type": "task.succeeded",
        "timestamp": "2026-01-01T00:00:12.500Z",
        "data": {
            "task_id": "task_abc123",
            "model": "nano-banana",
            "state": "success",
            "result_urls": ["https://cdn.apixo.ai/output/abc123.jpg"],
            "result": {"resultUrls": ["https://cdn.apixo.ai/output/abc123.jpg"]},
            "cost_time_ms": 12500,
            "created_at": "2024-01-01T00:00:00.000Z",
            "completed_at": "2024-01-01T00:00:12.500Z",
            "metadata": {"order_id": 42},
            "upstream": UPSTREAM_SUCCESS,
        },
    }


def test_failed_body() -> None:
    outcome = EventOutcome(
        type=EventType.FAILED,
        upstream=UPSTREAM_FAILED,
        fail_code="CONTENT_VIOLATION",
        fail_msg="Content violates usage policy",
    )
    assert body_of(outcome)["data"] == {
        "task_id": "task_abc123",
        "model": "nano-banana",
        "state": "failed",
        "fail_code": "CONTENT_VIOLATION",
        "fail_msg": "Content violates usage policy",
        "cost_time_ms": None,
        "created_at": "2024-01-01T00:00:00.000Z",
        "completed_at": "2024-01-01T00:00:05.000Z",
        "metadata": {"order_id": 42},
        "upstream": UPSTREAM_FAILED,
    }


def test_watcher_made_failure_has_null_upstream() -> None:
    outcome = EventOutcome(
        type=EventType.FAILED, fail_code="WATCHER_UPSTREAM_REJECTED", fail_msg="HTTP 400"
    )
    data = body_of(outcome)["data"]
    assert data["fail_code"] == "WATCHER_UPSTREAM_REJECTED"
    assert data["upstream"] is None
    assert data["created_at"] is None
    assert data["completed_at"] is None
    assert data["cost_time_ms"] is None


def test_processing_body() -> None:
    outcome = EventOutcome(type=EventType.PROCESSING, upstream=UPSTREAM_PROCESSING)
    assert body_of(outcome)["data"] == {
        "task_id": "task_abc123",
        "model": "nano-banana",
        "state": "processing",
        "created_at": "2024-01-01T00:00:00.000Z",
        "metadata": {"order_id": 42},
        "upstream": UPSTREAM_PROCESSING,
    }


@pytest.mark.parametrize(
    ("event_type", "state"),
    [(EventType.TIMED_OUT, "timed_out"), (EventType.NOT_FOUND, "not_found")],
)
def test_timed_out_and_not_found_bodies(event_type: EventType, state: str) -> None:
    outcome = EventOutcome(
        type=event_type,
        upstream=UPSTREAM_PROCESSING,
        last_state="processing",
        watched_seconds=21600.123456,
    )
    assert body_of(outcome)["data"] == {
        "task_id": "task_abc123",
        "model": "nano-banana",
        "state": state,
        "last_state": "processing",
        "watched_seconds": 21600.123,
        "metadata": {"order_id": 42},
        "upstream": UPSTREAM_PROCESSING,
    }


def test_never_seen_task_not_found() -> None:
    # Watched seconds default to the time since registration when the caller gives none.
    data = body_of(EventOutcome(type=EventType.NOT_FOUND))["data"]
    assert data["last_state"] is None
    assert data["upstream"] is None
    assert data["watched_seconds"] == 100.25


def test_key_order_is_stable_and_compact() -> None:
    outcome = EventOutcome(type=EventType.PROCESSING, upstream=UPSTREAM_PROCESSING)
    event = build_event(outcome, make_task(), now=NOW)
    assert event.body.startswith(
        b'{"type":"task.processing","timestamp":"2026-01-01T00:00:12.500Z"'
    )
    assert b", " not in event.body
    assert b": " not in event.body
    assert list(json.loads(event.body)) == ["type", "timestamp", "data"]


def test_same_event_gives_identical_bytes() -> None:
    outcome = EventOutcome(
        type=EventType.SUCCEEDED,
        upstream=UPSTREAM_SUCCESS,
        result={"resultUrls": ["u"], "seed": 7},
        result_urls=("u",),
    )
    task = make_task(metadata={"b": 1, "a": [1, 2], "nested": {"z": None}})
    first = build_event(outcome, task, now=NOW)
    second = build_event(outcome, task, now=NOW)
    assert first.body == second.body
    assert first.event_id != second.event_id
    assert first.event_id.startswith("evt_")
    assert first.created_at == NOW
    assert first.type is EventType.SUCCEEDED
    assert first.task_id == "task_abc123"


def test_metadata_is_echoed_verbatim_in_utf8() -> None:
    metadata = {"order_id": 42, "customer": "Zoë", "tags": ["a", "b"], "extra": {"x": 1.5}}
    event = build_event(
        EventOutcome(type=EventType.TIMED_OUT), make_task(metadata=metadata), now=NOW
    )
    assert json.loads(event.body)["data"]["metadata"] == metadata
    assert "Zoë".encode() in event.body  # UTF-8, not \u escapes


def test_missing_metadata_is_an_empty_object() -> None:
    assert body_of(EventOutcome(type=EventType.TIMED_OUT), make_task())["data"]["metadata"] == {}


@pytest.mark.parametrize(
    ("upstream", "created_at", "cost_time_ms"),
    [
        ({"createTime": "1704067200000", "costTime": 12.5}, "2024-01-01T00:00:00.000Z", 12.5),
        ({"createTime": None, "costTime": "12500"}, None, None),
        ({"createTime": True, "costTime": True}, None, None),
        ({"createTime": -1, "costTime": 1.0}, None, 1),
        ({"createTime": 10**20}, None, None),
        ({}, None, None),
    ],
)
def test_odd_upstream_times_become_null(
    upstream: dict[str, Any], created_at: str | None, cost_time_ms: float | None
) -> None:
    data = body_of(EventOutcome(type=EventType.FAILED, upstream=upstream))["data"]
    assert data["created_at"] == created_at
    assert data["cost_time_ms"] == cost_time_ms
    assert data["upstream"] == upstream


@pytest.mark.parametrize(
    ("unix_s", "iso"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1767225612.5, "2026-01-01T00:00:12.500Z"),
        (1767225612.0004, "2026-01-01T00:00:12.000Z"),
        (1767225612.9996, "2026-01-01T00:00:13.000Z"),
        (1704067212.001, "2024-01-01T00:00:12.001Z"),
    ],
)
def test_iso_timestamp(unix_s: float, iso: str) -> None:
    assert iso_timestamp(unix_s) == iso


# -- plan_deliveries ------------------------------------------------------------------------------


def endpoint(name: str, events: Iterable[EventType] = DEFAULT_EVENTS) -> EndpointConfig:
    return EndpointConfig(
        name=name,
        url=f"http://127.0.0.1:9/{name}",
        secrets=(Secret(generate_secret()),),
        events=frozenset(events),
    )


def event_of(event_type: EventType) -> Event:
    return build_event(EventOutcome(type=event_type), make_task(), now=NOW)


ENDPOINTS = [
    endpoint("app"),
    endpoint("progress", set(EventType)),
    endpoint("failures", {EventType.FAILED}),
]


def test_every_subscribed_endpoint_by_default() -> None:
    event = event_of(EventType.SUCCEEDED)
    deliveries = plan_deliveries(event, make_task(), ENDPOINTS, callback_enabled=False, now=NOW)
    assert [d.endpoint for d in deliveries] == ["app", "progress"]
    for delivery in deliveries:
        assert delivery.delivery_id.startswith("dlv_")
        assert delivery.webhook_id.startswith("msg_")
        assert delivery.event_id == event.event_id
        assert delivery.task_id == event.task_id
        assert delivery.event_type is EventType.SUCCEEDED
        assert delivery.status is DeliveryStatus.PENDING
        assert delivery.next_attempt_at == NOW
        assert delivery.created_at == NOW
        assert delivery.attempts == 0
        assert delivery.schedule_pos == 0
        assert delivery.url is None
    assert len({d.webhook_id for d in deliveries}) == 2
    assert len({d.delivery_id for d in deliveries}) == 2


def test_processing_goes_only_to_subscribers() -> None:
    deliveries = plan_deliveries(
        event_of(EventType.PROCESSING), make_task(), ENDPOINTS, callback_enabled=True, now=NOW
    )
    assert [d.endpoint for d in deliveries] == ["progress"]


def test_task_endpoints_restrict_targets() -> None:
    task = make_task(endpoints=("failures", "progress", "failures"))
    failed = plan_deliveries(
        event_of(EventType.FAILED), task, ENDPOINTS, callback_enabled=False, now=NOW
    )
    assert [d.endpoint for d in failed] == ["failures", "progress"]
    succeeded = plan_deliveries(
        event_of(EventType.SUCCEEDED), task, ENDPOINTS, callback_enabled=False, now=NOW
    )
    assert [d.endpoint for d in succeeded] == ["progress"]


def test_named_endpoint_missing_from_config_is_kept_visible() -> None:
    task = make_task(endpoints=("removed",))
    deliveries = plan_deliveries(
        event_of(EventType.SUCCEEDED), task, ENDPOINTS, callback_enabled=False, now=NOW
    )
    assert [d.endpoint for d in deliveries] == ["removed"]
    assert not plan_deliveries(
        event_of(EventType.PROCESSING), task, ENDPOINTS, callback_enabled=False, now=NOW
    )


def test_first_delay() -> None:
    deliveries = plan_deliveries(
        event_of(EventType.SUCCEEDED),
        make_task(),
        ENDPOINTS,
        callback_enabled=False,
        now=NOW,
        first_delay_s=5.0,
    )
    assert {d.next_attempt_at for d in deliveries} == {NOW + 5.0}


def test_callback_url() -> None:
    task = make_task(endpoints=(), callback_url="https://hooks.example.com/cb?token=x")
    deliveries = plan_deliveries(
        event_of(EventType.TIMED_OUT), task, ENDPOINTS, callback_enabled=True, now=NOW
    )
    assert [(d.endpoint, d.url) for d in deliveries] == [
        (CALLBACK_ENDPOINT, "https://hooks.example.com/cb?token=x")
    ]
    assert not plan_deliveries(
        event_of(EventType.PROCESSING), task, ENDPOINTS, callback_enabled=True, now=NOW
    )
    assert not plan_deliveries(
        event_of(EventType.TIMED_OUT), task, ENDPOINTS, callback_enabled=False, now=NOW
    )


def test_callback_and_endpoints_together() -> None:
    task = make_task(callback_url="https://hooks.example.com/cb")
    deliveries = plan_deliveries(
        event_of(EventType.SUCCEEDED), task, ENDPOINTS, callback_enabled=True, now=NOW
    )
    assert [d.endpoint for d in deliveries] == ["app", "progress", CALLBACK_ENDPOINT]


def test_no_endpoints_no_deliveries() -> None:
    assert (
        plan_deliveries(
            event_of(EventType.SUCCEEDED), make_task(), [], callback_enabled=True, now=NOW
        )
        == ()
    )
