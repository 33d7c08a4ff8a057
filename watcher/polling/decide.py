"""Polling decisions: given a watched task, one upstream answer and `now`, what happens next.

Pure functions, no I/O and no clock reads; the scheduler acts on what they return. Timing
follows the contract: the first poll comes `initial_delay` after registration; after each
non-terminal answer the task waits its current interval (with jitter) and the interval grows by
`backoff`, capped at `max_interval`; no poll is ever scheduled past the task's deadline.

With the adaptive strategy (contract section 8) a non-terminal answer is followed by the poll
the model's learned plan (watcher.polling.adaptive) places at the task's next age, counting
from the upstream's `createTime` when known (`Watch.created_at`), else from registration;
without a plan (fixed strategy, too few samples), past the plan's horizon, and after problem
answers (404, 5xx, timeouts, 429) the fixed rules above apply. The interval keeps growing as
fixed would, so a fallback continues where fixed would be.

Every time here is on the scheduler's monotonic clock (watcher.clock.Timeline), never a wall
time: a step of the wall clock moves no poll and ends no task. A task times out only once a
poll of it has been answered since its watch began, so a restart (after which the stored wall
times are the only reference, and a deadline may have passed while the daemon was down) never
ends a task without asking the upstream first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from watcher import jsontext
from watcher.config.settings import PollingPolicy
from watcher.models import EVENT_STATE, EventOutcome, EventType, Task, TaskState
from watcher.polling.adaptive import AdaptivePlan
from watcher.upstream.classify import PollOutcome, PollResult

# A success whose resultJson is unusable is asked again this many times in total before the
# task is failed with BAD_RESULT_CODE: an upstream may write the result a moment late.
BAD_RESULT_LIMIT = 3
BAD_RESULT_CODE = "WATCHER_BAD_RESULT"
# A 2xx answer larger than upstream.max_response_bytes is not read (it may be a success with a
# huge result): after BAD_RESULT_LIMIT of them in a row the task fails with this code, rather
# than being asked until its deadline and ending in task.timed_out.
TOO_LARGE_CODE = "WATCHER_ANSWER_TOO_LARGE"
REJECTED_CODE = "WATCHER_UPSTREAM_REJECTED"
# How long a 429 without Retry-After slows the whole upstream down.
DEFAULT_RATE_LIMIT_S = 5.0


@dataclass(slots=True)
class Watch:
    """The scheduler's compact in-memory record of one watched task.

    Kept small (slots, no task metadata) so that 100k of them fit comfortably in memory;
    everything else about the task stays in the store. Its times (`registered_at`,
    `deadline_at`, `next_poll_at`) are monotonic seconds, not Unix time.
    """

    task_id: str
    model: str
    registered_at: float
    deadline_at: float  # includes the task's stored extension (credential pauses, clock steps)
    deadline_override_s: float | None  # the task's own deadline; None: the model policy's
    state: TaskState  # PENDING or PROCESSING while watched
    upstream_state: str | None  # the last `data.state` seen, verbatim
    interval_s: float  # the wait after the next non-terminal answer (before jitter)
    next_poll_at: float | None  # None while a poll is in flight
    polls: int = 0  # requests made for this task, over its whole life
    # Consecutive answers that may be a success we cannot use: an unusable resultJson, or a
    # 2xx answer too large to read. Transient problems in between keep the count.
    bad_result_polls: int = 0
    last_error: str | None = None  # the last non-terminal problem, for `show`
    unknown_state_logged: bool = False
    # A poll of this task has been answered since the watch began: only then may the deadline
    # end it. A credential error does not count (it pauses all polling and says nothing about
    # the task); any other answer does, so a task whose polls always fail still ends.
    answered: bool = False
    heap_seq: int = 0  # the scheduler's token for this watch's live heap entry
    # The upstream's createTime on this clock, once an answer told it (ages count from it).
    created_at: float | None = None
    last_polled_at: float | None = None  # when the last answer came (budget priority)
    hinted: bool = False  # a hint said it may be done: first in line until polled

    @property
    def origin(self) -> float:
        """Where the task's age counts from: its creation upstream, else its registration."""
        return self.created_at if self.created_at is not None else self.registered_at


