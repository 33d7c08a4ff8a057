"""The OpenAPI 3.0 description of the intake API, served at `GET /openapi.json`.

Kept by hand next to watcher/intake.py and watcher/views.py: tests validate it, check that every
registered route is described, and fuzz the live server against it, so it stays truthful.
"""

from __future__ import annotations

from typing import Any

from watcher import __version__
from watcher.models import EventType, MirrorStatus, PublicDeliveryStatus, TaskState
from watcher.tasks.spec import MAX_ID_LENGTH

_JSON = "application/json"
_TIMESTAMP = {"type": "string", "format": "date-time", "example": "2026-01-01T00:00:12.500Z"}
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _response(description: str, schema: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}, **extra}


def _error(description: str) -> dict[str, Any]:
    return _response(description, "Error")


_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_INTERNAL = {"$ref": "#/components/responses/Internal"}
_STORE_DOWN = {"$ref": "#/components/responses/StoreUnavailable"}


_FORBIDDEN = {"$ref": "#/components/responses/Forbidden"}
_UNSUPPORTED = {"$ref": "#/components/responses/UnsupportedMediaType"}


def _secured(
    responses: dict[str, Any], *, store: bool = True, body: bool = False
) -> dict[str, Any]:
    """The answers every token-protected route can also give; `body`: the method may carry
    a body (which must be JSON)."""
    out = {**responses, "401": _UNAUTHORIZED, "403": _FORBIDDEN, "500": _INTERNAL}
    if body:
        out["415"] = _UNSUPPORTED
    if store and "503" not in out:
        out["503"] = _STORE_DOWN
    return out


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


_LIMIT = {
    "name": "limit",
    "in": "query",
    "description": "Page size (default 100).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "description": "The `next_cursor` of the previous page.",
    "schema": {"type": "string"},
}
_DELIVERY_STATUS_TEXT = (
    "`pending`: waiting for its first attempt (of a round: a redeliver starts a new one); "
    "`retrying`: its last attempt failed and the next is due at `next_attempt_at` "
    "(`last_error` says why); `succeeded`; `failed`: given up (retry schedule used up, "
    "410 Gone, or its endpoint was removed), kept for redeliver."
)
_BAD_PARAMETER = _error("A query parameter is invalid (`invalid_parameter`, `field` names it).")


