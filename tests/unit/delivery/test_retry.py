"""The retry decision, as a table: attempt result + schedule position -> outcome and due time."""

from __future__ import annotations

from dataclasses import replace
from email.utils import formatdate

import pytest

from watcher.delivery.retry import MAX_RETRY_AFTER_S, HttpResult, decide, give_up, parse_retry_after
from watcher.models import AttemptOutcome, Delivery, DeliveryStatus, EventType

NOW = 1_700_000_000.0
SCHEDULE = (0.0, 5.0, 300.0, 1800.0)


def pending(*, schedule_pos: int = 0, attempts: int | None = None) -> Delivery:
    return Delivery(
        delivery_id="dlv_1",
        event_id="evt_1",
        task_id="task_1",
        event_type=EventType.SUCCEEDED,
        endpoint="app",
        webhook_id="msg_1",
        status=DeliveryStatus.PENDING,
        created_at=NOW - 100,
        updated_at=NOW - 100,
        next_attempt_at=NOW,
        attempts=schedule_pos if attempts is None else attempts,
        schedule_pos=schedule_pos,
        last_error="HTTP 500" if schedule_pos else None,
    )


def http_date(at: float) -> str:
    return formatdate(at, usegmt=True)


# (case, schedule_pos before the attempt, result, outcome, next attempt due (None: not pending))
CASES = [
    ("200 ok", 0, HttpResult(200), AttemptOutcome.SUCCEEDED, None),
    ("204 ok", 2, HttpResult(204), AttemptOutcome.SUCCEEDED, None),
    ("299 ok", 0, HttpResult(299), AttemptOutcome.SUCCEEDED, None),
    ("410 stops at once", 0, HttpResult(410), AttemptOutcome.FAILED, None),
    ("500 -> slot 1", 0, HttpResult(500), AttemptOutcome.RETRY, NOW + 5),
    ("500 -> slot 2", 1, HttpResult(500), AttemptOutcome.RETRY, NOW + 300),
    ("500 -> last slot", 2, HttpResult(500), AttemptOutcome.RETRY, NOW + 1800),
    ("500, schedule used up", 3, HttpResult(500), AttemptOutcome.FAILED, None),
    ("404 retried", 0, HttpResult(404), AttemptOutcome.RETRY, NOW + 5),
    ("redirect is a failure", 0, HttpResult(302), AttemptOutcome.RETRY, NOW + 5),
    ("100 is not success", 0, HttpResult(100), AttemptOutcome.RETRY, NOW + 5),
    ("timeout", 0, HttpResult(error="timeout"), AttemptOutcome.RETRY, NOW + 5),
    ("connection error", 1, HttpResult(error="connection failed"), AttemptOutcome.RETRY, NOW + 300),
    ("timeout, used up", 3, HttpResult(error="timeout"), AttemptOutcome.FAILED, None),
    ("429 no Retry-After", 0, HttpResult(429), AttemptOutcome.RETRY, NOW + 5),
    ("429 Retry-After later", 0, HttpResult(429, retry_after="60"), AttemptOutcome.RETRY, NOW + 60),
    (
        "429 Retry-After sooner",
        1,
        HttpResult(429, retry_after="2"),
        AttemptOutcome.RETRY,
        NOW + 300,
    ),
    ("503 Retry-After", 0, HttpResult(503, retry_after=" 30 "), AttemptOutcome.RETRY, NOW + 30),
    (
        "503 Retry-After date",
        0,
        HttpResult(503, retry_after=http_date(NOW + 120)),
        AttemptOutcome.RETRY,
        NOW + 120,
    ),
    (
        "429 Retry-After past date",
        0,
        HttpResult(429, retry_after=http_date(NOW - 120)),
        AttemptOutcome.RETRY,
        NOW + 5,
    ),
    (
        "429 absurd Retry-After clamped",
        0,
        HttpResult(429, retry_after="999999999"),
        AttemptOutcome.RETRY,
        NOW + MAX_RETRY_AFTER_S,
    ),
    ("429 bad Retry-After", 0, HttpResult(429, retry_after="soon"), AttemptOutcome.RETRY, NOW + 5),
    (
        "500 ignores Retry-After",
        0,
        HttpResult(500, retry_after="60"),
        AttemptOutcome.RETRY,
        NOW + 5,
    ),
    ("429 used up", 3, HttpResult(429, retry_after="1"), AttemptOutcome.FAILED, None),
]


