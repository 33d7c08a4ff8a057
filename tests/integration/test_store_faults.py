"""Faults of the store and the process, with the real daemon as a subprocess.

Two daemons on one store, the store's files deleted under a running daemon, a read-only
store: each ends in a clear error and an exit code systemd can act on, never in duplicated
webhooks, silently lost registrations or a SIGBUS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.daemon import DaemonProcess, write_config
from tests.integration.conftest import Upstream
from watcher.cli.common import EXIT_FAILURE, EXIT_STORE_IN_USE
from watcher.store.sqlite import SqliteStore
from watcher.upstream.sandbox import success

pytestmark = pytest.mark.slow

MODEL = "nano-banana"


@pytest.fixture
async def daemons() -> AsyncIterator[Callable[..., DaemonProcess]]:
    """Make daemon processes; every one is killed and cleaned up afterwards."""
    made: list[DaemonProcess] = []

    def make(config: Path, **kwargs: Any) -> DaemonProcess:
        daemon = DaemonProcess(config, **kwargs)
        made.append(daemon)
        return daemon

    try:
        yield make
    finally:
        for daemon in made:
            await daemon.close()


async def _post_task(daemon: DaemonProcess, task_id: str) -> tuple[int, Any]:
    base = f"http://{daemon.intake_address()}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/v1/tasks", json={"task_id": task_id, "model": MODEL}) as resp,
    ):
        return resp.status, await resp.json()


async def _get(daemon: DaemonProcess, path: str) -> tuple[int, Any]:
    base = f"http://{daemon.intake_address()}"
    async with aiohttp.ClientSession() as http, http.get(base + path) as resp:
        return resp.status, await resp.json()


async def _count_succeeded(daemon: DaemonProcess) -> int:
    status, page = await _get(daemon, "/v1/tasks?state=succeeded&limit=1000")
    assert status == 200, page
    return len(page["tasks"])


async def _wait_for(
    measure: Callable[[], Awaitable[int]], expected: int, timeout: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await measure()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"got {value}, expected {expected} within {timeout}s")
        await asyncio.sleep(0.05)


# -- one daemon per store ---------------------------------------------------------------------
async def test_a_second_daemon_on_the_same_store_refuses_to_start(
    tmp_path: Path, upstream: Upstream, daemons: Callable[..., DaemonProcess]
) -> None:
    # Both listen on 127.0.0.1:0, so only the store is shared.
    config = write_config(tmp_path, upstream_url=upstream.url)
    first, second = daemons(config), daemons(config)
    await first.start()
    assert first.proc is not None

    await second.start(wait_ready=False)

    assert await second.wait_exit() == EXIT_STORE_IN_USE
    assert not any("READY=1" in m for m in second.messages)
    text = second.log_text()
    assert (
        f"the store {tmp_path / 'watcher.db'} is in use by another apixo-watcher process "
        f"(pid {first.proc.pid})"
    ) in text
    assert "Traceback" not in text
    # The first one is untouched and still takes tasks.
    status, task = await _post_task(first, "t1")
    assert status == 201, task


async def test_the_lock_dies_with_its_process_even_on_kill_9(
    tmp_path: Path, upstream: Upstream, daemons: Callable[..., DaemonProcess]
) -> None:
    config = write_config(tmp_path, upstream_url=upstream.url)
    first = daemons(config)
    await first.start()
    status, _ = await _post_task(first, "before-kill")
    assert status == 201

    first.signal(signal.SIGKILL)  # no chance to release anything itself
    assert await first.wait_exit() == -signal.SIGKILL

    second = daemons(config)
    await second.start()
    status, task = await _get(second, "/v1/tasks/before-kill")
    assert status == 200, task
    assert (await _post_task(second, "after-kill"))[0] == 201
    second.signal(signal.SIGTERM)
    assert await second.wait_exit() == 0
    # A cleanly stopped daemon leaves the lock file (harmless) but no lock.
    third = daemons(config)
    await third.start()
    third.signal(signal.SIGTERM)
    assert await third.wait_exit() == 0


# -- the store deleted or replaced under a running daemon -------------------------------------
def _delete_every_file(db: Path) -> None:
    for path in db.parent.glob(db.name + "*"):
        path.unlink()


def _replace_with_a_copy(db: Path) -> None:
    # What a restore from a backup under a running daemon does: a new file at the same path.
    copy = db.with_name("copy.db")
    copy.write_bytes(db.read_bytes())
    copy.replace(db)


@pytest.mark.parametrize(
    "damage", [_delete_every_file, _replace_with_a_copy], ids=["deleted", "replaced"]
)
async def test_a_store_deleted_or_replaced_under_the_daemon_stops_it_loudly(
    tmp_path: Path,
    upstream: Upstream,
    daemons: Callable[..., DaemonProcess],
    damage: Callable[[Path], None],
) -> None:
    config = write_config(tmp_path, upstream_url=upstream.url)
    daemon = daemons(config)
    await daemon.start()
    assert (await _post_task(daemon, "kept"))[0] == 201
    db = tmp_path / "watcher.db"

    damage(db)
    statuses = []
    for i in range(10):
        try:
            status, body = await _post_task(daemon, f"after-{i}")
        except aiohttp.ClientConnectionError:
            break  # the daemon has already stopped: nothing acknowledged either
        statuses.append(status)
        assert status == 503, body
        assert body["error"]["code"] == "store_unavailable"

    assert await daemon.wait_exit(timeout=10) == 1
    lost = [e for e in daemon.log_events() if e.get("event") == "store_lost"]
    assert lost, daemon.log_text()
    assert lost[0]["level"] == "error"
    assert str(db) in lost[0]["error"]
    assert ("deleted" if damage is _delete_every_file else "replaced") in lost[0]["error"]
    assert "Traceback" not in daemon.log_text()
    assert 201 not in statuses


async def test_a_lost_store_makes_the_daemon_not_ready_at_once(
    tmp_path: Path, start_daemon: Callable[..., Any]
) -> None:
    running = await start_daemon()
    _delete_every_file(tmp_path / "watcher.db")

    async with running.http.get(running.base + "/readyz") as resp:
        assert resp.status == 503
        reasons = (await resp.json())["reasons"]
    assert any(r.startswith("store lost: the store file") for r in reasons), reasons
    assert await asyncio.wait_for(running.task, 10) == 1


# -- a read-only store, and the files SQLite maps -----------------------------------------------
def _unprivileged() -> list[str]:
    """A wrapper that makes file permissions bind the daemon: root ignores them otherwise."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv to drop capabilities")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]


