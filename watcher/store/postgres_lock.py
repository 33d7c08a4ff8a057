"""One daemon per PostgreSQL store, until instances share the work with claims and leases.

Two daemons on one store would both poll every task and both send every webhook, as two on
one SQLite file would (watcher/store/sqlite_files.py). The daemon takes a session-level
advisory lock, `pg_try_advisory_lock`, on a dedicated connection (not one of the pool's) and
holds it for the life of the process; a second daemon on the same store finds it taken and
refuses to start (StoreInUse, exit 75). The key is per schema (the store's tables are in the
first schema of the `search_path`), so stores in different schemas of one database do not
exclude each other.

PostgreSQL releases the lock when that connection ends: a network or server outage, or an
administrator terminating it. From then on the lock is `lost`: every store operation is
refused (`require` raises StoreUnavailable) until `keep` has connected again and taken the lock
back, so the daemon waits as for any outage. If another daemon took it meanwhile, `keep`
raises StoreInUse and the daemon stops.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import psycopg
import structlog
from psycopg import AsyncConnection

from watcher.config.dburl import redact_url, url_passwords
from watcher.errors import StoreInUse, StoreUnavailable

log = structlog.get_logger(__name__)

# The first key of pg_try_advisory_lock(int, int): the bytes "apix"; the second is the schema's
# hashtext. The migration lock (postgres_schema.py) uses the one-bigint form: no overlap.
INSTANCE_LOCK: Final = int.from_bytes(b"apix", "big")
_TRY_LOCK: Final = "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))"


class InstanceLock:
    """The advisory lock that keeps a second daemon off this store; see the module docstring."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self._url = url
        self._where = redact_url(url)
        self._secrets = sorted({url, *url_passwords(url)}, key=len, reverse=True)
        self._timeout_s = timeout_s
        self._conn: AsyncConnection[Any] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self) -> None:
        """Take the lock; StoreInUse if another daemon holds it, StoreUnavailable if the
        database cannot be reached."""
        try:
            conn = await AsyncConnection.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(2, round(self._timeout_s)),
                application_name="apixo-watcher lock",
            )
        except psycopg.Error as exc:
            message = f"cannot connect to the store {self._where}: {exc}"
            raise StoreUnavailable(self._scrub(message)) from exc
        try:
            row = await (await conn.execute(_TRY_LOCK, (INSTANCE_LOCK,))).fetchone()
        except psycopg.Error as exc:
            await conn.close()
            message = f"cannot lock the store {self._where}: {exc}"
            raise StoreUnavailable(self._scrub(message)) from exc
        if not row or not row[0]:
            await conn.close()
            raise StoreInUse(
                f"the store {self._where} is in use by another running apixo-watcher daemon "
                "(one instance per PostgreSQL store in this version)"
            )
        self._conn = conn

    def require(self) -> None:
        """StoreUnavailable unless the lock is held (run before every store operation)."""
        if self._conn is None:
            raise StoreUnavailable(
                f"the store lock on {self._where} was lost with its connection; taking it back"
            )

    async def keep(self) -> bool:
        """Check the lock's connection, and take the lock back if it was lost. True while it is
        held; False while the database cannot be reached; StoreInUse if another daemon took it
        meanwhile."""
        conn = self._conn
        if conn is not None:
            try:
                await conn.execute("SELECT 1")
                return True
            except psycopg.Error as exc:
                self._conn = None
                await _close_quietly(conn)
                log.error("store_lock_lost", store=self._where, error=self._scrub(str(exc)))
        try:
            await self.acquire()
        except StoreUnavailable:
            return False
        log.info("store_lock_regained", store=self._where)
        return True

    async def release(self) -> None:
        """Close the connection, which releases the lock; idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)

    def _scrub(self, message: str) -> str:
        for value in self._secrets:
            message = message.replace(value, "***")
        return message


async def _close_quietly(conn: AsyncConnection[Any]) -> None:
    with contextlib.suppress(psycopg.Error):
        await conn.close()
