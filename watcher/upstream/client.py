"""The HTTP client that asks the upstream status API (its answers are classified in classify.py).

`UpstreamClient` is the only place that talks to the upstream: one pooled
aiohttp session, bearer auth, a total timeout per request, and it never raises for network or
HTTP problems (they become TRANSIENT results with a short detail that never holds the API key).
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from watcher import __version__
from watcher.config.settings import UpstreamConfig
from watcher.config.sizes import format_size
from watcher.upstream.classify import PollOutcome, PollResult, classify, shorten

log = structlog.get_logger(__name__)

# Task ids made only of these characters need no quoting in a URL query.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._~-]+")
_CACHE_MAX = 256


def status_url(base_url: str, model: str, task_id: str) -> URL:
    """The status URL of a task; model and task id are quoted, so neither can change the path."""
    base = URL(base_url.rstrip("/"))
    path = f"{base.raw_path.rstrip('/')}/statusTask/{quote(model, safe='')}"
    return base.with_path(path, encoded=True).with_query({"taskId": task_id})


class UpstreamClient:
    """Asks the upstream for a task's status over one pooled HTTP session.

    The session is created on first use (it needs a running event loop) unless one is given;
    a given session is not closed by `close()`.
    """

    def __init__(
        self, config: UpstreamConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self._config = config
        self._session = session
        self._owns_session = session is None
        self._retired: list[aiohttp.ClientSession] = []
        self._user_agent = f"apixo-watcher/{__version__}"
        self._url_prefixes: dict[tuple[str, str], URL] = {}
        self._headers_for: str | None = None
        self._headers_cache: dict[str, str] = {}
        self._timeout_cache = aiohttp.ClientTimeout(total=config.timeout_s)

    @property
    def config(self) -> UpstreamConfig:
        return self._config

    def update_config(self, config: UpstreamConfig) -> None:
        """Use a reloaded config from the next request on (key, base URL, timeout).

        The pooled session is kept; only a changed `max_concurrency` needs a new connector,
        and the old session is closed with the client (requests in flight on it finish).
        """
        old = self._config
        self._config = config
        if (
            self._owns_session
            and self._session is not None
            and old.max_concurrency != config.max_concurrency
        ):
            self._retired.append(self._session)
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=max(1, self._config.max_concurrency), keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    # Per-request work that only changes with the config is cached: at thousands of polls a
    # second, building URLs, headers and timeouts showed up in profiles.
    def _url(self, base_url: str, model: str, task_id: str) -> URL:
        if not _PLAIN_ID.fullmatch(task_id):
            return status_url(base_url, model, task_id)
        prefix = self._url_prefixes.get((base_url, model))
        if prefix is None:
            if len(self._url_prefixes) >= _CACHE_MAX:
                self._url_prefixes.clear()
            prefix = status_url(base_url, model, "").with_query(None)
            self._url_prefixes[(base_url, model)] = prefix
        # `status_url` would quote nothing in a plain id, so this is the same URL; setting the
        # query of a parsed URL is a fraction of the cost of parsing the whole URL again.
        return prefix.with_query("taskId=" + task_id)

    def _headers(self, key: str) -> dict[str, str]:
        if self._headers_for != key:
            self._headers_for = key
            self._headers_cache = {
                "Authorization": f"Bearer {key}",
                "Accept": "application/json",
                "User-Agent": self._user_agent,
            }
        return self._headers_cache

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        if self._timeout_cache.total != seconds:
            self._timeout_cache = aiohttp.ClientTimeout(total=seconds)
        return self._timeout_cache

    async def fetch_status(self, model: str, task_id: str) -> PollResult:
        """Ask for one task's status. Never raises for network or HTTP problems."""
        config = self._config
        key = config.api_key.reveal()
        secrets = (key,) if key else ()
        timeout = config.timeout_s
        started = time.monotonic()
        try:
            url = self._url(config.base_url, model, task_id)
            session = self._get_session()
            async with session.get(
                url,
                headers=self._headers(key),
                timeout=self._timeout(timeout),
                allow_redirects=False,
            ) as resp:
                body = await _read_capped(resp, config.max_response_bytes)
                duration = time.monotonic() - started
                retry_after = resp.headers.get("Retry-After")
                if body is not None:
                    # classify() scrubs its detail of the key, then cuts it.
                    return classify(
                        resp.status,
                        body,
                        retry_after,
                        now=time.time(),
                        secrets=secrets,
                        duration_s=duration,
                    )
                if 200 <= resp.status < 300:
                    # Maybe a success with a huge result: not read, and not a mere transient
                    # problem either (decide() fails the task after a few of these).
                    limit = format_size(config.max_response_bytes)
                    return PollResult(
                        PollOutcome.TOO_LARGE,
                        resp.status,
                        None,
                        None,
                        None,
                        f"HTTP {resp.status}: answer larger than upstream.max_response_bytes "
                        f"({limit})",
                        duration,
                    )
                # An error status says what it needs to; its huge body adds nothing.
                return classify(
                    resp.status,
                    b"",
                    retry_after,
                    now=time.time(),
                    secrets=secrets,
                    duration_s=duration,
                )
        except TimeoutError:
            detail = f"timeout after {timeout:g}s"
        except aiohttp.ClientConnectorError as exc:
            detail = _connect_detail(exc)
        except aiohttp.ServerDisconnectedError:
            detail = "server disconnected"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a base URL yarl cannot use; reported per poll rather than crashing.
            detail = f"request failed: {type(exc).__name__}: {exc}"
        # Scrubbed, then cut: e.g. an exception message that quotes the key.
        return PollResult(
            PollOutcome.TRANSIENT,
            None,
            None,
            None,
            None,
            shorten(detail, secrets),
            time.monotonic() - started,
        )

    async def close(self) -> None:
        """Close the session(s) this client created; idempotent."""
        sessions = list(self._retired)
        self._retired.clear()
        if self._owns_session and self._session is not None:
            sessions.append(self._session)
            self._session = None
        for session in sessions:
            await session.close()


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed `limit` bytes (as decompressed: a small
    gzip body can hold a huge answer, so Content-Length only decides for plain bodies)."""
    length = resp.content_length
    if resp.headers.get("Content-Encoding", "identity").lower() == "identity":
        if length is not None and length > limit:
            return None
        if length is not None:
            return await resp.read()  # one read for the usual short answer
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _connect_detail(exc: aiohttp.ClientConnectorError) -> str:
    os_error = exc.os_error
    if isinstance(os_error, ConnectionRefusedError):
        return f"connection refused ({exc.host}:{exc.port})"
    reason = os_error.strerror or type(os_error).__name__
    return f"connection error ({exc.host}:{exc.port}): {reason}"
