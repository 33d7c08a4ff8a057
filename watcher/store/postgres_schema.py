"""The PostgreSQL store's versioned schema: applying watcher/store/migrations/postgres/NNNN_*.sql.

The applied versions are rows of `watcher_schema`. Every missing migration is applied in ONE
transaction holding a transaction-level advisory lock, so instances that start (or run
`apixo-watcher migrate`) at the same moment take turns: the first applies, the others then find
nothing to do. PostgreSQL's DDL is transactional, so a failed migration leaves nothing behind.
A database newer than the code is refused rather than misread, as SqliteStore does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from psycopg import AsyncConnection

from watcher.errors import StoreError
from watcher.store.migrations import Migration, check_numbering

SCHEMA_TABLE: Final = "watcher_schema"
# pg_advisory_xact_lock key: the bytes "apixwatc". Advisory locks are per database, so other
# applications' keys could only collide inside this database, which is ours.
MIGRATION_LOCK: Final = int.from_bytes(b"apixwatc", "big")

_CREATE_SCHEMA_TABLE: Final = (
    f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} ("
    "version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL)"
)


async def schema_version(conn: AsyncConnection[Any]) -> int:
    """The database's schema version: 0 for an empty database."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SCHEMA_TABLE,))
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_TABLE}")  # noqa: S608
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def migrate(
    conn: AsyncConnection[Any], migrations: Sequence[Migration], *, where: str
) -> list[Migration]:
    """Apply the missing `migrations` on `conn` (autocommit); the ones applied, in order.

    `where` names the database in messages (without its password). Raises StoreError if the
    database is newer than `migrations`. Driver errors are left to the caller to wrap.
    """
    check_numbering(migrations)
    latest = len(migrations)
    # Read without the lock first: an up-to-date database opens without waiting on anyone.
    current = await schema_version(conn)
    _check_not_newer(current, latest, where)
    if current == latest:
        return []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(_CREATE_SCHEMA_TABLE)
        current = await schema_version(conn)  # again, under the lock
        _check_not_newer(current, latest, where)
        pending = list(migrations[current:])
        for migration in pending:
            # No parameters: the file's statements go as one simple query.
            await conn.execute(migration.sql.encode())
            await conn.execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, name, applied_at) "  # noqa: S608
                "VALUES (%s, %s, now())",
                (migration.version, migration.name),
            )
    return pending


def _check_not_newer(version: int, latest: int, where: str) -> None:
    if version > latest:
        raise StoreError(
            f"the database {where} has schema version {version}, newer than this "
            f"apixo-watcher understands ({latest}); upgrade apixo-watcher or point "
            f"store.url at another database"
        )
