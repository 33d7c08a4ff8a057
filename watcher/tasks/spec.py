"""Validation of task registrations, shared by the intake API and the tasks file.

A registration is `{task_id, model, endpoints?, callback_url?, metadata?, deadline?}`. Every
problem is collected, each naming its field, so a caller can fix them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from watcher import jsontext
from watcher.config.durations import parse_duration
from watcher.errors import FieldProblem, InvalidTask
from watcher.models import TaskSpec

MAX_METADATA_BYTES = 4096
MAX_ID_LENGTH = 256
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_FIELDS = ("task_id", "model", "endpoints", "callback_url", "metadata", "deadline")


class ValidTask(NamedTuple):
    """A valid registration's fields, with its metadata's JSON text as the store keeps it
    (`watcher.store.base.metadata_json`: compact, non-ASCII kept). A tuple, not a `TaskSpec`:
    a tasks file validates 100,000 in a row and hands the store columns, not specs."""

    task_id: str
    model: str
    endpoints: tuple[str, ...] | None
    callback_url: str | None
    metadata: dict[str, Any]
    metadata_json: str
    deadline_s: float | None

    def spec(self) -> TaskSpec:
        return TaskSpec(
            task_id=self.task_id,
            model=self.model,
            endpoints=self.endpoints,
            callback_url=self.callback_url,
            metadata=self.metadata,
            deadline_s=self.deadline_s,
        )


def parse_task_spec(
    raw: object,
    *,
    endpoint_names: Sequence[str],
    allowed_callback_hosts: Sequence[str],
) -> TaskSpec:
    """Validate one registration; raise InvalidTask with every problem found."""
    return parse_task_entry(
        raw, endpoint_names=endpoint_names, allowed_callback_hosts=allowed_callback_hosts
    ).spec()


def parse_task_entry(
    raw: object,
    *,
    endpoint_names: Sequence[str],
    allowed_callback_hosts: Sequence[str],
) -> ValidTask:
    """`parse_task_spec`, answering the fields and the metadata's JSON text, which its size
    check writes anyway: a tasks file hands that text to the store rather than have it
    written again."""
    if not isinstance(raw, Mapping):
        raise InvalidTask([FieldProblem("", "must be an object", "invalid_type")])
    problems: list[FieldProblem] = []
    for key in raw:
        if key not in _FIELDS:
            problems.append(FieldProblem(str(key), "unknown field", "unknown_field"))

    task_id = _identifier(raw, "task_id", problems)
    model = _identifier(raw, "model", problems)
    endpoints = _endpoints(raw.get("endpoints"), endpoint_names, problems)
    callback_url = _callback_url(raw.get("callback_url"), allowed_callback_hosts, problems)
    metadata, metadata_text = _metadata(raw.get("metadata"), problems)
    deadline_s = _deadline(raw.get("deadline"), problems)

    if problems:
        raise InvalidTask(problems)
    assert task_id is not None
    assert model is not None
    return ValidTask(task_id, model, endpoints, callback_url, metadata, metadata_text, deadline_s)


def is_task_id(value: str) -> bool:
    """Whether a registration could have `value` as its task_id."""
    return len(value) <= MAX_ID_LENGTH and _ID.fullmatch(value) is not None


def _identifier(raw: Mapping[Any, Any], key: str, problems: list[FieldProblem]) -> str | None:
    value = raw.get(key)
    if value is None:
        problems.append(FieldProblem(key, "is required", "missing"))
        return None
    if not isinstance(value, str):
        problems.append(FieldProblem(key, "must be a string", "invalid_type"))
        return None
    if not is_task_id(value):
        problems.append(
            FieldProblem(
                key,
                f"must be 1-{MAX_ID_LENGTH} characters of letters, digits, '_', '.', ':' or '-'",
                "invalid",
            )
        )
        return None
    return value


def _endpoints(
    value: object, known: Sequence[str], problems: list[FieldProblem]
) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(
            FieldProblem("endpoints", "must be a list of endpoint names", "invalid_type")
        )
        return None
    if not value:
        problems.append(
            FieldProblem(
                "endpoints", "must name at least one endpoint (omit it for every endpoint)"
            )
        )
        return None
    unknown = [v for v in value if v not in known]
    if unknown:
        names = ", ".join(repr(v) for v in unknown)
        problems.append(FieldProblem("endpoints", f"unknown endpoint {names}", "unknown_endpoint"))
        return None
    return tuple(dict.fromkeys(value))


def _callback_url(
    value: object, allowed_hosts: Sequence[str], problems: list[FieldProblem]
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(FieldProblem("callback_url", "must be a string", "invalid_type"))
        return None
    target = _http_target(value)
    if target is None:
        problems.append(
            FieldProblem(
                "callback_url",
                "must be an http(s) URL with a host and, if any, a port from 1 to 65535",
                "invalid",
            )
        )
        return None
    host, port = target
    # The config writes an IPv6 host in brackets, as in a URL: `[::1]` or `[::1]:9000`.
    shown = f"[{host}]" if ":" in host else host
    allowed = {h.lower() for h in allowed_hosts}
    if shown not in allowed and (port is None or f"{shown}:{port}" not in allowed):
        problems.append(
            FieldProblem(
                "callback_url",
                f"host {shown!r} is not in delivery.allowed_callback_hosts",
                "callback_host_not_allowed",
            )
        )
        return None
    return value


def _http_target(url: str) -> tuple[str, int | None] | None:
    """The (lowercase host, port) of an http(s) URL; None when it has no usable host or port.

    urlsplit raises ValueError for some bad ports and IP literals and, depending on the Python
    version, accepts others (`+80`, non-ASCII digits), so the port text is checked here too.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    port_text = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port_text and not (port_text.isascii() and port_text.isdigit()):
        return None
    if port is not None and not 1 <= port <= 65535:
        return None
    return host.lower(), port


def _metadata(value: object, problems: list[FieldProblem]) -> tuple[dict[str, Any], str]:
    """The metadata and its compact JSON text ({} when it is absent or has a problem)."""
    if value is None:
        return {}, "{}"
    if not isinstance(value, dict):
        problems.append(FieldProblem("metadata", "must be a JSON object", "invalid_type"))
        return {}, "{}"
    if jsontext.depth(value) > jsontext.MAX_DEPTH:
        problems.append(
            FieldProblem(
                "metadata", f"is nested more than {jsontext.MAX_DEPTH} levels deep", "invalid"
            )
        )
        return {}, "{}"
    try:
        # allow_nan=False: YAML's .nan and .inf are no JSON, and would end up in webhooks.
        text = jsontext.dumps(value)
        size = len(text.encode())
    except (TypeError, ValueError):
        problems.append(FieldProblem("metadata", "must be JSON (no NaN or Infinity)", "invalid"))
        return {}, "{}"
    if size > MAX_METADATA_BYTES:
        problems.append(
            FieldProblem(
                "metadata",
                f"is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed",
                "too_large",
            )
        )
        return {}, "{}"
    return value, text


def _deadline(value: object, problems: list[FieldProblem]) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        problems.append(FieldProblem("deadline", str(exc), "invalid"))
        return None
    if seconds <= 0:
        problems.append(FieldProblem("deadline", "must be more than zero", "invalid"))
        return None
    return seconds
