"""The pure parts of mirroring: keys, the webhook's `mirrored` / `mirror_error`, retries."""

from __future__ import annotations

import dataclasses

import pytest

from watcher.mirror.plan import (
    MAX_NAME_LENGTH,
    file_key,
    file_name,
    finished,
    mirror_error,
    mirrored,
    plan_files,
    public_url,
    retry_delay,
)
from watcher.models import MirrorFile, MirrorStatus

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://cdn.example/r/abc/image.png?sig=x", "image.png"),
        ("https://cdn.example/r/My%20Video%20(1).mp4", "My_Video_1_.mp4"),
        ("https://cdn.example/", "file"),
        ("https://cdn.example/a/..", "file"),
        ("https://cdn.example/a/.hidden", "hidden"),
        ("https://cdn.example/a/..%2F..%2Fetc%2Fpasswd", "etc_passwd"),
        ("https://cdn.example/a/%E2%9C%93.png", "png"),
        ("not a url at all", "not_a_url_at_all"),
    ],
)
def test_file_names_are_safe(url: str, name: str) -> None:
    assert file_name(url) == name


def test_a_long_name_keeps_its_extension() -> None:
    name = file_name("https://cdn.example/" + "x" * 300 + ".webp")
    assert len(name) == MAX_NAME_LENGTH
    assert name.endswith(".webp")


def test_keys_are_per_task_and_position() -> None:
    assert file_key("task-1", 0, "https://c.example/a.png") == "task-1/0-a.png"
    urls = ["https://c.example/x/a.png", "https://c.example/y/a.png"]
    files = plan_files("t:1", urls, now=T0)
    assert [f.key for f in files] == ["t:1/0-a.png", "t:1/1-a.png"]
    assert all(f.status is MirrorStatus.PENDING and f.created_at == T0 for f in files)
    assert [f.source_url for f in files] == urls


def test_public_urls() -> None:
    where = "s3://bucket/p/t/0-a.png"
    assert public_url("t/0-a.png", public_base_url=None, location=where) == where
    assert (
        public_url("t:1/0-a b.png", public_base_url="https://f.example/r", location=where)
        == "https://f.example/r/t%3A1/0-a%20b.png"
    )


def _files() -> list[MirrorFile]:
    files = list(plan_files("t", ["https://c/a.png", "https://c/b.png", "https://c/c.png"], now=T0))
    files[2] = dataclasses.replace(
        files[2], status=MirrorStatus.DONE, sha256="f" * 64, bytes=3, content_type="image/png"
    )
    files[1] = dataclasses.replace(files[1], status=MirrorStatus.FAILED, error="HTTP 404")
    files[0] = dataclasses.replace(files[0], status=MirrorStatus.FAILED, error="timed out")
    return files


def test_mirrored_lists_the_done_files_in_result_order() -> None:
    files = _files()
    files[0] = dataclasses.replace(files[0], status=MirrorStatus.DONE, sha256="e" * 64, bytes=1)
    urls = ["u0", "u1", "u2"]
    assert mirrored(list(reversed(files)), list(reversed(urls))) == [
        {
            "source_url": "https://c/a.png",
            "url": "u0",
            "key": "t/0-a.png",
            "sha256": "e" * 64,
            "bytes": 1,
            "content_type": None,
        },
        {
            "source_url": "https://c/c.png",
            "url": "u2",
            "key": "t/2-c.png",
            "sha256": "f" * 64,
            "bytes": 3,
            "content_type": "image/png",
        },
    ]


def test_mirror_error_names_the_first_failure_and_every_failed_url() -> None:
    assert mirror_error(list(reversed(_files()))) == {
        "source_url": "https://c/a.png",
        "message": "timed out",
        "failed_urls": ["https://c/a.png", "https://c/b.png"],
    }
    done = [dataclasses.replace(f, status=MirrorStatus.DONE) for f in _files()]
    assert mirror_error(done) is None


def test_finished_when_nothing_is_pending() -> None:
    files = _files()
    assert finished(files)
    assert finished([])
    assert not finished([*files, plan_files("t", ["https://c/d"], now=T0)[0]])


@pytest.mark.parametrize(
    ("attempts", "elapsed", "permanent", "delay"),
    [
        (1, 0.0, False, 1.0),
        (2, 1.0, False, 2.0),
        (3, 3.0, False, 4.0),
        (10, 0.0, False, 60.0),  # capped
        (1, 0.0, True, None),  # a 404 is not tried again
        (3, 97.0, False, None),  # the next try would start after the timeout
        (3, 95.0, False, 4.0),
    ],
)
def test_retry_delay(attempts: int, elapsed: float, permanent: bool, delay: float | None) -> None:
    assert retry_delay(attempts, elapsed_s=elapsed, timeout_s=100.0, permanent=permanent) == delay
