"""Identifiers: a prefix and a time-ordered random part (ULID layout, Crockford base32).

Time-ordered ids keep "newest first" listings and cursors simple and index-friendly.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str, *, now: float | None = None) -> str:
    """A new unique id such as `msg_01HV...`: 48 bits of milliseconds, 80 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))
