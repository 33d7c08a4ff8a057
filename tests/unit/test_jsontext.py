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


ENCODABLE: list[Any] = [
    {"order_id": 42, "customer": "c7"},
    {"é": "日本", "q": 'a"b\\c\n', "n": None, "t": True, "f": -0.0, "big": 10**30},
    {1: "int key", "l": [1, [2, {"k": "v"}]], "e": {}, "x": []},
    [1, 2.5, "three", None],
    "just text",
    7,
    None,
    1e300,
]


@pytest.mark.parametrize("accelerated", [True, False], ids=["c-encoder", "fallback"])
@pytest.mark.parametrize("value", ENCODABLE)
def test_dumps_writes_what_json_dumps_writes(
    value: Any, accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not accelerated:
        monkeypatch.setattr(jsontext, "_make_encoder", None)
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert jsontext.dumps(value) == expected
    assert jsontext.dumps(value) == expected  # the same again: nothing is kept between calls


@pytest.mark.parametrize("accelerated", [True, False], ids=["c-encoder", "fallback"])
def test_dumps_errors_are_the_same_on_both_paths(
    accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not accelerated:
        monkeypatch.setattr(jsontext, "_make_encoder", None)
    cycle: list[Any] = []
    cycle.append(cycle)
    shared: list[Any] = [1]
    with pytest.raises(ValueError, match="Circular"):
        jsontext.dumps({"a": cycle})
    with pytest.raises(ValueError, match="Out of range"):
        jsontext.dumps({"a": math.nan})
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsontext.dumps({"a": object()})
    # A value seen in a failed call is not taken for a cycle afterwards.
    assert jsontext.dumps({"a": shared, "b": shared}) == '{"a":[1],"b":[1]}'


@pytest.mark.parametrize(
    "value",
    [{}, {"a": 1}, {"a": {}}, {"a": 1, "b": [1]}, {"a": [[[]]]}, [], 5, "x"],
)
def test_depth_of_a_flat_object_is_the_walk_s(value: Any) -> None:
    assert jsontext.depth(value) == jsontext._walk(value, jsontext.MAX_DEPTH, fix_text=False)
    assert jsontext.depth(value, 0) == jsontext._walk(value, 0, fix_text=False)