# Not frozen, though nothing changes one once built: a frozen dataclass's __init__ sets each
# of these 13 fields through object.__setattr__ (~3 us against ~0.6 us), and one is built per
# poll.
@dataclass(slots=True)
class Decision:
    """What one answer (or the deadline) means for a task, and for the upstream as a whole.
    Treated as immutable."""

    next_poll_at: float | None  # None: the task is finished
    interval_s: float
    reason: str
    upstream_state: str | None
    new_state: TaskState | None = None  # None: unchanged
    outcome: EventOutcome | None = None  # task.processing and every terminal outcome
    error: str | None = None  # a non-terminal problem, shown by `show`
    bad_result_polls: int = 0
    unknown_state: bool = False  # the upstream answered a state this daemon does not know
    # Effects on every task:
    credentials_bad: bool = False  # 401/402/403: pause all polling
    pause_all_until: float | None = None  # credentials: a Retry-After, if the answer gave one
    rate_limited_until: float | None = None  # 429: slow the whole upstream down until then

    @property
    def terminal(self) -> bool:
        return self.new_state is not None and self.new_state.terminal


def initial_interval(policy: PollingPolicy, polls: int) -> float:
    """The interval a task reaches after `polls` non-terminal answers (used on restart)."""
    interval = policy.initial_interval_s
    for _ in range(min(polls, 1000)):
        if interval >= policy.max_interval_s:
            break
        interval *= policy.backoff
    return min(interval, policy.max_interval_s)


def deadline_for(registered_at: float, override_s: float | None, policy: PollingPolicy) -> float:
    """When a task times out: its own deadline if it has one, else its model's."""
    return registered_at + (override_s if override_s is not None else policy.deadline_s)


def watch_for(
    task: Task,
    policy: PollingPolicy,
    now: float,
    *,
    registered_at: float,
    plan: AdaptivePlan | None = None,
) -> Watch:
    """A new watch for an active task: first poll `initial_delay` after registration (with a
    `plan`, or where the plan puts a task's first poll if that is later), but not before
    `now` (after a restart an overdue task is due at once), never past the deadline.

    `now` and `registered_at` (the task's registration) are on the scheduler's clock. The
    deadline counts from the registration, moved by the task's stored deadline extension. A
    task resumed after a restart keeps its backoff: the interval continues from its polls.
    """
    deadline_at = deadline_for(registered_at, task.deadline_s, policy) + task.deadline_extension_s
    first = max(registered_at + first_delay(policy, plan), now)
    return Watch(
        task_id=task.task_id,
        model=task.model,
        registered_at=registered_at,
        deadline_at=deadline_at,
        deadline_override_s=task.deadline_s,
        state=task.state,
        upstream_state=task.upstream_state,
        interval_s=initial_interval(policy, task.polls),
        next_poll_at=min(first, deadline_at),
        polls=task.polls,
        last_error=task.last_error,
    )


def first_delay(policy: PollingPolicy, plan: AdaptivePlan | None) -> float:
    """How long after its registration a task is first polled: `initial_delay`, or where a
    `plan` puts a task's first poll if that is later."""
    delay = policy.initial_delay_s
    if plan is not None:
        # The age at registration is not known yet (createTime comes with the first answer):
        # the task is taken as registered when it was created, as it usually is.
        delay = max(delay, plan.next_age(0.0, first=True) or 0.0)
    return delay


