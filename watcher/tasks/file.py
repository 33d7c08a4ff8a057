"""The tasks file: `tasks: [...]` of registrations, imported at start, on reload and on change.

Import is additive and idempotent: every run registers what is not known yet, removing a line
cancels nothing, and a bad entry is reported with its line and skipped while the good ones are
imported. Changes are noticed by checking the file's (inode, size, mtime) once a second: cheap,
dependency-free, and it works on every filesystem and with editors that replace the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from watcher.clock import Clock
from watcher.config.yamlsrc import load_yaml
from watcher.errors import ConfigError, ConfigProblem, InvalidTask
from watcher.models import TaskSource, TaskSpec
from watcher.service import WatchService
from watcher.tasks.spec import parse_task_spec

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TasksFileContent:
    """The valid registrations of a tasks file and the problems of the others."""

    specs: list[TaskSpec] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)
    where: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # task_id: path, line


@dataclass(frozen=True, slots=True)
class ImportResult:
    registered: int  # new tasks
    known: int  # already registered (no change)
    problems: list[ConfigProblem]


def parse_tasks_file(
    text: str,
    *,
    source: str,
    endpoint_names: Sequence[str],
    allowed_callback_hosts: Sequence[str],
) -> TasksFileContent:
    """Validate every entry; a document that is not `tasks: [...]` is one problem."""
    try:
        data, lines = load_yaml(text, source)
    except ConfigError as exc:
        return TasksFileContent(problems=list(exc.problems))
    if data is None:
        return TasksFileContent()
    if not isinstance(data, dict) or set(data) - {"tasks"}:
        return TasksFileContent(
            problems=[
                ConfigProblem("", lines.line_for(()), "must be a mapping with one key, 'tasks'")
            ]
        )
    entries = data.get("tasks") or []
    if not isinstance(entries, list):
        return TasksFileContent(
            problems=[ConfigProblem("tasks", lines.line_for(("tasks",)), "must be a list")]
        )
    specs: list[TaskSpec] = []
    problems: list[ConfigProblem] = []
    located: dict[str, tuple[str, int | None]] = {}
    seen: dict[str, str] = {}
    for index, entry in enumerate(entries):
        where = ("tasks", index)
        try:
            spec = parse_task_spec(
                entry, endpoint_names=endpoint_names, allowed_callback_hosts=allowed_callback_hosts
            )
        except InvalidTask as exc:
            for p in exc.problems:
                path = (*where, p.field) if p.field else where
                problems.append(ConfigProblem(_dotted(path), lines.line_for(path), p.message))
            continue
        if seen.get(spec.task_id, spec.model) != spec.model:
            problems.append(
                ConfigProblem(
                    _dotted((*where, "model")),
                    lines.line_for((*where, "model")),
                    f"task {spec.task_id!r} is listed before with model {seen[spec.task_id]!r}",
                )
            )
            continue
        seen[spec.task_id] = spec.model
        located.setdefault(spec.task_id, (_dotted(where), lines.line_for(where)))
        specs.append(spec)
    return TasksFileContent(specs=specs, problems=problems, where=located)


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class TasksFileImporter:
    """Imports the tasks file into the service when it changes."""

    def __init__(self, *, service: WatchService, clock: Clock, path: Path | None) -> None:
        self._service = service
        self._clock = clock
        self._path = path
        self._signature: tuple[int, int, int] | None = None

    def set_path(self, path: Path | None) -> None:
        if path != self._path:
            self._path = path
            self._signature = None

    def import_now(self, *, force: bool = False) -> ImportResult | None:
        """Import if the file changed since the last import (always with force).

        None when there is no tasks file, or nothing changed.
        """
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            if self._signature != (0, 0, 0):
                log.warning("tasks_file_missing", path=str(self._path))
                self._signature = (0, 0, 0)
            return None
        except OSError as exc:
            log.error("tasks_file_unreadable", path=str(self._path), error=str(exc))
            return None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if not force and signature == self._signature:
            return None
        self._signature = signature
        try:
            text = self._path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.error("tasks_file_unreadable", path=str(self._path), error=str(exc))
            return None
        config = self._service.config
        content = parse_tasks_file(
            text,
            source=str(self._path),
            endpoint_names=[e.name for e in config.endpoints],
            allowed_callback_hosts=config.delivery.allowed_callback_hosts,
        )
        problems = list(content.problems)
        registered = known = 0
        if content.specs:
            results = self._service.register_many(content.specs, source=TaskSource.FILE)
            for spec, _task, created, error in results:
                if error is not None:
                    path, line = content.where.get(spec.task_id, ("tasks", None))
                    problems.append(ConfigProblem(path, line, error))
                elif created:
                    registered += 1
                else:
                    known += 1
        for problem in problems:
            log.error(
                "tasks_file_entry_invalid",
                path=str(self._path),
                line=problem.line,
                key=problem.path,
                problem=problem.message,
            )
        log.info(
            "tasks_file_imported",
            path=str(self._path),
            registered=registered,
            known=known,
            invalid=len(problems),
        )
        return ImportResult(registered=registered, known=known, problems=problems)

    async def watch(self, *, interval_s: float = 1.0) -> None:
        """Import whenever the file changes; runs until cancelled."""
        while True:
            await self._clock.sleep(interval_s)
            self.import_now()
