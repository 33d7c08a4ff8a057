"""The HTTP side of one webhook attempt: its target, its headers, one POST and what came back.

Every failure to get an answer becomes a `retry.HttpResult` error, described without the URL,
which may carry a token. Answers are read (and discarded) up to `MAX_RESPONSE_BYTES`, so a
short one frees its connection for reuse and a huge one costs nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import aiohttp
from aiohttp.payload import TOO_LARGE_BYTES_BODY, BytesPayload

from watcher.delivery import retry, signing
from watcher.errors import DeliveryError

if TYPE_CHECKING:
    from watcher.config.settings import EndpointConfig, Secret

MAX_RESPONSE_BYTES: Final = 64 * 1024  # read (and discard) at most this much of an answer
CALLBACK_TIMEOUT_S: Final = 10.0  # ad-hoc callback URLs have no endpoint config of their own
# Headers the watcher (or HTTP framing) sets; an endpoint's static headers cannot override them.
_OWN_HEADERS: Final = frozenset(
    {
        "content-type",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-length",
        "transfer-encoding",
        "host",
    }
)


@dataclass(frozen=True)
class Target:
    """Where and how one attempt is sent, resolved from the config at attempt time."""

    url: str
    secrets: tuple[str, ...] = field(repr=False)
    timeout_s: float
    headers: Mapping[str, str]  # the endpoint's static headers, without any of _OWN_HEADERS


def endpoint_target(endpoint: EndpointConfig) -> Target | str:
    """The target of a configured endpoint, or why it cannot be sent to."""
    if not endpoint.secrets:
        return f"endpoint '{endpoint.name}' has no secret"
    return Target(
        url=endpoint.url,
        secrets=tuple(secret.reveal() for secret in endpoint.secrets),
        timeout_s=endpoint.timeout_s,
        headers={
            name: value
            for name, value in endpoint.headers.items()
            if name.lower() not in _OWN_HEADERS
        },
    )


def callback_target(url: str | None, secret: Secret | None) -> Target | str:
    """The target of a task's ad-hoc callback URL, or why it cannot be sent to."""
    if not url:
        return "callback delivery has no url"
    if secret is None:
        return "delivery.callback_secret is not configured"
    return Target(url=url, secrets=(secret.reveal(),), timeout_s=CALLBACK_TIMEOUT_S, headers={})


def request_headers(
    webhook_id: str, target: Target, body: bytes, timestamp: int, user_agent: str
) -> dict[str, str]:
    """The signed Standard Webhooks headers of one attempt, after the target's static ones.
    InvalidSecret if one of the target's secrets is unusable."""
    headers = signing.webhook_headers(webhook_id, timestamp, body, target.secrets, user_agent)
    if target.headers:
        return {**target.headers, **headers}
    return headers


class WebhookClient:
    """Sends webhook POSTs on one aiohttp session: the one given, or its own from `open()`."""

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._owns_session = session is None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def open(self) -> None:
        """Open the session unless there is one."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # The dispatcher's own per-endpoint limits govern; aiohttp's default cap of
                # 100 would not.
                connector=aiohttp.TCPConnector(limit=0),
                # Endpoints must not be able to set state that travels to other requests.
                cookie_jar=aiohttp.DummyCookieJar(),
            )

    async def close(self) -> None:
        """Close the session if this client opened it. Idempotent."""
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def post(
        self, target: Target, body: bytes, headers: Mapping[str, str]
    ) -> retry.HttpResult:
        """POST once. Errors are described without the URL, which may carry a token."""
        result, _ = await self.post_and_read(target, body, headers, keep_bytes=0)
        return result

    async def post_and_read(
        self, target: Target, body: bytes, headers: Mapping[str, str], *, keep_bytes: int
    ) -> tuple[retry.HttpResult, bytes]:
        """POST once, and keep the first `keep_bytes` of the answer (one byte more when the
        answer is longer, so the caller can tell it was cut)."""
        session = self._session
        if session is None:
            raise DeliveryError("Deliverer.start() was not called")
        try:
            async with session.post(
                target.url,
                data=_payload(body),
                headers=headers,
                allow_redirects=False,  # a redirect is a failed attempt ("HTTP 3xx")
                timeout=self._timeout(target.timeout_s),
            ) as response:
                keep = keep_bytes + 1 if keep_bytes > 0 else 0
                kept = await _read_some(response, MAX_RESPONSE_BYTES, keep)
                result = retry.HttpResult(
                    status_code=response.status,
                    retry_after=response.headers.get("Retry-After"),
                )
                return result, kept
        except TimeoutError:
            return retry.HttpResult(error="timeout"), b""
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            return retry.HttpResult(error=f"connection failed: {reason}"), b""
        except aiohttp.ServerDisconnectedError:
            return retry.HttpResult(error="server disconnected"), b""
        except aiohttp.InvalidURL:
            return retry.HttpResult(error="invalid url"), b""
        except (aiohttp.ClientError, OSError) as exc:
            return retry.HttpResult(error=f"request failed: {type(exc).__name__}"), b""

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout


def _payload(body: bytes) -> bytes | BytesPayload:
    """The body as aiohttp sends it. Over 1 MiB aiohttp warns (ResourceWarning) that raw bytes
    might block the loop, which only holds for compression a webhook never uses; a large
    success (a result of megabytes) must go out all the same."""
    if len(body) <= TOO_LARGE_BYTES_BODY:
        return body
    with warnings.catch_warnings():  # no await inside: no other coroutine sees the filter
        warnings.simplefilter("ignore", ResourceWarning)
        return BytesPayload(body)


async def _read_some(response: aiohttp.ClientResponse, limit: int, keep: int = 0) -> bytes:
    """Read up to `limit` bytes of the answer, so a short one frees the connection for reuse,
    and return the first `keep` of them. The status is already known, so a body that breaks
    off does not change the outcome."""
    remaining = limit
    kept = bytearray()
    try:
        length = response.content_length
        if length is not None and length <= limit:
            return (await response.read())[:keep]  # one read for the usual short answer
        while remaining > 0:
            chunk = await response.content.read(remaining)
            if not chunk:
                break
            if len(kept) < keep:
                kept += chunk[: keep - len(kept)]
            remaining -= len(chunk)
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    return bytes(kept)