def watches_for_new(
    task_ids: Iterable[str],
    models: Iterable[str],
    deadlines_s: Iterable[float | None],
    plan_for: Callable[[str], tuple[PollingPolicy, AdaptivePlan | None]],
    now: float,
    *,
    registered_at: float,
) -> Iterator[Watch]:
    """`watch_for` of tasks just registered (pending, never polled, no deadline extension, all
    registered at `registered_at`), from their specs' columns: no `Task` per task, and the
    policy and plan asked once per model (`plan_for(model)`). A tasks file registers 100,000
    in a row."""
    per_model: dict[str, tuple[PollingPolicy, float, float]] = {}
    pending = TaskState.PENDING
    for task_id, model, deadline_s in zip(task_ids, models, deadlines_s, strict=True):
        known = per_model.get(model)
        if known is None:
            policy, plan = plan_for(model)
            first = max(registered_at + first_delay(policy, plan), now)
            known = per_model[model] = (policy, first, initial_interval(policy, 0))
        policy, first, interval_s = known
        deadline_at = deadline_for(registered_at, deadline_s, policy)
        # Positional (task_id, model, registered_at, deadline_at, deadline_override_s, state,
        # upstream_state, interval_s, next_poll_at): half the cost of keywords.
        yield Watch(
            task_id,
            model,
            registered_at,
            deadline_at,
            deadline_s,
            pending,
            None,
            interval_s,
            min(first, deadline_at),
        )


def jittered(interval_s: float, jitter: float, rand: float) -> float:
    """`interval_s` spread by +-`jitter` (a fraction); `rand` is uniform in [0, 1)."""
    return max(0.0, interval_s * (1.0 + jitter * (2.0 * rand - 1.0)))


def _backoff(
    watch: Watch,
    policy: PollingPolicy,
    now: float,
    rand: float,
    *,
    not_before: float | None = None,
    grow: bool = True,
) -> tuple[float, float]:
    """(next poll time, next interval) after an answer that does not finish the task."""
    current = min(watch.interval_s, policy.max_interval_s)
    at = now + jittered(current, policy.jitter, rand)
    if not_before is not None:
        at = max(at, not_before)
    at = min(at, watch.deadline_at)
    interval = min(current * policy.backoff, policy.max_interval_s) if grow else current
    return at, interval


def _next_poll(
    watch: Watch, policy: PollingPolicy, now: float, rand: float, plan: AdaptivePlan | None
) -> tuple[float, float]:
    """(next poll time, next interval) after a non-terminal answer: the plan's next age when
    it has one for this task's age, else the fixed backoff."""
    at, interval = _backoff(watch, policy, now, rand)
    if plan is None:
        return at, interval
    age = now - watch.origin
    next_age = plan.next_age(age)
    if next_age is None:
        return at, interval  # older than any task seen: fixed
    gap = max(jittered(next_age - age, policy.jitter, rand), plan.min_interval_s)
    return min(now + gap, watch.deadline_at), interval


def deadline_decision(watch: Watch, now: float) -> Decision | None:
    """TIMED_OUT when the task's deadline has been reached and a poll of it has been answered
    since its watch began, else None (it is polled first)."""
    if now < watch.deadline_at or not watch.answered:
        return None
    return Decision(
        next_poll_at=None,
        interval_s=watch.interval_s,
        reason="deadline reached",
        upstream_state=watch.upstream_state,
        new_state=TaskState.TIMED_OUT,
        outcome=EventOutcome(
            type=EventType.TIMED_OUT,
            last_state=watch.upstream_state,
            watched_seconds=now - watch.registered_at,
        ),
    )


def _terminal(watch: Watch, outcome: EventOutcome, reason: str, upstream: str | None) -> Decision:
    return Decision(
        next_poll_at=None,
        interval_s=watch.interval_s,
        reason=reason,
        upstream_state=upstream,
        new_state=EVENT_STATE[outcome.type],
        outcome=outcome,
    )


