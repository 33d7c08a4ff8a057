"""One streamed download of a result file: constant memory, the size cap checked against
`Content-Length` and again while reading, sha256 computed on the way, and redirects followed by
hand so that every hop is checked to be http(s) before it is requested.

Messages name what went wrong, never the URL: result URLs are often signed, and their query
may be a credential.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit

import aiohttp

from watcher.config.sizes import format_size
from watcher.errors import MirrorError
from watcher.mirror.handoff import Sink, open_lane

BATCH_BYTES: Final = 1024 * 1024  # handed on at a time (memory: a few batches per file)
MAX_REDIRECTS: Final = 10
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# 4xx answers that say "later" rather than "never".
_TRANSIENT_4XX: Final = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Fetched:
    """What was copied: the sha256 (hex) and length of the bytes, and their content type."""

    sha256: str
    bytes: int
    content_type: str | None


def check_url(url: str, *, redirect: bool = False) -> None:
    """MirrorError (permanent) unless `url` is an http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        what = "a redirect to" if redirect else "the result URL is"
        raise MirrorError(f"{what} a URL that is not http(s); not fetched", permanent=True)


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    sink: Sink,
    *,
    max_bytes: int,
    timeout_s: float,
) -> Fetched:
    """Download `url` into `sink`; the whole within `timeout_s`.

    Raises MirrorError: permanent for a URL or redirect that is not http(s), too many
    redirects, a 4xx answer (but 408/425/429) and a file over `max_bytes`; otherwise (a 5xx,
    a network error, a timeout, a body cut short, an error of the sink) worth another try.
    """
    check_url(url)
    try:
        async with asyncio.timeout(timeout_s):
            return await _follow(session, url, sink, max_bytes)
    except TimeoutError:
        raise MirrorError("the download timed out") from None
    except aiohttp.ClientError as exc:
        raise MirrorError(f"the download failed: {_describe(exc)}") from None


async def _follow(session: aiohttp.ClientSession, url: str, sink: Sink, max_bytes: int) -> Fetched:
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        # identity: the file is copied as it is, and Content-Length is its length.
        headers = {"Accept-Encoding": "identity"}
        async with session.get(current, allow_redirects=False, headers=headers) as resp:
            if resp.status in _REDIRECTS:
                location = resp.headers.get("Location")
                if not location:
                    raise MirrorError(f"HTTP {resp.status} without a Location", permanent=True)
                current = urljoin(str(resp.url), location)
                check_url(current, redirect=True)
                continue
            if not 200 <= resp.status < 300:
                permanent = 400 <= resp.status < 500 and resp.status not in _TRANSIENT_4XX
                raise MirrorError(f"HTTP {resp.status}", permanent=permanent)
            return await _copy(resp, sink, max_bytes)
    raise MirrorError(f"more than {MAX_REDIRECTS} redirects", permanent=True)


async def _copy(resp: aiohttp.ClientResponse, sink: Sink, max_bytes: int) -> Fetched:
    too_large = f"the file is larger than mirror.max_file_bytes ({format_size(max_bytes)})"
    length = resp.content_length
    if length is not None and length > max_bytes:
        raise MirrorError(too_large, permanent=True)
    header = resp.headers.get("Content-Type")
    content_type = header.strip() if header else None
    sink.start(content_type)
    digest = hashlib.sha256()
    size = 0
    batch: list[bytes] = []
    batched = 0
    # The pieces are taken as aiohttp received them (`iter_chunks`: no copy to join them) and
    # handed on in batches, hashed and stored while the event loop reads on (see `handoff`).
    lane = open_lane(digest, sink)
    try:
        async for piece, _ in resp.content.iter_chunks():
            if not piece:  # the end of an HTTP chunk
                continue
            size += len(piece)
            if size > max_bytes:
                raise MirrorError(too_large, permanent=True)
            batch.append(piece)
            batched += len(piece)
            if batched >= BATCH_BYTES:
                await lane.put(batch)
                batch, batched = [], 0
        if batch:
            await lane.put(batch)
        await lane.finish()
    finally:
        await lane.close()  # after an error: nothing more is written
    encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
    if length is not None and size != length and not encoded:
        raise MirrorError(f"the download ended after {size} of {length} bytes")
    return Fetched(digest.hexdigest(), size, content_type)


def _describe(exc: aiohttp.ClientError) -> str:
    # Connection errors name the host and port, never the path or query of the URL.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or 'error'})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the body was cut short"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the URL is not valid"
    return type(exc).__name__
