"""`apixo-watcher copy-store`: move an existing SQLite store into the PostgreSQL store.

The SQLite file is read read-only as one snapshot (watcher/store/sqlite_export.py); each batch
is written in one transaction (watcher/store/postgres_import.py) following the rules of
watcher/store/bulk.py: missing records are inserted, records the source has further along are
updated, the rest is left alone, and a record the database holds as something else is a
conflict, reported and not copied. So a second run changes nothing, and an interrupted run
leaves only whole batches behind: running it again finishes the copy.

What is copied is a list of steps, each with its tables, its reader and its writer: the tasks
with everything recorded about them (result mirroring's held events and files included), then
the learned polling durations (issue 11).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

from watcher.store.bulk import DURATION_TABLES, TASK_TABLES, Conflict, ImportResult, TableCounts
from watcher.store.postgres import PostgresStore
from watcher.store.sqlite_export import DEFAULT_BATCH, SqliteSnapshot

B = TypeVar("B")

# Conflicts kept for the summary (all are counted, and each is shown as it is found).
_KEPT_CONFLICTS: Final = 100


@dataclass(frozen=True, slots=True)
class CopyStep(Generic[B]):
    """One part of the store: its tables (the first is what progress counts), how many of
    those the source holds, its batches, and how one batch is written (one transaction)."""

    name: str
    tables: tuple[str, ...]
    total: Callable[[SqliteSnapshot], int]
    batches: Callable[[SqliteSnapshot, int], Iterator[B]]
    write: Callable[[PostgresStore, B], Awaitable[ImportResult]]


STEPS: Final[Sequence[CopyStep[Any]]] = (
    CopyStep(
        "tasks",
        TASK_TABLES,
        SqliteSnapshot.count_tasks,
        SqliteSnapshot.task_batches,
        PostgresStore.import_task_records,
    ),
    CopyStep(
        "durations",
        DURATION_TABLES,
        SqliteSnapshot.count_durations,
        SqliteSnapshot.duration_batches,
        PostgresStore.import_durations,
    ),
)


class CopyObserver(Protocol):
    """Who hears about a copy as it goes (the command prints it)."""

    def warning(self, message: str) -> None: ...

    def conflict(self, conflict: Conflict) -> None: ...

    def progress(
        self, step: str, done: int, total: int, tables: Mapping[str, TableCounts]
    ) -> None: ...


@dataclass(slots=True)
class CopyReport:
    """What a copy did: counts per table in copy order, and its conflicts (the first
    `_KEPT_CONFLICTS`; `conflicts_total` counts them all). Names no password."""

    source: str
    target: str
    tables: dict[str, TableCounts] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    conflicts_total: int = 0

    @property
    def complete(self) -> bool:
        """Everything was copied (or was there already)."""
        return self.conflicts_total == 0

    def add(self, result: ImportResult) -> None:
        for table, counts in result.counts.items():
            self.tables.setdefault(table, TableCounts()).add(counts)
        self.conflicts_total += len(result.conflicts)
        room = _KEPT_CONFLICTS - len(self.conflicts)
        self.conflicts.extend(result.conflicts[: max(0, room)])


async def copy_store(
    source: Path,
    url: str,
    *,
    observer: CopyObserver,
    batch_size: int = DEFAULT_BATCH,
    steps: Sequence[CopyStep[Any]] = STEPS,
) -> CopyReport:
    """Copy the SQLite store at `source` into the PostgreSQL database at `url` (migrated to
    this version's schema first). StoreError, before anything is written, when the source is
    missing, not an apixo-watcher store, of another schema version, or in use by a daemon, or
    when the database cannot be reached; afterwards when a write fails (what was committed
    stays, and a new run goes on from there)."""
    with SqliteSnapshot(source) as snapshot:
        if not snapshot.guarded:
            observer.warning(
                f"cannot tell whether a daemon is running on {source} (it has no lock file): "
                "stop it before copying; what it changes after this point is not copied "
                "until copy-store runs again"
            )
        store = await PostgresStore.open(url, pool_size=1)
        try:
            report = CopyReport(str(source), store.location)
            for step in steps:
                for table in step.tables:
                    report.tables.setdefault(table, TableCounts())
                total, done = step.total(snapshot), 0
                observer.progress(step.name, done, total, report.tables)
                for batch in step.batches(snapshot, batch_size):
                    result = await step.write(store, batch)
                    report.add(result)
                    for conflict in result.conflicts:
                        observer.conflict(conflict)
                    done += result.counts[step.tables[0]].read
                    observer.progress(step.name, done, total, report.tables)
        finally:
            await store.close()
    return report
