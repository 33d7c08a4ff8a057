"""The tasks file read in a real child process: same answers as in-process, failures contained."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import pytest

from tests.helpers.yamlbomb import alias_bomb
from watcher.tasks.reader import (
    BATCH,
    ChildProcessReader,
    Done,
    Entries,
    InlineReader,
    Message,
    Problems,
    ReaderFailed,
    ReadRequest,
    Rejected,
    TasksReader,
)


def request(text: str, known: bytes = b"") -> ReadRequest:
    return ReadRequest(
        data=text.encode(),
        source="tasks.yaml",
        endpoint_names=("app",),
        allowed_callback_hosts=("hooks.example.com",),
        known=known,
    )


async def collect(reader: TasksReader, req: ReadRequest) -> list[Message]:
    async with contextlib.aclosing(reader.read(req)) as messages:
        return [m async for m in messages]


MIXED = (
    "tasks:\n"
    "  - {task_id: a, model: m, metadata: {n: 1, s: 'é', f: 0.5, l: [true, null]}}\n"
    "  - {task_id: b}\n"
    "  - {task_id: c, model: m, endpoints: [app], deadline: 90s,"
    " callback_url: 'https://hooks.example.com/x'}\n"
)


async def test_the_child_answers_what_the_in_process_reader_answers() -> None:
    child = await collect(ChildProcessReader(), request(MIXED))
    inline = await collect(InlineReader(), request(MIXED))
    assert child == inline
    assert [type(m) for m in child] == [Entries, Problems, Entries, Done]


async def test_known_entries_come_back_as_unchanged() -> None:
    (first, _, second, done) = await collect(ChildProcessReader(), request(MIXED))
    assert isinstance(first, Entries)
    assert isinstance(second, Entries)
    assert isinstance(done, Done)
    known = first.fingerprint(0) + second.fingerprint(0)
    messages = await collect(ChildProcessReader(), request(MIXED, known=known))
    assert [type(m) for m in messages] == [Problems, Done]
    assert isinstance(messages[-1], Done)
    assert messages[-1].unchanged == known
    assert messages[-1].entries == 3


async def test_big_batches_of_big_entries_pass_the_pipe() -> None:
    meta = "x" * 4000
    entries = "".join(
        f"  - {{task_id: t{i}, model: m, metadata: {{blob: {meta}}}}}\n" for i in range(BATCH + 5)
    )
    messages = await collect(ChildProcessReader(), request("tasks:\n" + entries))
    assert [len(m) for m in messages if isinstance(m, Entries)] == [BATCH, 5]


async def test_a_document_that_does_not_parse_is_rejected_whole() -> None:
    messages = await collect(ChildProcessReader(), request("tasks:\n  - {task_id: a\n"))
    assert len(messages) == 1
    assert isinstance(messages[0], Rejected)
    assert messages[0].problems[0].line == 3


async def test_bytes_that_are_not_utf8_are_rejected_with_their_line() -> None:
    bad = dataclasses.replace(request(""), data=b"tasks:\n  - {task_id: \xff}\n")
    (message,) = await collect(ChildProcessReader(), bad)
    assert isinstance(message, Rejected)
    assert message.problems[0].line == 2


async def test_an_alias_bomb_costs_the_child_nothing() -> None:
    text = "tasks:\n  - task_id: t\n    model: m\n    metadata:\n" + alias_bomb(8, "      ")
    messages = await collect(ChildProcessReader(), request(text))
    assert [type(m) for m in messages] == [Problems, Done]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("import sys; sys.stdin.buffer.read(); sys.exit('parser exploded')", "parser exploded"),
        ("import sys; sys.stdin.buffer.read(); print('not json')", "garbage"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "exit status -9"),
        (
            "import sys, marshal; sys.stdin.buffer.read();"
            " d = marshal.dumps(('entries', *([],) * 8, b''));"
            " sys.stdout.buffer.write(len(d).to_bytes(4, 'big') + d)",
            "exit status 0",
        ),
        (
            "import sys, marshal; sys.stdin.buffer.read();"
            " d = marshal.dumps(('entries', ['t'], ['m'], *([],) * 6, b''));"
            " sys.stdout.buffer.write(len(d).to_bytes(4, 'big') + d)",
            "garbage",
        ),
    ],
    ids=["exits", "garbage", "killed", "no-done", "ragged-columns"],
)
async def test_a_failing_child_is_a_reader_failure(script: str, reason: str) -> None:
    reader = ChildProcessReader([sys.executable, "-c", script])
    with pytest.raises(ReaderFailed) as caught:
        await collect(reader, request(MIXED))
    assert reason in caught.value.message


def reader_children() -> list[int]:
    """Our child processes (zombies too) that run the tasks file reader."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and (b"watcher.tasks.reader" in cmdline or " Z " in stat):
            found.append(int(entry.name))
    return found


async def test_stopping_early_kills_and_reaps_the_child() -> None:
    text = "tasks:\n" + "".join(f"  - {{task_id: t{i}, model: m}}\n" for i in range(3 * BATCH))
    reader = ChildProcessReader()
    async with contextlib.aclosing(reader.read(request(text))) as messages:
        async for _ in messages:
            assert reader_children()  # running now
            break  # e.g. the store failed while registering the first batch
    assert reader_children() == []
