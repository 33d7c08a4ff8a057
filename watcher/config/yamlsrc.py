"""YAML loading that remembers where every value came from.

Problems in a config or tasks file are reported with their YAML path and line, so loading keeps
a `LineMap` next to the data: path tuple (mapping keys as str, list indices as int) -> 1-based
line. Loading is safe (plain data only, no arbitrary tags). Syntax errors and duplicate keys in a
mapping (a typo magnet: the second silently wins in plain PyYAML) become `ConfigError`s.

Anchors and aliases are allowed (`<<: *defaults` keeps a config short), but an alias is a
reference: ~600 bytes of nested aliases stand for tens of millions of values, which validation
or JSON would expand until memory runs out (an "alias bomb"). So aliases may add at most
`MAX_ALIAS_EXPANSION` values to a document, and an alias inside its own anchor is refused;
both are checked on the composed nodes, before anything is expanded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from watcher.errors import ConfigError, ConfigProblem

YamlPath = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Values that aliases may add to one document (beyond those written out); a config that uses
# `<<: *defaults` a few dozen times stays far below it.
MAX_ALIAS_EXPANSION = 10_000
_PLAIN_KEY = re.compile(r"[^.\[\]\s\"']+")
HIDDEN = "<hidden>"
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]+")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.:/-]+")
_QUOTED = re.compile(r"'([^']*)'")
_NO_CONSTRUCTOR = "could not determine a constructor for the tag"

try:  # the libyaml parser is several times faster on large tasks files; same safe semantics
    _Base: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment,misc,unused-ignore]
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Base = yaml.SafeLoader

# The type of a plain scalar (str, int, bool, ...) depends on its text alone in a safe loader;
# a big tasks file repeats the same keys and values (`model: nano-banana`) on every entry.
_CACHED_TYPES = 100_000  # per document, of at most ...
_CACHED_LENGTH = 32  # ... characters each


class _Loader(_Base):  # type: ignore[valid-type,misc,unused-ignore]
    """The safe loader, remembering the type of each short plain scalar it has resolved."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._types: dict[str, str] = {}

    # A safe loader has no path resolvers: these run for every node and do nothing.
    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(
        self,
        kind: type[yaml.Node],
        value: Any,
        implicit: Any,
        _resolve: Any = _Base.resolve,  # bound at definition: this runs once per scalar
        _scalar: type[yaml.Node] = yaml.ScalarNode,
    ) -> Any:
        if kind is _scalar and implicit[0] and len(value) <= _CACHED_LENGTH:
            types = self._types
            tag = types.get(value)
            if tag is None:
                tag = _resolve(self, kind, value, implicit)
                if len(types) < _CACHED_TYPES:
                    types[value] = tag
            return tag
        return _resolve(self, kind, value, implicit)


