"""One file copied from its result URL into the target: fetched and uploaded chunk by chunk,
made visible under its key only when whole, dropped on any failure."""

from __future__ import annotations

import aiohttp

from watcher.mirror.fetch import Fetched, fetch
from watcher.mirror.targets import Target


async def copy_file(
    session: aiohttp.ClientSession,
    target: Target,
    url: str,
    key: str,
    *,
    max_bytes: int,
    timeout_s: float,
) -> Fetched:
    """Copy `url` to `key` within `timeout_s` (the download; the commit is not cut short).

    Raises MirrorError (see `fetch`; an error of the target is worth another try); on any
    failure, cancellation included, nothing is left under `key` or as a temporary.
    """
    upload = target.upload(key)
    try:
        fetched = await fetch(session, url, upload, max_bytes=max_bytes, timeout_s=timeout_s)
        await upload.commit(fetched)
    except BaseException:
        await upload.abort()
        raise
    return fetched
