"""One streamed download of a result file: constant memory, the size cap checked against
`Content-Length` and again while reading, sha256 computed on the way, and redirects followed by
hand so that every hop is checked to be http(s) before it is requested.

Messages name what went wrong, never the URL: result URLs are often signed, and their query
may be a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import aiohttp

from watcher.config.sizes import format_size
from watcher.errors import MirrorError

CHUNK_BYTES: Final = 1024 * 1024  # read at most this much at a time: memory stays flat
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
    write: Callable[[bytes], Awaitable[None]],
    *,
    max_bytes: int,
    timeout_s: float,
    start: Callable[[str | None], None] | None = None,
) -> Fetched:
    """Download `url`, handing each chunk to `write`; the whole within `timeout_s`. `start`
    is told the content type once the answer is known good, before the first chunk.

    Raises MirrorError: permanent for a URL or redirect that is not http(s), too many
    redirects, a 4xx answer (but 408/425/429) and a file over `max_bytes`; otherwise (a 5xx,
    a network error, a timeout, a body cut short, an error of `write`) worth another try.
    """
    check_url(url)
    try:
        async with asyncio.timeout(timeout_s):
            return await _follow(session, url, write, max_bytes, start)
    except TimeoutError:
        raise MirrorError("the download timed out") from None
    except aiohttp.ClientError as exc:
        raise MirrorError(f"the download failed: {_describe(exc)}") from None


async def _follow(
    session: aiohttp.ClientSession,
    url: str,
    write: Callable[[bytes], Awaitable[None]],
    max_bytes: int,
    start: Callable[[str | None], None] | None,
) -> Fetched:
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
            return await _copy(resp, write, max_bytes, start)
    raise MirrorError(f"more than {MAX_REDIRECTS} redirects", permanent=True)


async def _copy(
    resp: aiohttp.ClientResponse,
    write: Callable[[bytes], Awaitable[None]],
    max_bytes: int,
    start: Callable[[str | None], None] | None,
) -> Fetched:
    too_large = f"the file is larger than mirror.max_file_bytes ({format_size(max_bytes)})"
    length = resp.content_length
    if length is not None and length > max_bytes:
        raise MirrorError(too_large, permanent=True)
    header = resp.headers.get("Content-Type")
    content_type = header.strip() if header else None
    if start is not None:
        start(content_type)
    digest = hashlib.sha256()
    size = 0
    batch: list[bytes] = []
    batched = 0
    # One batch is hashed (in a thread: hashlib lets go of the GIL) and written while the next
    # is read, so hashing costs little time on a machine with a spare core; at most two
    # batches are held, so memory stays flat.
    in_flight: asyncio.Future[Any] | None = None
    try:
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise MirrorError(too_large, permanent=True)
            batch.append(chunk)
            batched += len(chunk)
            if batched >= CHUNK_BYTES:
                if in_flight is not None:
                    await in_flight
                in_flight = _hash_and_write(digest, b"".join(batch), write)
                batch, batched = [], 0
        if in_flight is not None:
            await in_flight
            in_flight = None
        if batch:
            await _hash_and_write(digest, b"".join(batch), write)
    finally:
        if in_flight is not None:  # an error while the last batch was on its way
            in_flight.cancel()
            with contextlib.suppress(BaseException):
                await in_flight
    encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
    if length is not None and size != length and not encoded:
        raise MirrorError(f"the download ended after {size} of {length} bytes")
    return Fetched(digest.hexdigest(), size, content_type)


def _hash_and_write(
    digest: Any, data: bytes, write: Callable[[bytes], Awaitable[None]]
) -> asyncio.Future[Any]:
    return asyncio.gather(asyncio.to_thread(digest.update, data), write(data))


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
