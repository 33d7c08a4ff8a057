"""ClusterMember against fakes of the store, the scheduler and the deliverer, on a manual clock:
joining, budget shares, the lease in doubt, a lapsed lease, takeover timing and notices. The
same member on a real PostgreSQL is in tests/integration/test_cluster.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from structlog.testing import capture_logs

from watcher.clock import ManualClock
from watcher.cluster import plan
from watcher.cluster.member import ClusterMember
from watcher.errors import StoreUnavailable
from watcher.models import Delivery, MirrorHold, Task, TaskSource, TaskSpec
from watcher.store.base import new_task
from watcher.store.postgres_cluster import InstanceInfo, Membership, Notice

LEASE = 30.0
ME = InstanceInfo("me", "host", 10, "1", "host-key")


def _task(task_id: str) -> Task:
    return new_task(TaskSpec(task_id=task_id, model="m"), source=TaskSource.API, now=0.0)


def _membership(
    *,
    live: Sequence[str] = ("me",),
    active: int = 0,
    unowned: bool = False,
    lapsed: bool = False,
    next_expiry: float | None = None,
    now: float = 1000.0,
) -> Membership:
    return Membership(
        now=now,
        lease_until=now + LEASE,
        live=tuple(live),
        next_expiry=next_expiry,
        active_tasks=active,
        unowned_work=unowned,
        lapsed=lapsed,
    )


@dataclass
class FakeStore:
    memberships: list[Membership | Exception] = field(default_factory=list)
    free: list[Task] = field(default_factory=list)
    own: list[Task] = field(default_factory=list)
    others_on_host: list[tuple[str, int]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    released: dict[str, int] = field(default_factory=dict)
    beats: int = 0
    announced: list[tuple[str, str]] = field(default_factory=list)
    left: bool = False
    me: str | None = None

    def act_as(self, instance_id: str) -> None:
        self.me = instance_id

    async def heartbeat(
        self, me: InstanceInfo, lease_s: float, *, first: bool = False
    ) -> Membership:
        self.beats += 1
        item = self.memberships.pop(0) if len(self.memberships) > 1 else self.memberships[0]
        if isinstance(item, Exception):
            raise item
        return item

    async def instances_on_host(self, host_key: str) -> list[tuple[str, int]]:
        return list(self.others_on_host)

    async def expire_instances(self, instance_ids: Sequence[str], host_key: str) -> None:
        self.expired.extend(instance_ids)

    async def claim_tasks(self, limit: int) -> list[Task]:
        taken, self.free = self.free[:limit], self.free[limit:]
        self.own.extend(taken)
        return taken

    async def release_tasks(self, polls: Mapping[str, int]) -> int:
        self.released.update(polls)
        self.own = [t for t in self.own if t.task_id not in polls]
        return len(polls)

    async def claim_deliveries(self, limit: int) -> list[Delivery]:
        return []

    async def claim_mirror_holds(self, limit: int) -> list[MirrorHold]:
        return []

    async def active_tasks(self) -> AsyncIterator[Task]:
        for task in list(self.own):
            yield task

    async def pending_deliveries(self) -> AsyncIterator[Delivery]:
        return
        yield

    async def held_mirrors(self) -> list[MirrorHold]:
        return []

    async def leave(self) -> None:
        self.left = True

    async def announce(self, kind: str, subject: str = "") -> None:
        self.announced.append((kind, subject))


@dataclass
class FakeScheduler:
    watched: dict[str, Task] = field(default_factory=dict)
    shares: list[float] = field(default_factory=lambda: [1.0])
    hinted: list[str] = field(default_factory=list)
    fence: float = float("inf")

    def watch_many(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self.watched.setdefault(task.task_id, task)

    def unwatch(self, task_id: str) -> bool:
        return self.watched.pop(task_id, None) is not None

    def release(self, count: int) -> dict[str, int]:
        ids = sorted(self.watched)[-count:] if count else []
        for task_id in ids:
            del self.watched[task_id]
        return dict.fromkeys(ids, 3)

    def set_share(self, share: float) -> None:
        if share != self.shares[-1]:
            self.shares.append(share)

    def set_fence(self, at: float) -> None:
        self.fence = at

    def poll_soon(self, task_id: str) -> bool:
        self.hinted.append(task_id)
        return task_id in self.watched

    def task_ids(self) -> set[str]:
        return set(self.watched)


@dataclass
class FakeDeliverer:
    paused: list[bool] = field(default_factory=lambda: [False])
    forgotten: list[str] = field(default_factory=list)
    fence: float = float("inf")

    def enqueue(self, deliveries: Iterable[Delivery]) -> None:
        list(deliveries)

    def forget(self, delivery_ids: Iterable[str]) -> int:
        ids = list(delivery_ids)
        self.forgotten.extend(ids)
        return len(ids)

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused[-1]:
            self.paused.append(paused)

    def set_fence(self, at: float) -> None:
        self.fence = at

    def delivery_ids(self) -> set[str]:
        return set()


class Notices:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Notice] = asyncio.Queue()

    async def __call__(self) -> AsyncIterator[Notice]:
        while True:
            yield await self.queue.get()


def _member(
    store: FakeStore,
    clock: ManualClock,
    notices: Notices | None = None,
    running: Callable[[int], bool] | None = None,
) -> tuple[ClusterMember, FakeScheduler, FakeDeliverer]:
    scheduler, deliverer = FakeScheduler(), FakeDeliverer()
    member = ClusterMember(
        store=store,
        info=ME,
        lease_s=LEASE,
        scheduler=scheduler,
        deliverer=deliverer,
        clock=clock,
        notices=notices or Notices(),
        is_running=running or (lambda pid: pid != 666),
    )
    return member, scheduler, deliverer


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_joining_alone_takes_every_task_and_the_whole_budget() -> None:
    store = FakeStore(
        [_membership(active=3, unowned=True)], free=[_task(f"t{i}") for i in range(3)]
    )
    member, scheduler, _ = _member(store, ManualClock())
    assert await member.join() == 3
    assert store.me == "me"
    assert set(scheduler.watched) == {"t0", "t1", "t2"}
    assert scheduler.shares[-1] == 1.0


@dataclass
class SlowClaims(FakeStore):
    """Each batch of claims takes `batch_s` of the clock (100,000 tasks on a busy database)."""

    clock: ManualClock = field(default_factory=ManualClock)
    batch_s: float = 0.0

    async def claim_tasks(self, limit: int) -> list[Task]:
        self.clock.advance(self.batch_s)
        return await super().claim_tasks(limit)


async def test_claiming_more_than_a_lease_allows_renews_the_lease_in_between() -> None:
    clock = ManualClock()
    count = 5 * plan.CLAIM_BATCH
    store = SlowClaims(
        [_membership(active=count, unowned=True)],
        free=[_task(f"t{i:05}") for i in range(count)],
        clock=clock,
        batch_s=plan.heartbeat_interval(LEASE) * 0.4,  # all five: longer than the fence
    )
    member, scheduler, _ = _member(store, clock)
    first_round = await member.join()
    assert first_round == 3 * plan.CLAIM_BATCH  # stopped when the next heartbeat was due
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        assert len(scheduler.watched) == count  # the next heartbeat claimed the rest
        assert store.beats == 2
        assert 0.0 not in scheduler.shares  # never in doubt: no poll was held back
        assert not member.stats.lease_in_doubt
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_gone_process_on_this_host_loses_its_lease_at_once() -> None:
    store = FakeStore([_membership()], others_on_host=[("old", 666), ("alive", 42)])
    member, _, _ = _member(store, ManualClock())
    await member.join()
    assert store.expired == ["old"]  # pid 666 does not run; pid 42 does and keeps its lease


async def test_a_newcomer_holds_back_for_a_window_then_takes_its_share() -> None:
    clock = ManualClock()
    store = FakeStore(
        [_membership(live=("a", "me"), active=4, unowned=True)],
        free=[_task(f"t{i}") for i in range(4)],
    )
    member, scheduler, _ = _member(store, clock)
    await member.join()
    assert len(scheduler.watched) == 2  # its half
    assert scheduler.shares[-1] == 0.0  # the others have not lowered theirs for a full window
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        clock.advance(plan.JOIN_SETTLE_S)
        await _settle()
        assert scheduler.shares[-1] == 0.5
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_too_many_tasks_are_let_go_when_an_instance_joins() -> None:
    clock = ManualClock()
    store = FakeStore([_membership(active=4)], own=[])
    member, scheduler, _ = _member(store, clock)
    await member.join()
    scheduler.watch_many([_task(f"t{i}") for i in range(40)])
    store.own = list(scheduler.watched.values())
    store.memberships = [_membership(live=("me", "z"), active=40)]
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        clock.advance(plan.heartbeat_interval(LEASE))
        await _settle()
        assert len(store.released) == 20
        assert len(scheduler.watched) == 20
        assert scheduler.shares[-1] == 0.5
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_missed_heartbeats_hold_polls_and_attempts_back_until_one_succeeds() -> None:
    clock = ManualClock()
    store = FakeStore([_membership()])
    member, scheduler, deliverer = _member(store, clock)
    await member.join()
    store.memberships = [StoreUnavailable("down")]
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        for _ in range(int(LEASE * plan.FENCE_FRACTION) - 1):
            clock.advance(1.0)
            await _settle()
        assert scheduler.shares[-1] == 1.0  # still trusted: just under two thirds of the lease
        assert not member.stats.lease_in_doubt
        clock.advance(1.0)
        await _settle()
        assert member.stats.lease_in_doubt
        assert scheduler.shares[-1] == 0.0
        assert deliverer.paused[-1] is True
        store.memberships = [_membership()]
        clock.advance(plan.RETRY_S)
        await _settle()
        assert not member.stats.lease_in_doubt
        assert scheduler.shares[-1] == 1.0
        assert deliverer.paused[-1] is False
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_lapsed_lease_drops_the_tasks_taken_over_and_keeps_the_rest() -> None:
    clock = ManualClock()
    store = FakeStore([_membership()])
    member, scheduler, _ = _member(store, clock)
    await member.join()
    scheduler.watch_many([_task("kept"), _task("taken")])
    store.own = [_task("kept")]  # "taken" was claimed by another instance meanwhile
    store.memberships = [_membership(lapsed=True)]
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        clock.advance(plan.heartbeat_interval(LEASE))
        await _settle()
        assert set(scheduler.watched) == {"kept"}
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_another_instances_lease_end_is_looked_at_when_it_is_due() -> None:
    clock = ManualClock()
    store = FakeStore([_membership(live=("me", "z"), next_expiry=1004.0)])
    member, _, _ = _member(store, clock)
    await member.join()
    beats = store.beats
    store.memberships = [_membership()]
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        clock.advance(4.0 + plan.TAKEOVER_MARGIN_S)  # long before the next regular heartbeat
        await _settle()
        assert store.beats == beats + 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_notices_cancel_forget_redeliveries_and_pass_hints_on() -> None:
    clock = ManualClock()
    notices = Notices()
    store = FakeStore([_membership()])
    member, scheduler, deliverer = _member(store, clock, notices)
    await member.join()
    scheduler.watch_many([_task("a"), _task("b")])
    runner = asyncio.create_task(member.run())
    try:
        await notices.queue.put(Notice("cancel", "a", "other"))
        await notices.queue.put(Notice("redeliver", "dlv_1", "other"))
        await notices.queue.put(Notice("redeliver", "dlv_2", "me"))  # its own: nothing to drop
        await notices.queue.put(Notice("hint", "b", "other"))
        await _settle()
        assert set(scheduler.watched) == {"b"}
        assert deliverer.forgotten == ["dlv_1"]
        assert scheduler.hinted == ["b"]
        member.forward_hint("elsewhere")
        await _settle()
        assert store.announced == [("hint", "elsewhere")]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_leaving_releases_everything() -> None:
    store = FakeStore([_membership()])
    member, _, _ = _member(store, ManualClock())
    await member.join()
    await member.leave()
    assert store.left


async def test_a_task_registered_while_the_store_is_read_is_not_dropped() -> None:
    clock = ManualClock()
    store = FakeStore([_membership()])
    member, scheduler, _ = _member(store, clock)
    await member.join()
    scheduler.watch_many([_task("old")])
    store.own = [_task("old")]

    class Registering(FakeStore):
        async def active_tasks(self) -> AsyncIterator[Task]:
            rows = list(self.own)
            scheduler.watch_many([_task("new")])  # registered here meanwhile, claimed by us
            for task in rows:
                yield task

    racing = Registering([_membership(lapsed=True)], own=store.own)
    member._store = racing  # the same member, reading a store that changes under it
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        clock.advance(plan.heartbeat_interval(LEASE))
        await _settle()
        assert set(scheduler.watched) == {"old", "new"}
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_held_work_that_is_not_watched_is_picked_up_by_the_periodic_check() -> None:
    clock = ManualClock()
    store = FakeStore([_membership()])
    member, scheduler, _ = _member(store, clock)
    await member.join()
    store.own = [_task("lost")]  # held in the store, unknown here (whatever the cause)
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        for _ in range(int(plan.RECONCILE_EVERY_S / plan.heartbeat_interval(LEASE)) + 1):
            clock.advance(plan.heartbeat_interval(LEASE))
            await _settle()
        assert set(scheduler.watched) == {"lost"}
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_polls_and_attempts_are_fenced_where_the_lease_stops_being_trusted() -> None:
    # The scheduler and the deliverer check this moment themselves as each poll or attempt
    # starts: a process frozen past it (SIGSTOP) starts none when it wakes, even if their
    # overdue timers fire before the member's loop has looked.
    clock = ManualClock()
    store = FakeStore([_membership()])
    member, scheduler, deliverer = _member(store, clock)
    await member.join()
    assert scheduler.fence == deliverer.fence == LEASE * plan.FENCE_FRACTION
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        clock.advance(plan.heartbeat_interval(LEASE))
        await _settle()
        renewed = plan.heartbeat_interval(LEASE) + LEASE * plan.FENCE_FRACTION
        assert scheduler.fence == deliverer.fence == renewed
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_an_instance_back_from_a_lapsed_lease_holds_back_for_a_window() -> None:
    # Back after its lease ran out (an outage, a freeze), it counts as a newcomer: the others
    # lower their share when told, so it waits a full 1-second window before taking its own.
    clock = ManualClock()
    store = FakeStore([_membership()])
    member, scheduler, _ = _member(store, clock)
    await member.join()
    assert scheduler.shares[-1] == 1.0
    store.memberships = [_membership(live=("me", "z"), lapsed=True)]
    runner = asyncio.create_task(member.run())
    try:
        await _settle()
        clock.advance(plan.heartbeat_interval(LEASE))
        await _settle()
        assert scheduler.shares[-1] == 0.0
        clock.advance(plan.JOIN_SETTLE_S)
        await _settle()
        assert scheduler.shares[-1] == 0.5
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_heartbeat_that_hangs_still_shows_the_lease_in_doubt_on_time() -> None:
    # Cut off from the database, a heartbeat's statement may hang (no answer, no error) for
    # as long as TCP takes to give up; polls are fenced on time all the same, and /readyz,
    # /v1/status and the metrics must say why.
    clock = ManualClock()
    store = FakeStore([_membership()])
    member, _, _ = _member(store, clock)
    await member.join()
    hung: asyncio.Future[Membership] = asyncio.get_running_loop().create_future()

    async def hang(me: InstanceInfo, lease_s: float, *, first: bool = False) -> Membership:
        return await hung

    store.heartbeat = hang  # type: ignore[method-assign]
    runner = asyncio.create_task(member.run())
    try:
        clock.advance(plan.heartbeat_interval(LEASE))
        await _settle()
        assert not member.stats.lease_in_doubt
        clock.advance(LEASE * plan.FENCE_FRACTION - plan.heartbeat_interval(LEASE))
        await _settle()
        assert member.stats.lease_in_doubt
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_heartbeat_that_hangs_counts_as_failed_after_an_interval() -> None:
    clock = ManualClock()
    lease = 0.3  # a heartbeat interval of 0.1 s, on the event loop's own clock

    class Hanging(FakeStore):
        async def heartbeat(
            self, me: InstanceInfo, lease_s: float, *, first: bool = False
        ) -> Membership:
            if first:
                return _membership()
            self.beats += 1
            await asyncio.Event().wait()  # a dead TCP connection: no answer, ever
            raise AssertionError("unreachable")

    store = Hanging([_membership()])
    scheduler, deliverer = FakeScheduler(), FakeDeliverer()
    member = ClusterMember(
        store=store,
        info=ME,
        lease_s=lease,
        scheduler=scheduler,
        deliverer=deliverer,
        clock=clock,
        notices=Notices(),
    )
    await member.join()
    with capture_logs() as logs:
        runner = asyncio.create_task(member.run())
        try:
            await _settle()
            clock.advance(plan.heartbeat_interval(lease))
            # The heartbeat's time limit is real time (the event loop's): wait for it.
            async with asyncio.timeout(5):
                while not any(e["event"] == "cluster_heartbeat_failed" for e in logs):
                    await asyncio.sleep(0.01)
            assert store.beats == 1
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
