"""A tasks file written in pieces, as editors and scripts do: no cut-off id is ever registered.

The daemon runs in this process (the fault is in a file, not in the process) with a short settle
time; the pieces are written at a fraction of it and at a multiple of it, as "seconds apart" is
to the real three seconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from tests.integration.conftest import Upstream
from watcher.upstream.sandbox import pending

SETTLE_S = 0.4

FULL = (
    "tasks:\n"
    "  - {task_id: order-0001, model: m}\n"
    "  - model: m\n"
    "    task_id: order-0002\n"
    "    endpoints: [app]\n"
    "  - {task_id: order-0003,\n"
    "     model: m}\n"
)
WANTED = {"order-0001", "order-0002", "order-0003"}


async def _ids(running: Any) -> set[str]:
    listing = await running.get("/v1/tasks?limit=1000")
    return {t["task_id"] for t in listing["tasks"]}


async def _write_in_pieces(path: Path, cuts: list[int], pause_s: float) -> None:
    written = 0
    with path.open("w") as out:
        for cut in [*cuts, len(FULL)]:
            out.write(FULL[written:cut])
            out.flush()
            written = cut
            await asyncio.sleep(pause_s)


async def _until_imported(running: Any, logs: list[dict[str, Any]]) -> None:
    """Until every wanted task is registered and its import has ended; fails at once when a
    cut-off id shows up."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        ids = await _ids(running)
        assert not ids - WANTED, f"a cut-off id was registered: {ids - WANTED}"
        if ids == WANTED and any(e["event"] == "tasks_file_imported" for e in logs):
            return
        assert asyncio.get_running_loop().time() < deadline, ids
        await asyncio.sleep(0.05)


async def test_pieces_closer_than_the_settle_time_are_imported_once_whole(
    start_daemon: Any, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.state.script_default(pending())
    path = tmp_path / "tasks.yaml"
    running = await start_daemon(
        tasks_settle_s=SETTLE_S,
        endpoints=[{"name": "app", "url": "http://127.0.0.1:9/h", "secret": _SECRET}],
        extra={"tasks_file": str(path)},
    )
    with capture_logs() as logs:
        # Cut inside ids, inside an entry, inside a flow mapping: every 20 bytes.
        await _write_in_pieces(path, list(range(20, len(FULL), 20)), SETTLE_S / 4)
        await _until_imported(running, logs)
    imports = [e for e in logs if e["event"] == "tasks_file_imported"]
    assert len(imports) == 1  # nothing was read before the writer had finished
    assert imports[0]["registered"] == 3


async def test_pieces_further_apart_than_the_settle_time_never_register_a_cut_off_id(
    start_daemon: Any, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.state.script_default(pending())
    path = tmp_path / "tasks.yaml"
    running = await start_daemon(
        tasks_settle_s=SETTLE_S,
        endpoints=[{"name": "app", "url": "http://127.0.0.1:9/h", "secret": _SECRET}],
        extra={"tasks_file": str(path)},
    )
    cuts = [
        FULL.index("    task_id: order-0002"),  # an entry with a model and no id yet: skipped
        # "order-00" (this cut registered a task of that id): a line without its newline
        FULL.index("order-0002") + 8,
        FULL.index("    endpoints"),  # order-0002 complete but for its endpoints
        FULL.index("     model: m}"),  # an open flow mapping: the document does not parse
    ]
    with capture_logs() as logs:
        await _write_in_pieces(path, cuts, SETTLE_S * 2.5)
        await _until_imported(running, logs)
    events = [e["event"] for e in logs]
    assert "tasks_file_unfinished" in events
    assert "tasks_file_rejected" in events
    task = await running.get("/v1/tasks/order-0002")
    # Registered from the piece that lacked its endpoints: the one risk left, and the reason
    # to write the file elsewhere and rename it into place (docs/configuration.md).
    assert task["endpoints"] in (None, ["app"])


_SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
