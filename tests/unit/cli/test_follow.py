"""`add --wait` / `show --follow`: what is printed, when it stops, how it exits (no daemon,
no sleeping: snapshots of the task come from a list, time from a fake clock)."""

from __future__ import annotations

from typing import Any

import pytest

from watcher.cli.follow import Seen, exit_code, follow, settled, summary


class SteppingClock:
    """Time moves only by sleeping: each sleep returns at once, `seconds` later. The wall
    clock is far off and never moves: only the monotonic one may count."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.slept: list[float] = []

    def time(self) -> float:
        return 1_700_000_000.0

    def now(self) -> float:
        return self.time()

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    async def wait_event(self, event: Any, seconds: float) -> None:  # pragma: no cover
        raise AssertionError("not used")


def change(a: str, b: str, reason: str, at: str = "T") -> dict[str, Any]:
    return {"from_state": a, "to_state": b, "reason": reason, "at": at}


def delivery(status: str, attempts: int, **extra: Any) -> dict[str, Any]:
    return {
        "delivery_id": "dlv_1",
        "event_type": "task.succeeded",
        "endpoint": "app",
        "webhook_id": "msg_1",
        "status": status,
        "attempts": attempts,
        "created_at": "C",
        "updated_at": "U",
        "next_attempt_at": extra.pop("next_attempt_at", None),
        "last_status_code": extra.pop("code", None),
        "last_error": extra.pop("error", None),
    }


def task(state: str, changes: list[dict[str, Any]], *deliveries: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": "t1",
        "state": state,
        "state_changes": changes,
        "deliveries": list(deliveries),
        "events": [],
    }


async def test_prints_each_change_once_until_the_webhook_is_delivered() -> None:
    c1 = change("pending", "processing", "upstream state processing", "T1")
    c2 = change("processing", "succeeded", "upstream state success", "T2")
    snapshots = [
        task("pending", []),
        task("processing", [c1]),
        task("processing", [c1]),
        task("succeeded", [c1, c2], delivery("pending", 0)),
        task("succeeded", [c1, c2], delivery("pending", 1, code=500, next_attempt_at="N")),
        task("succeeded", [c1, c2], delivery("succeeded", 2, code=204)),
        task("failed", []),  # never fetched: it stops once settled
    ]
    fetched: list[dict[str, Any]] = []

    async def fetch() -> dict[str, Any]:
        fetched.append(snapshots[len(fetched)])
        return fetched[-1]

    said: list[str] = []
    clock = SteppingClock()
    final, done = await follow(fetch, Seen(), said.append, clock=clock, interval_s=0.5)
    assert done
    assert final is snapshots[5]
    assert said == [
        "T1  pending -> processing (upstream state processing)",
        "T2  processing -> succeeded (upstream state success)",
        "C  task.succeeded -> app: queued (webhook-id msg_1)",
        "U  task.succeeded -> app: attempt 1 failed (HTTP 500), next attempt at N",
        "U  task.succeeded -> app: delivered (attempt 2, HTTP 204)",
    ]
    assert clock.slept == [0.5] * 5
    assert exit_code(final) == 0
    assert summary(final) == "t1: succeeded; webhooks delivered"


async def test_what_was_shown_already_is_not_repeated() -> None:
    c1 = change("pending", "processing", "upstream state processing")
    shown = task("processing", [c1])
    done_task = task("failed", [c1, change("processing", "failed", "upstream state fail")])

    async def fetch() -> dict[str, Any]:
        return done_task

    said: list[str] = []
    final, done = await follow(fetch, Seen.of(shown), said.append, clock=SteppingClock())
    assert done
    assert said == ["T  processing -> failed (upstream state fail)"]
    assert exit_code(final) == 1
    assert summary(final) == "t1: failed; no webhook to send"


async def test_gives_up_at_the_timeout_without_sleeping_past_it() -> None:
    async def fetch() -> dict[str, Any]:
        return task("pending", [])

    clock = SteppingClock()
    final, done = await follow(
        fetch, Seen(), lambda _: None, clock=clock, interval_s=0.5, timeout_s=1.2
    )
    assert not done
    assert final["state"] == "pending"
    assert clock.slept == pytest.approx([0.5, 0.5, 0.2])


def test_settled_and_exit_codes() -> None:
    assert not settled(task("processing", []))
    assert not settled(task("succeeded", [], delivery("pending", 1)))
    assert not settled(task("succeeded", [], delivery("retrying", 1)))  # any unsettled status
    assert settled(task("succeeded", [], delivery("failed", 8, error="timeout")))
    gone = task("succeeded", [], delivery("failed", 8, error="timeout"))
    assert exit_code(gone) == 1  # the watcher's job is the webhook, and it failed
    assert summary(gone) == "t1: succeeded; 1 of 1 webhook(s) failed for good"
    for state in ("failed", "timed_out", "not_found", "cancelled"):
        assert settled(task(state, []))
        assert exit_code(task(state, [])) == 1
    assert exit_code(task("succeeded", [])) == 0


def test_a_delivery_failed_for_good_says_how_to_send_it_again() -> None:
    seen = Seen()
    [line] = seen.news(task("succeeded", [], delivery("failed", 8, error="connection refused")))
    assert line == (
        "U  task.succeeded -> app: failed for good after 8 attempt(s) "
        "(last: connection refused); apixo-watcher redeliver dlv_1"
    )