def _schemas() -> dict[str, Any]:
    task_states = [s.value for s in TaskState]
    return {
        "ErrorDetail": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code."},
                "message": {"type": "string", "description": "For people."},
                "field": _nullable(
                    {
                        "type": "string",
                        "description": "The request field at fault, when there is one "
                        "(null: the body as a whole).",
                    }
                ),
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ref("ErrorDetail")},
        },
        "FieldProblem": {
            "type": "object",
            "required": ["field", "code", "message"],
            "properties": {
                "field": _nullable({"type": "string"}),
                "code": {
                    "type": "string",
                    "example": "unknown_endpoint",
                    "description": "missing, invalid_type, invalid, unknown_field, "
                    "unknown_endpoint, callback_host_not_allowed or too_large.",
                },
                "message": {"type": "string"},
            },
        },
        "ValidationError": {
            "type": "object",
            "required": ["error", "problems"],
            "properties": {
                "error": _ref("ErrorDetail"),
                "problems": {"type": "array", "items": _ref("FieldProblem")},
            },
        },
        "ConfigProblem": {
            "type": "object",
            "required": ["path", "line", "message"],
            "properties": {
                "path": {"type": "string", "example": "endpoints[0].url"},
                "line": _nullable({"type": "integer"}),
                "message": {"type": "string"},
            },
        },
        "ConfigError": {
            "type": "object",
            "required": ["error", "problems"],
            "properties": {
                "error": _ref("ErrorDetail"),
                "problems": {"type": "array", "items": _ref("ConfigProblem")},
            },
        },
        "TaskRegistration": {
            "type": "object",
            "required": ["task_id", "model"],
            "additionalProperties": False,
            "properties": {
                "task_id": {
                    "type": "string",
                    "pattern": _ID_PATTERN,
                    "maxLength": MAX_ID_LENGTH,
                    "example": "task_abc123",
                },
                "model": {
                    "type": "string",
                    "pattern": _ID_PATTERN,
                    "maxLength": MAX_ID_LENGTH,
                    "example": "nano-banana",
                },
                "endpoints": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "Names of configured endpoints, at least one (omitted: "
                    "every endpoint subscribed to the event).",
                },
                "callback_url": {
                    "type": "string",
                    "format": "uri",
                    "description": "Ad-hoc http(s) target; its host must be in "
                    "`delivery.allowed_callback_hosts`.",
                },
                "metadata": {
                    "type": "object",
                    "description": "Echoed in every webhook; at most 4096 bytes as JSON.",
                },
                "deadline": {
                    "description": "Overrides the model's polling deadline: a duration "
                    "such as `30m` or a number of seconds.",
                    "oneOf": [
                        {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                        {"type": "string", "example": "30m"},
                    ],
                },
            },
        },
        "Task": {
            "type": "object",
            "required": [
                "task_id",
                "model",
                "state",
                "upstream_state",
                "endpoints",
                "callback_url",
                "metadata",
                "deadline_seconds",
                "source",
                "registered_at",
                "updated_at",
                "finished_at",
                "polls",
                "last_error",
            ],
            "properties": {
                "task_id": {"type": "string"},
                "model": {"type": "string"},
                "state": {"type": "string", "enum": task_states},
                "upstream_state": _nullable(
                    {"type": "string", "description": "The last upstream `data.state`."}
                ),
                "endpoints": _nullable({"type": "array", "items": {"type": "string"}}),
                "callback_url": _nullable({"type": "string"}),
                "metadata": {"type": "object"},
                "deadline_seconds": _nullable({"type": "number"}),
                "source": {"type": "string", "enum": ["api", "file"]},
                "registered_at": _TIMESTAMP,
                "updated_at": _TIMESTAMP,
                "finished_at": _nullable(_TIMESTAMP),
                "polls": {"type": "integer", "minimum": 0},
                "last_error": _nullable({"type": "string"}),
            },
        },
        "CancelledTask": {
            "allOf": [
                _ref("Task"),
                {
                    "type": "object",
                    "required": ["already_cancelled"],
                    "properties": {
                        "already_cancelled": {
                            "type": "boolean",
                            "description": "True when the task was cancelled before this "
                            "request (nothing changed).",
                        },
                    },
                },
            ]
        },
        "StateChange": {
            "type": "object",
            "required": ["from_state", "to_state", "at", "reason", "upstream_state"],
            "properties": {
                "from_state": {"type": "string", "enum": task_states},
                "to_state": {"type": "string", "enum": task_states},
                "at": _TIMESTAMP,
                "reason": {"type": "string"},
                "upstream_state": _nullable({"type": "string"}),
            },
        },
        "Event": {
            "type": "object",
            "required": ["id", "type", "created_at", "payload"],
            "properties": {
                "id": {"type": "string", "example": "evt_01HV..."},
                "type": {"type": "string", "enum": [t.value for t in EventType]},
                "created_at": _TIMESTAMP,
                "payload": {
                    "type": "object",
                    "nullable": True,
                    "description": "The webhook body exactly as sent.",
                },
            },
        },
        "Attempt": {
            "type": "object",
            "required": [
                "number",
                "started_at",
                "duration_ms",
                "outcome",
                "status_code",
                "error",
                "webhook_timestamp",
            ],
            "properties": {
                "number": {"type": "integer", "minimum": 1},
                "started_at": _TIMESTAMP,
                "duration_ms": {"type": "number"},
                "outcome": {"type": "string", "enum": ["succeeded", "retry", "failed"]},
                "status_code": _nullable({"type": "integer"}),
                "error": _nullable({"type": "string"}),
                "webhook_timestamp": _nullable({"type": "integer"}),
            },
        },
        "Delivery": {
            "type": "object",
            "required": [
                "delivery_id",
                "task_id",
                "event_id",
                "event_type",
                "endpoint",
                "url",
                "webhook_id",
                "status",
                "attempts",
                "next_attempt_at",
                "created_at",
                "updated_at",
                "last_status_code",
                "last_error",
            ],
            "properties": {
                "delivery_id": {"type": "string", "example": "dlv_01HV..."},
                "task_id": {"type": "string"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string", "enum": [t.value for t in EventType]},
                "endpoint": {
                    "type": "string",
                    "description": "Configured endpoint name, or `@callback` for the task's "
                    "callback_url.",
                },
                "url": _nullable(
                    {"type": "string", "description": "Only for `@callback` deliveries."}
                ),
                "webhook_id": {"type": "string", "example": "msg_01HV..."},
                "status": {
                    "type": "string",
                    "enum": [s.value for s in PublicDeliveryStatus],
                    "description": _DELIVERY_STATUS_TEXT,
                },
                "attempts": {"type": "integer", "minimum": 0, "description": "Attempts made."},
                "next_attempt_at": _nullable(
                    {
                        **_TIMESTAMP,
                        "description": "When the next attempt is due (`pending`, `retrying`).",
                    }
                ),
                "created_at": _TIMESTAMP,
                "updated_at": _TIMESTAMP,
                "last_status_code": _nullable({"type": "integer"}),
                "last_error": _nullable(
                    {
                        "type": "string",
                        "description": "Why the last attempt failed: `HTTP 500`, `timeout`, ...",
                        "example": "HTTP 500",
                    }
                ),
            },
        },
        "DeliveryDetail": {
            "allOf": [
                _ref("Delivery"),
                {
                    "type": "object",
                    "required": ["attempt_log"],
                    "properties": {
                        "attempt_log": {"type": "array", "items": _ref("Attempt")},
                    },
                },
            ]
        },
        "MirrorFile": {
            "type": "object",
            "required": [
                "source_url",
                "key",
                "status",
                "sha256",
                "bytes",
                "content_type",
                "error",
                "attempts",
                "updated_at",
            ],
            "properties": {
                "source_url": {"type": "string", "description": "The upstream's result URL."},
                "key": {"type": "string", "example": "task-123/0-image.png"},
                "status": {"type": "string", "enum": [s.value for s in MirrorStatus]},
                "sha256": _nullable({"type": "string", "description": "Hex, once done."}),
                "bytes": _nullable({"type": "integer"}),
                "content_type": _nullable({"type": "string"}),
                "error": _nullable({"type": "string", "description": "The last failure."}),
                "attempts": {"type": "integer"},
                "updated_at": _TIMESTAMP,
            },
        },
        "TaskDetail": {
            "allOf": [
                _ref("Task"),
                {
                    "type": "object",
                    "required": [
                        "next_poll_at",
                        "expected_completion",
                        "state_changes",
                        "events",
                        "deliveries",
                        "mirror",
                    ],
                    "properties": {
                        "next_poll_at": _nullable(_TIMESTAMP),
                        "expected_completion": _nullable(
                            {
                                "type": "object",
                                "description": "While watched: when the task will most likely "
                                "finish (8 in 10 tasks of its model that ran this long finished "
                                "between these), from the model's learned durations.",
                                "required": ["earliest", "latest"],
                                "properties": {"earliest": _TIMESTAMP, "latest": _TIMESTAMP},
                            }
                        ),
                        "state_changes": {"type": "array", "items": _ref("StateChange")},
                        "events": {"type": "array", "items": _ref("Event")},
                        "deliveries": {"type": "array", "items": _ref("DeliveryDetail")},
                        "mirror": {
                            "type": "array",
                            "items": _ref("MirrorFile"),
                            "description": "The copies of its result files (mirror.target), "
                            "in result_urls order; empty when mirroring is off. Its "
                            "task.succeeded webhook is sent once none is pending.",
                        },
                    },
                },
            ]
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks", "next_cursor"],
            "properties": {
                "tasks": {"type": "array", "items": _ref("Task")},
                "next_cursor": _nullable({"type": "string"}),
            },
        },
        "DeliveryList": {
            "type": "object",
            "required": ["deliveries", "next_cursor"],
            "properties": {
                "deliveries": {"type": "array", "items": _ref("Delivery")},
                "next_cursor": _nullable({"type": "string"}),
            },
        },
        "PingResult": {
            "type": "object",
            "required": [
                "endpoint",
                "event_type",
                "webhook_id",
                "sent_at",
                "signatures",
                "ok",
                "status_code",
                "duration_ms",
                "error",
                "answer",
                "answer_truncated",
            ],
            "properties": {
                "endpoint": {"type": "string", "example": "app"},
                "event_type": {"type": "string", "enum": ["webhook.test"]},
                "webhook_id": {"type": "string", "example": "msg_01HV..."},
                "sent_at": _TIMESTAMP,
                "signatures": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "How many of the endpoint's secrets signed it (0: not sent).",
                },
                "ok": {"type": "boolean", "description": "The endpoint answered 2xx."},
                "status_code": _nullable(
                    {"type": "integer", "description": "null: no answer (see `error`)."}
                ),
                "duration_ms": {"type": "number", "minimum": 0},
                "error": _nullable(
                    {
                        "type": "string",
                        "description": "Why it is not ok: `HTTP 500`, `timeout`, "
                        "`connection failed: ...`; null when ok.",
                    }
                ),
                "answer": {
                    "type": "string",
                    "description": "The start of the answer body (at most 512 bytes, as UTF-8 "
                    "text), with any secret the daemon knows redacted.",
                },
                "answer_truncated": {
                    "type": "boolean",
                    "description": "The answer was longer than what `answer` shows.",
                },
            },
        },
        "ModelStats": {
            "type": "object",
            "required": ["models"],
            "properties": {
                "models": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "model",
                            "samples",
                            "duration_p50_s",
                            "duration_p90_s",
                            "duration_p99_s",
                            "strategy",
                            "polls_per_task",
                            "detection_delay_mean_s",
                        ],
                        "properties": {
                            "model": {"type": "string"},
                            "samples": {
                                "type": "integer",
                                "minimum": 0,
                                "description": "Finished tasks learned from (the last "
                                "`polling.adaptive.window`).",
                            },
                            "duration_p50_s": _nullable({"type": "number"}),
                            "duration_p90_s": _nullable({"type": "number"}),
                            "duration_p99_s": _nullable({"type": "number"}),
                            "strategy": {
                                "type": "string",
                                "enum": ["fixed", "adaptive"],
                                "description": "The one in use now: `adaptive` only once the "
                                "model has `min_samples`.",
                            },
                            "polls_per_task": _nullable(
                                {
                                    "type": "number",
                                    "description": "Mean requests per task the strategy in "
                                    "use spends on the learned durations.",
                                }
                            ),
                            "detection_delay_mean_s": _nullable(
                                {
                                    "type": "number",
                                    "description": "Mean time from the upstream's "
                                    "completeTime to the poll that saw it (last 1,000).",
                                }
                            ),
                        },
                    },
                }
            },
        },
        "InstanceList": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {"type": "array", "items": _ref("Instance")},
            },
        },
        "Instance": {
            "type": "object",
            "required": [
                "instance_id",
                "self",
                "hostname",
                "pid",
                "version",
                "intake",
                "started_at",
                "heartbeat_at",
                "lease_until",
                "tasks",
                "deliveries",
            ],
            "properties": {
                "instance_id": {"type": "string"},
                "self": {"type": "boolean", "description": "The instance that answered."},
                "hostname": {"type": "string"},
                "pid": {"type": "integer"},
                "version": {"type": "string"},
                "intake": _nullable({"type": "string", "description": "Its `intake.listen`."}),
                "started_at": {"type": "string", "format": "date-time"},
                "heartbeat_at": {"type": "string", "format": "date-time"},
                "lease_until": {
                    "type": "string",
                    "format": "date-time",
                    "description": "Its claims are void after this unless renewed.",
                },
                "tasks": {"type": "integer", "description": "Active tasks it polls."},
                "deliveries": {"type": "integer", "description": "Pending deliveries it holds."},
            },
        },
        "HintAccepted": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["accepted"]}},
        },
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "ready", "reloaded"]},
            },
        },
        "DaemonStatus": {
            "type": "object",
            "required": [
                "version",
                "ready",
                "reasons",
                "polling",
                "delivery",
                "task_states",
                "delivery_statuses",
                "model_stats",
            ],
            "properties": {
                "version": {"type": "string"},
                "ready": {"type": "boolean", "description": "What /readyz says."},
                "reasons": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Why the daemon is not ready (the reasons of /readyz).",
                },
                "polling": {
                    "type": "object",
                    "required": [
                        "watched",
                        "in_flight",
                        "credentials_paused",
                        "pause_reason",
                        "rate_limited_until",
                    ],
                    "properties": {
                        "watched": {"type": "integer", "minimum": 0},
                        "in_flight": {"type": "integer", "minimum": 0},
                        "credentials_paused": {
                            "type": "boolean",
                            "description": "The upstream rejected the API key: all polling "
                            "is paused (every task is kept).",
                        },
                        "pause_reason": _nullable({"type": "string"}),
                        "rate_limited_until": _nullable(
                            {
                                **_TIMESTAMP,
                                "description": "The upstream asked for fewer requests (429): "
                                "no poll starts before this time.",
                            }
                        ),
                    },
                },
                "delivery": {
                    "type": "object",
                    "required": ["pending", "in_flight"],
                    "properties": {
                        "pending": {"type": "integer", "minimum": 0},
                        "in_flight": {"type": "integer", "minimum": 0},
                    },
                },
                "task_states": {"type": "array", "items": {"type": "string"}},
                "delivery_statuses": {"type": "array", "items": {"type": "string"}},
                "model_stats": {
                    "type": "boolean",
                    "description": "Whether this daemon serves `GET /v1/stats/models`.",
                },
                "cluster": _nullable(
                    {
                        "type": "object",
                        "description": "This instance among several on PostgreSQL (null on "
                        "SQLite).",
                        "required": [
                            "instance_id",
                            "instances",
                            "budget_share",
                            "lease_in_doubt",
                        ],
                        "properties": {
                            "instance_id": {"type": "string"},
                            "instances": {"type": "integer", "minimum": 1},
                            "budget_share": {
                                "type": "number",
                                "description": "The part of the upstream budget it uses.",
                            },
                            "lease_in_doubt": {"type": "boolean"},
                        },
                    }
                ),
            },
        },
        "Unhealthy": {
            "type": "object",
            "required": ["status", "reasons"],
            "properties": {
                "status": {"type": "string", "enum": ["unhealthy", "not_ready"]},
                "reasons": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _paths() -> dict[str, Any]:
    task_id = _path_param("task_id", "The upstream task id.")
    delivery_id = _path_param("delivery_id", "A delivery id (`dlv_...`).")
    not_found_task = _error("No such task (`task_not_found`).")
    not_found_delivery = _error("No such delivery (`delivery_not_found`).")
    open_security: list[Any] = []
    return {
        "/v1/tasks": {
            "post": {
                "operationId": "registerTask",
                "summary": "Register a task to watch (idempotent per task_id).",
                "description": "Answers only after the task is committed to disk.",
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("TaskRegistration")}},
                },
                "responses": _secured(
                    {
                        "201": _response(
                            "Registered.",
                            "Task",
                            headers={
                                "Location": {
                                    "description": "The task's URL.",
                                    "schema": {"type": "string"},
                                }
                            },
                        ),
                        "200": _response("Already known: the stored task, unchanged.", "Task"),
                        "400": _error("The body is not JSON (`invalid_json`)."),
                        "409": _error(
                            "The task_id is registered with another model (`task_conflict`)."
                        ),
                        "408": _error(
                            "The body did not arrive within `intake.body_timeout` "
                            "(`request_timeout`)."
                        ),
                        "413": _error("The body is over `intake.max_body_bytes`."),
                        "422": _response(
                            "The registration is invalid (`validation_failed`); `field` names "
                            "the first problem, `problems` lists them all.",
                            "ValidationError",
                        ),
                        "503": _error(
                            "The daemon is stopping (`draining`) or the store is unavailable "
                            "(`store_unavailable`); retry later."
                        ),
                    },
                    body=True,
                ),
            },
            "get": {
                "operationId": "listTasks",
                "summary": "Tasks, newest registration first.",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": [s.value for s in TaskState]},
                    },
                    _LIMIT,
                    _CURSOR,
                ],
                "responses": _secured(
                    {"200": _response("A page of tasks.", "TaskList"), "400": _BAD_PARAMETER}
                ),
            },
        },
        "/v1/tasks/{task_id}": {
            "parameters": [task_id],
            "get": {
                "operationId": "getTask",
                "summary": "One task with its state changes, events and delivery attempts.",
                "responses": _secured(
                    {"200": _response("The task.", "TaskDetail"), "404": not_found_task}
                ),
            },
            "delete": {
                "operationId": "cancelTask",
                "summary": "Stop watching a task; no webhook is sent.",
                "responses": _secured(
                    {
                        "200": _response(
                            "Cancelled: the task, now `cancelled` (also when it was cancelled "
                            "before; `already_cancelled` tells the two apart).",
                            "CancelledTask",
                        ),
                        "404": not_found_task,
                        "409": _error(
                            "The task has already finished on its own (`task_finished`)."
                        ),
                    },
                    body=True,
                ),
            },
        },
        "/v1/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "The delivery log, newest first.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "description": _DELIVERY_STATUS_TEXT,
                        "schema": {
                            "type": "string",
                            "enum": [s.value for s in PublicDeliveryStatus],
                        },
                    },
                    {"name": "task_id", "in": "query", "schema": {"type": "string"}},
                    _LIMIT,
                    _CURSOR,
                ],
                "responses": _secured(
                    {
                        "200": _response("A page of deliveries.", "DeliveryList"),
                        "400": _BAD_PARAMETER,
                    }
                ),
            },
        },
        "/v1/deliveries/{delivery_id}": {
            "parameters": [delivery_id],
            "get": {
                "operationId": "getDelivery",
                "summary": "One delivery with its attempts.",
                "responses": _secured(
                    {
                        "200": _response("The delivery.", "DeliveryDetail"),
                        "404": not_found_delivery,
                    }
                ),
            },
        },
        "/v1/deliveries/{delivery_id}/redeliver": {
            "parameters": [delivery_id],
            "post": {
                "operationId": "redeliver",
                "summary": "Send a delivery again: a new attempt now, the same webhook-id.",
                "responses": _secured(
                    {
                        "202": _response("Queued; the delivery, now `pending`.", "Delivery"),
                        "404": not_found_delivery,
                    },
                    body=True,
                ),
            },
        },
        "/v1/endpoints/{name}/ping": {
            "parameters": [_path_param("name", "A configured endpoint's name.")],
            "post": {
                "operationId": "pingEndpoint",
                "summary": "Send a signed `webhook.test` event to one endpoint and wait for "
                "its answer.",
                "description": "Signed exactly like real webhooks (the same headers, one "
                "signature per configured secret), sent once, at once: no retry, and nothing "
                "is stored (no event, no delivery, not in the delivery log or the webhook "
                "metrics). The answer is 200 whatever the endpoint answered: `ok` and "
                "`status_code` tell.",
                "responses": _secured(
                    {
                        "200": _response("What the test event met.", "PingResult"),
                        "404": _error(
                            "No configured endpoint has this name (`endpoint_not_found`)."
                        ),
                    },
                    store=False,
                    body=True,
                ),
            },
        },
        "/v1/reload": {
            "post": {
                "operationId": "reload",
                "summary": "Reload the config file, secrets, API key and tasks file.",
                "responses": _secured(
                    {
                        "200": _response('Applied (`{"status": "reloaded"}`).', "Status"),
                        "422": _response(
                            "The new config is invalid (`invalid_config`); the old one stays.",
                            "ConfigError",
                        ),
                    },
                    store=False,
                    body=True,
                ),
            },
        },
        "/v1/instances": {
            "get": {
                "operationId": "listInstances",
                "summary": "The live instances sharing the store (several on PostgreSQL; the "
                "daemon itself on SQLite), each with its last heartbeat, its lease and the work "
                "it holds.",
                "responses": _secured({"200": _response("The instances.", "InstanceList")}),
            }
        },
        "/v1/status": {
            "get": {
                "operationId": "status",
                "summary": "What the daemon is doing now: readiness, a credential pause, a "
                "rate-limit slow-down, live counters (read from memory; cheap to poll).",
                "responses": _secured(
                    {"200": _response("The status.", "DaemonStatus")}, store=False
                ),
            }
        },
        "/ui": {
            "get": {
                "operationId": "consoleRedirect",
                "summary": "Redirects to the operator console at /ui/.",
                "security": open_security,
                "responses": {
                    "308": {
                        "description": "To `ui/`.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "403": _FORBIDDEN,
                },
            }
        },
        "/ui/": {
            "get": {
                "operationId": "console",
                "summary": "The operator console (a web page; docs/console.md). Its static "
                "files need no token; the page asks for it and sends it as a bearer token.",
                "security": open_security,
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "Not modified (`If-None-Match`)."},
                    "403": _FORBIDDEN,
                },
            }
        },
        "/ui/{file}": {
            "parameters": [
                {
                    **_path_param("file", "The file's name."),
                    "schema": {"type": "string", "enum": ["app.js", "app.css"]},
                }
            ],
            "get": {
                "operationId": "consoleFile",
                "summary": "The console's script and style sheet.",
                "security": open_security,
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "304": {"description": "Not modified (`If-None-Match`)."},
                    "403": _FORBIDDEN,
                    "404": _error("No such file (`not_found`)."),
                },
            },
        },
        "/v1/hints/apixo": {
            "post": {
                "operationId": "hint",
                "summary": "A hint that a watched task may be done (the upstream's callback).",
                "description": "Point the upstream's `callback_url` here (through an HTTPS "
                "proxy). The body is never trusted: it only moves the named task's next poll "
                "to now (within the request budget), and that poll decides. Unknown task ids "
                "get the same answer. Needs `intake.hint_token` (404 without it).",
                "security": open_security,
                "parameters": [
                    {
                        "name": "token",
                        "in": "query",
                        "required": True,
                        "description": "`intake.hint_token`.",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["data"],
                                "properties": {
                                    "data": {
                                        "type": "object",
                                        "required": ["taskId"],
                                        "properties": {"taskId": {"type": "string"}},
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _response("Received.", "HintAccepted"),
                    "400": _error(
                        "Not a JSON object with a string `data.taskId` (`invalid_hint`)."
                    ),
                    "401": _error("Missing or wrong token (`unauthorized`); nothing is polled."),
                    "404": _error("Hints are not enabled: no `intake.hint_token` (`not_found`)."),
                    "413": _error("The body is over 64 KiB (`payload_too_large`)."),
                    "500": _INTERNAL,
                },
            }
        },
        "/v1/stats/models": {
            "get": {
                "operationId": "modelStats",
                "summary": "Per model: what was learned from finished tasks and the polling "
                "strategy in use.",
                "responses": _secured(
                    {"200": _response("One row per model.", "ModelStats")}, store=False
                ),
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process serves and its loops are alive.",
                "security": open_security,
                "responses": _health("alive"),
            }
        },
        "/livez": {
            "get": {
                "operationId": "livez",
                "summary": "Alias of /healthz.",
                "security": open_security,
                "responses": _health("alive"),
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the store is writable, the API key is not known bad and "
                "the daemon is not stopping.",
                "security": open_security,
                "responses": _health("ready"),
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format 0.0.4).",
                "responses": _secured(
                    {
                        "200": {
                            "description": "The metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                    store=False,
                ),
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": _secured(
                    {"200": {"description": "OpenAPI 3.0", "content": {_JSON: {"schema": {}}}}},
                    store=False,
                ),
            }
        },
    }


def _health(what: str) -> dict[str, Any]:
    return {
        "200": _response(f"{what.capitalize()}.", "Status"),
        "503": _response(f"Not {what}; `reasons` says why.", "Unhealthy"),
        "500": _INTERNAL,
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the intake API."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "apixo-watcher intake API",
            "version": __version__,
            "description": "Register APIXO generation tasks to watch, inspect them and their "
            "webhook deliveries, reload the daemon, and probe its health. Every error answer "
            'is `{"error": {"code", "message"}}`. Unknown routes answer 404 '
            "(`not_found`), a wrong method 405 (`method_not_allowed`).",
        },
        "servers": [{"url": "http://127.0.0.1:8787", "description": "The default listen"}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The `intake.token` of the config. Enforced when a token is "
                    "configured (required unless listening on loopback or a unix socket); "
                    "/healthz, /livez, /readyz and the console's static files (/ui/) never "
                    "need it.",
                }
            },
            "responses": {
                "Unauthorized": {
                    "description": "Missing or wrong bearer token (`unauthorized`).",
                    "headers": {
                        "WWW-Authenticate": {
                            "description": '`Bearer realm="apixo-watcher"`',
                            "schema": {"type": "string"},
                        }
                    },
                    "content": {_JSON: {"schema": _ref("Error")}},
                },
                "Forbidden": _error(
                    "The request's `Host` is not an address of this daemon "
                    "(`host_not_allowed`: add the name to `intake.allowed_hosts`), or its "
                    "`Origin` is another web origin (`origin_not_allowed`): web pages cannot "
                    "drive the API."
                ),
                "UnsupportedMediaType": _error(
                    "A request body that is not declared `application/json` "
                    "(`unsupported_media_type`)."
                ),
                "Internal": _error("An unexpected failure (`internal`); details are logged."),
                "StoreUnavailable": _error(
                    "The task store failed (`store_unavailable`); retry later."
                ),
            },
            "schemas": _schemas(),
        },
    }