class LineMap(Mapping[YamlPath, int]):
    """The 1-based line of each node of a loaded YAML document, by path.

    A mapping entry's line is the line of its key; a list item's line is where the item starts;
    the empty path is the document itself.
    """

    def __init__(self, lines: Mapping[YamlPath, int] | None = None) -> None:
        self._lines: dict[YamlPath, int] = dict(lines or {})

    def __getitem__(self, path: YamlPath) -> int:
        return self._lines[path]

    def __iter__(self) -> Iterator[YamlPath]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def __repr__(self) -> str:
        return f"LineMap({len(self._lines)} paths)"

    def line_for(self, path: Sequence[str | int]) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one (for missing keys)."""
        key = tuple(path)
        for end in range(len(key), -1, -1):
            line = self._lines.get(key[:end])
            if line is not None:
                return line
        return None


def looks_secret(text: str) -> bool:
    """Whether a mapping key, a tag or a file name looks like a pasted secret (an API key, a
    token, a whsec_ secret) rather than a name a person chose. Such text is never repeated in
    an error: the YAML line points at it instead. Model names such as `gemini-2.5-flash` or
    `nano-banana-2` and header names stay readable.
    """
    if text.startswith("whsec_") or len(text) > 64:
        return True
    if len(text) < 16:
        return False
    digits = sum(c.isdigit() for c in text)
    letters = sum(c.isalpha() for c in text)
    longest_run = max((len(run) for run in _ALNUM_RUN.findall(text)), default=0)
    return (
        (digits >= 4 and letters >= 4)
        or longest_run >= 20
        or not _NAME_CHARS.fullmatch(text)  # base64's +/=, a space ("Bearer ...")
    )


def shown(text: str) -> str:
    """`text` for an error message: itself, or HIDDEN when it looks like a secret."""
    return HIDDEN if looks_secret(text) else text


def format_path(path: Sequence[str | int]) -> str:
    """A path as people read it: `endpoints[0].url`; odd keys quoted: `models["gpt-4.1"]`; a key
    that looks like a pasted secret as `<hidden>`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif looks_secret(part):
            out += f".{HIDDEN}" if out else HIDDEN
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def load_yaml(text: str, source: str) -> tuple[Any, LineMap]:
    """Parse one YAML document safely. Raises ConfigError for bad syntax or duplicate keys."""
    data, lines, problems = load_yaml_collecting(text, source)
    if problems:
        raise ConfigError(problems, source=source)
    return data, lines


def load_yaml_collecting(text: str, source: str) -> tuple[Any, LineMap, list[ConfigProblem]]:
    """Like `load_yaml`, but duplicate keys are returned as problems (the last value wins).

    For callers that go on validating and report every problem at once. Syntax errors still
    raise ConfigError, since nothing after them can be trusted.
    """
    node = compose(text, source)
    if node is None:
        return None, LineMap(), []
    lines: dict[YamlPath, int] = {(): node.start_mark.line + 1}
    problems: list[ConfigProblem] = []
    aliases: list[int] = []
    try:
        _walk(node, (), lines, problems, set(), aliases)
    except RecursionError as exc:
        raise ConfigError([_TOO_DEEP], source=source) from exc
    if aliases:
        alias_problem = _alias_problem(node, aliases[0])
        if alias_problem is not None:
            raise ConfigError([alias_problem], source=source)
    return construct(node, source), LineMap(lines), problems


_TOO_DEEP = ConfigProblem("", None, "the document is nested too deeply")


def compose(text: str, source: str) -> yaml.Node | None:
    """The document's node tree (None for an empty document); nothing is constructed yet.

    Raises ConfigError for bad syntax, more than one document, or unacceptable characters.
    An alias is the anchor's node object itself, so nothing is expanded here.
    """
    loader = _Loader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, text)], source=source) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problem = ConfigProblem("", line, f"unacceptable character #x{exc.character:04x}")
        raise ConfigError([problem], source=source) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", None, "not valid YAML")], source=source) from exc
    except RecursionError as exc:
        raise ConfigError([_TOO_DEEP], source=source) from exc
    finally:
        loader.dispose()


def construct(node: yaml.Node, source: str) -> Any:
    """Plain Python data from a composed node, with PyYAML's safe constructors."""
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag
        raise ConfigError([_syntax_problem(exc, "")], source=source) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", None, "not valid YAML")], source=source) from exc
    except RecursionError as exc:
        raise ConfigError([_TOO_DEEP], source=source) from exc
    except ValueError as exc:
        # A constructor given an impossible value, e.g. the date 2024-13-45.
        problem = ConfigProblem("", None, f"invalid value: {exc}")
        raise ConfigError([problem], source=source) from exc
    finally:
        loader.dispose()


def node_lines(node: yaml.Node, path: YamlPath = ()) -> LineMap:
    """The lines of a composed node and everything below it, its paths starting with `path`."""
    lines: dict[YamlPath, int] = {path: node.start_mark.line + 1}
    _walk(node, path, lines, [], set(), [])
    return LineMap(lines)


