"""Several instances on one PostgreSQL store: membership, claims and notices (contract section 10).

Each running daemon has a row in `instances` whose `lease_until` its heartbeat pushes forward
(one write per heartbeat, not one per claimed row). A task, a pending delivery or a held mirror
is claimed by the instance named in its `claimed_by`; the claim is good while that instance's
lease runs. Work is claimed in batches with `UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR
UPDATE SKIP LOCKED))`: two instances claiming at once get disjoint rows and never wait for each
other, and a row claimed meanwhile is re-checked under its lock and skipped. What an instance
whose lease ran out held is claimed like unclaimed work.

Lease times are the database's clock (`clock_timestamp()`), the one clock every host shares;
the daemon turns them into its own monotonic deadlines (watcher/cluster/).

Notices go through LISTEN/NOTIFY on one channel per schema; `pg_notify` inside a write's
transaction is delivered when (and only if) it commits. A notice is a hint to look now, never
the only way work is found: claim rounds and heartbeats find everything anyway, later.
"""

# The SQL below is constant text composed from this module's own constants (S608 sees the
# f-strings); every value is bound.
# ruff: noqa: S608
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import structlog
from psycopg import AsyncConnection, sql

from watcher.config.dburl import redact_url, url_passwords
from watcher.errors import StoreUnavailable

log = structlog.get_logger(__name__)

NOW: Final = "extract(epoch from clock_timestamp())"
ACTIVE: Final = "state IN ('pending', 'processing')"
TASK_COLUMNS: Final = (
    "task_id, model, endpoints::text, callback_url, metadata::text, deadline_s, source, state, "
    "registered_at, updated_at, upstream_state, polls, finished_at, last_error, "
    "deadline_extension_s"
)
DELIVERY_COLUMNS: Final = (
    "delivery_id, event_id, task_id, event_type, endpoint, webhook_id, status, created_at, "
    "updated_at, next_attempt_at, url, attempts, schedule_pos, last_status_code, last_error"
)
HOLD_COLUMNS: Final = "event_id, task_id, type, created_at, body"
DEAD: Final = f"SELECT instance_id FROM instances WHERE lease_until < {NOW}"

