"""The S3 target against a real S3-compatible server (SeaweedFS, started by the tests), with
result files from a real loopback file server: single PUTs and multipart uploads, a copy
completed only when whole, leftovers aborted at start, refused uploads, retention, and the
whole daemon sending webhooks whose files the receiver downloads and checks itself."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers.files import FileServer, sha256_of, start_file_server
from tests.helpers.receiver import Receiver
from tests.helpers.seaweed import Seaweed, seaweed  # noqa: F401 - the fixture
from tests.integration.conftest import Upstream
from watcher.config.settings import MirrorConfig, S3Config, Secret
from watcher.errors import MirrorError
from watcher.mirror.copy import copy_file
from watcher.mirror.s3 import S3Target
from watcher.upstream.sandbox import success

MiB = 1024 * 1024


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    async with start_file_server() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def config(seaweed: Seaweed, prefix: str, *, secret: str | None = None) -> MirrorConfig:  # noqa: F811
    return MirrorConfig(
        target=f"s3://{seaweed.bucket}/{prefix}",
        bucket=seaweed.bucket,
        prefix=prefix,
        s3=S3Config(
            endpoint_url=seaweed.endpoint_url,
            region="us-east-1",
            access_key_id=Secret(seaweed.access_key),
            secret_access_key=Secret(secret or seaweed.secret_key),
        ),
    )


@pytest.fixture
async def target(seaweed: Seaweed) -> AsyncIterator[S3Target]:  # noqa: F811
    t = S3Target(config(seaweed, "t-" + secrets.token_hex(4)), part_bytes=5 * MiB)
    await t.prepare()
    try:
        yield t
    finally:
        await t.close()


async def download(target: S3Target, key: str) -> tuple[str, int, str]:
    """What a receiver does with an s3:// location: fetch the object and hash it."""
    client = await target.client()
    obj = await client.get_object(Bucket=target.bucket, Key=target.object_key(key))
    digest, size = hashlib.sha256(), 0
    async with obj["Body"] as body:
        while chunk := await body.read(MiB):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, obj["ContentType"]


async def open_uploads(target: S3Target) -> list[str]:
    client = await target.client()
    page = await client.list_multipart_uploads(Bucket=target.bucket, Prefix=target.prefix + "/")
    return [u["Key"] for u in page.get("Uploads", [])]


@pytest.mark.parametrize(
    ("size", "name"), [(0, "empty.bin"), (1000, "small.png"), (17 * MiB + 5, "big.mp4")]
)
async def test_files_are_uploaded_whole(
    files: FileServer, session: aiohttp.ClientSession, target: S3Target, size: int, name: str
) -> None:
    key = f"t1/0-{name}"
    fetched = await copy_file(
        session, target, files.file(size, name), key, max_bytes=1 << 40, timeout_s=60
    )
    assert fetched.sha256 == sha256_of(size, name)
    sha256, stored, content_type = await download(target, key)
    assert (sha256, stored) == (fetched.sha256, size)
    assert content_type == fetched.content_type
    assert target.location(key) == f"s3://{target.bucket}/{target.prefix}/{key}"
    found = await target.stat(key)
    if size >= target.part_bytes:
        assert found is None  # multipart: no sha256 in its metadata, so copied again if asked
    else:
        assert found == fetched
    assert await open_uploads(target) == []


async def test_a_multipart_upload_cut_short_leaves_no_object_and_no_upload(
    files: FileServer, session: aiohttp.ClientSession, target: S3Target
) -> None:
    url = files.file(16 * MiB, "cut.mp4", short=12 * MiB)
    with pytest.raises(MirrorError):
        await copy_file(session, target, url, "t/0-cut.mp4", max_bytes=1 << 40, timeout_s=60)
    assert await target.stat("t/0-cut.mp4") is None
    client = await target.client()
    listed = await client.list_objects_v2(Bucket=target.bucket, Prefix=target.prefix + "/")
    assert listed.get("Contents", []) == []
    assert await open_uploads(target) == []


