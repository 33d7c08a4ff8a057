"""The store on PostgreSQL: the `AsyncStore` operations on a pool of psycopg connections.

Every call is a network round trip, so the store is async: nothing here blocks the event loop.
Each method is one transaction (the connections are in autocommit mode; writes run inside
`conn.transaction()`, reads are single statements) with the same semantics as SqliteStore,
checked by the same contract suite. Several instances may share the database: a write that
races with another instance's gives the outcome of the two one after the other (rows are
locked in a fixed order so two batches cannot deadlock; a deadlock or serialization failure
PostgreSQL reports anyway is retried a few times). Every driver error is raised as StoreError,
and no message carries the URL's password.

The SQL text lives in watcher/store/postgres_rows.py, the schema and its migrations in
watcher/store/postgres_schema.py and watcher/store/migrations/postgres/.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

import psycopg
import structlog
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from watcher.config.dburl import redact_url, url_passwords
from watcher.errors import (
    DeliveryNotFound,
    StoreError,
    StoreUnavailable,
    TaskConflict,
    TaskFinished,
    TaskNotFound,
    TaskNotHeld,
)
from watcher.models import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Event,
    MirrorFile,
    MirrorHold,
    StateChange,
    Task,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store import postgres_cluster as cluster
from watcher.store import postgres_rows as sql
from watcher.store.base import (
    DurationSample,
    SpecColumns,
    apply_transition_to,
    metadata_json,
    new_task,
)
from watcher.store.bulk import DurationRecord, ImportResult, TaskRecords
from watcher.store.migrations import Migration, MigrationResult, load_migrations
from watcher.store.paging import clamp_limit, decode_cursor, encode_cursor
from watcher.store.postgres_rows import nul_free as _nul_free
from watcher.store.postgres_schema import migrate, schema_version
from watcher.store.sqlite_rows import (
    attempt_from_row,
    attempt_params,
    delivery_from_row,
    delivery_params,
    delivery_progress_params,
    event_from_row,
    event_params,
    hold_params,
    mirror_file_from_row,
    mirror_file_params,
    mirror_progress_params,
    state_change_from_row,
    task_from_row,
    task_state_params,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")
Conn: TypeAlias = AsyncConnection[Any]
Row: TypeAlias = Sequence[Any]

# libpq settings that notice a dead peer (a partition, a host gone) within about 30 s instead
# of TCP's default of many minutes: keepalives on an idle connection, and a limit on data left
# unacknowledged. They apply to TCP connections only (a unix socket ignores them).
TCP_LIVENESS: Final[dict[str, int]] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
_BATCH: Final = 500  # rows per query when streaming active tasks / pending deliveries
_WRITE_TRIES: Final = 3
_RETRY_WAIT_S: Final = 0.02
# What PostgreSQL asks a client to retry: the transaction was rolled back as a whole.
_RETRYABLE: Final = (errors.DeadlockDetected, errors.SerializationFailure)


class _Secrets:
    """The URL and its password(s), to scrub from driver messages before they go anywhere."""

    def __init__(self, url: str) -> None:
        self.where = redact_url(url)
        self._values = sorted({url, *url_passwords(url)}, key=len, reverse=True)

    def error(self, what: str, exc: BaseException) -> StoreError:
        """The driver's error as ours; a lost or refused connection (a network or server
        outage, the pool's wait for a connection timing out, a transaction the server ended
        because the process was frozen in the middle of it) is StoreUnavailable."""
        message = f"{what}: {exc}".strip()
        for value in self._values:
            message = message.replace(value, "***")
        if isinstance(exc, (psycopg.OperationalError, errors.IdleInTransactionSessionTimeout)):
            return StoreUnavailable(message)
        return StoreError(message)


async def _connect(url: str, secrets: _Secrets, timeout_s: float) -> Conn:
    try:
        return await AsyncConnection.connect(
            url, autocommit=True, connect_timeout=max(2, round(timeout_s))
        )
    except psycopg.Error as exc:
        raise secrets.error(f"cannot connect to the store {secrets.where}", exc) from exc


async def migrate_database(
    url: str, *, timeout_s: float = 10.0, migrations: Sequence[Migration] | None = None
) -> MigrationResult:
    """Bring the database at `url` to this version's schema (what `apixo-watcher migrate`
    does). StoreError if it cannot be reached, a migration fails, or it is newer."""
    secrets = _Secrets(url)
    wanted = load_migrations("postgres") if migrations is None else list(migrations)
    conn = await _connect(url, secrets, timeout_s)
    try:
        before = await schema_version(conn)
        applied = await migrate(conn, wanted, where=secrets.where)
        after = await schema_version(conn)  # another instance may have migrated meanwhile
    except psycopg.Error as exc:
        raise secrets.error(f"cannot migrate the store {secrets.where}", exc) from exc
    finally:
        await conn.close()
    for migration in applied:
        log.info("store_migrated", store=secrets.where, version=migration.version)
    return MigrationResult(secrets.where, before, after, tuple(m.name for m in applied))


class PostgresStore:
    """The AsyncStore on one PostgreSQL database. Create it with `await PostgresStore.open(url)`."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Conn],
        secrets: _Secrets,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self._pool: AsyncConnectionPool[Conn] | None = pool
        self._secrets = secrets
        self._gate = gate
        # Several instances (watcher/store/postgres_cluster.py): the instance this store
        # writes for once `act_as` named it; None for one-off commands (migrate, copy-store).
        self._me: str | None = None
        self._channel = cluster.channel_name("public")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = 4,
        timeout_s: float = 10.0,
        migrations: Sequence[Migration] | None = None,
        gate: Callable[[], None] | None = None,
        idle_transaction_timeout_s: float | None = None,
        application_name: str = "apixo-watcher",
    ) -> PostgresStore:
        """Connect, apply the missing migrations, and open a pool of up to `pool_size`
        connections. `timeout_s` bounds connecting and waiting for a free connection. `gate`
        runs before every operation and may refuse it by raising.

        `idle_transaction_timeout_s`: the server ends a transaction of this store left idle
        that long (idle_in_transaction_session_timeout). The store never waits on anything
        else inside a transaction, so only a process frozen (SIGSTOP, a VM pause) or cut off
        in the middle of one leaves it idle; its row locks would otherwise keep its work from
        the other instances (claims skip locked rows) for as long as it stays away."""
        secrets = _Secrets(url)
        await migrate_database(url, timeout_s=timeout_s, migrations=migrations)
        configure = None
        if idle_transaction_timeout_s is not None:
            idle_ms = max(1, round(idle_transaction_timeout_s * 1000))

            async def configure(conn: Conn) -> None:
                await conn.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")

        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            open=False,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(2, round(timeout_s)),
                "application_name": application_name,
                **TCP_LIVENESS,
            },
            configure=configure,
            timeout=timeout_s,
            name="apixo-watcher",
        )
        try:
            await pool.open(wait=True, timeout=timeout_s)
        except psycopg.Error as exc:
            await pool.close()
            raise secrets.error(f"cannot open the store {secrets.where}", exc) from exc
        log.debug("store_opened", store=secrets.where)
        store = cls(pool, secrets, gate)
        schema = await store._row("SELECT current_schema()")
        store._channel = cluster.channel_name(str(schema[0]) if schema else "public")
        return store

    @property
    def location(self) -> str:
        """The database, without its password."""
        return self._secrets.where

    # -- plumbing ------------------------------------------------------------------------------
    def _live(self) -> AsyncConnectionPool[Conn]:
        if self._pool is None:
            raise StoreError("the store is closed")
        if self._gate is not None:
            self._gate()
        return self._pool

    async def _write(self, what: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn` in one transaction; retried when PostgreSQL rolled it back for a deadlock
        or a serialization failure, or when the connection was found broken before the commit
        (nothing was committed). Our own errors (TaskConflict, ...) roll back and pass."""
        pool = self._live()
        attempt = 1
        stale_retried = False
        while True:
            done = False  # `fn` ran: a broken connection now may have lost the COMMIT's answer
            try:
                async with pool.connection() as conn:
                    try:
                        async with conn.transaction():
                            result = await fn(conn)
                            done = True
                        return result
                    except psycopg.OperationalError:
                        if done or stale_retried or not conn.broken:
                            raise
                stale_retried = True
                await self._check_pool(pool)
            except _RETRYABLE as exc:
                if attempt >= _WRITE_TRIES:
                    raise self._secrets.error(f"store write failed ({what})", exc) from exc
                attempt += 1
                log.warning("store_conflict_retry", what=what, attempt=attempt)
                await asyncio.sleep(_RETRY_WAIT_S * attempt)
            except psycopg.Error as exc:
                raise self._secrets.error(f"store write failed ({what})", exc) from exc

    async def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        pool = self._live()
        try:
            for attempt in (1, 2):
                async with pool.connection() as conn:
                    try:
                        cur = await conn.execute(query, params)
                        return await cur.fetchall()
                    except psycopg.OperationalError:
                        # A connection the server dropped while it sat in the pool (a restart,
                        # a failover, an idle timeout): a read is safe to repeat on a new one.
                        # The pool discards the broken connection when it comes back.
                        if attempt == 2 or not conn.broken:
                            raise
                await self._check_pool(pool)
            raise AssertionError("unreachable")  # pragma: no cover
        except psycopg.Error as exc:
            raise self._secrets.error("store read failed", exc) from exc

    @staticmethod
    async def _check_pool(pool: AsyncConnectionPool[Conn]) -> None:
        """One pooled connection was found broken: the server ended them all, most likely (a
        restart, a failover). Test the idle ones now and replace the broken ones, so the call
        is repeated on a healthy connection rather than on the next stale one."""
        await pool.check()

    async def _row(self, query: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self._rows(query, params)
        return rows[0] if rows else None

    async def _require_task(self, task_id: str) -> None:
        if await self._row(sql.TASK_EXISTS, (task_id,)) is None:
            raise TaskNotFound(f"task {task_id} not found")

    async def _require_delivery(self, delivery_id: str) -> None:
        if await self._row(sql.DELIVERY_EXISTS, (delivery_id,)) is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")

    # -- tasks ---------------------------------------------------------------------------------
    async def add_task(
        self, spec: TaskSpec, *, source: TaskSource, now: float
    ) -> tuple[Task, bool]:
        """Register a task; committed when this returns. See Store.add_task."""
        return (await self.add_tasks([spec], source=source, now=now))[0]

    async def add_tasks(
        self, specs: list[TaskSpec], *, source: TaskSource, now: float
    ) -> list[tuple[Task, bool]]:
        """Register many tasks in one transaction; a conflict writes none of them. Another
        instance registering the same id at the same moment: one creates it, the other gets it
        back as known (the INSERT waits for the other transaction, then skips the row)."""
        self._live()
        if not specs:
            return []
        firsts: dict[str, TaskSpec] = {}
        for spec in specs:
            firsts.setdefault(spec.task_id, spec)
        columns = self._task_columns(SpecColumns.of(list(firsts.values())), range(len(firsts)))

        async def insert(conn: Conn) -> list[tuple[Task, bool]]:
            params = (source.value, TaskState.PENDING.value, now, now, self._me, *columns)
            cur = await conn.execute(sql.INSERT_TASKS, params)
            created = {row[0] for row in await cur.fetchall()}
            known: dict[str, Task] = {}
            others = [task_id for task_id in firsts if task_id not in created]
            if others:
                cur = await conn.execute(sql.TASKS_BY_IDS, (others,))
                known = {row[0]: task_from_row(row) for row in await cur.fetchall()}
            return self._added(specs, firsts, created, known, source, now)

        return await self._write("add_tasks", insert)

    async def add_tasks_bulk(
        self, batch: SpecColumns, *, source: TaskSource, now: float
    ) -> list[bool]:
        """`add_tasks` answering only which specs created their task: the same statement and
        conflicts, reading back only the models of the ids that were known."""
        self._live()
        if not len(batch):
            return []
        firsts: dict[str, int] = {}  # task_id -> the row of its first spec in the batch
        for i, task_id in enumerate(batch.task_ids):
            firsts.setdefault(task_id, i)
        columns = self._task_columns(batch, firsts.values())

        async def insert(conn: Conn) -> list[bool]:
            params = (source.value, TaskState.PENDING.value, now, now, self._me, *columns)
            cur = await conn.execute(sql.INSERT_TASKS, params)
            created = {row[0] for row in await cur.fetchall()}
            models = {task_id: batch.models[firsts[task_id]] for task_id in created}
            others = [task_id for task_id in firsts if task_id not in created]
            if others:
                cur = await conn.execute(sql.TASK_MODELS_BY_IDS, (others,))
                models.update((row[0], row[1]) for row in await cur.fetchall())
            results: list[bool] = []
            for task_id, model in zip(batch.task_ids, batch.models, strict=True):
                stored = models.get(task_id)
                if stored is None:  # skipped as existing, then purged before we read it
                    raise StoreError(f"task {task_id} changed while it was registered; retry")
                if stored != model:
                    raise TaskConflict(
                        f"task {task_id} is already registered with model {stored!r}, not {model!r}"
                    )
                results.append(task_id in created)
                created.discard(task_id)  # a repeat of the id in this batch: known
            return results

        return await self._write("add_tasks", insert)

    @staticmethod
    def _task_columns(batch: SpecColumns, rows: Iterable[int]) -> list[list[Any]]:
        """The INSERT_TASKS arrays (task_id, model, endpoints, callback_url, metadata,
        deadline_s) of the batch's `rows`."""
        rows = list(rows)
        return [
            [column[i] for i in rows]
            for column in (
                batch.task_ids,
                batch.models,
                batch.endpoints,
                batch.callback_urls,
                batch.metadata,
                batch.deadlines_s,
            )
        ]

    @staticmethod
    def _added(
        specs: list[TaskSpec],
        firsts: Mapping[str, TaskSpec],
        created: set[str],
        known: dict[str, Task],
        source: TaskSource,
        now: float,
    ) -> list[tuple[Task, bool]]:
        """The results of add_tasks, in the order of `specs`; TaskConflict on a model clash."""
        results: list[tuple[Task, bool]] = []
        for spec in specs:
            existing = known.get(spec.task_id)
            if existing is None and spec.task_id in created:
                first = firsts[spec.task_id]
                task = new_task(
                    first,
                    source=source,
                    now=now,
                    metadata=json.loads(metadata_json(first.metadata)),
                )
                known[spec.task_id] = task
                results.append((task, True))
                continue
            if existing is None:  # skipped as existing, then purged before we read it
                raise StoreError(f"task {spec.task_id} changed while it was registered; retry")
            if existing.model != spec.model:
                raise TaskConflict(
                    f"task {spec.task_id} is already registered with model "
                    f"{existing.model!r}, not {spec.model!r}"
                )
            # A copy: the same id may appear again in this batch, or was just created in it.
            clone = dataclasses.replace(existing, metadata=copy.deepcopy(existing.metadata))
            results.append((clone, False))
        return results

    async def get_task(self, task_id: str) -> Task:
        """The task, or TaskNotFound."""
        row = await self._row(sql.TASK_BY_ID, (task_id,))
        if row is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_from_row(row)

    async def list_tasks(
        self, *, state: TaskState | None = None, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        """Tasks newest registration first (ties by task_id), optionally of one state."""
        filters = {"state": state.value} if state is not None else {}
        return await self._page(
            sql.SELECT_TASKS,
            ("registered_at", "task_id"),
            filters,
            limit,
            cursor,
            task_from_row,
            lambda t: (t.registered_at, t.task_id),
        )

    async def _page(
        self,
        select: str,
        key: tuple[str, str],
        filters: Mapping[str, Any],
        limit: int,
        cursor: str | None,
        convert: Callable[[Row], T],
        key_of: Callable[[T], tuple[float, str]],
        conditions: Sequence[str] = (),
    ) -> tuple[list[T], str | None]:
        """One keyset page, newest first by the (time, id) `key`; `filters` are column = value
        (constant names) and `conditions` constant SQL, as in SqliteStore._page."""
        limit = clamp_limit(limit)
        where = [f"{column} = %s" for column in filters]
        where.extend(conditions)
        params: list[Any] = list(filters.values())
        if cursor is not None:
            where.append(f"({key[0]}, {key[1]}) < (%s, %s)")
            params.extend(decode_cursor(cursor))
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = await self._rows(
            f"{select} {clause}ORDER BY {key[0]} DESC, {key[1]} DESC LIMIT %s",
            (*params, limit + 1),
        )
        items = [convert(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return items, None
        return items, encode_cursor(*key_of(items[-1]))

    async def active_tasks(self) -> AsyncIterator[Task]:
        """Every PENDING or PROCESSING task, in task_id order, read in bounded batches."""
        if self._me is not None:  # several instances: the ones this instance holds
            for row in await self._rows(cluster.OWN_TASKS, (self._me,)):
                yield task_from_row(row)
            return
        async for row in self._stream(sql.STREAM_ACTIVE_TASKS):
            yield task_from_row(row)

    async def _stream(self, query: str) -> AsyncIterator[Row]:
        # Each batch is its own query: no connection is held while the caller works on rows.
        last = ""
        while True:
            rows = await self._rows(query, (last, _BATCH))
            for row in rows:
                yield row
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    async def count_tasks(self) -> Mapping[TaskState, int]:
        """How many tasks are in each state (states with none are absent)."""
        return {TaskState(state): count for state, count in await self._rows(sql.COUNT_TASKS)}

    async def apply_transition(self, transition: Transition) -> Task:
        """Commit a state change with its event and deliveries in one transaction (outbox).
        The task row is locked first, so a cancel racing with it waits, then sees its result."""
        return await self._write("apply_transition", lambda conn: self._apply(conn, transition))

    async def _apply(self, conn: Conn, t: Transition) -> Task:
        if self._me is None:
            task = await self._locked_task(conn, t.task_id)
        else:
            # Only the instance holding the task writes its outcome: one whose claim was
            # taken over (its lease ran out) drops the task instead.
            cur = await conn.execute(sql.TASK_AND_CLAIM_FOR_UPDATE, (t.task_id,))
            row = await cur.fetchone()
            if row is None:
                raise TaskNotFound(f"task {t.task_id} not found")
            task = task_from_row(row)
            if row[15] != self._me and not task.state.terminal:
                raise TaskNotHeld(f"task {t.task_id} is held by another instance")
        from_state = apply_transition_to(task, t)
        async with conn.pipeline():  # the writes go in one round trip
            await conn.execute(sql.UPDATE_TASK_STATE, _nul_free(task_state_params(task)))
            if self._me is not None and t.to_state.terminal:
                await conn.execute(sql.RELEASE_TASK_CLAIM, (t.task_id,))
            if t.to_state != from_state:
                change = (t.task_id, from_state.value, t.to_state.value, t.at, t.reason)
                await conn.execute(sql.INSERT_STATE_CHANGE, _nul_free((*change, t.upstream_state)))
            if t.event is not None:
                await conn.execute(sql.INSERT_EVENT, event_params(t.event))
            if t.deliveries:
                await self._insert_deliveries(conn, t.deliveries)
            if t.mirror is not None:
                if self._me is None:
                    await conn.execute(sql.INSERT_MIRROR_HOLD, hold_params(t.mirror))
                else:
                    params = (*hold_params(t.mirror), self._me)
                    await conn.execute(sql.INSERT_MIRROR_HOLD_CLAIMED, params)
                await conn.cursor().executemany(
                    sql.INSERT_MIRROR_FILE,
                    [_nul_free(mirror_file_params(f)) for f in t.mirror.files],
                )
        return task

    async def _insert_deliveries(self, conn: Conn, deliveries: Sequence[Delivery]) -> None:
        """New deliveries; claimed by this instance, which makes their attempts, if it has
        joined several instances."""
        if self._me is None:
            rows = [_nul_free(delivery_params(d)) for d in deliveries]
            await conn.cursor().executemany(sql.INSERT_DELIVERY, rows)
            return
        rows = [_nul_free((*delivery_params(d), self._me)) for d in deliveries]
        await conn.cursor().executemany(sql.INSERT_DELIVERY_CLAIMED, rows)

    @staticmethod
    async def _locked_task(conn: Conn, task_id: str) -> Task:
        cur = await conn.execute(sql.TASK_BY_ID_FOR_UPDATE, (task_id,))
        row = await cur.fetchone()
        if row is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_from_row(row)

    async def cancel_task(self, task_id: str, *, now: float) -> Task:
        """Move an active task to CANCELLED (no event). TaskFinished if it is terminal."""

        async def cancel(conn: Conn) -> Task:
            task = await self._locked_task(conn, task_id)
            if task.state.terminal:
                raise TaskFinished(f"task {task_id} has already finished ({task.state.value})")
            from_state = task.state
            task.state = TaskState.CANCELLED
            task.updated_at = now
            task.finished_at = now
            task.last_error = None
            change = (task_id, from_state.value, task.state.value, now, "cancelled", None)
            async with conn.pipeline():
                await conn.execute(sql.UPDATE_TASK_STATE, task_state_params(task))
                await conn.execute(sql.INSERT_STATE_CHANGE, change)
                if self._me is not None:
                    # The instance holding it stops polling it now (it would find it
                    # cancelled at its next write anyway).
                    await conn.execute(sql.RELEASE_TASK_CLAIM, (task_id,))
                    await cluster.notify(conn, self._channel, self._notice("cancel", task_id))
            return task

        return await self._write("cancel_task", cancel)

    async def record_polls(
        self, polls: Mapping[str, int], *, errors: Mapping[str, str | None]
    ) -> None:
        """Persist live poll counts (any task) and last errors (active tasks only) in one
        statement, the tasks in task_id order."""
        self._live()
        if not polls and not errors:
            return
        ids = sorted(polls.keys() | errors.keys())
        params: tuple[Any, ...] = (
            ids,
            [polls.get(task_id) for task_id in ids],
            [task_id in errors for task_id in ids],
            list(_nul_free([errors.get(task_id) for task_id in ids])),
        )
        # Several instances: counts of a task this instance no longer holds are stale.
        statement = sql.UPDATE_POLL_COUNTS
        if self._me is not None:
            statement = sql.UPDATE_HELD_POLL_COUNTS
            params = (*params, self._me)

        async def record(conn: Conn) -> None:
            await conn.execute(statement, params)

        await self._write("record_polls", record)

    async def extend_deadlines(self, *, since: float, until: float) -> None:
        """A credential pause from `since` to `until`: each active task registered before
        `until` gains `until - max(since, registered_at)` of deadline extension. One UPDATE."""
        self._live()
        if until <= since:
            return

        async def extend(conn: Conn) -> None:
            await conn.execute(sql.EXTEND_DEADLINES, (until, since, until))

        await self._write("extend_deadlines", extend)

    async def shift_future_times(self, step_s: float) -> None:
        """The wall clock was stepped by `step_s`: the deadline extensions of active tasks and
        the next attempts of pending deliveries move by it, in one transaction."""

        async def shift(conn: Conn) -> None:
            await conn.execute(sql.SHIFT_DEADLINES, (step_s,))
            await conn.execute(sql.SHIFT_NEXT_ATTEMPTS, (step_s,))

        await self._write("shift_future_times", shift)

    async def state_changes(self, task_id: str) -> list[StateChange]:
        """The task's state changes, oldest first."""
        await self._require_task(task_id)
        rows = await self._rows(sql.SELECT_STATE_CHANGES, (task_id,))
        return [state_change_from_row(row) for row in rows]

    # -- events --------------------------------------------------------------------------------
    async def get_event(self, event_id: str) -> Event:
        """The event; StoreError if it is missing."""
        row = await self._row(sql.EVENT_BY_ID, (event_id,))
        if row is None:
            raise StoreError(f"event {event_id} not found")
        return event_from_row(row)

    async def events_for_task(self, task_id: str) -> list[Event]:
        """The task's events, oldest first."""
        await self._require_task(task_id)
        return [event_from_row(row) for row in await self._rows(sql.EVENTS_OF_TASK, (task_id,))]

    async def event_bodies(self, event_ids: Sequence[str]) -> dict[str, bytes]:
        """The bodies of many events in one query; unknown ids are absent."""
        self._live()
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return {}
        rows = await self._rows(sql.EVENT_BODIES, (ids,))
        return {event_id: bytes(body) for event_id, body in rows}

    # -- deliveries ----------------------------------------------------------------------------
    async def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery, or DeliveryNotFound."""
        row = await self._row(sql.DELIVERY_BY_ID, (delivery_id,))
        if row is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")
        return delivery_from_row(row)

    async def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        task_id: str | None = None,
        retrying: bool | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """Deliveries newest first (by created_at, ties by delivery_id), optionally filtered;
        `retrying` as in the Store protocol."""
        filters: dict[str, Any] = {}
        conditions: list[str] = []
        if retrying:
            if status not in (None, DeliveryStatus.PENDING):
                self._live()
                return [], None  # only pending deliveries retry
            status = DeliveryStatus.PENDING
            conditions.append(sql.RETRYING_CONDITION)
        elif retrying is not None:
            conditions.append(f"NOT ({sql.RETRYING_CONDITION})")
        if status is not None:
            filters["status"] = status.value
        if task_id is not None:
            filters["task_id"] = task_id
        return await self._page(
            sql.SELECT_DELIVERIES,
            ("created_at", "delivery_id"),
            filters,
            limit,
            cursor,
            delivery_from_row,
            lambda d: (d.created_at, d.delivery_id),
            conditions,
        )

    async def pending_deliveries(self) -> AsyncIterator[Delivery]:
        """Every PENDING delivery, in delivery_id order, read in bounded batches."""
        if self._me is not None:  # several instances: the ones this instance holds
            for row in await self._rows(cluster.OWN_DELIVERIES, (self._me,)):
                yield delivery_from_row(row)
            return
        async for row in self._stream(sql.STREAM_PENDING_DELIVERIES):
            yield delivery_from_row(row)

    async def count_deliveries(self) -> Mapping[DeliveryStatus, int]:
        """How many deliveries are in each status (statuses with none are absent)."""
        rows = await self._rows(sql.COUNT_DELIVERIES)
        return {DeliveryStatus(status): count for status, count in rows}

    async def count_retrying_deliveries(self) -> int:
        """How many deliveries are retrying (pending after a failed attempt of their round)."""
        rows = await self._rows(sql.COUNT_RETRYING_DELIVERIES)
        return int(rows[0][0]) if rows else 0

    async def record_attempt(self, attempt: Attempt, delivery: Delivery) -> None:
        """Insert the attempt and store the delivery's progress in one transaction."""
        await self.record_attempts(((attempt, delivery),))

    async def record_attempts(self, batch: Sequence[tuple[Attempt, Delivery]]) -> None:
        """`record_attempt` for every pair in one transaction (one round trip for the
        statements). DeliveryNotFound (nothing written) if any delivery is unknown."""
        self._live()
        if not batch:
            return
        for attempt, delivery in batch:
            if attempt.delivery_id != delivery.delivery_id:
                raise StoreError(
                    f"attempt of delivery {attempt.delivery_id} recorded with "
                    f"{delivery.delivery_id}"
                )
        # delivery_id order is a fixed lock order; the sort is stable, so two attempts of one
        # delivery in a batch still apply in the order given.
        ordered = sorted(batch, key=lambda pair: pair[1].delivery_id)

        async def record(conn: Conn) -> None:
            if self._me is not None:
                await self._record_held_attempts(conn, batch, ordered)
                return
            cur = conn.cursor()
            await cur.executemany(
                sql.UPDATE_DELIVERY_PROGRESS,
                [_nul_free(delivery_progress_params(d)) for _, d in ordered],
            )
            if cur.rowcount < len(ordered):
                ids = list({d.delivery_id for _, d in ordered})
                found = await conn.execute(sql.DELIVERIES_EXISTING, (ids,))
                known = {row[0] for row in await found.fetchall()}
                missing = min(set(ids) - known)
                raise DeliveryNotFound(f"delivery {missing} not found")
            await cur.executemany(
                sql.INSERT_ATTEMPT, [_nul_free(attempt_params(a)) for a, _ in batch]
            )

        await self._write("record_attempts", record)

    async def _record_held_attempts(
        self,
        conn: Conn,
        batch: Sequence[tuple[Attempt, Delivery]],
        ordered: Sequence[tuple[Attempt, Delivery]],
    ) -> None:
        """Several instances: every attempt is recorded (it was made), but a delivery's progress
        only by the instance holding it; one redelivered through another instance meanwhile
        belongs to that one now."""
        ids = sorted({d.delivery_id for _, d in ordered})
        cur = await conn.execute(sql.HELD_DELIVERIES_FOR_UPDATE, (ids, self._me))
        held = {row[0] for row in await cur.fetchall()}
        if len(held) < len(ids):
            found = await conn.execute(sql.DELIVERIES_EXISTING, (ids,))
            missing = set(ids) - {row[0] for row in await found.fetchall()}
            if missing:
                raise DeliveryNotFound(f"delivery {min(missing)} not found")
            log.warning("delivery_held_elsewhere", deliveries=sorted(set(ids) - held))
        progress = [
            _nul_free(delivery_progress_params(d)) for _, d in ordered if d.delivery_id in held
        ]
        async with conn.pipeline():
            if progress:
                await conn.cursor().executemany(sql.UPDATE_DELIVERY_PROGRESS, progress)
                await conn.execute(sql.RELEASE_FINISHED_DELIVERIES, (sorted(held),))
            await conn.cursor().executemany(
                sql.INSERT_ATTEMPT, [_nul_free(attempt_params(a)) for a, _ in batch]
            )

    async def attempts(self, delivery_id: str) -> list[Attempt]:
        """The delivery's attempts, oldest first."""
        await self._require_delivery(delivery_id)
        rows = await self._rows(sql.SELECT_ATTEMPTS, (delivery_id,))
        return [attempt_from_row(row) for row in rows]

    async def requeue_delivery(self, delivery_id: str, *, now: float) -> Delivery:
        """Make the delivery PENDING again, due now, schedule_pos 0; `attempts` and the
        webhook id are kept. Works from any status."""

        async def requeue(conn: Conn) -> Delivery:
            if self._me is not None:
                return await self._requeue_here(conn, delivery_id, now)
            cur = await conn.execute(sql.REQUEUE_DELIVERY, (now, now, delivery_id))
            row = await cur.fetchone()
            if row is None:
                raise DeliveryNotFound(f"delivery {delivery_id} not found")
            return delivery_from_row(row)

        return await self._write("requeue_delivery", requeue)

    async def _requeue_here(self, conn: Conn, delivery_id: str, now: float) -> Delivery:
        """Several instances: the instance that takes the redelivery claims it; the one that
        held it (if another) is told to let go of it."""
        cur = await conn.execute(sql.DELIVERY_CLAIM_FOR_UPDATE, (delivery_id,))
        before = await cur.fetchone()
        if before is None:
            raise DeliveryNotFound(f"delivery {delivery_id} not found")
        cur = await conn.execute(sql.REQUEUE_DELIVERY_CLAIMED, (now, now, self._me, delivery_id))
        row = await cur.fetchone()
        assert row is not None
        if before[0] is not None and before[0] != self._me:
            await cluster.notify(conn, self._channel, self._notice("redeliver", delivery_id))
        return delivery_from_row(row)

    # -- learned durations (adaptive polling) ---------------------------------------------------
    async def record_durations(self, samples: Sequence[DurationSample]) -> None:
        """Persist finished tasks' durations, in the order given, in one transaction."""
        self._live()
        if not samples:
            return
        rows = [_nul_free((model, float(d), float(at))) for model, d, at in samples]

        async def record(conn: Conn) -> None:
            await conn.cursor().executemany(sql.INSERT_DURATION, rows)

        await self._write("record_durations", record)

    async def recent_durations(self, per_model: int) -> dict[str, list[float]]:
        """Each model's `per_model` most recent durations, oldest first."""
        out: dict[str, list[float]] = {}
        for model, duration in await self._rows(sql.RECENT_DURATIONS, (max(0, per_model),)):
            out.setdefault(model, []).append(float(duration))
        return out

    async def trim_durations(self, keep_per_model: int) -> int:
        """Delete all but each model's `keep_per_model` most recent durations."""

        async def trim(conn: Conn) -> int:
            cur = await conn.execute(sql.TRIM_DURATIONS, (max(0, keep_per_model),))
            return int(cur.rowcount)

        return await self._write("trim_durations", trim)

    # -- bulk import (copy-store) --------------------------------------------------------------
    async def import_task_records(self, records: TaskRecords) -> ImportResult:
        """Copy one batch of tasks with everything recorded about them, in one transaction:
        what the database lacks is inserted, what the source has further along is updated,
        the rest is left as it is (watcher/store/bulk.py). Conflicts are returned, not raised."""
        from watcher.store.postgres_import import import_task_records

        return await self._write(
            "import_task_records", lambda conn: import_task_records(conn, records)
        )

    async def import_durations(self, rows: Sequence[DurationRecord]) -> ImportResult:
        """Copy one batch of learned polling durations in one transaction: those the database
        holds already (as many with the same values) are left out (watcher/store/bulk.py)."""
        from watcher.store.postgres_import import import_durations

        return await self._write("import_durations", lambda conn: import_durations(conn, rows))

    # -- result mirroring ----------------------------------------------------------------------
    async def mirror_files(self, task_id: str) -> list[MirrorFile]:
        """The task's result files to mirror, in result_urls order."""
        rows = await self._rows(sql.MIRROR_FILES_OF_TASK, (task_id,))
        return [mirror_file_from_row(row) for row in rows]

    async def update_mirror_files(self, files: Sequence[MirrorFile]) -> None:
        """Record the files' progress in one transaction; StoreError if one is unknown."""

        async def update(conn: Conn) -> None:
            for file in files:
                params = _nul_free(mirror_progress_params(file))
                cur = await conn.execute(sql.UPDATE_MIRROR_FILE, params)
                if not cur.rowcount:
                    raise StoreError(f"mirror file {file.task_id}#{file.position} not found")

        await self._write("update_mirror_files", update)

    async def held_mirrors(self) -> list[MirrorHold]:
        """Every held success with its files, oldest first."""
        if self._me is None:
            rows = await self._rows(sql.SELECT_MIRROR_HOLDS)
        else:  # several instances: the ones this instance holds (claims bring the others)
            rows = await self._rows(sql.SELECT_OWN_MIRROR_HOLDS, (self._me,))
        holds = [event_from_row(row) for row in rows]
        return [MirrorHold(e, tuple(await self.mirror_files(e.task_id))) for e in holds]

    async def release_mirror(
        self, task_id: str, event: Event, deliveries: Sequence[Delivery]
    ) -> bool:
        """The final event and its deliveries, and the hold dropped, in one transaction. The
        DELETE locks the hold's row, so of two instances releasing at once one writes."""

        async def release(conn: Conn) -> bool:
            if self._me is None:
                deleted = await conn.execute(sql.DELETE_MIRROR_HOLD, (task_id,))
            else:  # several instances: only the one holding it releases it
                deleted = await conn.execute(sql.DELETE_OWN_MIRROR_HOLD, (task_id, self._me))
            if not deleted.rowcount:
                return False
            await conn.execute(sql.INSERT_EVENT, event_params(event))
            if deliveries:
                await self._insert_deliveries(conn, deliveries)
            return True

        return await self._write("release_mirror", release)

    # -- several instances (watcher/store/postgres_cluster.py) ----------------------------------
    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this store (one per schema)."""
        return self._channel

    @property
    def instance_id(self) -> str | None:
        return self._me

    def act_as(self, instance_id: str) -> None:
        """Write as `instance_id` from now on: new tasks, deliveries and holds are claimed by
        it, and outcomes, progress and poll counts are written only for what it holds."""
        self._me = instance_id

    def _notice(self, kind: str, subject: str = "") -> cluster.Notice:
        return cluster.Notice(kind, subject, self._me or "-")

    def _require_me(self) -> str:
        if self._me is None:
            raise StoreError("the store has no instance to act as (act_as first)")
        return self._me

    async def heartbeat(
        self, me: cluster.InstanceInfo, lease_s: float, *, first: bool = False
    ) -> cluster.Membership:
        """Renew this instance's lease (creating its row) and read the cluster's state; the
        first one also tells the others that an instance joined."""

        async def beat(conn: Conn) -> cluster.Membership:
            membership = await cluster.heartbeat(conn, me, lease_s, first=first)
            if first or membership.lapsed:
                await cluster.notify(conn, self._channel, self._notice("instances"))
            return membership

        return await self._write("heartbeat", beat)

    async def instances_on_host(self, host_key: str) -> list[tuple[str, int]]:
        """(instance id, pid) of the other live instances on the host named by `host_key`."""
        me = self._require_me()
        return [(str(i), int(pid)) for i, pid in await self._rows(cluster.ON_HOST, (host_key, me))]

    async def expire_instances(self, instance_ids: Sequence[str], host_key: str) -> None:
        """End the leases of instances on this host known to be gone (their process no longer
        runs), so their work is taken over now rather than when their lease runs out."""
        if not instance_ids:
            return

        async def expire(conn: Conn) -> None:
            await conn.execute(cluster.EXPIRE, (list(instance_ids), host_key))

        await self._write("expire_instances", expire)

    async def claim_tasks(self, limit: int) -> list[Task]:
        """Claim up to `limit` active tasks nobody holds (oldest registration first), then
        ones held by instances whose lease ran out; the claimed tasks."""
        me = self._require_me()
        if limit <= 0:
            return []

        async def claim(conn: Conn) -> list[Task]:
            cur = await conn.execute(cluster.CLAIM_FREE_TASKS, (me, limit))
            rows = list(await cur.fetchall())
            if len(rows) < limit:
                cur = await conn.execute(cluster.CLAIM_ORPHANED_TASKS, (me, limit - len(rows)))
                rows += await cur.fetchall()
            return [task_from_row(row) for row in rows]

        return await self._write("claim_tasks", claim)

    async def release_tasks(self, polls: Mapping[str, int]) -> int:
        """Let go of tasks this instance holds (task id -> its live poll count, saved with it)
        and tell the others there is work to claim; how many were released."""
        me = self._require_me()
        if not polls:
            return 0
        ids, counts = cluster.polls_arrays(polls)

        async def release(conn: Conn) -> int:
            cur = await conn.execute(cluster.RELEASE_TASKS, (ids, counts, me))
            await cluster.notify(conn, self._channel, self._notice("tasks"))
            return int(cur.rowcount)

        return await self._write("release_tasks", release)

    async def claim_deliveries(self, limit: int) -> list[Delivery]:
        """Claim up to `limit` pending deliveries nobody (alive) holds, soonest due first."""
        me = self._require_me()

        async def claim(conn: Conn) -> list[Delivery]:
            cur = await conn.execute(cluster.CLAIM_DELIVERIES, (me, limit))
            return [delivery_from_row(row) for row in await cur.fetchall()]

        return await self._write("claim_deliveries", claim)

    async def claim_mirror_holds(self, limit: int) -> list[MirrorHold]:
        """Claim up to `limit` held successes nobody (alive) copies, oldest first."""
        me = self._require_me()

        async def claim(conn: Conn) -> list[Event]:
            cur = await conn.execute(cluster.CLAIM_HOLDS, (me, limit))
            return [event_from_row(row) for row in await cur.fetchall()]

        events = await self._write("claim_mirror_holds", claim)
        return [MirrorHold(e, tuple(await self.mirror_files(e.task_id))) for e in events]

    async def leave(self) -> None:
        """Release everything this instance holds and remove it: the others take its work over
        at once (a graceful stop), told so by a notice."""
        me = self._require_me()

        async def leave(conn: Conn) -> None:
            for statement in cluster.LEAVE:
                await conn.execute(statement, (me,))
            await cluster.notify(conn, self._channel, self._notice("instances"))
            await cluster.notify(conn, self._channel, self._notice("tasks"))

        await self._write("leave", leave)

    async def announce(self, kind: str, subject: str = "") -> None:
        """Send a notice to every instance (e.g. a hint for a task another instance holds)."""

        async def send(conn: Conn) -> None:
            await cluster.notify(conn, self._channel, self._notice(kind, subject))

        await self._write("announce", send)

    async def live_instances(self) -> list[cluster.InstanceRecord]:
        """The live instances with the work each holds (`GET /v1/instances`)."""
        return [
            cluster.InstanceRecord(
                instance_id=row[0],
                hostname=row[1],
                pid=int(row[2]),
                version=row[3],
                intake=row[4],
                started_at=float(row[5]),
                heartbeat_at=float(row[6]),
                lease_until=float(row[7]),
                tasks=int(row[8]),
                deliveries=int(row[9]),
            )
            for row in await self._rows(cluster.LIST)
        ]

    # -- housekeeping --------------------------------------------------------------------------
    async def purge_finished(self, *, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` tasks finished before `before` (oldest first) and everything
        recorded about them, in one transaction; tasks with a pending delivery stay."""

        async def purge(conn: Conn) -> int:
            cur = await conn.execute(sql.PURGE_PICK, (before, clamp_limit(limit)))
            ids = [row[0] for row in await cur.fetchall()]
            if not ids:
                return 0
            deleted = 0
            for statement in sql.PURGE:
                deleted = (await conn.execute(statement, (ids,))).rowcount
            return deleted  # the last statement deletes the tasks themselves

        return await self._write("purge_finished", purge)

    async def check_writable(self) -> None:
        """Commit a one-row heartbeat; StoreError if the write cannot be committed now."""

        async def beat(conn: Conn) -> None:
            await conn.execute(sql.HEARTBEAT)

        await self._write("check_writable", beat)

    async def close(self) -> None:
        """Close the pool's connections; idempotent."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await pool.close()
        except psycopg.Error as exc:
            raise self._secrets.error(f"cannot close the store {self.location}", exc) from exc
        log.debug("store_closed", store=self.location)
