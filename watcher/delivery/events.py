"""Webhook events: the exact JSON body of each event, and the deliveries an event fans out to.

Pure functions, no I/O, no clock reads (`now` is passed in). The body is built once, stored with
the event and sent byte for byte on every attempt of every delivery, so a signature can always
be recomputed and a receiver sees the same payload on each retry. docs/webhooks.md lists the
fields of each event type; keep the two in step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from watcher import jsontext
from watcher.ids import new_id
from watcher.models import (
    CALLBACK_ENDPOINT,
    DEFAULT_EVENTS,
    Delivery,
    DeliveryStatus,
    Event,
    EventOutcome,
    EventType,
    Task,
)

if TYPE_CHECKING:
    from watcher.config.settings import EndpointConfig

# `data.state` in the body speaks the upstream's words ("success", not "succeeded").
BODY_STATE: Mapping[EventType, str] = {
    EventType.PROCESSING: "processing",
    EventType.SUCCEEDED: "success",
    EventType.FAILED: "failed",
    EventType.TIMED_OUT: "timed_out",
    EventType.NOT_FOUND: "not_found",
}

# Largest Unix millisecond value a 4-digit-year ISO timestamp can express (9999-12-31).
_MAX_UNIX_MS = 253_402_300_799_999


def iso_timestamp(unix_s: float) -> str:
    """Unix seconds as ISO 8601 UTC with milliseconds: `2026-01-01T00:00:12.500Z`."""
    return _iso_from_ms(round(unix_s * 1000))


def _iso_from_ms(unix_ms: int) -> str:
    seconds, ms = divmod(unix_ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z"


def _number(value: Any) -> float | int | None:
    """A finite JSON number from an upstream field, or None (bools and strings are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    return value


def _iso_from_upstream_ms(value: Any) -> str | None:
    """An upstream Unix-millisecond field (`createTime`, `completeTime`) as ISO, or None."""
    number = _number(value)
    if number is None and isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 0 <= number <= _MAX_UNIX_MS:
        return None
    return _iso_from_ms(round(number))


def _event_data(outcome: EventOutcome, task: Task, *, now: float) -> dict[str, Any]:
    upstream = dict(outcome.upstream) if outcome.upstream is not None else None
    up: Mapping[str, Any] = upstream or {}
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "model": task.model,
        "state": BODY_STATE[outcome.type],
    }
    created_at = _iso_from_upstream_ms(up.get("createTime"))
    completed_at = _iso_from_upstream_ms(up.get("completeTime"))
    cost_time_ms = _number(up.get("costTime"))
    if outcome.type is EventType.SUCCEEDED:
        data["result_urls"] = list(outcome.result_urls)
        data["result"] = dict(outcome.result) if outcome.result is not None else None
        data["cost_time_ms"] = cost_time_ms
        data["created_at"] = created_at
        data["completed_at"] = completed_at
    elif outcome.type is EventType.FAILED:
        data["fail_code"] = outcome.fail_code
        data["fail_msg"] = outcome.fail_msg
        data["cost_time_ms"] = cost_time_ms
        data["created_at"] = created_at
        data["completed_at"] = completed_at
    elif outcome.type is EventType.PROCESSING:
        data["created_at"] = created_at
    else:  # timed_out, not_found
        watched = outcome.watched_seconds
        if watched is None:
            watched = now - task.registered_at
        data["last_state"] = outcome.last_state
        data["watched_seconds"] = round(max(0.0, watched), 3)
    data["metadata"] = dict(task.metadata)
    data["upstream"] = upstream
    return data


