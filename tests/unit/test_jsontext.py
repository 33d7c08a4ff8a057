"""jsontext: untrusted JSON in, RFC 8259 JSON out (issue 9, items 1 and 2)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from watcher import jsontext


def strict_loads(text: str | bytes) -> Any:
    """What a strict receiver does: NaN and Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": NaN}', {"a": None}),
        ("[Infinity, -Infinity]", [None, None]),
        (
            '{"cost": 1e999, "small": -1e999, "tiny": 1e-999}',
            {"cost": None, "small": None, "tiny": 0.0},
        ),
        ('{"ok": 1.5, "n": 3, "s": "NaN"}', {"ok": 1.5, "n": 3, "s": "NaN"}),
        ('"\\ud83d\\ude00"', "\U0001f600"),  # a proper pair stays
        ('{"\\ud800k": ["x\\udc00"]}', {"\ufffdk": ["x\ufffd"]}),  # lone halves do not
    ],
)
def test_parse_makes_values_that_strict_json_can_carry(text: str, value: Any) -> None:
    parsed = jsontext.parse(text)
    assert parsed == value
    out = jsontext.dumps(parsed)
    assert strict_loads(out) == value
    out.encode("utf-8")  # a lone surrogate would raise here


@pytest.mark.parametrize("levels", [65, 1000, 100_000])
def test_parse_refuses_deep_nesting_without_recursing(levels: int) -> None:
    with pytest.raises(jsontext.JsonRefused, match="nested more than 64 levels"):
        jsontext.parse("[" * levels + "]" * levels)
    with pytest.raises(ValueError, match="nested more than 64 levels"):
        jsontext.parse(('{"a":' * levels + "1" + "}" * levels).encode())


def test_parse_accepts_nesting_up_to_the_limit() -> None:
    assert jsontext.depth(jsontext.parse("[" * 64 + "]" * 64)) == 64


@pytest.mark.parametrize("text", [b"{not json", b"\xff\xfe", b"", b"[1,]"])
def test_parse_errors_are_value_errors(text: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - JSONDecodeError or UnicodeDecodeError
        jsontext.parse(text)


def test_depth_counts_containers() -> None:
    assert jsontext.depth(1) == 0
    assert jsontext.depth({}) == 1
    assert jsontext.depth({"a": [1, {"b": []}]}) == 4
    deep: Any = []
    for _ in range(10_000):  # no recursion: deeper than the interpreter could walk
        deep = [deep]
    assert jsontext.depth(deep, limit=100) == 101


def test_dumps_refuses_what_is_not_json() -> None:
    assert jsontext.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="not JSON compliant"):
            jsontext.dumps({"x": bad})


def test_finite_replaces_non_finite_floats() -> None:
    assert jsontext.finite({"a": [math.nan, 1.0, {"b": math.inf}], "c": "x"}) == {
        "a": [None, 1.0, {"b": None}],
        "c": "x",
    }


def test_bytes_are_strict_utf8() -> None:
    assert jsontext.parse(b'\xef\xbb\xbf{"a": "\xc3\xa9"}') == {"a": "é"}  # a BOM is tolerated
    with pytest.raises(UnicodeDecodeError):
        jsontext.parse(b'"\xed\xa0\x80"')  # an encoded lone surrogate is not UTF-8
