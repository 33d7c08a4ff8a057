"""The tasks file as the running daemon (a subprocess) meets it: bad entries, big files, reloads."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.daemon import DaemonProcess, write_config, write_tasks_file
from tests.integration.conftest import Upstream
from watcher.upstream.sandbox import pending

pytestmark = pytest.mark.slow

_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def _with_tasks_file(config: Path, tasks: Path) -> None:
    config.write_text(config.read_text() + f"tasks_file: {tasks}\n")


def _is(name: str) -> Any:
    return lambda event: event.get("event") == name


async def _task_ids(daemon: DaemonProcess) -> set[str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{daemon.intake_address()}/v1/tasks?limit=1000") as resp,
    ):
        assert resp.status == 200
        return {t["task_id"] for t in (await resp.json())["tasks"]}


async def test_bad_callback_ports_in_the_tasks_file_are_skipped_with_their_lines(
    tmp_path: Path, upstream: Upstream
) -> None:
    # These crashed the start with `internal error: ValueError` (urlsplit's port parsing).
    upstream.state.script_default(pending())
    config = write_config(
        tmp_path,
        upstream_url=upstream.url,
        delivery={"allowed_callback_hosts": ["h"], "callback_secret": _SECRET},
    )
    text = (
        "tasks:\n"
        "  - {task_id: good_1, model: m}\n"  # line 2
        "  - {task_id: bad_1, model: m, callback_url: 'http://h:99999/x'}\n"
        "  - {task_id: bad_2, model: m, callback_url: 'http://h:abc/x'}\n"
        "  - {task_id: bad_3, model: m, callback_url: 'http://h:+80/x'}\n"
        "  - {task_id: bad_4, model: m, callback_url: 'http://[x]/y'}\n"
        "  - {task_id: good_2, model: m, callback_url: 'http://h:8080/x'}\n"
    )
    _with_tasks_file(config, tmp_path / "tasks.yaml")
    write_tasks_file(tmp_path / "tasks.yaml", text)
    daemon = DaemonProcess(config)
    await daemon.start()
    try:
        imported = await daemon.wait_log(_is("tasks_file_imported"))
        assert imported["registered"] == 2
        assert imported["invalid"] == 4
        invalid = [e for e in daemon.log_events() if e.get("event") == "tasks_file_entry_invalid"]
        assert sorted((e["line"], e["key"]) for e in invalid) == [
            (3, "tasks[1].callback_url"),
            (4, "tasks[2].callback_url"),
            (5, "tasks[3].callback_url"),
            (6, "tasks[4].callback_url"),
        ]
        assert await _task_ids(daemon) == {"good_1", "good_2"}
    finally:
        await daemon.close()


async def test_a_big_file_is_reread_off_the_loop_and_reloads_coalesce(
    tmp_path: Path, upstream: Upstream
) -> None:
    # Re-reading a 50,000-entry file took ~8.5 s on the event loop for a one-line append, and
    # each SIGHUP re-read it again: 50 of them stalled /healthz for 30 s.
    count = 20_000
    path = tmp_path / "tasks.yaml"
    write_tasks_file(
        path,
        "tasks:\n"
        + "".join(
            f"  - task_id: order-{i:06d}\n    model: m\n    metadata: {{order_id: {i}}}\n"
            for i in range(count)
        ),
    )
    config = write_config(tmp_path, upstream_url=upstream.url, polling={"initial_delay": "1h"})
    _with_tasks_file(config, path)
    daemon = DaemonProcess(config)
    await daemon.start()
    try:
        first = await daemon.wait_log(_is("tasks_file_imported"), timeout=50)
        assert first["registered"] == count
        base = f"http://{daemon.intake_address()}"

        with path.open("a") as out:
            out.write("  - {task_id: appended, model: m}\n")
        write_tasks_file(path, path.read_text())  # dated back: settled
        worst = 0.0
        stop = asyncio.Event()

        async def probe() -> None:
            nonlocal worst
            async with aiohttp.ClientSession() as http:
                while not stop.is_set():
                    started = time.monotonic()
                    async with http.get(f"{base}/healthz") as resp:
                        assert resp.status == 200, await resp.text()
                    worst = max(worst, time.monotonic() - started)
                    await asyncio.sleep(0.02)

        prober = asyncio.create_task(probe())
        for _ in range(20):
            daemon.signal(signal.SIGHUP)
            await asyncio.sleep(0.005)
        second = await daemon.wait_log(
            lambda e: (
                e.get("event") == "tasks_file_imported"
                and e is not first
                and e.get("registered") == 1
            ),
            timeout=50,
        )
        await daemon.wait_log(lambda e: e.get("event") == "config_reloaded", timeout=10)
        await asyncio.sleep(1.0)  # room for further (wrong) reads
        stop.set()
        await prober
    finally:
        await daemon.close()

    assert second["unchanged"] == count  # only the appended entry was read and registered
    reads = [
        e
        for e in daemon.log_events()
        if e.get("event") in ("tasks_file_imported", "tasks_file_unchanged")
    ]
    assert len(reads) - 1 <= 2  # twenty SIGHUPs: the read they found running, and one more
    assert worst < 1.0, f"/healthz took {worst:.2f}s while the file was read"
