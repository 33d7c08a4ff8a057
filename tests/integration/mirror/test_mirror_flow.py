"""The whole watcher with mirroring on, in one process: fake upstream -> scheduler -> store ->
mirror worker -> deliverer -> receiver. Result files come from a real loopback file server
and land in a real directory; the receiver verifies every webhook with `standardwebhooks` and
checks each mirrored file's sha256 itself."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.helpers.files import FileServer, sha256_of, start_file_server
from tests.helpers.receiver import Receiver
from tests.helpers.wait import until
from tests.integration.conftest import Upstream
from watcher.cli.render import outcome_lines
from watcher.upstream.sandbox import success

MiB = 1024 * 1024


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with start_file_server() as server:
        yield server


def endpoint(receiver: Receiver, secret: str) -> dict[str, Any]:
    return {"name": "app", "url": receiver.url("/hook"), "secret": secret}


def mirror_config(directory: Path, **extra: Any) -> dict[str, Any]:
    return {"mirror": {"target": f"file://{directory}", "timeout": "5s", **extra}}


def sha256_at(url: str) -> str:
    """What a receiver does with a file:// URL it was given: read the file and hash it."""
    path = Path(unquote(urlsplit(url).path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_success_waits_for_its_files_and_carries_them(
    start_daemon: Any,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    files: FileServer,
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    urls = (
        files.file(10, "a.png"),
        files.url("/missing"),
        files.file(2 * MiB + 3, "b.mp4", rate=8 * MiB),  # about a quarter of a second
        files.url("/redirect") + "?to=file:///etc/passwd",
    )
    upstream.state.script("t1", success(urls))
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)], extra=mirror_config(results)
    )
    await running.add("t1")

    held = await running.wait_task("t1", lambda t: t["state"] == "succeeded")
    assert held["events"] == []
    assert held["deliveries"] == []
    assert [f["key"] for f in held["mirror"]] == [
        "t1/0-a.png",
        "t1/1-missing",
        "t1/2-b.mp4",
        "t1/3-redirect",
    ]

    (hook,) = await receiver.wait_for(1)
    assert hook.verified
    data = hook.body["data"]
    assert data["result_urls"] == list(urls)
    assert [m["source_url"] for m in data["mirrored"]] == [urls[0], urls[2]]
    first, second = data["mirrored"]
    assert first == {
        "source_url": urls[0],
        "url": (results / "t1" / "0-a.png").as_uri(),
        "key": "t1/0-a.png",
        "sha256": sha256_of(10, "a.png"),
        "bytes": 10,
        "content_type": "image/png",
    }
    assert second["bytes"] == 2 * MiB + 3
    assert second["content_type"] == "video/mp4"
    for entry in data["mirrored"]:
        assert sha256_at(entry["url"]) == entry["sha256"]  # the receiver checks it itself
    assert data["mirror_error"] == {
        "source_url": urls[1],
        "message": "HTTP 404",
        "failed_urls": [urls[1], urls[3]],
    }

    task = await running.wait_task("t1", lambda t: t["deliveries"][0]["status"] == "succeeded")
    assert [f["status"] for f in task["mirror"]] == ["done", "failed", "done", "failed"]
    assert task["mirror"][3]["error"] == "a redirect to a URL that is not http(s); not fetched"
    assert files.hits["/missing"] == 1  # a 404 is not tried again
    lines = outcome_lines(task)
    assert any(line.startswith("mirrored") and "0-a.png" in line for line in lines)
    assert any("not mirrored: " + urls[1] in line for line in lines)
    assert sorted(p.name for p in results.iterdir()) == ["t1"]  # no temporaries left


async def test_public_base_url_names_the_files(
    start_daemon: Any,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    files: FileServer,
    tmp_path: Path,
) -> None:
    upstream.state.script("t:2", success((files.file(5, "x.webp"),)))
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)],
        extra=mirror_config(tmp_path / "r", public_base_url="https://files.example.com/r/"),
    )
    await running.add("t:2")
    (hook,) = await receiver.wait_for(1)
    [entry] = hook.body["data"]["mirrored"]
    assert entry["url"] == "https://files.example.com/r/t%3A2/0-x.webp"
    assert "mirror_error" not in hook.body["data"]