async def test_prepare_aborts_uploads_a_crash_left(target: S3Target) -> None:
    client = await target.client()
    await client.create_multipart_upload(Bucket=target.bucket, Key=target.object_key("t/0-x"))
    assert len(await open_uploads(target)) == 1
    assert await target.prepare() == 1
    assert await open_uploads(target) == []


async def test_with_other_instances_only_stale_uploads_are_aborted(target: S3Target) -> None:
    client = await target.client()
    await client.create_multipart_upload(Bucket=target.bucket, Key=target.object_key("t/0-x"))
    # Started just now: another instance's upload in progress, kept.
    assert await target.prepare(stale_before=time.time() - 600) == 0
    assert len(await open_uploads(target)) == 1
    assert await target.prepare(stale_before=time.time() + 60) == 1
    assert await open_uploads(target) == []


async def test_a_refused_upload_is_an_error_that_names_no_secret(
    seaweed: Seaweed,  # noqa: F811
    files: FileServer,
    session: aiohttp.ClientSession,
) -> None:
    wrong = "wrong-secret-" + secrets.token_hex(8)
    target = S3Target(config(seaweed, "refused", secret=wrong))
    try:
        with pytest.raises(MirrorError) as at_start:
            await target.prepare()
        with pytest.raises(MirrorError) as uploading:
            await copy_file(
                session, target, files.file(10, "a.png"), "t/0-a.png", max_bytes=100, timeout_s=10
            )
    finally:
        await target.close()
    assert at_start.value.message.startswith("cannot use the bucket mirror-test: ")
    assert uploading.value.message.startswith("the S3 upload failed: ")
    assert not uploading.value.permanent
    for message in (at_start.value.message, uploading.value.message):
        assert wrong not in message
        assert seaweed.access_key not in message


async def test_retention_deletes_old_objects(
    files: FileServer, session: aiohttp.ClientSession, target: S3Target
) -> None:
    for key in ("a/0-x", "b/0-y"):
        await copy_file(session, target, files.file(3, "x"), key, max_bytes=10, timeout_s=10)
    assert await target.delete_older_than(0) == []
    assert sorted(await target.delete_older_than(4e9)) == ["a/0-x", "b/0-y"]
    assert await target.stat("a/0-x") is None


async def test_the_daemon_mirrors_to_s3_and_the_receiver_checks_the_files(
    start_daemon: Any,
    upstream: Upstream,
    receiver: Receiver,
    secret: str,
    files: FileServer,
    seaweed: Seaweed,  # noqa: F811
    tmp_path: Path,
) -> None:
    prefix = "daemon-" + secrets.token_hex(4)
    (tmp_path / "s3-secret").write_text(seaweed.secret_key + "\n")
    urls = (files.file(2000, "a.png"), files.file(6 * MiB, "b.mp4"))
    upstream.state.script("t1", success(urls))
    mirror = {
        "target": f"s3://{seaweed.bucket}/{prefix}/",
        "s3": {
            "endpoint_url": seaweed.endpoint_url,
            "region": "us-east-1",
            "access_key_id": seaweed.access_key,
            "secret_access_key_file": str(tmp_path / "s3-secret"),
        },
        "timeout": "20s",
    }
    running = await start_daemon(
        endpoints=[{"name": "app", "url": receiver.url("/hook"), "secret": secret}],
        extra={"mirror": mirror},
    )
    await running.add("t1")
    (hook,) = await receiver.wait_for(1, timeout=15)
    assert hook.verified
    mirrored = hook.body["data"]["mirrored"]
    assert [m["url"] for m in mirrored] == [
        f"s3://{seaweed.bucket}/{prefix}/t1/0-a.png",
        f"s3://{seaweed.bucket}/{prefix}/t1/1-b.mp4",
    ]
    check = S3Target(config(seaweed, prefix))
    try:
        for entry in mirrored:
            sha256, size, content_type = await download(check, entry["key"])
            assert (sha256, size, content_type) == (
                entry["sha256"],
                entry["bytes"],
                entry["content_type"],
            )
    finally:
        await check.close()
    task = await running.get("/v1/tasks/t1")
    assert seaweed.secret_key not in str(task)
    config_text = running.config_path.read_text()
    assert seaweed.secret_key not in config_text  # given through a file
