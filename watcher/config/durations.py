"""Durations as people write them in a config file: `500ms`, `3s`, `5m`, `2h`, `1d`, or seconds.

Compound forms such as `2m30s` (what `format_duration` prints) are accepted too, so every
duration the watcher shows can be pasted back into the config.
"""

from __future__ import annotations

import math
import re

DURATION_HINT = "must be a duration like 500ms, 3s, 5m, 2h or a number of seconds"

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN = re.compile(_NUMBER)
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_COMPOUND = re.compile(rf"(?:{_NUMBER}(?:ms|s|m|h|d))+")


def parse_duration(value: object) -> float:
    """Seconds from a duration: a non-negative number of seconds or a string like `1.5s`, `2h`.

    Raises ValueError for anything else. The message says what is expected and never repeats
    the value, because a misplaced secret must not end up in an error message.
    """
    if isinstance(value, bool):
        raise ValueError(DURATION_HINT)
    if isinstance(value, int | float):
        return _checked(float(value))
    if not isinstance(value, str):
        raise ValueError(DURATION_HINT)
    text = value.strip()
    if text.startswith("-") and _is_duration_text(text[1:].lstrip()):
        raise ValueError("must not be negative")
    if _PLAIN.fullmatch(text):
        return _checked(float(text))
    if not _COMPOUND.fullmatch(text):
        raise ValueError(DURATION_HINT)
    return _checked(sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text)))


def _is_duration_text(text: str) -> bool:
    return bool(_PLAIN.fullmatch(text) or _COMPOUND.fullmatch(text))


def _checked(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError(DURATION_HINT)
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of `seconds`: `500ms`, `1.5s`, `2m30s`, `6h`, `1d2h`.

    Rounded to the millisecond (below one millisecond, fractions of it are shown). The result
    parses back with `parse_duration`.
    """
    if not math.isfinite(seconds):
        raise ValueError("cannot format a duration that is not finite")
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if 0 < seconds < 0.001:
        millis_text = f"{seconds * 1000:.6f}".rstrip("0").rstrip(".")
        return "0s" if millis_text == "0" else millis_text + "ms"
    total_ms = round(seconds * 1000)
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if millis:
        parts.append(f"{secs}.{millis:03d}".rstrip("0") + "s")
    elif secs:
        parts.append(f"{secs}s")
    return "".join(parts)
