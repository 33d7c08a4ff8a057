"""PostgresStore beyond the shared contract: several instances on one database at once, the
schema's migrations, connection loss, and the URL's password kept out of every message."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from structlog.testing import capture_logs

from tests.helpers.postgres import DEFAULT_PROBE, PostgresServer, fresh_schema, truncate
from tests.unit.store.test_contract import T0, add, finish, make_event
from watcher.errors import StoreError, TaskFinished
from watcher.models import (
    Attempt,
    AttemptOutcome,
    DeliveryStatus,
    TaskSource,
    TaskSpec,
    TaskState,
    Transition,
)
from watcher.store.migrations import Migration, load_migrations
from watcher.store.postgres import PostgresStore, migrate_database

API = TaskSource.API


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two instances of the daemon would have."""
    one = await PostgresStore.open(postgres_url, pool_size=3)
    two = await PostgresStore.open(postgres_url, pool_size=3)
    truncate(postgres_url)
    yield one, two
    await one.close()
    await two.close()


@pytest.fixture
def fresh_url(postgres_url: str) -> Iterator[str]:
    """An empty store of its own (for the migration tests): a new schema."""
    with fresh_schema(postgres_url) as url:
        yield url


# -- several instances at once ------------------------------------------------------------------
async def test_a_registration_racing_another_instance_gets_the_task_it_created(
    stores: tuple[PostgresStore, PostgresStore], postgres_url: str
) -> None:
    one, _ = stores
    # Another instance has inserted "t" and not committed yet: our INSERT must wait for it.
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:
        await other.execute(
            "INSERT INTO tasks (task_id, model, metadata, source, state, registered_at, "
            "updated_at) VALUES ('t', 'nano-banana', '{}', 'api', 'pending', %s, %s)",
            (T0, T0),
        )
        racing = asyncio.create_task(one.add_task(TaskSpec("t", "nano-banana"), source=API, now=T0))
        await asyncio.sleep(0.2)
        assert not racing.done()  # blocked on the other transaction's row
        await other.commit()

    task, created = await asyncio.wait_for(racing, 5)
    assert not created
    assert (task.task_id, task.registered_at) == ("t", T0)


async def test_a_registration_racing_a_rolled_back_one_creates_the_task(
    stores: tuple[PostgresStore, PostgresStore], postgres_url: str
) -> None:
    one, _ = stores
    async with await psycopg.AsyncConnection.connect(postgres_url) as other:
        await other.execute(
            "INSERT INTO tasks (task_id, model, metadata, source, state, registered_at, "
            "updated_at) VALUES ('t', 'sora-2', '{}', 'api', 'pending', %s, %s)",
            (T0, T0),
        )
        racing = asyncio.create_task(one.add_task(TaskSpec("t", "flux-2"), source=API, now=T0))
        await asyncio.sleep(0.2)
        await other.rollback()

    task, created = await asyncio.wait_for(racing, 5)
    assert created
    assert task.model == "flux-2"


