"""The problems found while loading a config file, collected so all are reported at once.

Each problem is kept by its raw YAML path and becomes a located `ConfigProblem` (path and line)
at the end, so a user fixes every mistake in one round instead of one per run.
"""

from __future__ import annotations

from typing import TypeVar

from watcher.config.yamlsrc import LineMap, YamlPath, format_path
from watcher.errors import ConfigError, ConfigProblem

_R = TypeVar("_R")


class Problems:
    """Problems found so far, by raw path; turned into located ConfigProblems at the end.

    A value whose environment variable is unset (or whose secret file is unreadable) is
    "suppressed": that one problem is reported, not the follow-on ones about the empty value.
    A secret read from `X_file` is validated as `X`; its problems are shown at `X_file`.
    """

    def __init__(self, lines: LineMap, duplicates: list[ConfigProblem]) -> None:
        self._lines = lines
        self._located = list(duplicates)
        self._items: list[tuple[YamlPath, str, bool]] = []
        self._suppressed: set[YamlPath] = set()
        self._renamed: dict[YamlPath, YamlPath] = {}

    def __bool__(self) -> bool:
        return bool(self._located) or any(
            self._visible(p, primary) for p, _, primary in self._items
        )

    def add(self, path: YamlPath, message: str, *, primary: bool = False) -> None:
        """Record `message` about the value at `path`; a `primary` one is never suppressed."""
        self._items.append((path, message, primary))

    def suppress(self, path: YamlPath) -> None:
        """Hide the non-primary problems at and below `path` (follow-ons of a primary one)."""
        self._suppressed.add(path)

    def rename(self, path: YamlPath, shown: YamlPath) -> None:
        """Show problems at and below `path` at `shown` instead (`X` read from `X_file`)."""
        self._renamed[path] = shown

    def result(self) -> list[ConfigProblem]:
        """The visible problems, located and in file order."""
        problems = list(self._located)
        for path, message, primary in self._items:
            if self._visible(path, primary):
                shown = self._shown(path)
                problems.append(ConfigProblem(format_path(shown), self._line(shown), message))
        return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.path))

    def checked(self, result: _R | None, source: str) -> _R:
        """`result`, unless it is missing or a problem was found: then raise ConfigError."""
        if result is None or self:
            found = self.result() or [ConfigProblem("", None, "the configuration is invalid")]
            raise ConfigError(found, source=source)
        return result

    def _visible(self, path: YamlPath, primary: bool) -> bool:
        if primary:
            return True
        shown = self._shown(path)
        return not any(
            p[: len(s)] == s for s in self._suppressed for p in (path, shown) if len(p) >= len(s)
        )

    def _shown(self, path: YamlPath) -> YamlPath:
        for end in range(len(path), 0, -1):
            shown = self._renamed.get(path[:end])
            if shown is not None:
                return shown + path[end:]
        return path

    def _line(self, path: YamlPath) -> int | None:
        # A key missing from a missing section has no line of its own worth showing.
        if path and (path[0],) not in self._lines:
            return None
        return self._lines.line_for(path)
