"""The daemon's lifecycle: start, run, reload, stop.

start: raise the open-files limit, open the store (SQLite through AsyncAdapter, or PostgreSQL;
exclusive: one daemon per store; it must be writable), resume every active task and pending
delivery, bind the intake, then tell systemd READY=1. run: the scheduler, the deliverer, the
tasks file importer (whose first import runs right away) and a few small housekeeping loops; if
any of them dies, the daemon stops loudly (exit 1) so systemd restarts it; so does a store whose
files were deleted, replaced or truncated under it (checked every second and after every
commit). On PostgreSQL an outage of the database is waited out instead (not ready meanwhile; see
docs/scale-out.md). stop (SIGTERM/SIGINT): the intake refuses new tasks, no new polls or
attempts start, in-flight ones get a grace period, poll counts are flushed, the store is
closed, exit 0. A second signal exits at once. SIGHUP reloads, like `apixo-watcher reload`.

Time: the daemon anchors one `Timeline` at start and shares it; every second it checks the wall
clock for a step, and on one logs `clock_step_detected` and moves the stored times still to come
(deadlines, delivery due times) by the step, so they keep their meaning across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from watcher import __version__
from watcher.api.metrics import Metrics
from watcher.api.server import IntakeServer
from watcher.api.status import DaemonSnapshot
from watcher.clock import Clock, SystemClock, Timeline
from watcher.cluster import plan
from watcher.cluster.member import ClusterMember, new_instance
from watcher.config.dburl import url_passwords
from watcher.config.settings import Config, load_config
from watcher.delivery.deliverer import Deliverer
from watcher.errors import (
    ConfigError,
    ConfigProblem,
    StoreError,
    StoreLost,
    StoreUnavailable,
    WatcherError,
)
from watcher.logs import configure_logging, scrubber
from watcher.mirror.targets import open_target
from watcher.mirror.worker import MirrorWorker
from watcher.models import DeliveryStatus
from watcher.notify import Notifier
from watcher.polling.scheduler import Scheduler
from watcher.service import WatchService
from watcher.store.adapter import AsyncAdapter
from watcher.store.base import AsyncStore
from watcher.store.postgres import PostgresStore
from watcher.store.postgres_cluster import InstanceRecord, Listener, session_tag
from watcher.store.sqlite import SqliteStore
from watcher.tasks.file import SETTLE_S, TasksFileImporter
from watcher.upstream.client import UpstreamClient

log = structlog.get_logger(__name__)

USER_AGENT = f"apixo-watcher/{__version__}"
FLUSH_INTERVAL_S = 5.0  # how often live poll counts are written to the store
STATUS_INTERVAL_S = 5.0
PURGE_INTERVAL_S = 3600.0  # how often finished tasks past store.retention are deleted
MIRROR_RETENTION_INTERVAL_S = 3600.0  # how often mirrored files past mirror.retention go
PURGE_BATCH = 1000  # tasks per transaction, so a large purge never holds the store for long
# What "as many as allowed" means when the hard limit on open files is unlimited (not on Linux).
_UNLIMITED_FILES = 1 << 20
# How often the store's files are checked (a few stat calls); every commit checks them too.
STORE_CHECK_INTERVAL_S = 1.0
# A loop that has not reported progress for this long is considered wedged.
STALL_AFTER_S = 30.0
CLOCK_CHECK_INTERVAL_S = 1.0  # how often the wall clock is checked for a step
# PostgreSQL: how long a store call waits for a connection, and /readyz for its test write,
# before the database counts as unreachable.
STORE_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 2.0
EXIT_STORE_IN_USE = 75


def _largest_window(config: Config) -> int:
    """The most durations any model keeps (polling.adaptive.window and its overrides)."""
    policies = [config.polling.default, *config.polling.models.values()]
    return max(p.adaptive.window for p in policies)


def config_secrets(config: Config) -> list[str]:
    """Every secret value of a config, for the log scrubber."""
    values = [config.upstream.api_key.reveal()]
    if config.intake.token is not None:
        values.append(config.intake.token.reveal())
    if config.intake.hint_token is not None:
        values.append(config.intake.hint_token.reveal())
    if config.delivery.callback_secret is not None:
        values.append(config.delivery.callback_secret.reveal())
    for endpoint in config.endpoints:
        values.extend(s.reveal() for s in endpoint.secrets)
    if config.store.url is not None:
        values += [config.store.url.reveal(), *url_passwords(config.store.url.reveal())]
    if config.mirror is not None:
        for key in (config.mirror.s3.access_key_id, config.mirror.s3.secret_access_key):
            if key is not None:
                values.append(key.reveal())
    return values


def raise_open_files_limit() -> tuple[int, int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit: (soft before, soft now, hard).

    The soft limit is often 1024 (systemd's default for services) while the hard one allows
    far more; every intake connection, poll and webhook holds a descriptor, and running out
    refuses all of them at once. Nothing here uses select(), which is what the low default
    protects.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, _UNLIMITED_FILES)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft, hard
    return soft, target, hard


def stalled_loops(
    progress: Mapping[str, float | None], now: float, limit_s: float
) -> list[tuple[str, float]]:
    """The loops (name, seconds idle) whose last progress is more than `limit_s` ago.

    A loop that has not reported yet (None) is not counted here; callers decide about it.
    """
    return [
        (name, now - last)
        for name, last in progress.items()
        if last is not None and now - last > limit_s
    ]


def changes_needing_restart(old: Config, new: Config) -> list[str]:
    """The changed settings a reload does not apply (each is logged as needing a restart)."""
    changed = {
        "store.path": new.store.path != old.store.path,
        "store.url": new.store.url != old.store.url,
        # The cluster member renews its claims with the lease it started with.
        "store.lease": new.store.lease_s != old.store.lease_s,
        "intake.listen": new.intake.listen != old.intake.listen,
        "intake.idle_timeout": new.intake.idle_timeout_s != old.intake.idle_timeout_s,
        "mirror": new.mirror != old.mirror,
    }
    return [key for key, differs in changed.items() if differs]


class Daemon:
    """Owns every long-lived part and their lifecycle."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        grace_s: float = 10.0,
        reconfigure_logging: bool = True,
        tasks_settle_s: float = SETTLE_S,
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._clock = clock or SystemClock()
        self._timeline = Timeline(self._clock)  # anchored again when the daemon starts
        self._notifier = notifier or Notifier()
        self._grace_s = grace_s
        self._reconfigure_logging = reconfigure_logging
        self._tasks_settle_s = tasks_settle_s
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once READY=1 would be sent (tests wait on it)
        self._stopping = False
        self._exit_code = 0  # set by a fault of the daemon's own machinery
        self._reload_lock = asyncio.Lock()
        self._hangup_waiting = False  # a SIGHUP reload is queued and has not started yet
        self._signal_reloads: set[asyncio.Task[None]] = set()
        self._loops: dict[str, asyncio.Task[Any]] = {}
        self._started_at = time.monotonic()
        self.metrics = Metrics()
        self.store: AsyncStore | None = None
        self._sqlite: SqliteStore | None = None  # the same store, when it is SQLite
        self._postgres: PostgresStore | None = None  # the same store, when it is PostgreSQL
        self._member: ClusterMember | None = None  # this instance among others (PostgreSQL)
        self._listener: Listener | None = None
        self._instance = new_instance(__version__, config.intake.listen)
        self.service: WatchService | None = None
        self.scheduler: Scheduler | None = None
        self.deliverer: Deliverer | None = None
        self.mirror: MirrorWorker | None = None
        self.intake: IntakeServer | None = None
        self._client: UpstreamClient | None = None
        self._importer: TasksFileImporter | None = None
        scrubber.set_secrets(config_secrets(config))

    # -- lifecycle --------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until stopped; the process exit code."""
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            try:
                await self._start()
            except WatcherError as exc:
                log.error("daemon_start_failed", error=exc.message)
                await self._shutdown()
                raise  # the command prints it on stderr and exits 1
            code = await self._serve()
            await self._shutdown()
            return code
        finally:
            self._restore_signals(loop)

    def stop(self) -> None:
        """Ask the daemon to stop; idempotent."""
        self._stop.set()

    async def _start(self) -> None:
        config = self.config
        loop = type(asyncio.get_running_loop())
        before, soft, hard = raise_open_files_limit()
        log.info(
            "daemon_starting",
            version=__version__,
            pid=os.getpid(),
            event_loop=f"{loop.__module__}.{loop.__qualname__}",
            open_files_limit=soft,
            open_files_limit_was=before,
            open_files_hard_limit=hard,
        )
        # SQLite is exclusive: a second daemon on the file would poll every task and send
        # every webhook a second time; it refuses to start instead (StoreInUse, exit 75). On
        # PostgreSQL, instances share the work through claims (watcher/cluster/).
        self.store = await self._open_store(config)
        # A store it cannot write would take no task and record no result: refuse to start
        # with the reason rather than run not ready.
        await self.store.check_writable()
        # Anchored now: the stored wall times are read against the wall clock of this start.
        self._timeline = Timeline(self._clock)
        self.service = WatchService(
            store=self.store,
            config=config,
            clock=self._clock,
            timeline=self._timeline,
            metrics=self.metrics,
        )
        self._client = UpstreamClient(config.upstream)
        self.scheduler = Scheduler(
            client=self._client,
            polling=config.polling,
            upstream=config.upstream,
            sink=self.service,
            clock=self._clock,
            timeline=self._timeline,
            observer=self.metrics,
        )
        self.deliverer = Deliverer(
            store=self.store,
            delivery=config.delivery,
            endpoints=config.endpoints,
            clock=self._clock,
            timeline=self._timeline,
            user_agent=USER_AGENT,
            observer=self.metrics,
        )
        self.service.attach(scheduler=self.scheduler, deliverer=self.deliverer)
        self.scheduler.load_durations(await self.store.recent_durations(_largest_window(config)))
        resumed = 0
        async for task in self.store.active_tasks():
            self.scheduler.watch(task)
            resumed += 1
        await self.deliverer.start()
        held = 0
        if config.mirror is not None:
            self.mirror = MirrorWorker(
                store=self.store,
                target=open_target(config.mirror),
                config=config.mirror,
                sink=self.service,
                clock=self._clock,
                timeline=self._timeline,
                observer=self.metrics,
                user_agent=USER_AGENT,
            )
            self.service.attach_mirror(self.mirror)
            # The successes a restart left waiting; on PostgreSQL other instances may be
            # copying into the same target right now.
            held = await self.mirror.start(shared=self._postgres is not None)
        if self._postgres is not None:
            resumed += await self._join_cluster(config)
        gc.freeze()  # the records loaded above live long: keep the collector from rescanning them
        # The tasks file is imported by its own loop, started with the others: a big file is
        # read in a child process while the daemon already serves.
        self._importer = TasksFileImporter(
            service=self.service,
            clock=self._clock,
            path=config.tasks_file,
            settle_s=self._tasks_settle_s,
        )
        self.metrics.set_collect_hook(self._collect_metrics)
        self.intake = IntakeServer(
            service=self.service, config=config.intake, control=self, metrics=self.metrics
        )
        await self.intake.start()
        if self._member is not None:
            self._member.set_intake(self.intake.address)
        log.info(
            "daemon_ready",
            intake=self.intake.address,
            store=config.store.location,
            resumed_tasks=resumed,
            endpoints=len(config.endpoints),
            mirror=config.mirror.target if config.mirror is not None else None,
            resumed_mirrors=held,
        )
        self._notifier.ready(self._status_text())
        self.ready.set()

    async def _open_store(self, config: Config) -> AsyncStore:
        if config.store.url is None:
            assert config.store.path is not None
            self._sqlite = SqliteStore(config.store.path, exclusive=True)
            # One code path: SQLite's calls run on the event loop as before, awaiting nothing.
            return AsyncAdapter(self._sqlite)
        url = config.store.url.reveal()
        # A transaction left open by this process frozen or cut off in the middle of it ends
        # a third into the lease: its row locks must not keep its work from the others.
        # Named before anything is read: what this instance resumes is what it holds; its
        # sessions carry its tag, so the others can end them once its lease has run out.
        self._instance = new_instance(__version__, config.intake.listen)
        self._postgres = await PostgresStore.open(
            url,
            timeout_s=STORE_TIMEOUT_S,
            idle_transaction_timeout_s=config.store.lease_s / plan.HEARTBEATS_PER_LEASE,
            application_name=session_tag(self._instance.instance_id),
        )
        self._postgres.act_as(self._instance.instance_id)
        return self._postgres

    async def _join_cluster(self, config: Config) -> int:
        """PostgreSQL: join the instances sharing the store and claim a first share of the
        work; how many tasks were claimed (watcher/cluster/member.py)."""
        assert self._postgres is not None
        assert config.store.url is not None
        assert self.scheduler is not None
        assert self.deliverer is not None
        assert self.service is not None
        self._listener = Listener(
            config.store.url.reveal(), self._postgres.channel, timeout_s=STORE_TIMEOUT_S
        )
        # Listening before joining: a notice sent right after the join is not missed.
        await self._listener.connect()
        self._member = ClusterMember(
            store=self._postgres,
            info=self._instance,
            lease_s=config.store.lease_s,
            scheduler=self.scheduler,
            deliverer=self.deliverer,
            mirror=self.mirror,
            clock=self._clock,
            notices=self._listener.notices,
        )
        self.service.forward_hints(self._member.forward_hint)
        return await self._member.join()

    async def _serve(self) -> int:
        assert self.scheduler is not None
        assert self.deliverer is not None
        assert self._importer is not None
        self._spawn("scheduler", self.scheduler.run())
        self._spawn("deliverer", self.deliverer.run())
        self._spawn("poll_flusher", self._every(FLUSH_INTERVAL_S, self._flush_polls))
        self._spawn("status", self._every(STATUS_INTERVAL_S, self._report_status))
        # Checked once a second (more often when a test shortens the settle time).
        interval_s = max(0.05, min(1.0, self._tasks_settle_s / 2))
        self._spawn("tasks_file", self._importer.run(interval_s=interval_s))
        self._spawn("purge", self._every(PURGE_INTERVAL_S, self._purge))
        self._spawn("clock", self._every(CLOCK_CHECK_INTERVAL_S, self._check_clock))
        self._spawn("store_guard", self._every(STORE_CHECK_INTERVAL_S, self._check_store))
        if self._member is not None:
            self._spawn("cluster", self._member.run())
        if self.mirror is not None:
            self._spawn("mirror", self.mirror.run())
            self._spawn(
                "mirror_retention",
                self._every(MIRROR_RETENTION_INTERVAL_S, self.mirror.delete_expired),
            )
        if self._notifier.watchdog_interval_s:
            self._spawn("watchdog", self._every(self._notifier.watchdog_interval_s, self._watchdog))
        stop_waiter = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait(
            [stop_waiter, *self._loops.values()], return_when=asyncio.FIRST_COMPLETED
        )
        code = self._exit_code
        for name, task in self._loops.items():
            if task in done:
                exc = task.exception() if not task.cancelled() else None
                log.error(
                    "background_task_died",
                    loop=name,
                    error=repr(exc) if exc else "returned unexpectedly",
                    exc_info=exc,
                )
                code = 1
        stop_waiter.cancel()
        return code

    async def _shutdown(self) -> None:
        self._stopping = True
        self._notifier.stopping()
        log.info("daemon_stopping", grace_s=self._grace_s)
        if self.intake is not None:
            self.intake.set_draining()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.deliverer is not None:
            self.deliverer.stop()
        drains = []
        if self.scheduler is not None:
            drains.append(self.scheduler.drain(self._grace_s))
        if self.deliverer is not None:
            drains.append(self.deliverer.drain(self._grace_s))
        if drains:
            await asyncio.gather(*drains, return_exceptions=True)
        tasks = [*self._loops.values(), *self._signal_reloads]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        if self.mirror is not None:
            await self.mirror.close()  # unfinished copies resume at the next start
        with contextlib.suppress(StoreError):
            await self._flush_polls()
        if self._member is not None:
            await self._member.leave()  # the others take the work over now, not at lease end
        if self._listener is not None:
            await self._listener.close()
        if self.intake is not None:
            await self.intake.stop()
        if self.deliverer is not None:
            await self.deliverer.close()
        if self._client is not None:
            await self._client.close()
        if self.store is not None:
            with contextlib.suppress(StoreError):
                await self.store.close()
        self._notifier.close()
        log.info("daemon_stopped")

    def _fail(self, event: str, *, code: int = 1, **context: Any) -> None:
        """Stop loudly: a fault of the daemon's own machinery; exit 1, systemd restarts it."""
        log.error(event, **context)
        self._exit_code = code
        self.stop()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        self._loops[name] = asyncio.create_task(coro, name=name)

    async def _every(self, interval_s: float, fn: Callable[[], object]) -> None:
        while True:
            await self._clock.sleep(interval_s)
            result = fn()
            if isinstance(result, Awaitable):
                await result

    # -- signals ----------------------------------------------------------------------------------
    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)

    def _restore_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("daemon_forced_exit", signal=sig.name)
            # A second signal means "now": the store is consistent after every transaction,
            # so exiting without the grace period loses nothing that was acknowledged.
            os._exit(1)
        log.info("stop_signal_received", signal=sig.name)
        self.stop()

    def _on_hangup(self) -> None:
        # Coalesced: one reload runs, at most one more waits, and every SIGHUP that arrives
        # meanwhile joins the waiting one (it will read everything anew anyway). A burst of
        # signals is then a reload or two, not one each. Reload tasks are not loops: they are
        # kept apart so that a finished one never shows in the health checks.
        if self._hangup_waiting:
            log.info("reload_signal_received", signal="SIGHUP", coalesced=True)
            return
        log.info("reload_signal_received", signal="SIGHUP")
        self._hangup_waiting = True
        task = asyncio.ensure_future(self._reload_on_signal())
        self._signal_reloads.add(task)
        task.add_done_callback(self._signal_reloads.discard)

    async def _reload_on_signal(self) -> None:
        async with self._reload_lock:
            self._hangup_waiting = False
            try:
                await self._reload_locked()
            except Exception as exc:  # a failed reload keeps the running config; never crash
                log.error("config_reload_failed", error=repr(exc), exc_info=exc)

    # -- reload -----------------------------------------------------------------------------------
    async def reload(self) -> list[ConfigProblem]:
        """Re-read config, secrets and API key, and ask for the tasks file to be imported (in the
        background); [] when applied, else every problem (the running config stays)."""
        async with self._reload_lock:
            return await self._reload_locked()

    async def _reload_locked(self) -> list[ConfigProblem]:
        if self._config_path is None:
            return [ConfigProblem("", None, "the daemon was started without a config file")]
        self._notifier.reloading(time.monotonic_ns() // 1000)
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error(
                    "config_reload_problem",
                    key=problem.path,
                    line=problem.line,
                    problem=problem.message,
                )
            log.error("config_reload_failed", problems=len(exc.problems))
            self.metrics.config_reload(False)
            self._notifier.ready(self._status_text())
            return list(exc.problems)
        self._apply(new)
        self.metrics.config_reload(True)
        log.info("config_reloaded", endpoints=len(new.endpoints))
        self._notifier.ready(self._status_text())
        return []

    def _apply(self, new: Config) -> None:
        old = self.config
        self.config = new
        scrubber.set_secrets(config_secrets(new) + config_secrets(old))
        if self._reconfigure_logging and new.logging != old.logging:
            configure_logging(level=new.logging.level, fmt=new.logging.format)
        for key in changes_needing_restart(old, new):
            log.warning("config_change_needs_restart", key=key)
        if self.service is not None:
            self.service.set_config(new)
        if self._client is not None:
            self._client.update_config(new.upstream)
        if self.scheduler is not None:
            self.scheduler.update_config(new.polling, new.upstream)
            # A reload is how an operator says "fixed": a new key, or a topped-up balance
            # behind the same key (402). Either way, try the upstream again now.
            self.scheduler.resume_credentials()
        if self.deliverer is not None:
            self.deliverer.update_config(new.delivery, new.endpoints)
        if self.intake is not None:
            self.intake.update_config(new.intake)
        if self._importer is not None:
            self._importer.set_path(new.tasks_file)
            self._importer.request()  # in the background; reloads meanwhile coalesce

    # -- health -----------------------------------------------------------------------------------
    def liveness(self) -> list[str]:
        """Reasons the daemon is not alive ([] when it is)."""
        reasons = []
        for name, task in self._loops.items():
            if task.done() and not self._stopping:
                reasons.append(f"{name} loop stopped")
        if not self._stopping:
            now = self._clock.monotonic()
            for name, idle in stalled_loops(self._progress(), now, STALL_AFTER_S):
                reasons.append(f"{name} loop made no progress for {idle:.0f}s")
        return reasons

    async def readiness(self) -> list[str]:
        """Reasons the daemon is not ready ([] when it is)."""
        reasons = list(self.liveness())
        if self._stopping:
            reasons.append("draining: the daemon is stopping")
        if self.store is not None:
            try:
                if self._sqlite is not None:
                    self._sqlite.check_files()
                    self._sqlite.check_writable()
                else:
                    async with asyncio.timeout(READY_TIMEOUT_S):
                        await self.store.check_writable()
            except StoreLost as exc:
                reasons.append(f"store lost: {exc.message}")
            except StoreUnavailable as exc:
                reasons.append(f"store unreachable: {exc.message}")
            except TimeoutError:
                reasons.append(f"store unreachable: no answer within {READY_TIMEOUT_S:g}s")
            except StoreError as exc:
                reasons.append(f"store not writable: {exc.message}")
        if self.scheduler is not None and self.scheduler.stats.credentials_paused:
            reasons.append("upstream rejected the API key: polling is paused")
        if self._member is not None and self._member.stats.lease_in_doubt:
            reasons.append("no heartbeat reached the store: polls and webhooks are held back")
        return reasons

    async def instances(self) -> tuple[list[InstanceRecord], str]:
        """The live instances sharing the store and this one's id (`GET /v1/instances`); on
        SQLite, this daemon alone."""
        if self._postgres is not None and self._member is not None:
            return await self._postgres.live_instances(), self._member.instance_id
        now = self._clock.time()
        me = InstanceRecord(
            instance_id="local",
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            intake=self.config.intake.listen,
            started_at=now - (time.monotonic() - self._started_at),
            heartbeat_at=now,
            lease_until=now,
            tasks=self.scheduler.stats.watched if self.scheduler is not None else 0,
            deliveries=self.deliverer.stats.pending if self.deliverer is not None else 0,
        )
        return [me], me.instance_id

    def snapshot(self) -> DaemonSnapshot:
        """The scheduler's and the deliverer's live counters (`GET /v1/status`)."""
        return DaemonSnapshot(
            polling=self.scheduler.stats if self.scheduler is not None else None,
            delivery=self.deliverer.stats if self.deliverer is not None else None,
            cluster=self._member.stats if self._member is not None else None,
        )

    # -- housekeeping -----------------------------------------------------------------------------
    async def _check_store(self) -> None:
        if self._exit_code or self._sqlite is None:
            return
        try:
            self._sqlite.check_files()
        except StoreLost as exc:
            # Everything committed from now on would vanish at the next start: refuse it
            # (the intake already answers 503) and let systemd restart on a fresh store.
            self._fail("store_lost", path=str(self._sqlite.path), error=exc.message)
        except StoreError as exc:
            log.warning("store_check_failed", path=str(self._sqlite.path), error=exc.message)

    async def _flush_polls(self) -> None:
        if self.scheduler is None or self.store is None:
            return
        counts, errors = self.scheduler.poll_counts()
        if counts or errors:
            try:
                await self.store.record_polls(counts, errors=errors)
            except StoreUnavailable as exc:
                # Kept for the next flush (fresher counts of the same tasks win).
                self.scheduler.keep_poll_counts(counts, errors)
                log.warning("poll_counts_not_saved", tasks=len(counts), error=exc.message)
        durations = self.scheduler.learned_durations()
        if durations:
            try:
                await self.store.record_durations(durations)
            except StoreUnavailable as exc:
                self.scheduler.keep_durations(durations)  # the next flush tries again
                log.warning("durations_not_saved", samples=len(durations), error=exc.message)

    async def _purge(self) -> None:
        """Delete finished tasks older than store.retention, a batch at a time."""
        retention_s = self.config.store.retention_s
        if self.store is not None:
            # What the adaptive strategy learns from: each model's last `window` durations.
            try:
                await self.store.trim_durations(_largest_window(self.config))
            except StoreUnavailable as exc:
                log.warning("durations_trim_postponed", error=exc.message)  # the next hour's
        if self.store is None or retention_s <= 0:
            return
        before = self._timeline.wall() - retention_s
        total = 0
        while True:
            try:
                deleted = await self.store.purge_finished(before=before, limit=PURGE_BATCH)
            except StoreUnavailable as exc:
                log.warning("store_purge_postponed", error=exc.message)  # the next hour's run
                break
            total += deleted
            if deleted < PURGE_BATCH:
                break
            await asyncio.sleep(0)  # let polls and deliveries run between batches
        if total:
            log.info("store_purged", tasks=total, retention_s=retention_s)

    async def _check_clock(self) -> None:
        """Re-anchor the timeline; on a step of the wall clock, move the stored times still to
        come with it (one transaction), so a restart reads them as meaning the same moment."""
        step = self._timeline.check()
        if step is None:
            return
        log.warning(
            "clock_step_detected",
            step_s=round(step, 3),
            direction="forward" if step > 0 else "back",
            wall_now=round(self._clock.time(), 3),
        )
        if self.store is not None:
            try:
                await self.store.shift_future_times(step)
            except StoreUnavailable as exc:
                log.error("clock_step_not_saved", step_s=round(step, 3), error=exc.message)

    def _status_text(self) -> str:
        watched = self.scheduler.stats.watched if self.scheduler is not None else 0
        pending = self.deliverer.stats.pending if self.deliverer is not None else 0
        text = f"watching {watched} tasks, {pending} deliveries pending"
        if self.scheduler is not None and self.scheduler.stats.credentials_paused:
            text += ", polling paused: API key rejected"
        return text

    def _report_status(self) -> None:
        self._notifier.status(self._status_text())

    def _watchdog(self) -> None:
        # Ping only while both loops are making progress: a wedged loop must let systemd
        # restart us rather than be papered over by a timer that still runs.
        limit = max(2.0, self._notifier.watchdog_interval_s or 0.0)
        progress = self._progress()
        stalled = stalled_loops(progress, self._clock.monotonic(), limit)
        missing = [name for name, last in progress.items() if last is None]
        if stalled or missing:
            log.error("watchdog_withheld", loops=[n for n, _ in stalled] + missing)
            return
        self._notifier.watchdog()

    def _progress(self) -> dict[str, float | None]:
        """When each supervised loop last made progress (None: not running yet)."""
        return {
            "scheduler": self.scheduler.stats.last_progress_at if self.scheduler else None,
            "deliverer": self.deliverer.stats.last_progress_at if self.deliverer else None,
        }

    async def _collect_metrics(self) -> None:
        if self.scheduler is not None:
            self.metrics.set_request_rate(self.scheduler.stats.request_rate)
            cluster = self._member.stats if self._member is not None else None
            self.metrics.set_cluster(
                instances=cluster.live if cluster is not None else 1,
                held_tasks=self.scheduler.stats.watched,
                lease_in_doubt=cluster.lease_in_doubt if cluster is not None else False,
            )
        if self.store is None:
            return
        by_state = await self.store.count_tasks()
        self.metrics.set_tasks_by_state({s.value: n for s, n in by_state.items()})
        counts = await self.store.count_deliveries()
        retrying = await self.store.count_retrying_deliveries()
        self.metrics.set_deliveries(
            pending=max(0, counts.get(DeliveryStatus.PENDING, 0) - retrying),
            retrying=retrying,
            failed=counts.get(DeliveryStatus.FAILED, 0),
        )
        if self.mirror is not None:
            self.metrics.set_mirror_held(self.mirror.held())


__all__ = ["Daemon"]