async def test_a_file_that_cannot_be_copied_in_time_never_holds_the_webhook_back(
    start_daemon: Any,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    files: FileServer,
    tmp_path: Path,
) -> None:
    slow = files.file(10 * MiB, "slow.mp4", rate=MiB)  # ten seconds
    upstream.state.script("t3", success((slow, files.file(1, "ok.png"))))
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)],
        extra=mirror_config(tmp_path / "r", timeout="700ms"),
    )
    await running.add("t3")
    (hook,) = await receiver.wait_for(1, timeout=5)
    data = hook.body["data"]
    assert [m["key"] for m in data["mirrored"]] == ["t3/1-ok.png"]
    assert data["mirror_error"] == {
        "source_url": slow,
        "message": "the download timed out",
        "failed_urls": [slow],
    }
    assert not (tmp_path / "r" / "t3" / "0-slow.mp4").exists()


async def test_a_restart_resumes_the_copies_and_sends_once(
    start_daemon: Any,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    files: FileServer,
    tmp_path: Path,
) -> None:
    done_first = files.file(100, "first.png")
    slow = files.file(4 * MiB, "slow.mp4", rate=4 * MiB)  # a second
    upstream.state.script("t4", success((done_first, slow)))
    config = {"endpoints": [endpoint(receiver, secret)], "extra": mirror_config(tmp_path / "r")}
    running = await start_daemon(**config)
    await running.add("t4")
    # The first copy is committed (renamed into place only when whole); it is recorded as
    # done together with the task's other copy, so the restart finds it in the directory.
    first_copy = tmp_path / "r" / "t4" / "0-first.png"
    await until(first_copy.exists, timeout=5)
    assert (await running.get("/v1/tasks/t4"))["mirror"][0]["status"] == "pending"
    assert await running.stop() == 0  # mid-copy of the slow one
    assert receiver.received == []

    running = await start_daemon(**config)
    (hook,) = await receiver.wait_for(1, timeout=5)
    assert [m["sha256"] for m in hook.body["data"]["mirrored"]] == [
        sha256_of(100, "first.png"),
        sha256_of(4 * MiB, "slow.mp4"),
    ]
    assert files.hits["/files/100/first.png"] == 1  # never fetched twice once complete
    task = await running.wait_task("t4", lambda t: t["deliveries"][0]["status"] == "succeeded")
    assert len(task["events"]) == 1
    assert len(receiver.received) == 1


async def test_a_target_that_refuses_writes_is_a_mirror_error_not_a_lost_webhook(
    start_daemon: Any,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    files: FileServer,
    tmp_path: Path,
) -> None:
    results = tmp_path / "r"
    upstream.state.script("t5", success((files.file(MiB, "x.png"),)))
    running = await start_daemon(
        endpoints=[endpoint(receiver, secret)], extra=mirror_config(results, timeout="1500ms")
    )
    # The directory is gone and a file took its place (tests may run as root, which no
    # permission stops): every write fails, as on a full disk.
    results.rmdir()
    results.write_bytes(b"")
    await running.add("t5")

    (hook,) = await receiver.wait_for(1, timeout=5)
    data = hook.body["data"]
    assert data["mirrored"] == []
    assert data["mirror_error"]["message"] == "cannot write the mirrored file: Not a directory"
    assert data["mirror_error"]["failed_urls"] == [data["result_urls"][0]]
    assert files.hits["/files/1048576/x.png"] >= 2  # retried within the timeout
    async with running.http.get(running.base + "/metrics") as resp:
        text = await resp.text()
    assert 'apixo_watcher_mirror_files_total{outcome="failed"} 1.0' in text
    assert running.daemon.mirror is not None  # still running
