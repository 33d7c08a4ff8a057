"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that verifies every request.

Every request is checked with the independent `standardwebhooks` package (not our own signing
code) and recorded, verified or not, so a test can assert both what arrived and that a real
receiver would have accepted it. Answers can be scripted per path.

    async with start_receiver(secrets=[secret]) as receiver:
        receiver.script("/hook", 500, 200)               # first a 500, then a 200
        receiver.script("/gone", 410)
        receiver.script("/busy", Reply(429, headers={"Retry-After": "1"}), 200)
        receiver.script("/slow", Reply(hang=True))        # never answers until released
        ... point an endpoint at receiver.url("/hook") ...
        requests = await receiver.wait_for(2, path="/hook")
        assert all(r.verified for r in requests)

Unscripted requests (and requests after a path's script is used up) get 200. Hanging requests
are released by `receiver.release()` or when the receiver stops, so shutdown never waits on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a status, headers and a body, or a hang (no answer until released)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False
    body: bytes = b""


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it (recorded on arrival, before it is answered)."""

    path: str
    webhook_id: str | None
    timestamp: int | None  # the webhook-timestamp header, if it is an integer
    signature: str | None
    verified: bool  # standardwebhooks accepted it with at least one of the receiver's secrets
    body: Any  # the parsed JSON body (None if it does not parse)
    raw_body: bytes
    headers: Mapping[str, str]  # lower-cased names
    received_at: float  # Unix seconds (time.time())

    @property
    def signatures(self) -> list[str]:
        """The individual `v1,...` signatures of the webhook-signature header."""
        return (self.signature or "").split()


def verify(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether `standardwebhooks` accepts this request with `secret`."""
    try:
        Webhook(secret).verify(body, dict(headers))
    except (WebhookVerificationError, ValueError):
        return False
    return True


class Receiver:
    """A running receiver; get one from `start_receiver`."""

    def __init__(self, server: TestServer, secrets: Sequence[str]) -> None:
        self._server = server
        self._secrets = list(secrets)
        self.received: list[ReceivedRequest] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._in_flight: dict[str, int] = {}
        self._max_in_flight: dict[str, int] = {}

    def url(self, path: str = "/hook") -> str:
        """The full URL of `path` on this receiver."""
        return str(self._server.make_url(path))

    def script(self, path: str, *replies: int | Reply) -> None:
        """Answer the next requests to `path` with `replies`, in order (then 200 again)."""
        self._scripts[path] = [r if isinstance(r, Reply) else Reply(r) for r in replies]

    def on(self, path: str) -> list[ReceivedRequest]:
        """The requests received on `path`, in arrival order."""
        return [r for r in self.received if r.path == path]

    def in_flight(self, path: str) -> int:
        """Requests to `path` that have arrived and are not answered yet."""
        return self._in_flight.get(path, 0)

    def max_in_flight(self, path: str) -> int:
        """The most requests to `path` that were ever unanswered at the same time."""
        return self._max_in_flight.get(path, 0)

    def release(self) -> None:
        """Answer every hanging request (with 200) and stop hanging from now on."""
        self._release.set()

    async def wait_for(
        self, count: int, timeout: float = 5.0, *, path: str | None = None
    ) -> list[ReceivedRequest]:
        """Wait until `count` requests (on `path`, or on any path) have arrived; return them."""

        def matching() -> list[ReceivedRequest]:
            return self.received if path is None else self.on(path)

        await self.wait_until(lambda: len(matching()) >= count, timeout=timeout)
        return matching()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever a request arrives or ends."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"receiver: condition not met within {timeout}s; "
                    f"received {[(r.path, r.webhook_id) for r in self.received]}"
                ) from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        timestamp_text = headers.get("webhook-timestamp", "")
        path = request.path
        self.received.append(
            ReceivedRequest(
                path=path,
                webhook_id=headers.get("webhook-id"),
                timestamp=int(timestamp_text) if timestamp_text.isdigit() else None,
                signature=headers.get("webhook-signature"),
                verified=any(verify(secret, raw, headers) for secret in self._secrets),
                body=body,
                raw_body=raw,
                headers=headers,
                received_at=time.time(),
            )
        )
        script = self._scripts.get(path)
        reply = script.pop(0) if script else Reply()
        self._in_flight[path] = self._in_flight.get(path, 0) + 1
        self._max_in_flight[path] = max(self._max_in_flight.get(path, 0), self._in_flight[path])
        await self._notify()
        try:
            if reply.hang:
                await self._release.wait()
                return web.Response(status=200)
            return web.Response(status=reply.status, headers=dict(reply.headers), body=reply.body)
        finally:
            self._in_flight[path] -= 1
            await self._notify()


@contextlib.asynccontextmanager
async def start_receiver(secrets: Iterable[str] = ()) -> AsyncIterator[Receiver]:
    """Run a receiver on 127.0.0.1 (a free port) that verifies with any of `secrets`."""
    app = web.Application(client_max_size=64 * 1024 * 1024)  # large results make large bodies
    server = TestServer(app, host="127.0.0.1")
    receiver = Receiver(server, list(secrets))
    app.router.add_route("*", "/{tail:.*}", receiver._handle)
    await server.start_server()
    try:
        yield receiver
    finally:
        receiver.release()
        await server.close()
