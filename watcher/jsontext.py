"""JSON as RFC 8259 defines it: reading what outsiders send, writing what the daemon sends.

Python's `json` module is laxer than the RFC on both sides: it reads and writes `NaN`,
`Infinity` and `-Infinity` (not JSON at all), reads `1e999` as an infinite float that it then
writes back as `Infinity`, and recurses once per nesting level, so a 2 KB answer of `[[[[...`
raises RecursionError wherever it is parsed or written. The upstream, a receiver and an intake
client are outsiders; none of that may reach a webhook body or take the daemon down.

- `parse` reads untrusted JSON: a non-finite number becomes `null` (as JavaScript's
  `JSON.stringify` writes it), a string with a lone UTF-16 surrogate (`"\\ud800"`, which no
  UTF-8 body can carry) has it replaced by U+FFFD, and nesting deeper than `max_depth` is
  refused with `JsonRefused` (a ValueError), like any other invalid JSON.
- `dumps` writes strict JSON (`allow_nan=False`): a non-finite float there is a bug, and fails
  loudly instead of producing a body a strict receiver rejects.
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

# Deep enough for any real answer (the upstream's envelope is 3 levels, resultJson 2-3), far
# below the interpreter's recursion limit, so what passes can be written back and walked.
MAX_DEPTH: Final = 64
# A lone surrogate can only come from a \\uD800-\\uDFFF escape: UTF-8 cannot encode one.
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonRefused(ValueError):
    """Syntactically JSON, but not accepted (nested too deeply)."""


def parse(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value of untrusted JSON `text` (see the module docstring).

    Raises ValueError (JSONDecodeError, UnicodeDecodeError or JsonRefused) for anything that
    is not acceptable JSON; never RecursionError.
    """
    raw = text.encode() if isinstance(text, str) else text
    if isinstance(text, bytes):
        # RFC 8259: JSON between systems is UTF-8. Strictly: encoded surrogates are refused.
        text = text.decode("utf-8").removeprefix("\ufeff")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise JsonRefused(f"nested more than {max_depth} levels deep") from None
    # (A plain substring test first: the usual answer has no \\u escape at all.)
    fix_text = b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None
    if fix_text and isinstance(value, str):
        return _valid_text(value)
    # Fewer brackets than levels allowed cannot nest too deeply: the usual answer skips the walk.
    may_be_deep = raw.count(b"[") + raw.count(b"{") > max_depth
    if (fix_text or may_be_deep) and _walk(value, max_depth, fix_text=fix_text) > max_depth:
        raise JsonRefused(f"nested more than {max_depth} levels deep")
    return value


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply `value` nests (a scalar 0, `{}` 1, `{"a": []}` 2), counted without
    recursion; counting stops once it passes `limit`."""
    if type(value) is dict and limit >= 1:
        # The common metadata, a flat object, without the walk.
        for child in value.values():
            if isinstance(child, dict | list):
                break
        else:
            return 1
    return _walk(value, limit, fix_text=False)


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of `value`: compact (unless `indent`), UTF-8 ready, no NaN/Infinity.

    Raises ValueError for a non-finite float, TypeError for a value JSON has no type for.
    """
    if indent is None:
        if _make_encoder is None:  # no C accelerator in this build
            return _COMPACT.encode(value)
        # What _COMPACT.encode does, without its Python layers: half the cost of a small value.
        # A fresh markers dict per call, as there: it is how a cycle is found (ValueError).
        encode = _make_encoder(
            {},
            _COMPACT.default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )
        return "".join(encode(value, 0))
    return json.dumps(
        value, separators=(",", ": "), indent=indent, ensure_ascii=False, allow_nan=False
    )


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (for values that did not come
    through `parse`, e.g. metadata stored before it was checked). Nesting up to MAX_DEPTH."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _no_constant(name: str) -> None:
    return None  # NaN, Infinity, -Infinity


def _finite_float(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None  # 1e999 overflows to inf


# The compact encoder's options, set once: json.dumps with options builds an encoder per call.
# The tasks file writes 100,000 metadata in a row, the deliverer a body per event.
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# The C encoder JSONEncoder.iterencode builds on each call (not in typeshed; None in builds
# without the accelerator).
_make_encoder: Callable[..., Callable[[Any, int], Sequence[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
# One decoder for every call: json.loads with hooks would build a new one each time (~5 us,
# per poll).
_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def _walk(value: Any, limit: int, *, fix_text: bool) -> int:
    """The nesting depth of `value` (stopping past `limit`); with `fix_text`, lone surrogates
    in its strings (keys too) are replaced by U+FFFD in place."""
    if not isinstance(value, dict | list):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        if isinstance(node, dict):
            if fix_text:
                _fix_dict(node)
            children = node.values()
        else:
            if fix_text:
                for index, item in enumerate(node):
                    if isinstance(item, str):
                        node[index] = _valid_text(item)
            children = node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    return deepest


def _fix_dict(node: dict[Any, Any]) -> None:
    fixed = [
        (_valid_text(k) if isinstance(k, str) else k, _valid_text(v) if isinstance(v, str) else v)
        for k, v in node.items()
    ]
    node.clear()  # rebuilt in place, in the same order
    node.update(fixed)


def _valid_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Pairs were already joined by the parser; only lone halves are left to replace.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
