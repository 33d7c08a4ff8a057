"""A fake of the upstream status API, for trying the daemon and for the test suite.

Normal mode (the `apixo-watcher sandbox` command): every task id is known. A task is `pending`
when first asked about, `processing` after a third of `finish_after_s`, and after
`finish_after_s` it has succeeded with fake result URLs served by the sandbox itself, or failed
(ids containing "fail" always fail; otherwise a `fail_ratio` share, chosen deterministically
from `seed` and the id). Ids containing "notfound" always answer 404.
`POST /generateTask/{model}` returns a new task id, like the upstream's submit endpoint.

Scripted mode (tests): `app[SANDBOX]` is the `SandboxState`; `state.script(task_id, ...)`
queues answers consumed one per poll (the last repeats). Every request is recorded, the
accepted API key can change at runtime, and answers can be delayed to test concurrency.

Routes are served both at the root and under `/api/v1`, so `upstream.base_url` may be either.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

_FAILURES = (
    ("CONTENT_VIOLATION", "Content violates usage policy"),
    ("GENERATION_FAILED", "Generation failed"),
    ("NSFW_DETECTED", "NSFW content detected"),
    ("SensitiveContentDetected", "The output was flagged as sensitive"),
)
# A 1x1 transparent PNG: the fake result every result URL serves.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@dataclass(frozen=True, slots=True)
class SandboxResponse:
    """One scripted answer: a JSON body (dict) or raw bytes, with headers and an optional delay."""

    status: int = 200
    body: Mapping[str, Any] | bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the sandbox received."""

    method: str
    path: str
    model: str | None
    task_id: str | None
    authorization: str | None  # the header as sent; tests check the bearer with it
    at: float  # time.monotonic()

    @property
    def has_bearer(self) -> bool:
        return bool(self.authorization and self.authorization.startswith("Bearer "))


def envelope(
    data: Mapping[str, Any] | None, *, code: int = 200, message: str = "success"
) -> dict[str, Any]:
    """The upstream's answer envelope."""
    return {"code": code, "message": message, "data": None if data is None else dict(data)}


def pending(**extra: Any) -> SandboxResponse:
    """A `pending` answer (the task id is filled in from the request)."""
    return SandboxResponse(200, envelope({"state": "pending", **extra}))


def processing(**extra: Any) -> SandboxResponse:
    """A `processing` answer."""
    return SandboxResponse(200, envelope({"state": "processing", **extra}))


def success(
    urls: tuple[str, ...] = ("https://cdn.apixo.ai/output/abc123.jpg",), **extra: Any
) -> SandboxResponse:
    """A `success` answer whose resultJson holds `urls` (and completion fields)."""
    data = {
        "state": "success",
        "resultJson": json.dumps({"resultUrls": list(urls)}),
        "costTime": 12500,
        "createTime": 1704067200000,
        "completeTime": 1704067212500,
        **extra,
    }
    return SandboxResponse(200, envelope(data))


def failed(
    fail_code: str | None = "CONTENT_VIOLATION",
    fail_msg: str | None = "Content violates usage policy",
    **extra: Any,
) -> SandboxResponse:
    """A `failed` answer with the upstream's failCode and failMsg."""
    return SandboxResponse(
        200,
        envelope({"state": "failed", "failCode": fail_code, "failMsg": fail_msg, **extra}),
    )


def bad_result(result_json: Any = "{not json") -> SandboxResponse:
    """A `success` answer whose resultJson is unusable (by default: does not parse)."""
    return SandboxResponse(200, envelope({"state": "success", "resultJson": result_json}))


