"""`add --wait` and `show --follow`: watch one task until it is settled, printing what happens.

Settled means the task is terminal and each of its webhooks is delivered or failed for good.
The command asks the intake API for the task every half second (one cheap local request; no
server push is needed for a person watching a terminal) and prints each new state change and
each delivery attempt's outcome. The loop takes its fetch function and clock as arguments,
so it is tested without a daemon and without sleeping.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher.cli.common import EXIT_FAILURE, EXIT_OK
from watcher.cli.render import outcome_lines
from watcher.clock import Clock, SystemClock

POLL_INTERVAL_S = 0.5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
ACTIVE_STATES = frozenset({"pending", "processing"})
SETTLED_DELIVERIES = frozenset({"succeeded", "failed"})  # anything else is still retried

Task = Mapping[str, Any]
Fetch = Callable[[], Awaitable[Task]]


def _s(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


@dataclass
class Seen:
    """What has been printed already: state changes by count, deliveries by (status, attempts)."""

    changes: int = 0
    deliveries: dict[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, task: Task) -> Seen:
        """Everything in `task` counts as printed (`show --follow` printed it in full)."""
        seen = cls()
        seen.news(task)
        return seen

    def news(self, task: Task) -> list[str]:
        """Lines for what changed since the last call, oldest first."""
        lines = []
        changes = task.get("state_changes") or []
        for c in changes[self.changes :]:
            reason = f" ({c['reason']})" if c.get("reason") else ""
            lines.append(f"{_s(c.get('at'))}  {c['from_state']} -> {c['to_state']}{reason}")
        self.changes = len(changes)
        for d in task.get("deliveries") or []:
            now = (str(d["status"]), int(d.get("attempts") or 0))
            if self.deliveries.get(d["delivery_id"]) == now:
                continue
            self.deliveries[d["delivery_id"]] = now
            lines.append(_delivery_line(d))
        return lines


def _last_answer(d: Mapping[str, Any]) -> str:
    if d.get("last_status_code") is not None:
        return f"HTTP {d['last_status_code']}"
    return _s(d.get("last_error"))


def _delivery_line(d: Mapping[str, Any]) -> str:
    where = f"{d['event_type']} -> {d['endpoint']}"
    status, attempts = d["status"], int(d.get("attempts") or 0)
    when = _s(d.get("updated_at"))
    if status == "succeeded":
        return f"{when}  {where}: delivered (attempt {attempts}, {_last_answer(d)})"
    if status == "failed":
        return (
            f"{when}  {where}: failed for good after {attempts} attempt(s) "
            f"(last: {_last_answer(d)}); apixo-watcher redeliver {d['delivery_id']}"
        )
    if attempts == 0:
        return f"{_s(d.get('created_at'))}  {where}: queued (webhook-id {d['webhook_id']})"
    return (
        f"{when}  {where}: attempt {attempts} failed ({_last_answer(d)}), "
        f"next attempt at {_s(d.get('next_attempt_at'))}"
    )


def settled(task: Task) -> bool:
    """Terminal, and every webhook delivered or failed for good."""
    return task["state"] not in ACTIVE_STATES and all(
        d["status"] in SETTLED_DELIVERIES for d in task.get("deliveries") or []
    )


def exit_code(task: Task) -> int:
    """0 only for a succeeded task whose webhooks were all delivered."""
    failed = any(d["status"] == "failed" for d in task.get("deliveries") or [])
    return EXIT_OK if task["state"] == "succeeded" and not failed else EXIT_FAILURE


def summary(task: Task) -> str:
    """The last line: how the task ended and what became of its webhooks."""
    deliveries = task.get("deliveries") or []
    failed = [d for d in deliveries if d["status"] == "failed"]
    if failed:
        webhooks = f"{len(failed)} of {len(deliveries)} webhook(s) failed for good"
    elif deliveries:
        webhooks = "webhooks delivered"
    else:
        webhooks = "no webhook to send"
    return f"{task['task_id']}: {task['state']}; {webhooks}"


async def follow(
    fetch: Fetch,
    seen: Seen,
    say: Callable[[str], None],
    *,
    clock: Clock,
    interval_s: float = POLL_INTERVAL_S,
    timeout_s: float | None = None,
) -> tuple[Task, bool]:
    """Fetch the task until it is settled or `timeout_s` passes, saying what is new each
    time. Returns the last answer and whether it is settled."""
    # The timeout runs on the monotonic clock: a step of the wall clock must not end it.
    deadline = None if timeout_s is None else clock.monotonic() + timeout_s
    while True:
        task = await fetch()
        for line in seen.news(task):
            say(line)
        if settled(task):
            return task, True
        wait = interval_s
        if deadline is not None:
            left = deadline - clock.monotonic()
            if left <= 0:
                return task, False
            wait = min(wait, left)
        await clock.sleep(wait)


def wait_command(
    fetch: Fetch,
    task_id: str,
    *,
    seen: Seen,
    as_json: bool,
    timeout_s: float | None,
    header: str,
    print_outcome: bool = True,
    clock: Clock | None = None,
) -> int:
    """Say `header`, run `follow` and print the outcome (unless the caller printed it and it
    was settled already); the exit code of `--wait`."""
    # With --json, stdout carries only the final task; progress goes to stderr.
    stream = sys.stderr if as_json else sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    try:
        # From the header on, Ctrl-C gets its explanation, however early it comes.
        say(header)
        task, done = asyncio.run(
            follow(fetch, seen, say, clock=clock or SystemClock(), timeout_s=timeout_s)
        )
    except KeyboardInterrupt:
        print(
            f"\napixo-watcher: stopped waiting; {task_id} is still watched "
            f"(apixo-watcher show {task_id} --follow)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if as_json:
        print(json.dumps(task, indent=2, ensure_ascii=False))
    if not done:
        say(
            f"{task_id}: still {task['state']} after {timeout_s:g} s; stopped waiting "
            "(the daemon keeps watching it)"
        )
        return EXIT_FAILURE
    if print_outcome:
        for line in outcome_lines(task):
            say(line)
    say(summary(task))
    return exit_code(task)
