"""Sizes as people write them in a config file: `500KiB`, `16MiB`, `2GiB`, or a number of bytes.

Binary units only (what the contract's size keys use); `16MB` is refused with a hint rather
than guessed at, because "MB" means 10^6 to some and 2^20 to others.
"""

from __future__ import annotations

import math
import re

SIZE_HINT = "must be a size like 500KiB, 16MiB, 2GiB or a number of bytes"

_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_DECIMAL_UNITS = {"kb", "mb", "gb", "tb", "k", "m", "g", "t"}


def parse_size(value: object) -> int:
    """Bytes from a size: a non-negative whole number of bytes or a string like `16MiB`.

    Raises ValueError for anything else. The message says what is expected and never repeats
    the value, because a misplaced secret must not end up in an error message.
    """
    if isinstance(value, bool):
        raise ValueError(SIZE_HINT)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(SIZE_HINT)
        if not value.is_integer():
            raise ValueError("must be a whole number of bytes")
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(SIZE_HINT)
    text = value.strip().lower()
    negative = text.startswith("-")
    match = _SIZE.fullmatch(text.removeprefix("-").lstrip())
    if match is None:
        raise ValueError(SIZE_HINT)
    number, unit = match.groups()
    if unit in _DECIMAL_UNITS:
        binary = unit[0].upper() + "iB"
        raise ValueError(f"{SIZE_HINT} (binary units: write {binary}, not {unit.upper()})")
    if unit and unit not in _UNITS:
        raise ValueError(SIZE_HINT)
    if negative:
        raise ValueError("must not be negative")
    size = float(number) * _UNITS[unit or "b"]
    if not size.is_integer():
        raise ValueError("must be a whole number of bytes")
    return int(size)


def format_size(size: int) -> str:
    """The shortest exact form of `size` bytes: `16MiB`, `500KiB`, `1000B`; parses back."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _UNITS[unit.lower()]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
