"""Logging: JSON lines by default, journald priorities under systemd, secrets scrubbed."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from watcher import logs as logs_module
from watcher.logs import REDACTED, configure_logging, enabled_for, scrubber, stdout_is_journal

SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFr"
API_KEY = "sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after each test."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    settings = logs_module._settings
    saved_settings = (settings.level, settings.stream, list(logs_module._processors))
    yield
    settings.level, settings.stream, logs_module._processors[:] = saved_settings
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    scrubber.set_secrets(())


def _journal_env(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    st = os.stat(path)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_by_default_when_not_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging(level="info", stream=out)
    log = structlog.get_logger("watcher.test")
    log.info("task_registered", task_id="task_1", model="nano-banana")
    log.debug("not_shown")
    logging.getLogger("aiohttp.access").warning("a library speaks")

    lines = _json_lines(out.getvalue())
    assert [line["event"] for line in lines] == ["task_registered", "a library speaks"]
    first = lines[0]
    assert first["task_id"] == "task_1"
    assert first["model"] == "nano-banana"
    assert first["level"] == "info"
    assert first["ts"].endswith("Z")
    assert lines[1]["level"] == "warning"
    assert lines[1]["logger"] == "aiohttp.access"
    assert not out.getvalue().startswith("<")


def test_console_format_by_default_on_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=True) as tty:
            configure_logging(level="info", stream=tty)
            structlog.get_logger("watcher.test").info("daemon_ready", intake="127.0.0.1:1")
            tty.flush()
            text = os.read(master, 65536).decode(errors="replace")
    finally:
        os.close(master)
    assert "daemon_ready" in text
    assert not text.lstrip().startswith("{")


def test_stdout_is_journal_matches_the_streams_device_and_inode(tmp_path: Path) -> None:
    path = tmp_path / "journal-stream"
    other = tmp_path / "other"
    path.touch()
    other.touch()
    st, st_other = os.stat(path), os.stat(other)
    with path.open("w") as stream:
        assert stdout_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        assert not stdout_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st_other.st_ino}"}, stream)
        assert not stdout_is_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not stdout_is_journal({}, stream)
    # A stream without a file descriptor is never the journal.
    assert not stdout_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, io.StringIO())


def test_journald_mode_prefixes_each_line_with_its_syslog_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal-stream"
    path.touch()
    _journal_env(monkeypatch, path)
    with path.open("w") as stream:
        configure_logging(level="debug", stream=stream)
        log = structlog.get_logger("watcher.test")
        log.error("background_task_died", loop="scheduler")
        log.warning("config_change_needs_restart", key="store.path")
        log.info("daemon_ready")
        log.debug("poll_scheduled")
        logging.getLogger("aiohttp.server").error("Error handling request")
        stream.flush()

    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<3>", "<4>", "<6>", "<7>", "<3>"]
    # After the prefix, each line is still one JSON object, without the internal field.
    events = [json.loads(line[3:]) for line in lines]
    assert [e["event"] for e in events] == [
        "background_task_died",
        "config_change_needs_restart",
        "daemon_ready",
        "poll_scheduled",
        "Error handling request",
    ]
    assert all("_priority" not in e for e in events)


def test_not_journald_when_journal_stream_names_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.touch()
    _journal_env(monkeypatch, elsewhere)  # e.g. a child whose stdout was redirected
    path = tmp_path / "out"
    with path.open("w") as stream:
        configure_logging(level="info", stream=stream)
        structlog.get_logger("watcher.test").error("boom")
    (event,) = _json_lines(path.read_text())
    assert event["event"] == "boom"


def test_known_secrets_are_scrubbed_from_structlog_events() -> None:
    out = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=out, journal=False)
    scrubber.set_secrets([SECRET, API_KEY, ""])  # empty/short values are ignored
    log = structlog.get_logger("watcher.test")
    log.warning(
        "upstream_error",
        error=f"401 for Authorization: Bearer {API_KEY}",
        detail={"nested": [SECRET, "fine"]},
        count=3,
    )
    try:
        raise ValueError(f"bad secret {SECRET}")
    except ValueError:
        log.exception("delivery_crashed")

    text = out.getvalue()
    assert SECRET not in text
    assert API_KEY not in text
    warning, crash = _json_lines(text)
    assert warning["error"] == f"401 for Authorization: Bearer {REDACTED}"
    assert warning["detail"] == {"nested": [REDACTED, "fine"]}
    assert warning["count"] == 3
    assert f"bad secret {REDACTED}" in crash["exception"]


def test_known_secrets_are_scrubbed_from_standard_library_records() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out, journal=False)
    scrubber.set_secrets([API_KEY])
    logging.getLogger("aiohttp.client").warning("request failed: %s", f"?key={API_KEY}")
    try:
        raise ConnectionError(f"token {API_KEY} refused")
    except ConnectionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")

    text = out.getvalue()
    assert API_KEY not in text
    first, second = _json_lines(text)
    assert first["event"] == f"request failed: ?key={REDACTED}"
    assert f"token {REDACTED} refused" in second["exception"]


@pytest.mark.parametrize("cut", [6, 10, 15, len(API_KEY) - 1])
@pytest.mark.parametrize("ellipsis", ["", "...", "\u2026"])
def test_a_secret_cut_off_at_the_end_of_a_value_is_scrubbed_too(cut: int, ellipsis: str) -> None:
    # A message shortened by someone else (a library, an upstream) may end inside a secret:
    # its first characters must not reach the log either.
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out, journal=False)
    scrubber.set_secrets([API_KEY])
    cut_off = f"HTTP 401: invalid key {API_KEY[:cut]}{ellipsis}"
    structlog.get_logger("watcher.test").warning("x", detail=cut_off, items=[cut_off])
    (event,) = _json_lines(out.getvalue())
    assert event["detail"] == f"HTTP 401: invalid key {REDACTED}{ellipsis}"
    assert event["items"] == [event["detail"]]
    assert API_KEY[:6] not in out.getvalue()


def test_text_that_merely_ends_like_a_secret_starts_is_kept_when_short() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out, journal=False)
    scrubber.set_secrets([API_KEY])
    structlog.get_logger("watcher.test").info("x", value="model sk-li")  # 5 characters: kept
    (event,) = _json_lines(out.getvalue())
    assert event["value"] == "model sk-li"


def test_a_secret_containing_another_is_replaced_whole() -> None:
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out, journal=False)
    scrubber.set_secrets(["abcdef", "abcdef-and-more"])
    structlog.get_logger("watcher.test").info("x", value="abcdef-and-more")
    (event,) = _json_lines(out.getvalue())
    assert event["value"] == REDACTED


def test_reconfiguring_keeps_a_single_handler() -> None:
    # Reload calls configure_logging again: lines must not start to appear twice.
    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out, journal=False)
    configure_logging(level="info", fmt="json", stream=out, journal=False)
    logging.getLogger("aiohttp.client").warning("once")
    assert len(_json_lines(out.getvalue())) == 1


def test_a_reload_changes_level_format_and_stream_of_loggers_already_in_use() -> None:
    # Loggers are cached on first use; a reload must still reach them.
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level="info", fmt="json", stream=first, journal=False)
    log = structlog.get_logger("watcher.test")
    log.info("before_reload")
    log.debug("hidden")
    assert not enabled_for(logging.DEBUG)

    configure_logging(level="debug", fmt="console", stream=second, journal=False)
    log.debug("after_reload", task_id="t1")
    assert enabled_for(logging.DEBUG)

    configure_logging(level="warning", fmt="json", stream=second, journal=False)
    log.info("filtered_again")
    log.warning("still_shown", n=1)

    assert [e["event"] for e in _json_lines(first.getvalue())] == ["before_reload"]
    console, json_line = second.getvalue().splitlines()
    assert "after_reload" in console
    assert not console.lstrip().startswith("{")
    assert json.loads(json_line)["event"] == "still_shown"


def test_json_lines_are_ascii_with_a_utc_timestamp_and_any_value_rendered() -> None:
    """Operators grep and parse these lines: one ASCII JSON object each, whatever the values
    (with or without the optional orjson), and a `ts` in UTC with microseconds."""

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    out = io.StringIO()
    configure_logging(level="info", fmt="json", stream=out, journal=False)
    log = structlog.get_logger("watcher.test")
    before = datetime.now(UTC)
    log.info(
        "webhook_delivered",
        endpoint="caf\u00e9",
        attempt=2,
        status_code=None,
        duration_ms=3.25,
        huge=2**70,
        value=Opaque(),
    )
    after = datetime.now(UTC)

    text = out.getvalue()
    assert text.isascii()
    (event,) = _json_lines(text)
    assert event["endpoint"] == "caf\u00e9"
    assert (event["attempt"], event["status_code"], event["duration_ms"]) == (2, None, 3.25)
    assert event["huge"] == 2**70
    assert event["value"] == "<opaque>"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["ts"])
    stamped = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= stamped <= after + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("unix_s", "expected"),
    [
        (1767225612.5, "2026-01-01T00:00:12.500000Z"),
        (1767225612.0, "2026-01-01T00:00:12.000000Z"),
        (1767225612.9999998, "2026-01-01T00:00:12.999999Z"),  # never rounds into a 7th digit
        (0.0, "1970-01-01T00:00:00.000000Z"),
    ],
)
def test_log_time_writes_a_wall_time_like_ts(unix_s: float, expected: str) -> None:
    assert logs_module.log_time(unix_s) == expected
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", expected)


def test_log_time_keeps_none() -> None:
    assert logs_module.log_time(None) is None
