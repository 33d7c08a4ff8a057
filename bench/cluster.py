"""The cluster row (issue 10, `--only cluster`): daemons sharing one PostgreSQL store.

One fresh database `apixo_bench_<random>` on the server of `BENCH_POSTGRES_URL` (default
postgresql://postgres@127.0.0.1:5432/postgres, a user that may create databases), dropped at
the end. 100,000 pending tasks are written into it with the store's own API
(`PostgresStore.add_tasks_bulk`) before any daemon starts, unclaimed: the daemons claim them,
so every start exercises the claims. In order:

1. flat out (1 ms interval, no rate budget, `max_concurrency` 96 over the cluster, the default
   lease of 30 s): SQLite, one instance on PostgreSQL, three instances on PostgreSQL: polls per
   second, CPU per poll of the daemons, the fake upstream and the database's backends, and the
   database's transactions and row reads and writes per poll (`pg_stat_database` deltas over
   the same window; PostgreSQL publishes a backend's counters about once a second);
2. the same one and three instances, each capped at a fraction of a core (bench/cpucap.py):
   "equal hosts", so that three against one measures the store's scaling and not how many
   cores this machine has;
3. restarts of one instance with the 100,000 tasks and the default budget (20 polls/s, as the
   SQLite restart row): SIGTERM then start, `kill -9` then start: READY=1, the first poll, every
   task claimed;
4. takeover: three instances polling the 100,000 tasks every 60 s (a pace they keep up with),
   lease 3 s; once every task was polled, one is killed with `kill -9`: from the kill to the
   first poll of one of its tasks by another instance, and until all of them were polled again;
   then it is started again: until it holds its third.

Each daemon gets its own `upstream.base_url` (`<fake>/i<n>`), so the fake upstream counts the
polls of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from psycopg import sql

from bench import report
from bench.cpucap import CpuCap, default_cores
from bench.fixtures import MODEL, build_tasks
from bench.procs import DaemonProcess, Server, get_json, log, post_empty, write_config
from watcher.models import TaskSource, TaskSpec
from watcher.store.base import SpecColumns
from watcher.store.postgres import PostgresStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TASKS = 100_000
CONCURRENCY = 96  # over the cluster: one instance uses all of it, each of three a third
NO_RATE_LIMIT = 1_000_000
FLAT = {"initial_interval": "1ms", "max_interval": "1ms"}
# Flat out and restarts: the default lease. Takeover: a short one, so the row stays short.
DEFAULT_LEASE_S = 30.0
LEASE_S = 3.0
PACED_INTERVAL_S = 60.0  # takeover: 100,000 tasks every 60 s, ~1,700 polls/s over the cluster
WARMUP_S = 3.0
WINDOW_S = 15.0
ACTIVE = "state IN ('pending', 'processing')"


class Database:
    """A fresh database on the bench's PostgreSQL server, and what the bench reads of it."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"apixo_bench_{secrets.token_hex(4)}"
        parts = urlsplit(admin_url)
        self.url = urlunsplit((parts.scheme, parts.netloc, f"/{self.name}", parts.query, ""))
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        # Read from the server's admin database, so the bench's own reads are not counted.
        self._admin = psycopg.connect(admin_url, autocommit=True)
        self._conn: psycopg.Connection[Any] | None = None

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn

    def stats(self) -> dict[str, int]:
        """The database's cumulative counters (PostgreSQL flushes a backend's about once a
        second, so a window's deltas are exact to about a second at either end)."""
        row = self._admin.execute(
            "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            "tup_returned, tup_fetched, blks_hit + blks_read FROM pg_stat_database "
            "WHERE datname = %s",
            (self.name,),
        ).fetchone()
        assert row is not None
        keys = ("xacts", "inserted", "updated", "deleted", "returned", "fetched", "blocks")
        return dict(zip(keys, (int(v) for v in row), strict=True))

    def backend_pids(self) -> list[int]:
        rows = self._admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.name,),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def holders(self) -> dict[str | None, int]:
        """Active tasks per holding instance (None: nobody's)."""
        rows = (
            self._db()
            .execute(f"SELECT claimed_by, count(*) FROM tasks WHERE {ACTIVE} GROUP BY claimed_by")
            .fetchall()
        )
        return {r[0]: int(r[1]) for r in rows}

    def instance_of(self, pid: int) -> str | None:
        row = (
            self._db()
            .execute(
                "SELECT instance_id FROM instances WHERE pid = %s ORDER BY started_at DESC LIMIT 1",
                (pid,),
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    def tasks_of(self, instance_id: str) -> set[str]:
        rows = (
            self._db()
            .execute(
                f"SELECT task_id FROM tasks WHERE claimed_by = %s AND {ACTIVE}",
                (instance_id,),
            )
            .fetchall()
        )
        return {str(r[0]) for r in rows}

    def drop(self) -> None:
        for conn in (self._conn, self._admin):
            if conn is not None:
                conn.close()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )


async def populate(url: str, count: int, *, first_at: float, spread_s: float) -> None:
    """`count` pending tasks `p-{i}`, unclaimed, registered from `first_at` over `spread_s`
    seconds (100 steps): written with the store's API, as `build_tasks` does for SQLite."""
    store = await PostgresStore.open(url)
    try:
        steps = 100
        for k in range(steps):
            lo, hi = count * k // steps, count * (k + 1) // steps
            specs = [
                TaskSpec(task_id=f"p-{i}", model=MODEL, metadata={"order_id": i})
                for i in range(lo, hi)
            ]
            await store.add_tasks_bulk(
                SpecColumns.of(specs), source=TaskSource.FILE, now=first_at + spread_s * k / steps
            )
    finally:
        await store.close()


# -- measuring -------------------------------------------------------------------------------
def _cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class Sample:
    at: float
    polls: int
    by_instance: dict[str, int]
    daemons_cpu: list[float]
    upstream_cpu: float
    backends: dict[int, float]
    db: dict[str, int] | None
    busy_s: float


def _sample(upstream: Server, daemons: Sequence[DaemonProcess], db: Database | None) -> Sample:
    stats = get_json(f"{upstream.url}/_bench/stats")
    backends: dict[int, float] = {}
    if db is not None:
        for pid in db.backend_pids():
            with contextlib.suppress(psutil.Error):
                backends[pid] = _cpu(psutil.Process(pid))
    return Sample(
        at=time.monotonic(),
        polls=int(stats["polls"]),
        by_instance=dict(stats["polls_by_instance"]),
        daemons_cpu=[d.cpu_s() for d in daemons],
        upstream_cpu=upstream.cpu_s(),
        backends=backends,
        db=db.stats() if db is not None else None,
        busy_s=_machine_busy_s(),
    )


def _window(a: Sample, b: Sample) -> dict[str, Any]:
    """What happened between two samples, per poll."""
    seconds = b.at - a.at
    polls = b.polls - a.polls
    per = max(1, polls)
    daemons = [y - x for x, y in zip(a.daemons_cpu, b.daemons_cpu, strict=True)]
    daemon_cpu = sum(daemons)
    upstream_cpu = b.upstream_cpu - a.upstream_cpu
    # A backend that started inside the window counts whole; one that ended is lost (rare:
    # the pools keep their connections).
    pg_cpu = sum(cpu - a.backends.get(pid, 0.0) for pid, cpu in b.backends.items())
    ours = daemon_cpu + upstream_cpu + pg_cpu
    out: dict[str, Any] = {
        "window_s": round(seconds, 2),
        "polls": polls,
        "polls_per_s": round(polls / seconds, 1),
        "polls_per_instance": {
            k: v - a.by_instance.get(k, 0) for k, v in sorted(b.by_instance.items())
        },
        "daemon_cpu_us_per_poll": round(daemon_cpu / per * 1e6, 1),
        "daemon_cores": [round(c / seconds, 2) for c in daemons],
        "upstream_cpu_us_per_poll": round(upstream_cpu / per * 1e6, 1),
        "machine_busy_cores": round((b.busy_s - a.busy_s) / seconds, 2),
        "others_cores": round(max(0.0, b.busy_s - a.busy_s - ours) / seconds, 2),
    }
    if a.db is not None and b.db is not None:
        delta = {k: b.db[k] - a.db[k] for k in a.db}
        out["postgres_cpu_us_per_poll"] = round(pg_cpu / per * 1e6, 1)
        out["xacts_per_s"] = round(delta["xacts"] / seconds, 1)
        out["xacts_per_poll"] = round(delta["xacts"] / per, 4)
        out["rows_updated_per_poll"] = round(delta["updated"] / per, 3)
        out["rows_inserted_per_poll"] = round(delta["inserted"] / per, 4)
        out["rows_read_per_poll"] = round((delta["returned"] + delta["fetched"]) / per, 2)
    return out


async def _measure(
    upstream: Server, daemons: Sequence[DaemonProcess], db: Database | None
) -> dict[str, Any]:
    await asyncio.sleep(WARMUP_S)
    a = _sample(upstream, daemons, db)
    await asyncio.sleep(WINDOW_S)
    b = _sample(upstream, daemons, db)
    result = _window(a, b)
    result["daemons_alive"] = all(d.alive() for d in daemons)
    return result


# -- daemons ---------------------------------------------------------------------------------
@dataclass
class Cluster:
    out: Path
    upstream: Server
    receiver: Server
    db: Database
    registered_at: float  # the tasks' registrations: from here over PACED_INTERVAL_S

    def config(
        self, name: str, *, polling: dict[str, Any], instance: int, lease_s: float, flat: bool
    ) -> Path:
        """A config of its own for each instance: its `base_url` names it to the fake upstream;
        `flat`: no rate budget and `max_concurrency` CONCURRENCY, else the defaults (20/s)."""
        # The lease must outlast a poll in flight: at least 3 x upstream.timeout.
        upstream: dict[str, Any] = {"timeout": f"{lease_s / 3:g}s"}
        if flat:
            upstream |= {"max_concurrency": CONCURRENCY, "max_requests_per_second": NO_RATE_LIMIT}
        return write_config(
            self.out,
            db=self.out / f"{name}.db",  # unused: the store is PostgreSQL
            name=name,
            upstream_url=f"{self.upstream.url}/i{instance}",
            receiver_url=self.receiver.url,
            upstream=upstream,
            polling=polling,
            store={"url": self.db.url, "lease": f"{lease_s:g}s"},
        )

    async def start(
        self,
        name: str,
        *,
        polling: dict[str, Any] | None = None,
        instance: int = 1,
        lease_s: float = DEFAULT_LEASE_S,
        flat: bool = True,
        cpu_cap: CpuCap | None = None,
    ) -> DaemonProcess:
        path = self.config(
            name, polling=polling or {}, instance=instance, lease_s=lease_s, flat=flat
        )
        daemon = DaemonProcess(path, self.out / f"daemon-{name}.log")
        await daemon.start(timeout=180, cpu_cap=cpu_cap)
        return daemon

    async def balanced(self, n: int, timeout: float = 120.0) -> float:
        """Seconds until `n` instances hold every active task, each at least 90 % of its
        share."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            holders = self.db.holders()
            held = [v for k, v in holders.items() if k is not None]
            if None not in holders and len(held) == n and min(held) >= 0.9 * TASKS / n:
                return time.monotonic() - t0
            await asyncio.sleep(0.1)
        raise RuntimeError(f"not balanced over {n} instances: {self.db.holders()}")

    async def holds(self, daemon: DaemonProcess, count: int, timeout: float = 120.0) -> float:
        """Unix seconds when `daemon` held `count` active tasks (looked at every 50 ms)."""
        assert daemon.proc is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            me = self.db.instance_of(daemon.proc.pid)
            if me is not None and self.db.holders().get(me, 0) >= count:
                return time.time()
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{daemon.log_path.name} never held {count} tasks")


async def _stop_all(daemons: Sequence[DaemonProcess]) -> None:
    await asyncio.gather(*(d.stop() for d in daemons))


async def _first_poll(upstream: Server, since: float, timeout: float = 60.0) -> float | None:
    """Seconds from `since` (Unix) to the first poll the fake upstream saw after its reset."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        first = get_json(f"{upstream.url}/_bench/stats")["first_poll_at"]
        if first is not None:
            return round(float(first) - since, 3)
        await asyncio.sleep(0.02)
    return None


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- the scenarios ---------------------------------------------------------------------------
async def sqlite_flat(out: Path, upstream: Server, receiver: Server) -> dict[str, Any]:
    """The reference: one instance on a SQLite store of 100,000 tasks, flat out."""
    db = out / "cluster-sqlite.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    build_tasks(db, TASKS, registered_at=time.time() - 10)
    path = write_config(
        out,
        db=db,
        upstream_url=f"{upstream.url}/i0",
        receiver_url=receiver.url,
        upstream={"max_concurrency": CONCURRENCY, "max_requests_per_second": NO_RATE_LIMIT},
        polling=FLAT,
    )
    daemon = DaemonProcess(path, out / "daemon-cluster-sqlite.log")
    await daemon.start()
    try:
        return await _measure(upstream, [daemon], None)
    finally:
        await daemon.stop()


async def _start_one(c: Cluster, name: str, *, flat: bool) -> tuple[DaemonProcess, dict[str, Any]]:
    """Start one instance on the (otherwise empty) cluster: READY=1, the first poll and when
    it held every task, in seconds from its start."""
    post_empty(f"{c.upstream.url}/_bench/reset")
    daemon = await c.start(name, polling=FLAT if flat else None, flat=flat)
    joined = daemon.log_events("cluster_joined")
    timing = {
        "ready_s": _r(None if daemon.ready_at is None else daemon.ready_at - daemon.started_at),
        "claimed_before_ready": joined[0].get("tasks") if joined else None,
        "first_poll_s": await _first_poll(c.upstream, daemon.started_at),
        "claimed_all_s": _r(await c.holds(daemon, TASKS) - daemon.started_at),
    }
    return daemon, timing


async def single_flat(c: Cluster) -> dict[str, Any]:
    """One instance on PostgreSQL, flat out, once it holds every task."""
    daemon, start = await _start_one(c, "pg-single", flat=True)
    try:
        result = await _measure(c.upstream, [daemon], c.db)
    finally:
        await daemon.stop()
    result["start_flat_out"] = start  # claiming while polling flat out what it claimed
    return result


async def restarts(c: Cluster) -> dict[str, Any]:
    """One instance with the 100,000 tasks and the default budget (20 polls/s, 1 h interval,
    as the SQLite restart row): started, stopped with SIGTERM and started again, killed with
    `kill -9` and started again."""
    daemon, cold = await _start_one(c, "pg-restart", flat=False)
    result: dict[str, Any] = {"first_start": cold}
    try:
        for how in ("sigterm", "kill9"):
            t_stop = time.time()
            if how == "kill9":
                assert daemon.proc is not None
                daemon.proc.kill()
            await daemon.stop()
            stopped_s = time.time() - t_stop
            unclaimed = c.db.holders().get(None, 0)
            daemon, timing = await _start_one(c, f"pg-restart-{how}", flat=False)
            result[how] = {
                "stop_s": _r(stopped_s),
                "unclaimed_at_start": unclaimed,
                "previous_instance_gone": bool(daemon.log_events("cluster_instances_gone")),
                **timing,
            }
    finally:
        await daemon.stop()
    return result


async def three_flat(c: Cluster) -> dict[str, Any]:
    """Three instances started together on the 100,000 unclaimed tasks, flat out."""
    post_empty(f"{c.upstream.url}/_bench/reset")
    daemons = list(
        await asyncio.gather(
            *(c.start(f"pg-three-{k}", polling=FLAT, instance=k) for k in (1, 2, 3))
        )
    )
    try:
        balanced_s = await c.balanced(3)
        result = await _measure(c.upstream, daemons, c.db)
        result["balanced_after_ready_s"] = round(balanced_s, 2)
        return result
    finally:
        await _stop_all(daemons)


async def equal_hosts(c: Cluster, cores: float) -> dict[str, Any]:
    """One instance, then three, flat out, each capped at `cores` of CPU (bench/cpucap.py):
    instances as equal hosts, so that three against one measures the shared store's scaling
    and not how many cores this machine has. `machine_busy_cores` in each window says whether
    the machine kept up (the fake upstream and PostgreSQL are not capped)."""
    caps: list[CpuCap] = []
    for _ in range(3):
        cap = CpuCap.create(cores)
        if isinstance(cap, str):
            for made in caps:
                made.remove()
            return {"skipped": cap}
        caps.append(cap)
    daemons: list[DaemonProcess] = []
    try:
        post_empty(f"{c.upstream.url}/_bench/reset")
        one = await c.start("pg-capped-single", polling=FLAT, cpu_cap=caps[0])
        daemons.append(one)
        claimed_s = await c.holds(one, TASKS, timeout=300) - one.started_at
        single = await _measure(c.upstream, [one], c.db)
        single["claimed_all_s"] = _r(claimed_s)
        await _stop_all(daemons)
        daemons.clear()
        post_empty(f"{c.upstream.url}/_bench/reset")
        daemons.extend(
            await asyncio.gather(
                *(
                    c.start(f"pg-capped-three-{k}", polling=FLAT, instance=k, cpu_cap=caps[k - 1])
                    for k in (1, 2, 3)
                )
            )
        )
        balanced_s = await c.balanced(3, timeout=300)
        three = await _measure(c.upstream, daemons, c.db)
        three["balanced_after_ready_s"] = round(balanced_s, 2)
        return {
            "cores_per_instance": round(cores, 3),
            "machine_cores": os.cpu_count(),
            "scale_ratio": _r(report.ratio(three["polls_per_s"], single["polls_per_s"])),
            "single": single,
            "three": three,
        }
    finally:
        await _stop_all(daemons)
        for cap in caps:
            cap.remove()


async def takeover(c: Cluster, *, lead_s: float = 10.0) -> dict[str, Any]:
    """Three instances polling every task every PACED_INTERVAL_S; after every task was polled
    once, one is killed with `kill -9`; then it is started again.

    The tasks' registrations are spread over PACED_INTERVAL_S from `c.registered_at`: with an
    initial delay bringing the first of them to `lead_s` from now, the first polls (and every
    later one) are spread evenly over the interval, an even pace rather than a burst."""
    delay_s = time.time() + lead_s - c.registered_at
    polling = {
        "initial_delay": f"{delay_s:.3f}s",
        "initial_interval": f"{PACED_INTERVAL_S:g}s",
        "max_interval": f"{PACED_INTERVAL_S:g}s",
    }
    spread_end = time.time() + lead_s + PACED_INTERVAL_S
    post_empty(f"{c.upstream.url}/_bench/reset")
    daemons = list(
        await asyncio.gather(
            *(
                c.start(f"pg-takeover-{k}", polling=polling, instance=k, lease_s=LEASE_S)
                for k in (1, 2, 3)
            )
        )
    )
    restarted: DaemonProcess | None = None
    try:
        await c.balanced(3)
        await asyncio.sleep(max(0.0, spread_end + 2.0 - time.time()))
        before = _sample(c.upstream, daemons, c.db)
        await asyncio.sleep(3.0)
        steady = _window(before, _sample(c.upstream, daemons, c.db))
        victim = daemons[2]
        assert victim.proc is not None
        victim_id = c.db.instance_of(victim.proc.pid)
        assert victim_id is not None
        orphans = c.db.tasks_of(victim_id)
        request = urllib.request.Request(
            f"{c.upstream.url}/_bench/mark?exclude=i3",
            data="\n".join(sorted(orphans)).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30):
            pass
        killed_at = time.time()
        victim.proc.kill()
        await victim.stop()
        # Every orphan polled again by another instance (bound: lease + interval).
        end = time.monotonic() + LEASE_S + PACED_INTERVAL_S + 10
        marked: dict[str, Any] = {}
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            marked = get_json(f"{c.upstream.url}/_bench/marked")
            if marked["count"] >= len(orphans):
                break
        times = sorted(get_json(f"{c.upstream.url}/_bench/marked?full=1").values())
        result: dict[str, Any] = {
            "tasks": TASKS,
            "interval_s": PACED_INTERVAL_S,
            "lease_s": LEASE_S,
            "bound_s": LEASE_S + PACED_INTERVAL_S,
            "steady_polls_per_s": steady["polls_per_s"],
            "steady_daemon_cores": steady["daemon_cores"],
            "orphans": len(orphans),
            "orphans_polled_again": len(times),
            "first_poll_s": _r(times[0] - killed_at) if times else None,
            "median_poll_s": _r(times[len(times) // 2] - killed_at) if times else None,
            "all_polled_s": _r(times[-1] - killed_at) if len(times) == len(orphans) else None,
        }
        # Started again: READY=1 and until it holds its third (the others let theirs go).
        restarted = await c.start(
            "pg-takeover-3-again", polling=polling, instance=3, lease_s=LEASE_S
        )
        holds_at = await c.holds(restarted, int(0.9 * TASKS / 3))
        t0 = restarted.started_at
        result["rejoin_ready_s"] = _r(
            None if restarted.ready_at is None else restarted.ready_at - t0
        )
        result["rejoin_holds_share_s"] = _r(holds_at - t0)
        return result
    finally:
        await _stop_all([*daemons, *([restarted] if restarted else [])])


# -- the row ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _database(admin_url: str) -> Iterator[Database]:
    db = Database(admin_url)
    try:
        yield db
    finally:
        db.drop()


async def cluster(out: Path, upstream: Server, receiver: Server) -> dict[str, Any]:
    admin_url = os.environ.get("BENCH_POSTGRES_URL", DEFAULT_URL)
    load = os.getloadavg()
    log("cluster: SQLite, one instance, flat out")
    sqlite = await sqlite_flat(out, upstream, receiver)
    with _database(admin_url) as db:
        registered = time.time() - 2 * PACED_INTERVAL_S
        t0 = time.monotonic()
        await populate(db.url, TASKS, first_at=registered, spread_s=PACED_INTERVAL_S)
        log(f"cluster: {TASKS} tasks written into {db.name} in {time.monotonic() - t0:.1f}s")
        c = Cluster(out, upstream, receiver, db, registered)
        log("cluster: one instance on PostgreSQL, flat out")
        single = await single_flat(c)
        log("cluster: three instances, flat out")
        three = await three_flat(c)
        cores = float(os.environ.get("BENCH_CLUSTER_CAP_CORES") or default_cores(3))
        log(f"cluster: one and three instances as equal hosts ({cores:g} core each), flat out")
        hosts = await equal_hosts(c, cores)
        log("cluster: restarts of one instance")
        restarted = await restarts(c)
        log("cluster: takeover after kill -9")
        taken = await takeover(c)
    return report.cluster_section(
        sqlite=sqlite,
        single=single,
        three=three,
        equal_hosts=hosts,
        restarts=restarted,
        takeover=taken,
        loadavg_at_start=[round(x, 2) for x in load],
        tasks=TASKS,
        max_concurrency=CONCURRENCY,
    )


__all__ = ["cluster"]
