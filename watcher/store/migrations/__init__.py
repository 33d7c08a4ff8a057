"""The stores' versioned schemas: NNNN_name.sql files and the loader that orders them.

Each database has its own folder and numbering: sqlite/ (file N moves `PRAGMA user_version`
from N-1 to N; SqliteStore applies each missing one in its own transaction) and postgres/
(recorded in the `watcher_schema` table; see watcher/store/postgres_schema.py). A released
file is never edited: changes go in a new one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final

from watcher.errors import StoreError

_MIGRATION_FILE: Final = re.compile(r"(\d{4})_(\w+)\.sql")


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What migrating a store did: its schema version before and after, and the files applied
    (none when it was up to date). `where` names the store without any password."""

    where: str
    before: int
    after: int
    applied: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: applying it moves `user_version` from version-1 to version."""

    version: int
    name: str
    sql: str

    def statements(self) -> Iterator[str]:
        """The SQL split into single statements. SQLite's own tokenizer decides where one ends,
        so semicolons in strings, comments and trigger bodies do not split it."""
        *pieces, rest = self.sql.split(";")
        buffer = ""
        for piece in pieces:
            buffer += piece + ";"
            if sqlite3.complete_statement(buffer):
                if buffer.strip() != ";":
                    yield buffer.strip()
                buffer = ""
        leftover = [
            line
            for line in (buffer + rest).splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        ]
        if leftover:
            raise StoreError(f"migration {self.name}: unterminated statement {leftover[0]!r}")


def load_migrations(dialect: str = "sqlite") -> list[Migration]:
    """The migrations shipped in this package for one database (a folder of its own), in order."""
    found = []
    for entry in resources.files(__name__).joinpath(dialect).iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    check_numbering(found)
    return found


def check_numbering(migrations: Sequence[Migration]) -> None:
    """StoreError unless the migrations are numbered 1, 2, 3, ... in order."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise StoreError(
                f"schema migrations must be numbered 1, 2, 3, ...: "
                f"found {migration.name} where version {expected} was expected"
            )
