"""JSON shapes of tasks and deliveries, as the intake API answers and `--json` prints them.

Pure functions of the domain records. Timestamps are ISO 8601 UTC with milliseconds and `Z`
(the webhook bodies use the same form). Nothing here ever includes a secret: the records hold
none, and configured endpoints appear only by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from watcher import jsontext
from watcher.delivery.events import iso_timestamp
from watcher.models import (
    Attempt,
    Delivery,
    Event,
    MirrorFile,
    PublicDeliveryStatus,
    StateChange,
    Task,
)
from watcher.polling.learning import ModelStats

if TYPE_CHECKING:
    from watcher.delivery.ping import PingResult
    from watcher.service import TaskView
    from watcher.store.postgres_cluster import InstanceRecord

# An event body wraps upstream values (at most jsontext.MAX_DEPTH deep) in a few levels.
_BODY_MAX_DEPTH: Final = 4 * jsontext.MAX_DEPTH


def iso(ts: float | None) -> str | None:
    """Unix seconds as `2026-01-01T00:00:12.500Z`; None stays None."""
    return None if ts is None else iso_timestamp(ts)


def task_json(task: Task) -> dict[str, Any]:
    """A task's fields (the answer of `POST /v1/tasks` and each item of `GET /v1/tasks`)."""
    return {
        "task_id": task.task_id,
        "model": task.model,
        "state": task.state.value,
        "upstream_state": task.upstream_state,
        "endpoints": list(task.endpoints) if task.endpoints is not None else None,
        "callback_url": task.callback_url,
        "metadata": dict(task.metadata),
        "deadline_seconds": task.deadline_s,
        "source": task.source.value,
        "registered_at": iso(task.registered_at),
        "updated_at": iso(task.updated_at),
        "finished_at": iso(task.finished_at),
        "polls": task.polls,
        "last_error": task.last_error,
    }


def state_change_json(change: StateChange) -> dict[str, Any]:
    return {
        "from_state": change.from_state.value,
        "to_state": change.to_state.value,
        "at": iso(change.at),
        "reason": change.reason,
        "upstream_state": change.upstream_state,
    }


def event_json(event: Event) -> dict[str, Any]:
    """An event with its webhook body parsed as `payload` (exactly what receivers got)."""
    try:
        # Bodies are built by events.build_event; one stored by an older version may hold NaN,
        # which is read as null, so the answer stays strict JSON.
        payload: Any = jsontext.parse(event.body, max_depth=_BODY_MAX_DEPTH)
    except ValueError:  # never expected
        payload = None
    return {
        "id": event.event_id,
        "type": event.type.value,
        "created_at": iso(event.created_at),
        "payload": payload,
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": iso(attempt.started_at),
        "duration_ms": round(attempt.duration_ms, 3),
        "outcome": attempt.outcome.value,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "webhook_timestamp": attempt.webhook_timestamp,
    }


def delivery_json(delivery: Delivery, attempts: Sequence[Attempt] | None = None) -> dict[str, Any]:
    """A delivery; with `attempts`, also its attempt log as `attempt_log` (oldest first).

    `attempts` in the result is always the number of attempts made, so the field has one type
    in every answer. `url` is only set for deliveries to a task's ad-hoc callback_url. `status`
    is the public one: a pending delivery whose last attempt failed is `retrying`.
    """
    out: dict[str, Any] = {
        "delivery_id": delivery.delivery_id,
        "task_id": delivery.task_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type.value,
        "endpoint": delivery.endpoint,
        "url": delivery.url,
        "webhook_id": delivery.webhook_id,
        "status": PublicDeliveryStatus.of(delivery).value,
        "attempts": delivery.attempts,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "created_at": iso(delivery.created_at),
        "updated_at": iso(delivery.updated_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
    }
    if attempts is not None:
        out["attempt_log"] = [attempt_json(a) for a in attempts]
    return out


def model_stats_json(stats: Sequence[ModelStats]) -> dict[str, Any]:
    """`GET /v1/stats/models` (contract section 8)."""
    return {
        "models": [
            {
                "model": s.model,
                "samples": s.samples,
                "duration_p50_s": s.duration_p50_s,
                "duration_p90_s": s.duration_p90_s,
                "duration_p99_s": s.duration_p99_s,
                "strategy": s.strategy,
                "polls_per_task": s.polls_per_task,
                "detection_delay_mean_s": s.detection_delay_mean_s,
            }
            for s in stats
        ]
    }


def task_detail_json(view: TaskView) -> dict[str, Any]:
    """One task with everything about it (`GET /v1/tasks/{id}`, `show --json`)."""
    out = task_json(view.task)
    out["next_poll_at"] = iso(view.next_poll_at)
    window = view.expected_completion
    out["expected_completion"] = (
        {"earliest": iso(window[0]), "latest": iso(window[1])} if window is not None else None
    )
    out["state_changes"] = [state_change_json(c) for c in view.state_changes]
    out["events"] = [event_json(e) for e in view.events]
    out["deliveries"] = [delivery_json(d.delivery, d.attempts) for d in view.deliveries]
    out["mirror"] = [mirror_file_json(f) for f in view.mirror_files]
    return out


def mirror_file_json(file: MirrorFile) -> dict[str, Any]:
    """One result file's copy (contract section 9): done, pending or failed."""
    return {
        "source_url": file.source_url,
        "key": file.key,
        "status": file.status.value,
        "sha256": file.sha256,
        "bytes": file.bytes,
        "content_type": file.content_type,
        "error": file.error,
        "attempts": file.attempts,
        "updated_at": iso(file.updated_at),
    }


def ping_json(result: PingResult) -> dict[str, Any]:
    """What a `webhook.test` event met (`POST /v1/endpoints/{name}/ping`, `ping --json`)."""
    return {
        "endpoint": result.endpoint,
        "event_type": result.event_type,
        "webhook_id": result.webhook_id,
        "sent_at": iso(result.sent_at),
        "signatures": result.signatures,
        "ok": result.ok,
        "status_code": result.status_code,
        "duration_ms": result.duration_ms,
        "error": result.error,
        "answer": result.answer,
        "answer_truncated": result.answer_truncated,
    }


def instances_json(records: Sequence[InstanceRecord], me: str) -> dict[str, Any]:
    """The answer of `GET /v1/instances`: the live instances sharing the store, first started
    first, each with its last heartbeat, its lease and the work it holds."""
    return {
        "instances": [
            {
                "instance_id": r.instance_id,
                "self": r.instance_id == me,
                "hostname": r.hostname,
                "pid": r.pid,
                "version": r.version,
                "intake": r.intake,
                "started_at": iso(r.started_at),
                "heartbeat_at": iso(r.heartbeat_at),
                "lease_until": iso(r.lease_until),
                "tasks": r.tasks,
                "deliveries": r.deliveries,
            }
            for r in records
        ]
    }
