"""JSON views of tasks and deliveries: what the API answers and `--json` prints."""

from __future__ import annotations

import json

from watcher.api.views import delivery_json, iso, task_detail_json, task_json
from watcher.models import (
    CALLBACK_ENDPOINT,
    Attempt,
    AttemptOutcome,
    Delivery,
    DeliveryStatus,
    Event,
    EventType,
    StateChange,
    Task,
    TaskSource,
    TaskState,
)
from watcher.service import DeliveryView, TaskView

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def make_task(**overrides: object) -> Task:
    fields: dict[str, object] = {
        "task_id": "task_abc123",
        "model": "nano-banana",
        "endpoints": ("app",),
        "callback_url": None,
        "metadata": {"order_id": 42},
        "deadline_s": 1800.0,
        "source": TaskSource.API,
        "state": TaskState.SUCCEEDED,
        "registered_at": T0,
        "updated_at": T0 + 12.5,
        "upstream_state": "success",
        "polls": 4,
        "finished_at": T0 + 12.5,
        "last_error": None,
    }
    fields.update(overrides)
    return Task(**fields)  # type: ignore[arg-type]


def make_delivery(**overrides: object) -> Delivery:
    fields: dict[str, object] = {
        "delivery_id": "dlv_1",
        "event_id": "evt_1",
        "task_id": "task_abc123",
        "event_type": EventType.SUCCEEDED,
        "endpoint": "app",
        "webhook_id": "msg_1",
        "status": DeliveryStatus.PENDING,
        "created_at": T0 + 12.5,
        "updated_at": T0 + 13,
        "next_attempt_at": T0 + 18,
        "attempts": 1,
        "schedule_pos": 1,
        "last_status_code": 500,
        "last_error": "HTTP 500",
    }
    fields.update(overrides)
    return Delivery(**fields)  # type: ignore[arg-type]


def test_iso_is_utc_with_milliseconds_and_z() -> None:
    assert iso(T0) == "2026-01-01T00:00:00.000Z"
    assert iso(T0 + 12.5) == "2026-01-01T00:00:12.500Z"
    assert iso(T0 + 0.0004) == "2026-01-01T00:00:00.000Z"
    assert iso(None) is None


def test_task_json_has_every_field_with_iso_times() -> None:
    assert task_json(make_task()) == {
        "task_id": "task_abc123",
        "model": "nano-banana",
        "state": "succeeded",
        "upstream_state": "success",
        "endpoints": ["app"],
        "callback_url": None,
        "metadata": {"order_id": 42},
        "deadline_seconds": 1800.0,
        "source": "api",
        "registered_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:12.500Z",
        "finished_at": "2026-01-01T00:00:12.500Z",
        "polls": 4,
        "last_error": None,
    }


def test_task_json_of_an_active_task_with_default_endpoints() -> None:
    out = task_json(
        make_task(
            endpoints=None,
            state=TaskState.PENDING,
            finished_at=None,
            upstream_state=None,
            deadline_s=None,
            source=TaskSource.FILE,
        )
    )
    assert out["endpoints"] is None
    assert out["finished_at"] is None
    assert out["deadline_seconds"] is None
    assert out["source"] == "file"
    json.dumps(out)  # serialisable as is


def test_delivery_json_counts_attempts_and_adds_the_log_only_when_given() -> None:
    delivery = make_delivery()
    out = delivery_json(delivery)
    assert out == {
        "delivery_id": "dlv_1",
        "task_id": "task_abc123",
        "event_id": "evt_1",
        "event_type": "task.succeeded",
        "endpoint": "app",
        "url": None,
        "webhook_id": "msg_1",
        "status": "retrying",
        "attempts": 1,
        "next_attempt_at": "2026-01-01T00:00:18.000Z",
        "created_at": "2026-01-01T00:00:12.500Z",
        "updated_at": "2026-01-01T00:00:13.000Z",
        "last_status_code": 500,
        "last_error": "HTTP 500",
    }
    attempt = Attempt(
        delivery_id="dlv_1",
        number=1,
        started_at=T0 + 12.5,
        duration_ms=12.3456,
        outcome=AttemptOutcome.RETRY,
        status_code=500,
        error="HTTP 500",
        webhook_timestamp=int(T0 + 12),
    )
    detailed = delivery_json(delivery, [attempt])
    assert detailed["attempts"] == 1
    assert detailed["attempt_log"] == [
        {
            "number": 1,
            "started_at": "2026-01-01T00:00:12.500Z",
            "duration_ms": 12.346,
            "outcome": "retry",
            "status_code": 500,
            "error": "HTTP 500",
            "webhook_timestamp": int(T0 + 12),
        }
    ]


def test_delivery_status_tells_retrying_from_pending_and_keeps_failed_for_given_up() -> None:
    def shown(**overrides: object) -> str:
        return str(delivery_json(make_delivery(**overrides))["status"])

    # The last attempt of this round failed and another is scheduled: retrying.
    assert shown() == "retrying"
    # Waiting for the first attempt of a round (new, or redelivered): pending.
    assert shown(attempts=0, schedule_pos=0, last_error=None, last_status_code=None) == "pending"
    assert shown(attempts=3, schedule_pos=0) == "pending"
    # `failed` keeps meaning given up (schedule used up, 410, endpoint removed).
    assert shown(status=DeliveryStatus.FAILED, next_attempt_at=None) == "failed"
    assert shown(status=DeliveryStatus.SUCCEEDED, next_attempt_at=None) == "succeeded"


def test_callback_delivery_shows_its_url() -> None:
    out = delivery_json(
        make_delivery(endpoint=CALLBACK_ENDPOINT, url="https://hooks.example.com/x")
    )
    assert out["endpoint"] == "@callback"
    assert out["url"] == "https://hooks.example.com/x"


def test_task_detail_has_state_changes_events_with_parsed_payload_and_deliveries() -> None:
    body = {"type": "task.succeeded", "data": {"task_id": "task_abc123", "metadata": {}}}
    event = Event(
        event_id="evt_1",
        task_id="task_abc123",
        type=EventType.SUCCEEDED,
        created_at=T0 + 12.5,
        body=json.dumps(body).encode(),
    )
    change = StateChange(
        task_id="task_abc123",
        from_state=TaskState.PENDING,
        to_state=TaskState.SUCCEEDED,
        at=T0 + 12.5,
        reason="upstream state success",
        upstream_state="success",
    )
    view = TaskView(
        task=make_task(),
        next_poll_at=None,
        state_changes=[change],
        events=[event],
        deliveries=[DeliveryView(make_delivery(), [])],
    )
    out = task_detail_json(view)
    assert out["task_id"] == "task_abc123"
    assert out["next_poll_at"] is None
    assert out["state_changes"] == [
        {
            "from_state": "pending",
            "to_state": "succeeded",
            "at": "2026-01-01T00:00:12.500Z",
            "reason": "upstream state success",
            "upstream_state": "success",
        }
    ]
    assert out["events"] == [
        {
            "id": "evt_1",
            "type": "task.succeeded",
            "created_at": "2026-01-01T00:00:12.500Z",
            "payload": body,
        }
    ]
    assert out["deliveries"][0]["delivery_id"] == "dlv_1"
    assert out["deliveries"][0]["attempt_log"] == []
    json.dumps(out)