async def test_two_instances_registering_the_same_tasks_at_once_create_each_once(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = stores
    ids = [f"t{i:03d}" for i in range(60)]
    # Overlapping batches in opposite orders: the inserts must neither deadlock nor duplicate.
    batches = [
        one.add_tasks([TaskSpec(i, "m") for i in ids[:40]], source=API, now=T0),
        two.add_tasks([TaskSpec(i, "m") for i in reversed(ids[20:])], source=API, now=T0 + 1),
        *(
            store.add_task(TaskSpec(i, "m"), source=API, now=T0 + 2)
            for i in ids[10:50:5]
            for store in (one, two)
        ),
    ]
    results = await asyncio.gather(*batches)

    flat = [r for result in results for r in (result if isinstance(result, list) else [result])]
    created = [task.task_id for task, was_created in flat if was_created]
    assert sorted(created) == ids  # each id created exactly once, by whichever came first
    assert dict(await one.count_tasks()) == {TaskState.PENDING: 60}


async def test_concurrent_record_attempts_from_two_instances_all_commit(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = stores
    await add(one, "t")
    _, _, deliveries = await finish(one, "t", T0, endpoints=tuple(f"e{i}" for i in range(30)))

    def batch(n: int, reverse: bool) -> list[tuple[Attempt, object]]:
        pairs = []
        for d in reversed(deliveries) if reverse else deliveries:
            updated = dataclasses.replace(d, attempts=n, updated_at=T0 + n, last_status_code=500)
            pairs.append(
                (Attempt(d.delivery_id, n, T0 + n, 1.0, AttemptOutcome.RETRY, 500), updated)
            )
        return pairs

    # Opposite orders, many rounds at once: row locks are taken in one order, so no deadlock.
    await asyncio.gather(
        *(
            store.record_attempts(batch(n, reverse=store is two))  # type: ignore[arg-type]
            for n in range(1, 7)
            for store in (one, two)
        )
    )

    for d in deliveries:
        assert len(await two.attempts(d.delivery_id)) == 12
        assert (await one.get_delivery(d.delivery_id)).status == DeliveryStatus.PENDING


async def test_a_cancel_racing_a_terminal_transition_lets_exactly_one_win(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = stores
    for n in range(10):
        task_id = f"race{n}"
        await add(one, task_id)
        event = make_event(task_id, T0 + 1)
        finishing = one.apply_transition(
            Transition(task_id, TaskState.PENDING, TaskState.SUCCEEDED, T0 + 1, "done", event=event)
        )
        cancelling = two.cancel_task(task_id, now=T0 + 1)

        outcomes = await asyncio.gather(finishing, cancelling, return_exceptions=True)

        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o, TaskFinished) for o in outcomes if isinstance(o, BaseException))
        changes = await one.state_changes(task_id)
        assert [c.to_state for c in changes] == [(await two.get_task(task_id)).state]


# -- migrations -----------------------------------------------------------------------------------
async def test_instances_migrating_at_once_apply_the_schema_once(fresh_url: str) -> None:
    results = await asyncio.gather(*(migrate_database(fresh_url) for _ in range(4)))

    latest = len(load_migrations("postgres"))
    assert sorted(len(r.applied) for r in results) == [0, 0, 0, latest]
    assert {r.after for r in results} == {latest}
    again = await migrate_database(fresh_url)
    assert (again.before, again.after, again.applied) == (latest, latest, ())


async def test_a_failing_migration_leaves_nothing_behind(fresh_url: str) -> None:
    good = load_migrations("postgres")
    bad = Migration(len(good) + 1, "9999_bad.sql", "CREATE TABLE half (x int); SELECT 1/0;")

    with pytest.raises(StoreError, match="cannot migrate"):
        await migrate_database(fresh_url, migrations=[*good, bad])

    # One transaction: not even the good migrations before it stayed.
    assert (await migrate_database(fresh_url, migrations=[])).before == 0


async def test_a_database_newer_than_the_code_is_refused(fresh_url: str) -> None:
    await migrate_database(fresh_url)
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute("INSERT INTO watcher_schema VALUES (99, '0099_future.sql', now())")

    with pytest.raises(StoreError, match="schema version 99, newer than"):
        await PostgresStore.open(fresh_url)


# -- failures -----------------------------------------------------------------------------------
async def test_the_store_recovers_when_the_server_drops_its_connections(
    stores: tuple[PostgresStore, PostgresStore], postgres_url: str
) -> None:
    one, _ = stores
    await add(one, "t")
    dbname = postgres_url.rsplit("/", 1)[-1].split("?")[0]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )

    # A read is retried once on a fresh connection; writes work again afterwards.
    assert (await one.get_task("t")).task_id == "t"
    await one.check_writable()


def _end_connections(url: str) -> None:
    """End every connection to the database but this one: what a restart or a failover does."""
    dbname = url.rsplit("/", 1)[-1].split("?")[0]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        )


async def _fill_pool(store: PostgresStore, size: int) -> None:
    """Have the pool hold `size` connections (calls at once each take one)."""
    await asyncio.gather(*(store._rows("SELECT pg_sleep(0.2)") for _ in range(size)))


@pytest.mark.parametrize("first_call", ["read", "write"])
async def test_the_first_call_after_every_connection_was_ended_succeeds(
    stores: tuple[PostgresStore, PostgresStore], postgres_url: str, first_call: str
) -> None:
    # Once the database is back from a restart, each pooled connection is found broken only
    # when used. One broken connection means the others are likely broken too: the pool is
    # checked, and the call made on a healthy one, instead of answering 503 to a client while
    # the database answers again.
    one, _ = stores
    await add(one, "t")
    await _fill_pool(one, 3)
    _end_connections(postgres_url)

    if first_call == "read":
        assert (await one.get_task("t")).task_id == "t"
    else:
        await add(one, "u")  # nothing was sent before the connection was found broken
        assert (await one.get_task("u")).task_id == "u"


async def test_text_from_outside_with_nul_characters_is_stored(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    one, _ = stores
    await add(one, "t")

    await one.record_polls({"t": 1}, errors={"t": "bad\x00answer"})

    assert (await one.get_task("t")).last_error == "bad\ufffdanswer"


async def test_the_url_password_appears_in_no_error_and_no_log() -> None:
    url = "postgresql://watcher:pw-S3cret-123@127.0.0.1:1/watcher?password=pw-S3cret-123"
    with capture_logs() as logs, pytest.raises(StoreError) as info:
        await PostgresStore.open(url, timeout_s=2)

    message = str(info.value)
    assert "pw-S3cret-123" not in message
    assert "postgresql://watcher:***@127.0.0.1:1/watcher" in message
    assert "pw-S3cret-123" not in repr(logs)
    cause = info.value.__cause__
    assert cause is not None  # the driver's own error is kept for debugging, not shown


def test_the_server_is_the_first_that_answers(postgres_server: PostgresServer) -> None:
    # TEST_DATABASE_URL, else the machine's server at the probe address, else pgserver.
    if os.environ.get("TEST_DATABASE_URL"):
        assert postgres_server.source == "TEST_DATABASE_URL"
    else:
        probe = os.environ.get("TEST_POSTGRES_PROBE") or DEFAULT_PROBE
        host, port = probe.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            answering = True
        except OSError:
            answering = False
        assert postgres_server.source == ("local" if answering else "pgserver")