class _SelfReference(Exception):
    pass


def _alias_problem(root: yaml.Node, first_alias_line: int) -> ConfigProblem | None:
    """A problem when the aliases of a document expand it too far or into itself."""
    sizes: dict[int, int] = {}
    try:
        expanded = _expanded_size(root, sizes, set())
    except _SelfReference:
        return ConfigProblem(
            "", first_alias_line, "a YAML alias refers to a value that contains itself"
        )
    if expanded - len(sizes) > MAX_ALIAS_EXPANSION:
        return ConfigProblem(
            "",
            first_alias_line,
            f"YAML aliases (first used here) expand the document by more than "
            f"{MAX_ALIAS_EXPANSION} values; write the values out instead",
        )
    return None


def _expanded_size(node: yaml.Node, sizes: dict[int, int], active: set[int]) -> int:
    # Memoised by node: each node is sized once however often it is aliased, so this is linear
    # in the composed document, never in its expansion.
    key = id(node)
    known = sizes.get(key)
    if known is not None:
        return known
    if key in active:
        raise _SelfReference
    active.add(key)
    size = 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            size += _expanded_size(key_node, sizes, active)
            size += _expanded_size(value_node, sizes, active)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            size += _expanded_size(item, sizes, active)
    active.discard(key)
    sizes[key] = size
    return size


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    if exc.problem == "could not find expected ':'" and exc.context_mark is not None:
        mark = exc.context_mark  # the key missing its colon, not where the scanner gave up
    line = mark.line + 1 if mark is not None else None
    # PyYAML quotes what it choked on (a tag, an alias): never a pasted secret, though.
    message = _QUOTED.sub(lambda m: f"'{shown(m.group(1))}'", exc.problem or "not valid YAML")
    if message.startswith(_NO_CONSTRUCTOR):
        tag = message[len(_NO_CONSTRUCTOR) :].strip()
        message = f"unsupported tag {tag} (only plain values: text, numbers, lists, mappings)"
    if (
        mark is not None
        and "tab" not in message
        and "\t" in text[mark.index - mark.column : mark.index + 1]
    ):
        message += "; tabs cannot indent YAML, use spaces"
    if exc.context:
        context = exc.context
        cmark = exc.context_mark
        if cmark is not None and cmark.line + 1 != line:
            context += f" on line {cmark.line + 1}"
        message += f" ({context})"
    return ConfigProblem("", line, f"invalid YAML: {message}")


def _walk(
    node: yaml.Node,
    path: YamlPath,
    lines: dict[YamlPath, int],
    problems: list[ConfigProblem],
    seen: set[int],
    aliases: list[int],
    used_on: int = 0,
) -> None:
    # An aliased node is the anchor's node object; walk it once, so paths through an alias
    # fall back to the line where the alias is used, and `&a [*a]` cannot loop. `aliases`
    # collects the lines where aliases are used (`used_on`: the line that refers to `node`).
    if id(node) in seen:
        aliases.append(used_on)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                # `<<: *base` and complex keys: their contents keep the parent's line
                line = key_node.start_mark.line + 1
                _walk(value_node, path, {}, [], seen, aliases, line)
                continue
            key: str = key_node.value
            line = key_node.start_mark.line + 1
            child = (*path, key)
            identity = (key_node.tag, key)
            if identity in first:
                problems.append(
                    ConfigProblem(
                        format_path(child),
                        line,
                        f"duplicate key '{shown(key)}' (first on line {first[identity]})",
                    )
                )
            else:
                first[identity] = line
            lines[child] = line
            _walk(value_node, child, lines, problems, seen, aliases, line)
    elif isinstance(node, yaml.SequenceNode):
        # An alias item has no position of its own (it is the anchor's node); the item before
        # it ends where it starts.
        previous_end = node.start_mark.line + 1
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines, problems, seen, aliases, previous_end)
            previous_end = item.end_mark.line + 1
