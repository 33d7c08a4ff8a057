"""The pure parts of mirroring: where a file goes, what the webhook says about it, and whether
a failed download is tried again. No I/O, no clock reads."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

from watcher.models import MirrorFile, MirrorStatus

# Backoff between tries of one file: 1 s, 2 s, 4 s ... capped, all within `mirror.timeout`.
FIRST_RETRY_S: Final = 1.0
MAX_RETRY_S: Final = 60.0
MAX_NAME_LENGTH: Final = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(source_url: str) -> str:
    """A safe file name taken from the URL's last path segment (`image.png`), or `file`.

    Letters, digits, '.', '_' and '-' only, never starting with '.', so a key can neither
    climb out of its directory nor collide with the target's temporary files (`.tmp-...`).
    """
    try:
        path = urlsplit(source_url).path
    except ValueError:
        path = ""
    name = _UNSAFE.sub("_", unquote(path.rsplit("/", 1)[-1])).lstrip("._")
    if len(name) > MAX_NAME_LENGTH:  # keep the extension: it tells people what the file is
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot else ""
        name = (stem if dot else name)[: MAX_NAME_LENGTH - len(ext) - 1] + (dot and "." + ext)
    return name or "file"


def file_key(task_id: str, position: int, source_url: str) -> str:
    """The key of a task's result file in the target: `TASK_ID/POSITION-NAME`.

    Task ids are letters, digits, '_', '.', ':' and '-' starting with a letter or digit (the
    intake checks), so they are safe as a directory name; the position keeps two results with
    the same name apart.
    """
    return f"{task_id}/{position}-{file_name(source_url)}"


def plan_files(task_id: str, result_urls: Sequence[str], *, now: float) -> tuple[MirrorFile, ...]:
    """The files to mirror for a task that succeeded with `result_urls`, all pending."""
    return tuple(
        MirrorFile(
            task_id=task_id,
            position=position,
            source_url=url,
            key=file_key(task_id, position, url),
            status=MirrorStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        for position, url in enumerate(result_urls)
    )


def public_url(key: str, *, public_base_url: str | None, location: str) -> str:
    """The URL put in the webhook for `key`: `public_base_url/KEY` when one is configured,
    else the target's own `location` of the key (`file://...`, `s3://...`)."""
    if public_base_url is not None:
        return f"{public_base_url}/{quote(key)}"
    return location


def mirrored(files: Sequence[MirrorFile], urls: Sequence[str]) -> list[dict[str, Any]]:
    """The webhook's `data.mirrored`: the DONE files in result_urls order; `urls` holds each
    file's public URL (see `public_url`), by position in `files`."""
    return [
        {
            "source_url": f.source_url,
            "url": url,
            "key": f.key,
            "sha256": f.sha256,
            "bytes": f.bytes,
            "content_type": f.content_type,
        }
        for f, url in sorted(zip(files, urls, strict=True), key=lambda p: p[0].position)
        if f.status is MirrorStatus.DONE
    ]


def mirror_error(files: Sequence[MirrorFile]) -> dict[str, Any] | None:
    """The webhook's `data.mirror_error`, or None when no file failed: the first failed file
    (in result_urls order) with its message, and every URL that failed."""
    failed = sorted((f for f in files if f.status is MirrorStatus.FAILED), key=lambda f: f.position)
    if not failed:
        return None
    return {
        "source_url": failed[0].source_url,
        "message": failed[0].error or "could not be mirrored",
        "failed_urls": [f.source_url for f in failed],
    }


def finished(files: Sequence[MirrorFile]) -> bool:
    """Whether every file is done or given up: the held webhook may go."""
    return all(f.status is not MirrorStatus.PENDING for f in files)


def retry_delay(
    attempts: int, *, elapsed_s: float, timeout_s: float, permanent: bool
) -> float | None:
    """Seconds to wait before trying a file again after its `attempts`-th failed try, or None
    to give up: the failure is permanent, or the next try would start after the file's
    `timeout_s` (counted from its first try, `elapsed_s` ago) has run out."""
    if permanent:
        return None
    delay: float = min(FIRST_RETRY_S * 2.0 ** max(0, attempts - 1), MAX_RETRY_S)
    if elapsed_s + delay >= timeout_s:
        return None
    return delay