def error(
    status: int, message: str = "error", *, retry_after: str | None = None, code: int | None = None
) -> SandboxResponse:
    """An error answer in the upstream's envelope (`code` defaults to the HTTP status)."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return SandboxResponse(
        status, envelope(None, code=status if code is None else code, message=message), headers
    )


def malformed(
    status: int = 200, body: bytes = b"<html>upstream proxy error</html>"
) -> SandboxResponse:
    """An answer that is not a JSON envelope."""
    return SandboxResponse(status, body, {"Content-Type": "text/html"})


def _unauthorized() -> SandboxResponse:
    return error(401, "Invalid or missing API key")


class SandboxState:
    """The sandbox's behaviour and what it has seen; tests script and inspect it."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        finish_after_s: float = 5.0,
        processing_after_s: float | None = None,
        fail_ratio: float = 0.0,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        max_recorded: int | None = None,
    ) -> None:
        self.api_key = api_key  # None: any non-empty bearer key is accepted
        self.finish_after_s = finish_after_s
        self.processing_after_s = (
            finish_after_s / 3 if processing_after_s is None else processing_after_s
        )
        self.fail_ratio = fail_ratio
        self.seed = seed
        self.delay_s = 0.0  # added to every status answer
        self.requests: list[RecordedRequest] = []
        self.max_recorded = max_recorded  # None: keep every request (tests)
        self.in_flight = 0
        self.max_in_flight = 0
        self._clock = clock
        self._scripts: dict[str, list[SandboxResponse]] = {}
        self._cursors: dict[str, int] = {}
        self._default: list[SandboxResponse] | None = None
        self._first_seen: dict[str, float] = {}

    # -- scripting ------------------------------------------------------------------------------
    def script(self, task_id: str, *responses: SandboxResponse) -> None:
        """Answer polls of `task_id` with `responses` in order; the last one repeats."""
        if not responses:
            raise ValueError("script needs at least one response")
        self._scripts[task_id] = list(responses)
        self._cursors[task_id] = 0

    def script_default(self, *responses: SandboxResponse) -> None:
        """The script of every task without its own (each task walks it separately)."""
        self._default = list(responses) if responses else None

    # -- inspection -----------------------------------------------------------------------------
    def status_requests(self, task_id: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.task_id is not None
            and "/statusTask/" in r.path
            and (task_id is None or r.task_id == task_id)
        ]

    def polls(self, task_id: str | None = None) -> int:
        """Status requests received (for one task, or in all)."""
        return len(self.status_requests(task_id))

    # -- answering ------------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        key = header[len("Bearer ") :].strip()
        if not key:
            return False
        return self.api_key is None or secrets.compare_digest(key, self.api_key)

    def answer(self, model: str, task_id: str) -> SandboxResponse:
        script = self._scripts.get(task_id)
        if script is None and self._default is not None:
            script = self._scripts.setdefault(task_id, list(self._default))
            self._cursors.setdefault(task_id, 0)
        if script is not None:
            pos = self._cursors.get(task_id, 0)
            self._cursors[task_id] = pos + 1
            response = script[min(pos, len(script) - 1)]
        else:
            response = self._simulate(model, task_id)
        return _with_task_id(response, task_id)

    def will_fail(self, task_id: str) -> bool:
        if "fail" in task_id.lower():
            return True
        return random.Random(f"{self.seed}:{task_id}").random() < self.fail_ratio

    def _simulate(self, model: str, task_id: str) -> SandboxResponse:
        if "notfound" in task_id.lower():
            return error(404, "Task not found")
        now = self._clock()
        first = self._first_seen.get(task_id)
        if first is None:
            first = self._first_seen[task_id] = now
            log.info(
                "sandbox_task_seen",
                model=model,
                task_id=task_id,
                finishes_in_s=self.finish_after_s,
                will_fail=self.will_fail(task_id),
            )
        created_ms = int((time.time() - (now - first)) * 1000)
        elapsed = now - first
        if elapsed < self.processing_after_s:
            return pending(createTime=created_ms)
        if elapsed < self.finish_after_s:
            return processing(createTime=created_ms)
        cost_ms = int(self.finish_after_s * 1000)
        times = {
            "costTime": cost_ms,
            "createTime": created_ms,
            "completeTime": created_ms + cost_ms,
        }
        if self.will_fail(task_id):
            code, msg = _FAILURES[
                random.Random(f"{self.seed}:{task_id}:code").randrange(len(_FAILURES))
            ]
            return failed(code, msg, **times)
        urls = tuple(f"{{origin}}/output/{task_id}-{i}.png" for i in range(1, 3))
        return success(urls, **times)


