"""The retry decision: given one attempt's HTTP result, what becomes of the delivery.

Pure and deterministic: no I/O, no clock reads, no randomness. The schedule is the configured
`delivery.retry_schedule_s`, the delay before attempt 1, 2, ... of a round; `schedule_pos`
counts the attempts already made in the round, so after attempt k the next one is due
`schedule[k]` seconds later, and when there is no `schedule[k]` the delivery has failed.

Why not tenacity: its retry loops live inside one coroutine and forget everything when the
process stops. A webhook schedule spans hours, must survive restarts and must not pin a sleeping
coroutine per delivery, so the due time is computed here, stored with the delivery, and the
dispatcher (watcher/delivery.py) keeps one heap of due times.

No jitter: the attempts of different deliveries are already spread by their events' times, and
the per-endpoint concurrency limit bounds any burst after an endpoint comes back.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

from watcher.models import AttemptOutcome, Delivery, DeliveryStatus

MAX_RETRY_AFTER_S: Final = 86_400.0  # a Retry-After asking for more than a day is clamped
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
GONE: Final = 410
_SECONDS: Final = re.compile(r"\d+(\.\d+)?")


@dataclass(frozen=True, slots=True)
class HttpResult:
    """The result of one attempt: a status code, or an error when no response came."""

    status_code: int | None = None
    error: str | None = None  # "timeout", "connection failed: ...", ...; None with a status
    retry_after: str | None = None  # the raw Retry-After header, if any

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        """A short description for logs and `last_error`: "HTTP 500", "timeout", ..."""
        if self.status_code is not None:
            return f"HTTP {self.status_code}"
        return self.error or "no response"


@dataclass(frozen=True, slots=True)
class Decision:
    """What one attempt leads to: its outcome, and the delivery record to store."""

    outcome: AttemptOutcome
    delivery: Delivery
    reason: str | None = None  # why a failed delivery stopped: "HTTP 410 Gone", "schedule used up"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP-date) as seconds from `now`, at least 0
    and at most MAX_RETRY_AFTER_S; None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    delay: float
    if _SECONDS.fullmatch(text):
        delay = float(text)  # the RFC says an integer; a fraction costs nothing to honour
    else:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # a "-0000" zone: UTC with unknown local time
            moment = moment.replace(tzinfo=UTC)
        delay = moment.timestamp() - now
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def decide(
    delivery: Delivery, result: HttpResult, schedule: tuple[float, ...], *, now: float
) -> Decision:
    """The outcome of one attempt of `delivery` and its updated record (attempt counted).

    2xx: succeeded. 410 Gone: failed at once. Anything else, a timeout or a connection error:
    retried `schedule[schedule_pos + 1]` seconds from `now` (for 429/503, never sooner than
    Retry-After asks, clamped to a day), or failed when the schedule is used up.
    """
    if result.ok:
        return Decision(
            AttemptOutcome.SUCCEEDED,
            _after_attempt(delivery, result, DeliveryStatus.SUCCEEDED, None, now=now),
        )
    position = delivery.schedule_pos + 1
    if result.status_code == GONE:
        reason = "HTTP 410 Gone: the endpoint asked to stop"
    elif position >= len(schedule):
        reason = "retry schedule used up"
    else:
        delay = max(0.0, schedule[position])
        if result.status_code in RETRY_AFTER_STATUSES:
            asked = parse_retry_after(result.retry_after, now=now)
            if asked is not None:
                delay = max(delay, asked)
        return Decision(
            AttemptOutcome.RETRY,
            _after_attempt(delivery, result, DeliveryStatus.PENDING, now + delay, now=now),
        )
    return Decision(
        AttemptOutcome.FAILED,
        _after_attempt(delivery, result, DeliveryStatus.FAILED, None, now=now),
        reason=reason,
    )


def give_up(delivery: Delivery, error: str, *, now: float) -> Decision:
    """The delivery fails without being sent (its endpoint is gone, its secret is unusable).

    Counted as an attempt so the delivery log shows why; redeliver once the config is fixed.
    """
    updated = dataclasses.replace(
        delivery,
        status=DeliveryStatus.FAILED,
        attempts=delivery.attempts + 1,
        schedule_pos=delivery.schedule_pos + 1,
        next_attempt_at=None,
        updated_at=now,
        last_status_code=None,
        last_error=error,
    )
    return Decision(AttemptOutcome.FAILED, updated, reason=error)


def _after_attempt(
    delivery: Delivery,
    result: HttpResult,
    status: DeliveryStatus,
    next_attempt_at: float | None,
    *,
    now: float,
) -> Delivery:
    return dataclasses.replace(
        delivery,
        status=status,
        attempts=delivery.attempts + 1,
        schedule_pos=delivery.schedule_pos + 1,
        next_attempt_at=next_attempt_at,
        updated_at=now,
        last_status_code=result.status_code,
        last_error=None if result.ok else result.describe(),
    )