def parse_result(data: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str | None]:
    """(the parsed `resultJson` object, None) or (None, why it is unusable)."""
    raw = data.get("resultJson")
    if raw is None:
        return None, "resultJson is missing"
    if isinstance(raw, dict):  # some answers carry the object already decoded
        return raw, None
    if not isinstance(raw, str):
        return None, f"resultJson is a {type(raw).__name__}, not a JSON string"
    try:
        parsed = jsontext.parse(raw)  # untrusted: see jsontext (NaN, nesting)
    except ValueError as exc:
        return None, f"resultJson does not parse: {exc}"
    if not isinstance(parsed, dict):
        return None, f"resultJson holds a {type(parsed).__name__}, not an object"
    return parsed, None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def decide(
    watch: Watch,
    result: PollResult,
    policy: PollingPolicy,
    now: float,
    rand: float,
    plan: AdaptivePlan | None = None,
) -> Decision:
    """What happens to `watch` after `result`; `rand` in [0, 1) drives the jitter; `plan` is
    the model's adaptive plan (None: the fixed schedule)."""
    outcome = result.outcome
    if outcome is PollOutcome.OK:
        return _decide_ok(watch, result.data or {}, policy, now, rand, plan)
    if outcome is PollOutcome.TOO_LARGE:
        detail = result.detail
        return _unusable(
            watch,
            policy,
            now,
            detail,
            TOO_LARGE_CODE,
            lambda n: (
                f"the upstream's answer was too large to read {n} times in a row ({detail}); "
                "raise upstream.max_response_bytes to accept it"
            ),
            "upstream answer too large",
            None,
        )
    if outcome is PollOutcome.BAD_REQUEST:
        return _terminal(
            watch,
            EventOutcome(
                type=EventType.FAILED,
                upstream=result.data,
                fail_code=REJECTED_CODE,
                fail_msg=f"the upstream rejected the status request: {result.detail}",
            ),
            "upstream rejected the request",
            watch.upstream_state,
        )
    if outcome is PollOutcome.NOT_FOUND:
        watched = now - watch.registered_at
        if watched >= policy.not_found_grace_s:
            return _terminal(
                watch,
                EventOutcome(
                    type=EventType.NOT_FOUND,
                    last_state=watch.upstream_state,
                    watched_seconds=watched,
                ),
                "upstream does not know the task",
                watch.upstream_state,
            )
        at, interval = _backoff(watch, policy, now, rand, not_before=_after(now, result))
        return _poll_again(watch, result, at, interval, "not found (within grace)")
    if outcome is PollOutcome.CREDENTIALS:
        # Not the task's fault: its interval does not grow; the scheduler pauses everything.
        at, interval = _backoff(watch, policy, now, rand, grow=False)
        return _poll_again(
            watch,
            result,
            at,
            interval,
            "credentials rejected",
            credentials_bad=True,
            pause_all_until=_after(now, result),
        )
    if outcome is PollOutcome.RATE_LIMITED:
        until = now + (
            result.retry_after_s if result.retry_after_s is not None else DEFAULT_RATE_LIMIT_S
        )
        at, interval = _backoff(watch, policy, now, rand, not_before=until, grow=False)
        return _poll_again(watch, result, at, interval, "rate limited", rate_limited_until=until)
    at, interval = _backoff(watch, policy, now, rand, not_before=_after(now, result))
    return _poll_again(watch, result, at, interval, "transient upstream problem")


def _poll_again(
    watch: Watch,
    result: PollResult,
    at: float,
    interval: float,
    reason: str,
    *,
    credentials_bad: bool = False,
    pause_all_until: float | None = None,
    rate_limited_until: float | None = None,
) -> Decision:
    """A problem answer: nothing about the task changes but when it is asked next."""
    return Decision(
        next_poll_at=at,
        interval_s=interval,
        reason=reason,
        upstream_state=watch.upstream_state,
        error=result.detail,
        bad_result_polls=watch.bad_result_polls,
        credentials_bad=credentials_bad,
        pause_all_until=pause_all_until,
        rate_limited_until=rate_limited_until,
    )


