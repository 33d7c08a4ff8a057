"""What a new user tries in the first hour with the operator commands, against a live daemon.

The daemon is a real subprocess (the `live` fixture of test_cli.py); most commands run
in-process (`main(argv)` in a thread, output captured) to keep the suite fast, and as a
subprocess where the process matters (exit on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import sys
from typing import Any

import pytest

from tests.integration.cli.test_cli import Live, Result
from watcher.cli.main import main
from watcher.upstream.sandbox import failed, pending, processing, success

pytestmark = pytest.mark.slow


async def wait_until_finished(c: str, task_id: str) -> dict[str, Any]:
    """`show --json` until the task is terminal and every delivery is delivered or failed
    for good (10 s at most)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        task: dict[str, Any] = (await run("show", task_id, "--json", "-c", c)).json()
        if task["state"] not in ("pending", "processing") and all(
            d["status"] in ("succeeded", "failed") for d in task["deliveries"]
        ):
            return task
        assert loop.time() < deadline, task
        await asyncio.sleep(0.05)


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


async def test_show_prints_the_result_urls_or_the_failure_and_the_last_error(live: Live) -> None:
    c = str(live.config)
    urls = ("https://cdn.apixo.ai/output/a.jpg", "https://cdn.apixo.ai/output/b.jpg")
    live.upstream.script("task_show_ok", pending(), success(urls))
    live.upstream.script("task_show_fail", failed("CONTENT_VIOLATION", "not allowed here"))
    live.upstream.script("task_show_wait", pending())
    for task_id in ("task_show_ok", "task_show_fail", "task_show_wait"):
        assert (await run("add", task_id, "--model", "nano-banana", "-c", c)).code == 0
    await wait_until_finished(c, "task_show_ok")
    await wait_until_finished(c, "task_show_fail")

    ok = (await run("show", "task_show_ok", "-c", c)).out.splitlines()
    at = ok.index(f"result      {urls[0]}")
    assert ok[at + 1] == f"            {urls[1]}"
    assert "last error  -" in ok

    failure = (await run("show", "task_show_fail", "-c", c)).out.splitlines()
    assert "failure     CONTENT_VIOLATION: not allowed here" in failure
    assert not any(line.startswith("result ") for line in failure)

    waiting = (await run("show", "task_show_wait", "-c", c)).out.splitlines()
    assert "result      - (not finished yet)" in waiting


async def test_list_and_deliveries_page_with_cursor_and_all(live: Live) -> None:
    c = str(live.config)
    ids = [f"task_page_{n}" for n in range(5)]
    for task_id in ids:
        live.upstream.script(task_id, success())
        assert (await run("add", task_id, "--model", "nano-banana", "-c", c)).code == 0
    for task_id in ids:
        await wait_until_finished(c, task_id)
    newest_first = ids[::-1]

    first = await run("list", "--limit", "2", "-c", c)
    lines = first.out.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == newest_first[:2]
    hint = lines[3]
    assert hint.startswith("(more: --cursor ")
    cursor = hint.split()[2]
    second = await run("list", "--limit", "2", "--cursor", cursor, "-c", c)
    assert [line.split()[0] for line in second.out.splitlines()[1:3]] == newest_first[2:4]

    every = await run("list", "--all", "--limit", "2", "-c", c)
    lines = every.out.splitlines()
    assert lines[0].split()[:3] == ["TASK", "MODEL", "STATE"]
    assert [line.split()[0] for line in lines[1:]] == newest_first  # one header, no hint
    as_json = json.loads((await run("list", "--all", "--limit", "2", "--json", "-c", c)).out)
    assert [t["task_id"] for t in as_json["tasks"]] == newest_first
    assert as_json["next_cursor"] is None
    from_cursor = await run("list", "--all", "--limit", "2", "--cursor", cursor, "--json", "-c", c)
    assert [t["task_id"] for t in from_cursor.json()["tasks"]] == newest_first[2:]
    nothing = await run("list", "--all", "--json", "--state", "failed", "-c", c)
    assert nothing.json() == {"tasks": [], "next_cursor": None}

    deliveries = json.loads(
        (await run("deliveries", "--all", "--limit", "2", "--json", "-c", c)).out
    )["deliveries"]
    assert [d["task_id"] for d in deliveries] == newest_first
    table = (await run("deliveries", "--all", "--limit", "3", "-c", c)).out.splitlines()
    assert len(table) == 1 + 5
    page = await run("deliveries", "--limit", "2", "-c", c)
    assert "(more: --cursor " in page.out

    bad = await run("list", "--cursor", "not-a-cursor", "-c", c)
    assert bad.code == 1
    assert "cursor" in bad.err
    assert len(bad.err.strip().splitlines()) == 1