def _with_task_id(response: SandboxResponse, task_id: str) -> SandboxResponse:
    body = response.body
    if isinstance(body, Mapping) and isinstance(body.get("data"), Mapping):
        data = dict(body["data"])
        data.setdefault("taskId", task_id)
        body = {**body, "data": data}
        return SandboxResponse(response.status, body, response.headers, response.delay_s)
    return response


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
SANDBOX = web.AppKey("sandbox", SandboxState)


def _record(
    state: SandboxState, request: web.Request, model: str | None, task_id: str | None
) -> None:
    if state.max_recorded is not None and len(state.requests) >= state.max_recorded:
        # A long-running sandbox must not grow without bound: drop the older half.
        del state.requests[: len(state.requests) // 2 + 1]
    state.requests.append(
        RecordedRequest(
            method=request.method,
            path=request.path,
            model=model,
            task_id=task_id,
            authorization=request.headers.get("Authorization"),
            at=time.monotonic(),
        )
    )


def _render(response: SandboxResponse, origin: str) -> web.Response:
    body = response.body
    headers = dict(response.headers)
    if body is None:
        return web.Response(status=response.status, headers=headers)
    if isinstance(body, bytes):
        return web.Response(status=response.status, body=body, headers=headers)
    text = json.dumps(body).replace("{origin}", origin)
    headers.setdefault("Content-Type", "application/json")
    return web.Response(status=response.status, text=text, headers=headers)


async def _status(request: web.Request) -> web.Response:
    state = request.app[SANDBOX]
    model = request.match_info["model"]
    task_id = request.query.get("taskId")
    _record(state, request, model, task_id)
    if not state.authorized(request.headers.get("Authorization")):
        return _render(_unauthorized(), "")
    if not task_id:
        return _render(error(400, "taskId is required"), "")
    state.in_flight += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        response = state.answer(model, task_id)
        delay = state.delay_s + response.delay_s
        if delay > 0:
            await asyncio.sleep(delay)
    finally:
        state.in_flight -= 1
    return _render(response, _origin(request))


async def _generate(request: web.Request) -> web.Response:
    state = request.app[SANDBOX]
    model = request.match_info["model"]
    _record(state, request, model, None)
    if not state.authorized(request.headers.get("Authorization")):
        return _render(_unauthorized(), "")
    task_id = f"task_{secrets.token_hex(8)}"
    log.info("sandbox_task_submitted", model=model, task_id=task_id)
    return _render(SandboxResponse(200, envelope({"taskId": task_id})), "")


async def _output(request: web.Request) -> web.Response:
    return web.Response(body=_PNG, content_type="image/png")


def _origin(request: web.Request) -> str:
    host = request.host
    # The Host header lands inside JSON strings: keep only what a host:port may contain.
    if not host or not _HOST_CHARS.issuperset(host):
        host = "localhost"
    return f"{request.scheme}://{host}"


def make_sandbox_app(
    *,
    api_key: str | None = None,
    finish_after_s: float = 5.0,
    processing_after_s: float | None = None,
    fail_ratio: float = 0.0,
    seed: int = 0,
    state: SandboxState | None = None,
) -> web.Application:
    """The sandbox as an aiohttp application; its state is `app[SANDBOX]`."""
    app = web.Application()
    app[SANDBOX] = state or SandboxState(
        api_key=api_key,
        finish_after_s=finish_after_s,
        processing_after_s=processing_after_s,
        fail_ratio=fail_ratio,
        seed=seed,
    )
    for prefix in ("", "/api/v1"):
        app.router.add_get(f"{prefix}/statusTask/{{model}}", _status)
        app.router.add_post(f"{prefix}/generateTask/{{model}}", _generate)
    app.router.add_get("/output/{name}", _output)
    return app


async def run_sandbox(
    host: str,
    port: int,
    *,
    finish_after_s: float = 5.0,
    fail_ratio: float = 0.0,
    seed: int = 0,
    api_key: str | None = None,
) -> None:
    """Serve the sandbox on host:port until cancelled."""
    state = SandboxState(
        api_key=api_key,
        finish_after_s=finish_after_s,
        fail_ratio=fail_ratio,
        seed=seed,
        max_recorded=10_000,
    )
    app = make_sandbox_app(state=state)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info(
            "sandbox_listening",
            base_url=f"http://{host}:{port}/api/v1",
            finish_after_s=finish_after_s,
            fail_ratio=fail_ratio,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
