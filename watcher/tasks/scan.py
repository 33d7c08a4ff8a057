"""A fast reading of the plainest tasks files, with no YAML node tree.

PyYAML builds a Python node (and two marks) for every value before anything is constructed:
for a file of 100,000 entries that is ~1.1 million objects and most of the reader's time, and
libyaml's loader constructs in Python too, so it is no faster. Most tasks files are written by
programs in one plain shape, line by line:

    tasks:
      - task_id: order-0042
        model: nano-banana
        metadata: {order_id: 42, customer: c7}

For that shape each line is one regular expression. Every line must match one of two forms (an
entry's first line `- key: value` or a further `key: value` of it) with plain scalars of safe
characters, or flow mappings and lists of them, one level deep; anything else (comments, blank
lines, quotes, block nesting, anchors, aliases, tags, duplicate keys, a value whose type is not
str, int, float, bool or null) makes `scan_tasks` answer None and the caller composes the
document as before. So correctness never rests on this path: it only accepts text that the
composed path reads the same way, and the type of each scalar is decided by PyYAML's own
resolver and constructors (YAML 1.1, as the safe loader). Tests compare both paths on a table
of documents.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import yaml
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"

# Plain scalars: a safe first character, then no space, quote, comment, anchor, alias or tag
# indicator, and no ':' at the end (that would be a key). In a flow collection ',', ':' and
# brackets end a scalar, so they are left out.
_BLOCK_SCALAR = r"-?[A-Za-z0-9_](?:[A-Za-z0-9_.:/+=?&%~@-]*[A-Za-z0-9_./+=?&%~@-])?"
_FLOW_SCALAR = r"-?[A-Za-z0-9_][A-Za-z0-9_./+=?&%~@-]*"
_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
_FLOW_MAP = rf"\{{(?:{_KEY}: {_FLOW_SCALAR}(?:, {_KEY}: {_FLOW_SCALAR})*)?\}}"
_FLOW_SEQ = rf"\[(?:{_FLOW_SCALAR}(?:, {_FLOW_SCALAR})*)?\]"
_VALUE = rf"{_FLOW_MAP}|{_FLOW_SEQ}|{_BLOCK_SCALAR}"
_LINE = rf"{_KEY}: (?:{_VALUE})\n"
# The whole document, one C call: the first entry fixes the indentation of all the others.
# The repeats are possessive (`*+`): a line is one entry's first line or a further line of it
# and nothing else, so giving lines back could never make a match, and not keeping the state
# to do so makes the call four times cheaper (0.18 -> 0.045 s for 100,000 entries).
_DOCUMENT = re.compile(
    rf"tasks:\n(?P<indent> *)- {_LINE}(?:(?P=indent)  {_LINE})*+"
    rf"(?:(?P=indent)- {_LINE}(?:(?P=indent)  {_LINE})*+)*+"
)
# Then its lines, in order (the document matched, so each line is one of the two forms).
_ROWS = re.compile(rf"^ *(- )?({_KEY}): (.*)$", re.MULTILINE)
_FLOW_PAIRS = re.compile(rf"({_KEY}): ({_FLOW_SCALAR})")
_FLOW_ITEMS = re.compile(_FLOW_SCALAR)

_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


class ScannedEntry(NamedTuple):
    """One entry of a plain tasks file: its value, its text and the lines of its keys."""

    raw: dict[str, Any]
    text: str  # from its first key to its end, as the composed node's span (stripped)
    line: int  # 1-based, the line of `- `
    key_lines: dict[str, int]


class _NotPlain(Exception):
    """The text is not in the plain shape: the composed path reads it."""


class _Scalars:
    """Plain scalar text -> value, the way the safe loader resolves and constructs it."""

    def __init__(self) -> None:
        self._constructor = SafeConstructor()
        self.values: dict[str, Any] = {}
        self._resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def value(self, text: str) -> Any:
        value = self.values.get(text, _UNKNOWN)
        if value is _UNKNOWN:
            value = self._resolve(text)
            if len(self.values) < _CACHED_VALUES:
                self.values[text] = value
        return value

    def key(self, text: str) -> str:
        if not isinstance(self.value(text), str):
            raise _NotPlain  # e.g. `on:` or `null:`: keys that are not strings
        return text

    def _resolve(self, text: str) -> Any:
        # The commonest case first: plain decimal digits are an int for the resolver too
        # (no float, timestamp or sexagesimal form is only digits).
        if text.isdigit() and text.isascii() and (text[0] != "0" or text == "0"):
            return int(text)
        # Resolver.resolve for an implicit plain scalar: the resolvers of its first character,
        # then those for any character; the first that matches decides; else a string.
        first = text[0]
        resolvers = self._resolvers.get(first)
        if resolvers is None:
            table = Resolver.yaml_implicit_resolvers
            resolvers = self._resolvers[first] = table.get(first, []) + table.get(None, [])
        tag = _STR
        for candidate, regexp in resolvers:  # a loop, not next(genexpr): a third cheaper
            if regexp.match(text):
                tag = candidate
                break
        if tag == _STR:
            return text
        if tag not in _SCALAR_TAGS:
            raise _NotPlain
        construct = getattr(self._constructor, "construct_yaml_" + tag.removeprefix(_TAG))
        try:
            return construct(yaml.ScalarNode(tag, text))
        except (ValueError, yaml.YAMLError):
            raise _NotPlain from None


_UNKNOWN = object()
_CACHED_VALUES = 200_000


def scan_tasks(text: str) -> list[ScannedEntry] | None:
    """The entries of a tasks file in the plain shape; None when it is not in it (including
    a file with no entries): then the composed path must read it.

    The text ends with a newline (an unfinished last line is never read).
    """
    document = _DOCUMENT.fullmatch(text)
    if document is None:
        return None
    start = len("tasks:\n")
    indent = document.group("indent")
    # An entry's text as the composed path fingerprints it: from its first key to where the
    # next entry's `- ` starts, without the trailing whitespace. The document matched, so
    # "\n" + indent + "- " occurs only where an entry starts.
    bodies = iter(text[start + len(indent) + 2 :].rstrip().split(f"\n{indent}- "))
    scalars = _Scalars()
    values = scalars.values
    keys: set[str] = set()
    entries: list[ScannedEntry] = []
    raw: dict[str, Any] = {}
    key_lines: dict[str, int] = {}
    line = 1
    try:
        for dash, key, text_value in _ROWS.findall(text, start):
            line += 1
            if dash:
                raw, key_lines = {}, {}
                entries.append(ScannedEntry(raw, next(bodies), line, key_lines))
            if key not in keys:
                scalars.key(key)
                keys.add(key)
            if key in raw:
                return None  # the composed path names the duplicate
            first = text_value[0]
            if first == "{":
                value: Any = _mapping(text_value, scalars, keys)
            elif first == "[":
                value = [scalars.value(item) for item in _FLOW_ITEMS.findall(text_value)]
            else:
                value = values.get(text_value, _UNKNOWN)
                if value is _UNKNOWN:
                    value = scalars.value(text_value)
            raw[key] = value
            key_lines[key] = line
    except _NotPlain:
        return None
    return entries


def _mapping(text: str, scalars: _Scalars, keys: set[str]) -> dict[str, Any]:
    values = scalars.values
    built: dict[str, Any] = {}
    for key, text_value in _FLOW_PAIRS.findall(text):
        if key not in keys:
            scalars.key(key)
            keys.add(key)
        if key in built:
            raise _NotPlain  # the composed path names the duplicate
        value = values.get(text_value, _UNKNOWN)
        built[key] = scalars.value(text_value) if value is _UNKNOWN else value
    return built
