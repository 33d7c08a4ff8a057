"""Sizes as a config file writes them: `500KiB`, `16MiB`, `2GiB` or a number of bytes."""

from __future__ import annotations

import pytest

from watcher.config.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("1024", 1024),
        ("512B", 512),
        ("500KiB", 500 * 1024),
        ("16MiB", 16 * 1024 * 1024),
        ("2GiB", 2 * 1024**3),
        ("1TiB", 1024**4),
        ("1.5MiB", 1536 * 1024),
        (" 16 MiB ", 16 * 1024 * 1024),
        ("16mib", 16 * 1024 * 1024),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must not be negative"),
        ("-5MiB", "must not be negative"),
        (True, "must be a size like 500KiB, 16MiB, 2GiB or a number of bytes"),
        (1.5, "must be a whole number of bytes"),
        ("0.5B", "must be a whole number of bytes"),
        ("", "must be a size"),
        ("16MB", "binary units: write MiB, not MB"),
        ("2g", "binary units: write GiB, not G"),
        ("16 mega", "must be a size"),
        ("1e3", "must be a size"),
        (None, "must be a size"),
        (float("inf"), "must be a size"),
        ("sk-live-abcdef0123456789", "must be a size like"),  # never echoed
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_size(value)
    assert "abcdef0123456789" not in str(caught.value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1000, "1000B"),
        (1024, "1KiB"),
        (1536, "1536B"),
        (16 * 1024 * 1024, "16MiB"),
        (500 * 1024, "500KiB"),
        (3 * 1024**3, "3GiB"),
    ],
)
def test_format_size_round_trips(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
