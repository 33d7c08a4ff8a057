"""Classifying one answer of the upstream status API (pure: no clock read, no I/O).

`classify` turns one HTTP answer into a `PollResult` following upstream/FACTS.md.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from watcher import jsontext

_DETAIL_MAX = 200
REDACTED = "**********"


class PollOutcome(enum.StrEnum):
    """What one status request amounted to, as far as polling is concerned."""

    OK = "ok"  # 2xx with an envelope holding a `data` object
    NOT_FOUND = "not_found"  # 404
    BAD_REQUEST = "bad_request"  # 400: permanent for this task
    CREDENTIALS = "credentials"  # 401/402/403: a problem of the account, for every task
    RATE_LIMITED = "rate_limited"  # 429
    TRANSIENT = "transient"  # 5xx, other codes, timeouts, connection errors, malformed answers
    TOO_LARGE = "too_large"  # 2xx whose body exceeds upstream.max_response_bytes: unread


# Not frozen, though nothing changes one once built: a frozen dataclass's __init__ sets each
# field through object.__setattr__, five times the cost of a plain one (1.9 against 0.4 us for
# this one), and one is built per poll.
@dataclass(slots=True)
class PollResult:
    """One status request's answer, classified. Treated as immutable."""

    outcome: PollOutcome
    http_status: int | None  # None when no HTTP answer arrived (timeout, connection error)
    code: int | None  # the envelope's `code`, when there was one
    data: Mapping[str, Any] | None  # the envelope's `data` object verbatim (OK only)
    retry_after_s: float | None  # from a Retry-After header, in seconds from now
    detail: str  # short human text, e.g. "HTTP 503: model temporarily unavailable"
    duration_s: float = 0.0


def _status_outcome(status: int) -> PollOutcome:
    if 200 <= status < 300:
        return PollOutcome.OK
    if status == 400:
        return PollOutcome.BAD_REQUEST
    if status in (401, 402, 403):
        return PollOutcome.CREDENTIALS
    if status == 404:
        return PollOutcome.NOT_FOUND
    if status == 429:
        return PollOutcome.RATE_LIMITED
    return PollOutcome.TRANSIENT


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    A date in the past means "now" (0.0); an unparsable or negative value is ignored (None).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 9110 dates are GMT anyway
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def shorten(text: str, secrets: Sequence[str] = ()) -> str:
    """One line of at most 200 characters, for a result's detail, with every one of `secrets`
    replaced first: cut first, a secret across the cut would keep its first characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def classify(
    http_status: int,
    body: bytes,
    retry_after: str | None,
    *,
    now: float,
    secrets: Sequence[str] = (),
    duration_s: float = 0.0,
) -> PollResult:
    """Classify one HTTP answer of the status endpoint.

    The envelope's `code` counts like an HTTP status (FACTS.md): on a 2xx answer a body code
    other than 200 decides the outcome; on a non-2xx answer the body code decides only when it
    is itself an error code (400-599), because it is the upstream application's own, more
    specific word (e.g. HTTP 400 with code 402 is an account problem, not a bad task);
    otherwise the HTTP status decides. A 2xx answer that is not a JSON envelope with a `data`
    object is TRANSIENT (an upstream defect; asking again may work). The body is untrusted
    (`jsontext.parse`): NaN, Infinity and out-of-range numbers in it become null, and one that
    nests too deeply counts as no JSON at all. `now` (Unix seconds) is only used to turn a
    Retry-After date into seconds. `secrets` (the API key) are replaced wherever the answer
    echoes them, before anything reads it. `duration_s` (how long the request took) is carried
    into the result as it is.
    """
    for secret in secrets:
        if secret and secret.encode() in body:
            body = body.replace(secret.encode(), REDACTED.encode())
    envelope: Any = None
    try:
        envelope = jsontext.parse(body) if body else None
    except ValueError:  # not JSON, not UTF-8, or nested too deeply
        envelope = None
    body_code: int | None = None
    message: str | None = None
    if isinstance(envelope, dict):
        raw_code = envelope.get("code")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            body_code = raw_code
        raw_message = envelope.get("message")
        if isinstance(raw_message, str) and raw_message.strip():
            message = raw_message

    http_ok = 200 <= http_status < 300
    effective = http_status
    if body_code is not None and body_code != 200 and (http_ok or 400 <= body_code < 600):
        effective = body_code
    outcome = _status_outcome(effective)
    retry_after_s = None if retry_after is None else parse_retry_after(retry_after, now=now)

    data: Mapping[str, Any] | None = None
    if outcome is PollOutcome.OK:
        problem = None
        if not isinstance(envelope, dict):
            problem = "empty body" if not body else "body is not a JSON object"
        elif not isinstance(envelope.get("data"), dict):
            problem = "no data object"
        if problem is not None:
            detail = shorten(
                f"{_head(http_status, body_code)}: malformed answer ({problem})", secrets
            )
            return PollResult(
                PollOutcome.TRANSIENT,
                http_status,
                body_code,
                None,
                retry_after_s,
                detail,
                duration_s,
            )
        data = envelope["data"]
    return PollResult(
        outcome,
        http_status,
        body_code,
        data,
        retry_after_s,
        _detail(http_status, body_code, message, secrets),
        duration_s,
    )


def _head(http_status: int, body_code: int | None) -> str:
    if body_code is not None and body_code != http_status:
        return f"HTTP {http_status}, code {body_code}"
    return f"HTTP {http_status}"


# Details already built: (http status, body code, message, secrets) -> detail. An upstream
# answers the same few (status, code, message) combinations over and over ("HTTP 200:
# success" on every poll), and building one (formatting, scrubbing, whitespace) was a few per
# cent of a poll's CPU. Bounded: cleared when full, long messages are not kept.
_DETAILS: dict[tuple[int, int | None, str | None, tuple[str, ...]], str] = {}
_DETAILS_MAX = 256
_CACHED_MESSAGE_MAX = 256


def _detail(
    http_status: int, body_code: int | None, message: str | None, secrets: Sequence[str]
) -> str:
    """The detail of an answer that is not malformed, `shorten`ed: "HTTP <status>", with
    ", code <code>" when the body's code differs, and ": <message>" when there is one."""
    key = (http_status, body_code, message, tuple(secrets))
    detail = _DETAILS.get(key)
    if detail is None:
        head = _head(http_status, body_code)
        detail = shorten(f"{head}: {message}" if message else head, secrets)
        if message is None or len(message) <= _CACHED_MESSAGE_MAX:
            if len(_DETAILS) >= _DETAILS_MAX:
                _DETAILS.clear()
            _DETAILS[key] = detail
    return detail