# The previous lease is read in the same statement: NULL (the row is gone) or run out means
# this instance's claims may have been taken over meanwhile.
HEARTBEAT: Final = (
    "WITH prev AS (SELECT lease_until FROM instances WHERE instance_id = %s) "
    "INSERT INTO instances (instance_id, hostname, pid, version, started_at, heartbeat_at, "
    f"lease_until, host_key, intake) VALUES (%s, %s, %s, %s, {NOW}, {NOW}, {NOW} + %s, %s, %s) "
    "ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
    "lease_until = excluded.lease_until, intake = excluded.intake "
    f"RETURNING {NOW}, instances.lease_until, (SELECT lease_until FROM prev)"
)
LIVE: Final = (
    f"SELECT instance_id, lease_until FROM instances WHERE lease_until >= {NOW} "
    'ORDER BY instance_id COLLATE "C"'
)
COUNT_ACTIVE: Final = f"SELECT count(*) FROM tasks WHERE {ACTIVE}"
DEAD_HOLDING: Final = (
    f"SELECT EXISTS (SELECT 1 FROM tasks WHERE claimed_by IN ({DEAD}) AND {ACTIVE}) "
    f"OR EXISTS (SELECT 1 FROM deliveries WHERE claimed_by IN ({DEAD}) AND status = 'pending') "
    f"OR EXISTS (SELECT 1 FROM mirror_holds WHERE claimed_by IN ({DEAD})) "
    f"OR EXISTS (SELECT 1 FROM tasks WHERE claimed_by IS NULL AND {ACTIVE}) "
    "OR EXISTS (SELECT 1 FROM deliveries WHERE claimed_by IS NULL AND status = 'pending') "
    "OR EXISTS (SELECT 1 FROM mirror_holds WHERE claimed_by IS NULL)"
)
# The sessions of instances whose lease ran out are ended: a process frozen (SIGSTOP, a VM
# pause) or cut off in the middle of a statement holds its row locks (which claims skip) for as
# long as it stays away, and must write nothing more when it comes back. Sessions are known by
# the tag each instance gives its connections (session_tag). Allowed for sessions of the same
# database user, which instances share.
END_DEAD_SESSIONS: Final = (
    "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity AS a "
    "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
    "AND a.application_name IN (SELECT 'apixo-watcher:' || left(md5(instance_id), 16) "
    f"FROM instances WHERE lease_until < {NOW})"
)
# Rows of instances that are gone and hold nothing any more.
FORGET_DEAD: Final = (
    f"DELETE FROM instances AS i WHERE i.lease_until < {NOW} "
    "AND NOT EXISTS (SELECT 1 FROM tasks AS t WHERE t.claimed_by = i.instance_id) "
    "AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.claimed_by = i.instance_id) "
    "AND NOT EXISTS (SELECT 1 FROM mirror_holds AS h WHERE h.claimed_by = i.instance_id)"
)
ON_HOST: Final = (
    "SELECT instance_id, pid FROM instances WHERE host_key = %s AND instance_id <> %s "
    f"AND lease_until >= {NOW}"
)
EXPIRE: Final = "UPDATE instances SET lease_until = 0 WHERE instance_id = ANY(%s) AND host_key = %s"
# A claim reads about as many rows as it claims, whatever the size of the table: it selects
# (and locks) its batch into an array, then updates by primary key; the instances that are gone
# are read first, into an array too, so the claim index is searched for them. With `task_id IN
# (SELECT ...)` and `claimed_by IN (SELECT ...)` PostgreSQL joined the batch to a scan of the
# table (100,000 rows read to claim 500 of 100,000; half of them to take over a third).
DEAD_IDS: Final = f"ARRAY({DEAD})"
CLAIM_FREE_TASKS: Final = (
    "UPDATE tasks SET claimed_by = %s WHERE task_id = ANY(ARRAY(SELECT task_id FROM tasks "
    f"WHERE {ACTIVE} AND claimed_by IS NULL ORDER BY registered_at, task_id LIMIT %s "
    f"FOR UPDATE SKIP LOCKED)) RETURNING {TASK_COLUMNS}"
)
CLAIM_ORPHANED_TASKS: Final = (
    "UPDATE tasks SET claimed_by = %s WHERE task_id = ANY(ARRAY(SELECT task_id FROM tasks "
    f"WHERE {ACTIVE} AND claimed_by = ANY({DEAD_IDS}) LIMIT %s FOR UPDATE SKIP LOCKED)) "
    f"RETURNING {TASK_COLUMNS}"
)
OWN_TASKS: Final = f"SELECT {TASK_COLUMNS} FROM tasks WHERE claimed_by = %s AND {ACTIVE}"
RELEASE_TASKS: Final = (
    "UPDATE tasks SET claimed_by = NULL, polls = greatest(tasks.polls, u.polls) "
    "FROM unnest(%s::text[], %s::int[]) AS u (task_id, polls) "
    "WHERE tasks.task_id = u.task_id AND tasks.claimed_by = %s"
)
CLAIM_DELIVERIES: Final = (
    "UPDATE deliveries SET claimed_by = %s WHERE delivery_id = ANY(ARRAY(SELECT delivery_id "
    "FROM deliveries WHERE status = 'pending' AND (claimed_by IS NULL OR claimed_by = "
    f"ANY({DEAD_IDS})) ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)) "
    f"RETURNING {DELIVERY_COLUMNS}"
)
OWN_DELIVERIES: Final = (
    f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE claimed_by = %s AND status = 'pending'"
)
CLAIM_HOLDS: Final = (
    "UPDATE mirror_holds SET claimed_by = %s WHERE task_id = ANY(ARRAY(SELECT task_id "
    f"FROM mirror_holds WHERE claimed_by IS NULL OR claimed_by = ANY({DEAD_IDS}) "
    f"ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED)) RETURNING {HOLD_COLUMNS}"
)
OWN_HOLDS: Final = f"SELECT {HOLD_COLUMNS} FROM mirror_holds WHERE claimed_by = %s"
LEAVE: Final = (
    "UPDATE tasks SET claimed_by = NULL WHERE claimed_by = %s",
    "UPDATE deliveries SET claimed_by = NULL WHERE claimed_by = %s",
    "UPDATE mirror_holds SET claimed_by = NULL WHERE claimed_by = %s",
    "DELETE FROM instances WHERE instance_id = %s",
)
LIST: Final = (
    "SELECT i.instance_id, i.hostname, i.pid, i.version, i.intake, i.started_at, "
    "i.heartbeat_at, i.lease_until, "
    f"(SELECT count(*) FROM tasks AS t WHERE t.claimed_by = i.instance_id AND t.{ACTIVE}), "
    "(SELECT count(*) FROM deliveries AS d WHERE d.claimed_by = i.instance_id "
    "AND d.status = 'pending') "
    f"FROM instances AS i WHERE i.lease_until >= {NOW} ORDER BY i.started_at, i.instance_id"
)
NOTIFY: Final = "SELECT pg_notify(%s, %s)"
CHANNEL_PREFIX: Final = "apixo_watcher:"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """Who this daemon is, as other instances and `GET /v1/instances` see it."""

    instance_id: str
    hostname: str
    pid: int
    version: str
    host_key: str  # hostname, boot id and pid namespace: "the same host as me"
    intake: str | None = None


