"""Reading a tasks file's text: `tasks: [...]` of registrations, each checked on its own.

Pure: text in, registrations and located problems out, no I/O. The whole document must parse
before any entry counts (a file cut off mid-write often still parses up to the cut, but a file
that does not parse at all registers nothing). Then each entry is read and validated alone, so a
bad entry is one problem with its line and the others go on.

Large files are the reason for the shape of this module:
- A file in the plainest shape (one `key: value` per line, flow values one level deep, as
  programs write it) is read without a node tree, line by line (`scan.py`); any other text
  is composed as below, so the fast path only ever agrees with the careful one.
- The document is composed once by libyaml (the C loader, where installed); entries are then
  built from the nodes by a small constructor for the plain YAML types, several times faster
  than PyYAML's generic one, with the line of every problem still known from the nodes.
- Every entry has a fingerprint, a hash of its own text. An entry whose fingerprint was imported
  before (`known`) is skipped without being built or validated: appending one line to a file
  of 50,000 entries validates one entry. This is safe because the text of an entry is all that
  decides what it registers: aliases, the one way for an entry to depend on text elsewhere,
  are refused.
- Aliases are refused outright (an entry's metadata is at most 4 KiB, so they buy nothing), and
  before anything is expanded: ~600 bytes of nested aliases stand for millions of values.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from watcher.config.yamlsrc import compose, node_lines
from watcher.errors import ConfigError, ConfigProblem, InvalidTask
from watcher.models import TaskSpec
from watcher.tasks.scan import ScannedEntry, scan_tasks
from watcher.tasks.spec import ValidTask, parse_task_entry

FINGERPRINT_BYTES = 16

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _MAP, _SEQ, _NULL, _MERGE = (
    _TAG + t for t in ("str", "int", "map", "seq", "null", "merge")
)


class FileEntry(NamedTuple):
    """A valid registration read from the tasks file, and where it is. (A tuple: a file of
    100,000 entries builds one each.)"""

    task: ValidTask
    fingerprint: bytes
    path: str  # e.g. "tasks[3]"
    line: int | None

    @property
    def spec(self) -> TaskSpec:
        return self.task.spec()


@dataclass(frozen=True, slots=True)
class Unchanged:
    """An entry whose text was imported before (its fingerprint is known): not read again."""

    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Invalid:
    """An entry that cannot be registered, with every problem found in it."""

    problems: list[ConfigProblem]


EntryResult = FileEntry | Unchanged | Invalid


@dataclass(frozen=True, slots=True)
class TasksFileContent:
    """Everything in a tasks file: the valid registrations and the problems of the rest."""

    entries: list[FileEntry] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)
    unchanged: int = 0

    @property
    def specs(self) -> list[TaskSpec]:
        return [e.spec for e in self.entries]


def unfinished_line(data: bytes) -> int | None:
    """The number of the last line when it has no newline yet, else None.

    A writer that is still at work leaves a last line without its newline (`order-00` of
    `order-0042`); such a file is not imported until it ends with one.
    """
    if not data or data.endswith(b"\n"):
        return None
    return data.count(b"\n") + 1


Tasks = yaml.SequenceNode | list[ScannedEntry]


def open_tasks(text: str, source: str) -> Tasks | None:
    """The `tasks` list of a tasks file, read the fast way when the text is in the plain
    shape (see `scan.py`), else composed (None when there are no tasks).

    Raises ConfigError when the document does not parse or is not `tasks: [...]`.
    """
    return scan_tasks(text) or compose_tasks(text, source)


def compose_tasks(text: str, source: str) -> yaml.SequenceNode | None:
    """The composed `tasks` list of a tasks file (None when there are no tasks).

    Raises ConfigError when the document does not parse or is not `tasks: [...]`: then no
    entry of it may be imported.
    """
    root = compose(text, source)
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode) or root.tag != _MAP:
        raise _document_error(source, root, "must be a mapping with one key, 'tasks'")
    found: yaml.Node | None = None
    for key_node, value_node in root.value:
        if not (isinstance(key_node, yaml.ScalarNode) and key_node.value == "tasks"):
            raise _document_error(source, key_node, "must be a mapping with one key, 'tasks'")
        if found is not None:
            raise _document_error(source, key_node, "duplicate key 'tasks'", path="tasks")
        found = value_node
    if found is None or (isinstance(found, yaml.ScalarNode) and found.tag == _NULL):
        return None
    if not isinstance(found, yaml.SequenceNode) or found.tag != _SEQ:
        raise _document_error(source, found, "must be a list", path="tasks")
    return found


def read_entries(
    tasks: Tasks,
    text: str,
    *,
    endpoint_names: Sequence[str],
    allowed_callback_hosts: Sequence[str],
    known: Container[bytes] = frozenset(),
) -> Iterator[EntryResult]:
    """Each entry of a `tasks` list, in file order: built and validated, or skipped as
    Unchanged when its fingerprint is in `known`."""
    if isinstance(tasks, list):
        yield from _read_scanned(
            tasks,
            endpoint_names=endpoint_names,
            allowed_callback_hosts=allowed_callback_hosts,
            known=known,
        )
        return
    builder = _EntryBuilder()
    models: dict[str, str] = {}  # task_id -> model of the valid entries read so far
    previous_end = tasks.start_mark.index
    previous_end_line = tasks.start_mark.line + 1
    for index, node in enumerate(tasks.value):
        path = f"tasks[{index}]"
        start, end = node.start_mark.index, node.end_mark.index
        if start < previous_end:
            # An item that is an alias is an earlier node: its position lies behind us.
            yield Invalid([ConfigProblem(path, previous_end_line, _ALIAS)])
            continue
        previous_end, previous_end_line = end, node.end_mark.line + 1
        source = text[start:end]
        digest = hashlib.blake2b(node.tag.encode(), digest_size=FINGERPRINT_BYTES)
        # Without the trailing whitespace: a block entry's span runs to where the next item
        # starts, so appending an item would otherwise change the last entry's fingerprint.
        digest.update(source.rstrip().encode("utf-8", "surrogatepass"))
        fingerprint = digest.digest()
        if fingerprint in known:
            yield Unchanged(fingerprint)
            continue
        yield _read_entry(
            builder,
            node,
            index,
            fingerprint,
            models,
            may_alias="*" in source,
            endpoint_names=endpoint_names,
            allowed_callback_hosts=allowed_callback_hosts,
        )


def _read_scanned(
    tasks: list[ScannedEntry],
    *,
    endpoint_names: Sequence[str],
    allowed_callback_hosts: Sequence[str],
    known: Container[bytes],
) -> Iterator[EntryResult]:
    models: dict[str, str] = {}
    for index, entry in enumerate(tasks):
        # The composed path's digest of its tag and text, in one call.
        text = _MAP_TAG + entry.text.encode("utf-8", "surrogatepass")
        fingerprint = hashlib.blake2b(text, digest_size=FINGERPRINT_BYTES).digest()
        if fingerprint in known:
            yield Unchanged(fingerprint)
            continue
        path = f"tasks[{index}]"
        key_lines = entry.key_lines
        try:
            task = parse_task_entry(
                entry.raw,
                endpoint_names=endpoint_names,
                allowed_callback_hosts=allowed_callback_hosts,
            )
        except InvalidTask as exc:
            yield Invalid(
                [
                    ConfigProblem(
                        _dotted(path, (p.field,) if p.field else ()),
                        key_lines.get(p.field, entry.line),
                        p.message,
                    )
                    for p in exc.problems
                ]
            )
            continue
        listed = models.setdefault(task.task_id, task.model)
        if listed != task.model:
            yield Invalid(
                [
                    ConfigProblem(
                        f"{path}.model",
                        key_lines.get("model", entry.line),
                        f"task {task.task_id!r} is listed before with model {listed!r}",
                    )
                ]
            )
            continue
        yield FileEntry(task, fingerprint, path, entry.line)


_MAP_TAG = _MAP.encode()


def parse_tasks_file(
    text: str,
    *,
    source: str,
    endpoint_names: Sequence[str],
    allowed_callback_hosts: Sequence[str],
    known: Container[bytes] = frozenset(),
) -> TasksFileContent:
    """Read a whole tasks file at once (for `check-config` and tests; the daemon streams)."""
    try:
        tasks = open_tasks(text, source)
    except ConfigError as exc:
        return TasksFileContent(problems=list(exc.problems))
    if tasks is None:
        return TasksFileContent()
    entries: list[FileEntry] = []
    problems: list[ConfigProblem] = []
    unchanged = 0
    for result in read_entries(
        tasks,
        text,
        endpoint_names=endpoint_names,
        allowed_callback_hosts=allowed_callback_hosts,
        known=known,
    ):
        if isinstance(result, FileEntry):
            entries.append(result)
        elif isinstance(result, Invalid):
            problems.extend(result.problems)
        else:
            unchanged += 1
    return TasksFileContent(entries=entries, problems=problems, unchanged=unchanged)


_ALIAS = "YAML aliases (*name) are not allowed in the tasks file: write the value out"


def _read_entry(
    builder: _EntryBuilder,
    node: yaml.Node,
    index: int,
    fingerprint: bytes,
    models: dict[str, str],
    *,
    may_alias: bool,
    endpoint_names: Sequence[str],
    allowed_callback_hosts: Sequence[str],
) -> EntryResult:
    path = f"tasks[{index}]"
    line = node.start_mark.line + 1
    try:
        raw = builder.build(node, may_alias=may_alias)
    except _EntryProblem as exc:
        return Invalid([ConfigProblem(_dotted(path, exc.path), exc.line, exc.message)])
    except RecursionError:
        return Invalid([ConfigProblem(path, line, "is nested too deeply")])
    try:
        task = parse_task_entry(
            raw, endpoint_names=endpoint_names, allowed_callback_hosts=allowed_callback_hosts
        )
    except InvalidTask as exc:
        lines = node_lines(node, ("tasks", index))
        return Invalid(
            [
                ConfigProblem(
                    _dotted(path, (p.field,) if p.field else ()),
                    lines.line_for(("tasks", index, p.field) if p.field else ("tasks", index)),
                    p.message,
                )
                for p in exc.problems
            ]
        )
    listed = models.setdefault(task.task_id, task.model)
    if listed != task.model:
        lines = node_lines(node, ("tasks", index))
        return Invalid(
            [
                ConfigProblem(
                    f"{path}.model",
                    lines.line_for(("tasks", index, "model")),
                    f"task {task.task_id!r} is listed before with model {listed!r}",
                )
            ]
        )
    return FileEntry(task, fingerprint, path, line)


def _dotted(path: str, inner: tuple[str | int, ...]) -> str:
    for part in inner:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _document_error(source: str, node: yaml.Node, message: str, *, path: str = "") -> ConfigError:
    return ConfigError([ConfigProblem(path, node.start_mark.line + 1, message)], source=source)


class _EntryProblem(Exception):
    def __init__(self, message: str, line: int, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path


class _Retry(Exception):
    """The fast path met something it does not build: the careful path says what."""


class _EntryBuilder:
    """Python values from the nodes of one entry: str, int, float, bool, null, lists and
    mappings, the way PyYAML's safe loader builds them, but refusing aliases, duplicate and
    unhashable keys, merge keys and tags beyond those (dates, binary, sets).

    Two paths: a lean one for the common entry (no `*` in its text, so no alias; nothing
    unusual), and a careful one that tracks every node's path and line, for entries that may
    hold an alias and to locate whatever the lean one gave up on.
    """

    def __init__(self) -> None:
        constructor = yaml.constructor.SafeConstructor()
        self._scalars: dict[str, Callable[[yaml.ScalarNode], Any]] = {
            _TAG + name: getattr(constructor, f"construct_yaml_{name}")
            for name in ("int", "float", "bool", "null")
        }

    def build(self, node: yaml.Node, *, may_alias: bool) -> Any:
        if not may_alias:
            with contextlib.suppress(_Retry):
                return self._plain(node)
        return self._build(node, node.start_mark.index, set(), (), node.start_mark.line + 1)

    def _plain(self, node: yaml.Node) -> Any:
        cls = node.__class__
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if cls is yaml.MappingNode and node.tag == _MAP:
            built: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.__class__ is yaml.ScalarNode and key_node.tag == _STR:
                    key = key_node.value
                elif key_node.tag == _MERGE:
                    raise _Retry
                else:
                    key = self._plain(key_node)
                try:
                    if key in built:
                        raise _Retry
                except TypeError:  # unhashable
                    raise _Retry from None
                if value_node.__class__ is yaml.ScalarNode and value_node.tag == _STR:
                    built[key] = value_node.value
                else:
                    built[key] = self._plain(value_node)
            return built
        if cls is yaml.SequenceNode and node.tag == _SEQ:
            return [self._plain(item) for item in node.value]
        raise _Retry

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _INT:
            value: str = node.value
            # Plain decimals (most ints); PyYAML's constructor does 0x, 0o, 1_000, 1:30 too.
            if value.isascii() and value.isdigit() and (value[0] != "0" or value == "0"):
                return int(value)
        construct = self._scalars.get(tag)
        if construct is None:
            raise _Retry
        try:
            return construct(node)
        except (ValueError, yaml.YAMLError):
            raise _Retry from None

    def _build(
        self,
        node: yaml.Node,
        start: int,
        seen: set[int],
        path: tuple[str | int, ...],
        line: int,
    ) -> Any:
        # An alias is its anchor's node object: met twice within the entry, or lying before it
        # (an anchor always comes before its aliases).
        if id(node) in seen or node.start_mark.index < start:
            raise _EntryProblem(_ALIAS, line, path)
        seen.add(id(node))
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag == _STR:
                return node.value
            construct = self._scalars.get(tag)
            if construct is None:
                raise _EntryProblem(_unsupported(tag), node.start_mark.line + 1, path)
            try:
                return construct(node)
            except (ValueError, yaml.YAMLError) as exc:
                raise _EntryProblem(
                    f"invalid value: {exc}", node.start_mark.line + 1, path
                ) from exc
        if isinstance(node, yaml.SequenceNode) and tag == _SEQ:
            items = []
            # An alias item has no position of its own; the item before it ends where it starts.
            item_line = node.start_mark.line + 1
            for i, item in enumerate(node.value):
                items.append(self._build(item, start, seen, (*path, i), item_line))
                item_line = item.end_mark.line + 1
            return items
        if isinstance(node, yaml.MappingNode) and tag == _MAP:
            built: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key_line = key_node.start_mark.line + 1
                if key_node.tag == _MERGE:
                    raise _EntryProblem(
                        "merge keys (<<) are not allowed in the tasks file", key_line, path
                    )
                key = self._build(key_node, start, seen, path, key_line)
                child = (*path, key if isinstance(key, str | int) else str(key))
                try:
                    duplicate = key in built
                except TypeError:
                    raise _EntryProblem(
                        "a mapping key must be a plain value", key_line, path
                    ) from None
                if duplicate:
                    raise _EntryProblem(f"duplicate key '{key}'", key_line, child)
                built[key] = self._build(value_node, start, seen, child, key_line)
            return built
        raise _EntryProblem(_unsupported(tag), node.start_mark.line + 1, path)


def _unsupported(tag: str) -> str:
    shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
    return f"values of type {shown} are not supported here (a string, number, list or mapping)"
