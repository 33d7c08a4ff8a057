"""`apixo-watcher migrate`: bring the configured store, SQLite or PostgreSQL, to this
version's schema, and say what was done."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from watcher.config.settings import StoreConfig
from watcher.errors import StoreError
from watcher.store.migrations import MigrationResult, load_migrations
from watcher.store.sqlite import SqliteStore


async def migrate_store(config: StoreConfig) -> MigrationResult:
    """Apply the missing migrations of the store `config` names. StoreError if it cannot be
    opened, a migration fails, or its schema is newer than this version's."""
    if config.url is not None:
        from watcher.store.postgres import migrate_database  # psycopg only when configured

        return await migrate_database(config.url.reveal())
    assert config.path is not None  # the config has one or the other
    before = _sqlite_version(config.path)
    SqliteStore(config.path).close()  # opening applies the missing migrations
    migrations = load_migrations("sqlite")
    after = max(before, len(migrations))
    applied = tuple(m.name for m in migrations if before < m.version)
    return MigrationResult(str(config.path), before, after, applied)


def _sqlite_version(path: Path) -> int:
    """The file's schema version without changing it: 0 when there is no file yet."""
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {path}: {exc}") from exc
    return version
