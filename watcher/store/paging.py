"""Keyset pagination shared by SqliteStore and MemoryStore, so both stores page identically.

A page is ordered newest first by a (time, id) sort key; its cursor names the last row's key.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Final

from watcher.errors import InvalidCursor

MAX_LIMIT: Final = 1000


def clamp_limit(limit: int) -> int:
    """A page size within [1, MAX_LIMIT]."""
    return max(1, min(MAX_LIMIT, limit))


def encode_cursor(at: float, key: str) -> str:
    """An opaque cursor naming the last row of a page by its (time, id) sort key."""
    raw = f"{float(at)!r}|{key}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (time, id) sort key in a cursor from `encode_cursor`; InvalidCursor if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, key = raw.split("|", 1)
        at = float(at_text)
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidCursor(f"invalid cursor {cursor[:64]!r}") from exc
    if not math.isfinite(at):
        raise InvalidCursor(f"invalid cursor {cursor[:64]!r}")
    return at, key
