"""decide(), deadline_decision() and watch_for(): the polling rules, as a table."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from watcher.config.settings import PollingPolicy
from watcher.models import EventType, Task, TaskSource, TaskState
from watcher.polling.decide import (
    BAD_RESULT_CODE,
    REJECTED_CODE,
    TOO_LARGE_CODE,
    Decision,
    Watch,
    apply,
    deadline_decision,
    decide,
    watch_for,
)
from watcher.upstream.classify import PollOutcome, PollResult

T0 = 1_700_000_000.0
NOW = T0 + 10.0
POLICY = PollingPolicy(
    initial_delay_s=0.0,
    initial_interval_s=2.0,
    max_interval_s=30.0,
    backoff=1.5,
    jitter=0.1,
    deadline_s=3600.0,
    not_found_grace_s=120.0,
)
URLS = ["https://cdn.apixo.ai/output/a.jpg", "https://cdn.apixo.ai/output/b.jpg"]


def make_watch(**changes: Any) -> Watch:
    watch = Watch(
        task_id="task_1",
        model="nano-banana",
        registered_at=T0,
        deadline_at=T0 + 3600.0,
        deadline_override_s=None,
        state=TaskState.PENDING,
        upstream_state="pending",
        interval_s=2.0,
        next_poll_at=None,
        polls=3,
        answered=True,
    )
    for key, value in changes.items():
        setattr(watch, key, value)
    return watch


def ok(**data: Any) -> PollResult:
    return PollResult(PollOutcome.OK, 200, 200, {"taskId": "task_1", **data}, None, "HTTP 200")


def answer(
    outcome: PollOutcome, http: int | None, detail: str, retry_after: float | None = None
) -> PollResult:
    return PollResult(outcome, http, http, None, retry_after, detail)


def success_data(result_json: Any) -> PollResult:
    return ok(state="success", resultJson=result_json, costTime=12500)


GOOD = json.dumps({"resultUrls": URLS, "seed": 7})
NOT_FOUND = answer(PollOutcome.NOT_FOUND, 404, "HTTP 404: Task not found")
TRANSIENT_500 = answer(PollOutcome.TRANSIENT, 500, "HTTP 500: boom")
TOO_LARGE = answer(
    PollOutcome.TOO_LARGE, 200, "HTTP 200: answer larger than upstream.max_response_bytes (16MiB)"
)


# Each case: id, watch changes, result, seconds after NOW, rand, expected Decision fields.
# Expected keys: next (offset from the answer time, None: terminal), interval, new_state,
# event, error, bad, unknown, creds, limited (offset), upstream, and outcome fields.
Case = tuple[str, dict[str, Any], PollResult, float, float, dict[str, Any]]
CASES: list[Case] = [
    # -- non-terminal answers back off -----------------------------------------------------
    ("pending backs off", {}, ok(state="pending"), 0, 0.5,
     {"next": 2.0, "interval": 3.0, "new_state": None, "event": None, "error": None,
      "upstream": "pending"}),
    ("interval grows to the cap", {"interval_s": 20.0}, ok(state="pending"), 0, 0.5,
     {"next": 20.0, "interval": 30.0}),
    ("interval stays at the cap", {"interval_s": 30.0}, ok(state="pending"), 0, 0.5,
     {"next": 30.0, "interval": 30.0}),
    ("a lowered cap applies at once", {"interval_s": 50.0}, ok(state="pending"), 0, 0.5,
     {"next": 30.0, "interval": 30.0}),
    ("jitter low end", {"interval_s": 10.0}, ok(state="pending"), 0, 0.0,
     {"next": 9.0, "interval": 15.0}),
    ("jitter high end", {"interval_s": 10.0}, ok(state="pending"), 0, 0.999999,
     {"next": 11.0, "interval": 15.0}),
    # -- processing is recorded once -------------------------------------------------------
    ("pending -> processing emits task.processing", {}, ok(state="processing"), 0, 0.5,
     {"next": 2.0, "interval": 3.0, "new_state": TaskState.PROCESSING,
      "event": EventType.PROCESSING, "upstream": "processing"}),
    ("processing again emits nothing",
     {"state": TaskState.PROCESSING, "upstream_state": "processing"},
     ok(state="processing"), 0, 0.5, {"next": 2.0, "new_state": None, "event": None}),
    ("processing -> pending does not go back",
     {"state": TaskState.PROCESSING, "upstream_state": "processing"},
     ok(state="pending"), 0, 0.5, {"new_state": None, "event": None, "upstream": "pending"}),
    # -- success ---------------------------------------------------------------------------
    ("success", {}, success_data(GOOD), 0, 0.5,
     {"next": None, "new_state": TaskState.SUCCEEDED, "event": EventType.SUCCEEDED,
      "result": {"resultUrls": URLS, "seed": 7}, "urls": tuple(URLS), "upstream": "success"}),
    ("success from processing", {"state": TaskState.PROCESSING}, success_data(GOOD), 0, 0.5,
     {"new_state": TaskState.SUCCEEDED, "event": EventType.SUCCEEDED}),
    ("success with a decoded resultJson", {}, success_data({"resultUrls": URLS}), 0, 0.5,
     {"event": EventType.SUCCEEDED, "urls": tuple(URLS)}),
    ("success without resultUrls", {}, success_data("{}"), 0, 0.5,
     {"event": EventType.SUCCEEDED, "urls": (), "result": {}}),
    ("success keeps only string urls", {},
     success_data(json.dumps({"resultUrls": ["u1", 2, None, "u2"]})), 0, 0.5,
     {"event": EventType.SUCCEEDED, "urls": ("u1", "u2")}),
    ("state is matched case-insensitively", {}, ok(state="SUCCESS", resultJson=GOOD), 0, 0.5,
     {"event": EventType.SUCCEEDED, "upstream": "SUCCESS"}),
    ("success after the deadline still succeeds", {"deadline_at": NOW - 5},
     success_data(GOOD), 0, 0.5, {"event": EventType.SUCCEEDED}),
    # -- a success without a usable result: asked again, failed on the third --------------
    ("bad result 1/3", {"interval_s": 8.0}, success_data("{not json"), 0, 0.5,
     {"next": 2.0, "interval": 8.0, "event": None, "new_state": None, "bad": 1,
      "error_has": "1/3"}),
    ("bad result 2/3", {"bad_result_polls": 1}, success_data("{not json"), 0, 0.5,
     {"next": 2.0, "event": None, "bad": 2}),
    ("bad result 3/3 fails", {"bad_result_polls": 2}, success_data("{not json"), 0, 0.5,
     {"next": None, "new_state": TaskState.FAILED, "event": EventType.FAILED,
      "fail_code": BAD_RESULT_CODE, "fail_msg_has": "does not parse"}),
    ("missing resultJson is bad", {}, ok(state="success"), 0, 0.5,
     {"event": None, "bad": 1, "error_has": "missing"}),
    ("resultJson holding a list is bad", {}, success_data("[1, 2]"), 0, 0.5,
     {"event": None, "bad": 1, "error_has": "not an object"}),
    ("resultJson of another type is bad", {"bad_result_polls": 2}, success_data(5), 0, 0.5,
     {"event": EventType.FAILED, "fail_code": BAD_RESULT_CODE}),
    ("a non-success answer resets the count", {"bad_result_polls": 2}, ok(state="processing"),
     0, 0.5, {"bad": 0, "event": EventType.PROCESSING}),
    # -- an answer too large to read: asked again, failed on the third ----------------------
    ("too large 1/3", {"interval_s": 8.0}, TOO_LARGE, 0, 0.5,
     {"next": 2.0, "interval": 8.0, "event": None, "new_state": None, "bad": 1,
      "error_has": "(1/3)"}),
    ("too large 2/3", {"bad_result_polls": 1}, TOO_LARGE, 0, 0.5,
     {"next": 2.0, "event": None, "bad": 2}),
    ("too large 3/3 fails", {"bad_result_polls": 2}, TOO_LARGE, 0, 0.5,
     {"next": None, "new_state": TaskState.FAILED, "event": EventType.FAILED,
      "fail_code": TOO_LARGE_CODE, "fail_msg_has": "to read 3 times in a row (HTTP 200: answer"}),
    ("too large after a transient problem still counts", {"bad_result_polls": 2}, TOO_LARGE,
     0, 0.5, {"fail_code": TOO_LARGE_CODE}),
    ("a transient problem keeps the count", {"bad_result_polls": 2}, TRANSIENT_500, 0, 0.5,
     {"bad": 2, "event": None}),
    ("an answer that fits resets the count", {"bad_result_polls": 2}, ok(state="pending"),
     0, 0.5, {"bad": 0, "event": None}),
    ("too large re-poll capped at the deadline", {"deadline_at": NOW + 1.0}, TOO_LARGE, 0, 0.5,
     {"next": 1.0, "bad": 1}),
    # -- failed: codes verbatim ------------------------------------------------------------
    ("failed", {}, ok(state="failed", failCode="CONTENT_VIOLATION", failMsg="Content violates"),
     0, 0.5, {"next": None, "new_state": TaskState.FAILED, "event": EventType.FAILED,
              "fail_code": "CONTENT_VIOLATION", "fail_msg": "Content violates",
              "upstream": "failed"}),
    ("failed with a newer-docs code", {},
     ok(state="failed", failCode="InputOutputSensitiveContentDetected", failMsg="x"), 0, 0.5,
     {"fail_code": "InputOutputSensitiveContentDetected"}),
    ("failed without codes", {}, ok(state="failed"), 0, 0.5,
     {"event": EventType.FAILED, "fail_code": None, "fail_msg": None}),
    ("failed with a numeric code", {}, ok(state="failed", failCode=500, failMsg=None), 0, 0.5,
     {"fail_code": "500", "fail_msg": None}),
    # -- not found -------------------------------------------------------------------------
    ("404 within the grace period", {}, NOT_FOUND, 0, 0.5,
     {"next": 2.0, "interval": 3.0, "event": None, "error": "HTTP 404: Task not found"}),
    ("404 after the grace period", {"upstream_state": None}, NOT_FOUND, 110, 0.5,
     {"next": None, "new_state": TaskState.NOT_FOUND, "event": EventType.NOT_FOUND,
      "last_state": None, "watched": 120.0}),
    ("404 of a task seen before", {"upstream_state": "processing"}, NOT_FOUND, 200, 0.5,
     {"event": EventType.NOT_FOUND, "last_state": "processing", "watched": 210.0}),
    # -- 400 -------------------------------------------------------------------------------
    ("400 rejects the task", {}, answer(PollOutcome.BAD_REQUEST, 400, "HTTP 400: bad id"), 0,
     0.5, {"next": None, "new_state": TaskState.FAILED, "event": EventType.FAILED,
           "fail_code": REJECTED_CODE, "fail_msg_has": "HTTP 400: bad id"}),
    # -- credentials: the task waits, the scheduler pauses everything ----------------------
    *[
        (f"{code} pauses everything", {"interval_s": 8.0},
         answer(PollOutcome.CREDENTIALS, code, f"HTTP {code}"), 0, 0.5,
         {"next": 8.0, "interval": 8.0, "new_state": None, "event": None, "creds": True,
          "error": f"HTTP {code}", "limited": None})
        for code in (401, 402, 403)
    ],
    # -- 429 -------------------------------------------------------------------------------
    ("429 with Retry-After", {},
     answer(PollOutcome.RATE_LIMITED, 429, "HTTP 429", retry_after=10.0), 0, 0.5,
     {"next": 10.0, "interval": 2.0, "limited": 10.0, "creds": False, "event": None}),
    ("429 without Retry-After", {}, answer(PollOutcome.RATE_LIMITED, 429, "HTTP 429"), 0, 0.5,
     {"next": 5.0, "interval": 2.0, "limited": 5.0}),
    ("429 with a short Retry-After", {"interval_s": 4.0},
     answer(PollOutcome.RATE_LIMITED, 429, "HTTP 429", retry_after=0.5), 0, 0.5,
     {"next": 4.0, "limited": 0.5}),
    # -- transient problems back off -------------------------------------------------------
    ("500 backs off", {}, TRANSIENT_500, 0, 0.5,
     {"next": 2.0, "interval": 3.0, "event": None, "error": "HTTP 500: boom", "limited": None}),
    ("503 honours Retry-After", {},
     answer(PollOutcome.TRANSIENT, 503, "HTTP 503", retry_after=60.0), 0, 0.5,
     {"next": 60.0, "interval": 3.0}),
    ("timeout", {}, answer(PollOutcome.TRANSIENT, None, "timeout after 10s"), 0, 0.5,
     {"next": 2.0, "interval": 3.0, "error": "timeout after 10s"}),
    ("malformed answer", {},
     answer(PollOutcome.TRANSIENT, 200, "HTTP 200: malformed answer (no data object)"), 0, 0.5,
     {"next": 2.0, "error_has": "malformed"}),
    ("a transient problem keeps the bad-result count", {"bad_result_polls": 2}, TRANSIENT_500,
     0, 0.5, {"bad": 2}),
    # -- unknown states --------------------------------------------------------------------
    ("unknown state", {}, ok(state="queued"), 0, 0.5,
     {"next": 2.0, "interval": 3.0, "event": None, "unknown": True, "upstream": "queued",
      "reason_has": "'queued'"}),
    ("missing state", {"upstream_state": "pending"}, ok(), 0, 0.5,
     {"event": None, "unknown": True, "upstream": "pending", "reason_has": "missing"}),
    ("state of another type", {}, ok(state=3), 0, 0.5, {"event": None, "unknown": True}),
    # -- the deadline caps every schedule --------------------------------------------------
    ("poll capped at the deadline", {"deadline_at": NOW + 1.0}, ok(state="pending"), 0, 0.5,
     {"next": 1.0}),
    ("Retry-After capped at the deadline", {"deadline_at": NOW + 1.0},
     answer(PollOutcome.TRANSIENT, 503, "HTTP 503", retry_after=60.0), 0, 0.5, {"next": 1.0}),
    ("429 capped at the deadline", {"deadline_at": NOW + 1.0},
     answer(PollOutcome.RATE_LIMITED, 429, "HTTP 429", retry_after=60.0), 0, 0.5,
     {"next": 1.0, "limited": 60.0}),
    ("bad result re-poll capped at the deadline", {"deadline_at": NOW + 1.0},
     success_data("nope"), 0, 0.5, {"next": 1.0, "bad": 1}),
]  # fmt: skip


def check(decision: Decision, expected: dict[str, Any], at: float, result: PollResult) -> None:
    out = decision.outcome
    for key, want in expected.items():
        if key == "next":
            got = None if decision.next_poll_at is None else decision.next_poll_at - at
            assert got == (None if want is None else pytest.approx(want)), key
        elif key == "interval":
            assert decision.interval_s == pytest.approx(want)
        elif key == "new_state":
            assert decision.new_state == want
        elif key == "event":
            assert (out.type if out else None) == want
        elif key == "error":
            assert decision.error == want
        elif key == "error_has":
            assert want in (decision.error or "")
        elif key == "reason_has":
            assert want in decision.reason
        elif key == "bad":
            assert decision.bad_result_polls == want
        elif key == "unknown":
            assert decision.unknown_state is want
        elif key == "creds":
            assert decision.credentials_bad is want
        elif key == "limited":
            got = None if decision.rate_limited_until is None else decision.rate_limited_until - at
            assert got == (None if want is None else pytest.approx(want))
        elif key == "upstream":
            assert decision.upstream_state == want
        else:
            assert out is not None, key
            attr = {
                "result": out.result,
                "urls": out.result_urls,
                "fail_code": out.fail_code,
                "fail_msg": out.fail_msg,
                "fail_msg_has": out.fail_msg,
                "last_state": out.last_state,
                "watched": out.watched_seconds,
            }[key]
            if key == "fail_msg_has":
                assert want in (attr or "")
            else:
                assert attr == want, key
    finished_by_answer = out is not None and out.type in (EventType.SUCCEEDED, EventType.FAILED)
    if finished_by_answer and result.outcome is PollOutcome.OK:
        assert out is not None
        assert out.upstream == result.data  # the answer that finished it, verbatim
    if decision.terminal or (out is not None and out.type is not EventType.PROCESSING):
        assert decision.next_poll_at is None
        assert decision.new_state is not None
        assert decision.new_state.terminal


@pytest.mark.parametrize(
    ("changes", "result", "later", "rand", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(
    changes: dict[str, Any], result: PollResult, later: float, rand: float, expected: dict[str, Any]
) -> None:
    watch = make_watch(**changes)
    before = replace(watch)
    at = NOW + later
    decision = decide(watch, result, POLICY, at, rand)
    check(decision, expected, at, result)
    assert watch == before  # decide is pure
    if decision.next_poll_at is not None:
        assert at <= decision.next_poll_at <= watch.deadline_at or watch.deadline_at < at


@pytest.mark.parametrize("rand", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999999])
@pytest.mark.parametrize("interval", [2.0, 7.5, 30.0])
def test_jitter_stays_within_bounds(rand: float, interval: float) -> None:
    decision = decide(make_watch(interval_s=interval), ok(state="pending"), POLICY, NOW, rand)
    assert decision.next_poll_at is not None
    delay = decision.next_poll_at - NOW
    assert interval * 0.9 - 1e-6 <= delay <= interval * 1.1 + 1e-6


def test_processing_event_carries_the_answer() -> None:
    result = ok(state="processing", createTime=1704067200000)
    decision = decide(make_watch(), result, POLICY, NOW, 0.5)
    assert decision.outcome is not None
    assert decision.outcome.upstream == result.data


def test_credentials_pass_retry_after_to_the_pause() -> None:
    result = answer(PollOutcome.CREDENTIALS, 401, "HTTP 401", retry_after=90.0)
    decision = decide(make_watch(), result, POLICY, NOW, 0.5)
    assert decision.pause_all_until == NOW + 90.0
    plain = decide(make_watch(), answer(PollOutcome.CREDENTIALS, 401, "x"), POLICY, NOW, 0.5)
    assert plain.pause_all_until is None


def test_sequence_of_backoff_intervals() -> None:
    watch = make_watch()
    delays = []
    at = NOW
    for _ in range(8):
        decision = decide(watch, ok(state="pending"), POLICY, at, 0.5)
        assert decision.next_poll_at is not None
        delays.append(round(decision.next_poll_at - at, 4))
        apply(watch, decision)
        at = decision.next_poll_at
    assert delays == [2.0, 3.0, 4.5, 6.75, 10.125, 15.1875, 22.7812, 30.0]


# -- the deadline -------------------------------------------------------------------------------
def test_no_timeout_before_the_deadline() -> None:
    assert deadline_decision(make_watch(deadline_at=NOW + 0.001), NOW) is None


@pytest.mark.parametrize("late", [0.0, 42.0])
def test_timed_out_at_the_deadline(late: float) -> None:
    watch = make_watch(deadline_at=NOW, upstream_state="processing", state=TaskState.PROCESSING)
    decision = deadline_decision(watch, NOW + late)
    assert decision is not None
    assert decision.next_poll_at is None
    assert decision.new_state is TaskState.TIMED_OUT
    assert decision.outcome is not None
    assert decision.outcome.type is EventType.TIMED_OUT
    assert decision.outcome.last_state == "processing"
    assert decision.outcome.watched_seconds == pytest.approx(NOW + late - T0)


def test_no_timeout_before_the_upstream_has_answered_since_the_watch_began() -> None:
    # E.g. the deadline passed while the daemon was down: the task is asked once first.
    assert deadline_decision(make_watch(deadline_at=NOW - 60, answered=False), NOW) is None


@pytest.mark.parametrize(
    ("result", "answered"),
    [
        (ok(state="pending"), True),
        (answer(PollOutcome.TRANSIENT, 500, "HTTP 500"), True),  # a task whose polls always
        (answer(PollOutcome.TRANSIENT, None, "timeout"), True),  # fail must still end
        (answer(PollOutcome.RATE_LIMITED, 429, "HTTP 429"), True),
        (answer(PollOutcome.NOT_FOUND, 404, "HTTP 404"), True),
        (answer(PollOutcome.CREDENTIALS, 401, "HTTP 401"), False),  # says nothing of the task
    ],
)
def test_which_answers_let_the_deadline_apply(result: PollResult, answered: bool) -> None:
    watch = make_watch(answered=False)
    apply(watch, decide(watch, result, POLICY, NOW, 0.5))
    assert watch.answered is answered


# -- new watches --------------------------------------------------------------------------------
def make_task(**changes: Any) -> Task:
    task = Task(
        task_id="task_1",
        model="nano-banana",
        endpoints=None,
        callback_url=None,
        metadata={},
        deadline_s=None,
        source=TaskSource.API,
        state=TaskState.PENDING,
        registered_at=T0,
        updated_at=T0,
    )
    for key, value in changes.items():
        setattr(task, key, value)
    return task


def test_first_poll_after_the_initial_delay() -> None:
    policy = replace(POLICY, initial_delay_s=5.0)
    watch = watch_for(make_task(), policy, T0, registered_at=T0)
    assert watch.next_poll_at == T0 + 5.0
    assert watch.deadline_at == T0 + 3600.0
    assert watch.interval_s == 2.0
    assert (watch.polls, watch.bad_result_polls, watch.state) == (0, 0, TaskState.PENDING)


def test_overdue_first_poll_is_due_now() -> None:
    watch = watch_for(make_task(), replace(POLICY, initial_delay_s=5.0), T0 + 100, registered_at=T0)
    assert watch.next_poll_at == T0 + 100


def test_task_deadline_overrides_the_policy() -> None:
    watch = watch_for(make_task(deadline_s=60.0), POLICY, T0, registered_at=T0)
    assert watch.deadline_at == T0 + 60.0
    assert watch.deadline_override_s == 60.0


def test_first_poll_never_after_the_deadline() -> None:
    watch = watch_for(
        make_task(deadline_s=3.0), replace(POLICY, initial_delay_s=5.0), T0, registered_at=T0
    )
    assert watch.next_poll_at == T0 + 3.0


def test_resumed_task_keeps_its_backoff_and_state() -> None:
    task = make_task(
        polls=4, state=TaskState.PROCESSING, upstream_state="processing", last_error="HTTP 500"
    )
    watch = watch_for(task, POLICY, T0 + 500, registered_at=T0)
    assert watch.interval_s == pytest.approx(2.0 * 1.5**4)
    assert (watch.state, watch.upstream_state, watch.polls) == (
        TaskState.PROCESSING,
        "processing",
        4,
    )
    assert watch.last_error == "HTTP 500"
    many = watch_for(make_task(polls=10**6), POLICY, T0, registered_at=T0)
    assert many.interval_s == 30.0


def test_the_deadline_extension_moves_the_deadline() -> None:
    watch = watch_for(make_task(deadline_extension_s=90.0), POLICY, T0, registered_at=T0)
    assert watch.deadline_at == T0 + 3600.0 + 90.0


def test_times_are_on_the_callers_clock() -> None:
    # The scheduler passes monotonic times: the task's stored (wall) registration is not used.
    watch = watch_for(make_task(deadline_s=60.0), POLICY, 500.0, registered_at=480.0)
    assert (watch.registered_at, watch.next_poll_at, watch.deadline_at) == (480.0, 500.0, 540.0)


def test_a_task_resumed_past_its_deadline_is_polled_once_then_timed_out() -> None:
    task = make_task(deadline_s=60.0, state=TaskState.PROCESSING, upstream_state="processing")
    watch = watch_for(task, POLICY, T0 + 500, registered_at=T0)
    assert watch.next_poll_at is not None
    assert watch.next_poll_at <= T0 + 500  # due at once
    assert deadline_decision(watch, T0 + 500) is None  # not timed out unasked
    decision = decide(watch, ok(state="processing"), POLICY, T0 + 500, 0.5)
    assert decision.new_state is None
    apply(watch, decision)
    timed_out = deadline_decision(watch, T0 + 500)
    assert timed_out is not None
    assert timed_out.new_state is TaskState.TIMED_OUT


def test_apply_moves_the_watch() -> None:
    watch = make_watch(last_error="HTTP 500")
    decision = decide(watch, ok(state="processing"), POLICY, NOW, 0.5)
    apply(watch, decision)
    assert watch.state is TaskState.PROCESSING
    assert watch.upstream_state == "processing"
    assert watch.next_poll_at == NOW + 2.0
    assert watch.interval_s == 3.0
    assert watch.last_error is None


def test_watch_is_compact() -> None:
    assert not hasattr(make_watch(), "__dict__")


@pytest.mark.parametrize(
    "result_json",
    [
        "[" * 1000 + "]" * 1000,  # ~2 KB that exhausts the recursion limit
        '{"resultUrls": ' * 1000 + "[]" + "}" * 1000,
        '{"resultUrls": ' * 100 + "[]" + "}" * 100,  # parses, but deeper than accepted
    ],
    ids=["deep array", "deep object", "past the limit"],
)
def test_a_deeply_nested_result_json_is_an_unusable_result(result_json: str) -> None:
    watch = make_watch()
    decision = decide(watch, success_data(result_json), POLICY, NOW, 0.5)
    assert decision.new_state is None
    assert decision.bad_result_polls == 1
    assert decision.error is not None
    assert "nested more than" in decision.error
    watch.bad_result_polls = 2
    final = decide(watch, success_data(result_json), POLICY, NOW, 0.5)
    assert final.outcome is not None
    assert final.outcome.fail_code == BAD_RESULT_CODE
