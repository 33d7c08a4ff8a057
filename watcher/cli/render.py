"""How the operator commands show a task's outcome to a person (pure: JSON in, lines out).

The outcome comes from the task's terminal event, exactly as its webhooks carried it: result
URLs (with the mirrored files and any mirror error), or the
failure's code and message, or why the watcher gave up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

LABEL_WIDTH = 12  # "registered  " - the label column of `show`


def labelled(label: str, values: Sequence[str]) -> list[str]:
    """`label` on the first line, the values one per line under each other."""
    pad = " " * LABEL_WIDTH
    return [
        (label.ljust(LABEL_WIDTH - 1) + " " if i == 0 else pad) + value
        for i, value in enumerate(values or ["-"])
    ]


def outcome_data(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The `data` of the task's terminal webhook event, or None before it ends."""
    for event in reversed(task.get("events") or []):
        if event.get("type") == "task.processing":
            continue
        payload = event.get("payload")
        data = payload.get("data") if isinstance(payload, Mapping) else None
        if isinstance(data, Mapping):
            return data
    return None


def _size(count: Any) -> str:
    if not isinstance(count, int | float) or isinstance(count, bool):
        return "? bytes"
    if count < 1024:
        return f"{count:.0f} bytes"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _mirrored_lines(data: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    mirrored = data.get("mirrored")
    if isinstance(mirrored, list) and mirrored:
        files = [
            f"{f.get('url')} ({_size(f.get('bytes'))}, sha256 {str(f.get('sha256'))[:12]}...)"
            for f in mirrored
            if isinstance(f, Mapping)
        ]
        lines += labelled("mirrored", files)
    error = data.get("mirror_error")
    if isinstance(error, Mapping):
        failed = error.get("failed_urls") or [error.get("source_url")]
        lines += labelled(
            "mirror error", [str(error.get("message"))] + [f"not mirrored: {u}" for u in failed]
        )
    return lines


def outcome_lines(task: Mapping[str, Any]) -> list[str]:
    """The result of a task for `show` (and the end of `--wait`/`--follow`)."""
    state = task.get("state")
    data = outcome_data(task)
    if state == "cancelled":
        return labelled("result", ["none: cancelled, no webhook was sent"])
    if data is None:
        files = [f for f in task.get("mirror") or [] if isinstance(f, Mapping)]
        if state == "succeeded" and files:
            copied = sum(1 for f in files if f.get("status") == "done")
            return labelled(
                "result",
                [
                    f"- (copying the result files: {copied} of {len(files)} done; "
                    "the webhook goes out when they are)"
                ],
            )
        if state in ("pending", "processing"):
            return labelled("result", ["- (not finished yet)"])
        return labelled("result", ["-"])
    if state == "succeeded":
        urls = [str(u) for u in data.get("result_urls") or []]
        return labelled("result", urls or ["(no result URLs)"]) + _mirrored_lines(data)
    if state == "failed":
        code = data.get("fail_code") or "-"
        message = data.get("fail_msg") or "-"
        return labelled("failure", [f"{code}: {message}"])
    watched = data.get("watched_seconds")
    how_long = f"{watched:.0f} s" if isinstance(watched, int | float) else "?"
    why = "deadline reached" if state == "timed_out" else "the upstream does not know it"
    last = data.get("last_state") or "-"
    return labelled("gave up", [f"{why} after {how_long}; last upstream state: {last}"])