async def test_a_store_made_read_only_refuses_the_next_start_with_a_clear_error(
    tmp_path: Path, upstream: Upstream, daemons: Callable[..., DaemonProcess]
) -> None:
    upstream.state.script_default(success())
    config = write_config(tmp_path, upstream_url=upstream.url)
    db = tmp_path / "watcher.db"
    daemon = daemons(config, wrapper=_unprivileged())
    await daemon.start()
    assert (await _post_task(daemon, "before"))[0] == 201

    db.chmod(0o444)
    # The daemon's open file stays writable: nothing it acknowledges now is lost.
    assert (await _post_task(daemon, "while-read-only"))[0] == 201
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit() == 0

    again = daemons(config, wrapper=_unprivileged())
    await again.start(wait_ready=False)
    assert await again.wait_exit() == EXIT_FAILURE
    assert not any("READY=1" in m for m in again.messages)
    text = again.log_text()
    assert f"the store {db} is read-only" in text, text
    assert "Traceback" not in text

    # SQLite gives the -wal and -shm files the database's mode: all of them need fixing.
    assert "its -wal and -shm files" in text
    for path in tmp_path.glob("watcher.db*"):
        path.chmod(0o644)
    third = daemons(config, wrapper=_unprivileged())
    await third.start()
    status, task = await _get(third, "/v1/tasks/while-read-only")
    assert status == 200, task


@pytest.mark.parametrize("existing", [True, False], ids=["existing-store", "new-store"])
async def test_a_store_on_a_read_only_filesystem_refuses_to_start_with_a_clear_error(
    tmp_path: Path, upstream: Upstream, daemons: Callable[..., DaemonProcess], existing: bool
) -> None:
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode
    ):
        pytest.skip("cannot make a mount namespace here (unshare -m)")
    state = tmp_path / "state"
    state.mkdir()
    db = state / "watcher.db"
    config = write_config(tmp_path, upstream_url=upstream.url, extra_store={"path": str(db)})
    if existing:
        SqliteStore(db).close()
    # The daemon alone sees `state` mounted read-only (in a mount namespace of its own).
    read_only = [
        "unshare",
        "-m",
        "sh",
        "-c",
        'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"',
        str(state),
    ]
    daemon = daemons(config, wrapper=read_only)
    await daemon.start(wait_ready=False)

    assert await daemon.wait_exit() == EXIT_FAILURE
    text = daemon.log_text()
    assert str(db) in text
    assert "Read-only file system" in text or "is read-only" in text, text
    assert "Traceback" not in text


async def test_a_truncated_shared_memory_file_stops_the_daemon_cleanly_not_with_sigbus(
    tmp_path: Path, upstream: Upstream, daemons: Callable[..., DaemonProcess]
) -> None:
    # SQLite maps watcher.db-shm; touching a mapped page past the end of a file that shrank
    # is SIGBUS, which no Python code can catch.
    upstream.state.script_default(success())
    config = write_config(tmp_path, upstream_url=upstream.url)
    daemon = daemons(config)
    await daemon.start()
    for i in range(20):
        assert (await _post_task(daemon, f"t{i}"))[0] == 201
    # Quiet first (every task finished), so that the truncation falls between two uses of
    # the store rather than into one: no check can stop a fault in the middle of a call.
    await _wait_for(lambda: _count_succeeded(daemon), 20)
    shm = tmp_path / "watcher.db-shm"
    assert shm.stat().st_size > 0

    os.truncate(shm, 0)
    with contextlib.suppress(aiohttp.ClientConnectionError):
        status, _ = await _post_task(daemon, "after")
        assert status == 503

    assert await daemon.wait_exit() == EXIT_FAILURE  # not -SIGBUS
    lost = [e for e in daemon.log_events() if e.get("event") == "store_lost"]
    assert lost, daemon.log_text()
    assert "watcher.db-shm was truncated" in lost[0]["error"]
    again = daemons(config)
    await again.start()
    status, page = await _get(again, "/v1/tasks?limit=100")
    assert status == 200
    assert {t["task_id"] for t in page["tasks"]} == {f"t{i}" for i in range(20)}


async def test_a_fatal_signal_leaves_a_clear_line_and_the_stack_in_the_log(
    tmp_path: Path, upstream: Upstream, daemons: Callable[..., DaemonProcess]
) -> None:
    # What remains of a SIGBUS that no check could prevent (a file truncated in the middle of
    # a call into SQLite): the journal says what killed the daemon, and where.
    daemon = daemons(write_config(tmp_path, upstream_url=upstream.url))
    await daemon.start()
    daemon.signal(signal.SIGBUS)
    assert await daemon.wait_exit() == -signal.SIGBUS
    text = daemon.log_text()
    assert "Fatal Python error: Bus error" in text, text
    assert "Current thread" in text or "Thread 0x" in text
