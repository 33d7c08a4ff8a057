"""The one exception tree of apixo-watcher.

Every error the daemon raises on purpose derives from `WatcherError`. Errors of the libraries
underneath (sqlite3, aiohttp, yaml) are wrapped at the boundary with `raise ... from exc`, so
callers only ever catch our types. The docstring of each class is its default message.
"""

from __future__ import annotations

from dataclasses import dataclass


class WatcherError(Exception):
    """apixo-watcher failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file: where it is and what is wrong."""

    path: str  # dotted YAML path, e.g. "endpoints[0].url"; "" for the whole document
    line: int | None  # 1-based line in the file, when known
    message: str

    def __str__(self) -> str:
        where = self.path or "(document)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class ConfigError(WatcherError):
    """The configuration is invalid."""

    def __init__(self, problems: list[ConfigProblem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{head}{len(problems)} problem(s) in the configuration\n{lines}")


class StoreError(WatcherError):
    """The task store failed."""


class StoreInUse(StoreError):
    """Another apixo-watcher process holds the store: two daemons on one store would both
    poll every task and both deliver every webhook."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (a network or server outage): the daemon waits for
    it and tries again, rather than stopping."""


class StoreLost(StoreError):
    """The store's file was deleted or replaced under the running daemon: what it commits now
    would be lost at the next start."""


class TaskNotFound(WatcherError):
    """No such task."""


class TaskConflict(WatcherError):
    """The task is already registered with different settings."""


class TaskFinished(WatcherError):
    """The task has already finished."""


class TaskNotHeld(WatcherError):
    """Another instance holds the task now (its claim was taken over after this instance's
    lease ran out): this instance must drop it, not write its outcome."""


class DeliveryNotFound(WatcherError):
    """No such delivery."""


class EndpointNotFound(WatcherError):
    """No such endpoint in the configuration."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One invalid field of a task registration."""

    field: str
    message: str
    code: str = "invalid"


class InvalidTask(WatcherError):
    """The task registration is invalid."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class UpstreamError(WatcherError):
    """The upstream API could not be reached or answered badly."""


class DeliveryError(WatcherError):
    """A webhook delivery attempt failed."""


class IntakeError(WatcherError):
    """The intake API answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class InvalidSecret(WatcherError):
    """The webhook secret is invalid: expected "whsec_" followed by base64."""


class InvalidCursor(WatcherError):
    """The pagination cursor is invalid (it must be a `next_cursor` from an earlier page)."""


class MirrorError(WatcherError):
    """A result file could not be mirrored.

    `permanent` says that trying again cannot help (a 404, a file over the size cap, a
    redirect to a scheme other than http(s)); otherwise it is retried within the file's
    `mirror.timeout`. The message names no secret.
    """

    def __init__(self, message: str | None = None, *, permanent: bool = False) -> None:
        self.permanent = permanent
        super().__init__(message)
