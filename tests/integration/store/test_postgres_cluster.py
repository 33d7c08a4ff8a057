"""Several instances on one PostgreSQL store (watcher/store/postgres_cluster.py): concurrent
claims from several connections, leases and takeover, fencing of an instance whose claim was
taken over, releases, redeliveries and cancels told by notices, leaving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import psycopg
import pytest
from structlog.testing import capture_logs

from tests.helpers.netcut import netcut
from tests.helpers.postgres import truncate
from tests.helpers.wait import until
from tests.unit.store.test_contract import T0, finish, make_delivery, make_event
from watcher.errors import StoreUnavailable, TaskNotHeld
from watcher.models import (
    Attempt,
    AttemptOutcome,
    DeliveryStatus,
    MirrorHold,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store import postgres_cluster as cluster
from watcher.store.base import SpecColumns
from watcher.store.postgres import PostgresStore
from watcher.store.postgres_cluster import InstanceInfo, Listener, Notice, session_tag

API = TaskSource.API
LEASE = 30.0


def _info(name: str) -> InstanceInfo:
    return InstanceInfo(name, "host", 1, "test", f"key-{name}", "127.0.0.1:1")


@pytest.fixture
async def trio(postgres_url: str) -> AsyncIterator[list[PostgresStore]]:
    stores = [await PostgresStore.open(postgres_url, pool_size=3) for _ in range(3)]
    truncate(postgres_url)
    for store, name in zip(stores, "abc", strict=True):
        store.act_as(name)
        await store.heartbeat(_info(name), LEASE, first=True)
    yield stores
    for store in stores:
        await store.close()


async def _register(store: PostgresStore, count: int, prefix: str = "t") -> None:
    specs = [TaskSpec(f"{prefix}{i:04}", "m") for i in range(count)]
    await store.add_tasks_bulk(SpecColumns.of(specs), source=API, now=T0)


async def _unclaimed(url: str, count: int) -> None:
    """Register `count` tasks nobody holds (as copy-store or an older version leaves them)."""
    plain = await PostgresStore.open(url, pool_size=1)
    try:
        await _register(plain, count, "u")
    finally:
        await plain.close()


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_instances_claiming_at_once_get_disjoint_tasks_and_all_of_them(
    trio: list[PostgresStore], postgres_url: str
) -> None:
    await _unclaimed(postgres_url, 1000)
    results = await asyncio.gather(
        *(store.claim_tasks(150) for store in trio for _ in range(3))  # 9 claims at once
    )
    ids = [t.task_id for batch in results for t in batch]
    assert len(ids) == len(set(ids)) == 1000
    assert all(len(batch) <= 150 for batch in results)
    membership = await trio[0].heartbeat(_info("a"), LEASE)
    assert membership.active_tasks == 1000
    assert not membership.unowned_work
    held = {r.instance_id: r.tasks for r in await trio[0].live_instances()}
    assert sum(held.values()) == 1000
    assert set(held) == {"a", "b", "c"}


async def test_a_registering_instance_holds_its_new_tasks(trio: list[PostgresStore]) -> None:
    a, b, _ = trio
    await _register(a, 5)
    assert await b.claim_tasks(10) == []  # nothing is free
    assert [t.task_id async for t in a.active_tasks()] == [f"t{i:04}" for i in range(5)]
    assert [t async for t in b.active_tasks()] == []


async def test_the_tasks_of_an_instance_whose_lease_ran_out_are_taken_over(
    trio: list[PostgresStore],
) -> None:
    a, b, _ = trio
    await a.heartbeat(_info("a"), 0.3)
    await _register(a, 3)
    assert await b.claim_tasks(10) == []  # a's lease still runs
    taken: list[str] = []

    async def took_over() -> bool:
        taken.extend(t.task_id for t in await b.claim_tasks(10))
        return len(taken) == 3

    await _until(took_over)
    membership = await b.heartbeat(_info("b"), LEASE)
    assert "a" not in membership.live
    # a still believes it holds them: its outcome is refused, its poll counts are ignored.
    task = await a.get_task("t0000")
    with pytest.raises(TaskNotHeld):
        await a.apply_transition(
            Transition("t0000", task.state, TaskState.PROCESSING, T0 + 5, "poll", "running", 1)
        )
    await a.record_polls({"t0000": 99}, errors={})
    assert (await b.get_task("t0000")).polls == 0
    # a's heartbeat says its lease lapsed: it must reconcile.
    assert (await a.heartbeat(_info("a"), LEASE)).lapsed
    assert [t async for t in a.active_tasks()] == []


async def test_released_tasks_are_announced_and_claimed_by_another(
    trio: list[PostgresStore], postgres_url: str
) -> None:
    a, b, _ = trio
    listener = Listener(postgres_url, b.channel)
    await listener.connect()
    notices = listener.notices()
    try:
        await _register(a, 4)
        assert await a.release_tasks({"t0000": 5, "t0001": 2}) == 2
        notice = await asyncio.wait_for(anext(notices), 5)
        assert notice == Notice("tasks", "", "a")
        membership = await b.heartbeat(_info("b"), LEASE)
        assert membership.unowned_work
        claimed = await b.claim_tasks(10)
        assert sorted((t.task_id, t.polls) for t in claimed) == [("t0000", 5), ("t0001", 2)]
    finally:
        await listener.close()


async def test_a_listener_reconnects_after_an_outage_and_logs_it_once(postgres_url: str) -> None:
    async with netcut(postgres_url) as proxy:
        listener = Listener(proxy.url, "apixo_watcher_outage_test")
        await listener.connect()
        notices = listener.notices(retry_s=0.01)
        with capture_logs() as logs:
            waiting = asyncio.ensure_future(anext(notices))
            proxy.refuse()  # the server went away: the connection drops, reconnects fail
            before = proxy.accepted
            await until(lambda: proxy.accepted >= before + 20, timeout=10)
            assert not waiting.done()
            proxy.mend()
            assert await asyncio.wait_for(waiting, 10) is cluster.RECONNECTED
        await listener.close()
    events = [e["event"] for e in logs]
    assert events.count("store_listen_lost") == 1
    assert events.count("store_listen_failed") == 1  # not one per attempt
    (restored,) = [e for e in logs if e["event"] == "store_listen_restored"]
    assert restored["attempts"] >= 20


async def test_a_terminal_outcome_frees_the_claim_and_its_deliveries_belong_to_the_finisher(
    trio: list[PostgresStore],
) -> None:
    a, b, _ = trio
    await _register(a, 1)
    _, _, deliveries = await finish(a, "t0000", T0 + 1)
    assert [d.delivery_id async for d in a.pending_deliveries()] == [deliveries[0].delivery_id]
    assert [d async for d in b.pending_deliveries()] == []
    assert await b.claim_deliveries(10) == []  # a is alive
    listed = {r.instance_id: (r.tasks, r.deliveries) for r in await a.live_instances()}
    assert listed["a"] == (0, 1)


async def test_a_redelivery_through_another_instance_moves_the_claim_and_tells_the_holder(
    trio: list[PostgresStore], postgres_url: str
) -> None:
    a, b, _ = trio
    await _register(a, 1)
    _, _, (delivery,) = await finish(a, "t0000", T0 + 1)
    listener = Listener(postgres_url, a.channel)
    await listener.connect()
    notices = listener.notices()
    try:
        requeued = await b.requeue_delivery(delivery.delivery_id, now=T0 + 2)
        assert requeued.status is DeliveryStatus.PENDING
        notice = await asyncio.wait_for(anext(notices), 5)
        assert notice == Notice("redeliver", delivery.delivery_id, "b")
    finally:
        await listener.close()
    assert [d.delivery_id async for d in b.pending_deliveries()] == [delivery.delivery_id]
    assert [d async for d in a.pending_deliveries()] == []
    # An attempt a had in flight is recorded (it was made); the progress is b's to write.
    attempt = Attempt(delivery.delivery_id, 1, T0 + 3, 5.0, AttemptOutcome.SUCCEEDED, 200, None, 1)
    await a.record_attempts([(attempt, replace(requeued, status=DeliveryStatus.SUCCEEDED))])
    assert (await a.get_delivery(delivery.delivery_id)).status is DeliveryStatus.PENDING
    assert len(await a.attempts(delivery.delivery_id)) == 1


async def test_a_cancel_through_another_instance_is_told_to_the_holder(
    trio: list[PostgresStore], postgres_url: str
) -> None:
    a, b, _ = trio
    await _register(a, 1)
    listener = Listener(postgres_url, a.channel)
    await listener.connect()
    notices = listener.notices()
    try:
        await b.cancel_task("t0000", now=T0 + 1)
        assert await asyncio.wait_for(anext(notices), 5) == Notice("cancel", "t0000", "b")
    finally:
        await listener.close()
    assert [t async for t in a.active_tasks()] == []


async def test_a_mirror_hold_belongs_to_the_finisher_and_is_released_only_by_it(
    trio: list[PostgresStore],
) -> None:
    a, b, _ = trio
    await _register(a, 1)
    event = make_event("t0000", T0 + 1)
    task = await a.get_task("t0000")
    hold = MirrorHold(event, ())
    await a.apply_transition(
        Transition(
            "t0000", task.state, TaskState.SUCCEEDED, T0 + 1, "poll", "success", 1, mirror=hold
        )
    )
    assert [h.event.task_id for h in await a.held_mirrors()] == ["t0000"]
    assert await b.held_mirrors() == []
    assert await b.claim_mirror_holds(10) == []
    final = make_event("t0000", T0 + 2, n=2)
    assert not await b.release_mirror("t0000", final, [make_delivery(final, "app")])
    assert await a.release_mirror("t0000", final, [make_delivery(final, "app")])


async def test_leaving_releases_everything_and_another_takes_it_at_once(
    trio: list[PostgresStore],
) -> None:
    a, b, _ = trio
    await _register(a, 2)
    await _register(a, 1, "f")
    await finish(a, "f0000", T0 + 1)
    await a.leave()
    assert "a" not in [r.instance_id for r in await b.live_instances()]
    assert len(await b.claim_tasks(10)) == 2
    assert len(await b.claim_deliveries(10)) == 1


async def test_a_gone_process_on_the_same_host_is_expired_only_there(
    trio: list[PostgresStore],
) -> None:
    a, b, _ = trio
    await _register(a, 2)
    assert await b.instances_on_host("key-a") == [("a", 1)]
    await b.expire_instances(["a"], "key-other")  # another host's key: nothing happens
    assert await b.claim_tasks(10) == []
    await b.expire_instances(["a"], "key-a")
    assert len(await b.claim_tasks(10)) == 2


async def test_an_open_transaction_of_a_frozen_instance_keeps_no_task_from_the_others(
    postgres_url: str,
) -> None:
    # Frozen (SIGSTOP, a VM pause) or cut off in the middle of a transaction, an instance
    # leaves it open on the server with its rows locked, and claims skip locked rows: its
    # tasks would wait for it however long it stays away. The daemon's connections end a
    # transaction left idle for a third of the lease, so the locks go before the lease does.
    lease = 1.5
    a, b = [
        await PostgresStore.open(postgres_url, pool_size=2, idle_transaction_timeout_s=lease / 3)
        for _ in range(2)
    ]
    truncate(postgres_url)
    try:
        for store, name in ((a, "a"), (b, "b")):
            store.act_as(name)
            await store.heartbeat(_info(name), lease, first=True)
        await _register(a, 3)
        taken: list[str] = []

        async def took_over() -> bool:
            taken.extend(t.task_id for t in await b.claim_tasks(10))
            return len(taken) == 3

        async def frozen_flush(conn: psycopg.AsyncConnection[object]) -> None:
            # a flush of poll counts, say, when the process froze: its rows locked
            await conn.execute("SELECT 1 FROM tasks FOR UPDATE")
            await _until(took_over, timeout=lease * 3)
            await conn.execute("SELECT 1")  # woken: the server ended the transaction

        # For the frozen instance, that is the database going away (it waits for it and
        # carries on), not a fault of its own that would stop the daemon.
        with pytest.raises(StoreUnavailable):
            await a._write("record_polls", frozen_flush)
        assert sorted(taken) == ["t0000", "t0001", "t0002"]
    finally:
        await a.close()
        await b.close()


async def test_the_sessions_of_an_instance_whose_lease_ran_out_are_ended(
    trio: list[PostgresStore], postgres_url: str
) -> None:
    # a froze in the middle of a transaction: its row lock would hide the task from claims
    # (SKIP LOCKED) for as long as it stays away; a heartbeat of b ends a's sessions.
    a, b, _ = trio
    await a.heartbeat(_info("a"), 0.3)
    await _register(a, 1)
    frozen = await psycopg.AsyncConnection.connect(postgres_url, application_name=session_tag("a"))
    try:
        await frozen.execute("SELECT 1 FROM tasks WHERE task_id = 't0000' FOR UPDATE")

        async def lapsed() -> bool:
            return "a" not in (await b.heartbeat(_info("b"), LEASE)).live

        await _until(lapsed)
        assert len(await b.claim_tasks(10)) == 1  # the lock went with a's session
        with pytest.raises(psycopg.OperationalError):
            await frozen.execute("SELECT 1")  # and a writes nothing more on it
    finally:
        await frozen.close()


def _rows_scanned(url: str, statement: str, params: tuple[object, ...]) -> tuple[int, str]:
    """How many rows of `tasks` PostgreSQL reads to run `statement` (run, then rolled back):
    the rows its sequential scans of the table returned or filtered out; and the plan."""
    with psycopg.connect(url) as conn:
        conn.execute("ANALYZE tasks")
        rows = conn.execute(f"EXPLAIN (ANALYZE) {statement}", params).fetchall()
        conn.rollback()
    plan = "\n".join(str(r[0]) for r in rows)
    total = 0
    seq = False
    for line in plan.splitlines():
        if "Seq Scan on tasks" in line:
            seq = True
            total += int(line.split("rows=")[-1].split()[0])
        elif seq and "Rows Removed by Filter" in line:
            total += int(line.rsplit(":", 1)[1])
        elif "->" in line:
            seq = False
    return total, plan


async def test_a_claim_reads_its_batch_not_the_whole_table(
    trio: list[PostgresStore], postgres_url: str
) -> None:
    """Claiming 500 of 20,000 tasks, free or held by an instance that is gone, reads about
    that many rows: `task_id IN (SELECT ... LIMIT 500)` made PostgreSQL join the batch to a
    scan of every task, ~45 ms per batch at 100,000 tasks, so an instance claiming its share
    of a big store outlived a short lease."""
    a, b, c = trio
    await _unclaimed(postgres_url, 20_000)
    rows, plan = _rows_scanned(postgres_url, cluster.CLAIM_FREE_TASKS, ("b", 500))
    assert rows <= 1000, plan
    assert len(await a.claim_tasks(10_000)) == 10_000
    assert len(await c.claim_tasks(10_000)) == 10_000
    await a.expire_instances(["c"], "key-c")
    rows, plan = _rows_scanned(postgres_url, cluster.CLAIM_ORPHANED_TASKS, ("b", 500))
    assert rows <= 1000, plan
    assert len(await b.claim_tasks(500)) == 500