def _after(now: float, result: PollResult) -> float | None:
    return None if result.retry_after_s is None else now + result.retry_after_s


_STATE_REASONS = {state: f"upstream state {state}" for state in ("pending", "processing")}


def _decide_ok(
    watch: Watch,
    data: Mapping[str, Any],
    policy: PollingPolicy,
    now: float,
    rand: float,
    plan: AdaptivePlan | None,
) -> Decision:
    raw_state = data.get("state")
    upstream = raw_state if isinstance(raw_state, str) else watch.upstream_state
    state = raw_state.strip().lower() if isinstance(raw_state, str) else None

    if state == "success":
        result, problem = parse_result(data)
        if result is not None:
            urls = result.get("resultUrls")
            result_urls = (
                tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else ()
            )
            return _terminal(
                watch,
                EventOutcome(
                    type=EventType.SUCCEEDED, upstream=data, result=result, result_urls=result_urls
                ),
                "upstream state success",
                upstream,
            )
        return _unusable(
            watch,
            policy,
            now,
            f"success without a usable result: {problem}",
            BAD_RESULT_CODE,
            lambda n: (
                f"the upstream reported success {n} times in a row without a usable result: "
                f"{problem}"
            ),
            "upstream result unusable",
            data,
            upstream=upstream,
        )

    if state == "failed":
        return _terminal(
            watch,
            EventOutcome(
                type=EventType.FAILED,
                upstream=data,
                fail_code=_text(data.get("failCode")),
                fail_msg=_text(data.get("failMsg")),
            ),
            "upstream state failed",
            upstream,
        )

    at, interval = _next_poll(watch, policy, now, rand, plan)
    if state in ("pending", "processing"):
        if state == "processing" and watch.state is TaskState.PENDING:
            return Decision(
                next_poll_at=at,
                interval_s=interval,
                reason="upstream state processing",
                upstream_state=upstream,
                new_state=TaskState.PROCESSING,
                outcome=EventOutcome(type=EventType.PROCESSING, upstream=data),
            )
        return Decision(at, interval, _STATE_REASONS[state], upstream)
    shown = repr(raw_state) if raw_state is not None else "missing"
    return Decision(at, interval, f"unknown upstream state {shown}", upstream, unknown_state=True)


def _unusable(
    watch: Watch,
    policy: PollingPolicy,
    now: float,
    problem: str,
    fail_code: str,
    fail_msg: Callable[[int], str],
    reason: str,
    data: Mapping[str, Any] | None,
    *,
    upstream: str | None = None,
) -> Decision:
    """An answer that may be a success we cannot use: asked again soon (an upstream may write
    the result a moment late), failed with `fail_code` on the BAD_RESULT_LIMIT-th in a row."""
    bad = watch.bad_result_polls + 1
    upstream = upstream if upstream is not None else watch.upstream_state
    if bad >= BAD_RESULT_LIMIT:
        return _terminal(
            watch,
            EventOutcome(
                type=EventType.FAILED,
                upstream=data,
                fail_code=fail_code,
                fail_msg=fail_msg(bad),
            ),
            reason,
            upstream,
        )
    return Decision(
        next_poll_at=min(now + policy.initial_interval_s, watch.deadline_at),
        interval_s=watch.interval_s,
        reason=reason,
        upstream_state=upstream,
        error=f"{problem} ({bad}/{BAD_RESULT_LIMIT})",
        bad_result_polls=bad,
    )


def apply(watch: Watch, decision: Decision) -> None:
    """Move a watch to what a (committed) decision says."""
    watch.next_poll_at = decision.next_poll_at
    watch.interval_s = decision.interval_s
    watch.upstream_state = decision.upstream_state
    watch.bad_result_polls = decision.bad_result_polls
    watch.last_error = decision.error
    if not decision.credentials_bad:
        watch.answered = True
    if decision.new_state is not None:
        watch.state = decision.new_state
