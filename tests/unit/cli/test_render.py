"""How `show` words a task's outcome, from the terminal event its webhooks carried."""

from __future__ import annotations

from typing import Any

from watcher.cli.render import outcome_lines


def _task(state: str, data: dict[str, Any] | None, *extra_events: str) -> dict[str, Any]:
    events = [{"type": t, "payload": {"type": t, "data": {}}} for t in extra_events]
    if data is not None:
        events.append({"type": f"task.{state}", "payload": {"type": "x", "data": data}})
    return {"state": state, "events": events}


def test_succeeded_lists_every_result_url_under_one_label() -> None:
    task = _task("succeeded", {"result_urls": ["https://a/1.png", "https://a/2.png"]})
    assert outcome_lines(task) == [
        "result      https://a/1.png",
        "            https://a/2.png",
    ]


def test_the_terminal_event_counts_not_a_later_processing_one() -> None:
    task = _task("succeeded", {"result_urls": ["https://a/1.png"]})
    task["events"].append({"type": "task.processing", "payload": {"data": {}}})
    assert outcome_lines(task) == ["result      https://a/1.png"]


def test_mirrored_files_and_a_mirror_error_follow_the_result() -> None:
    data = {
        "result_urls": ["https://a/1.png", "https://a/2.png"],
        "mirrored": [
            {
                "source_url": "https://a/1.png",
                "url": "https://files.example.com/r/1.png",
                "key": "r/1.png",
                "sha256": "0123456789abcdef" * 4,
                "bytes": 3 * 1024 * 1024,
                "content_type": "image/png",
            }
        ],
        "mirror_error": {
            "source_url": "https://a/2.png",
            "message": "timed out after 10m",
            "failed_urls": ["https://a/2.png"],
        },
    }
    assert outcome_lines(_task("succeeded", data)) == [
        "result      https://a/1.png",
        "            https://a/2.png",
        "mirrored    https://files.example.com/r/1.png (3.0 MiB, sha256 0123456789ab...)",
        "mirror error timed out after 10m",
        "            not mirrored: https://a/2.png",
    ]


def test_failed_timed_out_not_found_cancelled_and_active() -> None:
    assert outcome_lines(_task("failed", {"fail_code": "E1", "fail_msg": "bad prompt"})) == [
        "failure     E1: bad prompt"
    ]
    timed_out = _task("timed_out", {"last_state": "processing", "watched_seconds": 3600.2})
    assert outcome_lines(timed_out) == [
        "gave up     deadline reached after 3600 s; last upstream state: processing"
    ]
    not_found = _task("not_found", {"last_state": None, "watched_seconds": 120})
    assert outcome_lines(not_found) == [
        "gave up     the upstream does not know it after 120 s; last upstream state: -"
    ]
    assert outcome_lines(_task("cancelled", None)) == [
        "result      none: cancelled, no webhook was sent"
    ]
    assert outcome_lines(_task("processing", None, "task.processing")) == [
        "result      - (not finished yet)"
    ]
