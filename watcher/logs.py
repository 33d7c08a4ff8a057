"""Logging setup: structlog, one JSON object per line on stdout (journald keeps them).

- `format: json` (the default when stdout is not a TTY) or `console` (colour, for people).
- Under systemd, when stdout is the journal (`JOURNAL_STREAM` names stdout's device:inode),
  each line starts with a `<N>` syslog priority so journald files it at the right level.
- Known secret values are scrubbed from every event as a last line of defence: the code never
  logs a secret on purpose, and this makes sure a library's message can't leak one either.
- Standard-library loggers (aiohttp, asyncio) go through the same renderer.
- Every wall time in a line is ISO 8601 UTC like `ts`: fields pass them through `log_time`.

Loggers are cached on first use (assembling one per call cost ~2% of a busy daemon), so what a
reload may change is read through stable indirections rather than baked into the cached ones:
the level is a mutable threshold checked by `LevelLogger`'s methods (a call below it returns
at once, before any event dict is built), the processor chain is one list object updated in
place (as `structlog.testing.capture_logs` does), and the output is a sink writing to the
current stream.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

_orjson_dumps: Callable[..., bytes] | None
try:  # a dependency: about 3 µs less per JSON line; the standard library is the fallback
    _orjson_dumps = importlib.import_module("orjson").dumps
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_dumps = None

REDACTED = "[REDACTED]"
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# syslog priorities by level name (sd-daemon(3) prefixes)
_PRIORITY = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "critical": 2,
    "exception": 3,
}


class _Settings:
    """What a reload may change, read by the cached loggers on every call."""

    def __init__(self) -> None:
        # Nothing is filtered until configure_logging runs, like structlog's default config.
        self.level = logging.DEBUG
        self.stream: TextIO | None = None


_settings = _Settings()
# The one processor list handed to structlog; updated in place by configure_logging.
_processors: list[Any] = []


def enabled_for(level: int) -> bool:
    """Whether a log call at `level` would be emitted, for call sites that must not even
    build their arguments when it would not (e.g. a debug line per poll)."""
    return level >= _settings.level


def _interpolate(event: str, args: tuple[Any, ...]) -> str:
    if not args:
        return event
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        return event % args[0]
    return event % args


class LevelLogger(structlog.BoundLoggerBase):
    """A bound logger filtering on the current threshold (see the module docstring): the
    methods of structlog's filtering loggers, with a level that can change after caching."""

    def _at(self, level: int, name: str, event: str, args: tuple[Any, ...], kw: Any) -> Any:
        if level < _settings.level:
            return None
        return self._proxy_to_logger(name, _interpolate(event, args), **kw)

    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        if _settings.level > logging.DEBUG:
            return None
        return self._proxy_to_logger("debug", _interpolate(event, args), **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        if _settings.level > logging.INFO:
            return None
        return self._proxy_to_logger("info", _interpolate(event, args), **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._at(logging.WARNING, "warning", event, args, kw)

    warn = warning

    def error(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._at(logging.ERROR, "error", event, args, kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._at(logging.ERROR, "error", event, args, kw)

    def critical(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._at(logging.CRITICAL, "critical", event, args, kw)

    fatal = critical

    def log(self, level: int, event: str, *args: Any, **kw: Any) -> Any:
        name = logging.getLevelName(level).lower()
        return self._at(level, name, event, args, kw)

    def is_enabled_for(self, level: int) -> bool:
        return level >= _settings.level

    def get_effective_level(self) -> int:
        return _settings.level


class _Sink:
    """The output of every structlog logger: one line to the current stream, flushed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        stream = _settings.stream or sys.stdout
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_sink = _Sink()


def _sink_factory(*args: Any) -> _Sink:
    return _sink


class SecretScrubber:
    """A structlog processor replacing any known secret value inside string fields."""

    def __init__(self) -> None:
        self._secrets: tuple[str, ...] = ()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole. Very short values
        # (e.g. an empty token) are ignored: replacing them would mangle ordinary text.
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if self._secrets:
            for key, value in event_dict.items():
                event_dict[key] = self._scrub(value)
        return event_dict

    def redact(self, text: str) -> str:
        """`text` with every known secret value replaced by [REDACTED]."""
        return str(self._scrub(text))

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
                value = _scrub_cut_off(value, secret)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value


scrubber = SecretScrubber()
_ELLIPSES = ("...", "\u2026")
_SHORTEST_CUT = 6  # a shorter start of a secret says too little to be worth hiding


def _scrub_cut_off(value: str, secret: str) -> str:
    """`value` without a start of `secret` at its very end (before an ellipsis, if any): text
    shortened before it reached the scrubber may end inside a secret, and its first
    characters must not be logged either."""
    body = value
    tail = ""
    for ellipsis in _ELLIPSES:
        if body.endswith(ellipsis):
            body, tail = body[: -len(ellipsis)], ellipsis
            break
    # Only the last len(secret) - 1 characters can hold a start that the full match missed.
    start = max(0, len(body) - len(secret) + 1)
    index = body.find(secret[:_SHORTEST_CUT], start)
    while index != -1:
        if secret.startswith(body[index:]):
            return body[:index] + REDACTED + tail
        index = body.find(secret[:_SHORTEST_CUT], index + 1)
    return value


def stdout_is_journal(
    environ: MutableMapping[str, str] | None = None, stream: TextIO | None = None
) -> bool:
    """True when systemd connected stdout to the journal (see systemd.exec(5) JOURNAL_STREAM)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        st = os.fstat((stream or sys.stdout).fileno())
    except (OSError, ValueError):
        return False
    dev, _, ino = value.partition(":")
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def log_time(unix_s: float | None) -> str | None:
    """A wall time for a log field, written like `ts` (ISO 8601 UTC, microseconds, `Z`), so
    every time in a line reads the same way; None stays None. Durations stay numbers."""
    if unix_s is None:
        return None
    second = math.floor(unix_s)
    micros = min(999_999, round((unix_s - second) * 1_000_000))
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(second))}.{micros:06d}Z"


class _IsoUtcStamper:
    """`ts`: the current UTC time as ISO 8601 with microseconds and a `Z`, like structlog's
    `TimeStamper(fmt="iso", utc=True)`; the date and time up to the second are formatted once
    per second instead of per line."""

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached  # one tuple: threads never see a half-updated cache
        event_dict["ts"] = f"{cached[1]}.{int((now - second) * 1_000_000):06d}Z"
        return event_dict


def _json_fallback(value: Any) -> Any:
    """What structlog's JSON renderer does with a value JSON has no type for."""
    method = getattr(value, "__structlog__", None)
    return method() if callable(method) else repr(value)


# One encoder for every line: `json.dumps` with arguments builds a new one per call.
_json_encode = json.JSONEncoder(default=_json_fallback).encode


def _render_json(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
    """One JSON object per line, ASCII only, with orjson when it is installed (a value it
    refuses, e.g. an int beyond 64 bits or a non-string key, and any non-ASCII text go
    through the standard library instead)."""
    if _orjson_dumps is not None:
        try:
            line = _orjson_dumps(event_dict, default=_json_fallback).decode()
        except TypeError:
            pass
        else:
            if line.isascii():  # the standard library escapes the rest: same bytes out
                return line
    return _json_encode(event_dict)


def _add_priority(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict["_priority"] = _PRIORITY.get(str(event_dict.get("level", method)), 6)
    return event_dict


class _JournalPrefixRenderer:
    """Wraps a renderer and prefixes its line with `<N>` for journald."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        priority = event_dict.pop("_priority", 6)
        return f"<{priority}>{self._inner(logger, method, event_dict)}"


def _drop_priority(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("_priority", None)
    return event_dict


def configure_logging(
    *,
    level: str = "info",
    fmt: str | None = None,
    stream: TextIO | None = None,
    journal: bool | None = None,
) -> None:
    """Set up structlog and the standard library's logging. Safe to call again (reload)."""
    out = stream or sys.stdout
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    if journal is None:
        journal = stdout_is_journal(stream=out)
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = _render_json
    final: list[Any] = (
        [_add_priority, _JournalPrefixRenderer(renderer)] if journal else [_drop_priority, renderer]
    )

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _IsoUtcStamper(),
    ]
    _settings.level = _LEVELS.get(level, logging.INFO)
    _settings.stream = out
    _processors[:] = [
        *shared,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        scrubber,
        *final,
    ]
    structlog.configure(
        processors=_processors,
        wrapper_class=LevelLogger,
        logger_factory=_sink_factory,
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrubber,
                *final,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries stay at warning: their info chatter is not the daemon's story.
    root.setLevel(max(_LEVELS.get(level, logging.INFO), logging.WARNING))