@pytest.mark.parametrize(
    ("schedule_pos", "result", "outcome", "due"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    schedule_pos: int, result: HttpResult, outcome: AttemptOutcome, due: float | None
) -> None:
    before = pending(schedule_pos=schedule_pos, attempts=schedule_pos + 4)
    decision = decide(before, result, SCHEDULE, now=NOW)
    after = decision.delivery
    assert decision.outcome is outcome
    if due is None:
        assert after.next_attempt_at is None
    else:
        assert after.next_attempt_at == pytest.approx(due)
    assert (
        after.status
        is {
            AttemptOutcome.SUCCEEDED: DeliveryStatus.SUCCEEDED,
            AttemptOutcome.RETRY: DeliveryStatus.PENDING,
            AttemptOutcome.FAILED: DeliveryStatus.FAILED,
        }[outcome]
    )
    assert after.attempts == before.attempts + 1
    assert after.schedule_pos == schedule_pos + 1
    assert after.updated_at == NOW
    assert after.last_status_code == result.status_code
    assert after.last_error == (None if result.ok else result.describe())
    # Everything that identifies the delivery is untouched.
    assert (
        replace(
            after,
            status=before.status,
            attempts=before.attempts,
            schedule_pos=before.schedule_pos,
            next_attempt_at=before.next_attempt_at,
            updated_at=before.updated_at,
            last_status_code=before.last_status_code,
            last_error=before.last_error,
        )
        == before
    )
    assert before.status is DeliveryStatus.PENDING  # the input is not mutated


def test_failed_decisions_say_why() -> None:
    gone = decide(pending(), HttpResult(410), SCHEDULE, now=NOW)
    assert gone.reason is not None
    assert "410" in gone.reason
    used_up = decide(pending(schedule_pos=3), HttpResult(500), SCHEDULE, now=NOW)
    assert used_up.reason == "retry schedule used up"
    assert used_up.delivery.last_error == "HTTP 500"


def test_single_slot_schedule_never_retries() -> None:
    decision = decide(pending(), HttpResult(error="timeout"), (0.0,), now=NOW)
    assert decision.outcome is AttemptOutcome.FAILED
    assert decision.delivery.last_error == "timeout"


def test_redelivered_round_starts_over() -> None:
    # After redeliver: schedule_pos 0 again while `attempts` keeps counting.
    decision = decide(pending(schedule_pos=0, attempts=8), HttpResult(500), SCHEDULE, now=NOW)
    assert decision.outcome is AttemptOutcome.RETRY
    assert decision.delivery.next_attempt_at == NOW + 5
    assert decision.delivery.attempts == 9


def test_give_up() -> None:
    decision = give_up(pending(), "endpoint 'app' is not configured", now=NOW)
    assert decision.outcome is AttemptOutcome.FAILED
    assert decision.delivery.status is DeliveryStatus.FAILED
    assert decision.delivery.last_error == "endpoint 'app' is not configured"
    assert decision.delivery.last_status_code is None
    assert decision.delivery.next_attempt_at is None
    assert decision.delivery.attempts == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        ("1.5", 1.5),
        ("-5", None),
        ("abc", None),
        (http_date(NOW + 90), 90.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: no extra wait
        ("86401", MAX_RETRY_AFTER_S),
        (http_date(NOW + 10 * 86_400), MAX_RETRY_AFTER_S),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds
