"""What a new user tries in the first hour with the operator commands, against a live daemon.

The daemon is a real subprocess (the `live` fixture of test_cli.py); most commands run
in-process (`main(argv)` in a thread, output captured) to keep the suite fast, and as a
subprocess where the process matters (exit on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import io

import pytest

from tests.integration.cli.test_cli import Live, Result
from watcher.cli.main import main
from watcher.upstream.sandbox import pending

pytestmark = pytest.mark.slow


async def run(*args: str) -> Result:
    """`apixo-watcher ARGS` in this process (in a thread: it runs its own event loop)."""

    def call() -> Result:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: --help, usage errors
                code = exc.code if isinstance(exc.code, int) else 1
        result = Result(code, out.getvalue(), err.getvalue())
        assert "Traceback" not in result.err, result.err
        return result

    return await asyncio.to_thread(call)


async def test_meta_values_stay_text_and_meta_json_types_them(live: Live) -> None:
    c = str(live.config)
    live.upstream.script("task_meta", pending())
    added = await run(
        "add", "task_meta", "--model", "nano-banana",
        "--meta", "ver=1.10",
        "--meta", "order=42",
        "--meta-json", "qty=42",
        "--meta-json", 'tags=["a", 1.10]',
        "--meta-json", "note=\"1.10\"",
        "--meta", "eq=a=b",
        "--json", "-c", c,
    )  # fmt: skip
    assert added.code == 0, added.err
    assert added.json()["metadata"] == {
        "ver": "1.10",
        "order": "42",
        "qty": 42,
        "tags": ["a", 1.1],
        "note": "1.10",
        "eq": "a=b",
    }
    shown = await run("show", "task_meta", "--json", "-c", c)
    assert shown.json()["metadata"]["ver"] == "1.10"

    for bad in ("ver=1.10.3", "x=NaN", "x=", "=1", "novalue"):
        usage = await run("add", "task_meta_bad", "--model", "m", "--meta-json", bad, "-c", c)
        assert usage.code == 2, bad
        assert "argument --meta-json" in usage.err
    err = (await run("add", "t", "--model", "m", "--meta-json", "ver=1.10.3", "-c", c)).err
    assert "the value of 'ver' is not JSON" in err
    assert "--meta ver=TEXT" in err
    listing = await run("list", "--json", "-c", c)
    assert [t["task_id"] for t in listing.json()["tasks"]] == ["task_meta"]  # nothing sent


async def test_cancel_says_when_a_task_was_already_cancelled(live: Live) -> None:
    c = str(live.config)
    live.upstream.script("task_cancel", pending())
    assert (await run("add", "task_cancel", "--model", "nano-banana", "-c", c)).code == 0
    first = await run("cancel", "task_cancel", "-c", c)
    assert first.code == 0, first.err
    assert first.out == "task_cancel: cancelled (no webhook will be sent)\n"
    again = await run("cancel", "task_cancel", "-c", c)
    assert again.code == 0, again.err
    assert again.out.startswith("task_cancel: already cancelled at 20")
    assert "(unchanged)" in again.out