@dataclass(frozen=True, slots=True)
class Membership:
    """What a heartbeat learned; times are the database's clock (Unix seconds)."""

    now: float
    lease_until: float  # this instance's
    live: tuple[str, ...]  # the instances whose lease runs, this one included, sorted
    next_expiry: float | None  # the soonest lease end among the other live instances
    active_tasks: int
    unowned_work: bool  # work unclaimed or held by an instance whose lease ran out
    lapsed: bool  # this instance's lease had run out (or its row was gone) before this beat


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One live instance (`GET /v1/instances`)."""

    instance_id: str
    hostname: str
    pid: int
    version: str
    intake: str | None
    started_at: float
    heartbeat_at: float
    lease_until: float
    tasks: int  # active tasks it holds
    deliveries: int  # pending deliveries it holds


@dataclass(frozen=True, slots=True)
class Notice:
    """One notification: `kind` (tasks, instances, cancel, redeliver, hint) and its subject."""

    kind: str
    subject: str = ""
    sender: str = ""

    def payload(self) -> str:
        return f"{self.kind} {self.sender} {self.subject}".rstrip()

    @classmethod
    def parse(cls, payload: str) -> Notice:
        kind, _, rest = payload.partition(" ")
        sender, _, subject = rest.partition(" ")
        return cls(kind, subject, sender)


RECONNECTED: Final = Notice("reconnected")  # the listener lost notices while it was away


def session_tag(instance_id: str) -> str:
    """The application_name of an instance's connections (END_DEAD_SESSIONS computes the same
    in SQL): short enough for PostgreSQL's 63 characters, whatever the hostname."""
    return (
        "apixo-watcher:" + hashlib.md5(instance_id.encode(), usedforsecurity=False).hexdigest()[:16]
    )


def channel_name(schema: str) -> str:
    return f"{CHANNEL_PREFIX}{schema}"[:63]  # PostgreSQL truncates identifiers there