async def test_add_wait_follows_to_the_delivered_webhook_and_exits_by_outcome(live: Live) -> None:
    c = str(live.config)
    url = "https://cdn.apixo.ai/output/wait.jpg"
    live.upstream.script("task_wait_ok", pending(), processing(), success((url,)))
    live.receiver.script("/hook", 500, 200)  # the first attempt fails, the retry succeeds
    ok = await run("add", "task_wait_ok", "--model", "nano-banana", "--wait", "-c", c)
    assert ok.code == 0, ok.out + ok.err
    lines = ok.out.splitlines()
    assert lines[0] == "task_wait_ok: registered (nano-banana); waiting until it is done"
    changes = [line.split("  ", 1)[1] for line in lines if " -> " in line and "app" not in line]
    assert changes == [
        "pending -> processing (upstream state processing)",
        "processing -> succeeded (upstream state success)",
    ]
    assert any(
        line.endswith("task.succeeded -> app: delivered (attempt 2, HTTP 200)") for line in lines
    )
    assert f"result      {url}" in lines
    assert lines[-1] == "task_wait_ok: succeeded; webhooks delivered"
    assert len(live.receiver.on("/hook")) == 2  # it returned only once the webhook was in

    live.upstream.script("task_wait_fail", failed("E_PROMPT", "prompt refused"))
    bad = await run("add", "task_wait_fail", "--model", "flux-2", "--wait", "-c", c)
    assert bad.code == 1
    assert "failure     E_PROMPT: prompt refused" in bad.out.splitlines()
    assert bad.out.splitlines()[-1] == "task_wait_fail: failed; webhooks delivered"

    live.upstream.script("task_wait_json", success())
    as_json = await run("add", "task_wait_json", "--model", "m", "--wait", "--json", "-c", c)
    assert as_json.code == 0
    final = as_json.json()  # stdout is only the final task; progress went to stderr
    assert final["state"] == "succeeded"
    assert final["deliveries"][0]["status"] == "succeeded"
    assert "task_wait_json: succeeded; webhooks delivered" in as_json.err


async def test_show_follow_stops_at_its_timeout_and_on_an_unknown_task(live: Live) -> None:
    c = str(live.config)
    live.upstream.script("task_follow_slow", pending())
    assert (await run("add", "task_follow_slow", "--model", "sora-2", "-c", c)).code == 0
    slow = await run("show", "task_follow_slow", "--follow", "--timeout", "0.6", "-c", c)
    assert slow.code == 1
    assert slow.out.startswith("task        task_follow_slow\n")  # the whole show first
    assert slow.out.splitlines()[-1] == (
        "task_follow_slow: still pending after 0.6 s; stopped waiting "
        "(the daemon keeps watching it)"
    )
    unknown = await run("show", "no_such_task", "--follow", "-c", c)
    assert unknown.code == 1
    assert "task_not_found" in unknown.err
    misuse = await run("show", "task_follow_slow", "--timeout", "1", "-c", c)
    assert misuse.code == 2
    assert "--timeout only applies with --follow" in misuse.err

    # a settled task: show --follow prints it once and exits at once
    live.upstream.script("task_follow_done", success())
    assert (await run("add", "task_follow_done", "--model", "m", "-c", c)).code == 0
    await wait_until_finished(c, "task_follow_done")
    done = await run("show", "task_follow_done", "--follow", "-c", c)
    assert done.code == 0
    assert done.out.count("result      https://") == 1
    assert done.out.splitlines()[-1] == "task_follow_done: succeeded; webhooks delivered"


async def test_ctrl_c_stops_following_cleanly(live: Live) -> None:
    c = str(live.config)
    live.upstream.script("task_follow_forever", pending())
    assert (await run("add", "task_follow_forever", "--model", "m", "-c", c)).code == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watcher", "show", "task_follow_forever", "--follow", "-c", c,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        while not (await asyncio.wait_for(proc.stdout.readline(), 20)).startswith(b"following "):
            pass  # the show part is printed: it is following now
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 20)
        err = (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 130
    assert "Traceback" not in err
    assert "stopped waiting; task_follow_forever is still watched" in err
    shown = (await run("show", "task_follow_forever", "--json", "-c", c)).json()
    assert shown["state"] == "pending"  # Ctrl-C stopped the command, not the watching