def build_event(outcome: EventOutcome, task: Task, *, now: float) -> Event:
    """The event for `outcome`, with its final JSON body (compact, UTF-8, fixed key order,
    strict RFC 8259: no NaN or Infinity)."""
    body = {
        "type": str(outcome.type),
        "timestamp": iso_timestamp(now),
        "data": _event_data(outcome, task, now=now),
    }
    try:
        text = jsontext.dumps(body)
    except ValueError:
        # Upstream values come through jsontext.parse, so only a record stored before values
        # were checked (metadata holding NaN) can get here: it is sent as null, never as NaN.
        text = jsontext.dumps(jsontext.finite(body))
    encoded = text.encode("utf-8")
    return Event(
        event_id=new_id("evt_", now=now),
        task_id=task.task_id,
        type=outcome.type,
        created_at=now,
        body=encoded,
    )


def with_mirror(held: Event, extra: Mapping[str, Any], *, now: float) -> Event:
    """The final form of a `task.succeeded` event held for its mirror: the same event id and
    `timestamp` (when the task succeeded), `extra` (`mirrored`, maybe `mirror_error`) added to
    its `data`, created `now` (when it is released)."""
    body = jsontext.parse(held.body)
    body["data"].update(extra)
    return Event(
        event_id=held.event_id,
        task_id=held.task_id,
        type=held.type,
        created_at=now,
        body=jsontext.dumps(body).encode("utf-8"),
    )


TEST_EVENT_TYPE = "webhook.test"


def build_test_body(endpoint: str, *, now: float) -> bytes:
    """The body of a `webhook.test` event (`apixo-watcher ping`): the envelope of every
    event, with `data` naming the endpoint; encoded like real events."""
    body = {
        "type": TEST_EVENT_TYPE,
        "timestamp": iso_timestamp(now),
        "data": {
            "endpoint": endpoint,
            "message": "a test event sent by `apixo-watcher ping`; it is about no task",
        },
    }
    return jsontext.dumps(body).encode("utf-8")


def plan_deliveries(
    event: Event,
    task: Task,
    endpoints: Sequence[EndpointConfig],
    *,
    callback_enabled: bool,
    now: float,
    first_delay_s: float = 0.0,
) -> tuple[Delivery, ...]:
    """The deliveries `event` fans out to, each PENDING and due at `now + first_delay_s`.

    Pass `first_delay_s=delivery.retry_schedule_s[0]` (the delay before attempt 1): the due time
    is decided here, once, and stored, so a restart does not shift it.

    Targets are the task's own `endpoints` (by name) if it names any, else every configured
    endpoint; of those, only endpoints subscribed to the event type. A named endpoint that is no
    longer configured still gets a delivery for the default terminal event types, so the failure
    ("endpoint 'x' is not configured") is visible in the delivery log and can be redelivered once
    the endpoint is back, rather than the event silently going nowhere. The ad-hoc `callback_url`
    gets the default terminal event types only (not task.processing), and only when
    `callback_enabled` (a callback secret is configured).
    """
    by_name = {endpoint.name: endpoint for endpoint in endpoints}
    names = (
        list(dict.fromkeys(task.endpoints))
        if task.endpoints is not None
        else [endpoint.name for endpoint in endpoints]
    )
    due = now + max(0.0, first_delay_s)
    deliveries: list[Delivery] = []
    for name in names:
        configured = by_name.get(name)
        subscribed = configured.events if configured is not None else DEFAULT_EVENTS
        if event.type in subscribed:
            deliveries.append(_delivery(event, name, due=due, now=now))
    if task.callback_url and callback_enabled and event.type in DEFAULT_EVENTS:
        deliveries.append(
            _delivery(event, CALLBACK_ENDPOINT, due=due, now=now, url=task.callback_url)
        )
    return tuple(deliveries)


def _delivery(
    event: Event, endpoint: str, *, due: float, now: float, url: str | None = None
) -> Delivery:
    return Delivery(
        delivery_id=new_id("dlv_", now=now),
        event_id=event.event_id,
        task_id=event.task_id,
        event_type=event.type,
        endpoint=endpoint,
        webhook_id=new_id("msg_", now=now),
        status=DeliveryStatus.PENDING,
        created_at=now,
        updated_at=now,
        next_attempt_at=due,
        url=url,
    )