async def heartbeat(
    conn: AsyncConnection[Any], me: InstanceInfo, lease_s: float, *, first: bool
) -> Membership:
    """Renew (or create) this instance's row and read the cluster's state, in one transaction."""
    cur = await conn.execute(
        HEARTBEAT,
        (
            me.instance_id,
            me.instance_id,
            me.hostname,
            me.pid,
            me.version,
            lease_s,
            me.host_key,
            me.intake,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    now, lease_until, previous = float(row[0]), float(row[1]), row[2]
    lapsed = not first and (previous is None or float(previous) < now)
    await conn.execute(END_DEAD_SESSIONS)
    await conn.execute(FORGET_DEAD)
    live_rows = await (await conn.execute(LIVE)).fetchall()
    active_row = await (await conn.execute(COUNT_ACTIVE)).fetchone()
    unowned_row = await (await conn.execute(DEAD_HOLDING)).fetchone()
    others = [float(until) for iid, until in live_rows if iid != me.instance_id]
    return Membership(
        now=now,
        lease_until=lease_until,
        live=tuple(str(iid) for iid, _ in live_rows),
        next_expiry=min(others) if others else None,
        active_tasks=int(active_row[0]) if active_row else 0,
        unowned_work=bool(unowned_row[0]) if unowned_row else False,
        lapsed=lapsed,
    )


async def notify(conn: AsyncConnection[Any], channel: str, notice: Notice) -> None:
    """Queue a notice; PostgreSQL sends it when the surrounding transaction commits."""
    await conn.execute(NOTIFY, (channel, notice.payload()))


def polls_arrays(polls: Mapping[str, int]) -> tuple[list[str], list[int]]:
    ids = sorted(polls)  # a fixed lock order
    return ids, [polls[i] for i in ids]


class Listener:
    """LISTEN on the store's channel on a connection of its own, reconnecting after an outage.

    `notices()` yields each notice, and RECONNECTED after a reconnection (notices sent while
    the connection was down are lost: the receiver looks at the store again instead).
    """

    def __init__(self, url: str, channel: str, *, timeout_s: float = 5.0) -> None:
        self._url = url
        self._channel = channel
        self._where = redact_url(url)
        self._secrets = sorted({url, *url_passwords(url)}, key=len, reverse=True)
        self._timeout_s = timeout_s
        self._conn: AsyncConnection[Any] | None = None
        self._closed = False

    async def connect(self) -> None:
        """Connect and LISTEN; StoreUnavailable if the database cannot be reached."""
        try:
            conn = await AsyncConnection.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(2, round(self._timeout_s)),
                application_name="apixo-watcher listen",
                # A dead peer is noticed like on the store's connections (postgres.py).
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=30_000,
            )
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error as exc:
            message = f"cannot listen on the store {self._where}: {exc}"
            for value in self._secrets:
                message = message.replace(value, "***")
            raise StoreUnavailable(message) from exc
        self._conn = conn

    async def notices(
        self, *, retry_s: float = 1.0, log_every_s: float = 60.0
    ) -> AsyncIterator[Notice]:
        """Every notice, forever (until `close`); reconnects on its own, every `retry_s`.

        An outage is logged when it starts, then once every `log_every_s` while it lasts
        (with the attempts so far) and once when it ends: a database down for an hour is a
        few lines, not one a second."""
        failures = 0
        failing_since = last_logged = 0.0
        while not self._closed:
            if self._conn is None:
                try:
                    await self.connect()
                except StoreUnavailable as exc:
                    now = time.monotonic()
                    failures += 1
                    if failures == 1:
                        failing_since = now
                    if failures == 1 or now - last_logged >= log_every_s:
                        log.warning("store_listen_failed", error=exc.message, attempts=failures)
                        last_logged = now
                    await asyncio.sleep(retry_s)
                    continue
                if failures:
                    log.info(
                        "store_listen_restored",
                        attempts=failures,
                        after_s=round(time.monotonic() - failing_since, 1),
                    )
                    failures = 0
                yield RECONNECTED
            conn = self._conn
            assert conn is not None
            try:
                async for notify in conn.notifies():
                    yield Notice.parse(notify.payload)
            except psycopg.Error as exc:  # closed by `close`, or lost: the loop decides
                log.warning("store_listen_lost", error=type(exc).__name__)
            with contextlib.suppress(psycopg.Error):
                await conn.close()
            self._conn = None

    async def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


def ids_of(rows: Sequence[Sequence[Any]]) -> list[str]:
    return [str(row[0]) for row in rows]


__all__ = [
    "RECONNECTED",
    "InstanceInfo",
    "InstanceRecord",
    "Listener",
    "Membership",
    "Notice",
    "channel_name",
]
