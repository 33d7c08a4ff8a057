"""This daemon as one of several instances on a PostgreSQL store (contract section 10).

`ClusterMember` owns the instance's side of watcher/store/postgres_cluster.py:
- join: a row in `instances`; processes of this host that are gone (their pid no longer runs)
  lose their lease at once, so a restart after `kill -9` takes its own work back without
  waiting for the lease; then a first round of claims. A round of claims ends when the next
  heartbeat is due, which claims on: the lease is renewed however long claiming takes.
- heartbeats every third of `store.lease`, each reading the live instances, how many tasks are
  active and whether any work is unowned; the budget share (`set_share`) follows the number of
  live instances, and the held tasks follow `ceil(active / live)`: claimed when short, let go
  (the ones due last, none with a poll in flight) when over by more than a slack.
- a heartbeat is also made when another instance's lease is due to end (its work is claimed
  then: a takeover within the lease plus one poll interval), and when a notice says there is
  work to claim or the instances changed.
- notices on a LISTEN connection: cancels and redeliveries made through another instance's
  intake, hints for tasks held here, work released by others.
- the lease in doubt: after two missed heartbeats (FENCE_FRACTION of the lease) no new poll or
  webhook attempt starts until a heartbeat succeeds; if the lease did run out meanwhile, the
  local work is reconciled with what the store says this instance still holds.
- leave: at a graceful stop, everything held is released and the row removed, so the others
  take the work over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import structlog

from watcher.clock import Clock
from watcher.cluster import plan
from watcher.errors import StoreError
from watcher.models import Delivery, MirrorHold, Task
from watcher.store.postgres_cluster import RECONNECTED, InstanceInfo, Membership, Notice

log = structlog.get_logger(__name__)

# Notices arriving together (a burst of registrations released elsewhere) share one look at
# the store.
NOTICE_COALESCE_S: Final = 0.05


class ClusterStore(Protocol):
    """What the member needs of the store (PostgresStore)."""

    def act_as(self, instance_id: str) -> None: ...

    async def heartbeat(
        self, me: InstanceInfo, lease_s: float, *, first: bool = False
    ) -> Membership: ...

    async def instances_on_host(self, host_key: str) -> list[tuple[str, int]]: ...

    async def expire_instances(self, instance_ids: Sequence[str], host_key: str) -> None: ...

    async def claim_tasks(self, limit: int) -> list[Task]: ...

    async def release_tasks(self, polls: Mapping[str, int]) -> int: ...

    async def claim_deliveries(self, limit: int) -> list[Delivery]: ...

    async def claim_mirror_holds(self, limit: int) -> list[MirrorHold]: ...

    def active_tasks(self) -> AsyncIterator[Task]: ...

    def pending_deliveries(self) -> AsyncIterator[Delivery]: ...

    async def held_mirrors(self) -> list[MirrorHold]: ...

    async def leave(self) -> None: ...

    async def announce(self, kind: str, subject: str = "") -> None: ...


class Polling(Protocol):
    """What the member drives of the scheduler."""

    def watch_many(self, tasks: Sequence[Task]) -> None: ...

    def unwatch(self, task_id: str) -> bool: ...

    def release(self, count: int) -> dict[str, int]: ...

    def set_share(self, share: float) -> None: ...

    def set_fence(self, at: float) -> None: ...

    def poll_soon(self, task_id: str) -> bool: ...

    def task_ids(self) -> set[str]: ...


class Delivering(Protocol):
    """What the member drives of the deliverer."""

    def enqueue(self, deliveries: Iterable[Delivery]) -> None: ...

    def forget(self, delivery_ids: Iterable[str]) -> int: ...

    def set_paused(self, paused: bool) -> None: ...

    def set_fence(self, at: float) -> None: ...

    def delivery_ids(self) -> set[str]: ...


class Mirroring(Protocol):
    def hold(self, hold: MirrorHold, *, resumed: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """For `GET /v1/status`, metrics and health."""

    instance_id: str
    live: int
    share: float
    lease_in_doubt: bool


def host_key() -> str:
    """This host as other instances can recognise it: hostname, boot id and pid namespace
    (two containers with one hostname have different pid namespaces)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def pid_running(pid: int) -> bool:
    """Whether a process `pid` runs on this host (a zombie does not: it was killed)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def new_instance(version: str, intake: str | None) -> InstanceInfo:
    hostname = socket.gethostname()
    pid = os.getpid()
    return InstanceInfo(
        instance_id=f"{hostname}.{pid}.{secrets.token_hex(3)}",
        hostname=hostname,
        pid=pid,
        version=version,
        host_key=host_key(),
        intake=intake,
    )


class ClusterMember:
    """See the module docstring."""

    def __init__(
        self,
        *,
        store: ClusterStore,
        info: InstanceInfo,
        lease_s: float,
        scheduler: Polling,
        deliverer: Delivering,
        clock: Clock,
        notices: Callable[[], AsyncIterator[Notice]],
        mirror: Mirroring | None = None,
        is_running: Callable[[int], bool] = pid_running,
    ) -> None:
        self._store = store
        self._info = info
        self._lease_s = lease_s
        self._scheduler = scheduler
        self._deliverer = deliverer
        self._mirror = mirror
        self._clock = clock
        self._notices = notices
        self._is_running = is_running
        self._membership: Membership | None = None
        self._live = 1
        self._trusted_until = math.inf  # monotonic: polls stop after it without a renewal
        self._next_beat = 0.0
        self._settle_until = 0.0
        self._in_doubt = False
        self._store_down = False
        self._wanted = asyncio.Event()
        self._reconcile_wanted = False
        self._forwards: set[asyncio.Task[None]] = set()
        self._reconciled_at = clock.monotonic()

    @property
    def instance_id(self) -> str:
        return self._info.instance_id

    @property
    def stats(self) -> ClusterStats:
        return ClusterStats(
            instance_id=self._info.instance_id,
            live=self._live,
            share=plan.share(self._live),
            # Also while a heartbeat hangs past that moment (cut off from the database, its
            # statement may wait for TCP to give up): the loop that would notice is inside it.
            lease_in_doubt=self._in_doubt or self._clock.monotonic() >= self._trusted_until,
        )

    # -- lifecycle ------------------------------------------------------------------------------
    async def join(self) -> int:
        """Register this instance and claim its first share; how many tasks it took."""
        self._store.act_as(self._info.instance_id)
        gone = [
            instance_id
            for instance_id, pid in await self._store.instances_on_host(self._info.host_key)
            if not self._is_running(pid)
        ]
        if gone:
            await self._store.expire_instances(gone, self._info.host_key)
            log.info("cluster_instances_gone", instances=gone)
        sent = self._clock.monotonic()
        membership = await self._store.heartbeat(self._info, self._lease_s, first=True)
        self._accept(membership, sent, joining=True)
        claimed = await self._balance(membership)
        log.info(
            "cluster_joined",
            instance_id=self._info.instance_id,
            live=len(membership.live),
            tasks=claimed,
            lease_s=self._lease_s,
        )
        return claimed

    async def run(self) -> None:
        """Heartbeats, claims and notices until cancelled; store errors are waited out."""
        listener = asyncio.create_task(self._listen(), name="cluster_listen")
        try:
            while True:
                if listener.done():
                    listener.result()  # a bug in the listener: the daemon goes down loudly
                now = self._clock.monotonic()
                if not self._in_doubt and now >= self._trusted_until:
                    self._doubt()
                if self._settle_until and now >= self._settle_until:
                    self._settle_until = 0.0
                    self._apply_share()
                if self._wanted.is_set():
                    self._wanted.clear()
                    await self._clock.sleep(NOTICE_COALESCE_S)
                    self._wanted.clear()
                    await self._beat()
                elif now >= self._next_beat:
                    await self._beat()
                wake = self._next_beat
                if not self._in_doubt:
                    wake = min(wake, self._trusted_until)
                if self._settle_until:
                    wake = min(wake, self._settle_until)
                delay = max(0.0, wake - self._clock.monotonic())
                if delay > 0:
                    await self._clock.wait_event(self._wanted, delay)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def leave(self) -> None:
        """Release everything held and remove this instance (a graceful stop)."""
        try:
            await self._store.leave()
        except StoreError as exc:
            log.warning("cluster_leave_failed", error=exc.message)  # the lease runs out instead
            return
        log.info("cluster_left", instance_id=self._info.instance_id)

    def set_intake(self, address: str) -> None:
        """Where the intake really listens (a port 0 in the config is known once bound);
        the next heartbeat, made now, records it."""
        self._info = dataclasses.replace(self._info, intake=address)
        self._wanted.set()

    def forward_hint(self, task_id: str) -> None:
        """A hint for a task another instance may hold: pass it on (in the background)."""
        task = asyncio.create_task(self._forward("hint", task_id))
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)

    async def _forward(self, kind: str, subject: str) -> None:
        try:
            await self._store.announce(kind, subject)
        except StoreError as exc:
            log.warning("cluster_notice_failed", kind=kind, error=exc.message)

    # -- heartbeats -----------------------------------------------------------------------------
    async def _beat(self) -> None:
        sent = self._clock.monotonic()
        try:
            # A heartbeat stuck on a dead connection must not keep this loop from the next
            # one (nor the lease in doubt from being noticed and logged).
            async with asyncio.timeout(plan.heartbeat_interval(self._lease_s)):
                membership = await self._store.heartbeat(self._info, self._lease_s)
        except TimeoutError:
            membership = None
            error = "no answer within a heartbeat interval"
        except StoreError as exc:
            membership = None
            error = exc.message
        if membership is None:
            if not self._store_down:
                self._store_down = True
                log.error("cluster_heartbeat_failed", error=error)
            self._next_beat = self._clock.monotonic() + plan.RETRY_S
            return
        if self._store_down:
            self._store_down = False
            log.info("cluster_heartbeat_restored")
        try:
            due = self._clock.monotonic() - self._reconciled_at >= plan.RECONCILE_EVERY_S
            if membership.lapsed or self._reconcile_wanted or due:
                if membership.lapsed:
                    log.warning("cluster_lease_lapsed", instance_id=self._info.instance_id)
                self._reconcile_wanted = False
                await self._reconcile()
            # Back from a lapsed lease, it is a newcomer again: the others are told (the
            # heartbeat's notice) and lower their shares; it waits a window before its own.
            self._accept(membership, sent, settle=membership.lapsed)
            await self._balance(membership)
        except StoreError as exc:
            self._reconcile_wanted = True
            log.warning("cluster_claim_failed", error=exc.message)
            self._next_beat = min(self._next_beat, self._clock.monotonic() + plan.RETRY_S)

    def _accept(
        self, membership: Membership, sent: float, *, joining: bool = False, settle: bool = False
    ) -> None:
        before = self._live
        self._membership = membership
        self._live = len(membership.live) or 1
        self._trusted_until = plan.trusted_until(sent, self._lease_s)
        # Checked by the scheduler and the deliverer as each poll or attempt starts: a process
        # frozen past it starts none when it wakes, before this loop has run to notice.
        self._scheduler.set_fence(self._trusted_until)
        self._deliverer.set_fence(self._trusted_until)
        now = self._clock.monotonic()
        if (joining or settle) and self._live > 1:
            self._settle_until = now + plan.JOIN_SETTLE_S
        self._next_beat = now + plan.heartbeat_interval(self._lease_s)
        wait = plan.takeover_wait(membership.now, membership.next_expiry)
        if wait is not None:
            self._next_beat = min(self._next_beat, now + wait)
        if self._in_doubt:
            self._in_doubt = False
            log.info("cluster_lease_renewed", instance_id=self._info.instance_id)
        self._apply_share()
        if self._live != before and not joining:
            log.info("cluster_instances_changed", live=self._live, share=plan.share(self._live))

    def _doubt(self) -> None:
        self._in_doubt = True
        log.error(
            "cluster_lease_in_doubt",
            instance_id=self._info.instance_id,
            detail="no heartbeat for two thirds of store.lease: polls and attempts held back",
        )
        self._apply_share()

    def _apply_share(self) -> None:
        held_back = self._in_doubt or self._clock.monotonic() < self._settle_until
        self._scheduler.set_share(0.0 if held_back else plan.share(self._live))
        self._deliverer.set_paused(self._in_doubt)

    # -- claims ---------------------------------------------------------------------------------
    async def _balance(self, membership: Membership) -> int:
        """Claim or let go of tasks towards this instance's target; claim unowned deliveries
        and held mirrors. How many tasks were claimed.

        Claiming stops when the next heartbeat is due (after one batch at least), and that
        heartbeat claims on: 100,000 tasks take longer to claim than a short lease lasts, and
        a lease left to run out while claiming hands the work to the others meanwhile."""
        held = len(self._scheduler.task_ids())
        target = plan.task_target(membership.active_tasks, len(membership.live))
        to_claim, to_release = plan.rebalance(held, target)
        if to_release:
            polls = self._scheduler.release(to_release)
            try:
                await self._store.release_tasks(polls)
            except StoreError:
                self._reconcile_wanted = True  # they are still ours in the store: watch again
                raise
            log.info("cluster_tasks_released", tasks=len(polls), held=held, target=target)
        claimed = 0
        if to_claim and membership.unowned_work:
            while to_claim > 0:
                tasks = await self._store.claim_tasks(min(plan.CLAIM_BATCH, to_claim))
                self._scheduler.watch_many(tasks)
                claimed += len(tasks)
                to_claim -= len(tasks)
                if len(tasks) < plan.CLAIM_BATCH or self._beat_due():
                    break
            if claimed:
                log.info("cluster_tasks_claimed", tasks=claimed, held=held + claimed, target=target)
        if membership.unowned_work:
            await self._claim_deliveries_and_holds()
        return claimed

    def _beat_due(self) -> bool:
        return self._clock.monotonic() >= self._next_beat

    async def _claim_deliveries_and_holds(self) -> None:
        deliveries = 0
        while True:
            batch = await self._store.claim_deliveries(plan.CLAIM_BATCH)
            self._deliverer.enqueue(batch)
            deliveries += len(batch)
            if len(batch) < plan.CLAIM_BATCH or self._beat_due():
                break
        holds: list[MirrorHold] = []
        if self._mirror is not None:
            holds = await self._store.claim_mirror_holds(plan.CLAIM_BATCH)
            for hold in holds:
                self._mirror.hold(hold, resumed=True)
        if deliveries or holds:
            log.info("cluster_work_claimed", deliveries=deliveries, mirror_holds=len(holds))

    async def _reconcile(self) -> None:
        """Make the local work what the store says this instance holds: after the lease lapsed
        (some of it may have been taken over), notices were missed (cancels, redeliveries), and
        every RECONCILE_EVERY_S as a safety net. What was registered here while the store was
        read is not in the snapshot taken before, so it is never dropped."""
        self._reconciled_at = self._clock.monotonic()
        watched_before = self._scheduler.task_ids()
        own_tasks = [task async for task in self._store.active_tasks()]
        own_ids = {task.task_id for task in own_tasks}
        dropped = 0
        for task_id in watched_before - own_ids:
            dropped += self._scheduler.unwatch(task_id)
        self._scheduler.watch_many(own_tasks)  # those already watched are left alone
        scheduled_before = self._deliverer.delivery_ids()
        own_deliveries = [d async for d in self._store.pending_deliveries()]
        own_delivery_ids = {d.delivery_id for d in own_deliveries}
        forgotten = self._deliverer.forget(scheduled_before - own_delivery_ids)
        local = self._deliverer.delivery_ids()
        self._deliverer.enqueue(d for d in own_deliveries if d.delivery_id not in local)
        if self._mirror is not None:
            for hold in await self._store.held_mirrors():
                self._mirror.hold(hold, resumed=True)
        log.info(
            "cluster_reconciled",
            tasks=len(own_ids),
            tasks_dropped=dropped,
            deliveries=len(own_delivery_ids),
            deliveries_dropped=forgotten,
        )

    # -- notices --------------------------------------------------------------------------------
    async def _listen(self) -> None:
        async for notice in self._notices():
            self._on_notice(notice)

    def _on_notice(self, notice: Notice) -> None:
        mine = notice.sender == self._info.instance_id
        if notice is RECONNECTED or notice == RECONNECTED:
            self._reconcile_wanted = True  # notices may have been missed meanwhile
            self._wanted.set()
        elif notice.kind in ("tasks", "instances"):
            if not mine:
                self._wanted.set()
        elif notice.kind == "cancel":
            self._scheduler.unwatch(notice.subject)
        elif notice.kind == "redeliver" and not mine:
            self._deliverer.forget([notice.subject])
        elif notice.kind == "hint" and not mine:
            self._scheduler.poll_soon(notice.subject)


__all__ = ["ClusterMember", "ClusterStats", "host_key", "new_instance", "pid_running"]
