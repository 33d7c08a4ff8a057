"""The upstream status API: classifying its answers (pure) and the HTTP client that asks it.

`classify` turns one HTTP answer into a `PollResult` following upstream/FACTS.md; it reads no
clock and does no I/O. `UpstreamClient` is the only place that talks to the upstream: one pooled
aiohttp session, bearer auth, a total timeout per request, and it never raises for network or
HTTP problems (they become TRANSIENT results with a short detail that never holds the API key).
"""

from __future__ import annotations

import enum
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from watcher import __version__
from watcher.config.settings import UpstreamConfig

log = structlog.get_logger(__name__)

# A status answer is a small JSON envelope; anything far bigger is not one.
MAX_BODY_BYTES = 1 << 20
_DETAIL_MAX = 200
_REDACTED = "**********"
# Task ids made only of these characters need no quoting in a URL query.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._~-]+")
_CACHE_MAX = 256


class PollOutcome(enum.StrEnum):
    """What one status request amounted to, as far as polling is concerned."""

    OK = "ok"  # 2xx with an envelope holding a `data` object
    NOT_FOUND = "not_found"  # 404
    BAD_REQUEST = "bad_request"  # 400: permanent for this task
    CREDENTIALS = "credentials"  # 401/402/403: a problem of the account, for every task
    RATE_LIMITED = "rate_limited"  # 429
    TRANSIENT = "transient"  # 5xx, other codes, timeouts, connection errors, malformed answers


@dataclass(frozen=True, slots=True)
class PollResult:
    """One status request's answer, classified."""

    outcome: PollOutcome
    http_status: int | None  # None when no HTTP answer arrived (timeout, connection error)
    code: int | None  # the envelope's `code`, when there was one
    data: Mapping[str, Any] | None  # the envelope's `data` object verbatim (OK only)
    retry_after_s: float | None  # from a Retry-After header, in seconds from now
    detail: str  # short human text, e.g. "HTTP 503: model temporarily unavailable"
    duration_s: float = 0.0


def _status_outcome(status: int) -> PollOutcome:
    if 200 <= status < 300:
        return PollOutcome.OK
    if status == 400:
        return PollOutcome.BAD_REQUEST
    if status in (401, 402, 403):
        return PollOutcome.CREDENTIALS
    if status == 404:
        return PollOutcome.NOT_FOUND
    if status == 429:
        return PollOutcome.RATE_LIMITED
    return PollOutcome.TRANSIENT


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None.

    A date in the past means "now" (0.0); an unparsable or negative value is ignored (None).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 9110 dates are GMT anyway
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


def classify(http_status: int, body: bytes, retry_after: str | None, *, now: float) -> PollResult:
    """Classify one HTTP answer of the status endpoint.

    The envelope's `code` counts like an HTTP status (FACTS.md): on a 2xx answer a body code
    other than 200 decides the outcome; on a non-2xx answer the body code decides only when it
    is itself an error code (400-599), because it is the upstream application's own, more
    specific word (e.g. HTTP 400 with code 402 is an account problem, not a bad task);
    otherwise the HTTP status decides. A 2xx answer that is not a JSON envelope with a `data`
    object is TRANSIENT (an upstream defect; asking again may work). `now` (Unix seconds) is
    only used to turn a Retry-After date into seconds.
    """
    envelope: Any = None
    try:
        envelope = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        envelope = None
    body_code: int | None = None
    message: str | None = None
    if isinstance(envelope, dict):
        raw_code = envelope.get("code")
        if isinstance(raw_code, int) and not isinstance(raw_code, bool):
            body_code = raw_code
        raw_message = envelope.get("message")
        if isinstance(raw_message, str) and raw_message.strip():
            message = raw_message

    http_ok = 200 <= http_status < 300
    effective = http_status
    if body_code is not None and body_code != 200 and (http_ok or 400 <= body_code < 600):
        effective = body_code
    outcome = _status_outcome(effective)
    retry_after_s = parse_retry_after(retry_after, now=now)

    head = f"HTTP {http_status}"
    if body_code is not None and body_code != http_status:
        head += f", code {body_code}"
    detail = f"{head}: {message}" if message else head

    data: Mapping[str, Any] | None = None
    if outcome is PollOutcome.OK:
        problem = None
        if not isinstance(envelope, dict):
            problem = "empty body" if not body else "body is not a JSON object"
        elif not isinstance(envelope.get("data"), dict):
            problem = "no data object"
        if problem is not None:
            outcome, detail = PollOutcome.TRANSIENT, f"{head}: malformed answer ({problem})"
        else:
            data = envelope["data"]
    return PollResult(outcome, http_status, body_code, data, retry_after_s, _short(detail))


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
        self._url_prefixes: dict[tuple[str, str], str] = {}
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
            prefix = str(status_url(base_url, model, ""))
            self._url_prefixes[(base_url, model)] = prefix
        # `status_url` would quote nothing in a plain id, so the prefix plus the id is exact.
        return URL(prefix + task_id, encoded=True)

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
                length = resp.content_length
                if length is not None and length <= MAX_BODY_BYTES:
                    body: bytes | None = await resp.read()
                else:
                    body = await _read_capped(resp)
                if body is None:
                    result = PollResult(
                        PollOutcome.TRANSIENT,
                        resp.status,
                        None,
                        None,
                        None,
                        f"HTTP {resp.status}: answer larger than {MAX_BODY_BYTES} bytes",
                    )
                else:
                    result = classify(
                        resp.status, body, resp.headers.get("Retry-After"), now=time.time()
                    )
        except TimeoutError:
            result = _failure(f"timeout after {timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            result = _failure(_connect_detail(exc))
        except aiohttp.ServerDisconnectedError:
            result = _failure("server disconnected")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a base URL yarl cannot use; reported per poll rather than crashing.
            result = _failure(f"request failed: {type(exc).__name__}: {exc}")
        duration = time.monotonic() - started
        detail = _short(result.detail.replace(key, _REDACTED)) if key else result.detail
        return replace(result, detail=detail, duration_s=duration)

    async def close(self) -> None:
        """Close the session(s) this client created; idempotent."""
        sessions = list(self._retired)
        self._retired.clear()
        if self._owns_session and self._session is not None:
            sessions.append(self._session)
            self._session = None
        for session in sessions:
            await session.close()


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _failure(detail: str) -> PollResult:
    return PollResult(PollOutcome.TRANSIENT, None, None, None, None, detail)


def _connect_detail(exc: aiohttp.ClientConnectorError) -> str:
    os_error = exc.os_error
    if isinstance(os_error, ConnectionRefusedError):
        return f"connection refused ({exc.host}:{exc.port})"
    reason = os_error.strerror or type(os_error).__name__
    return f"connection error ({exc.host}:{exc.port}): {reason}"
